//! The exact (ε, δ) curve of the Gaussian mechanism without subsampling
//! (Balle & Wang 2018), used as ground truth and as the answer for q = 1.

use crate::bound::delta_in_unit_interval;
use crate::special::{exp_times_normal_cdf, normal_cdf};

/// `δ(ε) = Φ(1/(2σ) - εσ) - e^ε Φ(-1/(2σ) - εσ)` for sensitivity 1, in
/// `[0, 1]`. Where it cannot be evaluated (NaN inputs, `0 · ∞`) it is 1:
/// no guarantee, never the 0 that `NaN.max(0.0)` used to give.
pub fn analytic_gaussian_delta(noise_multiplier: f64, epsilon: f64) -> f64 {
    let sigma = noise_multiplier;
    let first = normal_cdf(0.5 / sigma - epsilon * sigma);
    delta_in_unit_interval(first - exp_times_normal_cdf(epsilon, -0.5 / sigma - epsilon * sigma))
}

/// The smallest `ε ≥ 0` with `δ(ε) ≤ delta`, by bisection (δ decreases in ε);
/// `+inf` when no ε up to 1e6 meets `delta` or the inputs are not numbers.
pub fn analytic_gaussian_epsilon(noise_multiplier: f64, delta: f64) -> f64 {
    if noise_multiplier.is_nan() || delta.is_nan() {
        return f64::INFINITY;
    }
    if analytic_gaussian_delta(noise_multiplier, 0.0) <= delta {
        return 0.0;
    }
    let mut high = 1.0;
    while analytic_gaussian_delta(noise_multiplier, high) > delta {
        high *= 2.0;
        if high > 1e6 {
            return f64::INFINITY;
        }
    }
    let mut low = 0.0;
    // 200 halvings reach the f64 resolution of any ε below 1e6.
    for _ in 0..200 {
        let middle = 0.5 * (low + high);
        if middle <= low || middle >= high {
            break;
        }
        if analytic_gaussian_delta(noise_multiplier, middle) > delta {
            low = middle;
        } else {
            high = middle;
        }
    }
    high
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_a_number_is_no_guarantee() {
        // Regression: a NaN δ went through `.max(0.0)` to δ = 0, so ε = 0.
        assert_eq!(analytic_gaussian_delta(f64::NAN, 1.0), 1.0);
        assert_eq!(analytic_gaussian_delta(1.0, f64::NAN), 1.0);
        assert_eq!(analytic_gaussian_epsilon(f64::NAN, 1e-5), f64::INFINITY);
        assert_eq!(analytic_gaussian_epsilon(1.0, f64::NAN), f64::INFINITY);
        // A noise multiplier that underflows σ² has no finite ε either.
        assert_eq!(analytic_gaussian_epsilon(1e-170, 1e-5), f64::INFINITY);
    }

    #[test]
    fn matches_published_value() {
        // Reference roots from scipy (norm.cdf + brentq, xtol 1e-14). Our erfc
        // and bisection agree to ~1e-12; 1e-9 leaves room for scipy's own error.
        for (sigma, delta, expected) in [
            (1.0, 1e-5, 4.377178095681225),
            (2.0, 1e-6, 2.2540846502197422),
        ] {
            let epsilon = analytic_gaussian_epsilon(sigma, delta);
            assert!(
                (epsilon - expected).abs() < 1e-9,
                "σ={sigma}: {epsilon} vs {expected}"
            );
        }
    }
}
