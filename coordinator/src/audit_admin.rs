//! The auditor's offline commands over a copy of the coordinator's audit log (`coordinator audit
//! verify|reconcile|report`): each verifies the hash chain, every signature and the head first,
//! and returns the text the command prints.

use std::path::Path;

use anyhow::Context;
use veil_audit_log::{
    AuditPublicKey, Head, ReceiptStore, VerifyReport, export_report, head_path_for, reconcile,
    verify_log_file,
};

/// How `audit report` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    /// Readable text.
    Text,
    /// JSON.
    Json,
}

/// Reads the coordinator's audit public key file (hex, as `serve` writes it).
pub(crate) fn read_public_key(path: &Path) -> anyhow::Result<AuditPublicKey> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    AuditPublicKey::from_hex(text.trim())
        .with_context(|| format!("{} is not an audit public key", path.display()))
}

/// Verifies the log against the key and the head file beside it.
pub(crate) fn verified(log: &Path, public_key: &AuditPublicKey) -> anyhow::Result<VerifyReport> {
    let head = Head::read(&head_path_for(log))?;
    verify_log_file(log, public_key, head.as_ref())
        .with_context(|| format!("audit log {} does NOT verify", log.display()))
}

/// Verifies the log; names any modification, deletion, insertion, reordering or truncation.
pub fn verify(log: &Path, public_key_path: &Path) -> anyhow::Result<String> {
    let public_key = read_public_key(public_key_path)?;
    let report = verified(log, &public_key)?;
    Ok(format!(
        "{}: {} entries verified, chain intact, signed by {public_key}",
        log.display(),
        report.entries.len()
    ))
}

/// Verifies the log, then checks a node's receipts against it. A receipt that disagrees is an
/// error listing every mismatch.
pub fn reconcile_receipts(
    log: &Path,
    public_key_path: &Path,
    receipts_path: &Path,
) -> anyhow::Result<String> {
    let public_key = read_public_key(public_key_path)?;
    let report = verified(log, &public_key)?;
    let receipts = ReceiptStore::read_all(receipts_path)?;
    let outcome = reconcile(&receipts, &report.entries, &public_key);
    let mut text: String = outcome
        .findings
        .iter()
        .map(|finding| format!("MISMATCH: {finding}\n"))
        .collect();
    text.push_str(&format!(
        "{} of {} receipts match the log ({} entries verified)",
        outcome.matched,
        receipts.len(),
        report.entries.len()
    ));
    anyhow::ensure!(
        outcome.is_consistent(),
        "{} receipts disagree with the log:\n{text}",
        outcome.findings.len()
    );
    Ok(text)
}

/// Verifies the log, then reports its jobs, rounds, ε charged, refusals, vetoes and
/// authentication failures.
pub fn report(log: &Path, public_key_path: &Path, format: ReportFormat) -> anyhow::Result<String> {
    let public_key = read_public_key(public_key_path)?;
    let report = export_report(&verified(log, &public_key)?.entries);
    Ok(match format {
        ReportFormat::Json => report.to_json(),
        ReportFormat::Text => report.to_text(),
    })
}
