//! The one error type of the noise crate.

/// Why a sampler could not be built or applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NoiseError {
    /// A standard deviation that is not a positive finite number.
    #[error("sigma must be a positive finite number, got {0}")]
    InvalidSigma(f64),
    /// A discrete Gaussian variance outside the supported exact range.
    #[error("sigma squared {numerator}/{denominator} is outside the supported range: {reason}")]
    InvalidSigmaSquared {
        /// Numerator of σ².
        numerator: u64,
        /// Denominator of σ².
        denominator: u64,
        /// Which limit was broken.
        reason: &'static str,
    },
    /// A clip norm that is not a positive finite number.
    #[error("clip norm must be a positive finite number, got {0}")]
    InvalidClipNorm(f64),
    /// An update containing NaN or infinity, whose norm means nothing.
    #[error("update contains a non-finite value at index {0}")]
    NonFiniteUpdate(usize),
    /// Adding noise to an `i64` coordinate overflowed.
    #[error("adding noise overflowed i64 at index {0}")]
    Overflow(usize),
    /// The operating system could not supply a seed.
    #[error("operating system entropy unavailable: {0}")]
    EntropyUnavailable(String),
}
