//! The transaction log, labels and per-customer behaviour features.
//!
//! A partner's `client-node` uses this crate to turn its de-identified [`TransactionLog`] (read
//! by `veil-partner-data`, the one ingestion path) into model rows:
//! [`build_examples`] and [`build_scoring_rows`] compute the features documented in
//! [`features`] and the labels documented in [`labels`], [`FeatureSums`] and [`Scaling`] give
//! a federated standardisation, and [`split_holdout`] a stable train/holdout split.
//! [`create_owner_only`] creates every file holding partner rows (here and in the crates
//! above) with mode `0o600`.
//!
//! What it does *not* do: it trains no model (`veil-models`), adds no noise and masks nothing
//! (`veil-secure-aggregation`, `veil-privacy-accounting`), does no pseudonymisation or PII scanning (`veil-de-identification`),
//! and sends nothing over the network (`client-node`). Customer ids stay as given; keeping them
//! inside the node is the caller's job.

pub mod features;
pub mod ingest;
pub mod labels;
pub mod owner_only;
pub mod scaling;
pub mod split;
pub mod timestamp;

pub use features::{
    CustomerRow, FeatureName, FeatureSpec, UnknownFeatureError, build_examples, build_scoring_rows,
};
pub use ingest::{
    ColumnMapping, CsvSource, CustomerProfile, Gender, REDACTED, RowError, Transaction,
    TransactionLog, WHOLE_RECORD_COLUMN, parse_amount,
};
pub use labels::{LabelSpec, TaskKind, UnknownTaskError};
pub use owner_only::{create_owner_only, create_owner_only_dir_all};
pub use scaling::{FeatureError, FeatureSums, Scaling};
pub use split::split_holdout;
pub use timestamp::{TimestampError, parse_timestamp};
