//! The evaluation a marketer reads about a scoring model, from the one
//! charged, noised release of its evaluation statistics: ROC and
//! precision-recall curves, AUC and average precision, cumulative gains and
//! lift by decile, precision and recall in the top 1, 5, 10 and 20% of
//! customers, the calibration (reliability) curve and the Brier score for
//! binary models; MAE, RMSE, R² and the binned actual-versus-predicted curve
//! for spend regressions. Every metric carries an interval that includes the
//! DP noise ([`interval`]), so a reader sees what the noise costs.
//!
//! The inputs are plain released values with their noise deviations
//! ([`NoisyValue`]); this crate does not know the release's vector layout or
//! how the noise was calibrated (`veil_job::statistics` does), adds no noise
//! and charges nothing (it post-processes what was already paid for), and
//! draws no charts (`veil-report` does).

#![forbid(unsafe_code)]

mod binary;
mod error;
mod exact;
pub mod interval;
mod regression;

pub use binary::{
    BinaryEvaluation, BinaryRelease, CalibrationBin, Decile, GainsPoint, PrecisionRecallPoint,
    RocPoint, TOP_PERCENTS, TopPercent, evaluate_binary, histogram_auc,
};
pub use error::EvaluationError;
pub use exact::exact_auc;
pub use interval::{Estimate, IntervalConfig, NoisyValue};
pub use regression::{
    ActualVersusPredicted, RegressionBins, RegressionEvaluation, RegressionRelease,
    evaluate_regression,
};
