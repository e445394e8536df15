//! Metrics of a spend (regression) model from its released sums: MAE, RMSE
//! and R² from the scalar sums every release already carries, and, when the
//! release carries them, the binned actual-versus-predicted curve.
//!
//! # The binned release (not yet in the job's release)
//!
//! The curve needs per-bin sums the release does not have today. The
//! additive vector that would carry them is, after the six scalar sums,
//! `RegressionBins::bins` bins of equal width over predictions in
//! `[-value_bound, value_bound]` (the clamp the release already applies),
//! three values per bin in this order: customers, sum of predictions, sum of
//! labels. A customer falls in exactly one bin ([`RegressionBins::bin_of`])
//! and adds at most 1, `value_bound` and `value_bound` to it, so with scales
//! `(1, value_bound, value_bound)` per bin the block adds at most `√3` to the
//! per-customer ℓ2 sensitivity of the scaled vector: `√(6 + 3) = 3` in all
//! for regression, against `√6` today.

use serde::{Deserialize, Serialize};

use crate::EvaluationError;
use crate::interval::{Estimate, Flat, IntervalConfig, NON_NEGATIVE, NoisyValue, REAL, bootstrap};

/// What a job releases about a regression model's final evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegressionRelease {
    /// Examples evaluated.
    pub count: NoisyValue,
    /// Sum of |prediction − label|.
    pub absolute_error_sum: NoisyValue,
    /// Sum of (prediction − label)².
    pub squared_error_sum: NoisyValue,
    /// Sum of labels.
    pub label_sum: NoisyValue,
    /// Sum of squared labels.
    pub label_square_sum: NoisyValue,
    /// Per-bin sums for the actual-versus-predicted curve, when released.
    pub bins: Option<RegressionBins>,
}

/// Sums per bin of predicted value (see the module documentation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegressionBins {
    /// Predictions and labels were clamped to `[-value_bound, value_bound]`;
    /// the bins split that range evenly.
    pub value_bound: f64,
    /// Customers per bin.
    pub count: Vec<NoisyValue>,
    /// Sum of predictions per bin.
    pub prediction_sum: Vec<NoisyValue>,
    /// Sum of labels per bin.
    pub label_sum: Vec<NoisyValue>,
}

impl RegressionBins {
    /// The bin of a (clamped) prediction among `bins` equal bins over
    /// `[-value_bound, value_bound]`: lower edges inclusive, the top edge in
    /// the last bin.
    pub fn bin_of(prediction: f64, value_bound: f64, bins: usize) -> usize {
        let position = (prediction.clamp(-value_bound, value_bound) + value_bound)
            / (2.0 * value_bound)
            * bins as f64;
        (position as usize).min(bins.saturating_sub(1))
    }
}

/// One bin of the actual-versus-predicted curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ActualVersusPredicted {
    /// Lowest prediction of the bin.
    pub lower_prediction: f64,
    /// Highest prediction of the bin.
    pub upper_prediction: f64,
    /// Mean prediction of the bin's customers.
    pub mean_predicted: Estimate,
    /// Mean label of the bin's customers.
    pub mean_actual: Estimate,
    /// Customers in the bin.
    pub count: Estimate,
}

/// Everything a marketer reads about a spend model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegressionEvaluation {
    /// How the intervals were computed.
    pub intervals: IntervalConfig,
    /// Examples evaluated.
    pub count: Estimate,
    /// Mean absolute error.
    pub mean_absolute_error: Estimate,
    /// Root mean squared error.
    pub root_mean_squared_error: Estimate,
    /// Coefficient of determination, 1 − SSE/SST; NaN when the labels do not vary.
    pub r_squared: Estimate,
    /// Bins whose customer count is at least twice its noise deviation (and
    /// at least one), lowest predictions first; empty without released bins.
    pub actual_versus_predicted: Vec<ActualVersusPredicted>,
}

/// Evaluates a regression model's release, with intervals from `intervals`.
pub fn evaluate_regression(
    release: &RegressionRelease,
    intervals: &IntervalConfig,
) -> Result<RegressionEvaluation, EvaluationError> {
    let scalars = [
        ("count", release.count),
        ("absolute_error_sum", release.absolute_error_sum),
        ("squared_error_sum", release.squared_error_sum),
        ("label_sum", release.label_sum),
        ("label_square_sum", release.label_square_sum),
    ];
    let mut released = Vec::new();
    for (name, value) in scalars {
        value.check(|| name.to_owned())?;
        released.push(value);
    }
    if release.count.value <= 0.0 {
        return Err(EvaluationError::NoExamples(release.count.value));
    }
    let n_bins = match &release.bins {
        None => 0,
        Some(bins) => {
            let n_bins = bins.count.len();
            if n_bins == 0 || bins.prediction_sum.len() != n_bins || bins.label_sum.len() != n_bins
            {
                return Err(EvaluationError::RegressionBins(format!(
                    "{} counts, {} prediction sums and {} label sums; they need the same number, at least one",
                    n_bins,
                    bins.prediction_sum.len(),
                    bins.label_sum.len()
                )));
            }
            if !(bins.value_bound.is_finite() && bins.value_bound > 0.0) {
                return Err(EvaluationError::RegressionBins(format!(
                    "value bound {} is not a positive number",
                    bins.value_bound
                )));
            }
            for (name, values) in [
                ("bins.count", &bins.count),
                ("bins.prediction_sum", &bins.prediction_sum),
                ("bins.label_sum", &bins.label_sum),
            ] {
                for (index, value) in values.iter().enumerate() {
                    value.check(|| format!("{name}[{index}]"))?;
                    released.push(*value);
                }
            }
            n_bins
        }
    };
    let metrics = |values: &[f64]| {
        let mut flat = Flat::default();
        let [count, absolute, squared, label_sum, label_square_sum] =
            [0, 1, 2, 3, 4].map(|i| values[i]);
        let count = count.max(0.0);
        let squared = squared.max(0.0);
        let total_sum_of_squares = label_square_sum - label_sum * label_sum / count;
        flat.push(count, NON_NEGATIVE);
        flat.push(absolute.max(0.0) / count, NON_NEGATIVE);
        flat.push((squared / count).sqrt(), NON_NEGATIVE);
        let r_squared = if total_sum_of_squares > 0.0 {
            1.0 - squared / total_sum_of_squares
        } else {
            f64::NAN
        };
        flat.push(r_squared, (f64::NEG_INFINITY, 1.0));
        let bins = &values[5..];
        for bin in 0..n_bins {
            let customers = bins[bin].max(0.0);
            let (predicted, actual) = if customers > 0.0 {
                (
                    bins[n_bins + bin] / customers,
                    bins[2 * n_bins + bin] / customers,
                )
            } else {
                (f64::NAN, f64::NAN)
            };
            flat.push(predicted, REAL);
            flat.push(actual, REAL);
            flat.push(customers, NON_NEGATIVE);
        }
        flat
    };
    let estimates = bootstrap(&released, metrics, intervals);
    let mut next = estimates.into_iter();
    let mut take = || {
        next.next().unwrap_or(Estimate {
            value: f64::NAN,
            lower: f64::NAN,
            upper: f64::NAN,
        })
    };
    let count = take();
    let mean_absolute_error = take();
    let root_mean_squared_error = take();
    let r_squared = take();
    let mut actual_versus_predicted = Vec::new();
    if let Some(bins) = &release.bins {
        let width = 2.0 * bins.value_bound / n_bins as f64;
        for (bin, count_released) in bins.count.iter().enumerate() {
            let lower_prediction = -bins.value_bound + bin as f64 * width;
            let point = ActualVersusPredicted {
                lower_prediction,
                upper_prediction: lower_prediction + width,
                mean_predicted: take(),
                mean_actual: take(),
                count: take(),
            };
            let placeable = point.count.value
                >= (2.0 * count_released.noise_standard_deviation).max(1.0)
                && point.mean_predicted.value.is_finite();
            if placeable {
                actual_versus_predicted.push(point);
            }
        }
    }
    Ok(RegressionEvaluation {
        intervals: *intervals,
        count,
        mean_absolute_error,
        root_mean_squared_error,
        r_squared,
        actual_versus_predicted,
    })
}
