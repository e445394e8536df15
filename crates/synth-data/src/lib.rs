//! Deterministic synthetic customer transaction logs for several partners, for demos, tests
//! and benchmarks of the federated pipeline.
//!
//! Each customer has a latent engagement level and a latent churn hazard. Purchases follow a
//! seasonal Poisson process whose rate grows with engagement and is bursty from one 45-day
//! period to the next. A customer who churns first fades out over the partner's
//! disengagement period, then stops buying, and may be won back after a pause (several
//! times), so a quiet spell is a strong but not certain sign of churn. The churn hazard falls
//! with engagement (how strongly differs by partner) plus individual noise. On the demo
//! partners a logistic regression on the standard features reaches a pooled holdout AUC of
//! about 0.80–0.85 (checked in `tests/churn.rs`), and a model trained on the smallest partner
//! alone does worse on the others than the pooled one. Partners differ in size, churn rate,
//! spend level, purchase rate, seasonality and timestamp format.
//!
//! [`write_buy_till_you_die_files`] writes partners of another kind: purchase days from
//! BG/NBD, spend from Gamma-Gamma and categories with planted co-purchase pairs, all with
//! known parameters, for the lifetime-value and basket-rules jobs' recovery tests.
//!
//! What it does *not* do: it reads nothing and models no real population; it is test and demo
//! data only, so its randomness is a seeded ChaCha stream, never a source for keys, masks or
//! noise (those live in `veil-secure-aggregation` and `veil-privacy-accounting`). Parsing the files it writes is
//! `veil-behaviour-features`' job.

mod buy_till_you_die;
mod generate;
mod profile;

pub use buy_till_you_die::{
    BasketPlan, BuyTillYouDieConfig, BuyTillYouDiePartners, write_buy_till_you_die_files,
};
pub use generate::{CATEGORIES, write_partner_csv, write_partner_files};
pub use profile::{PartnerProfile, SynthConfig, TimestampStyle};

use std::path::PathBuf;

/// Why synthetic data could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    /// The partner index is not in the config.
    #[error("partner index {index} is out of range; the config has {n_partners} partners")]
    NoSuchPartner {
        /// The requested index.
        index: usize,
        /// How many partners the config has.
        n_partners: usize,
    },
    /// The partner name cannot be used as a file name.
    #[error("partner name '{name}' must be non-empty and use only letters, digits, '-' and '_'")]
    InvalidPartnerName {
        /// The offending name.
        name: String,
    },
    /// The date range is empty or reversed.
    #[error("synthetic data range is empty: start {start} is not before end {end}")]
    InvalidDateRange {
        /// First day of data.
        start: chrono::NaiveDate,
        /// Last day of data.
        end: chrono::NaiveDate,
    },
    /// The basket settings cannot be drawn from.
    #[error("invalid basket plan {0}")]
    InvalidBasketPlan(String),
    /// The purchase simulation refused its settings.
    #[error("simulating purchases: {0}")]
    Simulation(String),
    /// Writing the output failed.
    #[error("cannot write synthetic data{}: {source}", path.as_ref().map(|path| format!(" to {}", path.display())).unwrap_or_default())]
    Io {
        /// The file being written, when writing to a file.
        path: Option<PathBuf>,
        /// The underlying IO error.
        source: std::io::Error,
    },
}
