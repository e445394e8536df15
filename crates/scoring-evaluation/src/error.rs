//! Why a release cannot be evaluated.

use thiserror::Error;

/// A released evaluation that cannot be read, or a bad interval configuration.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum EvaluationError {
    /// The positive and negative histograms differ in length, or are empty.
    #[error(
        "score histograms have {positive} positive and {negative} negative buckets; they need the same number, at least one"
    )]
    HistogramShape {
        /// Buckets of the positive histogram.
        positive: usize,
        /// Buckets of the negative histogram.
        negative: usize,
    },
    /// A released value is not finite, or a noise deviation is negative or not finite.
    #[error(
        "{field} is {value}: released values must be finite, noise deviations finite and not negative"
    )]
    InvalidValue {
        /// Which value, e.g. `positive[3].noise_standard_deviation`.
        field: String,
        /// The offending value.
        value: f64,
    },
    /// After noise, the release holds no examples of one class, so no
    /// ranking metric exists.
    #[error(
        "the released histograms hold {positives:.1} positive and {negatives:.1} negative examples; both must be above zero"
    )]
    OneClass {
        /// Estimated positives (sum of the positive histogram, negatives read as zero).
        positives: f64,
        /// Estimated negatives.
        negatives: f64,
    },
    /// The released count is not above zero, so no mean exists.
    #[error("the released example count is {0:.1}; it must be above zero")]
    NoExamples(f64),
    /// Regression bins that do not fit together.
    #[error("regression bins: {0}")]
    RegressionBins(String),
    /// An interval configuration outside its range.
    #[error("interval configuration: {0}")]
    IntervalConfig(String),
}
