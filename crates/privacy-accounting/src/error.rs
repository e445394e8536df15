//! The one error type of the accounting library.

/// Why an accounting request was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AccountingError {
    /// A sampling rate outside `(0, 1]` (or not a number).
    #[error("sampling rate must be in (0, 1], got {0}")]
    InvalidSamplingRate(f64),
    /// A noise multiplier that is not a positive finite number.
    #[error("noise multiplier must be a positive finite number, got {0}")]
    InvalidNoiseMultiplier(f64),
    /// A δ outside `(0, 1)`.
    #[error("delta must be in (0, 1), got {0}")]
    InvalidDelta(f64),
    /// A target ε that is not a positive finite number.
    #[error("target epsilon must be a positive finite number, got {0}")]
    InvalidEpsilon(f64),
    /// An event with zero steps; compose nothing instead.
    #[error("an event must have at least one step")]
    ZeroSteps,
    /// Distributed discrete noise described with a non-positive or non-finite
    /// standard deviation or sensitivity, or with no clients.
    #[error("invalid distributed discrete noise: {0}")]
    InvalidDiscreteNoise(&'static str),
    /// A discretisation setting that is not a positive finite number.
    #[error("invalid PLD configuration: {0}")]
    InvalidPldConfig(&'static str),
    /// The privacy loss distribution would need more memory than allowed even
    /// at the coarsest discretisation tried; ε is astronomically large there.
    #[error("privacy loss distribution needs {needed} bins, more than the limit of {limit}")]
    TooManyBins {
        /// Bins the requested composition would need.
        needed: usize,
        /// The configured ceiling.
        limit: usize,
    },
    /// The PLD accountant cannot bound this composition (it contains
    /// distributed discrete Gaussian rounds); use the RDP accountant.
    #[error("the PLD accountant does not cover distributed discrete Gaussian rounds")]
    NotCoveredByPld,
    /// A numerical intermediate came out as NaN. It is refused rather than
    /// dropped: dropping it could only make ε smaller than the truth.
    #[error("a numerical intermediate was not a number: {0}")]
    NotANumber(&'static str),
    /// The command-line output could not be written as JSON.
    #[error("could not write the output as JSON: {0}")]
    Output(String),
    /// No noise multiplier in the searched range meets the target.
    #[error("no noise multiplier up to {0} meets the target (epsilon, delta)")]
    CalibrationOutOfRange(f64),
}
