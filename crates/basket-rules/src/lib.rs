//! Federated, differentially private frequent itemsets and association rules
//! (the library of the `basket-rules` job kind).
//!
//! - **Baskets** ([`Baskets::build`]): from (customer, day, item) rows, one
//!   basket per customer in a window or per purchase day, over a public
//!   [`Vocabulary`]; rows with other items are rejects. The vocabulary is
//!   declared, or discovered by a DP heavy-hitters release over hashed items
//!   ([`heavy_hitters`]).
//! - **Level-wise mining**: the coordinator's sans-IO [`Miner`] holds the
//!   public candidates of level `L`; each node computes [`local_counts`] (an
//!   additive vector; each customer's incidences are capped, a uniform sample
//!   when there are more, so the sensitivity is [`level_sensitivity`]), adds
//!   its noise ([`ReleaseNoise::add_node_noise`]), and the secure sum goes
//!   back to [`Miner::handle_level_counts`], which keeps the itemsets whose
//!   noised support passes and returns [`Next::Candidates`] for level `L + 1`
//!   (from noised supports only) or [`Next::Done`].
//! - **Noise and cost** ([`NoisePlan`]): per-node discrete Gaussian σ for
//!   every level, calibrated together to a per-partner (ε, δ) and charged as
//!   `DpEvent`s, with `veil-dp-noise` and `veil-privacy-accounting`.
//! - **Rules** ([`association_rules`]): support, confidence and lift as
//!   mlxtend defines them, each with an interval for the DP noise; top N by
//!   lift; CSV.
//! - **Synthetic data** ([`simulate`]): planted co-purchase pairs across
//!   non-IID partners.
//!
//! What this crate does not do: no IO beyond writing CSV to a writer the
//! caller passes, no clock, no async, no networking, no masking (secure
//! aggregation is `veil-secure-aggregation`; the node and coordinator wiring of the job
//! kind, the ledgers and the job spec live in `client-node`, `coordinator`,
//! `veil-node-protocol` and `veil-job`). It samples noise only through
//! `veil-dp-noise`, from a generator the node passes in.

#![forbid(unsafe_code)]

mod baskets;
mod counting;
mod error;
pub mod heavy_hitters;
mod miner;
mod privacy;
mod rules;
pub mod simulate;
mod vocabulary;

pub use baskets::{BasketConfig, BasketGrouping, BasketReport, Baskets, PurchaseRow};
pub use counting::{Candidates, Itemset, Sensitivity, level_sensitivity, local_counts};
pub use error::RulesError;
pub use miner::{FrequentItemset, FrequentItemsets, LevelAggregate, Miner, MinerConfig, Next};
pub use privacy::{MIN_NODE_SIGMA, NoisePlan, PrivacyTarget, ReleaseNoise};
pub use rules::{
    Estimate, Rule, RuleConfig, association_rules, itemset_labels, write_itemsets_csv,
    write_rules_csv,
};
pub use vocabulary::{ItemId, Vocabulary};
