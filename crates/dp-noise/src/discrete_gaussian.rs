//! Exact discrete Gaussian sampling (Canonne, Kamath, Steinke 2020): every
//! acceptance test is a comparison of uniform integers against exact
//! rationals, so no floating-point rounding can bias the distribution.

use rand_core::CryptoRng;

use crate::error::NoiseError;

/// Largest supported denominator of σ²: keeps every intermediate product in
/// the acceptance test within `u128` for all samples we can expect to see.
const MAX_DENOMINATOR: u64 = 1 << 16;

/// Largest supported σ² numerator (σ² ≤ 2^32 when the denominator is 2^16).
const MAX_NUMERATOR: u64 = 1 << 48;

/// A non-negative rational `numerator / denominator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rational {
    /// Numerator.
    pub numerator: u64,
    /// Denominator, at least 1.
    pub denominator: u64,
}

/// The discrete Gaussian `N_Z(0, σ²)`: `P(x) ∝ exp(-x²/(2σ²))` on the integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiscreteGaussian {
    /// σ² exactly, as the acceptance test needs it.
    sigma_squared: Rational,
    /// Scale of the discrete Laplace proposal, `⌊σ⌋ + 1`, which makes the
    /// expected number of proposals per sample a small constant.
    laplace_scale: u64,
}

/// Uniform integer in `[0, bound)` by rejection from the next power of two,
/// so it is exactly uniform.
fn uniform_below<R: CryptoRng>(bound: u128, rng: &mut R) -> u128 {
    if bound <= 1 {
        return 0;
    }
    let bits = 128 - (bound - 1).leading_zeros();
    let mask = if bits >= 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    };
    loop {
        let candidate = ((u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64())) & mask;
        if candidate < bound {
            return candidate;
        }
    }
}

/// Bernoulli(`numerator / denominator`), exactly.
fn bernoulli<R: CryptoRng>(numerator: u128, denominator: u128, rng: &mut R) -> bool {
    uniform_below(denominator, rng) < numerator
}

/// Bernoulli(`exp(-numerator/denominator)`), exactly (CKS 2020, Algorithm 1).
fn bernoulli_exp_neg<R: CryptoRng>(numerator: u128, denominator: u128, rng: &mut R) -> bool {
    let whole = numerator / denominator;
    // exp(-γ) = exp(-1)^⌊γ⌋ · exp(-(γ - ⌊γ⌋)).
    for _ in 0..whole {
        if !bernoulli_exp_neg_at_most_one(1, 1, rng) {
            return false;
        }
    }
    bernoulli_exp_neg_at_most_one(numerator - whole * denominator, denominator, rng)
}

/// Bernoulli(`exp(-γ)`) for `0 ≤ γ ≤ 1`: the count `K` of successive
/// successes of Bernoulli(γ/k) is odd with probability exactly `exp(-γ)`.
fn bernoulli_exp_neg_at_most_one<R: CryptoRng>(
    numerator: u128,
    denominator: u128,
    rng: &mut R,
) -> bool {
    let mut k: u128 = 1;
    // γ/k with γ ≤ 1 is below 2^-120 long before k·denominator overflows,
    // so treating overflow as failure changes nothing measurable.
    while let Some(scaled) = denominator.checked_mul(k) {
        if !bernoulli(numerator, scaled, rng) {
            break;
        }
        k += 1;
    }
    k % 2 == 1
}

/// Discrete Laplace with scale `t`: `P(x) ∝ exp(-|x|/t)` (CKS 2020, Algorithm 2).
fn discrete_laplace<R: CryptoRng>(scale: u64, rng: &mut R) -> i128 {
    let scale = u128::from(scale);
    loop {
        let remainder = uniform_below(scale, rng);
        if !bernoulli_exp_neg(remainder, scale, rng) {
            continue;
        }
        let mut quotient: u128 = 0;
        while bernoulli_exp_neg(1, 1, rng) {
            quotient += 1;
        }
        let magnitude = remainder + scale * quotient;
        let negative = rng.next_u32() & 1 == 1;
        if negative && magnitude == 0 {
            // Zero would otherwise be drawn twice as often as it should.
            continue;
        }
        let magnitude = i128::try_from(magnitude).unwrap_or(i128::MAX);
        return if negative { -magnitude } else { magnitude };
    }
}

impl DiscreteGaussian {
    /// A sampler for exactly `σ² = numerator / denominator`, with
    /// `1 ≤ denominator ≤ 2^16` and `0 < numerator ≤ 2^48`.
    pub fn new(sigma_squared: Rational) -> Result<Self, NoiseError> {
        let Rational {
            numerator,
            denominator,
        } = sigma_squared;
        let invalid = |reason| NoiseError::InvalidSigmaSquared {
            numerator,
            denominator,
            reason,
        };
        if denominator == 0 || denominator > MAX_DENOMINATOR {
            return Err(invalid("denominator must be in 1..=2^16"));
        }
        if numerator == 0 || numerator > MAX_NUMERATOR {
            return Err(invalid("numerator must be in 1..=2^48"));
        }
        // ⌊σ⌋ = the largest s with s² · denominator ≤ numerator, found exactly
        // (the f64 estimate is only a starting point).
        let mut floor_sigma = ((numerator as f64) / (denominator as f64)).sqrt().floor() as u128;
        let (num, den) = (u128::from(numerator), u128::from(denominator));
        while floor_sigma * floor_sigma * den > num {
            floor_sigma -= 1;
        }
        while (floor_sigma + 1) * (floor_sigma + 1) * den <= num {
            floor_sigma += 1;
        }
        let laplace_scale =
            u64::try_from(floor_sigma + 1).map_err(|_| invalid("sigma too large"))?;
        Ok(Self {
            sigma_squared,
            laplace_scale,
        })
    }

    /// A sampler for `σ²` rounded *up* to a multiple of 2^-16, so the noise is
    /// never less than requested.
    pub fn from_sigma(sigma: f64) -> Result<Self, NoiseError> {
        if !(sigma.is_finite() && sigma > 0.0) {
            return Err(NoiseError::InvalidSigma(sigma));
        }
        let scaled = (sigma * sigma * MAX_DENOMINATOR as f64).ceil();
        if scaled > MAX_NUMERATOR as f64 {
            return Err(NoiseError::InvalidSigma(sigma));
        }
        Self::new(Rational {
            numerator: scaled as u64,
            denominator: MAX_DENOMINATOR,
        })
    }

    /// σ² exactly.
    pub fn sigma_squared(&self) -> Rational {
        self.sigma_squared
    }

    /// One sample (CKS 2020, Algorithm 3): propose discrete Laplace `Y` with
    /// scale `t`, accept with probability `exp(-(|Y| - σ²/t)² / (2σ²))`.
    pub fn sample<R: CryptoRng>(&self, rng: &mut R) -> i64 {
        let num = u128::from(self.sigma_squared.numerator);
        let den = u128::from(self.sigma_squared.denominator);
        let t = u128::from(self.laplace_scale);
        loop {
            let proposal = discrete_laplace(self.laplace_scale, rng);
            // γ = (|Y|·den·t - num)² / (2·num·den·t²), all in integers. A
            // proposal so large that this overflows u128 (|Y| > 2^40 σ-ish,
            // probability far below 2^-1000) is rejected and redrawn.
            let Some(acceptance) = proposal
                .unsigned_abs()
                .checked_mul(den * t)
                .map(|scaled| scaled.abs_diff(num))
                .and_then(|difference| difference.checked_mul(difference))
                .zip(
                    (2 * num)
                        .checked_mul(den)
                        .and_then(|value| value.checked_mul(t * t)),
                )
            else {
                continue;
            };
            let (numerator, denominator) = acceptance;
            if bernoulli_exp_neg(numerator, denominator, rng)
                && let Ok(value) = i64::try_from(proposal)
            {
                return value;
            }
        }
    }

    /// Adds independent noise to each coordinate; fails on `i64` overflow
    /// (leaving earlier coordinates noised) rather than wrapping silently.
    pub fn add_to<R: CryptoRng>(&self, values: &mut [i64], rng: &mut R) -> Result<(), NoiseError> {
        for (index, value) in values.iter_mut().enumerate() {
            *value = value
                .checked_add(self.sample(rng))
                .ok_or(NoiseError::Overflow(index))?;
        }
        Ok(())
    }

    /// Adds independent noise modulo 2^32, for updates already in the
    /// secure-aggregation ring `Z_{2^32}`.
    pub fn add_to_wrapping<R: CryptoRng>(&self, values: &mut [u32], rng: &mut R) {
        for value in values.iter_mut() {
            // Reducing the noise mod 2^32 first is the same as adding in Z and reducing.
            *value = value.wrapping_add(self.sample(rng) as u32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn bernoulli_exp_neg_has_the_right_frequency() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let trials = 100_000;
        for (numerator, denominator) in [(1u128, 3u128), (5, 2), (0, 1)] {
            let hits = (0..trials)
                .filter(|_| bernoulli_exp_neg(numerator, denominator, &mut rng))
                .count();
            let p = (-(numerator as f64) / denominator as f64).exp();
            let frequency = hits as f64 / f64::from(trials);
            // Five binomial standard errors: a false failure is ~1 in 1.7 million.
            let tolerance = 5.0 * (p * (1.0 - p) / f64::from(trials)).sqrt() + 1e-12;
            assert!(
                (frequency - p).abs() <= tolerance,
                "γ={numerator}/{denominator}: {frequency} vs {p}"
            );
        }
    }

    #[test]
    fn floor_sigma_is_exact() {
        let sampler = DiscreteGaussian::new(Rational {
            numerator: 16,
            denominator: 1,
        });
        assert_eq!(sampler.map(|s| s.laplace_scale), Ok(5));
        let sampler = DiscreteGaussian::new(Rational {
            numerator: 15,
            denominator: 1,
        });
        assert_eq!(sampler.map(|s| s.laplace_scale), Ok(4));
        let refused = DiscreteGaussian::new(Rational {
            numerator: 1,
            denominator: 0,
        });
        assert!(matches!(
            refused,
            Err(NoiseError::InvalidSigmaSquared { .. })
        ));
    }
}
