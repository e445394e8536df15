//! Continuous Gaussian noise for float updates: Box–Muller over 53-bit
//! uniforms from a cryptographic generator.

use rand_core::CryptoRng;

use crate::error::NoiseError;

/// `N(0, σ²)` noise. Floating-point Gaussian samplers leak through their
/// low-order bits (Mironov 2012); Veil adds this noise only to float updates
/// that are then quantised for secure aggregation, and uses
/// [`crate::DiscreteGaussian`] where the noise itself must be exact.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gaussian {
    /// Standard deviation of each coordinate's noise.
    sigma: f64,
}

/// Uniform on `(0, 1]` with 53 random bits: never 0, so `ln` is finite.
fn uniform_open_closed<R: CryptoRng>(rng: &mut R) -> f64 {
    ((rng.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
}

impl Gaussian {
    /// A sampler with standard deviation `sigma > 0`.
    pub fn new(sigma: f64) -> Result<Self, NoiseError> {
        if sigma.is_finite() && sigma > 0.0 {
            Ok(Self { sigma })
        } else {
            Err(NoiseError::InvalidSigma(sigma))
        }
    }

    /// The standard deviation.
    pub fn sigma(&self) -> f64 {
        self.sigma
    }

    /// Two independent samples (Box–Muller produces them in pairs).
    pub fn sample_pair<R: CryptoRng>(&self, rng: &mut R) -> (f64, f64) {
        let radius = (-2.0 * uniform_open_closed(rng).ln()).sqrt() * self.sigma;
        let angle = 2.0 * std::f64::consts::PI * uniform_open_closed(rng);
        let (sin, cos) = angle.sin_cos();
        (radius * cos, radius * sin)
    }

    /// One sample.
    pub fn sample<R: CryptoRng>(&self, rng: &mut R) -> f64 {
        self.sample_pair(rng).0
    }

    /// Adds independent noise to every coordinate.
    pub fn add_to<R: CryptoRng>(&self, values: &mut [f32], rng: &mut R) {
        for pair in values.chunks_mut(2) {
            let (first, second) = self.sample_pair(rng);
            if let Some(value) = pair.get_mut(0) {
                *value = (f64::from(*value) + first) as f32;
            }
            if let Some(value) = pair.get_mut(1) {
                *value = (f64::from(*value) + second) as f32;
            }
        }
    }
}
