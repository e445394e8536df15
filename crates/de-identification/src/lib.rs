//! De-identification of partner data before it is used for training: keyed pseudonyms for
//! identifiers, PII redaction in every other kept value, generalisation of quasi-identifiers,
//! and a k-anonymity / distinct l-diversity pass with a value-free report.
//!
//! This crate does not read files, databases or configuration (the client node feeds it records
//! and deserialises [`DeidPolicy`]), does not compute behaviour features (`veil-features`), and
//! gives no differential-privacy guarantee: noise and budgets live in `veil-federation` and
//! `veil-accounting`. k-anonymity limits re-identification of released rows; it is not DP.

mod engine;
mod error;
mod generalise;
mod k_anonymity;
mod key;
mod policy;
mod report;
mod scanner;

pub use engine::{DeidRecord, Deidentifier, OutputColumn};
pub use error::DeidError;
pub use generalise::{SUPPRESSED_VALUE, generalise, generalise_at_level, top_level};
pub use k_anonymity::{
    GeneralisationLevel, KAnonymityReport, KeptQuasiIdentifiers, QuasiIdentifierTuple,
};
pub use key::{
    KEY_FILE_MODE, PSEUDONYM_KEY_LENGTH, PseudonymKey, RotatedKey, normalise_identifier,
};
pub use policy::{ColumnPolicy, ColumnRole, DeidPolicy, GeneralisationPolicy};
pub use report::DeidReport;
pub use scanner::{PiiCounts, PiiHit, PiiKind, redact, scan};
