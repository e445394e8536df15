//! Noise for differential privacy, drawn only from cryptographic generators:
//! an exact discrete Gaussian (Canonne, Kamath, Steinke 2020) for integer /
//! modular updates that go through secure aggregation, a continuous Gaussian
//! for float updates, and ℓ2 clipping that bounds each update's sensitivity.
//!
//! This crate does not decide how much noise to add (that is calibration in
//! `veil-privacy-accounting`), does not track budgets (also `veil-privacy-accounting`), and does
//! not quantise or mask updates (`veil-secure-aggregation`). It does no IO beyond asking
//! the operating system for a seed in [`production_rng`].

mod clip;
mod discrete_gaussian;
mod error;
mod gaussian;

pub use clip::clip_l2;
pub use discrete_gaussian::{DiscreteGaussian, Rational};
pub use error::NoiseError;
pub use gaussian::Gaussian;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// The generator production code must use: ChaCha20 keyed from the OS.
/// Tests use `ChaCha20Rng::seed_from_u64` instead, for reproducibility.
pub fn production_rng() -> Result<ChaCha20Rng, NoiseError> {
    ChaCha20Rng::try_from_os_rng()
        .map_err(|error| NoiseError::EntropyUnavailable(error.to_string()))
}
