//! Special functions of the two likelihoods: log-gamma, digamma and the Gauss
//! hypergeometric function 2F1 on `[0, 1)`, all computed so they neither
//! overflow nor lose precision at the arguments BG/NBD produces.

/// Most terms the 2F1 series may take: `z = 1 - 1e-5` needs about 4·10^6.
const MAX_SERIES_TERMS: usize = 20_000_000;

/// `ln Γ(x)` for `x > 0`, to about one ulp (FreeBSD msun via `libm`).
pub(crate) fn ln_gamma(x: f64) -> f64 {
    libm::lgamma(x)
}

/// Digamma `ψ(x) = d ln Γ(x)/dx` for `x > 0`: the recurrence
/// `ψ(x) = ψ(x + 1) - 1/x` lifts `x` to at least 10, where the asymptotic
/// series to `x^-12` is accurate to about 1e-15 (the next term is `x^-14/12`).
pub(crate) fn digamma(mut x: f64) -> f64 {
    let mut shift = 0.0;
    while x < 10.0 {
        shift -= 1.0 / x;
        x += 1.0;
    }
    let inverse_square = 1.0 / (x * x);
    let series = inverse_square
        * (1.0 / 12.0
            - inverse_square
                * (1.0 / 120.0
                    - inverse_square
                        * (1.0 / 252.0
                            - inverse_square
                                * (1.0 / 240.0
                                    - inverse_square
                                        * (1.0 / 132.0 - inverse_square * (691.0 / 32_760.0))))));
    shift + x.ln() - 0.5 / x - series
}

/// `ln 2F1(a, b; c; z)` for `a, b > 0`, `c > 0` and `0 ≤ z < 1`, by the Gauss
/// series summed in log space.
///
/// With these signs every term is positive, so the sum has no cancellation;
/// summing relative to the largest term so far means a value beyond `f64`
/// (which `scipy.special.hyp2f1` returns as `inf`, and `lifetimes` then
/// re-evaluates through Euler's transformation) is still exact here. The
/// series stops once a geometric bound on the remaining terms is below
/// 1e-17 of the sum. `None` when the arguments are outside that domain or the
/// series would need more than [`MAX_SERIES_TERMS`] terms (`z` within about
/// 1e-6 of 1).
pub(crate) fn ln_hyp2f1(a: f64, b: f64, c: f64, z: f64) -> Option<f64> {
    if !(a > 0.0 && b > 0.0 && c > 0.0 && (0.0..1.0).contains(&z)) {
        return None;
    }
    if z == 0.0 {
        return Some(0.0);
    }
    let ln_z = z.ln();
    // The sum is `exp(scale) · scaled_sum`; `ln_term` is the log of the current term.
    let mut scale = 0.0;
    let mut scaled_sum = 1.0;
    let mut ln_term = 0.0;
    for n in 0..MAX_SERIES_TERMS {
        let n = n as f64;
        let ratio_ln = ((a + n) * (b + n) / ((c + n) * (n + 1.0))).ln() + ln_z;
        ln_term += ratio_ln;
        if ln_term > scale {
            scaled_sum = scaled_sum * (scale - ln_term).exp() + 1.0;
            scale = ln_term;
        } else {
            scaled_sum += (ln_term - scale).exp();
        }
        // Once the term ratio is below 1 and falling towards z (or rising towards
        // z < 1), the tail is at most term · ρ/(1 - ρ) with ρ the larger of the two.
        let ratio = ratio_ln.exp();
        let bound_ratio = ratio.max(z);
        if ratio < 1.0 && bound_ratio < 1.0 {
            let ln_tail = ln_term + (bound_ratio / (1.0 - bound_ratio)).ln();
            if ln_tail - scale < scaled_sum.ln() - 39.0 {
                return Some(scale + scaled_sum.ln());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_relative(actual: f64, expected: f64, tolerance: f64) {
        assert!(
            (actual - expected).abs() <= tolerance * expected.abs(),
            "{actual} vs {expected}"
        );
    }

    #[test]
    fn digamma_matches_known_values() {
        // ψ(1) = -γ, ψ(1/2) = -γ - 2 ln 2, ψ(10) = H_9 - γ.
        let euler = 0.577_215_664_901_532_9;
        // 1e-14 relative: the series is accurate to ~1e-15 plus recurrence rounding.
        assert_relative(digamma(1.0), -euler, 1e-14);
        assert_relative(digamma(0.5), -euler - 2.0 * 2f64.ln(), 1e-14);
        let harmonic_9: f64 = (1..=9).map(|k| 1.0 / f64::from(k)).sum();
        assert_relative(digamma(10.0), harmonic_9 - euler, 1e-14);
        // The derivative of ln Γ, by central differences (error ~1e-9 at h = 1e-5).
        for x in [0.03, 0.7, 3.3, 45.0, 1234.5] {
            let h = 1e-5 * x;
            let numeric = (ln_gamma(x + h) - ln_gamma(x - h)) / (2.0 * h);
            assert!(
                (digamma(x) - numeric).abs() < 1e-7 * (1.0 + numeric.abs()),
                "x={x}"
            );
        }
    }

    #[test]
    fn hyp2f1_matches_closed_forms_and_scipy() {
        // 2F1(1, 1; 2; z) = -ln(1 - z)/z.
        for z in [0.1, 0.5, 0.9, 0.999] {
            let expected = -(1.0f64 - z).ln() / z;
            assert_relative(
                ln_hyp2f1(1.0, 1.0, 2.0, z).unwrap_or(f64::NAN),
                expected.ln(),
                1e-13,
            );
        }
        // 2F1(a, b; b; z) = (1 - z)^-a.
        assert_relative(
            ln_hyp2f1(2.5, 3.0, 3.0, 0.7).unwrap_or(f64::NAN),
            -2.5 * 0.3f64.ln(),
            1e-13,
        );
        // scipy.special.hyp2f1(30.2, 32.4, 33.1, 0.8) = 4.387065767825993e+20
        // (a value lifetimes hits for a customer with x = 30).
        assert_relative(
            ln_hyp2f1(30.2, 32.4, 33.1, 0.8).unwrap_or(f64::NAN),
            4.387_065_767_825_993e20f64.ln(),
            1e-12,
        );
        assert_eq!(ln_hyp2f1(1.0, 1.0, 2.0, 1.0), None);
        assert_eq!(ln_hyp2f1(1.0, 1.0, -0.5, 0.5), None);
    }
}
