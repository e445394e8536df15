//! What the audit log records: one `AuditEvent` per entry.
//!
//! Events carry identifiers, hashes and privacy parameters only. Node ids are
//! the federation's pseudonymous ids; no raw customer data, model parameter or
//! secret ever belongs in an event.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::hex;

/// One privacy charge as recorded when a round commits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpsilonCharge {
    /// The partner charged: the pseudonymous node id of the partner's node,
    /// so a node can find its own charges (and receive them in a receipt).
    pub partner: String,
    /// The privacy unit the budget protects, for example `customer`.
    pub unit: String,
    /// ε charged for this round. Must be finite and non-negative.
    pub epsilon: f64,
}

/// Something that happened in the federation and must stay on record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuditEvent {
    /// An operator created a job; the entry's actor says who.
    JobCreated {
        /// The job's id.
        job_id: String,
        /// SHA-256 of the job specification as submitted.
        #[serde(with = "hex::digest")]
        spec_sha256: [u8; 32],
    },
    /// A round was opened for the listed participants.
    RoundStarted {
        /// The job's id.
        job_id: String,
        /// The round number within the job.
        round: u64,
        /// Pseudonymous ids of the invited nodes.
        participants: Vec<String>,
        /// Mechanism parameters (noise multiplier, clip norm, sampling rate…),
        /// free-form so new mechanisms need no format change. A `BTreeMap` so
        /// the order, and therefore the hash, never depends on insertion order.
        mechanism: BTreeMap<String, String>,
    },
    /// A round's result was accepted and its privacy cost charged.
    RoundCommitted {
        /// The job's id.
        job_id: String,
        /// The round number within the job.
        round: u64,
        /// Pseudonymous ids of the nodes whose contributions were aggregated.
        participants: Vec<String>,
        /// ε charged per partner and privacy unit for this round.
        epsilon_charged: Vec<EpsilonCharge>,
        /// SHA-256 of the global model produced by the round.
        #[serde(with = "hex::digest")]
        model_sha256: [u8; 32],
    },
    /// The final model's noised evaluation statistics were released and
    /// their privacy cost charged, under its own ledger key (separate from
    /// the last round's training release).
    EvaluationReleased {
        /// The job's id.
        job_id: String,
        /// The round whose model was evaluated (the job's last).
        round: u64,
        /// Pseudonymous ids of the nodes whose evaluations are in the sum.
        participants: Vec<String>,
        /// ε charged per partner and privacy unit for the evaluation.
        epsilon_charged: Vec<EpsilonCharge>,
    },
    /// A model version was released to the federation's partners.
    ModelReleased {
        /// The job's id.
        job_id: String,
        /// The released model version.
        version: u64,
        /// SHA-256 of the released model file.
        #[serde(with = "hex::digest")]
        model_sha256: [u8; 32],
    },
    /// A model left the federation (fetched or exported by an operator).
    ModelExported {
        /// The job's id.
        job_id: String,
        /// The exported model version.
        version: u64,
        /// SHA-256 of the exported model file.
        #[serde(with = "hex::digest")]
        model_sha256: [u8; 32],
        /// Where it went, for example the RPC or the file name given.
        destination: String,
    },
    /// A charge was refused because it would exceed a partner's budget.
    BudgetRefused {
        /// The job's id.
        job_id: String,
        /// The round that asked for the charge.
        round: u64,
        /// The partner whose budget would have been exceeded.
        partner: String,
        /// The privacy unit of that budget.
        unit: String,
        /// ε the round asked for.
        requested_epsilon: f64,
        /// ε left in the budget when the request was refused.
        remaining_epsilon: f64,
    },
    /// A node refused to take part (its local policy vetoed the round).
    NodeVeto {
        /// The job's id.
        job_id: String,
        /// The round vetoed.
        round: u64,
        /// The vetoing node's pseudonymous id.
        node_id: String,
        /// The reason the node gave.
        reason: String,
    },
    /// A caller failed authentication or authorisation.
    AuthFailure {
        /// The peer as far as it is known: certificate name, or address.
        peer: String,
        /// The RPC that was called.
        rpc: String,
        /// Why it was refused.
        reason: String,
    },
    /// A certificate was issued.
    CertificateIssued {
        /// `node`, `operator` or `auditor`.
        role: String,
        /// The certificate's subject name.
        name: String,
        /// The certificate's serial number, as text.
        serial: String,
    },
    /// A certificate was revoked.
    CertificateRevoked {
        /// The revoked certificate's serial number, as text.
        serial: String,
        /// Why it was revoked.
        reason: String,
    },
    /// Anything else worth recording, in words.
    Note {
        /// The note.
        text: String,
    },
    /// An auditor's empirical privacy test of a job (docs/privacy-audit.md):
    /// a lower bound on customer-level ε beside the accountant's upper bound.
    PrivacyAuditRecorded {
        /// The audited job.
        job_id: String,
        /// The partner whose node inserted the canaries.
        partner: String,
        /// SHA-256 of the auditor's seed, as the job named it.
        #[serde(with = "hex::digest")]
        commitment: [u8; 32],
        /// The attack whose guesses were scored (e.g. `black-box-loss`).
        attack: String,
        /// Canaries randomised.
        canaries: u64,
        /// Guesses made.
        guesses: u64,
        /// Correct guesses.
        correct: u64,
        /// δ of the bound (the job's).
        delta: f64,
        /// Confidence of the bound.
        confidence: f64,
        /// One-run lower bound on ε (Steinke, Nasr and Jagielski).
        epsilon_lower: f64,
        /// The Gaussian f-DP refinement's lower bound.
        epsilon_lower_gaussian: f64,
        /// The accountant's customer-level ε for the job; absent without DP-SGD.
        epsilon_upper: Option<f64>,
    },
}

/// Why an event cannot be recorded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EventError {
    /// An ε value is NaN, infinite or negative; JSON cannot even carry NaN, and
    /// a negative charge would let a log "refund" budget.
    #[error("{field} must be finite and non-negative, found {value}")]
    InvalidEpsilon {
        /// Which field.
        field: &'static str,
        /// The value found.
        value: f64,
    },
}

/// Every event kind, in the order of [`AuditEvent`]'s variants, so reports
/// can list kinds that did not occur.
pub const EVENT_KINDS: [&str; 13] = [
    "job_created",
    "round_started",
    "round_committed",
    "evaluation_released",
    "model_released",
    "model_exported",
    "budget_refused",
    "node_veto",
    "auth_failure",
    "certificate_issued",
    "certificate_revoked",
    "note",
    "privacy_audit_recorded",
];

impl AuditEvent {
    /// The event's kind as it appears in the JSON `kind` field and in reports.
    pub fn kind(&self) -> &'static str {
        match self {
            AuditEvent::JobCreated { .. } => "job_created",
            AuditEvent::RoundStarted { .. } => "round_started",
            AuditEvent::RoundCommitted { .. } => "round_committed",
            AuditEvent::ModelReleased { .. } => "model_released",
            AuditEvent::ModelExported { .. } => "model_exported",
            AuditEvent::BudgetRefused { .. } => "budget_refused",
            AuditEvent::NodeVeto { .. } => "node_veto",
            AuditEvent::AuthFailure { .. } => "auth_failure",
            AuditEvent::CertificateIssued { .. } => "certificate_issued",
            AuditEvent::CertificateRevoked { .. } => "certificate_revoked",
            AuditEvent::Note { .. } => "note",
            AuditEvent::PrivacyAuditRecorded { .. } => "privacy_audit_recorded",
            AuditEvent::EvaluationReleased { .. } => "evaluation_released",
        }
    }

    /// The job the event belongs to, if any.
    pub fn job_id(&self) -> Option<&str> {
        match self {
            AuditEvent::JobCreated { job_id, .. }
            | AuditEvent::RoundStarted { job_id, .. }
            | AuditEvent::RoundCommitted { job_id, .. }
            | AuditEvent::EvaluationReleased { job_id, .. }
            | AuditEvent::ModelReleased { job_id, .. }
            | AuditEvent::ModelExported { job_id, .. }
            | AuditEvent::BudgetRefused { job_id, .. }
            | AuditEvent::NodeVeto { job_id, .. }
            | AuditEvent::PrivacyAuditRecorded { job_id, .. } => Some(job_id),
            AuditEvent::AuthFailure { .. }
            | AuditEvent::CertificateIssued { .. }
            | AuditEvent::CertificateRevoked { .. }
            | AuditEvent::Note { .. } => None,
        }
    }

    /// Checks that the event can be stored and read back unchanged.
    pub fn validate(&self) -> Result<(), EventError> {
        let check = |field: &'static str, value: f64| {
            if value.is_finite() && value >= 0.0 {
                Ok(())
            } else {
                Err(EventError::InvalidEpsilon { field, value })
            }
        };
        match self {
            AuditEvent::RoundCommitted {
                epsilon_charged, ..
            }
            | AuditEvent::EvaluationReleased {
                epsilon_charged, ..
            } => epsilon_charged
                .iter()
                .try_for_each(|charge| check("epsilon_charged.epsilon", charge.epsilon)),
            AuditEvent::BudgetRefused {
                requested_epsilon,
                remaining_epsilon,
                ..
            } => {
                check("requested_epsilon", *requested_epsilon)?;
                check("remaining_epsilon", *remaining_epsilon)
            }
            AuditEvent::PrivacyAuditRecorded {
                delta,
                confidence,
                epsilon_lower,
                epsilon_lower_gaussian,
                epsilon_upper,
                ..
            } => {
                check("delta", *delta)?;
                check("confidence", *confidence)?;
                check("epsilon_lower", *epsilon_lower)?;
                check("epsilon_lower_gaussian", *epsilon_lower_gaussian)?;
                epsilon_upper.map_or(Ok(()), |upper| check("epsilon_upper", upper))
            }
            _ => Ok(()),
        }
    }
}
