//! The Gaussian f-DP refinement of the one-run audit: Mahloujifar, Melis and
//! Chaudhuri, "Auditing f-Differential Privacy in One Run" (ICML 2025,
//! arXiv:2410.22235), instantiated with the Gaussian trade-off curves
//! `G_μ(x) = Φ(Φ⁻¹(1 - x) - μ)` of Dong, Roth and Su's μ-GDP.
//!
//! # The test
//!
//! For a claimed trade-off curve the paper bounds, by a backward recursion
//! over the number of correct guesses, how likely `v` correct out of `r`
//! guesses among `m` canaries can be. With the significance `τ = 1 -
//! confidence` it starts from `r_v = τ v / m`, `h_v = τ (r - v) / m` and, for
//! `i = v - 1` down to `0`,
//!
//! ```text
//! h_i = max(h_{i+1}, B⁻¹(r_{i+1})),   B⁻¹(x) = Φ(Φ⁻¹(x) - μ)
//! r_i = min(r_{i+1} + i / (r - i) · (h_i - h_{i+1}), 1)
//! ```
//!
//! and rejects the claim when `r_0 + h_0 > r / m`. `B⁻¹` is the inverse of
//! the "blow-up" function of μ-GDP (for membership, alphabet size k = 2). We
//! implement it as the authors' reference implementation does
//! (`audit_rh_with_cap` in Meta's `privacy_guard`) and as DeepMind's
//! `jax_privacy.auditing` transcribes it, including the cap of `r_i` at 1
//! and the early stop once `h` stops changing (after which nothing changes).
//!
//! # The bound
//!
//! Rejection is monotone in μ (a larger μ is a weaker claim, `B⁻¹` smaller),
//! so bisection finds the largest rejected μ; its ε at the audit's δ is
//! Dong, Roth and Su's Corollary 2.13, `δ(ε) = Φ(-ε/μ + μ/2) - e^ε Φ(-ε/μ -
//! μ/2)`, which is the analytic Gaussian curve with noise multiplier `1/μ`.
//! We take it from `veil-privacy-accounting`, so an audit's lower bound and the
//! accountant's upper bound are converted by one and the same function.
//!
//! What it means: "not μ-GDP" is a statement about the whole trade-off curve.
//! Turning it into "not (ε, δ)-DP" assumes the mechanism's curve is
//! Gaussian-shaped, as it is for DP-SGD and the Gaussian mechanism. For an
//! arbitrary mechanism only [`crate::epsilon_lower_bound`] is assumption-free.

use veil_privacy_accounting::analytic_gaussian_epsilon;

use crate::error::AuditError;
use crate::input::{AuditLevel, GuessCounts};
use crate::result::{BoundMethod, EpsilonLowerBound};
use crate::special::{largest_rejected, normal_cdf, normal_quantile};

/// The largest μ searched. For every `x < 1` in f64, `Φ⁻¹(x) <= 8.3`, so at
/// μ = 64 `B⁻¹(x) <= Φ(-55)`, which is 0 in f64: `h` never moves, `r + h`
/// stays at `τ r / m < r / m`, and no claim from here on is rejected.
const MU_SEARCH_CEILING: f64 = 64.0;

/// Relative width at which the bisection over μ stops.
const MU_RELATIVE_TOLERANCE: f64 = 1e-12;

/// The inverse blow-up function of μ-GDP, `Φ(Φ⁻¹(x) - μ)`, on `[0, 1]`.
fn inverse_blow_up(x: f64, mu: f64) -> f64 {
    if x >= 1.0 {
        return 1.0;
    }
    if x <= 0.0 {
        return 0.0;
    }
    normal_cdf(normal_quantile(x) - mu)
}

/// Whether the claim "μ-GDP" is rejected for `counts` at `level` (the test
/// in the module documentation).
pub(crate) fn rejects_gaussian(counts: &GuessCounts, mu: f64, level: &AuditLevel) -> bool {
    let canaries = counts.canaries() as f64;
    let guesses = counts.guesses();
    let correct = counts.correct();
    let significance = level.significance();
    let mut r = significance * correct as f64 / canaries;
    let mut h = significance * (guesses - correct) as f64 / canaries;
    for i in (0..correct).rev() {
        let h_next = h.max(inverse_blow_up(r, mu));
        if h_next == h {
            break;
        }
        // i < correct <= guesses, so the denominator is at least 1.
        r = (r + i as f64 / (guesses - i) as f64 * (h_next - h)).min(1.0);
        h = h_next;
    }
    r + h > guesses as f64 / canaries
}

/// The Gaussian f-DP lower bound: the largest μ for which μ-GDP is rejected
/// at `level`, and its ε at the level's δ.
///
/// Needs δ > 0 ([`AuditError::GaussianNeedsPositiveDelta`]): no Gaussian
/// mechanism is (ε, 0)-DP.
pub fn gaussian_epsilon_lower_bound(
    counts: &GuessCounts,
    level: &AuditLevel,
) -> Result<EpsilonLowerBound, AuditError> {
    if level.delta() <= 0.0 {
        return Err(AuditError::GaussianNeedsPositiveDelta);
    }
    let mu_lower = largest_rejected_mu(counts, level);
    let epsilon_lower = if mu_lower > 0.0 {
        let epsilon = analytic_gaussian_epsilon(1.0 / mu_lower, level.delta());
        // The conversion answers +inf when no ε up to 1e6 meets δ; for a
        // lower bound that would overclaim, so report the largest finite ε
        // it could have confirmed instead. NaN (impossible for these inputs)
        // would be no evidence.
        if epsilon.is_nan() {
            0.0
        } else {
            epsilon.min(1e6)
        }
    } else {
        0.0
    };
    Ok(EpsilonLowerBound::new(
        BoundMethod::GaussianFdp,
        epsilon_lower,
        Some(mu_lower),
        counts,
        level,
    ))
}

fn largest_rejected_mu(counts: &GuessCounts, level: &AuditLevel) -> f64 {
    if counts.canaries() == 0 {
        return 0.0;
    }
    largest_rejected(
        |parameter| rejects_gaussian(counts, parameter, level),
        MU_SEARCH_CEILING,
        MU_RELATIVE_TOLERANCE,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_positive_delta() {
        let counts = GuessCounts::new(1000, 100, 90).unwrap();
        let level = AuditLevel::new(0.0, 0.95).unwrap();
        assert_eq!(
            gaussian_epsilon_lower_bound(&counts, &level),
            Err(AuditError::GaussianNeedsPositiveDelta)
        );
    }

    #[test]
    fn chance_level_guesses_reject_nothing() {
        let level = AuditLevel::new(1e-5, 0.95).unwrap();
        for (m, r, v) in [(1000, 100, 50), (1000, 1000, 480), (10, 0, 0), (0, 0, 0)] {
            let counts = GuessCounts::new(m, r, v).unwrap();
            let bound = gaussian_epsilon_lower_bound(&counts, &level).unwrap();
            assert_eq!(bound.epsilon_lower, 0.0, "m={m} r={r} v={v}");
            assert_eq!(bound.gaussian_mu_lower, Some(0.0));
        }
    }

    #[test]
    fn rejection_is_monotone_in_mu() {
        // The bisection relies on it: once a claim passes, weaker ones pass.
        let level = AuditLevel::new(1e-5, 0.95).unwrap();
        let counts = GuessCounts::new(1000, 200, 180).unwrap();
        let mut previous = true;
        for step in 0..400 {
            let rejected = rejects_gaussian(&counts, step as f64 * 0.02, &level);
            assert!(
                previous || !rejected,
                "rejected again at μ = {}",
                step as f64 * 0.02
            );
            previous = rejected;
        }
    }
}
