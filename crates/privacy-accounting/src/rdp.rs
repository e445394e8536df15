//! Rényi-DP accountant for the Poisson-subsampled Gaussian mechanism (Mironov,
//! Talwar, Zhang 2019) and the RDP→(ε, δ) conversion of Balle et al. 2020.

use crate::bound::epsilon_at_least_zero;
use crate::special::{SignedLog, log_add, log_erfc};

/// Orders at which RDP is evaluated: dp-accounting's default grid, which is
/// dense where the optimum usually sits (1 < α < 11) and sparse beyond.
pub fn default_orders() -> Vec<f64> {
    let mut orders: Vec<f64> = (1..100).map(|step| 1.0 + f64::from(step) / 10.0).collect();
    orders.extend((11..64).map(f64::from));
    orders.extend([128.0, 256.0, 512.0, 1024.0]);
    orders
}

/// Beyond this many series terms a fractional order is treated as diverged and
/// reported as `+inf` (never used for ε), instead of looping forever.
const MAX_FRACTIONAL_SERIES_TERMS: usize = 10_000;

/// How the generalised binomial coefficients of a fractional order are summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FractionalCoefficients {
    /// Keep the sign of `C(α, i)` for `i > α`: the exact series (Mironov et al. §3.3).
    Signed,
    /// Use `|C(α, i)|`, as dp-accounting 0.6.0 does: a valid but looser upper bound.
    Absolute,
}

/// RDP of one step of the Poisson-subsampled Gaussian at order `order > 1`,
/// for add/remove adjacency and sensitivity 1. Returns `+inf` if the series
/// cannot be evaluated (or any input is NaN), which the conversion then ignores.
pub fn rdp_poisson_subsampled_gaussian(
    sampling_rate: f64,
    noise_multiplier: f64,
    order: f64,
    coefficients: FractionalCoefficients,
) -> f64 {
    if sampling_rate.is_nan() || noise_multiplier.is_nan() || order.is_nan() {
        return f64::INFINITY;
    }
    if sampling_rate <= 0.0 {
        return 0.0;
    }
    if sampling_rate >= 1.0 {
        return epsilon_at_least_zero(order / (2.0 * noise_multiplier * noise_multiplier));
    }
    let log_a = if order.fract() == 0.0 && order <= 1e6 {
        log_a_integer(sampling_rate, noise_multiplier, order)
    } else {
        log_a_fractional(sampling_rate, noise_multiplier, order, coefficients)
    };
    // Rounding can leave ln(A) a hair below 0 for tiny q; RDP is never
    // negative. A NaN (from inf − inf when σ² underflows) is no bound: +inf,
    // never the 0 that `f64::max` would make of it.
    epsilon_at_least_zero(log_a / (order - 1.0))
}

/// `ln(A_α)` for integer α: a finite binomial sum, done in log space because
/// `exp((k²-k)/(2σ²))` overflows long before the sum does.
fn log_a_integer(sampling_rate: f64, noise_multiplier: f64, order: f64) -> f64 {
    let log_q = sampling_rate.ln();
    let log_one_minus_q = (-sampling_rate).ln_1p();
    let variance = noise_multiplier * noise_multiplier;
    let mut log_a = f64::NEG_INFINITY;
    let mut log_binomial = 0.0_f64;
    let mut k = 0.0_f64;
    while k <= order {
        if k > 0.0 {
            log_binomial += ((order - k + 1.0) / k).ln();
        }
        let log_term = log_binomial
            + k * log_q
            + (order - k) * log_one_minus_q
            + (k * k - k) / (2.0 * variance);
        log_a = log_add(log_a, log_term);
        k += 1.0;
    }
    log_a
}

/// `ln(A_α)` for fractional α as `A0 + A1`, the integrals below and above
/// `z0`. Terms with `i > α` have generalised binomial coefficients of
/// alternating sign; `coefficients` chooses whether to keep that sign.
fn log_a_fractional(
    sampling_rate: f64,
    noise_multiplier: f64,
    order: f64,
    coefficients: FractionalCoefficients,
) -> f64 {
    let log_q = sampling_rate.ln();
    let log_one_minus_q = (-sampling_rate).ln_1p();
    let variance = noise_multiplier * noise_multiplier;
    let z0 = variance * (1.0 / sampling_rate - 1.0).ln() + 0.5;
    let erfc_scale = std::f64::consts::SQRT_2 * noise_multiplier;
    let mut a0 = SignedLog::ZERO;
    let mut a1 = SignedLog::ZERO;
    let mut log_binomial = 0.0_f64;
    let mut binomial_negative = false;
    let mut previous = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    for term_index in 0..MAX_FRACTIONAL_SERIES_TERMS {
        let i = term_index as f64;
        if term_index > 0 {
            // C(α, i) = C(α, i-1) * (α - i + 1) / i; the factor is negative once i > α + 1.
            let factor = (order - i + 1.0) / i;
            log_binomial += factor.abs().ln();
            binomial_negative ^= factor < 0.0;
        }
        let j = order - i;
        let log_s0 = log_binomial
            + i * log_q
            + j * log_one_minus_q
            + (i * i - i) / (2.0 * variance)
            + 0.5_f64.ln()
            + log_erfc((i - z0) / erfc_scale);
        let log_s1 = log_binomial
            + j * log_q
            + i * log_one_minus_q
            + (j * j - j) / (2.0 * variance)
            + 0.5_f64.ln()
            + log_erfc((z0 - j) / erfc_scale);
        let negative = binomial_negative && coefficients == FractionalCoefficients::Signed;
        a0 = a0.add(negative, log_s0);
        a1 = a1.add(negative, log_s1);
        let total = a0.add(a1.negative, a1.log_magnitude);
        if total.log_magnitude.is_nan() || total.log_magnitude == f64::INFINITY {
            // Terms overflowed (σ² underflowing makes them +inf); no later
            // term can bring the sum back, so stop now instead of looping.
            return f64::INFINITY;
        }
        let shrinking = log_s0 < previous.0 && log_s1 < previous.1;
        if shrinking && log_s0.max(log_s1) < total.log_magnitude - 30.0 {
            if total.negative {
                // A_α ≥ 1 mathematically; a negative sum means rounding won, so
                // refuse to report this order rather than report nonsense.
                return f64::INFINITY;
            }
            return total.log_magnitude;
        }
        previous = (log_s0, log_s1);
    }
    f64::INFINITY
}

/// ε for a given δ from an RDP curve, with the improved conversion of Balle
/// et al. 2020 (Theorem 21), exactly as dp-accounting's `compute_epsilon`.
/// Returns `(epsilon, optimal_order)`.
/// A δ outside `(0, 1)` (or NaN) has no conversion: the result is `+inf`.
pub fn epsilon_from_rdp(orders: &[f64], rdp: &[f64], delta: f64) -> (f64, f64) {
    RdpConversion::new(orders, delta).epsilon(rdp)
}

/// The conversion of [`epsilon_from_rdp`] for fixed orders and δ, with each
/// order's terms that do not depend on the RDP curve computed once. A chart
/// of ε after each of many rounds converts one curve per point: with this
/// each conversion costs an addition and a comparison per order instead of
/// three logarithms and an exponential, and gives the same bits.
#[derive(Debug, Clone, PartialEq)]
pub struct RdpConversion {
    /// The δ converted at; outside `(0, 1)` every conversion is `+inf`.
    delta: f64,
    /// The orders, as given.
    orders: Vec<f64>,
    /// Per order `ln(1 − 1/α)`, or `None` where the bound is numerically
    /// unstable (α ≤ 1.01, never the best there).
    offsets: Vec<Option<f64>>,
    /// Per order `ln(δα)/(α − 1)`.
    penalties: Vec<f64>,
    /// The Pinsker-style shortcut (`δ² + expm1(−D) > 0`) can only hold for
    /// a divergence below `−ln(1 − δ²)`; above twice that (a margin far
    /// beyond any rounding of `expm1`) it is not evaluated.
    pinsker_limit: f64,
}

impl RdpConversion {
    /// The conversion at `delta` for curves over `orders`.
    pub fn new(orders: &[f64], delta: f64) -> Self {
        let offsets = orders
            .iter()
            .map(|&order| (order > 1.01).then(|| (-1.0 / order).ln_1p()))
            .collect();
        let penalties = orders
            .iter()
            .map(|&order| (delta * order).ln() / (order - 1.0))
            .collect();
        Self {
            delta,
            orders: orders.to_vec(),
            offsets,
            penalties,
            pinsker_limit: 2.0 * -(-(delta * delta)).ln_1p(),
        }
    }

    /// The orders this conversion takes curves over.
    pub fn orders(&self) -> &[f64] {
        &self.orders
    }

    /// The δ this conversion is at.
    pub fn delta(&self) -> f64 {
        self.delta
    }

    /// `(epsilon, optimal_order)` of the curve `rdp` (one value per order).
    pub fn epsilon(&self, rdp: &[f64]) -> (f64, f64) {
        let delta = self.delta;
        let mut best = (f64::INFINITY, f64::NAN);
        if !(delta > 0.0 && delta < 1.0) {
            // A negative δ would pass the Pinsker test below (δ² > 0) and give 0.
            return best;
        }
        for (((&order, &divergence), offset), penalty) in self
            .orders
            .iter()
            .zip(rdp)
            .zip(&self.offsets)
            .zip(&self.penalties)
        {
            if !divergence.is_finite() || divergence < 0.0 {
                continue;
            }
            let epsilon = if divergence < self.pinsker_limit
                && delta * delta + (-divergence).exp_m1() > 0.0
            {
                // Pinsker-style bound: the divergence is so small δ alone covers it.
                0.0
            } else if let Some(offset) = offset {
                divergence + offset - penalty
            } else {
                // The bound is numerically unstable as α → 1 and never the best there.
                f64::INFINITY
            };
            // A NaN ε fails `<`, so it is skipped like a diverged order.
            if epsilon < best.0 {
                best = (epsilon, order);
            }
        }
        (epsilon_at_least_zero(best.0), best.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractional_series_at_an_integer_order_matches_the_binomial_sum() {
        // At integer α the generalised coefficients vanish for i > α, so both
        // formulas are the same quantity. 1e-9 relative allows for the erfc
        // split and log-space summation differing in rounding.
        for &(q, sigma, order) in &[(0.01, 1.1, 5.0), (0.1, 0.8, 3.0), (0.3, 2.0, 12.0)] {
            let integer = log_a_integer(q, sigma, order);
            let fractional = log_a_fractional(q, sigma, order, FractionalCoefficients::Signed);
            assert!(
                (integer - fractional).abs() < 1e-9 * integer.abs().max(1e-3),
                "{q} {sigma} {order}: {integer} vs {fractional}"
            );
        }
    }

    /// The direct formula of Balle et al. 2020, as `epsilon_from_rdp` wrote
    /// it before its per-order terms were computed once.
    fn direct_epsilon(orders: &[f64], rdp: &[f64], delta: f64) -> f64 {
        let mut best = f64::INFINITY;
        for (&order, &divergence) in orders.iter().zip(rdp) {
            if !divergence.is_finite() || divergence < 0.0 {
                continue;
            }
            let epsilon = if delta * delta + (-divergence).exp_m1() > 0.0 {
                0.0
            } else if order > 1.01 {
                divergence + (-1.0 / order).ln_1p() - (delta * order).ln() / (order - 1.0)
            } else {
                f64::INFINITY
            };
            if epsilon < best {
                best = epsilon;
            }
        }
        epsilon_at_least_zero(best)
    }

    proptest::proptest! {
        #[test]
        fn signed_fractional_orders_never_exceed_the_absolute_value_variant(
            q in 0.001f64..0.5, sigma in 0.5f64..5.0, tenths in 11u32..110,
        ) {
            let order = f64::from(tenths) / 10.0 + 0.05;
            let signed = rdp_poisson_subsampled_gaussian(q, sigma, order, FractionalCoefficients::Signed);
            let absolute = rdp_poisson_subsampled_gaussian(q, sigma, order, FractionalCoefficients::Absolute);
            // The absolute variant only turns subtracted terms into added ones.
            // 1e-12 relative covers log-space rounding when no term is negative.
            proptest::prop_assert!(signed <= absolute * (1.0 + 1e-12) + 1e-15, "{} > {}", signed, absolute);
        }

        /// The precomputed conversion gives the direct formula's bits, for
        /// curves from far below the Pinsker shortcut's threshold to far above.
        #[test]
        fn the_precomputed_conversion_is_the_direct_formula_bit_for_bit(
            log_scale in -30.0f64..3.0, slopes in proptest::collection::vec(0.0f64..2.0, 156),
            log_delta in -12.0f64..-0.01,
        ) {
            let orders = default_orders();
            let delta = 10f64.powf(log_delta);
            let rdp: Vec<f64> = orders.iter().zip(&slopes)
                .map(|(order, slope)| 10f64.powf(log_scale) * order * slope)
                .collect();
            let conversion = RdpConversion::new(&orders, delta);
            proptest::prop_assert_eq!(
                conversion.epsilon(&rdp).0.to_bits(),
                direct_epsilon(&orders, &rdp, delta).to_bits()
            );
        }

        #[test]
        fn rdp_is_non_decreasing_in_the_order(q in 0.001f64..0.5, sigma in 0.5f64..5.0) {
            let orders = default_orders();
            let values: Vec<f64> = orders.iter()
                .map(|&order| rdp_poisson_subsampled_gaussian(q, sigma, order, FractionalCoefficients::Signed))
                .collect();
            for pair in values.windows(2) {
                if let [lower, higher] = pair
                    && lower.is_finite()
                    && higher.is_finite()
                {
                    // Rényi divergence is monotone in α; 1e-9 relative is rounding slack.
                    proptest::prop_assert!(*higher >= *lower * (1.0 - 1e-9), "{} then {}", lower, higher);
                }
            }
        }
    }

    #[test]
    fn underflowing_noise_gives_infinite_rdp_not_zero() {
        // Regression: σ = 1e-160 makes σ² subnormal, every binomial term +inf,
        // ln(A) = inf - inf = NaN, and `NaN.max(0.0)` reported RDP 0.
        for order in [2.0, 3.0, 32.0, 1.5, 10.5] {
            for coefficients in [
                FractionalCoefficients::Signed,
                FractionalCoefficients::Absolute,
            ] {
                let value = rdp_poisson_subsampled_gaussian(0.5, 1e-160, order, coefficients);
                assert_eq!(value, f64::INFINITY, "order {order} {coefficients:?}");
            }
        }
        assert_eq!(
            rdp_poisson_subsampled_gaussian(1.0, 1e-170, 2.0, FractionalCoefficients::Signed),
            f64::INFINITY
        );
    }

    #[test]
    fn not_a_number_inputs_give_infinite_rdp() {
        let cases = [
            (f64::NAN, 1.0, 2.0),
            (0.1, f64::NAN, 2.0),
            (0.1, 1.0, f64::NAN),
        ];
        for (q, sigma, order) in cases {
            let value =
                rdp_poisson_subsampled_gaussian(q, sigma, order, FractionalCoefficients::Signed);
            assert_eq!(value, f64::INFINITY, "{q} {sigma} {order}");
        }
    }

    #[test]
    fn conversion_fails_closed() {
        let orders = [2.0, 3.0];
        // Every order diverged or not a number: no order gives a bound.
        assert_eq!(
            epsilon_from_rdp(&orders, &[f64::NAN, f64::INFINITY], 1e-5).0,
            f64::INFINITY
        );
        // A δ outside (0, 1) used to give 0 through the Pinsker shortcut.
        for delta in [-1.0, 0.0, 1.0, f64::NAN] {
            assert_eq!(
                epsilon_from_rdp(&orders, &[1e-12, 1e-12], delta).0,
                f64::INFINITY,
                "δ = {delta}"
            );
        }
    }

    #[test]
    fn full_batch_gaussian_has_the_closed_form() {
        let value = rdp_poisson_subsampled_gaussian(1.0, 2.0, 3.0, FractionalCoefficients::Signed);
        // α / (2σ²) = 3/8 exactly representable.
        assert_eq!(value, 0.375);
    }
}
