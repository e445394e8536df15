//! Special functions the accountants need (normal tails, log-space sums), kept
//! in one place so every accountant uses the same numerically careful versions.

/// Above this argument `erfc` underflows towards subnormals, so `log_erfc`
/// switches to the asymptotic expansion, which is accurate to ~1e-12 there.
const LOG_ERFC_ASYMPTOTIC_FROM: f64 = 25.0;

/// `erfc(x)` to about one ulp (FreeBSD msun via `libm`).
pub(crate) fn erfc(x: f64) -> f64 {
    libm::erfc(x)
}

/// `ln(erfc(x))`, finite for every finite `x` (no underflow to `-inf`).
pub(crate) fn log_erfc(x: f64) -> f64 {
    if x < LOG_ERFC_ASYMPTOTIC_FROM {
        return erfc(x).ln();
    }
    // erfc(x) = exp(-x^2) / (x sqrt(pi)) * (1 - 1/(2x^2) + 3/(4x^4) - 15/(8x^6) + ...).
    let inverse_square = 1.0 / (x * x);
    let series = 1.0 - 0.5 * inverse_square + 0.75 * inverse_square * inverse_square
        - 1.875 * inverse_square.powi(3)
        + 6.5625 * inverse_square.powi(4);
    -x * x - x.ln() - 0.5 * std::f64::consts::PI.ln() + series.ln()
}

/// Standard normal survival function `P(Z > z)`, accurate in the upper tail.
pub(crate) fn normal_sf(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// Standard normal CDF `P(Z <= z)`, accurate in the lower tail.
pub(crate) fn normal_cdf(z: f64) -> f64 {
    0.5 * erfc(-z / std::f64::consts::SQRT_2)
}

/// `exp(log_factor) · P(Z > z)` without overflow or `inf · 0`: privacy
/// curves multiply `e^ε` (huge) by normal tails (tiny) at large ε.
pub(crate) fn exp_times_normal_sf(log_factor: f64, z: f64) -> f64 {
    // The direct product is exact enough and cheaper while neither factor is
    // near overflow or underflow (normal_sf(30) ≈ 5e-198, e^600 ≈ 4e260).
    if log_factor < 600.0 && z < 30.0 {
        return log_factor.exp() * normal_sf(z);
    }
    (log_factor + 0.5_f64.ln() + log_erfc(z / std::f64::consts::SQRT_2)).exp()
}

/// `exp(log_factor) · P(Z <= z)`, as [`exp_times_normal_sf`].
pub(crate) fn exp_times_normal_cdf(log_factor: f64, z: f64) -> f64 {
    exp_times_normal_sf(log_factor, -z)
}

/// The `z` with `P(Z > z) <= tail_mass` (for `tail_mass` in `(0, 1/2]`), found
/// by bisection to within 40·2^-100; used to pick truncation points, where a
/// slightly larger `z` is always safe, and for the quantiles of confidence
/// intervals elsewhere in Veil.
pub fn normal_upper_quantile(tail_mass: f64) -> f64 {
    let (mut low, mut high) = (0.0_f64, 40.0_f64);
    for _ in 0..100 {
        let middle = 0.5 * (low + high);
        if normal_sf(middle) > tail_mass {
            low = middle;
        } else {
            high = middle;
        }
    }
    high
}

/// `ln(exp(a) + exp(b))` without overflow.
pub(crate) fn log_add(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        return f64::NAN;
    }
    let (larger, smaller) = if a >= b { (a, b) } else { (b, a) };
    // Both infinite ones are exact answers; `smaller - larger` would be
    // `inf - inf` = NaN, which used to reach ε as 0 (tiny noise multipliers
    // make every binomial term `+inf`).
    if larger.is_infinite() {
        return larger;
    }
    larger + (smaller - larger).exp().ln_1p()
}

/// A real number stored as sign and log-magnitude, so alternating series with
/// astronomically large terms (fractional-order RDP) can be summed keeping signs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SignedLog {
    /// Whether the value is negative.
    pub(crate) negative: bool,
    /// `ln(|value|)`; `-inf` encodes zero.
    pub(crate) log_magnitude: f64,
}

impl SignedLog {
    pub(crate) const ZERO: Self = Self {
        negative: false,
        log_magnitude: f64::NEG_INFINITY,
    };

    /// Adds `sign * exp(log_magnitude)`.
    pub(crate) fn add(self, negative: bool, log_magnitude: f64) -> Self {
        if log_magnitude == f64::NEG_INFINITY {
            return self;
        }
        if self.log_magnitude == f64::NEG_INFINITY {
            return Self {
                negative,
                log_magnitude,
            };
        }
        if log_magnitude.is_nan() || self.log_magnitude.is_nan() {
            return Self {
                negative: false,
                log_magnitude: f64::NAN,
            };
        }
        if self.negative == negative {
            return Self {
                negative,
                log_magnitude: log_add(self.log_magnitude, log_magnitude),
            };
        }
        // Opposite signs: the larger magnitude keeps its sign.
        let (larger, smaller, result_negative) = if self.log_magnitude >= log_magnitude {
            (self.log_magnitude, log_magnitude, self.negative)
        } else {
            (log_magnitude, self.log_magnitude, negative)
        };
        if larger == f64::INFINITY {
            // ∞ − ∞ (or ∞ − finite with unknown sign): the sum is unknown.
            return Self {
                negative: result_negative,
                log_magnitude: if smaller == f64::INFINITY {
                    f64::NAN
                } else {
                    f64::INFINITY
                },
            };
        }
        let ratio = (smaller - larger).exp();
        if ratio >= 1.0 {
            return Self::ZERO;
        }
        Self {
            negative: result_negative,
            log_magnitude: larger + (-ratio).ln_1p(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_erfc_is_continuous_across_the_asymptotic_switch() {
        // Both branches approximate the same function; 1e-9 relative is far
        // looser than either branch's error (~1e-12) at this argument.
        let direct = erfc(LOG_ERFC_ASYMPTOTIC_FROM - 1e-9).ln();
        let asymptotic = log_erfc(LOG_ERFC_ASYMPTOTIC_FROM);
        assert!(
            (direct - asymptotic).abs() < 1e-9 * direct.abs(),
            "{direct} vs {asymptotic}"
        );
    }

    #[test]
    fn normal_quantile_inverts_the_tail() {
        let z = normal_upper_quantile(1e-15);
        assert!(normal_sf(z) <= 1e-15);
        // The bisection stops within 1e-12 of the root, so just below it the
        // tail must already exceed the target.
        assert!(normal_sf(z - 1e-6) > 1e-15);
    }

    #[test]
    fn signed_log_cancels_exactly_and_keeps_sign() {
        let three = SignedLog::ZERO.add(false, 3.0_f64.ln());
        let minus_two = three.add(true, 5.0_f64.ln());
        assert!(minus_two.negative);
        // Two roundings in log space: 1e-12 relative is ample.
        assert!((minus_two.log_magnitude.exp() - 2.0).abs() < 1e-12);
        assert_eq!(three.add(true, 3.0_f64.ln()), SignedLog::ZERO);
    }

    #[test]
    fn infinite_log_terms_never_become_not_a_number_silently() {
        // Regression: log_add(inf, inf) was inf - inf = NaN, and the NaN
        // reached ε as 0 through f64::max.
        assert_eq!(log_add(f64::INFINITY, f64::INFINITY), f64::INFINITY);
        assert_eq!(log_add(f64::INFINITY, 2.0), f64::INFINITY);
        assert_eq!(
            log_add(f64::NEG_INFINITY, f64::NEG_INFINITY),
            f64::NEG_INFINITY
        );
        assert!(log_add(f64::NAN, 1.0).is_nan());
        // Same-sign infinite terms add to +inf; opposite-sign ones are unknown.
        let infinite = SignedLog::ZERO.add(false, f64::INFINITY);
        assert_eq!(
            infinite.add(false, f64::INFINITY).log_magnitude,
            f64::INFINITY
        );
        assert!(infinite.add(true, f64::INFINITY).log_magnitude.is_nan());
        assert_eq!(infinite.add(true, 5.0).log_magnitude, f64::INFINITY);
    }
}
