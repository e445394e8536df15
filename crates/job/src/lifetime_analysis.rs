//! The `lifetime-value` analysis: BG/NBD and Gamma-Gamma fitted to every
//! partner's customers by one noised release of a binned summary histogram
//! (route (b) of docs/lifetime-value.md), then checked on a holdout window by
//! a second noised release of predicted against actual purchases.
//!
//! Release 0: each node's histogram of its customers' calibration summaries
//! `(x, t_x, T, mean spend)` as of the cutoff (`veil_lifetime_value::local_histogram`,
//! ℓ2 sensitivity √2). The coordinator fits both models to the noised sum.
//! Release 1 (parameters: the fitted models): per calibration-purchase bucket
//! (0 to 7, the last holding 7 or more), the count of customers and the sums
//! of predicted and actual holdout purchases, of their absolute difference
//! and of the products that give the correlation, each value clamped to
//! [`EVALUATION_CAP`] purchases, so one customer changes one bucket's block
//! by at most `√(1 + 3A² + 3A⁴)`.
//!
//! Both releases carry discrete Gaussian noise that each node adds alone
//! (trust model `local`: a partner's guarantee depends on no other node),
//! with one noise multiplier `z` for both, calibrated so the two Gaussian
//! releases together stay within the job's customer-level (ε, δ).

use veil_lifetime_value::{
    BgNbdParameters, BinningConfig, CustomerSummary, FittedHistogram, GammaGammaParameters,
    HISTOGRAM_L2_SENSITIVITY, HistogramBinning, HistogramFit, fit_from_histogram,
};

/// Which counts a fitted model came from, as the report says.
pub use veil_lifetime_value::FittedCounts;
use veil_privacy_accounting::{CalibrationTarget, calibrate_noise_multiplier};
use veil_privacy_ledger::Mechanism;
use veil_wire::v1;

use crate::spec::{JobSpecError, invalid};

/// Calibration-purchase buckets of the evaluation: 0, 1, ..., 6 and 7+.
pub const EVALUATION_BUCKETS: usize = 8;
/// Values per bucket: count, Σ predicted, Σ actual, Σ |predicted − actual|,
/// Σ predicted², Σ actual², Σ predicted · actual.
pub const EVALUATION_BLOCK: usize = 7;
/// Purchases a customer's predicted and actual holdout counts are clamped to.
pub const EVALUATION_CAP: f64 = 10.0;
/// Integer units per purchase in the evaluation release: fine enough that
/// truncation costs under 1/16 purchase per customer, coarse enough that the
/// node's σ in integer units stays within the exact sampler's range (2^16).
const EVALUATION_UNITS: f64 = 16.0;
/// Values of an exported result: r, α, a, b, p, q, γ.
pub const LIFETIME_RESULT_LEN: usize = 7;
/// Default holdout window, in days.
pub const DEFAULT_HOLDOUT_DAYS: u32 = 90;
/// Default calibration window (the age bins cover it), in days.
pub const DEFAULT_WINDOW_DAYS: u32 = 365;
/// Default age and recency bins over the window.
pub const DEFAULT_AGE_BINS: u32 = 8;
/// Default log-spaced mean-spend bins.
pub const DEFAULT_SPEND_BINS: u32 = 12;

/// A lifetime-value job's public settings, binning and noise.
#[derive(Debug, Clone, PartialEq)]
pub struct LifetimeValue {
    /// Days after the cutoff whose purchases check the fit.
    pub holdout_days: u32,
    /// The public histogram layout.
    pub binning: HistogramBinning,
    /// Age and recency bins over the window (kept to write the spec back).
    pub age_bins: u32,
    /// Mean-spend bins (kept to write the spec back).
    pub spend_bins: u32,
    /// `z` of both releases: noise deviation over sensitivity.
    pub noise_multiplier: f64,
    /// δ of the job's ε.
    delta: f64,
}

/// What a lifetime-value job found.
#[derive(Debug, Clone, PartialEq)]
pub struct LifetimeOutcome {
    /// Both models, fitted to the noised histogram.
    pub fit: HistogramFit,
    /// The counts BG/NBD was fitted to: the released ones, or (when noise
    /// dominates them) their nearest non-negative version.
    pub purchases_from: FittedCounts,
    /// The same for Gamma-Gamma.
    pub spend_from: FittedCounts,
    /// The holdout check, from the noised evaluation release, or why it
    /// cannot be read (a noised count too small to divide by): the fit
    /// stands either way, since the release was charged and is not redone.
    pub evaluation: Result<HoldoutEvaluation, String>,
}

/// Predicted against actual holdout purchases, from noised sums.
#[derive(Debug, Clone, PartialEq)]
pub struct HoldoutEvaluation {
    /// Per calibration-purchase bucket: (purchases, noised customers, mean
    /// actual, mean predicted); buckets too small under the noise are left out.
    pub by_calibration_purchases: Vec<(u32, f64, f64, f64)>,
    /// Mean absolute error of predicted holdout purchases per customer.
    pub mean_absolute_error: f64,
    /// Pearson correlation of predicted and actual purchases.
    pub correlation: f64,
    /// Noised number of customers.
    pub customers: f64,
}

impl LifetimeValue {
    pub(crate) fn from_wire(
        wire: &v1::LifetimeValue,
        epsilon: f64,
        delta: f64,
    ) -> Result<Self, JobSpecError> {
        let or = |value: u32, default: u32| if value == 0 { default } else { value };
        let holdout_days = or(wire.holdout_days, DEFAULT_HOLDOUT_DAYS);
        let window_days = or(wire.window_days, DEFAULT_WINDOW_DAYS);
        let age_bins = or(wire.age_bins, DEFAULT_AGE_BINS);
        let spend_bins = or(wire.spend_bins, DEFAULT_SPEND_BINS);
        let (min_spend, max_spend) = (wire.min_spend, wire.max_spend);
        if !(min_spend.is_finite()
            && min_spend > 0.0
            && max_spend.is_finite()
            && max_spend > min_spend)
        {
            return Err(invalid(
                "lifetime_value.min_spend",
                format!(
                    "the public mean-spend range must be 0 < min_spend < max_spend, got {min_spend} to {max_spend}"
                ),
            ));
        }
        let binning = HistogramBinning::new(BinningConfig {
            day_bin_width: window_days.saturating_add(1).div_ceil(age_bins).max(1),
            max_age_days: window_days,
            frequency_edges: vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 13, 17, 23, 30],
            spend_edges: BinningConfig::log_spaced_spend_edges(min_spend, max_spend, spend_bins),
        })
        .map_err(|error| invalid("lifetime_value", error.to_string()))?;
        if !epsilon.is_finite() {
            return Err(invalid(
                "privacy.customer_epsilon",
                "an analysis calibrates its noise to its budget, which must be finite",
            ));
        }
        let noise_multiplier = calibrate_noise_multiplier(&CalibrationTarget {
            sampling_rate: 1.0,
            steps: 2,
            epsilon,
            delta,
        })
        .map_err(|error| invalid("privacy.customer_epsilon", error.to_string()))?;
        Ok(Self {
            holdout_days,
            binning,
            age_bins,
            spend_bins,
            noise_multiplier,
            delta,
        })
    }

    pub(crate) fn to_wire(&self) -> v1::LifetimeValue {
        let config = self.binning.config();
        v1::LifetimeValue {
            holdout_days: self.holdout_days,
            window_days: config.max_age_days,
            min_spend: config.spend_edges.first().copied().unwrap_or(0.0),
            max_spend: config.spend_edges.last().copied().unwrap_or(0.0),
            age_bins: self.age_bins,
            spend_bins: self.spend_bins,
        }
    }

    /// Customer-level ε per partner of both releases composed, at the job's δ.
    pub fn planned_epsilon(&self) -> f64 {
        let mut accountant = veil_privacy_accounting::Accountant::new();
        let composed = accountant
            .compose(veil_privacy_accounting::DpEvent::PoissonSampledGaussian {
                sampling_rate: 1.0,
                noise_multiplier: self.noise_multiplier,
                steps: 2,
            })
            .and_then(|()| accountant.epsilon(self.delta));
        composed.map_or(f64::INFINITY, |report| report.epsilon)
    }

    /// The two releases' lengths.
    pub fn release_lengths(&self) -> Vec<usize> {
        vec![self.binning.len(), EVALUATION_BUCKETS * EVALUATION_BLOCK]
    }

    /// ℓ2 sensitivity of release `index`, in its value units.
    pub fn sensitivity(index: usize) -> f64 {
        if index == 0 {
            HISTOGRAM_L2_SENSITIVITY
        } else {
            let cap = EVALUATION_CAP;
            (1.0 + 3.0 * cap * cap + 3.0 * cap.powi(4)).sqrt()
        }
    }

    /// The node's noise deviation for release `index`, in integer units.
    pub fn node_sigma(&self, index: usize) -> f64 {
        let units = if index == 0 { 1.0 } else { EVALUATION_UNITS };
        self.noise_multiplier * Self::sensitivity(index) * units
    }

    /// Integer units per value unit of release `index`.
    pub fn units(index: usize) -> f64 {
        if index == 0 { 1.0 } else { EVALUATION_UNITS }
    }

    /// What the ledgers charge for release `index`.
    pub fn mechanism(&self, index: usize) -> Mechanism {
        Mechanism::Gaussian {
            noise_multiplier: self.noise_multiplier,
            clip_norm: Self::sensitivity(index),
        }
    }

    /// The models fitted to release 0's noised sum.
    pub fn fit(&self, histogram: &[f64]) -> Result<FittedHistogram, String> {
        let counts: Vec<i64> = histogram.iter().map(|value| value.round() as i64).collect();
        fit_from_histogram(&self.binning, &counts).map_err(|error| format!("fitting: {error}"))
    }

    /// Release 1's parameters: the fitted models.
    pub fn release_parameters(
        &self,
        index: usize,
        released: &[&[f64]],
    ) -> Result<Vec<f64>, String> {
        match (index, released) {
            (0, []) => Ok(Vec::new()),
            (1, [histogram]) => Ok(fit_to_parameters(&self.fit(histogram)?.models)),
            _ => Err(format!(
                "a lifetime-value job has 2 releases; release {index} after {} sums",
                released.len()
            )),
        }
    }

    /// The fit and its holdout check from both sums.
    pub fn outcome(&self, released: &[&[f64]]) -> Result<LifetimeOutcome, String> {
        let [histogram, evaluation] = released else {
            return Err(format!(
                "a lifetime-value job has 2 releases, {} were given",
                released.len()
            ));
        };
        let fitted = self.fit(histogram)?;
        if evaluation.len() != EVALUATION_BUCKETS * EVALUATION_BLOCK {
            return Err(format!("the evaluation has {} values", evaluation.len()));
        }
        let evaluation = self.read_evaluation(evaluation);
        Ok(LifetimeOutcome {
            fit: fitted.models,
            purchases_from: fitted.purchases_from,
            spend_from: fitted.spend_from,
            evaluation,
        })
    }

    fn read_evaluation(&self, sums: &[f64]) -> Result<HoldoutEvaluation, String> {
        // A bucket is shown when its count is 4 summed noise deviations
        // clear of zero (every node's own noise is in the sum; with n nodes
        // it is √n times one node's, which the count of nodes bounds below).
        let count_noise = self.noise_multiplier * Self::sensitivity(1);
        let mut total = [0.0; EVALUATION_BLOCK];
        let mut by_bucket = Vec::new();
        for (bucket, block) in sums.chunks_exact(EVALUATION_BLOCK).enumerate() {
            for (sum, value) in total.iter_mut().zip(block) {
                *sum += value;
            }
            let count = block[0];
            if count > 4.0 * count_noise {
                by_bucket.push((bucket as u32, count, block[2] / count, block[1] / count));
            }
        }
        let [
            n,
            predicted,
            actual,
            absolute,
            predicted_squares,
            actual_squares,
            products,
        ] = total;
        if n <= 4.0 * count_noise {
            return Err(format!(
                "the noised holdout count ({n:.0} customers) is within 4 noise deviations of zero"
            ));
        }
        let covariance = products / n - (predicted / n) * (actual / n);
        let predicted_variance = predicted_squares / n - (predicted / n).powi(2);
        let actual_variance = actual_squares / n - (actual / n).powi(2);
        let correlation = if predicted_variance > 0.0 && actual_variance > 0.0 {
            (covariance / (predicted_variance * actual_variance).sqrt()).clamp(-1.0, 1.0)
        } else {
            f64::NAN
        };
        Ok(HoldoutEvaluation {
            by_calibration_purchases: by_bucket,
            mean_absolute_error: (absolute / n).max(0.0),
            correlation,
            customers: n,
        })
    }
}

/// One customer's evaluation block (before noise, in integer units): its
/// calibration-purchase bucket and the clamped values of the module docs,
/// each truncated towards zero so quantising never grows the contribution.
pub fn evaluation_contribution(
    summary: &CustomerSummary,
    predicted: f64,
    actual: f64,
) -> (usize, [i64; EVALUATION_BLOCK]) {
    let bucket = (summary.frequency as usize).min(EVALUATION_BUCKETS - 1);
    let predicted = if predicted.is_finite() {
        predicted.clamp(0.0, EVALUATION_CAP)
    } else {
        0.0
    };
    let actual = actual.clamp(0.0, EVALUATION_CAP);
    let quantise = |value: f64| (value * EVALUATION_UNITS).trunc() as i64;
    (
        bucket,
        [
            quantise(1.0),
            quantise(predicted),
            quantise(actual),
            quantise((predicted - actual).abs()),
            quantise(predicted * predicted),
            quantise(actual * actual),
            quantise(predicted * actual),
        ],
    )
}

/// The exported result and release 1's parameters: r, α, a, b, p, q, γ.
pub fn fit_to_parameters(fit: &HistogramFit) -> Vec<f64> {
    let BgNbdParameters { r, alpha, a, b } = fit.purchases;
    let GammaGammaParameters { p, q, gamma } = fit.spend;
    vec![r, alpha, a, b, p, q, gamma]
}

/// The models back from [`fit_to_parameters`]' values, refused unless
/// there are seven finite positive ones.
pub fn parameters_to_fit(values: &[f64]) -> Result<HistogramFit, JobSpecError> {
    let [r, alpha, a, b, p, q, gamma] = values else {
        return Err(invalid(
            "result",
            format!(
                "a lifetime-value result has {LIFETIME_RESULT_LEN} values, got {}",
                values.len()
            ),
        ));
    };
    if values
        .iter()
        .any(|value| !(value.is_finite() && *value > 0.0))
    {
        return Err(invalid(
            "result",
            "every BG/NBD and Gamma-Gamma parameter must be a positive number",
        ));
    }
    Ok(HistogramFit {
        purchases: BgNbdParameters {
            r: *r,
            alpha: *alpha,
            a: *a,
            b: *b,
        },
        spend: GammaGammaParameters {
            p: *p,
            q: *q,
            gamma: *gamma,
        },
    })
}
