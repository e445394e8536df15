//! The one error type of the segmentation crate.

/// Why a segmentation or RFM step was refused. Every variant names the
/// offending field, row or release, and none carries a customer's value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SegmentationError {
    /// A configuration value outside its valid range.
    #[error("invalid segmentation config: {field}: {reason}")]
    InvalidConfig {
        /// The field, as it is spelled in the config.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A customer row of the wrong width.
    #[error("row {row} has {actual} features, expected {expected}")]
    WrongWidth {
        /// Zero-based row index at this partner.
        row: usize,
        /// The configured number of features.
        expected: usize,
        /// The row's number of features.
        actual: usize,
    },
    /// A customer value that is NaN or infinite.
    #[error("row {row}, feature {feature} is not a finite number")]
    NonFinite {
        /// Zero-based row index at this partner.
        row: usize,
        /// Zero-based feature index (or RFM field index).
        feature: usize,
    },
    /// Labels given for a different number of customers than points.
    #[error("{labels} labels for {points} customers")]
    LabelCount {
        /// Number of labels.
        labels: usize,
        /// Number of customers.
        points: usize,
    },
    /// A vector (local, aggregated or released) of the wrong length.
    #[error("{what} has {actual} values, expected {expected}")]
    WrongLength {
        /// Which vector.
        what: &'static str,
        /// Expected length.
        expected: usize,
        /// Actual length.
        actual: usize,
    },
    /// A release index that is not the one the protocol expects now.
    #[error(
        "release {actual} arrived where release {expected:?} was expected (None: no release is)"
    )]
    OutOfOrder {
        /// The release the coordinator is waiting for, if any.
        expected: Option<usize>,
        /// The release that arrived.
        actual: usize,
    },
    /// A released statistic that is not a whole number of quantisation steps.
    #[error("released value at index {index} is not a whole number of quantisation steps")]
    NotQuantised {
        /// Position in the released vector.
        index: usize,
    },
    /// An integer sum overflowed (only with absurd customer counts).
    #[error("the {what} overflowed at index {index}")]
    Overflow {
        /// Which computation.
        what: &'static str,
        /// Position in the vector.
        index: usize,
    },
    /// The privacy plan cannot be built or met.
    #[error("privacy plan: {0}")]
    Privacy(String),
    /// Noise could not be drawn.
    #[error("noise: {0}")]
    Noise(#[from] veil_dp_noise::NoiseError),
    /// A segment table that does not give every (R, F) score pair exactly one name.
    #[error("RFM segment table: {0}")]
    SegmentTable(String),
}
