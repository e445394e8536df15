//! `coordinator report`: a finished (or running) job's report for the people
//! who read it, built from the coordinator's stored state: the job's spec and
//! round history from the job store, the privacy spent from the ledger, and
//! the final evaluation release read by `veil-scoring-evaluation` with
//! intervals that include the DP noise. Rendering is `veil-report`'s.

use std::path::Path;

use anyhow::{Context, bail};
use veil_audit_log::AuditEvent;
use veil_federation::{JobState, RoundRecord};
use veil_job::JobSpec;
use veil_job::analysis::{Analysis, AnalysisOutcome};
use veil_job::lifetime_analysis::FittedCounts;
use veil_job::statistics::{self, EvaluationRelease};
use veil_job_store::SqliteJobStore;
use veil_models::ModelKind;
use veil_privacy_ledger::{AuditorReport, Charge, PrivacyUnit, SqliteLedger, TrustModel};
use veil_report::{
    Detail, Evaluation, JobSummary, LifetimeValuePoint, PrivacyAudit, PrivacySpent, ReportInput,
    RoundMetrics, Segment, Segments,
};
use veil_scoring_evaluation::{IntervalConfig, evaluate_binary, evaluate_regression};
use veil_segmentation::ClusteringOutcome;

use crate::convert::round_metrics;
use crate::server::JobSpecCodec;

/// Intervals in reports: 90%, over 2,000 bootstrap draws (the ends then move
/// by well under their own width between seeds), seed 0 so that a report
/// made twice from the same state is the same.
const REPORT_CONFIDENCE: f64 = 0.9;
const REPORT_REPLICATES: usize = 2000;
const REPORT_SEED: u64 = 0;

/// Writes `job_id`'s report, as HTML or (with `json`) its content as JSON, to `out`, dated now.
pub fn write_report(state_dir: &Path, job_id: &str, out: &Path, json: bool) -> anyhow::Result<()> {
    let now = chrono::Utc::now();
    let input = load_report(
        state_dir,
        job_id,
        now.format("%Y-%m-%d %H:%M UTC").to_string(),
        now.timestamp(),
    )?;
    let text = if json {
        veil_report::render_json(&input)?
    } else {
        veil_report::render_html(&input)
    };
    std::fs::write(out, text).with_context(|| format!("writing {}", out.display()))
}

/// The report of `job_id` from the coordinator's state folder (`jobs.sqlite`
/// and `ledger.sqlite`, as `coordinator serve --state-dir` keeps them).
/// `generated_at` is shown on the page; `as_of_unix_s` dates the ledger read.
pub fn load_report(
    state_dir: &Path,
    job_id: &str,
    generated_at: String,
    as_of_unix_s: i64,
) -> anyhow::Result<ReportInput> {
    // The job store first: a wrong folder is named by the file every report
    // needs before the ledger is read.
    let snapshot = job_snapshot(state_dir, job_id)?;
    let ledger_path = state_dir.join("ledger.sqlite");
    if !ledger_path.is_file() {
        bail!(
            "{} does not exist: pass the folder `coordinator serve --state-dir` uses",
            ledger_path.display()
        );
    }
    let ledger = SqliteLedger::open(&ledger_path)
        .with_context(|| format!("coordinator privacy ledger {}", ledger_path.display()))?;
    let charges = ledger
        .charges_for_job(job_id)
        .with_context(|| format!("reading {job_id}'s charges from {}", ledger_path.display()))?;
    let mut input = build_report(
        job_id,
        &snapshot.descriptor,
        &snapshot.state,
        &snapshot.history,
        &charges,
        generated_at,
        as_of_unix_s,
    )?;
    match privacy_audits(state_dir, job_id) {
        Ok(audits) => input.privacy_audits = audits,
        // The rest of the report stands; the reader is told why the audits
        // are missing rather than shown results the log cannot vouch for.
        Err(error) => input
            .notes
            .push(format!("Privacy tests are not shown: {error:#}.")),
    }
    Ok(input)
}

/// `job_id`'s spec, state and round history from the coordinator's job
/// store (`jobs.sqlite` in the folder `coordinator serve --state-dir` uses).
pub(crate) fn job_snapshot(
    state_dir: &Path,
    job_id: &str,
) -> anyhow::Result<veil_federation::JobSnapshot<JobSpec>> {
    let store_path = state_dir.join("jobs.sqlite");
    if !store_path.is_file() {
        bail!(
            "{} does not exist: pass the folder `coordinator serve --state-dir` uses",
            store_path.display()
        );
    }
    let store = SqliteJobStore::open(&store_path, JobSpecCodec)
        .with_context(|| format!("coordinator job store {}", store_path.display()))?;
    store
        .load_snapshots()
        .with_context(|| format!("reading jobs from {}", store_path.display()))?
        .into_iter()
        .find(|snapshot| snapshot.id.as_str() == job_id)
        .with_context(|| format!("no job {job_id} in {}", store_path.display()))
}

/// The job's privacy-test results from the coordinator's audit log, once the
/// whole log verifies against its public key; none when there is no log.
fn privacy_audits(state_dir: &Path, job_id: &str) -> anyhow::Result<Vec<PrivacyAudit>> {
    let log = state_dir.join("audit.log");
    if !log.is_file() {
        return Ok(Vec::new());
    }
    let public_key = crate::audit_admin::read_public_key(&state_dir.join("audit-public.key"))?;
    let verified = crate::audit_admin::verified(&log, &public_key)?;
    Ok(verified
        .entries
        .into_iter()
        .filter_map(|entry| match entry.event {
            AuditEvent::PrivacyAuditRecorded {
                job_id: audited,
                partner,
                attack,
                canaries,
                guesses,
                correct,
                delta,
                confidence,
                epsilon_lower,
                epsilon_lower_gaussian,
                epsilon_upper,
                ..
            } if audited == job_id => Some(PrivacyAudit {
                partner,
                attack,
                canaries,
                guesses,
                correct,
                confidence,
                delta,
                epsilon_lower,
                epsilon_lower_gaussian,
                epsilon_upper,
            }),
            _ => None,
        })
        .collect())
}

/// The report from a job's parts, without IO.
pub fn build_report(
    job_id: &str,
    spec: &JobSpec,
    state: &JobState,
    history: &[RoundRecord],
    charges: &[Charge],
    generated_at: String,
    as_of_unix_s: i64,
) -> anyhow::Result<ReportInput> {
    let rounds = history
        .iter()
        .filter(|record| record.round > 0)
        .map(|record| {
            let metrics = round_metrics(spec, record);
            let finite = |value: f64| value.is_finite().then_some(value);
            RoundMetrics {
                round: metrics.round,
                participants: metrics.participants,
                training_loss: finite(metrics.mean_training_loss),
                evaluation_loss: finite(metrics.eval_loss),
                auc: finite(metrics.eval_auc),
                rmse: finite(metrics.eval_rmse),
            }
        })
        .collect();
    // A release too noisy to read (one class gone under the noise) still
    // leaves a report worth having: it says why the evaluation is missing.
    let mut notes = Vec::new();
    let evaluation = evaluation(spec, history).unwrap_or_else(|error| {
        notes.push(format!("The final evaluation cannot be shown: {error:#}."));
        None
    });
    let mut job = summary(job_id, spec, state, history);
    let mut lifetime_value = None;
    let mut rules = None;
    let segments = match (&spec.analysis, state) {
        (Some(analysis), JobState::Succeeded) => match analysis_outcome(spec, analysis, history) {
            Ok(AnalysisOutcome::Segments(outcomes)) => segment_profiles(spec, &outcomes),
            Ok(AnalysisOutcome::Rfm(cuts)) => {
                for (name, points) in [
                    ("Recency cut points (days)", cuts.recency),
                    ("Frequency cut points (purchases)", cuts.frequency),
                    ("Monetary cut points", cuts.monetary),
                ] {
                    job.details.push(Detail {
                        name: name.to_owned(),
                        value: points
                            .iter()
                            .map(|point| format!("{point:.1}"))
                            .collect::<Vec<_>>()
                            .join(", "),
                    });
                }
                Vec::new()
            }
            Ok(AnalysisOutcome::LifetimeValue(outcome)) => {
                let purchases = outcome.fit.purchases;
                let spend = outcome.fit.spend;
                for (model, counts) in [
                    ("BG/NBD", outcome.purchases_from),
                    ("Gamma-Gamma", outcome.spend_from),
                ] {
                    if counts == FittedCounts::NearestNonNegative {
                        notes.push(format!(
                            "The noise dominates the released histogram: {model} was fitted to its nearest non-negative counts, which biases the fit towards the densest bins. Fewer bins or more customers per bin would give a better fit at this ε."
                        ));
                    }
                }
                for (name, value) in [
                    (
                        "BG/NBD (r, α days, a, b)",
                        format!(
                            "{:.4}, {:.3}, {:.4}, {:.4}",
                            purchases.r, purchases.alpha, purchases.a, purchases.b
                        ),
                    ),
                    (
                        "Gamma-Gamma (p, q, γ)",
                        format!("{:.4}, {:.4}, {:.3}", spend.p, spend.q, spend.gamma),
                    ),
                    (
                        "Holdout check (noised)",
                        match &outcome.evaluation {
                            Ok(evaluation) => format!(
                                "{:.0} customers, mean absolute error {:.3} purchases, correlation {:.3}",
                                evaluation.customers,
                                evaluation.mean_absolute_error,
                                evaluation.correlation
                            ),
                            Err(reason) => format!("not shown: {reason}"),
                        },
                    ),
                ] {
                    job.details.push(Detail {
                        name: name.to_owned(),
                        value,
                    });
                }
                lifetime_value = outcome.evaluation.as_ref().ok().map(|evaluation| {
                    evaluation
                        .by_calibration_purchases
                        .iter()
                        .map(|&(purchases, customers, mean_actual, mean_predicted)| {
                            LifetimeValuePoint {
                                calibration_purchases: purchases,
                                customers,
                                mean_actual,
                                mean_predicted,
                            }
                        })
                        .collect()
                });
                Vec::new()
            }
            Ok(AnalysisOutcome::BasketRules(outcome)) => {
                if let Analysis::BasketRules(job) = analysis {
                    rules = Some(crate::rules::report_rules(job, &outcome)?);
                }
                Vec::new()
            }
            Err(error) => {
                notes.push(format!("The analysis result cannot be shown: {error:#}."));
                Vec::new()
            }
        },
        _ => Vec::new(),
    };
    Ok(ReportInput {
        job,
        generated_at,
        notes,
        privacy: privacy_spent(job_id, spec, charges, as_of_unix_s)?,
        rounds,
        evaluation,
        segments,
        rules,
        lifetime_value,
        privacy_audits: Vec::new(),
    })
}

/// An analysis' outcome from its released sums (post-processing only).
pub(crate) fn analysis_outcome(
    spec: &JobSpec,
    analysis: &Analysis,
    history: &[RoundRecord],
) -> anyhow::Result<AnalysisOutcome> {
    let released: Vec<&[f64]> = history
        .iter()
        .map(|record| record.release_sum.as_slice())
        .collect();
    analysis
        .outcome(&released, &spec.features.public_scaling(), spec.seed)
        .map_err(anyhow::Error::msg)
}

/// The report's profile of each fitted k: noised sizes, feature means in
/// original units and label rates; tiny segments are named as such.
fn segment_profiles(spec: &JobSpec, outcomes: &[ClusteringOutcome]) -> Vec<Segments> {
    let features: Vec<String> = spec
        .features
        .features
        .iter()
        .map(ToString::to_string)
        .collect();
    outcomes
        .iter()
        .map(|outcome| Segments {
            k: outcome.k,
            cost: Some(outcome.noised_cost),
            features: features.clone(),
            noised: true,
            segments: outcome
                .segments
                .iter()
                .enumerate()
                .map(|(index, segment)| Segment {
                    name: if segment.reliable {
                        format!("segment {index}")
                    } else {
                        format!("segment {index} (too few customers to profile)")
                    },
                    size: segment.size,
                    centroid: segment.mean.clone(),
                    label_rate: segment.label_rate,
                })
                .collect(),
        })
        .collect()
}

pub(crate) fn summary(
    job_id: &str,
    spec: &JobSpec,
    state: &JobState,
    history: &[RoundRecord],
) -> JobSummary {
    let state = match state {
        JobState::Pending => "pending".to_owned(),
        JobState::Running => "running".to_owned(),
        JobState::Succeeded => "succeeded".to_owned(),
        JobState::Failed { reason } => format!("failed: {reason}"),
        JobState::Cancelled => "cancelled".to_owned(),
    };
    let model = match &spec.model {
        ModelKind::LogisticRegression => "logistic regression".to_owned(),
        ModelKind::Mlp { hidden } => format!("neural network, hidden layers {hidden:?}"),
    };
    let output = if spec.label.task.is_regression() {
        "regression"
    } else {
        "binary score"
    };
    let completed = history.iter().filter(|record| record.round > 0).count();
    let customers = match &spec.privacy.customers {
        Some(_) => "DP-SGD at every partner; final evaluation released once with Gaussian noise",
        None => "off",
    };
    let detail = |name: &str, value: String| Detail {
        name: name.to_owned(),
        value,
    };
    let features = spec
        .features
        .features
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if let Some(analysis) = &spec.analysis {
        let kind = match analysis {
            Analysis::Segment(segment) => format!(
                "customer segments (federated DP k-means, k = {:?})",
                segment.config.k_values
            ),
            Analysis::Rfm(_) => "RFM cut points (federated DP quintiles)".to_owned(),
            Analysis::LifetimeValue(lifetime) => format!(
                "customer lifetime value (BG/NBD and Gamma-Gamma, {}-day holdout check)",
                lifetime.holdout_days
            ),
            Analysis::BasketRules(rules) => format!(
                "cross-sell rules (federated DP frequent itemsets of up to {} of {} items)",
                rules.levels(),
                rules.vocabulary.len()
            ),
        };
        return JobSummary {
            job_id: job_id.to_owned(),
            kind,
            state,
            details: vec![
                detail("Name", spec.name.clone()),
                detail("Releases", format!("{completed} of {}", spec.rounds)),
                detail(
                    "Partners per release",
                    format!("{} to {}", spec.min_participants, spec.max_participants),
                ),
                detail("History up to", spec.label.cutoff.to_string()),
                detail("Features", features.clone()),
                detail(
                    "Customer-level privacy",
                    "every release noised at the partners (distributed discrete Gaussian) before secure aggregation".to_owned(),
                ),
                detail(
                    "Budget per partner",
                    format!(
                        "customer ε {}, δ {:e} (the plan spends ε {})",
                        spec.privacy.customer_epsilon,
                        spec.privacy.delta,
                        veil_job::planned_spend(spec)
                            .ok()
                            .and_then(|spent| spent.first().map(|spend| format!("{:.3}", spend.epsilon)))
                            .unwrap_or_else(|| "unknown".to_owned())
                    ),
                ),
            ],
        };
    }
    JobSummary {
        job_id: job_id.to_owned(),
        kind: format!("{} ({output}), {model}", spec.label.task),
        state,
        details: vec![
            detail("Name", spec.name.clone()),
            detail("Rounds", format!("{completed} of {}", spec.rounds)),
            detail(
                "Partners per round",
                format!("{} to {}", spec.min_participants, spec.max_participants),
            ),
            detail(
                "Label",
                format!(
                    "{} within {} days after {}",
                    spec.label.task, spec.label.horizon_days, spec.label.cutoff
                ),
            ),
            detail("Features", features),
            detail(
                "Held out for evaluation",
                format!(
                    "{:.0}% of each partner's customers",
                    100.0 * spec.holdout_fraction
                ),
            ),
            detail("Customer-level privacy", customers.to_owned()),
            detail(
                "Budget per partner",
                format!(
                    "customer ε {}, partner ε {}, δ {:e}",
                    spec.privacy.customer_epsilon, spec.privacy.partner_epsilon, spec.privacy.delta
                ),
            ),
        ],
    }
}

fn privacy_spent(
    job_id: &str,
    spec: &JobSpec,
    charges: &[Charge],
    as_of_unix_s: i64,
) -> anyhow::Result<Vec<PrivacySpent>> {
    let report = AuditorReport::build(
        charges,
        &[spec.privacy.job_budget(job_id)],
        &[],
        as_of_unix_s,
    )
    .context("composing the job's charges")?;
    Ok(report
        .jobs
        .iter()
        .map(|row| {
            let trust = row
                .trust_models
                .iter()
                .map(|model| match model {
                    TrustModel::LocalDpSgd => "noise added by the partner",
                    TrustModel::Distributed => "distributed noise, secure aggregation",
                    TrustModel::Central => "noise added by the coordinator",
                })
                .collect::<Vec<_>>()
                .join("; ");
            PrivacySpent {
                partner: row.partner_id.clone(),
                unit: match row.unit {
                    PrivacyUnit::Customer => "customer".to_owned(),
                    PrivacyUnit::Partner => "partner".to_owned(),
                },
                mechanism: format!("{} ({trust})", row.mechanisms.join(", ").replace('_', " ")),
                epsilon: row.spent.epsilon,
                delta: row.spent.delta,
                budget_epsilon: row.epsilon_limit,
            }
        })
        .collect())
}

/// The last round that released an evaluation (under customer-level DP only
/// the final round does), read with intervals.
fn evaluation(spec: &JobSpec, history: &[RoundRecord]) -> anyhow::Result<Option<Evaluation>> {
    let Some(record) = history.iter().rev().find(|record| {
        record.round > 0
            && record
                .evaluate_statistics
                .first()
                .is_some_and(|count| *count > 0.0)
    }) else {
        return Ok(None);
    };
    let intervals = IntervalConfig::new(REPORT_CONFIDENCE, REPORT_REPLICATES, REPORT_SEED)?;
    let release = statistics::evaluation_release(
        spec,
        &record.evaluate_statistics,
        record.evaluate_participants,
    )
    .with_context(|| format!("round {}'s evaluation statistics", record.round))?;
    let context = || format!("evaluating round {}'s released statistics", record.round);
    Ok(Some(match release {
        EvaluationRelease::Binary(release) => {
            Evaluation::Binary(evaluate_binary(&release, &intervals).with_context(context)?)
        }
        EvaluationRelease::Regression(release) => {
            Evaluation::Regression(evaluate_regression(&release, &intervals).with_context(context)?)
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use veil_federation::Phase;
    use veil_job::file::JobFile;
    use veil_job::{RoundParty, phase_charges};
    use veil_models::{EvalStats, OutputKind};

    const JOB: &str = "name = \"churn <q4>\"\nrounds = 2\nmin_participants = 3\nmax_participants = 3\n\n[task]\nkind = \"churn\"\ncutoff = \"2024-09-30\"\nhorizon_days = 90\n\n[model]\nkind = \"logistic_regression\"\n\n[training]\nlocal_epochs = 1\nbatch_size = 32\nlearning_rate = 0.05\noptimizer = \"sgd\"\n\n[privacy]\ncustomers = \"dp-sgd\"\npartners = \"off\"\ncustomer_epsilon = 50\n";
    const PARTNERS: [&str; 3] = ["north", "south", "east"];

    fn record(round: u32, evaluate_statistics: Vec<f64>) -> RoundRecord {
        RoundRecord {
            round,
            train_participants: 3,
            train_weight: 3.0,
            train_statistics: vec![0.6 * 900.0, 900.0],
            evaluate_participants: 3,
            evaluate_statistics,
            dropped: Vec::new(),
            contributors: PARTNERS.iter().map(|p| (*p).to_owned()).collect(),
            secure_guarantee: None,
            abandoned: None,
            release_sum: Vec::new(),
        }
    }

    #[test]
    fn a_dp_churn_job_reports_its_spend_rounds_and_noised_evaluation() {
        let spec = JobSpec::from_wire(&JobFile::parse(JOB).unwrap().to_wire()).unwrap();
        // The final evaluation as three nodes release it: 6,000 held-out
        // customers, coarsened, each node's noise already in (a fixed offset
        // here, of the release's own size).
        let mut stats = EvalStats::empty(OutputKind::Binary);
        stats.count = 6000;
        stats.squared_error_sum = 950.0;
        for bucket in 0..1000 {
            let score = bucket as f64 / 1000.0;
            stats.positive_histogram[bucket] = (3.0 * score * score * 2.0) as u64;
            stats.negative_histogram[bucket] = (9.0 * (1.0 - score)) as u64;
        }
        veil_job::statistics::coarsen_histograms(&mut stats);
        let mut released = stats.to_vector();
        for (index, value) in released.iter_mut().enumerate() {
            if index < 6 || (index - 6) % 50 == 0 {
                *value += if index % 2 == 0 { 20.0 } else { -20.0 };
            }
        }
        let history = vec![
            record(0, Vec::new()),
            record(1, EvalStats::empty(OutputKind::Binary).to_vector()),
            record(2, released),
        ];
        let mut charges = Vec::new();
        for round in 1..=2 {
            for partner in PARTNERS {
                let party = RoundParty {
                    job_id: "job-7",
                    round,
                    partner_id: partner,
                    dataset_id: partner,
                    cohort: 3,
                };
                for phase in [Phase::Train, Phase::Evaluate] {
                    for charge in phase_charges(&spec, phase, party).unwrap() {
                        charges.push(Charge::new(charge, 1_700_000_000).unwrap());
                    }
                }
            }
        }
        let input = build_report(
            "job-7",
            &spec,
            &JobState::Succeeded,
            &history,
            &charges,
            "now".to_owned(),
            1_700_000_100,
        )
        .unwrap();

        assert_eq!(input.job.state, "succeeded");
        assert!(
            input
                .job
                .details
                .iter()
                .any(|d| d.name == "Name" && d.value == "churn <q4>")
        );
        let customer_rows: Vec<&PrivacySpent> = input
            .privacy
            .iter()
            .filter(|row| row.unit == "customer")
            .collect();
        assert_eq!(customer_rows.len(), 3, "{:?}", input.privacy);
        for row in customer_rows {
            assert!(row.epsilon > 0.0 && row.epsilon <= 50.0, "{row:?}");
            assert_eq!(row.budget_epsilon, Some(50.0));
        }
        assert_eq!(input.rounds.len(), 2);
        assert_eq!(input.rounds[0].auc, None, "round 1 released no evaluation");
        let Some(Evaluation::Binary(evaluation)) = &input.evaluation else {
            panic!(
                "a churn job has a binary evaluation: {:?}",
                input.evaluation
            );
        };
        // The noise is in the intervals: three nodes at z·√7 each.
        assert!(evaluation.auc.upper > evaluation.auc.lower);
        assert!(evaluation.auc.value > 0.7, "{:?}", evaluation.auc);
        assert!(
            input.rounds[1].auc.is_some(),
            "the final round's AUC is in the round table"
        );
        assert_eq!(evaluation.top_percents.len(), 4);
        let html = veil_report::render_html(&input);
        assert!(html.contains("churn &lt;q4&gt;") && html.contains(r#"data-chart="roc""#));
    }

    #[test]
    fn an_evaluation_left_with_one_class_gives_a_note_not_a_failure() {
        let spec = JobSpec::from_wire(&JobFile::parse(JOB).unwrap().to_wire()).unwrap();
        let mut released = EvalStats::empty(OutputKind::Binary).to_vector();
        released[0] = 40.0;
        // Negatives only: every positive bucket is empty.
        released[6 + 1000] = 40.0;
        let history = vec![record(1, released)];
        let input = build_report(
            "job-8",
            &spec,
            &JobState::Succeeded,
            &history,
            &[],
            "now".to_owned(),
            0,
        )
        .unwrap();
        assert!(input.evaluation.is_none());
        assert_eq!(input.notes.len(), 1);
        assert!(input.notes[0].contains("0.0 positive"), "{:?}", input.notes);
    }

    #[test]
    fn a_missing_state_folder_is_named() {
        let folder = tempfile::tempdir().unwrap();
        let error = load_report(folder.path(), "job-1", "now".to_owned(), 0).unwrap_err();
        assert!(
            error.to_string().contains("jobs.sqlite does not exist"),
            "{error:#}"
        );
    }
}
