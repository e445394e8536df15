//! Customer lifetime value the way the "buy till you die" literature and the
//! `lifetimes` package compute it: customer summaries from dated transactions,
//! BG/NBD for purchase counts and Gamma-Gamma for spend (Fader, Hardie and Lee
//! 2005), maximum-likelihood fits, per-customer predictions and discounted
//! lifetime value; and the federated route, where each node releases a binned
//! histogram of its customers' summaries (an additive vector for secure
//! aggregation, noised with discrete Gaussian noise for customer-level DP) and
//! the coordinator fits the models to the aggregate.
//!
//! Time is measured in days throughout, so α is in days and horizons are days.
//! Checked against `lifetimes` 0.11.3 by `tests/reference.rs` on the table
//! `reference/generate_reference.py` made.
//!
//! What this crate does *not* do: it reads no files and talks to nobody (the
//! node's data loading is `veil-partner-data`, the secure sum is
//! `veil-secure-aggregation`), it samples noise only through `veil-dp-noise` and does not
//! decide how much (calibration and charging are `veil-privacy-accounting` and the
//! job's privacy rules), and it knows nothing of jobs, wire messages or model
//! files (the `lifetime-value` job kind wires it in). [`simulate`] is test and
//! benchmark data, not a source of randomness for anything private.
//!
//! Entry points: [`summarise_transactions`] (or
//! [`CustomerSummary::from_purchases`] per customer); [`fit_bg_nbd`] and
//! [`fit_gamma_gamma`] on exact summaries; [`local_histogram`],
//! [`add_histogram_noise`] and [`fit_from_histogram`] for the federated route;
//! predictions are methods of [`BgNbdParameters`] and
//! [`GammaGammaParameters`].
//!

#![doc = include_str!("../docs/sensitivity.md")]
#![forbid(unsafe_code)]

mod bg_nbd;
mod error;
mod gamma_gamma;
mod grouped;
mod histogram;
mod optimise;
pub mod simulate;
mod special;
mod summary;

pub use bg_nbd::{BgNbdParameters, fit_bg_nbd};
pub use error::LifetimeValueError;
pub use gamma_gamma::{ClvConfig, GammaGammaParameters, fit_gamma_gamma};
pub use histogram::{
    BinningConfig, FittedCounts, FittedHistogram, HISTOGRAM_L1_SENSITIVITY,
    HISTOGRAM_L2_SENSITIVITY, HistogramBinning, HistogramFit, add_histogram_noise,
    fit_from_histogram, local_histogram,
};
pub use summary::{CustomerSummary, Purchase, Transaction, summarise_transactions};
