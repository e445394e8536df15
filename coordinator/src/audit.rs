//! The coordinator's tamper-evident record: every job creation, round start
//! and commit (participants, mechanism, ε charged per partner), model release
//! and export, budget refusal, node veto and authentication failure is
//! appended to a hash-chained log signed with the coordinator's Ed25519 audit
//! key (`veil-audit`), synced before the call that caused it returns.
//!
//! Files in the state folder: `audit.log` (and its `.head`), the signing key
//! `audit-signing.key` (owner-only) and `audit-public.key`, the hex public
//! key auditors verify with.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use veil_audit::{
    AuditEvent, AuditLog, AuditLogConfig, EpsilonCharge, SyncPolicy, generate_signing_key,
    load_signing_key,
};
use veil_federation::{Engine, EngineEvent, EventKind, Phase};
use veil_job::JobSpec;
use veil_ledger::PrivacyUnit;

use crate::privacy::PrivacyOutcome;

/// File names in the state folder.
pub const AUDIT_LOG_FILE: &str = "audit.log";
/// The coordinator's audit signing key (secret).
pub const AUDIT_KEY_FILE: &str = "audit-signing.key";
/// The public key, hex, for auditors.
pub const AUDIT_PUBLIC_KEY_FILE: &str = "audit-public.key";

/// The actor of entries the coordinator makes on its own account.
const COORDINATOR: &str = "coordinator";

/// The open audit log.
pub(crate) struct AuditTrail {
    log: AuditLog,
}

impl AuditTrail {
    /// Opens the log in `state_dir`, creating the signing key on first start.
    pub(crate) fn open(state_dir: &Path) -> anyhow::Result<Self> {
        let key_path = state_dir.join(AUDIT_KEY_FILE);
        let signer = if key_path.exists() {
            load_signing_key(&key_path)
        } else {
            generate_signing_key(&key_path)
        }
        .with_context(|| format!("audit signing key {}", key_path.display()))?;
        let public_path = state_dir.join(AUDIT_PUBLIC_KEY_FILE);
        std::fs::write(&public_path, format!("{}\n", signer.public_key()))
            .with_context(|| format!("writing {}", public_path.display()))?;
        let log_path = state_dir.join(AUDIT_LOG_FILE);
        let log = AuditLog::open(
            AuditLogConfig {
                log_path: log_path.clone(),
                sync: SyncPolicy::EveryAppend,
            },
            signer,
        )
        .with_context(|| format!("audit log {}", log_path.display()))?;
        Ok(Self { log })
    }

    /// Appends one entry. A failure to record is logged loudly: the action
    /// already happened, and refusing service would not undo it.
    pub(crate) fn record(&mut self, actor: &str, event: AuditEvent) {
        let kind = event.kind();
        if let Err(error) = self.log.append(now_unix_ms(), actor, event) {
            tracing::error!(kind, %error, "audit entry NOT recorded");
        }
    }

    /// Records what an engine event (and the privacy guard's reaction to it)
    /// means for the audit trail, inside the engine lock.
    pub(crate) fn observe(
        &mut self,
        engine: &Engine<JobSpec>,
        event: &EngineEvent,
        privacy: &PrivacyOutcome,
    ) {
        let job_id = event.job.clone();
        for refusal in &privacy.refusals {
            self.record(
                COORDINATOR,
                AuditEvent::BudgetRefused {
                    job_id: job_id.clone(),
                    round: refusal.round,
                    partner: refusal.partner_id.clone(),
                    unit: unit_name(refusal.unit).to_owned(),
                    requested_epsilon: finite(refusal.planned),
                    remaining_epsilon: refusal.limit.map_or(0.0, |limit| {
                        finite((limit.epsilon - refusal.spent).max(0.0))
                    }),
                },
            );
        }
        match &event.kind {
            EventKind::PhaseOpened {
                round,
                phase: Phase::Train,
                invited,
                attempt,
            } if privacy.refusals.is_empty() => {
                let mechanism = engine
                    .descriptor(&job_id)
                    .map(mechanism_summary)
                    .unwrap_or_default();
                let mut mechanism = mechanism;
                mechanism.insert("attempt".to_owned(), attempt.to_string());
                self.record(
                    COORDINATOR,
                    AuditEvent::RoundStarted {
                        job_id,
                        round: u64::from(*round),
                        participants: invited.clone(),
                        mechanism,
                    },
                );
            }
            EventKind::PhaseCompleted {
                round,
                phase: Phase::Train,
                ..
            } => {
                let mut participants: Vec<String> = privacy
                    .charged
                    .iter()
                    .map(|charge| charge.partner_id.clone())
                    .collect();
                participants.dedup();
                let epsilon_charged = privacy
                    .charged
                    .iter()
                    .map(|charge| EpsilonCharge {
                        partner: charge.partner_id.clone(),
                        unit: unit_name(charge.unit).to_owned(),
                        epsilon: finite(
                            charge
                                .epsilon_pld
                                .map_or(charge.epsilon_rdp, |pld| pld.min(charge.epsilon_rdp)),
                        ),
                    })
                    .collect();
                let model_sha256 = current_model_digest(engine, &job_id);
                self.record(
                    COORDINATOR,
                    AuditEvent::RoundCommitted {
                        job_id,
                        round: u64::from(*round),
                        participants,
                        epsilon_charged,
                        model_sha256,
                    },
                );
            }
            EventKind::NodeDeclined {
                node,
                round,
                reason,
                ..
            } => self.record(
                node,
                AuditEvent::NodeVeto {
                    job_id,
                    round: u64::from(*round),
                    node_id: node.clone(),
                    reason: reason.clone(),
                },
            ),
            EventKind::Succeeded => {
                let version = engine
                    .status(&job_id)
                    .map_or(0, |status| u64::from(status.completed_rounds));
                let model_sha256 = current_model_digest(engine, &job_id);
                self.record(
                    COORDINATOR,
                    AuditEvent::ModelReleased {
                        job_id,
                        version,
                        model_sha256,
                    },
                );
            }
            _ => {}
        }
    }
}

/// The job's noise parameters, as the round-start entry records them.
fn mechanism_summary(spec: &JobSpec) -> BTreeMap<String, String> {
    let privacy = &spec.privacy;
    let mut summary = BTreeMap::new();
    summary.insert("aggregation".to_owned(), spec.aggregation.name().to_owned());
    summary.insert("delta".to_owned(), privacy.delta.to_string());
    match &privacy.customers {
        Some(dp) => {
            summary.insert("customers".to_owned(), "dp-sgd".to_owned());
            summary.insert(
                "customer_noise_multiplier".to_owned(),
                dp.noise_multiplier.to_string(),
            );
            summary.insert("customer_clip_norm".to_owned(), dp.clip_norm.to_string());
            summary.insert(
                "customer_sampling_rate".to_owned(),
                dp.sampling_rate.to_string(),
            );
        }
        None => {
            summary.insert("customers".to_owned(), "off".to_owned());
        }
    }
    summary.insert("partners".to_owned(), format!("{:?}", privacy.partners));
    summary
}

/// SHA-256 of the current global model.
fn current_model_digest(engine: &Engine<JobSpec>, job: &str) -> [u8; 32] {
    engine
        .snapshot(job)
        .map_or([0; 32], |snapshot| model_digest(&snapshot.global))
}

/// SHA-256 of a model's parameters as little-endian f32 bytes.
pub(crate) fn model_digest(parameters: &[f32]) -> [u8; 32] {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for value in parameters {
        context.update(&value.to_le_bytes());
    }
    let mut digest = [0; 32];
    digest.copy_from_slice(context.finish().as_ref());
    digest
}

fn unit_name(unit: PrivacyUnit) -> &'static str {
    match unit {
        PrivacyUnit::Customer => "customer",
        PrivacyUnit::Partner => "partner",
    }
}

/// Audit entries carry finite, non-negative ε; an unbounded one is recorded
/// as the largest finite value rather than refused.
fn finite(epsilon: f64) -> f64 {
    if epsilon.is_nan() {
        f64::MAX
    } else {
        epsilon.clamp(0.0, f64::MAX)
    }
}

fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}
