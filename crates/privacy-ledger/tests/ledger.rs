//! Ledger behaviour across modules: idempotent recording, refusals before a
//! round, calendar-year caps, reconciliation after restarts, and the
//! auditor's renderings.

use veil_privacy_accounting::{DiscreteEncoding, DistributedDiscreteGaussian};
use veil_privacy_ledger::{
    AuditorReport, Budget, Charge, ChargeSpec, JobBudget, LedgerError, Mechanism, PartnerCap,
    Period, PeriodWindow, PrivacyUnit, RecordOutcome, Refuser, Release, Scope, SqliteLedger,
    TrustModel, check_job_budget, check_partner_caps, compose, project, reconcile,
};

/// 2026-01-01T00:00:00Z.
const START_OF_2026: i64 = 1_767_225_600;
/// 2027-01-01T00:00:00Z (2026 has 365 days).
const START_OF_2027: i64 = START_OF_2026 + 365 * 86_400;
/// 2025-01-01T00:00:00Z (2025 has 365 days).
const START_OF_2025: i64 = START_OF_2026 - 365 * 86_400;

fn dp_sgd(noise_multiplier: f64) -> Mechanism {
    Mechanism::PoissonSubsampledGaussian {
        sampling_rate: 0.01,
        noise_multiplier,
        steps: 100,
        clip_norm: 1.0,
    }
}

fn dp_sgd_with_statistics(statistics_releases: u64) -> Mechanism {
    Mechanism::DpSgdWithStatistics {
        sampling_rate: 0.01,
        noise_multiplier: 1.0,
        steps: 100,
        clip_norm: 1.0,
        statistics_releases,
        statistics_noise_multiplier: 5.0,
    }
}

#[test]
fn statistics_releases_cost_what_their_gaussian_composition_costs() -> Result<(), LedgerError> {
    let priced = |mechanism| charge("job", 1, "bank-a", PrivacyUnit::Customer, mechanism, 0);
    let plain = priced(dp_sgd(1.0));
    let none = priced(dp_sgd_with_statistics(0));
    let two = priced(dp_sgd_with_statistics(2));
    assert!((none.epsilon_rdp - plain.epsilon_rdp).abs() < 1e-12);
    assert!(
        two.epsilon_rdp > plain.epsilon_rdp + 0.01,
        "{two:?} vs {plain:?}"
    );
    // Two releases at z = 5 are one Gaussian at z = 5/√2, composed with DP-SGD.
    let mut accountant = veil_privacy_accounting::Accountant::new();
    dp_sgd(1.0).compose_into(&mut accountant).unwrap();
    accountant
        .compose(veil_privacy_accounting::DpEvent::Gaussian {
            noise_multiplier: 5.0 / 2f64.sqrt(),
        })
        .unwrap();
    let expected = accountant.epsilon_rdp(1e-5).unwrap();
    assert!((two.epsilon_rdp - expected).abs() < 1e-9);
    Ok(())
}

fn distributed() -> Mechanism {
    Mechanism::DistributedDiscreteGaussian(DistributedDiscreteGaussian {
        encoding: DiscreteEncoding {
            clip_norm: 1.0,
            granularity: 1e-3,
            dimension: 1 << 10,
            rounding_beta: 1e-2,
        },
        node_sigma: 600.0,
        min_survivors: 5,
    })
}

fn customer_charge(job_id: &str, round: u64, partner_id: &str, at: i64) -> Charge {
    charge(
        job_id,
        round,
        partner_id,
        PrivacyUnit::Customer,
        dp_sgd(1.1),
        at,
    )
}

fn charge(
    job_id: &str,
    round: u64,
    partner_id: &str,
    unit: PrivacyUnit,
    mechanism: Mechanism,
    at: i64,
) -> Charge {
    let trust_model = match mechanism {
        Mechanism::PoissonSubsampledGaussian { .. } | Mechanism::DpSgdWithStatistics { .. } => {
            TrustModel::LocalDpSgd
        }
        Mechanism::DistributedDiscreteGaussian(_) => TrustModel::Distributed,
        Mechanism::Gaussian { .. } => TrustModel::Central,
    };
    let spec = ChargeSpec {
        job_id: job_id.to_owned(),
        round,
        partner_id: partner_id.to_owned(),
        dataset_id: "transactions".to_owned(),
        unit,
        release: Release::Round,
        trust_model,
        mechanism,
        delta: 1e-5,
    };
    match Charge::new(spec, at) {
        Ok(charge) => charge,
        Err(error) => panic!("test charges are valid: {error}"),
    }
}

fn temporary_ledger() -> (tempfile::TempDir, std::path::PathBuf) {
    let directory = tempfile::tempdir().unwrap_or_else(|error| panic!("tempdir: {error}"));
    let path = directory.path().join("ledger.sqlite");
    (directory, path)
}

#[test]
fn recording_the_same_charge_twice_is_a_no_op() -> Result<(), LedgerError> {
    let (_directory, path) = temporary_ledger();
    let mut ledger = SqliteLedger::open(&path)?;
    let first = customer_charge("job-1", 1, "bank-a", START_OF_2026);
    assert_eq!(ledger.record(&first)?, RecordOutcome::Recorded);
    // A replayed round is recorded later, with the same content.
    let replay = Charge {
        recorded_at_unix_s: START_OF_2026 + 3_600,
        ..first.clone()
    };
    assert_eq!(ledger.record(&replay)?, RecordOutcome::AlreadyRecorded);
    assert_eq!(ledger.all_charges()?, vec![first]);
    Ok(())
}

#[test]
fn a_conflicting_charge_under_the_same_key_is_refused() -> Result<(), LedgerError> {
    let (_directory, path) = temporary_ledger();
    let mut ledger = SqliteLedger::open(&path)?;
    let original = customer_charge("job-1", 1, "bank-a", START_OF_2026);
    ledger.record(&original)?;
    let repriced = charge(
        "job-1",
        1,
        "bank-a",
        PrivacyUnit::Customer,
        dp_sgd(0.9),
        START_OF_2026,
    );
    match ledger.record(&repriced) {
        Err(LedgerError::ConflictingCharge { key }) => assert_eq!(*key, original.key()),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(ledger.all_charges()?, vec![original]);
    // The same key in the other unit is a different charge.
    let partner_level = charge(
        "job-1",
        1,
        "bank-a",
        PrivacyUnit::Partner,
        distributed(),
        START_OF_2026,
    );
    assert_eq!(ledger.record(&partner_level)?, RecordOutcome::Recorded);
    Ok(())
}

#[test]
fn the_ledger_survives_reopening_bit_for_bit() -> Result<(), LedgerError> {
    let (_directory, path) = temporary_ledger();
    let recorded = vec![
        customer_charge("job-1", 1, "bank-a", START_OF_2026),
        charge(
            "job-1",
            1,
            "bank-a",
            PrivacyUnit::Partner,
            distributed(),
            START_OF_2026,
        ),
        customer_charge("job-1", 1, "bank-b", START_OF_2026 + 1),
        charge(
            "job-2",
            1,
            "bank-a",
            PrivacyUnit::Partner,
            Mechanism::Gaussian {
                noise_multiplier: 3.3,
                clip_norm: 0.7,
            },
            START_OF_2026 + 2,
        ),
        charge(
            "job-2",
            1,
            "bank-b",
            PrivacyUnit::Customer,
            dp_sgd_with_statistics(2),
            START_OF_2026 + 3,
        ),
    ];
    {
        let mut ledger = SqliteLedger::open(&path)?;
        for charge in &recorded {
            assert_eq!(ledger.record(charge)?, RecordOutcome::Recorded);
        }
    }
    let reopened = SqliteLedger::open(&path)?;
    let mut all = reopened.all_charges()?;
    all.sort_by_key(Charge::key);
    let mut expected = recorded.clone();
    expected.sort_by_key(Charge::key);
    assert_eq!(all, expected);
    let bank_a = reopened.charges_for_partner("bank-a")?;
    assert_eq!(bank_a.len(), 3);
    assert!(bank_a.iter().all(|charge| charge.partner_id == "bank-a"));
    let job_1 = reopened.charges_for_job("job-1")?;
    assert_eq!(job_1.len(), 3);
    assert!(job_1.iter().all(|charge| charge.job_id == "job-1"));
    Ok(())
}

#[test]
fn composition_counts_a_replayed_round_once() -> Result<(), LedgerError> {
    let once = customer_charge("job-1", 1, "bank-a", START_OF_2026);
    let replay = Charge {
        recorded_at_unix_s: START_OF_2026 + 60,
        ..once.clone()
    };
    let second = customer_charge("job-1", 2, "bank-a", START_OF_2026 + 120);
    let single = compose([&once], 1e-5)?;
    let replayed = compose([&once, &replay], 1e-5)?;
    let two_rounds = compose([&once, &second], 1e-5)?;
    assert_eq!(single, replayed);
    assert!(two_rounds.epsilon > single.epsilon);
    let conflicting = charge(
        "job-1",
        1,
        "bank-a",
        PrivacyUnit::Customer,
        dp_sgd(2.0),
        START_OF_2026,
    );
    assert!(matches!(
        compose([&once, &conflicting], 1e-5),
        Err(LedgerError::ConflictingCharge { .. })
    ));
    Ok(())
}

#[test]
fn the_coordinator_refuses_a_round_that_would_exceed_the_job_budget() -> Result<(), LedgerError> {
    let existing: Vec<Charge> = (1..=3)
        .map(|round| customer_charge("job-1", round, "bank-a", START_OF_2026))
        .collect();
    let spent = compose(&existing, 1e-5)?.epsilon;
    let planned = vec![
        customer_charge("job-1", 4, "bank-a", START_OF_2026),
        customer_charge("job-1", 4, "bank-b", START_OF_2026),
    ];
    let after = compose(existing.iter().chain(&planned[..1]), 1e-5)?.epsilon;
    // bank-a would cross the budget; bank-b has spent nothing and fits.
    let limit = Budget {
        epsilon: (spent + after) / 2.0,
        delta: 1e-5,
    };
    let budget = JobBudget {
        job_id: "job-1".to_owned(),
        customer: limit,
        partner: limit,
    };
    let refusals = check_job_budget(&budget, &existing, &planned)?;
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    let refusal = &refusals[0];
    assert_eq!(refusal.who, Refuser::Coordinator);
    assert_eq!(refusal.partner_id, "bank-a");
    assert_eq!(refusal.round, 4);
    assert_eq!(refusal.unit, PrivacyUnit::Customer);
    assert_eq!(refusal.spent, spent);
    assert_eq!(refusal.planned, after);
    assert_eq!(refusal.limit, Some(limit));
    // A generous budget lets the round start.
    let generous = JobBudget {
        customer: Budget {
            epsilon: after * 2.0,
            delta: 1e-5,
        },
        ..budget.clone()
    };
    assert!(check_job_budget(&generous, &existing, &planned)?.is_empty());
    // Replaying the last recorded round costs nothing more.
    let scope = Scope::Job {
        job_id: "job-1".to_owned(),
        partner_id: "bank-a".to_owned(),
        unit: PrivacyUnit::Customer,
    };
    let replay = project(&existing, &existing[2..], &scope, limit)?;
    assert_eq!(replay.epsilon_after, replay.epsilon_before);
    assert!(!replay.would_exceed);
    // A planned charge of another job is a caller bug, not a refusal.
    let elsewhere = vec![customer_charge("job-2", 1, "bank-a", START_OF_2026)];
    assert!(matches!(
        check_job_budget(&budget, &existing, &elsewhere),
        Err(LedgerError::WrongJob { .. })
    ));
    Ok(())
}

/// A projection is settled by the RDP bound only when that bound fits; between the PLD figure
/// and the RDP bound the PLD accountant decides, so the shortcut never refuses a round the
/// tighter accounting allows, and never lets through one it refuses.
#[test]
fn projections_near_the_limit_are_decided_by_the_tighter_accountant() -> Result<(), LedgerError> {
    let existing: Vec<Charge> = (1..=6)
        .map(|round| customer_charge("job-1", round, "bank-a", START_OF_2026))
        .collect();
    let planned = vec![customer_charge("job-1", 7, "bank-a", START_OF_2026)];
    let after = compose(existing.iter().chain(&planned), 1e-5)?;
    let pld = after.epsilon_pld.expect("a finite PLD figure");
    assert!(
        pld < after.epsilon_rdp,
        "the fixture needs PLD tighter than RDP: {after:?}"
    );
    let scope = Scope::Job {
        job_id: "job-1".to_owned(),
        partner_id: "bank-a".to_owned(),
        unit: PrivacyUnit::Customer,
    };
    let limit = |epsilon: f64| Budget {
        epsilon,
        delta: 1e-5,
    };
    // Above the RDP bound: settled by RDP alone, and says so.
    let easy = project(&existing, &planned, &scope, limit(after.epsilon_rdp * 1.01))?;
    assert!(!easy.would_exceed);
    assert_eq!(easy.epsilon_after.epsilon, after.epsilon_rdp);
    assert!(easy.epsilon_after.reason.is_some(), "{easy:?}");
    // Between PLD and RDP: fits by the PLD figure.
    let between = project(
        &existing,
        &planned,
        &scope,
        limit((pld + after.epsilon_rdp) / 2.0),
    )?;
    assert!(!between.would_exceed, "{between:?}");
    assert_eq!(between.epsilon_after, after);
    // Below the PLD figure: refused, with the PLD figure.
    let tight = project(&existing, &planned, &scope, limit(pld * 0.99))?;
    assert!(tight.would_exceed);
    assert_eq!(tight.epsilon_after, after);
    Ok(())
}

#[test]
fn calendar_years_start_at_midnight_utc_on_the_first_of_january() -> Result<(), LedgerError> {
    let year_2026 = PeriodWindow {
        start_unix_s: START_OF_2026,
        end_unix_s: START_OF_2027,
    };
    for at in [
        START_OF_2026,
        START_OF_2026 + 86_400 * 200,
        START_OF_2027 - 1,
    ] {
        assert_eq!(Period::CalendarYear.window_containing(at)?, year_2026);
    }
    assert_eq!(
        Period::CalendarYear.window_containing(START_OF_2026 - 1)?,
        PeriodWindow {
            start_unix_s: START_OF_2025,
            end_unix_s: START_OF_2026,
        }
    );
    assert_eq!(
        Period::CalendarYear
            .window_containing(START_OF_2027)?
            .start_unix_s,
        START_OF_2027
    );
    // 2028 is a leap year: 366 days.
    let year_2028 = Period::CalendarYear.window_containing(START_OF_2027 + 365 * 86_400 + 5)?;
    assert_eq!(year_2028.end_unix_s - year_2028.start_unix_s, 366 * 86_400);
    Ok(())
}

#[test]
fn the_node_refuses_a_round_that_would_exceed_its_cap_in_this_year_only() -> Result<(), LedgerError>
{
    // Heavy spending on the last second of 2025, across two jobs.
    let last_year: Vec<Charge> = (1..=5)
        .flat_map(|round| {
            [
                customer_charge("job-old", round, "bank-a", START_OF_2026 - 1),
                customer_charge("job-older", round, "bank-a", START_OF_2026 - 1),
            ]
        })
        .collect();
    let this_year = vec![customer_charge("job-new", 1, "bank-a", START_OF_2026)];
    let planned = vec![customer_charge("job-new", 2, "bank-a", START_OF_2026 + 10)];
    let this_year_after = compose(this_year.iter().chain(&planned), 1e-5)?.epsilon;
    let cap = PartnerCap {
        dataset_id: "transactions".to_owned(),
        period: Period::CalendarYear,
        epsilon: this_year_after * 1.01,
        delta: 1e-5,
        unit: PrivacyUnit::Customer,
    };
    let existing: Vec<Charge> = last_year.iter().chain(&this_year).cloned().collect();
    // Last year's charges do not count against this year's cap.
    assert!(check_partner_caps(std::slice::from_ref(&cap), &existing, &planned)?.is_empty());
    // The same spending one second later falls in 2026 and exceeds the cap.
    let shifted: Vec<Charge> = last_year
        .iter()
        .map(|charge| Charge {
            recorded_at_unix_s: START_OF_2026,
            ..charge.clone()
        })
        .chain(this_year.iter().cloned())
        .collect();
    let refusals = check_partner_caps(std::slice::from_ref(&cap), &shifted, &planned)?;
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert_eq!(refusals[0].who, Refuser::Partner);
    assert_eq!(refusals[0].job_id, "job-new");
    assert!(refusals[0].planned > cap.epsilon);
    assert!(matches!(
        refusals[0].scope,
        Scope::Period {
            window: PeriodWindow {
                start_unix_s: START_OF_2026,
                ..
            },
            ..
        }
    ));
    // A dataset or unit the node holds no cap for is refused (fail closed).
    let partner_level = vec![charge(
        "job-new",
        2,
        "bank-a",
        PrivacyUnit::Partner,
        distributed(),
        START_OF_2026,
    )];
    let uncapped = check_partner_caps(std::slice::from_ref(&cap), &existing, &partner_level)?;
    assert_eq!(uncapped.len(), 1);
    assert_eq!(uncapped[0].limit, None);
    Ok(())
}

#[test]
fn reconciliation_finds_missing_and_mismatched_charges_by_key() {
    let shared = customer_charge("job-1", 1, "bank-a", START_OF_2026);
    // The node recorded the same charge a few seconds later: not a mismatch.
    let shared_on_node = Charge {
        recorded_at_unix_s: START_OF_2026 + 5,
        ..shared.clone()
    };
    let only_coordinator = customer_charge("job-1", 2, "bank-a", START_OF_2026);
    let only_node = customer_charge("job-1", 3, "bank-a", START_OF_2026);
    let coordinator_view = charge(
        "job-1",
        4,
        "bank-a",
        PrivacyUnit::Customer,
        dp_sgd(1.1),
        START_OF_2026,
    );
    let node_view = charge(
        "job-1",
        4,
        "bank-a",
        PrivacyUnit::Customer,
        dp_sgd(1.3),
        START_OF_2026,
    );
    let report = reconcile(
        &[
            shared.clone(),
            only_coordinator.clone(),
            coordinator_view.clone(),
        ],
        &[shared_on_node, only_node.clone(), node_view.clone()],
    );
    assert!(!report.is_consistent());
    assert_eq!(report.missing_on_node, vec![only_coordinator]);
    assert_eq!(report.missing_on_coordinator, vec![only_node]);
    assert_eq!(report.mismatched.len(), 1);
    assert_eq!(report.mismatched[0].key, coordinator_view.key());
    assert_eq!(report.mismatched[0].coordinator, coordinator_view);
    assert_eq!(report.mismatched[0].node, node_view);
}

#[test]
fn after_restarting_both_sides_the_ledgers_still_agree() -> Result<(), LedgerError> {
    let (_coordinator_directory, coordinator_path) = temporary_ledger();
    let (_node_directory, node_path) = temporary_ledger();
    {
        let mut coordinator = SqliteLedger::open(&coordinator_path)?;
        let mut node = SqliteLedger::open(&node_path)?;
        for round in 1..=3 {
            let on_coordinator =
                customer_charge("job-1", round, "bank-a", START_OF_2026 + round as i64);
            let on_node = Charge {
                recorded_at_unix_s: on_coordinator.recorded_at_unix_s + 2,
                ..on_coordinator.clone()
            };
            coordinator.record(&on_coordinator)?;
            coordinator.record(&customer_charge("job-1", round, "bank-b", START_OF_2026))?;
            node.record(&on_node)?;
        }
    }
    let coordinator = SqliteLedger::open(&coordinator_path)?;
    let node = SqliteLedger::open(&node_path)?;
    let report = reconcile(
        &coordinator.charges_for_partner("bank-a")?,
        &node.all_charges()?,
    );
    assert!(report.is_consistent(), "{report:?}");
    Ok(())
}

fn report_fixture() -> Result<(AuditorReport, Vec<Charge>, JobBudget), LedgerError> {
    let mut charges = Vec::new();
    for partner in ["bank-a", "bank-<b>"] {
        for round in 1..=4 {
            charges.push(customer_charge(
                "job-1",
                round,
                partner,
                START_OF_2026 + round as i64,
            ));
            charges.push(charge(
                "job-1",
                round,
                partner,
                PrivacyUnit::Partner,
                distributed(),
                START_OF_2026,
            ));
        }
    }
    let budget = JobBudget {
        job_id: "job-1".to_owned(),
        customer: Budget {
            epsilon: 3.0,
            delta: 1e-5,
        },
        partner: Budget {
            epsilon: 8.0,
            delta: 1e-6,
        },
    };
    let cap = PartnerCap {
        dataset_id: "transactions".to_owned(),
        period: Period::CalendarYear,
        epsilon: 8.0,
        delta: 1e-5,
        unit: PrivacyUnit::Customer,
    };
    let report = AuditorReport::build(
        &charges,
        std::slice::from_ref(&budget),
        &[cap],
        START_OF_2026 + 100,
    )?;
    Ok((report, charges, budget))
}

#[test]
fn the_auditor_report_composes_each_partner_job_and_unit() -> Result<(), LedgerError> {
    let (report, charges, budget) = report_fixture()?;
    assert_eq!(report.jobs.len(), 4);
    for row in &report.jobs {
        let own: Vec<&Charge> = charges
            .iter()
            .filter(|charge| charge.partner_id == row.partner_id && charge.unit == row.unit)
            .collect();
        let limit = budget.for_unit(row.unit);
        let spent = compose(own.iter().copied(), limit.delta)?;
        assert_eq!(row.spent, spent);
        assert_eq!(row.rounds, 4);
        assert_eq!(row.epsilon_limit, Some(limit.epsilon));
        assert_eq!(row.epsilon_remaining, Some(limit.epsilon - spent.epsilon));
        match row.unit {
            PrivacyUnit::Customer => {
                assert_eq!(row.steps, 400);
                assert_eq!(row.sampling_rate.min, 0.01);
                assert!(row.spent.epsilon_pld.is_some());
            }
            PrivacyUnit::Partner => {
                // Distributed rounds have an RDP bound only.
                assert_eq!(row.spent.epsilon_pld, None);
                assert_eq!(row.trust_models, vec![TrustModel::Distributed]);
            }
        }
    }
    assert_eq!(report.caps.len(), 2);
    for series in &report.series {
        assert_eq!(series.points.len(), 4);
        assert!(
            series
                .points
                .windows(2)
                .all(|pair| pair[1].epsilon_rdp >= pair[0].epsilon_rdp)
        );
    }
    let text = report.render_text();
    assert_eq!(
        text.lines()
            .filter(|line| line.starts_with("bank-"))
            .count(),
        4 + 2
    );
    Ok(())
}

#[test]
fn the_svg_plot_has_one_polyline_per_partner_and_escapes_ids() -> Result<(), LedgerError> {
    let (report, _, _) = report_fixture()?;
    let svg = report.render_svg("job-1", PrivacyUnit::Customer);
    assert!(svg.starts_with("<svg "));
    assert!(svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<polyline").count(), 2);
    assert_eq!(svg.matches("</polyline>").count(), 2);
    assert_eq!(svg.matches(r#"class="axis""#).count(), 2);
    assert_eq!(svg.matches(r#"class="budget""#).count(), 1);
    // "bank-<b>" must be text, never markup.
    assert!(!svg.contains("<b>"));
    assert!(svg.contains("bank-&lt;b&gt;"));
    // Every opened element is closed: tags balance without a parser.
    let opened = svg.matches('<').count();
    let closed = svg.matches('>').count();
    assert_eq!(opened, closed);
    let empty = report.render_svg("no-such-job", PrivacyUnit::Customer);
    assert_eq!(empty.matches("<polyline").count(), 0);
    Ok(())
}

/// Every JSON object holding a null `epsilon`, `epsilon_rdp` or
/// `epsilon_pld` also holds a `reason` string; returns the offending objects.
fn null_epsilons_without_a_reason(value: &serde_json::Value) -> Vec<String> {
    let mut offending = Vec::new();
    match value {
        serde_json::Value::Object(object) => {
            let has_null_epsilon = ["epsilon", "epsilon_rdp", "epsilon_pld"]
                .iter()
                .any(|key| object.get(*key).is_some_and(serde_json::Value::is_null));
            let has_reason = object
                .get("reason")
                .is_some_and(|reason| reason.as_str().is_some_and(|text| !text.is_empty()));
            if has_null_epsilon && !has_reason {
                offending.push(value.to_string());
            }
            for child in object.values() {
                offending.extend(null_epsilons_without_a_reason(child));
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                offending.extend(null_epsilons_without_a_reason(item));
            }
        }
        _ => {}
    }
    offending
}

#[test]
fn every_null_epsilon_in_the_report_json_says_why() -> Result<(), LedgerError> {
    // The fixture has distributed rounds, whose PLD ε is absent (null).
    let (report, _, _) = report_fixture()?;
    let json: serde_json::Value = serde_json::from_str(&report.to_json()?)?;
    assert_eq!(null_epsilons_without_a_reason(&json), Vec::<String>::new());
    let partner_rows: Vec<_> = report
        .jobs
        .iter()
        .filter(|row| row.unit == PrivacyUnit::Partner)
        .collect();
    assert!(!partner_rows.is_empty());
    for row in partner_rows {
        assert_eq!(
            row.spent.reason.as_deref(),
            Some(
                "epsilon_pld: the PLD accountant does not cover distributed discrete Gaussian rounds"
            )
        );
    }
    for row in report
        .jobs
        .iter()
        .filter(|row| row.unit == PrivacyUnit::Customer)
    {
        assert_eq!(row.spent.reason, None);
    }
    Ok(())
}

#[test]
fn the_json_export_round_trips() -> Result<(), LedgerError> {
    let (report, _, _) = report_fixture()?;
    let json = report.to_json()?;
    assert_eq!(AuditorReport::from_json(&json)?, report);
    Ok(())
}

#[test]
fn invalid_charges_are_refused_with_the_field() {
    let valid = customer_charge("job-1", 1, "bank-a", START_OF_2026).spec();
    let cases = [
        (
            ChargeSpec {
                trust_model: TrustModel::Distributed,
                ..valid.clone()
            },
            "trust_model",
        ),
        (
            ChargeSpec {
                partner_id: " ".to_owned(),
                ..valid.clone()
            },
            "partner_id",
        ),
        (
            ChargeSpec {
                delta: 1.0,
                ..valid.clone()
            },
            "delta",
        ),
    ];
    for (spec, expected_field) in cases {
        match Charge::new(spec, START_OF_2026) {
            Err(LedgerError::InvalidCharge { field, .. }) => assert_eq!(field, expected_field),
            other => panic!("expected {expected_field} refused, got {other:?}"),
        }
    }
    let bad_noise = ChargeSpec {
        mechanism: dp_sgd(-1.0),
        ..valid
    };
    assert!(matches!(
        Charge::new(bad_noise, START_OF_2026),
        Err(LedgerError::Accounting(_))
    ));
}
