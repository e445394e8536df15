//! The result an audit reports: the lower bound together with every input
//! needed to recompute it, serialisable for JSON output and audit logs.

use serde::Serialize;

use crate::input::{AuditLevel, GuessCounts};

/// Which analysis turned the guesses into a bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BoundMethod {
    /// Steinke, Nasr and Jagielski (NeurIPS 2023), Theorem 1: holds for every
    /// (ε, δ)-DP mechanism, with no assumption on its shape.
    OneRun,
    /// Mahloujifar, Melis and Chaudhuri (ICML 2025) with Gaussian trade-off
    /// curves: tighter, but it rejects "μ-GDP", so the ε it reports is a lower
    /// bound only for mechanisms whose privacy is Gaussian-shaped (DP-SGD,
    /// the Gaussian mechanism). See [`crate::gaussian_epsilon_lower_bound`].
    GaussianFdp,
}

/// A lower bound on ε and what it was computed from.
///
/// Reading it: with probability at least `confidence` over the random
/// inclusion of the canaries, the audited mechanism is not
/// (ε, `delta`)-DP for any ε below `epsilon_lower`. It says nothing about how
/// far above `epsilon_lower` the true ε lies.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EpsilonLowerBound {
    /// The analysis used.
    pub method: BoundMethod,
    /// The lower bound; 0 when the guesses show nothing beyond chance.
    pub epsilon_lower: f64,
    /// For [`BoundMethod::GaussianFdp`], the largest μ for which μ-GDP was
    /// rejected; `epsilon_lower` is its ε at `delta`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gaussian_mu_lower: Option<f64>,
    /// `m`: canaries randomised.
    pub canaries: u64,
    /// `r`: guesses made.
    pub guesses: u64,
    /// `v`: correct guesses.
    pub correct: u64,
    /// δ of the claim audited.
    pub delta: f64,
    /// Confidence of the bound, after any correction for choosing among
    /// several guess sets.
    pub confidence: f64,
}

impl EpsilonLowerBound {
    pub(crate) fn new(
        method: BoundMethod,
        epsilon_lower: f64,
        gaussian_mu_lower: Option<f64>,
        counts: &GuessCounts,
        level: &AuditLevel,
    ) -> Self {
        Self {
            method,
            epsilon_lower,
            gaussian_mu_lower,
            canaries: counts.canaries(),
            guesses: counts.guesses(),
            correct: counts.correct(),
            delta: level.delta(),
            confidence: level.confidence(),
        }
    }
}
