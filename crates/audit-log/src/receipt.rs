//! Receipts: what a node holds to prove what the log recorded about it.
//!
//! When a round commits, the coordinator signs, for each participant, the
//! commit entry's seq and hash and the ε charged to that node. The node keeps
//! its receipts in its own append-only file. Later, anyone holding the
//! receipts and the log can [`reconcile`] them: a receipt whose entry is
//! missing reveals a truncated or rewritten log even without a head.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::canonical;
use crate::entry::AuditEntry;
use crate::event::{AuditEvent, EpsilonCharge};
use crate::hex;
use crate::key::{AuditPublicKey, AuditSigner};
use crate::lines::{self, SyncPolicy};

/// The coordinator's signed statement to one node about one committed round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// The job.
    pub job_id: String,
    /// The round.
    pub round: u64,
    /// The node the receipt is for.
    pub node_id: String,
    /// Seq of the `RoundCommitted` entry.
    pub entry_seq: u64,
    /// Hash of that entry.
    #[serde(with = "hex::digest")]
    pub entry_hash: [u8; 32],
    /// The charges recorded against this node in that entry.
    pub charges: Vec<EpsilonCharge>,
    /// The coordinator's signature of the receipt message (see `canonical`).
    #[serde(with = "hex::bytes")]
    pub signature: Vec<u8>,
}

/// Why receipts could not be issued, stored or read.
#[derive(Debug, thiserror::Error)]
pub enum ReceiptError {
    /// Receipts are issued only for `RoundCommitted` entries.
    #[error("entry seq {seq} is a {kind} event; receipts are issued for round commits only")]
    NotARoundCommit {
        /// The entry's seq.
        seq: u64,
        /// Its event kind.
        kind: &'static str,
    },
    /// Reading or writing the receipt file failed.
    #[error("receipt file {path}: {source}")]
    Io {
        /// The receipt file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A receipt is not signed by the coordinator's key.
    #[error("the receipt for job {job_id} round {round} is not signed by the coordinator's key")]
    BadSignature {
        /// Its job.
        job_id: String,
        /// Its round.
        round: u64,
    },
    /// A line of the receipt file is not a receipt.
    #[error("receipt file {path} line {line} is not a receipt: {reason}")]
    Malformed {
        /// The receipt file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// The parser's complaint.
        reason: String,
    },
    /// The receipt file ends in a torn line (a crash while storing a receipt).
    #[error(
        "receipt file {path} ends in a torn line of {bytes} bytes; run the explicit repair to drop it"
    )]
    TornTail {
        /// The receipt file.
        path: PathBuf,
        /// The torn line's length.
        bytes: usize,
    },
}

impl Receipt {
    fn message(&self) -> Vec<u8> {
        canonical::receipt_message(
            &self.job_id,
            self.round,
            &self.node_id,
            self.entry_seq,
            &self.entry_hash,
            &self.charges,
        )
    }

    /// Checks the coordinator's signature; a node should do this before storing.
    pub fn verify_signature(&self, public_key: &AuditPublicKey) -> Result<(), ReceiptError> {
        if public_key.verifies(&self.message(), &self.signature) {
            Ok(())
        } else {
            Err(ReceiptError::BadSignature {
                job_id: self.job_id.clone(),
                round: self.round,
            })
        }
    }
}

/// The charges in `charges` that belong to `node_id`.
fn charges_of(charges: &[EpsilonCharge], node_id: &str) -> Vec<EpsilonCharge> {
    charges
        .iter()
        .filter(|charge| charge.partner == node_id)
        .cloned()
        .collect()
}

/// Signs one receipt per participant of a `RoundCommitted` entry.
pub fn issue_receipts(
    signer: &AuditSigner,
    entry: &AuditEntry,
) -> Result<Vec<Receipt>, ReceiptError> {
    let AuditEvent::RoundCommitted {
        job_id,
        round,
        participants,
        epsilon_charged,
        ..
    } = &entry.event
    else {
        return Err(ReceiptError::NotARoundCommit {
            seq: entry.seq,
            kind: entry.event.kind(),
        });
    };
    Ok(participants
        .iter()
        .map(|node_id| {
            let mut receipt = Receipt {
                job_id: job_id.clone(),
                round: *round,
                node_id: node_id.clone(),
                entry_seq: entry.seq,
                entry_hash: entry.hash,
                charges: charges_of(epsilon_charged, node_id),
                signature: Vec::new(),
            };
            receipt.signature = signer.sign(&receipt.message());
            receipt
        })
        .collect())
}

/// A node's append-only receipt file (JSON lines, synced per receipt).
#[derive(Debug)]
pub struct ReceiptStore {
    /// The receipt file.
    path: PathBuf,
    /// Opened with `O_APPEND`.
    file: File,
}

impl ReceiptStore {
    /// Opens (or creates) the node's receipt file for appending.
    pub fn open(path: &Path) -> Result<Self, ReceiptError> {
        let file = lines::open_append(path).map_err(|source| ReceiptError::Io {
            path: path.to_owned(),
            source,
        })?;
        Ok(ReceiptStore {
            path: path.to_owned(),
            file,
        })
    }

    /// Verifies the receipt's signature, then appends and syncs it.
    pub fn append(
        &mut self,
        receipt: &Receipt,
        public_key: &AuditPublicKey,
    ) -> Result<(), ReceiptError> {
        receipt.verify_signature(public_key)?;
        let line = serde_json::to_string(receipt).map_err(|error| ReceiptError::Io {
            path: self.path.clone(),
            source: io::Error::other(error),
        })?;
        lines::append_line(&mut self.file, &line, SyncPolicy::EveryAppend).map_err(|source| {
            ReceiptError::Io {
                path: self.path.clone(),
                source,
            }
        })
    }

    /// Reads every receipt in a receipt file (missing file: none).
    pub fn read_all(path: &Path) -> Result<Vec<Receipt>, ReceiptError> {
        let contents = match std::fs::read(path) {
            Ok(contents) => contents,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(ReceiptError::Io {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let split = lines::split_lines(&contents);
        if let Some(torn) = split.torn {
            return Err(ReceiptError::TornTail {
                path: path.to_owned(),
                bytes: torn.len(),
            });
        }
        split
            .complete
            .iter()
            .enumerate()
            .map(|(index, line)| {
                serde_json::from_slice(line).map_err(|error| ReceiptError::Malformed {
                    path: path.to_owned(),
                    line: index + 1,
                    reason: error.to_string(),
                })
            })
            .collect()
    }

    /// Drops a torn last line (explicit, like the log's repair); returns the bytes dropped.
    pub fn repair_torn_tail(path: &Path) -> Result<u64, ReceiptError> {
        lines::truncate_torn_tail(path).map_err(|source| ReceiptError::Io {
            path: path.to_owned(),
            source,
        })
    }
}

/// A receipt that does not agree with the log. `index` is the receipt's
/// 0-based position in the list given to [`reconcile`].
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ReceiptFinding {
    /// The receipt itself is not the coordinator's.
    #[error("receipt {index} (job {job_id} round {round}) is not signed by the coordinator's key")]
    BadSignature {
        /// Position of the receipt.
        index: usize,
        /// Its job.
        job_id: String,
        /// Its round.
        round: u64,
    },
    /// The log has no entry at the receipt's seq: it was deleted or cut off.
    #[error(
        "receipt {index} (job {job_id} round {round}) refers to entry seq {seq}, which the log does not contain"
    )]
    EntryMissing {
        /// Position of the receipt.
        index: usize,
        /// Its job.
        job_id: String,
        /// Its round.
        round: u64,
        /// The seq it refers to.
        seq: u64,
    },
    /// The log's entry at the receipt's seq has another hash: it was rewritten.
    #[error(
        "receipt {index}: the log's entry seq {seq} differs from the one the receipt was issued for"
    )]
    EntryDiffers {
        /// Position of the receipt.
        index: usize,
        /// The seq it refers to.
        seq: u64,
    },
    /// The entry matches but does not describe the receipt's round or node.
    #[error(
        "receipt {index}: entry seq {seq} does not record node {node_id} in job {job_id} round {round}"
    )]
    NotRecorded {
        /// Position of the receipt.
        index: usize,
        /// The seq it refers to.
        seq: u64,
        /// Its job.
        job_id: String,
        /// Its round.
        round: u64,
        /// Its node.
        node_id: String,
    },
    /// The ε recorded for the node in the log is not the ε on the receipt.
    #[error(
        "receipt {index}: entry seq {seq} records other charges for node {node_id} than the receipt"
    )]
    EpsilonDiffers {
        /// Position of the receipt.
        index: usize,
        /// The seq it refers to.
        seq: u64,
        /// The node.
        node_id: String,
        /// Charges on the receipt.
        receipt_charges: Vec<EpsilonCharge>,
        /// Charges for the node in the log's entry.
        logged_charges: Vec<EpsilonCharge>,
    },
}

/// The outcome of reconciling a node's receipts with the log.
#[derive(Clone, Debug, PartialEq)]
pub struct ReconcileReport {
    /// Receipts that agree with the log in every respect.
    pub matched: usize,
    /// Receipts that do not, one finding each.
    pub findings: Vec<ReceiptFinding>,
}

impl ReconcileReport {
    /// Whether every receipt agrees with the log.
    pub fn is_consistent(&self) -> bool {
        self.findings.is_empty()
    }
}

/// Checks each receipt against the log's entries (normally the verified
/// entries of a [`crate::VerifyReport`]).
pub fn reconcile(
    receipts: &[Receipt],
    entries: &[AuditEntry],
    public_key: &AuditPublicKey,
) -> ReconcileReport {
    let by_seq: BTreeMap<u64, &AuditEntry> =
        entries.iter().map(|entry| (entry.seq, entry)).collect();
    let mut report = ReconcileReport {
        matched: 0,
        findings: Vec::new(),
    };
    for (index, receipt) in receipts.iter().enumerate() {
        match check_receipt(index, receipt, &by_seq, public_key) {
            Ok(()) => report.matched += 1,
            Err(finding) => report.findings.push(finding),
        }
    }
    report
}

fn check_receipt(
    index: usize,
    receipt: &Receipt,
    by_seq: &BTreeMap<u64, &AuditEntry>,
    public_key: &AuditPublicKey,
) -> Result<(), ReceiptFinding> {
    if receipt.verify_signature(public_key).is_err() {
        return Err(ReceiptFinding::BadSignature {
            index,
            job_id: receipt.job_id.clone(),
            round: receipt.round,
        });
    }
    let Some(entry) = by_seq.get(&receipt.entry_seq) else {
        return Err(ReceiptFinding::EntryMissing {
            index,
            job_id: receipt.job_id.clone(),
            round: receipt.round,
            seq: receipt.entry_seq,
        });
    };
    if entry.hash != receipt.entry_hash {
        return Err(ReceiptFinding::EntryDiffers {
            index,
            seq: receipt.entry_seq,
        });
    }
    let not_recorded = || ReceiptFinding::NotRecorded {
        index,
        seq: receipt.entry_seq,
        job_id: receipt.job_id.clone(),
        round: receipt.round,
        node_id: receipt.node_id.clone(),
    };
    let AuditEvent::RoundCommitted {
        job_id,
        round,
        participants,
        epsilon_charged,
        ..
    } = &entry.event
    else {
        return Err(not_recorded());
    };
    if *job_id != receipt.job_id
        || *round != receipt.round
        || !participants.contains(&receipt.node_id)
    {
        return Err(not_recorded());
    }
    let logged_charges = charges_of(epsilon_charged, &receipt.node_id);
    if logged_charges != receipt.charges {
        return Err(ReceiptFinding::EpsilonDiffers {
            index,
            seq: receipt.entry_seq,
            node_id: receipt.node_id.clone(),
            receipt_charges: receipt.charges.clone(),
            logged_charges,
        });
    }
    Ok(())
}
