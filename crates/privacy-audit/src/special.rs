//! Log-space binomial probabilities and the standard normal CDF and quantile,
//! the only special functions the audit bounds need.

/// A term this far (in natural log) below the running sum changes it by less
/// than `e^-50 ≈ 2e-22` relative; even a million such terms stay below 1e-15.
const NEGLIGIBLE_LOG_GAP: f64 = 50.0;

/// `ln(exp(a) + exp(b))` without overflow; `-inf` is the log of zero.
pub(crate) fn log_add(a: f64, b: f64) -> f64 {
    let (larger, smaller) = if a >= b { (a, b) } else { (b, a) };
    if larger == f64::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    larger + (smaller - larger).exp().ln_1p()
}

/// `ln(1 + e^x)`, accurate for both signs of `x`.
fn softplus(x: f64) -> f64 {
    if x > 0.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

/// A binomial distribution `Binomial(trials, p)` with `p = 1/(1 + e^-ε)`, the
/// accuracy of ε-randomised response, kept in log space.
pub(crate) struct Binomial {
    trials: u64,
    /// `ln p`, computed as `-softplus(-ε)` so it keeps full precision near 1.
    log_success: f64,
    /// `ln(1 - p)` = `-softplus(ε)`, finite for every finite ε.
    log_failure: f64,
    /// `ln Γ(trials + 1)`, shared by every term.
    log_gamma_trials: f64,
    /// Most likely number of successes; terms decrease away from it
    /// (the binomial is log-concave), which is what lets sums stop early.
    mode: u64,
}

impl Binomial {
    pub(crate) fn randomised_response(trials: u64, epsilon: f64) -> Self {
        let success = 1.0 / (1.0 + (-epsilon).exp());
        // floor((n + 1) p), clamped because (n + 1) p can round above n.
        let mode = (((trials + 1) as f64) * success).floor().min(trials as f64) as u64;
        Self {
            trials,
            log_success: -softplus(-epsilon),
            log_failure: -softplus(epsilon),
            log_gamma_trials: libm::lgamma(trials as f64 + 1.0),
            mode,
        }
    }

    /// `ln P[X = k]` for `k <= trials`.
    pub(crate) fn log_pmf(&self, k: u64) -> f64 {
        let log_choose = self.log_gamma_trials
            - libm::lgamma(k as f64 + 1.0)
            - libm::lgamma((self.trials - k) as f64 + 1.0);
        // `0 * ln(...)` is 0 here: both logs are finite for finite ε.
        log_choose + k as f64 * self.log_success + (self.trials - k) as f64 * self.log_failure
    }

    /// `ln P[X >= at_least]`, summing from `at_least` upwards and stopping
    /// once past the mode the terms are negligible.
    pub(crate) fn log_upper_tail(&self, at_least: u64) -> f64 {
        let mut log_sum = f64::NEG_INFINITY;
        for k in at_least..=self.trials {
            let term = self.log_pmf(k);
            log_sum = log_add(log_sum, term);
            if k > self.mode && term < log_sum - NEGLIGIBLE_LOG_GAP {
                break;
            }
        }
        log_sum
    }

    /// `ln max_{1 <= i <= v} P[v - i <= X <= v - 1] / i`: the δ coefficient of
    /// Steinke, Nasr and Jagielski's Theorem 1 (`(f(v - i) - f(v)) / i` with
    /// `f` the upper tail). `-inf` for `v = 0`, where the range is empty.
    ///
    /// Indices `i > v` need no visit: there `f(v - i) = 1`, so the ratio is
    /// `(1 - f(v)) / i`, largest at `i = v`, which is visited.
    pub(crate) fn log_delta_coefficient(&self, v: u64) -> f64 {
        let mut log_window = f64::NEG_INFINITY;
        let mut log_best = f64::NEG_INFINITY;
        for i in 1..=v {
            let k = v - i;
            let term = self.log_pmf(k);
            log_window = log_add(log_window, term);
            log_best = log_best.max(log_window - (i as f64).ln());
            // Below the mode the remaining terms shrink geometrically, so the
            // window stops growing while `i` keeps growing: the ratio can only
            // fall from here on.
            if k < self.mode && term < log_window - NEGLIGIBLE_LOG_GAP {
                break;
            }
        }
        log_best
    }
}

/// Standard normal CDF `P(Z <= z)`, accurate in the lower tail.
pub(crate) fn normal_cdf(z: f64) -> f64 {
    0.5 * libm::erfc(-z / std::f64::consts::SQRT_2)
}

/// The standard normal quantile `Φ⁻¹(p)` for `p` in `(0, 1)`; `-inf` at 0 and
/// `+inf` at 1.
///
/// Acklam's rational approximation (relative error below 1.2e-9) refined by
/// two Halley steps on `Φ` itself, which brings it to within a few ulps of
/// the quantile of our `Φ`; the refinement is what the tests check, so the
/// starting approximation only needs to be close.
pub(crate) fn normal_quantile(p: f64) -> f64 {
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    // Work in the lower half, where `Φ` has full relative precision.
    if p > 0.5 {
        return -normal_quantile(1.0 - p);
    }
    let mut x = acklam_lower_half(p);
    for _ in 0..2 {
        let error = normal_cdf(x) - p;
        let density_ratio = error * (2.0 * std::f64::consts::PI).sqrt() * (0.5 * x * x).exp();
        if !density_ratio.is_finite() {
            break;
        }
        x -= density_ratio / (1.0 + 0.5 * x * density_ratio);
    }
    x
}

/// Acklam's approximation of `Φ⁻¹(p)` for `0 < p <= 0.5`.
fn acklam_lower_half(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    const LOWER_REGION: f64 = 0.024_25;
    if p < LOWER_REGION {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// The largest parameter (ε or μ) that `rejects`, by doubling from 1 and
/// then bisecting to `relative_tolerance`. The value returned was itself
/// rejected (or is 0), so the bound stays sound even where the test is not
/// quite monotone; a search passing `ceiling` stops at the last rejected
/// value below it.
pub(crate) fn largest_rejected(
    rejects: impl Fn(f64) -> bool,
    ceiling: f64,
    relative_tolerance: f64,
) -> f64 {
    // Invariant: `low` is 0 or rejected; `high` is not rejected.
    let mut low = 0.0_f64;
    let mut high = 1.0_f64;
    while rejects(high) {
        low = high;
        high *= 2.0;
        if high > ceiling {
            return low;
        }
    }
    while high - low > relative_tolerance * high.max(1.0) {
        let middle = 0.5 * (low + high);
        if middle <= low || middle >= high {
            break;
        }
        if rejects(middle) {
            low = middle;
        } else {
            high = middle;
        }
    }
    low
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct summation of the pmf in linear space, fine for small `n`.
    fn direct_upper_tail(n: u64, p: f64, at_least: u64) -> f64 {
        let mut total = 0.0;
        for k in at_least..=n {
            let mut choose = 1.0;
            for j in 0..k {
                choose *= (n - j) as f64 / (j + 1) as f64;
            }
            total += choose * p.powi(k as i32) * (1.0 - p).powi((n - k) as i32);
        }
        total
    }

    #[test]
    fn upper_tail_matches_direct_sum() {
        // Linear-space sums of ≤ 41 terms lose at most ~1e-14 relative, and
        // lgamma-based terms ~1e-14 too; 1e-11 relative leaves margin.
        for n in [1_u64, 7, 20, 40] {
            for epsilon in [0.0_f64, 0.3, 1.0, 3.0] {
                let binomial = Binomial::randomised_response(n, epsilon);
                let p = 1.0 / (1.0 + (-epsilon).exp());
                for at_least in 0..=n {
                    let expected = direct_upper_tail(n, p, at_least);
                    let got = binomial.log_upper_tail(at_least).exp();
                    assert!(
                        (got - expected).abs() <= 1e-11 * expected,
                        "n={n} ε={epsilon} k={at_least}: {got} vs {expected}"
                    );
                }
            }
        }
    }

    #[test]
    fn quantile_inverts_cdf() {
        // Lower half: relative 1e-13 on p, or what one ulp of x moves Φ by in
        // the far tail, where d ln Φ / dx ≈ |x|: |x| · ulp(x) ≈ x² · 2.2e-16
        // (2.6e-13 at p = 1e-300, x ≈ -37). Two Halley steps from a 1e-9
        // start reach that resolution. Upper half: p itself is only known to
        // an absolute ulp near 1, so the check is absolute, four ulps of 1.
        let mut p = 1e-300_f64;
        while p < 0.5 {
            let x = normal_quantile(p);
            let back = normal_cdf(x);
            let relative = 1e-13_f64.max(4.0 * x * x * f64::EPSILON);
            assert!(
                (back - p).abs() <= relative * p,
                "p={p}: Φ(Φ⁻¹(p)) = {back}"
            );
            let upper = 1.0 - p;
            let back = normal_cdf(normal_quantile(upper));
            assert!(
                (back - upper).abs() <= 4.0 * f64::EPSILON,
                "p={upper}: {back}"
            );
            p *= 3.7;
        }
        assert_eq!(normal_quantile(0.5), 0.0);
        assert_eq!(normal_quantile(0.0), f64::NEG_INFINITY);
        assert_eq!(normal_quantile(1.0), f64::INFINITY);
    }
}
