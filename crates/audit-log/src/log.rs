//! The coordinator's side: an append-only log file that continues its chain
//! across restarts, syncs every append, and keeps its signed head current.

use std::fs::{File, TryLockError};
use std::io;
use std::path::{Path, PathBuf};

use crate::canonical::GENESIS_PREV_HASH;
use crate::entry::{AuditEntry, LineFault};
use crate::event::{AuditEvent, EventError};
use crate::head::{Head, HeadError, head_path_for};
use crate::key::{AuditPublicKey, AuditSigner};
use crate::lines::{self, SyncPolicy};
use crate::receipt::{Receipt, ReceiptError, issue_receipts};

/// Where the log lives and how hard it tries to be durable. No `Default`:
/// every deployment chooses its path, and production chooses `EveryAppend`.
#[derive(Clone, Debug)]
pub struct AuditLogConfig {
    /// The log file; its head is written next to it (see [`head_path_for`]).
    pub log_path: PathBuf,
    /// Whether appends are synced before they return.
    pub sync: SyncPolicy,
}

/// Why the log could not be opened or appended to.
#[derive(Debug, thiserror::Error)]
pub enum AuditLogError {
    /// Reading or writing a file failed.
    #[error("audit log {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Another process (or another `AuditLog`) holds the log open.
    #[error("audit log {path} is already open elsewhere (it is locked)")]
    Locked {
        /// The log file.
        path: PathBuf,
    },
    /// The last line has no newline: an append was interrupted. Nothing is
    /// dropped without being asked; see [`AuditLog::repair_torn_tail`].
    #[error(
        "audit log {path} ends in a torn line of {bytes} bytes at offset {offset}; run the explicit repair to drop it"
    )]
    TornTail {
        /// The log file.
        path: PathBuf,
        /// Where the torn line starts.
        offset: u64,
        /// How long it is.
        bytes: u64,
    },
    /// The last line is not an authentic entry under this signer's key, so
    /// the chain cannot be continued from it.
    #[error("the last entry of audit log {path} cannot be continued: {reason}")]
    TailInvalid {
        /// The log file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The signed head is further along than the file: entries were cut off.
    #[error(
        "audit log {path} was truncated: its signed head is at seq {head_seq}, the file ends at {last_seq:?}"
    )]
    TailTruncated {
        /// The log file.
        path: PathBuf,
        /// The head's seq.
        head_seq: u64,
        /// The file's last seq, `None` if empty.
        last_seq: Option<u64>,
    },
    /// The head's hash is not that of the entry at its seq.
    #[error("audit log {path}: the entry at seq {seq} is not the one its signed head records")]
    HeadMismatch {
        /// The log file.
        path: PathBuf,
        /// The head's seq.
        seq: u64,
    },
    /// The head is not signed by this signer's key.
    #[error("audit log {path}: the head checkpoint is not signed by this coordinator's key")]
    HeadBadSignature {
        /// The log file.
        path: PathBuf,
    },
    /// The head file could not be read.
    #[error(transparent)]
    Head(#[from] HeadError),
    /// The event cannot be recorded faithfully.
    #[error("refusing to record the event: {0}")]
    InvalidEvent(#[from] EventError),
    /// An earlier append failed part-way, so the file may end in a torn line;
    /// appending more would bury it. Reopen the log to find out.
    #[error(
        "audit log {path} refused the append: an earlier append failed part-way; reopen the log"
    )]
    Poisoned {
        /// The log file.
        path: PathBuf,
    },
}

/// An event waiting to be appended, with the time and actor it is recorded under.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingEntry {
    /// When it happened, in milliseconds since the Unix epoch.
    pub at_unix_ms: i64,
    /// Who caused it.
    pub actor: String,
    /// What happened.
    pub event: AuditEvent,
}

/// The open log. One per process: the file is locked while it is open.
#[derive(Debug)]
pub struct AuditLog {
    /// Path and sync policy.
    config: AuditLogConfig,
    /// Where the signed head is replaced after each append.
    head_path: PathBuf,
    /// Opened with `O_APPEND` and an exclusive lock held for the log's lifetime.
    file: File,
    /// The coordinator's key; every entry and head is signed with it.
    signer: AuditSigner,
    /// Seq of the next entry.
    next_seq: u64,
    /// Hash of the last entry (the genesis value for an empty log).
    last_hash: [u8; 32],
    /// Set when a write failed after possibly reaching the file.
    poisoned: bool,
}

impl AuditLog {
    /// Opens (or creates) the log, checks that its last entry is authentic
    /// under `signer`'s key and agrees with the signed head, and positions
    /// the chain after it.
    ///
    /// Only the tail is checked here, so opening stays cheap for long logs;
    /// a full check is [`crate::verify_log_file`].
    pub fn open(config: AuditLogConfig, signer: AuditSigner) -> Result<Self, AuditLogError> {
        let path = config.log_path.clone();
        let io_error = |source| AuditLogError::Io {
            path: path.clone(),
            source,
        };
        let mut file = lines::open_append(&path).map_err(io_error)?;
        lock_exclusively(&file, &path)?;
        let tail = lines::read_tail(&mut file).map_err(io_error)?;
        if tail.torn_bytes > 0 {
            return Err(AuditLogError::TornTail {
                path,
                offset: tail.clean_length,
                bytes: tail.torn_bytes,
            });
        }
        let public_key = signer.public_key();
        let last_entry = match tail.last_line {
            None => None,
            Some(line) => match AuditEntry::parse_line(&line, &public_key) {
                (Some(entry), Ok(())) => Some(entry),
                (_, outcome) => {
                    let reason = match outcome {
                        Err(LineFault::Unparseable(reason)) => reason,
                        Err(LineFault::HashMismatch) => {
                            "its content does not match its hash".into()
                        }
                        Err(LineFault::BadSignature) | Ok(()) => {
                            "it is not signed by this coordinator's key".into()
                        }
                    };
                    return Err(AuditLogError::TailInvalid { path, reason });
                }
            },
        };
        let head_path = head_path_for(&path);
        let head = Head::read(&head_path)?;
        let mut log = AuditLog {
            next_seq: last_entry.as_ref().map_or(0, |entry| entry.seq + 1),
            last_hash: last_entry
                .as_ref()
                .map_or(GENESIS_PREV_HASH, |entry| entry.hash),
            config,
            head_path,
            file,
            signer,
            poisoned: false,
        };
        log.reconcile_head(head.as_ref(), &public_key)?;
        Ok(log)
    }

    /// Checks the head against the file's last entry; rewrites it when it is
    /// merely behind (a crash between an append and its head update).
    fn reconcile_head(
        &mut self,
        head: Option<&Head>,
        public_key: &AuditPublicKey,
    ) -> Result<(), AuditLogError> {
        let path = self.config.log_path.clone();
        let last_seq = self.next_seq.checked_sub(1);
        if let Some(head) = head {
            if !head.is_signed_by(public_key) {
                return Err(AuditLogError::HeadBadSignature { path });
            }
            if last_seq.is_none_or(|last| head.seq > last) {
                return Err(AuditLogError::TailTruncated {
                    path,
                    head_seq: head.seq,
                    last_seq,
                });
            }
            if last_seq == Some(head.seq) {
                return if head.hash == self.last_hash {
                    Ok(())
                } else {
                    Err(AuditLogError::HeadMismatch {
                        path,
                        seq: head.seq,
                    })
                };
            }
        }
        match last_seq {
            Some(last) => self.write_head(last),
            None => Ok(()),
        }
    }

    fn write_head(&mut self, seq: u64) -> Result<(), AuditLogError> {
        Head::sign(&self.signer, seq, self.last_hash)
            .write(&self.head_path, self.config.sync)
            .map_err(|source| AuditLogError::Io {
                path: self.head_path.clone(),
                source,
            })
    }

    /// Appends an event, syncs it (under [`SyncPolicy::EveryAppend`]) and
    /// updates the signed head, then returns the sealed entry.
    ///
    /// When this returns `Ok`, the entry is on stable storage. The head
    /// follows it, so a crash in between leaves the head one entry behind,
    /// which the next `open` repairs; an `Io` error naming the head file
    /// likewise means the entry is recorded and only the head lags.
    pub fn append(
        &mut self,
        at_unix_ms: i64,
        actor: &str,
        event: AuditEvent,
    ) -> Result<AuditEntry, AuditLogError> {
        self.check_writable()?;
        event.validate()?;
        let entry = AuditEntry::seal(
            &self.signer,
            self.next_seq,
            self.last_hash,
            at_unix_ms,
            actor.to_owned(),
            event,
        );
        self.write_sealed(std::slice::from_ref(&entry))?;
        Ok(entry)
    }

    /// Appends several events with one write, one sync and one head update,
    /// for bursts (a round commit with its model release, a batch of
    /// authentication failures). Validates every event before writing any,
    /// so either all are recorded or none is.
    pub fn append_all(
        &mut self,
        pending: Vec<PendingEntry>,
    ) -> Result<Vec<AuditEntry>, AuditLogError> {
        self.check_writable()?;
        for entry in &pending {
            entry.event.validate()?;
        }
        let mut entries: Vec<AuditEntry> = Vec::with_capacity(pending.len());
        for (offset, entry) in pending.into_iter().enumerate() {
            let prev_hash = entries
                .last()
                .map_or(self.last_hash, |previous| previous.hash);
            entries.push(AuditEntry::seal(
                &self.signer,
                self.next_seq + offset as u64,
                prev_hash,
                entry.at_unix_ms,
                entry.actor,
                entry.event,
            ));
        }
        self.write_sealed(&entries)?;
        Ok(entries)
    }

    fn check_writable(&self) -> Result<(), AuditLogError> {
        if self.poisoned {
            return Err(AuditLogError::Poisoned {
                path: self.config.log_path.clone(),
            });
        }
        Ok(())
    }

    /// Writes sealed entries that continue the chain in one write, syncs,
    /// advances the chain and replaces the head.
    fn write_sealed(&mut self, entries: &[AuditEntry]) -> Result<(), AuditLogError> {
        let Some(last) = entries.last() else {
            return Ok(());
        };
        let text: Vec<String> = entries.iter().map(AuditEntry::to_line).collect();
        if let Err(source) = lines::append_line(&mut self.file, &text.join("\n"), self.config.sync)
        {
            // The write may have reached the file in part; appending more
            // would bury a torn line in the middle of the log.
            self.poisoned = true;
            return Err(AuditLogError::Io {
                path: self.config.log_path.clone(),
                source,
            });
        }
        self.next_seq = last.seq + 1;
        self.last_hash = last.hash;
        self.write_head(last.seq)
    }

    /// Signs one receipt per participant of a committed round, for the
    /// coordinator to hand to each node.
    pub fn issue_receipts(&self, entry: &AuditEntry) -> Result<Vec<Receipt>, ReceiptError> {
        issue_receipts(&self.signer, entry)
    }

    /// The key that verifies this log; give it to auditors and nodes.
    pub fn public_key(&self) -> AuditPublicKey {
        self.signer.public_key()
    }

    /// Seq of the last entry, `None` while the log is empty.
    pub fn last_seq(&self) -> Option<u64> {
        self.next_seq.checked_sub(1)
    }

    /// Where the log file is.
    pub fn log_path(&self) -> &Path {
        &self.config.log_path
    }

    /// Where its signed head is.
    pub fn head_path(&self) -> &Path {
        &self.head_path
    }

    /// Drops a torn last line left by a crash during an append, and returns
    /// how many bytes were dropped.
    ///
    /// Never called implicitly: the torn line was never acknowledged (its
    /// append did not return), but only an operator should decide that
    /// bytes leave an audit log. Refuses while the log is open elsewhere.
    pub fn repair_torn_tail(log_path: &Path) -> Result<u64, AuditLogError> {
        let io_error = |source| AuditLogError::Io {
            path: log_path.to_owned(),
            source,
        };
        let file = lines::open_append(log_path).map_err(io_error)?;
        lock_exclusively(&file, log_path)?;
        lines::truncate_torn_tail(log_path).map_err(io_error)
    }
}

fn lock_exclusively(file: &File, path: &Path) -> Result<(), AuditLogError> {
    file.try_lock().map_err(|error| match error {
        TryLockError::WouldBlock => AuditLogError::Locked {
            path: path.to_owned(),
        },
        TryLockError::Error(source) => AuditLogError::Io {
            path: path.to_owned(),
            source,
        },
    })
}
