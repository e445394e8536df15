//! The coordinator's tamper-evident record: every job creation, round start
//! and commit (participants, mechanism, ε charged per partner), model release
//! and export, budget refusal, node veto and authentication failure is
//! appended to a hash-chained log signed with the coordinator's Ed25519 audit
//! key (`veil-audit-log`), synced before the call that caused it returns.
//!
//! Files in the state folder: `audit.log` (and its `.head`), the signing key
//! `audit-signing.key` (owner-only) and `audit-public.key`, the hex public
//! key auditors verify with.
//!
//! Each node of a committed round gets a signed receipt of the commit entry
//! (`FetchReceipts`). Receipts are re-derived from the log (Ed25519 signing
//! is deterministic, so a receipt re-issued after a restart is byte for byte
//! the first one), after the whole log has been verified in the background
//! at start: the coordinator never vouches for entries it cannot verify.
//!
//! The CA tooling runs offline and never writes the log (the coordinator is
//! its only writer); the coordinator records every issuance in the CA's
//! journal and every revocation in its list as soon as it sees them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::Context;
use veil_audit_log::{
    AuditEntry, AuditEvent, AuditLog, AuditLogConfig, AuditPublicKey, EpsilonCharge, Head, Receipt,
    SyncPolicy, generate_signing_key, head_path_for, load_signing_key, verify_log_bytes,
};
use veil_federation::{Engine, EngineEvent, EventKind, Phase};
use veil_job::JobSpec;
use veil_metrics::Histogram;
use veil_pki::{IssuanceJournal, RevocationList};

use crate::privacy::PrivacyOutcome;

/// File names in the state folder.
pub const AUDIT_LOG_FILE: &str = "audit.log";
/// The coordinator's audit signing key (secret).
pub const AUDIT_KEY_FILE: &str = "audit-signing.key";
/// The public key, hex, for auditors.
pub const AUDIT_PUBLIC_KEY_FILE: &str = "audit-public.key";

/// The actor of entries the coordinator makes on its own account.
const COORDINATOR: &str = "coordinator";

/// The actor of certificate entries: the offline CA tooling.
const CERTIFICATE_AUTHORITY: &str = "ca";

/// The open audit log.
pub(crate) struct AuditTrail {
    log: AuditLog,
    index: IndexState,
    /// Seconds per synced append, for the `audit_write` metric.
    write_latency: Histogram,
}

/// What the log says that later requests need, derived from its entries.
#[derive(Default)]
struct LogIndex {
    /// Receipts per node that the node has not yet acknowledged, in log order. A node's
    /// fetch of the receipts after seq S says it holds every one up to S, so those leave
    /// memory: the coordinator holds what nodes have yet to fetch, not every receipt of
    /// every round it ever committed.
    receipts: HashMap<String, Vec<Receipt>>,
    /// Per node, the seq up to which its receipts left memory. A fetch from before it (a
    /// node that lost its receipts) is answered from the log file, verified again.
    acknowledged: HashMap<String, u64>,
    /// Serials whose issuance is recorded.
    issued: HashSet<String>,
    /// Serials whose revocation is recorded.
    revoked: HashSet<String>,
    /// Each job's vetoes (a node declining a phase), by round: the console's round table
    /// shows them, and the log is where they are recorded for good.
    vetoes: HashMap<String, BTreeMap<u64, Vec<(String, String)>>>,
}

enum IndexState {
    /// The log is being verified; entries appended meanwhile wait here.
    Rebuilding {
        appended: Vec<AuditEntry>,
    },
    Ready(LogIndex),
    /// The log did not verify at start: nothing is vouched for from it.
    Unusable(String),
}

/// Receipts a fetch asks for, as the index holds them.
#[derive(Debug, PartialEq)]
pub(crate) enum HeldReceipts {
    /// All of them, from memory.
    Here(Vec<Receipt>),
    /// Some left memory when the node acknowledged them: issue them again from the log.
    InLogOnly,
}

/// Why receipts cannot be served.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReceiptsUnavailable {
    /// The start-up verification of the log has not finished.
    #[error("the coordinator is still verifying its audit log; retry shortly")]
    Verifying,
    /// The log failed verification at start.
    #[error("the coordinator's audit log does not verify, so it issues no receipts: {0}")]
    LogUnusable(String),
}

/// Reads and verifies the whole log away from the lock (see [`AuditTrail::verifier`]).
pub(crate) struct LogVerifier {
    log_path: PathBuf,
    public_key: AuditPublicKey,
}

impl LogVerifier {
    /// The verified entries, or why the log does not verify.
    pub(crate) fn verify(&self) -> Result<Vec<AuditEntry>, String> {
        // The head first: it never runs ahead of the file, so the bytes read
        // after it hold at least the entry it names.
        let head = Head::read(&head_path_for(&self.log_path)).map_err(|error| error.to_string())?;
        let mut contents = std::fs::read(&self.log_path)
            .map_err(|error| format!("{}: {error}", self.log_path.display()))?;
        // An append may be under way: its partial line is not part of the log yet.
        let complete = contents
            .iter()
            .rposition(|&byte| byte == b'\n')
            .map_or(0, |last| last + 1);
        contents.truncate(complete);
        verify_log_bytes(&contents, &self.public_key, head.as_ref())
            .map(|report| report.entries)
            .map_err(|evidence| evidence.to_string())
    }
}

impl LogIndex {
    fn add(&mut self, log: &AuditLog, entry: &AuditEntry) {
        match &entry.event {
            AuditEvent::RoundCommitted { .. } => match log.issue_receipts(entry) {
                Ok(receipts) => {
                    for receipt in receipts {
                        self.receipts
                            .entry(receipt.node_id.clone())
                            .or_default()
                            .push(receipt);
                    }
                }
                Err(error) => tracing::error!(seq = entry.seq, %error, "no receipts issued"),
            },
            AuditEvent::NodeVeto {
                job_id,
                round,
                node_id,
                reason,
            } => {
                let round = self
                    .vetoes
                    .entry(job_id.clone())
                    .or_default()
                    .entry(*round)
                    .or_default();
                let veto = (node_id.clone(), reason.clone());
                if !round.contains(&veto) {
                    round.push(veto);
                }
            }
            AuditEvent::CertificateIssued { serial, .. } => {
                self.issued.insert(serial.clone());
            }
            AuditEvent::CertificateRevoked { serial, .. } => {
                self.revoked.insert(serial.clone());
            }
            _ => {}
        }
    }
}

impl AuditTrail {
    /// Opens the log in `state_dir`, creating the signing key on first start.
    pub(crate) fn open(state_dir: &Path, write_latency: Histogram) -> anyhow::Result<Self> {
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
        Ok(Self {
            log,
            index: IndexState::Rebuilding {
                appended: Vec::new(),
            },
            write_latency,
        })
    }

    /// What verifies the log for [`Self::install_verified`]; run it off the
    /// lock, since a long log takes seconds.
    pub(crate) fn verifier(&self) -> LogVerifier {
        LogVerifier {
            log_path: self.log.log_path().to_owned(),
            public_key: self.log.public_key(),
        }
    }

    /// Builds the index from the verified entries plus those appended since.
    pub(crate) fn install_verified(&mut self, verified: Result<Vec<AuditEntry>, String>) {
        let IndexState::Rebuilding { appended } = &mut self.index else {
            return;
        };
        let appended = std::mem::take(appended);
        self.index = match verified {
            Ok(entries) => {
                let mut index = LogIndex::default();
                let last_verified = entries.last().map(|entry| entry.seq);
                for entry in entries.iter().chain(
                    appended
                        .iter()
                        .filter(|entry| last_verified.is_none_or(|last| entry.seq > last)),
                ) {
                    index.add(&self.log, entry);
                }
                tracing::info!(entries = entries.len(), "audit log verified");
                IndexState::Ready(index)
            }
            Err(reason) => {
                tracing::error!(%reason, "the audit log does NOT verify; no receipts will be issued");
                IndexState::Unusable(reason)
            }
        };
    }

    /// The coordinator's audit public key.
    pub(crate) fn public_key(&self) -> AuditPublicKey {
        self.log.public_key()
    }

    /// Receipts for `node_id`'s round commits after `after_seq`, from memory; or
    /// [`HeldReceipts::InLogOnly`] when some of them left memory (the node acknowledged them
    /// before), to be issued again from the verified log ([`Self::reissue_receipts`]).
    /// Receipts up to `after_seq` leave memory: the node says it holds them.
    pub(crate) fn receipts_for(
        &mut self,
        node_id: &str,
        after_seq: Option<u64>,
    ) -> Result<HeldReceipts, ReceiptsUnavailable> {
        let index = match &mut self.index {
            IndexState::Rebuilding { .. } => return Err(ReceiptsUnavailable::Verifying),
            IndexState::Unusable(reason) => {
                return Err(ReceiptsUnavailable::LogUnusable(reason.clone()));
            }
            IndexState::Ready(index) => index,
        };
        if let Some(after) = after_seq {
            if let Some(kept) = index.receipts.get_mut(node_id) {
                kept.retain(|receipt| receipt.entry_seq > after);
                if kept.is_empty() {
                    index.receipts.remove(node_id);
                }
            }
            let acknowledged = index
                .acknowledged
                .entry(node_id.to_owned())
                .or_insert(after);
            *acknowledged = (*acknowledged).max(after);
        }
        if let Some(&acknowledged) = index.acknowledged.get(node_id)
            && after_seq.is_none_or(|after| after < acknowledged)
        {
            return Ok(HeldReceipts::InLogOnly);
        }
        Ok(HeldReceipts::Here(
            index.receipts.get(node_id).cloned().unwrap_or_default(),
        ))
    }

    /// Issues again, from `entries` (the log, just verified), the receipts of `node_id`'s
    /// round commits after `after_seq`: byte for byte those issued the first time, since
    /// Ed25519 signing is deterministic.
    pub(crate) fn reissue_receipts(
        &self,
        entries: &[AuditEntry],
        node_id: &str,
        after_seq: Option<u64>,
    ) -> Vec<Receipt> {
        entries
            .iter()
            .filter(|entry| after_seq.is_none_or(|after| entry.seq > after))
            .filter(|entry| {
                matches!(&entry.event, AuditEvent::RoundCommitted { participants, .. }
                    if participants.iter().any(|participant| participant == node_id))
            })
            .filter_map(|entry| match self.log.issue_receipts(entry) {
                Ok(receipts) => Some(receipts),
                Err(error) => {
                    tracing::error!(seq = entry.seq, %error, "no receipts issued again");
                    None
                }
            })
            .flatten()
            .filter(|receipt| receipt.node_id == node_id)
            .collect()
    }

    /// Receipts held in memory, over all nodes: what a long run of jobs would grow if
    /// acknowledged receipts stayed.
    #[cfg(test)]
    fn receipts_in_memory(&self) -> usize {
        match &self.index {
            IndexState::Ready(index) => index.receipts.values().map(Vec::len).sum(),
            _ => 0,
        }
    }

    /// The nodes that declined a phase of `job_id`, with their reason codes, by round (empty
    /// while the log is being verified, and when it does not verify).
    pub(crate) fn vetoes_for(&self, job_id: &str) -> BTreeMap<u64, Vec<(String, String)>> {
        match &self.index {
            IndexState::Ready(index) => index.vetoes.get(job_id).cloned().unwrap_or_default(),
            IndexState::Rebuilding { .. } | IndexState::Unusable(_) => BTreeMap::new(),
        }
    }

    /// Records the issuances and revocations the CA tooling made that the
    /// log does not hold yet. Waits for the start-up verification, which
    /// says what the log holds.
    pub(crate) fn record_certificate_changes(
        &mut self,
        journal: &IssuanceJournal,
        revocations: &RevocationList,
    ) -> anyhow::Result<()> {
        let IndexState::Ready(index) = &self.index else {
            return Ok(());
        };
        let mut events = Vec::new();
        for issuance in journal.entries()? {
            let serial = issuance.serial.to_string();
            if !index.issued.contains(&serial) {
                events.push(AuditEvent::CertificateIssued {
                    role: issuance.role.to_string(),
                    name: issuance.name,
                    serial,
                });
            }
        }
        let mut revoked = revocations.entries()?;
        revoked.sort_by_key(|revocation| revocation.revoked_at_unix_seconds);
        for revocation in revoked {
            let serial = revocation.serial.to_string();
            if !index.revoked.contains(&serial) {
                events.push(AuditEvent::CertificateRevoked {
                    serial,
                    reason: revocation.reason.to_string(),
                });
            }
        }
        for event in events {
            self.record(CERTIFICATE_AUTHORITY, event);
        }
        Ok(())
    }

    /// Appends one entry. A failure to record is logged loudly: the action
    /// already happened, and refusing service would not undo it.
    pub(crate) fn record(&mut self, actor: &str, event: AuditEvent) -> bool {
        let kind = event.kind();
        let started = std::time::Instant::now();
        let appended = self.log.append(now_unix_ms(), actor, event);
        self.write_latency.observe(started.elapsed().as_secs_f64());
        match appended {
            Ok(entry) => {
                match &mut self.index {
                    IndexState::Rebuilding { appended } => appended.push(entry),
                    IndexState::Ready(index) => index.add(&self.log, &entry),
                    IndexState::Unusable(_) => {}
                }
                true
            }
            Err(error) => {
                tracing::error!(kind, %error, "audit entry NOT recorded");
                false
            }
        }
    }

    /// Records what an engine event (and the privacy guard's reaction to it)
    /// means for the audit trail, inside the engine lock.
    pub(crate) fn observe(
        &mut self,
        engine: &Engine<JobSpec>,
        event: &EngineEvent,
        privacy: &PrivacyOutcome,
    ) -> Result<(), ReleaseNotRecorded> {
        let job_id = event.job.clone();
        for refusal in &privacy.refusals {
            self.record(
                COORDINATOR,
                AuditEvent::BudgetRefused {
                    job_id: job_id.clone(),
                    round: refusal.round,
                    partner: refusal.partner_id.clone(),
                    unit: refusal.unit.name().to_owned(),
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
                // The guarantee this cohort's secure aggregation gives, as
                // every node recomputes it.
                if let Ok(spec) = engine.descriptor(&job_id) {
                    if let veil_federation::AggregationMode::Secure(settings) = &spec.aggregation {
                        let guarantee = veil_federation::secure::secure_round_parameters(
                            invited.len(),
                            settings,
                        )
                        .map_or_else(
                            |error| error.to_string(),
                            |graph| graph.guarantee.to_string(),
                        );
                        mechanism.insert("secure_guarantee".to_owned(), guarantee);
                    }
                }
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
            // An abandoned training phase commits its charges too: the
            // inputs that left are paid for, although no sum was released.
            EventKind::PhaseCompleted {
                round,
                phase: Phase::Train,
                ..
            }
            | EventKind::PhaseAbandoned {
                round,
                phase: Phase::Train,
                ..
            } => {
                let participants = privacy.contributors.clone();
                let epsilon_charged = epsilon_charged(&privacy.charged);
                let model_sha256 = current_model_digest(engine, &job_id);
                let recorded = self.record(
                    COORDINATOR,
                    AuditEvent::RoundCommitted {
                        job_id,
                        round: u64::from(*round),
                        participants,
                        epsilon_charged,
                        model_sha256,
                    },
                );
                if !recorded {
                    return Err(ReleaseNotRecorded {
                        what: format!("round {round} commit"),
                    });
                }
            }
            // The final evaluation is its own charged release; earlier
            // rounds' evaluations release nothing and charge nothing.
            EventKind::PhaseCompleted {
                round,
                phase: Phase::Evaluate,
                ..
            }
            | EventKind::PhaseAbandoned {
                round,
                phase: Phase::Evaluate,
                ..
            } if !privacy.charged.is_empty() => {
                let recorded = self.record(
                    COORDINATOR,
                    AuditEvent::EvaluationReleased {
                        job_id,
                        round: u64::from(*round),
                        participants: privacy.contributors.clone(),
                        epsilon_charged: epsilon_charged(&privacy.charged),
                    },
                );
                if !recorded {
                    return Err(ReleaseNotRecorded {
                        what: format!("round {round}'s final evaluation"),
                    });
                }
            }
            EventKind::NodeDeclined {
                node, round, code, ..
            } => {
                self.record(
                    node,
                    AuditEvent::NodeVeto {
                        job_id,
                        round: u64::from(*round),
                        node_id: node.clone(),
                        reason: code.to_string(),
                    },
                );
            }
            EventKind::Succeeded => {
                let version = engine
                    .status(&job_id)
                    .map_or(0, |status| u64::from(status.completed_rounds));
                let model_sha256 = current_model_digest(engine, &job_id);
                let recorded = self.record(
                    COORDINATOR,
                    AuditEvent::ModelReleased {
                        job_id,
                        version,
                        model_sha256,
                    },
                );
                if !recorded {
                    return Err(ReleaseNotRecorded {
                        what: "the final model's release".to_owned(),
                    });
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// A release whose audit entry could not be appended: it must not happen.
#[derive(Debug, thiserror::Error)]
#[error("the audit log could not record {what}; the release is blocked")]
pub(crate) struct ReleaseNotRecorded {
    /// Which release.
    pub(crate) what: String,
}

/// Each charge's own ε, as the audit entries record it.
fn epsilon_charged(charges: &[veil_privacy_ledger::Charge]) -> Vec<EpsilonCharge> {
    charges
        .iter()
        .map(|charge| EpsilonCharge {
            partner: charge.partner_id.clone(),
            unit: charge.unit.name().to_owned(),
            epsilon: finite(
                charge
                    .epsilon_pld
                    .map_or(charge.epsilon_rdp, |pld| pld.min(charge.epsilon_rdp)),
            ),
        })
        .collect()
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
            if let Some(statistics) = &privacy.statistics {
                summary.insert(
                    "statistics_noise_multiplier".to_owned(),
                    statistics.noise_multiplier.to_string(),
                );
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(trail: &mut AuditTrail, job: &str, round: u64, participants: &[&str]) -> u64 {
        assert!(
            trail.record(
                COORDINATOR,
                AuditEvent::RoundCommitted {
                    job_id: job.to_owned(),
                    round,
                    participants: participants.iter().map(|node| node.to_string()).collect(),
                    epsilon_charged: participants
                        .iter()
                        .map(|node| EpsilonCharge {
                            partner: node.to_string(),
                            unit: "customer".to_owned(),
                            epsilon: 0.5,
                        })
                        .collect(),
                    model_sha256: [round as u8; 32],
                }
            )
        );
        trail.log.last_seq().unwrap()
    }

    fn seqs(held: HeldReceipts) -> Vec<u64> {
        match held {
            HeldReceipts::Here(receipts) => receipts.iter().map(|r| r.entry_seq).collect(),
            HeldReceipts::InLogOnly => panic!("expected receipts from memory"),
        }
    }

    #[test]
    fn acknowledged_receipts_leave_memory_and_are_issued_again_from_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut trail = AuditTrail::open(dir.path(), Histogram::new([1.0].into_iter())).unwrap();
        let verified = trail.verifier().verify();
        trail.install_verified(verified);
        let nodes = ["node-a", "node-b"];
        let first: Vec<u64> = (1..=3)
            .map(|round| commit(&mut trail, "job-1", round, &nodes))
            .collect();
        assert_eq!(trail.receipts_in_memory(), 6);
        let HeldReceipts::Here(issued) = trail.receipts_for("node-a", None).unwrap() else {
            panic!("a first fetch is served from memory");
        };
        assert_eq!(
            issued.iter().map(|r| r.entry_seq).collect::<Vec<_>>(),
            first
        );
        // Fetching after the last one acknowledges them: node-a's leave memory, node-b's stay.
        assert_eq!(
            seqs(trail.receipts_for("node-a", Some(first[2])).unwrap()),
            Vec::<u64>::new()
        );
        assert_eq!(trail.receipts_in_memory(), 3);
        // A later round's receipt is held until it is acknowledged in turn.
        let later = commit(&mut trail, "job-2", 1, &nodes);
        assert_eq!(
            seqs(trail.receipts_for("node-a", Some(first[2])).unwrap()),
            [later]
        );
        assert_eq!(
            seqs(trail.receipts_for("node-a", Some(later)).unwrap()),
            Vec::<u64>::new()
        );
        assert_eq!(trail.receipts_in_memory(), 4);
        // A node that lost its receipts asks from the start (or from before what it
        // acknowledged): the verified log issues them again, byte for byte.
        assert_eq!(
            trail.receipts_for("node-a", None).unwrap(),
            HeldReceipts::InLogOnly
        );
        assert_eq!(
            trail.receipts_for("node-a", Some(first[0])).unwrap(),
            HeldReceipts::InLogOnly
        );
        let entries = trail.verifier().verify().unwrap();
        let again = trail.reissue_receipts(&entries, "node-a", None);
        assert_eq!(again[..3], issued[..]);
        assert_eq!(
            again.iter().map(|r| r.entry_seq).collect::<Vec<_>>(),
            [first[0], first[1], first[2], later]
        );
        assert_eq!(
            trail
                .reissue_receipts(&entries, "node-a", Some(first[0]))
                .len(),
            3
        );
        assert!(trail.reissue_receipts(&entries, "node-c", None).is_empty());
    }
}
