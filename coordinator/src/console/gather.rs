//! Gathers the console's page structs from the coordinator's state: the
//! engine (jobs, nodes), the privacy ledger (charges), the audit log
//! (verified entries) and the CA's files (certificates). Each function reads
//! under the lock it needs and returns plain data; nothing here renders.

use std::collections::BTreeMap;
use std::time::Instant;

use veil_audit_log::{AuditEntry, AuditEvent};
use veil_behaviour_features::Scaling;
use veil_console::pages::{
    AuditPage, AuditRow, EpsilonLine, EpsilonPoint, JobPage, JobSummary, Member, PrivacyChart,
    Refusal, RoundRow,
};
use veil_federation::JobState;
use veil_job::export::ExportedModel;
use veil_job::statistics;
use veil_pki::{IssuanceJournal, RevocationList};
use veil_privacy_accounting::{Accountant, RdpCurves};
use veil_privacy_ledger::Charge;

use crate::audit::LogVerifier;
use crate::state::{Shared, lock};

use super::http::Form;

/// Points drawn per partner line at most: a long job's line shows an evenly
/// spaced selection of its charges (and always the last), so the page stays
/// small enough to load and draw.
const MAX_POINTS_PER_LINE: usize = 100;

/// Audit entries shown on one page at most, newest first.
const MAX_AUDIT_ROWS: usize = 500;

fn state_name(state: &JobState) -> &'static str {
    match state {
        JobState::Pending => "pending",
        JobState::Running => "running",
        JobState::Succeeded => "succeeded",
        JobState::Failed { .. } => "failed",
        JobState::Cancelled => "cancelled",
    }
}

fn summary_of(status: &veil_federation::JobStatus) -> JobSummary {
    JobSummary {
        id: status.job.clone(),
        state: state_name(&status.state).to_owned(),
        completed_rounds: status.completed_rounds,
        total_rounds: status.total_rounds,
        current: match (status.current, status.waiting_for_nodes) {
            (_, Some(missing)) => Some(format!("waiting for {missing} more live node(s)")),
            (Some((round, phase)), None) => Some(format!("round {round} {phase}")),
            (None, None) => None,
        },
        failure: match &status.state {
            JobState::Failed { reason } => Some(reason.clone()),
            _ => None,
        },
    }
}

/// One job as the list shows it.
pub(super) fn job_summary(shared: &Shared, job: &str) -> Option<JobSummary> {
    shared
        .read(|engine| engine.status(job).ok())
        .map(|status| summary_of(&status))
}

/// Every job, newest first.
pub(super) fn jobs(shared: &Shared) -> Vec<JobSummary> {
    let mut jobs: Vec<JobSummary> = shared.read(|engine| {
        engine
            .job_ids()
            .iter()
            .filter_map(|job| engine.status(job).ok())
            .map(|status| summary_of(&status))
            .collect()
    });
    jobs.reverse();
    jobs
}

/// The job page: its summary, spec and completed rounds.
pub(super) fn job_page(shared: &Shared, job: &str) -> Option<JobPage> {
    shared.read(|engine| {
        let status = engine.status(job).ok()?;
        let spec = engine.descriptor(job).ok()?;
        Some(job_page_of(job, spec, &status))
    })
}

/// [`job_page`] from the job's parts, without locks.
fn job_page_of(
    job: &str,
    spec: &veil_job::JobSpec,
    status: &veil_federation::JobStatus,
) -> JobPage {
    let details = crate::report::summary(job, spec, &status.state, &status.history).details;
    let rounds = status
        .history
        .iter()
        .filter(|record| record.round > 0)
        .map(|record| RoundRow {
            round: record.round,
            contributors: record.contributors.clone(),
            dropped: record.dropped.clone(),
            declined: Vec::new(),
            secure_guarantee: record.secure_guarantee.clone(),
            abandoned: record.abandoned.clone(),
        })
        .collect();
    JobPage {
        summary: summary_of(status),
        spec: details
            .into_iter()
            .map(|detail| (detail.name, detail.value))
            .collect(),
        rounds,
    }
}

/// Members: every certificate the CA issued (with revocation), and every
/// node that registered (with its activity).
pub(super) fn members(
    shared: &Shared,
    certificate_files: Option<&(IssuanceJournal, RevocationList)>,
) -> Vec<Member> {
    let activity: BTreeMap<String, (u64, bool)> = shared.read(|engine| {
        engine
            .node_activity(Instant::now())
            .into_iter()
            .map(|node| (node.node, (node.silent_for.as_secs(), node.live)))
            .collect()
    });
    let mut members = Vec::new();
    let mut listed = std::collections::BTreeSet::new();
    if let Some((journal, revocations)) = certificate_files {
        let revoked: BTreeMap<String, String> = revocations
            .entries()
            .unwrap_or_default()
            .into_iter()
            .map(|revocation| (revocation.serial.to_string(), revocation.reason.to_string()))
            .collect();
        for issuance in journal.entries().unwrap_or_default() {
            let serial = issuance.serial.to_string();
            let node_activity = (issuance.role == veil_pki::Role::Node)
                .then(|| activity.get(&issuance.name).copied())
                .flatten();
            listed.insert(issuance.name.clone());
            members.push(Member {
                revoked: revoked.get(&serial).cloned(),
                name: issuance.name,
                role: issuance.role.to_string(),
                serial,
                certificate_expires: format!(
                    "issued {}",
                    utc_text(issuance.issued_at_unix_seconds as i64 * 1000)
                ),
                activity: node_activity,
            });
        }
    }
    for (node, node_activity) in activity {
        if !listed.contains(&node) {
            members.push(Member {
                name: node,
                role: "node".to_owned(),
                serial: "—".to_owned(),
                certificate_expires: "—".to_owned(),
                revoked: None,
                activity: Some(node_activity),
            });
        }
    }
    members
}

fn utc_text(unix_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(unix_ms).map_or_else(
        || unix_ms.to_string(),
        |time| time.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

/// The mechanism of a charge, in words.
fn mechanism_text(charge: &Charge) -> String {
    match charge.mechanism.noise_multiplier() {
        Ok(sigma) => format!(
            "{} (noise multiplier {sigma:.3}, clip {}, {:?})",
            charge.mechanism.kind(),
            charge.mechanism.clip_norm(),
            charge.trust_model
        ),
        Err(_) => charge.mechanism.kind().to_owned(),
    }
}

/// One chart per job and unit: each partner's cumulative ε (RDP at the job
/// budget's δ, as `veil-ledger report` draws it) after each of its charges.
pub(super) fn privacy_charts(shared: &Shared) -> Vec<PrivacyChart> {
    let jobs: Vec<(String, veil_privacy_ledger::JobBudget)> = shared.read(|engine| {
        engine
            .job_ids()
            .into_iter()
            .filter_map(|job| {
                let budget = engine.descriptor(&job).ok()?.privacy.job_budget(&job);
                Some((job, budget))
            })
            .collect()
    });
    let mut charts = Vec::new();
    for (job, budget) in jobs {
        let charges = match lock(&shared.privacy).charges_for_job(&job) {
            Ok(charges) => charges,
            Err(error) => {
                tracing::warn!(job, %error, "console: cannot read the job's charges");
                continue;
            }
        };
        charts.extend(job_charts(&job, &budget, &charges));
    }
    charts
}

/// One job's charts from its charges, without locks.
fn job_charts(
    job: &str,
    budget: &veil_privacy_ledger::JobBudget,
    charges: &[Charge],
) -> Vec<PrivacyChart> {
    let mut groups: BTreeMap<(veil_privacy_ledger::PrivacyUnit, String), Vec<&Charge>> =
        BTreeMap::new();
    for charge in charges {
        groups
            .entry((charge.unit, charge.partner_id.clone()))
            .or_default()
            .push(charge);
    }
    let mut by_unit: BTreeMap<veil_privacy_ledger::PrivacyUnit, Vec<EpsilonLine>> = BTreeMap::new();
    // Partners mostly share mechanisms: each one's RDP curve is evaluated once.
    let mut curves = RdpCurves::default();
    for ((unit, partner), mut group) in groups {
        // The ledger report's order: by round, then release.
        group.sort_by_key(|charge| (charge.round, charge.release));
        let delta = budget.for_unit(unit).delta;
        let mut accountant = Accountant::new();
        let charges = group.len();
        // Every charge is composed; ε is evaluated only where a point is drawn.
        let stride = charges.div_ceil(MAX_POINTS_PER_LINE).max(1);
        let mut points = Vec::with_capacity(charges.min(MAX_POINTS_PER_LINE));
        // A charge the accountant refuses leaves every later total unbounded.
        let mut unbounded = false;
        for (index, charge) in group.into_iter().enumerate() {
            unbounded |= charge.mechanism.compose_into(&mut accountant).is_err();
            if (index + 1) % stride != 0 && index + 1 != charges {
                continue;
            }
            let epsilon = if unbounded {
                f64::INFINITY
            } else {
                accountant
                    .epsilon_rdp_cached(delta, &mut curves)
                    .unwrap_or(f64::INFINITY)
            };
            points.push(EpsilonPoint {
                round: charge.round,
                release: charge.release.name().to_owned(),
                epsilon,
                charge: charge.epsilon_rdp,
                mechanism: mechanism_text(charge),
            });
        }
        by_unit.entry(unit).or_default().push(EpsilonLine {
            partner,
            points,
            charges,
        });
    }
    by_unit
        .into_iter()
        .map(|(unit, lines)| PrivacyChart {
            job: job.to_owned(),
            unit: unit.name().to_owned(),
            budget: Some(budget.for_unit(unit).epsilon),
            lines,
        })
        .collect()
}

/// The audit log's entries, verified (hash chain, signatures, head), or why
/// it does not verify. Run off the async threads: it reads the whole log.
pub(super) fn audit_entries(verifier: &LogVerifier) -> Result<Vec<AuditEntry>, String> {
    verifier.verify()
}

/// Budget refusals and vetoes, from the audit log.
pub(super) fn refusals(entries: &[AuditEntry]) -> Vec<Refusal> {
    entries
        .iter()
        .filter_map(|entry| match &entry.event {
            AuditEvent::BudgetRefused {
                job_id,
                round,
                partner,
                unit,
                requested_epsilon,
                remaining_epsilon,
            } => Some(Refusal {
                job: job_id.clone(),
                round: *round,
                partner: partner.clone(),
                reason: format!(
                    "budget refused: {unit}-level ε {requested_epsilon:.4} asked, {remaining_epsilon:.4} left"
                ),
            }),
            AuditEvent::NodeVeto {
                job_id,
                round,
                node_id,
                reason,
            } => Some(Refusal {
                job: job_id.clone(),
                round: *round,
                partner: node_id.clone(),
                reason: format!("veto: {reason}"),
            }),
            _ => None,
        })
        .collect()
}

/// A one-line summary of an entry: its event without the kind and job
/// (shown in their own columns).
fn entry_summary(event: &AuditEvent) -> String {
    let mut value = serde_json::to_value(event).unwrap_or_default();
    if let Some(fields) = value.as_object_mut() {
        fields.remove("kind");
        fields.remove("job_id");
    }
    let text = value.to_string();
    if text.len() > 300 {
        let mut end = 300;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &text[..end])
    } else {
        text
    }
}

/// The audit page: the verification state and the entries that pass the
/// filters (`kind`, `job`, `actor`), newest first.
pub(super) fn audit_page(entries: Result<Vec<AuditEntry>, String>, filter: &Form) -> AuditPage {
    let filter_kind = filter.get("kind").unwrap_or("").trim().to_owned();
    let filter_job = filter.get("job").unwrap_or("").trim().to_owned();
    let filter_actor = filter.get("actor").unwrap_or("").trim().to_owned();
    let (verification, entries) = match entries {
        Ok(entries) => (Ok(entries.len() as u64), entries),
        Err(reason) => (Err(reason), Vec::new()),
    };
    let rows = entries
        .iter()
        .rev()
        .filter(|entry| filter_kind.is_empty() || entry.event.kind() == filter_kind)
        .filter(|entry| filter_job.is_empty() || entry.event.job_id() == Some(filter_job.as_str()))
        .filter(|entry| filter_actor.is_empty() || entry.actor.contains(filter_actor.as_str()))
        .take(MAX_AUDIT_ROWS)
        .map(|entry| AuditRow {
            seq: entry.seq,
            time: utc_text(entry.at_unix_ms),
            actor: entry.actor.clone(),
            kind: entry.event.kind().to_owned(),
            job: entry.event.job_id().map(str::to_owned),
            summary: entry_summary(&entry.event),
        })
        .collect();
    AuditPage {
        verification,
        filter_kind,
        filter_job,
        filter_actor,
        entries: rows,
    }
}

/// A finished job's model with its spec and scaling, and its version, as
/// `FetchModel` serves it.
pub(super) fn exported_model(shared: &Shared, job: &str) -> anyhow::Result<(ExportedModel, u64)> {
    shared.read(|engine| {
        let parameters = engine.final_model(job)?;
        let spec = engine.descriptor(job)?;
        let sums = engine.feature_statistics(job)?;
        let scaling = statistics::export_scaling(spec, sums.as_deref().map(Vec::as_slice))?;
        let status = engine.status(job)?;
        let version = engine.snapshot(job)?.model_version;
        Ok((
            ExportedModel {
                job_id: job.to_owned(),
                spec: spec.clone(),
                scaling: Scaling {
                    mean: scaling.mean,
                    std: scaling.std,
                },
                parameters: parameters.to_vec(),
                final_metrics: status
                    .history
                    .last()
                    .map(|record| crate::convert::round_metrics(spec, record)),
            },
            u64::from(version),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use veil_console::pages::{self, Viewer};
    use veil_console::token::ConsoleRole;
    use veil_federation::RoundRecord;
    use veil_privacy_ledger::{Mechanism, PrivacyUnit, Release, TrustModel};

    const ROUNDS: u32 = 1000;
    const PARTNERS: usize = 100;

    /// The benchmark size: a job of 1,000 rounds with 100 partners.
    /// Asserts what the pages hold; prints how long gathering and rendering
    /// took (a figure for the closing note, not a pass condition: tests do
    /// not depend on the clock).
    #[test]
    fn a_job_of_1000_rounds_and_100_partners_renders_every_round_and_charge() {
        let spec =
            veil_job::JobSpec::from_wire(&veil_job::standard_job("2024-10-02", 90).to_wire())
                .unwrap();
        let partners: Vec<String> = (0..PARTNERS)
            .map(|index| format!("partner-{index:03}"))
            .collect();
        let status = veil_federation::JobStatus {
            job: "job-1".to_owned(),
            state: JobState::Succeeded,
            completed_rounds: ROUNDS,
            total_rounds: ROUNDS,
            current: None,
            waiting_for_nodes: None,
            history: (1..=ROUNDS)
                .map(|round| RoundRecord {
                    round,
                    train_participants: PARTNERS as u32,
                    train_weight: 1.0,
                    train_statistics: Vec::new(),
                    evaluate_participants: PARTNERS as u32,
                    evaluate_statistics: Vec::new(),
                    dropped: Vec::new(),
                    contributors: partners.clone(),
                    secure_guarantee: Some("tolerates 3 colluders and 10 dropouts".to_owned()),
                    abandoned: None,
                    release_sum: Vec::new(),
                })
                .collect(),
        };
        let mechanism = Mechanism::PoissonSubsampledGaussian {
            sampling_rate: 0.01,
            noise_multiplier: 1.1,
            steps: 100,
            clip_norm: 1.0,
        };
        let charges: Vec<Charge> = partners
            .iter()
            .flat_map(|partner| {
                (1..=u64::from(ROUNDS)).map(move |round| Charge {
                    job_id: "job-1".to_owned(),
                    round,
                    partner_id: partner.clone(),
                    dataset_id: partner.clone(),
                    unit: PrivacyUnit::Customer,
                    release: Release::Round,
                    trust_model: TrustModel::LocalDpSgd,
                    mechanism,
                    delta: 1e-5,
                    epsilon_rdp: 0.01,
                    epsilon_pld: None,
                    recorded_at_unix_s: 0,
                })
            })
            .collect();
        let viewer = Viewer {
            name: "olivia".to_owned(),
            role: ConsoleRole::Operator,
            csrf_token: "00".to_owned(),
        };

        let started = std::time::Instant::now();
        let job = pages::job(&viewer, &job_page_of("job-1", &spec, &status));
        let job_time = started.elapsed();
        assert_eq!(job.matches("<tr class=\"round\">").count(), ROUNDS as usize);

        let started = std::time::Instant::now();
        let charts = job_charts("job-1", &spec.privacy.job_budget("job-1"), &charges);
        let gathered = started.elapsed();
        let privacy = pages::privacy(&viewer, &charts, &[]);
        let privacy_time = started.elapsed();
        assert_eq!(
            privacy.matches("class=\"point\" tabindex=\"0\"").count(),
            PARTNERS * MAX_POINTS_PER_LINE
        );
        assert!(privacy.contains("10000 of 100000 charges shown"));
        // The last point of each line is the ledger's last charge.
        assert!(privacy.contains("data-partner=\"partner-099\" data-round=\"1000\""));
        println!(
            "job page: {:.1} ms, {} KiB; privacy page: {:.1} ms ({:.1} ms composing ε), {} KiB",
            job_time.as_secs_f64() * 1e3,
            job.len() / 1024,
            privacy_time.as_secs_f64() * 1e3,
            gathered.as_secs_f64() * 1e3,
            privacy.len() / 1024
        );
    }
}
