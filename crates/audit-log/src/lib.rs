//! Veil's tamper-evident audit log: an append-only, SHA-256 hash-chained file
//! whose every entry is signed with the coordinator's Ed25519 key, a signed
//! head checkpoint that exposes truncation, receipts that let each node prove
//! what was recorded about it, verification that names every modification,
//! deletion, insertion, reordering and truncation by seq and line, and the
//! auditor's report.
//!
//! This crate does **not** read a clock (timestamps are passed in), decide
//! what to record or when (the coordinator does), check who may read the log
//! (the coordinator's role checks), or hold the privacy ledger
//! (`veil-privacy-accounting` computes ε; this log only records the charges).
//! See `docs/audit-log.md` for the format and the threat model.

#![warn(missing_docs)]

mod canonical;
mod entry;
mod event;
mod head;
mod hex;
mod key;
mod lines;
mod log;
mod receipt;
mod report;
mod verify;

pub use canonical::GENESIS_PREV_HASH;
pub use entry::AuditEntry;
pub use event::{AuditEvent, EVENT_KINDS, EpsilonCharge, EventError};
pub use head::{Head, HeadError, head_path_for};
pub use key::{AuditPublicKey, AuditSigner, KeyError, generate_signing_key, load_signing_key};
pub use lines::SyncPolicy;
pub use log::{AuditLog, AuditLogConfig, AuditLogError, PendingEntry};
pub use receipt::{
    Receipt, ReceiptError, ReceiptFinding, ReceiptStore, ReconcileReport, issue_receipts, reconcile,
};
pub use report::{AuditReport, ChainHead, JobSummary, PrivacyAuditSummary, export_report};
pub use verify::{
    TamperEvidence, TamperFinding, VerifyError, VerifyReport, verify_entries, verify_log_bytes,
    verify_log_file,
};
