//! Veil's models: model specifications with a fixed flat parameter layout, local training with
//! burn (autodiff on the pure-Rust flex CPU backend), prediction and additive evaluation
//! statistics that can be summed across partners.
//!
//! Local training is either ordinary ([`train`]) or customer-level differentially private
//! ([`train_dp_sgd`], which clips per example and draws its noise through `veil-dp-noise`).
//!
//! This crate does not clip, noise or mask whole updates (clipping and noise live in `veil-dp-noise`,
//! masking in `veil-secure-aggregation`, budgets in `veil-privacy-accounting`, rounds in `veil-federation`), does not compute features from transactions (`veil-behaviour-features`), does not
//! describe jobs (`veil-job`), and does no IO: data arrives as in-memory row-major buffers.

mod dataset;
mod dp_sgd;
mod error;
mod evaluate;
mod network;
mod spec;
mod train;

pub use dataset::Dataset;
pub use dp_sgd::{DpSgdConfig, DpSgdOutcome, gradient_alignments, train_dp_sgd};
pub use error::ModelError;
pub use evaluate::{
    EVAL_BUCKETS, EvalStats, ExampleBounds, evaluate, evaluate_clamped, predict, predict_raw,
};
pub use network::{Network, NetworkConfig};
pub use spec::{LayerShape, MAX_PARAMETER_COUNT, ModelKind, ModelSpec, OutputKind};
pub use train::{OptimizerKind, TrainOutcome, TrainingConfig, train};
/// Re-exported for `client-node`'s demo, which still imports it from here;
/// the one implementation lives in `veil-scoring-evaluation`.
pub use veil_scoring_evaluation::exact_auc;
