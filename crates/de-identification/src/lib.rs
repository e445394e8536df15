//! De-identification of partner data before it is used for training: keyed pseudonyms for
//! identifiers, PII redaction in every other kept value, generalisation of quasi-identifiers by
//! fixed rules declared in the policy, k-anonymity / distinct l-diversity measurement, and a
//! value-free report.
//!
//! Everything done to a record that feeds training depends on that record and the policy alone
//! (and the key), never on other records, so adding or removing one customer leaves every other
//! customer's de-identified data unchanged: the add/remove adjacency customer-level DP-SGD is
//! charged for. The one cross-record transformation, the Datafly pass that recodes and suppresses
//! to reach k, is reserved for row-level exports
//! ([`Deidentifier::enforce_k_anonymity_for_export`]).
//!
//! This crate does not read files, databases or configuration (the client node feeds it records
//! and deserialises [`DeidPolicy`]), does not compute behaviour features (`veil-behaviour-features`), and
//! gives no differential-privacy guarantee: noise and budgets live in `veil-federation` and
//! `veil-privacy-accounting`. k-anonymity limits re-identification of released rows; it is not DP.

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
    GeneralisationLevel, KAnonymityMode, KAnonymityReport, KeptQuasiIdentifiers,
    QuasiIdentifierTuple,
};
pub use key::{
    KEY_FILE_MODE, PSEUDONYM_KEY_LENGTH, PseudonymKey, RotatedKey, normalise_identifier,
};
pub use policy::{ColumnPolicy, ColumnRole, DeidPolicy, GeneralisationPolicy};
pub use report::DeidReport;
pub use scanner::{PiiCounts, PiiHit, PiiKind, redact, scan};
