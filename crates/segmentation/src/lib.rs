//! Shared customer segments without pooling customers: federated
//! differentially private k-means (Lloyd) and RFM scoring, as node-side pure
//! functions, a sans-IO coordinator state machine, and the privacy plan
//! that calibrates and prices every release before the first one.
//!
//! How a segmentation job runs (each step one additive vector per node,
//! summed by secure aggregation, noised with Veil's distributed discrete
//! Gaussian):
//!
//! 1. **Seeding** ([`seeding`]): a histogram of customers over public cells of
//!    the box, with each cell's clipped offset sum; the coordinator keeps the
//!    dense cells as a weighted coreset and seeds every k by weighted
//!    k-means++ on it.
//! 2. **Lloyd steps** ([`local_cluster_sums`]): per cluster, the sum of
//!    customers' offsets from their centroid clipped to radius `r`, and their
//!    count; the coordinator moves each centroid by `η` times its noised
//!    mean offset (FastLloyd's radius constraint and relative, damped
//!    update). Clusters whose noised count is tiny are re-seeded from the
//!    coreset.
//! 3. **Profile** ([`local_profile_sums`]): per segment the offsets, count,
//!    capped cost and label count: segment sizes, feature means, label rates
//!    and the noised cost that makes the elbow over k.
//!
//! A node answers with [`node_release`]; the coordinator is
//! [`SegmentationCoordinator`]; customers are assigned locally with
//! [`SegmentModel`]. RFM is in [`rfm`].
//!
//! This crate does not talk to the network, the ledger or the job spec
//! (`client-node`, `coordinator`, `veil-node-protocol` and `veil-job` wire the
//! `segment` job kind); it does not charge releases (it gives each release's
//! [`Release::mechanism`] for the ledgers to charge) or enforce at-most-once
//! release (the node protocol does); it writes no noise sampler
//! (`veil-dp-noise`) and no accountant (`veil-privacy-accounting`).
//!
//! # Sensitivity
//!
//! Adjacency is add/remove of one customer (all of that customer's data at
//! the one partner that holds it). Features are standardised by the public
//! scaling (fixed from the feature formulas) and clamped to `[-B, B]^d`;
//! centroids and the seeding cells' centres are public when a release is
//! computed, so a customer's contribution depends only on its own data.
//!
//! * **Lloyd step** at centroids `c_1..c_k`. A customer `x` is assigned to
//!   its nearest centroid `c_j` and contributes `u = clip(x − c_j, r)` (ℓ2
//!   clipping to radius `r`) to cluster `j`'s offset sum and 1 to its count,
//!   and nothing to any other cluster. Adding or removing it changes one
//!   block `(Σu, count)` of the node's vector by `(u, 1)`, so the ℓ2
//!   sensitivity of the vector (and of the sum over nodes) is
//!   `Δ = √(r² + 1)`, independent of `B`, `d` and `k`.
//! * **Seeding** over public cells with centres `a_1..a_M`: the same with
//!   `u = clip(x − a_cell, r_seed)`: `Δ = √(r_seed² + 1)`.
//! * **Profile** at the final centroids: offsets `u` (≤ `r`), count 1,
//!   capped cost `min(‖x − c_j‖², D²)/D² ≤ 1` and, with a label, the label
//!   (0 or 1), all in one block: `Δ = √(r² + 2)`, or `√(r² + 3)` with a label.
//! * **RFM histograms**: one count in one bin of each of the three
//!   histograms: `Δ = √3`.
//!
//! **Quantisation.** Each customer's contribution is truncated towards zero
//! to whole steps of `γ = 2^-m` before summing, which never increases its
//! norm, so the integer vector's sensitivity is at most `Δ/γ`. The ledgers
//! charge the `veil_privacy_accounting::DistributedDiscreteGaussian` mechanism with
//! clip norm `Δ`, granularity `γ`, the vector's length `n` and rounding
//! `β = 0`, whose sensitivity bound `Δ/γ + √n` covers this (Kairouz, Liu,
//! Steinke 2021, with their `τ` correction for sums of discrete Gaussians).
//!
//! **Noise and composition.** Every node adds `N_Z(0, σ_i²)` to release `i`;
//! with at least `t` nodes' noise in each sum, release `i` is the
//! distributed discrete Gaussian with noise multiplier
//! `z = √t·σ_i / (Δ_i/γ_i + √n_i)`, the same `z` for every release of the
//! job. [`SegmentationConfig::plan`] composes all releases, one seeding plus
//! `iterations + 1` per k, with the RDP accountant of `veil-privacy-accounting`
//! and calibrates `z` so the composed ε (at the job's δ) is at most the
//! budget: the ε of the plan is per partner for the whole job. All
//! coordinator decisions (dense cells, tiny clusters, re-seeding,
//! k-means++ on the coreset, cut points) read only noised sums:
//! post-processing, free of charge.

#![forbid(unsafe_code)]

pub mod baseline;
mod config;
mod coordinator;
mod error;
mod model;
mod node;
mod points;
mod release;
pub mod rfm;
pub mod seeding;
pub mod simulate;

pub use config::{CandidateLayout, MAX_CANDIDATES, SeedingConfig, SegmentationConfig};
pub use coordinator::{
    ClusteringOutcome, SegmentProfile, SegmentationCoordinator, TINY_CLUSTER_NOISE_DEVIATIONS,
};
pub use error::SegmentationError;
pub use model::{Assignment, SegmentModel};
pub use node::{Request, local_cluster_sums, local_profile_sums, node_release};
pub use points::{Points, kmeans_cost};
pub use release::{
    MAX_GRANULARITY_EXPONENT, PrivacyPlan, Release, ReleaseKind, SegmentationPrivacy,
};
