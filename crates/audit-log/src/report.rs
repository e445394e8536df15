//! The auditor's export: a summary of a verified log as JSON and as text.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::entry::AuditEntry;
use crate::event::{AuditEvent, EVENT_KINDS};
use crate::hex;

/// What the log says, in aggregate. Built from verified entries only.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AuditReport {
    /// Number of entries.
    pub entries: u64,
    /// The last entry's seq and hash, which the next verification should reach.
    pub chain_head: Option<ChainHead>,
    /// Time of the first entry (ms since the Unix epoch).
    pub first_at_unix_ms: Option<i64>,
    /// Time of the last entry.
    pub last_at_unix_ms: Option<i64>,
    /// Entries per event kind (every kind listed, zeros included).
    pub events_by_kind: BTreeMap<&'static str, u64>,
    /// Per job, in id order.
    pub jobs: BTreeMap<String, JobSummary>,
    /// Authentication and authorisation failures per RPC.
    pub auth_failures_by_rpc: BTreeMap<String, u64>,
}

/// The end of the chain.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChainHead {
    /// Seq of the last entry.
    pub seq: u64,
    /// Its hash, in hex.
    pub hash: String,
}

/// What the log says about one job.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct JobSummary {
    /// Who created it (the `JobCreated` entry's actor).
    pub created_by: Option<String>,
    /// `RoundStarted` entries.
    pub rounds_started: u64,
    /// `RoundCommitted` entries.
    pub rounds_committed: u64,
    /// `ModelReleased` entries.
    pub models_released: u64,
    /// `ModelExported` entries.
    pub models_exported: u64,
    /// `BudgetRefused` entries.
    pub budget_refusals: u64,
    /// `NodeVeto` entries.
    pub node_vetoes: u64,
    /// `EvaluationReleased` entries.
    pub evaluations_released: u64,
    /// Per partner, then per privacy unit: the sum of the per-release ε
    /// values recorded in round commits and evaluation releases. This is what the log recorded; the tight
    /// composed ε is the accountant's to compute, not a plain sum.
    pub epsilon_recorded_sum: BTreeMap<String, BTreeMap<String, f64>>,
    /// `PrivacyAuditRecorded` entries: the empirical lower bound beside the
    /// accountant's upper bound, in log order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub privacy_audits: Vec<PrivacyAuditSummary>,
}

/// One auditor's privacy test as the report shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PrivacyAuditSummary {
    /// The partner whose node held the canaries.
    pub partner: String,
    /// The attack scored.
    pub attack: String,
    /// One-run lower bound on ε.
    pub epsilon_lower: f64,
    /// Gaussian f-DP lower bound on ε.
    pub epsilon_lower_gaussian: f64,
    /// The accountant's ε; `None` without DP-SGD.
    pub epsilon_upper: Option<f64>,
    /// Canaries, guesses made and guesses correct.
    pub canaries: u64,
    /// Guesses made.
    pub guesses: u64,
    /// Correct guesses.
    pub correct: u64,
}

/// Summarises entries (pass the `entries` of a successful verification).
pub fn export_report(entries: &[AuditEntry]) -> AuditReport {
    let mut report = AuditReport {
        entries: entries.len() as u64,
        chain_head: entries.last().map(|entry| ChainHead {
            seq: entry.seq,
            hash: hex::encode(&entry.hash),
        }),
        first_at_unix_ms: entries.first().map(|entry| entry.at_unix_ms),
        last_at_unix_ms: entries.last().map(|entry| entry.at_unix_ms),
        events_by_kind: EVENT_KINDS.iter().map(|kind| (*kind, 0)).collect(),
        jobs: BTreeMap::new(),
        auth_failures_by_rpc: BTreeMap::new(),
    };
    for entry in entries {
        *report.events_by_kind.entry(entry.event.kind()).or_default() += 1;
        if let AuditEvent::AuthFailure { rpc, .. } = &entry.event {
            *report.auth_failures_by_rpc.entry(rpc.clone()).or_default() += 1;
        }
        let Some(job_id) = entry.event.job_id() else {
            continue;
        };
        let job = report.jobs.entry(job_id.to_owned()).or_default();
        match &entry.event {
            AuditEvent::JobCreated { .. } => job.created_by = Some(entry.actor.clone()),
            AuditEvent::RoundStarted { .. } => job.rounds_started += 1,
            AuditEvent::RoundCommitted {
                epsilon_charged, ..
            }
            | AuditEvent::EvaluationReleased {
                epsilon_charged, ..
            } => {
                if matches!(entry.event, AuditEvent::RoundCommitted { .. }) {
                    job.rounds_committed += 1;
                } else {
                    job.evaluations_released += 1;
                }
                for charge in epsilon_charged {
                    *job.epsilon_recorded_sum
                        .entry(charge.partner.clone())
                        .or_default()
                        .entry(charge.unit.clone())
                        .or_default() += charge.epsilon;
                }
            }
            AuditEvent::ModelReleased { .. } => job.models_released += 1,
            AuditEvent::ModelExported { .. } => job.models_exported += 1,
            AuditEvent::BudgetRefused { .. } => job.budget_refusals += 1,
            AuditEvent::NodeVeto { .. } => job.node_vetoes += 1,
            AuditEvent::AuthFailure { .. }
            | AuditEvent::CertificateIssued { .. }
            | AuditEvent::CertificateRevoked { .. }
            | AuditEvent::Note { .. } => {}
            AuditEvent::PrivacyAuditRecorded {
                partner,
                attack,
                canaries,
                guesses,
                correct,
                epsilon_lower,
                epsilon_lower_gaussian,
                epsilon_upper,
                ..
            } => job.privacy_audits.push(PrivacyAuditSummary {
                partner: partner.clone(),
                attack: attack.clone(),
                epsilon_lower: *epsilon_lower,
                epsilon_lower_gaussian: *epsilon_lower_gaussian,
                epsilon_upper: *epsilon_upper,
                canaries: *canaries,
                guesses: *guesses,
                correct: *correct,
            }),
        }
    }
    report
}

impl AuditReport {
    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        // Maps with string keys and finite floats always serialise.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The report as text for people.
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(text, "Audit log: {} entries", self.entries);
        match &self.chain_head {
            Some(head) => {
                let _ = writeln!(text, "Chain head: seq {} hash {}", head.seq, head.hash);
            }
            None => {
                let _ = writeln!(text, "Chain head: (empty log)");
            }
        }
        if let (Some(first), Some(last)) = (self.first_at_unix_ms, self.last_at_unix_ms) {
            let _ = writeln!(text, "Time span: {first} .. {last} ms since the Unix epoch");
        }
        let _ = writeln!(text, "Events:");
        for (kind, count) in &self.events_by_kind {
            let _ = writeln!(text, "  {kind:<20} {count}");
        }
        let _ = writeln!(text, "Jobs: {}", self.jobs.len());
        for (job_id, job) in &self.jobs {
            let _ = writeln!(
                text,
                "  {job_id}: created by {}, rounds started {} committed {}, evaluations released {}, models released {} exported {}, budget refusals {}, node vetoes {}",
                job.created_by.as_deref().unwrap_or("(not in log)"),
                job.rounds_started,
                job.rounds_committed,
                job.evaluations_released,
                job.models_released,
                job.models_exported,
                job.budget_refusals,
                job.node_vetoes,
            );
            for audit in &job.privacy_audits {
                // A lower bound above the upper bound means a bug: said in the report itself.
                let verdict = match audit.epsilon_upper {
                    Some(upper)
                        if audit.epsilon_lower.max(audit.epsilon_lower_gaussian) > upper =>
                    {
                        " — LOWER BOUND EXCEEDS THE ACCOUNTANT'S ε: investigate"
                    }
                    _ => "",
                };
                let upper = audit.epsilon_upper.map_or_else(
                    || "none (no DP-SGD)".to_owned(),
                    |upper| format!("{upper:.3}"),
                );
                let _ = writeln!(
                    text,
                    "    privacy audit of {} ({}): ε_lower {:.3} (Gaussian {:.3}), ε_upper {upper}, {} of {} guesses correct over {} canaries{verdict}",
                    audit.partner,
                    audit.attack,
                    audit.epsilon_lower,
                    audit.epsilon_lower_gaussian,
                    audit.correct,
                    audit.guesses,
                    audit.canaries,
                );
            }
            for (partner, units) in &job.epsilon_recorded_sum {
                for (unit, epsilon) in units {
                    let _ = writeln!(
                        text,
                        "    {partner} / {unit}: recorded per-release epsilon sums to {epsilon}"
                    );
                }
            }
        }
        let total_auth_failures: u64 = self.auth_failures_by_rpc.values().sum();
        let _ = writeln!(text, "Authentication failures: {total_auth_failures}");
        for (rpc, count) in &self.auth_failures_by_rpc {
            let _ = writeln!(text, "  {rpc}: {count}");
        }
        text
    }
}
