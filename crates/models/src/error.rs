//! The one error type of the models crate, so callers can match on what was wrong with their input.

/// Everything that can go wrong when specifying, training or evaluating a model.
///
/// Variants name the offending field and carry expected versus actual values, so that a partner
/// operator reading a log line can tell which input to fix without reading this crate.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    /// A field of the model specification is out of range (zero sizes, or a model too large).
    #[error("invalid model spec field `{field}`: {reason}")]
    InvalidSpec {
        /// The spec field that is wrong, for example `hidden[1]`.
        field: String,
        /// Why the value was rejected.
        reason: String,
    },
    /// A field of the training configuration is out of range.
    #[error("invalid training config field `{field}`: {reason}")]
    InvalidTrainingConfig {
        /// The config field that is wrong, for example `batch_size`.
        field: &'static str,
        /// Why the value was rejected.
        reason: String,
    },
    /// A field of the DP-SGD configuration is out of range.
    #[error("invalid DP-SGD config field `{field}`: {reason}")]
    InvalidDpSgdConfig {
        /// The config field that is wrong, for example `sampling_rate`.
        field: &'static str,
        /// Why the value was rejected.
        reason: String,
    },
    /// A flat parameter vector does not have the length the model spec implies.
    #[error("parameter vector has {actual} values, the model spec needs {expected}")]
    ParameterLength {
        /// `ModelSpec::parameter_count()`.
        expected: usize,
        /// The length that was passed.
        actual: usize,
    },
    /// A row-major feature buffer does not match the number of rows times the number of features.
    #[error("feature buffer has {actual} values, expected {expected}")]
    FeatureLength {
        /// The length implied by the row count and `n_features`.
        expected: usize,
        /// The length that was passed.
        actual: usize,
    },
    /// A feature buffer's length is not a whole number of rows.
    #[error("feature buffer of {actual} values is not a whole number of rows of {n_features}")]
    PartialRow {
        /// Features per row the model expects.
        n_features: usize,
        /// The length that was passed.
        actual: usize,
    },
    /// The dataset has a different number of features per row than the model takes.
    #[error("dataset has {actual} features per row, the model takes {expected}")]
    FeatureCount {
        /// `ModelSpec::n_inputs`.
        expected: usize,
        /// `Dataset::n_features`.
        actual: usize,
    },
    /// A dataset was declared with zero features per row.
    #[error("a dataset needs at least one feature per row")]
    ZeroFeatures,
    /// Training was asked to run on a dataset with no rows.
    #[error("cannot train on an empty dataset")]
    EmptyDataset,
    /// An input contained NaN or an infinity, which would silently poison training or metrics.
    #[error("{input}[{index}] is not finite ({value})")]
    NonFinite {
        /// Which input holds the bad value: `features`, `labels`, `parameters` or `global`.
        input: &'static str,
        /// Position of the first bad value in that input.
        index: usize,
        /// The bad value itself.
        value: f32,
    },
    /// A binary-classification label lies outside [0, 1], where binary cross-entropy is undefined.
    #[error("binary label at row {row} is {value}, expected a value in [0, 1]")]
    LabelOutOfRange {
        /// Row of the bad label.
        row: usize,
        /// The bad label.
        value: f32,
    },
    /// Training produced non-finite parameters, typically because the learning rate is too high.
    #[error("training diverged: parameter {index} became {value}; lower the learning rate")]
    TrainingDiverged {
        /// Position in the flat parameter vector of the first non-finite value.
        index: usize,
        /// The non-finite value.
        value: f32,
    },
    /// Two evaluation statistics, or a statistics vector, have incompatible shapes.
    #[error("evaluation statistics shape mismatch: expected {expected} values, got {actual}")]
    StatsShape {
        /// The length the output kind implies.
        expected: usize,
        /// The length that was found.
        actual: usize,
    },
    /// A value in a statistics vector cannot be a count or a sum (negative count, NaN, infinity).
    #[error("evaluation statistics value {index} is invalid: {value}")]
    StatsValue {
        /// Position in the vector, in the order documented on `EvalStats::to_vector`.
        index: usize,
        /// The invalid value.
        value: f64,
    },
    /// The burn backend failed to execute or read back a tensor.
    #[error("tensor backend error: {0}")]
    Backend(String),
}
