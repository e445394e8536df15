//! The single error type of the crate, so callers match on one enum whatever stage failed.

use std::path::PathBuf;

/// Everything that can go wrong while configuring or running de-identification.
#[derive(Debug, thiserror::Error)]
pub enum DeidError {
    /// A record did not have one value per policy column, so values cannot be matched to roles.
    #[error("record {row_index} has {found} values but the policy declares {expected} columns")]
    RecordLength {
        /// Zero-based position of the record in the stream.
        row_index: u64,
        /// Number of columns the policy declares.
        expected: usize,
        /// Number of values the record carried.
        found: usize,
    },
    /// The policy names no columns at all, so there is nothing to de-identify.
    #[error("the de-identification policy declares no columns")]
    EmptyPolicy,
    /// `k` must be at least 1; k = 0 would make k-anonymity meaningless.
    #[error("k must be at least 1")]
    ZeroK,
    /// `l` must be at least 1 when it is given.
    #[error("l must be at least 1 when given")]
    ZeroL,
    /// The suppression limit of an export must be a fraction in [0, 1].
    #[error("an export's max_suppression_fraction must be within [0, 1], got {value}")]
    InvalidSuppressionFraction {
        /// The rejected value.
        value: f64,
    },
    /// The same column name appears twice in the policy, so its role would be ambiguous.
    #[error("column `{column}` is declared more than once in the policy")]
    DuplicateColumn {
        /// The repeated column name.
        column: String,
    },
    /// A column of the input has no declared role; undeclared columns are refused, never passed through.
    #[error("input column `{column}` has no role in the de-identification policy")]
    ColumnWithoutRole {
        /// The undeclared column name.
        column: String,
    },
    /// The policy declares a column that the input does not have.
    #[error("policy column `{column}` is missing from the input header")]
    ColumnMissingFromInput {
        /// The missing column name.
        column: String,
    },
    /// A generalisation rule cannot be applied as configured (for example an age band of width 0).
    #[error("column `{column}`: invalid generalisation: {reason}")]
    InvalidGeneralisation {
        /// The column whose rule is invalid.
        column: String,
        /// Why the rule is invalid.
        reason: &'static str,
    },
    /// A quasi-identifier tuple did not come from this engine (wrong width or unknown value ids).
    #[error("quasi-identifier tuple for row {row_index} was not produced by this de-identifier")]
    ForeignQuasiIdentifierTuple {
        /// Row index carried by the offending tuple.
        row_index: u64,
    },
    /// Meeting k (and l) for an export would suppress more records than its limit allows, so the
    /// export must not happen.
    #[error(
        "k-anonymity would suppress {suppressed} of {total} records, above the limit of {limit} records"
    )]
    SuppressionAboveLimit {
        /// Records that would have to be suppressed.
        suppressed: u64,
        /// Records submitted to the pass.
        total: u64,
        /// Largest number of suppressed records the policy tolerates.
        limit: u64,
    },
    /// Reading or writing a key file failed.
    #[error("pseudonymisation key file {path}: {source}")]
    KeyIo {
        /// The key file involved.
        path: PathBuf,
        /// The underlying IO error.
        #[source]
        source: std::io::Error,
    },
    /// A key file exists but does not hold exactly 32 bytes, so it is not a key this crate wrote.
    #[error("pseudonymisation key file {path} holds {found} bytes, expected 32")]
    KeyFileLength {
        /// The key file involved.
        path: PathBuf,
        /// The number of bytes found.
        found: u64,
    },
    /// A key file is readable or writable by group or others; the secret may already have leaked.
    #[error("pseudonymisation key file {path} has mode {mode:o}; it must be 0600 (owner only)")]
    KeyFilePermissions {
        /// The key file involved.
        path: PathBuf,
        /// The permission bits found.
        mode: u32,
    },
    /// The operating system random generator failed, so no key could be generated.
    #[error("the system random generator failed while generating a key")]
    KeyGeneration,
    /// Rotation would overwrite an already retired key under the same dated name.
    #[error("a retired key already exists at {path}; refusing to overwrite it")]
    RetiredKeyExists {
        /// The dated path that is already taken.
        path: PathBuf,
    },
}
