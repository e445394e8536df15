//! Gathers the console's page structs from the coordinator's state: the
//! engine (jobs, nodes), the privacy ledger (charges), the audit log
//! (verified entries) and the CA's files (certificates). Each function reads
//! under the lock it needs and returns plain data; nothing here renders.

use std::collections::BTreeMap;
use std::time::Instant;

use veil_audit_log::{AuditEntry, AuditEvent};
use veil_behaviour_features::Scaling;
use veil_console::pages::{
    AuditPage, AuditRow, JobPage, JobSummary, Member, PrivacyPage, Refusal, RoundRow,
};
use veil_console::privacy;
use veil_federation::JobState;
use veil_job::export::ExportedModel;
use veil_job::statistics;
use veil_pki::{IssuanceJournal, RevocationList};
use veil_privacy_accounting::RdpCurves;

use crate::audit::LogVerifier;
use crate::state::{Shared, lock};

use super::http::Form;

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
    let status = shared.status(job).ok()?;
    let mut page = shared.read(|engine| {
        let spec = engine.descriptor(job).ok()?;
        Some(job_page_of(job, spec, &status))
    })?;
    // After the engine's lock is released: the audit lock comes after it everywhere else.
    let vetoes = lock(&shared.audit).vetoes_for(job);
    add_vetoes(&mut page.rounds, vetoes);
    Some(page)
}

/// Puts each round's vetoes in its row. A veto in a round without a row (round 0's feature
/// statistics, a round still under way or one that committed nothing) gets a row of its own,
/// so no "no" is missing from the table.
fn add_vetoes(rows: &mut Vec<RoundRow>, vetoes: BTreeMap<u64, Vec<(String, String)>>) {
    for (round, declined) in vetoes {
        let Ok(round) = u32::try_from(round) else {
            continue;
        };
        match rows.iter_mut().find(|row| row.round == round) {
            Some(row) => row.declined = declined,
            None => rows.push(RoundRow {
                round,
                contributors: Vec::new(),
                dropped: Vec::new(),
                declined,
                secure_guarantee: Some("no aggregate".to_owned()),
                abandoned: Some(if round == 0 {
                    "feature statistics".to_owned()
                } else {
                    "no committed update in this round".to_owned()
                }),
            }),
        }
    }
    rows.sort_by_key(|row| row.round);
}

/// [`job_page`] from the job's parts, without locks.
fn job_page_of(
    job: &str,
    spec: &veil_job::JobSpec,
    status: &veil_federation::JobStatus,
) -> JobPage {
    let details = crate::report::summary(job, spec, &status.state, &status.history).details;
    JobPage {
        summary: summary_of(status),
        spec: details
            .into_iter()
            .map(|detail| (detail.name, detail.value))
            .collect(),
        rounds: round_rows(&status.history),
    }
}

/// The job page's rows of completed rounds, without vetoes: the engine keeps
/// none (they are read from the audit log).
fn round_rows(history: &[veil_federation::RoundRecord]) -> Vec<RoundRow> {
    history
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
        .collect()
}

/// What a job page following its job live needs once it shows the first
/// `known` completed rounds: the job's summary and the rows of the rounds
/// completed since, with their vetoes. Copies only those rounds, since every
/// open page asks after every event.
pub(super) fn job_progress(
    shared: &Shared,
    job: &str,
    known: usize,
) -> Option<(JobSummary, Vec<RoundRow>)> {
    let status = shared.status_after(job, known).ok()?;
    let (summary, mut rows) = (summary_of(&status), round_rows(&status.history));
    if !rows.is_empty() {
        // After the engine's lock is released, as in `job_page`.
        let mut vetoes = lock(&shared.audit).vetoes_for(job);
        for row in &mut rows {
            if let Some(declined) = vetoes.remove(&u64::from(row.round)) {
                row.declined = declined;
            }
        }
    }
    Some((summary, rows))
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
    let versions = lock(&shared.node_versions).clone();
    let now_unix_s = chrono::Utc::now().timestamp();
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
            let is_node = issuance.role == veil_pki::Role::Node;
            let node_activity = is_node
                .then(|| activity.get(&issuance.name).copied())
                .flatten();
            let (certificate, certificate_expired) = certificate_text(&issuance, now_unix_s);
            listed.insert(issuance.name.clone());
            members.push(Member {
                revoked: revoked.get(&serial).cloned(),
                software_version: is_node
                    .then(|| versions.get(&issuance.name).cloned())
                    .flatten(),
                name: issuance.name,
                role: issuance.role.to_string(),
                serial,
                certificate,
                certificate_expired,
                activity: node_activity,
            });
        }
    }
    for (node, node_activity) in activity {
        if !listed.contains(&node) {
            members.push(Member {
                software_version: versions.get(&node).cloned(),
                name: node,
                role: "node".to_owned(),
                serial: "—".to_owned(),
                certificate: "—".to_owned(),
                certificate_expired: false,
                revoked: None,
                activity: Some(node_activity),
            });
        }
    }
    members
}

/// A certificate's dates as the federation page shows them, and whether it
/// has expired at `now_unix_s`.
fn certificate_text(issuance: &veil_pki::Issuance, now_unix_s: i64) -> (String, bool) {
    let issued = utc_text(issuance.issued_at_unix_seconds as i64 * 1000);
    match issuance.expires_at_unix_seconds {
        Some(expires) => {
            let expires = expires as i64;
            let when = utc_text(expires * 1000);
            if expires <= now_unix_s {
                (format!("EXPIRED {when}; issued {issued}"), true)
            } else {
                let days = (expires - now_unix_s) / 86_400;
                (
                    format!("expires {when} (in {days} days); issued {issued}"),
                    false,
                )
            }
        }
        None => (
            format!("issued {issued}; expiry not in the CA journal"),
            false,
        ),
    }
}

fn utc_text(unix_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(unix_ms).map_or_else(
        || unix_ms.to_string(),
        |time| time.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

/// The privacy page's charts and per-year table from the coordinator's
/// ledger, and the refusals and vetoes from the audit log. `curves` lives
/// as long as the console: mechanisms' RDP curves never change.
pub(super) fn privacy_page(
    shared: &Shared,
    entries: &[AuditEntry],
    curves: &mut RdpCurves,
) -> PrivacyPage {
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
    let mut all_charges = Vec::new();
    for (job, budget) in jobs {
        let charges = match lock(&shared.privacy).charges_for_job(&job) {
            Ok(charges) => charges,
            Err(error) => {
                tracing::warn!(job, %error, "console: cannot read the job's charges");
                continue;
            }
        };
        charts.extend(privacy::job_charts(&job, &budget, &charges, curves));
        all_charges.extend(charges);
    }
    PrivacyPage {
        charts,
        years: privacy::yearly_spend(&all_charges, &cap_declines(entries), curves),
        refusals: refusals(entries),
    }
}

/// Per partner and calendar year, the phases its node declined because its
/// own cap would have been exceeded (from the audit log's vetoes).
fn cap_declines(entries: &[AuditEntry]) -> BTreeMap<(String, i32), usize> {
    let cap_exceeded = veil_federation::DeclineCode::PrivacyCapExceeded.to_string();
    let mut declines = BTreeMap::new();
    for entry in entries {
        if let AuditEvent::NodeVeto {
            node_id, reason, ..
        } = &entry.event
            && *reason == cap_exceeded
            && let Some(year) = privacy::year_of(entry.at_unix_ms.div_euclid(1000))
        {
            *declines.entry((node_id.clone(), year)).or_insert(0) += 1;
        }
    }
    declines
}

/// The audit log's entries, verified (hash chain, signatures, head), or why
/// it does not verify. Run off the async threads: it reads the whole log.
pub(super) fn audit_entries(verifier: &LogVerifier) -> Result<Vec<AuditEntry>, String> {
    verifier.verify()
}

/// Budget refusals and vetoes, from the audit log.
fn refusals(entries: &[AuditEntry]) -> Vec<Refusal> {
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
    let (parameters, version) = shared.final_model(job)?;
    let status = shared.status(job)?;
    shared.read(|engine| {
        let spec = engine.descriptor(job)?;
        let sums = engine.feature_statistics(job)?;
        let scaling = statistics::export_scaling(spec, sums.as_deref().map(Vec::as_slice))?;
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

    #[test]
    fn every_veto_is_in_the_round_table_including_rounds_without_a_record() {
        let row = |round: u32| RoundRow {
            round,
            contributors: vec!["shop-a".to_owned()],
            dropped: Vec::new(),
            declined: Vec::new(),
            secure_guarantee: None,
            abandoned: None,
        };
        let mut rows = vec![row(1), row(2)];
        let veto = |node: &str| vec![(node.to_owned(), "privacy-cap-exceeded".to_owned())];
        add_vetoes(
            &mut rows,
            BTreeMap::from([
                (0, veto("shop-b")),
                (2, veto("shop-c")),
                (3, veto("shop-d")),
            ]),
        );
        let rounds: Vec<u32> = rows.iter().map(|row| row.round).collect();
        assert_eq!(rounds, [0, 1, 2, 3]);
        assert_eq!(rows[0].declined, veto("shop-b"));
        assert_eq!(rows[0].abandoned.as_deref(), Some("feature statistics"));
        assert!(rows[1].declined.is_empty());
        assert_eq!(rows[2].declined, veto("shop-c"));
        assert_eq!(rows[2].contributors, ["shop-a"]);
        assert_eq!(rows[3].declined, veto("shop-d"));
        assert!(rows[3].contributors.is_empty());
    }
    use veil_console::pages::{self, Viewer};
    use veil_console::token::ConsoleRole;
    use veil_federation::RoundRecord;

    const ROUNDS: u32 = 1000;
    const PARTNERS: usize = 100;

    /// The benchmark size: a job of 1,000 rounds with 100 partners
    /// has every round on its page (its server time is measured by
    /// `crates/console/benches/pages.rs`).
    #[test]
    fn a_job_of_1000_rounds_and_100_partners_renders_every_round() {
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
            history_in_store: false,
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
        let viewer = Viewer {
            name: "olivia".to_owned(),
            role: ConsoleRole::Operator,
            csrf_token: "00".to_owned(),
        };
        let job = pages::job(&viewer, &job_page_of("job-1", &spec, &status));
        assert_eq!(
            job.matches("<tr class=\"round\" data-round=").count(),
            ROUNDS as usize
        );
        assert!(job.contains("partner-099"));
    }

    /// A node's cap declines count in the year they were recorded; other
    /// vetoes and refusals do not.
    #[test]
    fn cap_declines_are_counted_per_partner_and_year() {
        let entry = |seq: u64, at_unix_ms: i64, reason: &str| AuditEntry {
            seq,
            at_unix_ms,
            actor: "bank-a".to_owned(),
            event: AuditEvent::NodeVeto {
                job_id: "job-1".to_owned(),
                round: seq,
                node_id: "bank-a".to_owned(),
                reason: reason.to_owned(),
            },
            prev_hash: [0; 32],
            hash: [0; 32],
            signature: Vec::new(),
        };
        // 2024-06-01 and 2025-06-01, UTC.
        let (in_2024, in_2025) = (1_717_200_000_000, 1_748_736_000_000);
        let declines = cap_declines(&[
            entry(1, in_2024, "privacy-cap-exceeded"),
            entry(2, in_2025, "privacy-cap-exceeded"),
            entry(3, in_2025, "privacy-cap-exceeded"),
            entry(4, in_2025, "policy-noise-too-low"),
        ]);
        assert_eq!(
            declines,
            BTreeMap::from([
                (("bank-a".to_owned(), 2024), 1),
                (("bank-a".to_owned(), 2025), 2)
            ])
        );
    }
}
