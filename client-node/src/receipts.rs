//! The node's receipts: the coordinator's signed statements of the rounds
//! this node contributed to, kept in `<state>/receipts.jsonl`, so the partner
//! can prove later what the audit log recorded about it
//! (`coordinator audit reconcile --receipts ...`).
//!
//! The coordinator's audit key is pinned on first registration
//! (`<state>/coordinator-audit.key`). A coordinator that later presents
//! another key keeps another log (a new federation, or a coordinator that
//! lost or replaced its state): the receipts and pin of the old key are
//! archived under the old key's name, never overwritten, because they remain
//! the partner's proof against the old log, and collection starts afresh.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use veil_audit_log::{AuditPublicKey, EpsilonCharge, Receipt, ReceiptStore};
use veil_wire::v1;

/// The receipt file in the node's state folder.
pub const RECEIPTS_FILE: &str = "receipts.jsonl";
/// The pinned coordinator audit key, hex, in the node's state folder.
pub const COORDINATOR_AUDIT_KEY_FILE: &str = "coordinator-audit.key";

/// The receipt file, the pinned key and the rounds still owed a receipt.
pub(crate) struct ReceiptKeeper {
    node_id: String,
    state_dir: PathBuf,
    store: ReceiptStore,
    key_path: PathBuf,
    coordinator_key: Option<AuditPublicKey>,
    /// Seq of the newest receipt held.
    last_seq: Option<u64>,
    /// Rounds this node sent its training update for and holds no receipt of.
    awaited: BTreeSet<(String, u64)>,
    /// Set at start: receipts issued while the node was down are fetched once.
    catch_up: bool,
}

impl ReceiptKeeper {
    /// Opens the receipt file and the pinned key in `state_dir`.
    pub(crate) fn open(state_dir: &Path, node_id: &str) -> anyhow::Result<Self> {
        let path = state_dir.join(RECEIPTS_FILE);
        let held = ReceiptStore::read_all(&path)?;
        let key_path = state_dir.join(COORDINATOR_AUDIT_KEY_FILE);
        let coordinator_key =
            match std::fs::read_to_string(&key_path) {
                Ok(text) => Some(AuditPublicKey::from_hex(text.trim()).with_context(|| {
                    format!("{} is not an audit public key", key_path.display())
                })?),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
                Err(error) => {
                    return Err(error).with_context(|| format!("reading {}", key_path.display()));
                }
            };
        Ok(Self {
            node_id: node_id.to_owned(),
            state_dir: state_dir.to_owned(),
            store: ReceiptStore::open(&path)?,
            key_path,
            coordinator_key,
            last_seq: held.iter().map(|receipt| receipt.entry_seq).max(),
            awaited: BTreeSet::new(),
            catch_up: true,
        })
    }

    /// Pins the audit key the coordinator advertised at registration. A key
    /// other than the pinned one archives the old pin and receipts first.
    pub(crate) fn pin(&mut self, advertised_hex: &str) -> anyhow::Result<()> {
        let advertised = AuditPublicKey::from_hex(advertised_hex).with_context(|| {
            format!("the coordinator advertised an invalid audit public key {advertised_hex:?}")
        })?;
        match self.coordinator_key {
            Some(pinned) if pinned == advertised => return Ok(()),
            Some(pinned) => self.archive(pinned, advertised)?,
            None => {}
        }
        std::fs::write(&self.key_path, format!("{advertised}\n"))
            .with_context(|| format!("writing {}", self.key_path.display()))?;
        tracing::info!(node = %self.node_id, key = %advertised, "pinned the coordinator's audit key");
        self.coordinator_key = Some(advertised);
        Ok(())
    }

    /// Moves the receipts and pin of `old` aside, named after it.
    fn archive(&mut self, old: AuditPublicKey, new: AuditPublicKey) -> anyhow::Result<()> {
        let name = old.to_string();
        let suffix = &name[..16.min(name.len())];
        let receipts = self.state_dir.join(RECEIPTS_FILE);
        let archived_receipts = self.state_dir.join(format!("receipts.{suffix}.jsonl"));
        let archived_key = self
            .state_dir
            .join(format!("coordinator-audit.{suffix}.key"));
        for (from, to) in [
            (&receipts, &archived_receipts),
            (&self.key_path, &archived_key),
        ] {
            if to.exists() {
                bail!(
                    "cannot archive {} to {}: the target exists; move it away first",
                    from.display(),
                    to.display()
                );
            }
            if from.exists() {
                std::fs::rename(from, to)
                    .with_context(|| format!("archiving {} to {}", from.display(), to.display()))?;
            }
        }
        tracing::warn!(
            node = %self.node_id,
            old = %old,
            new = %new,
            archive = %archived_receipts.display(),
            "the coordinator's audit key changed: receipts of the old key archived"
        );
        self.store = ReceiptStore::open(&receipts)?;
        self.last_seq = None;
        self.awaited.clear();
        self.catch_up = true;
        Ok(())
    }

    /// Notes that this node's training update for `round` was accepted.
    pub(crate) fn await_round(&mut self, job_id: &str, round: u32) {
        self.awaited.insert((job_id.to_owned(), u64::from(round)));
    }

    /// Whether a fetch is worth making while working on `training` (the job
    /// and round of a training task, or none): some round is owed a receipt
    /// and is not the one still training, so it may have committed.
    pub(crate) fn is_due(&self, training: Option<(&str, u32)>) -> bool {
        self.catch_up
            || self.awaited.iter().any(|(job, round)| {
                training.is_none_or(|(training_job, training_round)| {
                    job != training_job || *round != u64::from(training_round)
                })
            })
    }

    /// Only receipts after this seq are new.
    pub(crate) fn after_seq(&self) -> Option<u64> {
        self.last_seq
    }

    /// Verifies and stores fetched receipts; returns how many were new.
    pub(crate) fn store(&mut self, fetched: Vec<v1::Receipt>) -> anyhow::Result<usize> {
        let Some(key) = self.coordinator_key else {
            bail!("no coordinator audit key pinned yet");
        };
        // All or nothing: a batch holding another node's receipt is refused whole.
        let fetched = fetched
            .into_iter()
            .map(receipt_from_wire)
            .collect::<anyhow::Result<Vec<Receipt>>>()?;
        if let Some(foreign) = fetched
            .iter()
            .find(|receipt| receipt.node_id != self.node_id)
        {
            bail!(
                "the coordinator sent a receipt for node '{}' to node '{}'",
                foreign.node_id,
                self.node_id
            );
        }
        let mut stored = 0;
        for receipt in fetched {
            if self.last_seq.is_some_and(|last| receipt.entry_seq <= last) {
                continue;
            }
            self.store.append(&receipt, &key)?;
            self.last_seq = Some(receipt.entry_seq);
            // A receipt for a round also settles earlier rounds of the job
            // that never committed (they failed or were refused).
            self.awaited
                .retain(|(job, round)| *job != receipt.job_id || *round > receipt.round);
            stored += 1;
        }
        self.catch_up = false;
        Ok(stored)
    }
}

fn receipt_from_wire(wire: v1::Receipt) -> anyhow::Result<Receipt> {
    let entry_hash: [u8; 32] = wire.entry_hash.as_slice().try_into().with_context(|| {
        format!(
            "receipt for job {} round {}: entry hash of {} bytes, expected 32",
            wire.job_id,
            wire.round,
            wire.entry_hash.len()
        )
    })?;
    Ok(Receipt {
        job_id: wire.job_id,
        round: wire.round,
        node_id: wire.node_id,
        entry_seq: wire.entry_seq,
        entry_hash,
        charges: wire
            .charges
            .into_iter()
            .map(|charge| EpsilonCharge {
                partner: charge.partner,
                unit: charge.unit,
                epsilon: charge.epsilon,
            })
            .collect(),
        signature: wire.signature,
    })
}

#[cfg(test)]
mod tests {
    use veil_audit_log::{AuditEvent, AuditLog, AuditLogConfig, AuditSigner, SyncPolicy};

    use super::*;

    /// Receipts of one committed round for `nodes`, signed by a fresh log of `signer`.
    fn receipts(dir: &Path, signer: AuditSigner, nodes: &[&str]) -> Vec<v1::Receipt> {
        let mut log = AuditLog::open(
            AuditLogConfig {
                log_path: dir.join("audit.log"),
                sync: SyncPolicy::EveryAppend,
            },
            signer,
        )
        .unwrap();
        let entry = log
            .append(
                1,
                "coordinator",
                AuditEvent::RoundCommitted {
                    job_id: "job-1".into(),
                    round: 1,
                    participants: nodes.iter().map(|node| (*node).to_owned()).collect(),
                    epsilon_charged: Vec::new(),
                    model_sha256: [1; 32],
                },
            )
            .unwrap();
        log.issue_receipts(&entry)
            .unwrap()
            .into_iter()
            .map(|receipt| v1::Receipt {
                job_id: receipt.job_id,
                round: receipt.round,
                node_id: receipt.node_id,
                entry_seq: receipt.entry_seq,
                entry_hash: receipt.entry_hash.to_vec(),
                charges: Vec::new(),
                signature: receipt.signature,
            })
            .collect()
    }

    #[test]
    fn receipts_are_verified_kept_once_and_archived_when_the_key_changes() {
        let state = tempfile::tempdir().unwrap();
        let first_log = tempfile::tempdir().unwrap();
        let second_log = tempfile::tempdir().unwrap();
        let first = AuditSigner::generate_ephemeral().unwrap();
        let second = AuditSigner::generate_ephemeral().unwrap();
        let (first_key, second_key) = (first.public_key(), second.public_key());
        let mut keeper = ReceiptKeeper::open(state.path(), "node-a").unwrap();
        assert!(keeper.is_due(None), "a fresh node catches up once");

        let issued = receipts(first_log.path(), first, &["node-a", "node-b"]);
        assert!(keeper.store(issued.clone()).is_err(), "no key pinned yet");
        keeper.pin(&first_key.to_string()).unwrap();
        // node-b's receipt is not node-a's to keep.
        let error = keeper.store(issued.clone()).unwrap_err();
        assert!(error.to_string().contains("node 'node-b'"), "{error}");
        let own: Vec<_> = issued
            .iter()
            .filter(|receipt| receipt.node_id == "node-a")
            .cloned()
            .collect();
        let mut forged = own[0].clone();
        forged.signature[0] ^= 1;
        assert!(
            keeper.store(vec![forged]).is_err(),
            "a bad signature is refused"
        );
        assert_eq!(
            keeper.store(Vec::new()).unwrap(),
            0,
            "caught up: nothing issued yet"
        );
        keeper.await_round("job-1", 1);
        assert!(
            !keeper.is_due(Some(("job-1", 1))),
            "round 1 is still training"
        );
        assert!(keeper.is_due(Some(("job-1", 2))));
        assert_eq!(keeper.store(own.clone()).unwrap(), 1);
        assert_eq!(keeper.store(own.clone()).unwrap(), 0, "kept once");
        assert!(!keeper.is_due(None));

        // A restarted node keeps its receipts and its pin.
        let mut keeper = ReceiptKeeper::open(state.path(), "node-a").unwrap();
        assert_eq!(keeper.after_seq(), Some(0));
        keeper.pin(&first_key.to_string()).unwrap();

        // Another coordinator key: the old receipts and pin are archived.
        keeper.pin(&second_key.to_string()).unwrap();
        let prefix = &first_key.to_string()[..16];
        let archived =
            ReceiptStore::read_all(&state.path().join(format!("receipts.{prefix}.jsonl"))).unwrap();
        assert_eq!(archived.len(), 1);
        assert!(archived[0].verify_signature(&first_key).is_ok());
        assert_eq!(keeper.after_seq(), None);
        let fresh: Vec<_> = receipts(second_log.path(), second, &["node-a"]);
        assert_eq!(keeper.store(fresh).unwrap(), 1);
        assert_eq!(
            ReceiptStore::read_all(&state.path().join(RECEIPTS_FILE))
                .unwrap()
                .len(),
            1
        );
    }
}
