//! The one error type of the lifetime-value crate.

/// Why a summary, fit, histogram or prediction could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LifetimeValueError {
    /// A transaction amount that is NaN or infinite.
    #[error("transaction {row}: amount {amount} is not a finite number")]
    NonFiniteAmount {
        /// Index of the transaction in the input.
        row: usize,
        /// The amount as given.
        amount: f64,
    },
    /// A negative transaction amount: refunds are not part of the spend model
    /// and must be netted out before summarising.
    #[error("transaction {row}: amount {amount} is negative (net refunds out first)")]
    NegativeAmount {
        /// Index of the transaction in the input.
        row: usize,
        /// The amount as given.
        amount: f64,
    },
    /// A customer summary that no transaction log could produce.
    #[error("customer summary {index}: {reason}")]
    InvalidSummary {
        /// Index of the summary in the input.
        index: usize,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A customer with repeat purchases whose mean spend is not positive, which
    /// the Gamma-Gamma likelihood cannot score.
    #[error("customer summary {index}: mean spend {mean_spend} must be positive for Gamma-Gamma")]
    NonPositiveSpend {
        /// Index of the summary in the input.
        index: usize,
        /// The mean spend per repeat purchase.
        mean_spend: f64,
    },
    /// A model parameter or prediction argument outside its domain.
    #[error("{name} must be {requirement}, got {value}")]
    InvalidArgument {
        /// Which parameter or argument.
        name: &'static str,
        /// What it must be.
        requirement: &'static str,
        /// The value given.
        value: f64,
    },
    /// A fit was asked for on data with no weight at all.
    #[error("cannot fit {model}: the data hold no customers (total weight {total_weight})")]
    NoCustomers {
        /// The model being fitted.
        model: &'static str,
        /// Total count or weight of the data, which must be positive.
        total_weight: f64,
    },
    /// BG/NBD data in which nobody made a repeat purchase: the likelihood
    /// only grows as `r → 0`, and the dropout parameters are not identified.
    #[error(
        "cannot fit BG/NBD: no customer made a repeat purchase (repeat weight {repeat_weight})"
    )]
    NoRepeatPurchases {
        /// Total count or weight of customers with repeat purchases.
        repeat_weight: f64,
    },
    /// Maximum likelihood did not converge: the likelihood is flat or the
    /// optimum lies at a boundary (for example no sign of dropout in the data).
    #[error(
        "{model} fit did not converge after {iterations} iterations (gradient norm {gradient_norm:e})"
    )]
    FitDidNotConverge {
        /// The model being fitted.
        model: &'static str,
        /// Iterations run.
        iterations: usize,
        /// Norm of the last gradient of the mean negative log-likelihood.
        gradient_norm: f64,
    },
    /// A prediction the model cannot give with these parameters.
    #[error("prediction undefined: {0}")]
    PredictionUndefined(&'static str),
    /// A histogram binning that does not describe a partition.
    #[error("invalid binning: {0}")]
    InvalidBinning(&'static str),
    /// A histogram of the wrong length for its binning.
    #[error("histogram has {actual} entries, the binning has {expected}")]
    HistogramLength {
        /// Entries the binning defines.
        expected: usize,
        /// Entries given.
        actual: usize,
    },
    /// The noise sampler refused its parameters or overflowed.
    #[error("noise: {0}")]
    Noise(#[from] veil_dp_noise::NoiseError),
}
