//! Confidence intervals that include the DP noise: a seeded parametric
//! bootstrap over the Gaussian noise of every released value.
//!
//! A release is `observed = truth + noise`, with independent Gaussian noise
//! of known deviation per value. A metric `f` is estimated by `f(observed)`.
//! Each replicate redraws the noise around the observation,
//! `observed + noise*`, and the interval runs between the `α/2` and
//! `1 − α/2` quantiles of `f(observed + noise*)` (the percentile interval),
//! clipped to the metric's range and widened, if need be, to contain the
//! estimate itself.
//!
//! The percentile interval respects monotone transformations: for a metric
//! that is a monotone function of one noisy sum (an RMSE is the root of a
//! squared-error sum, clamped at zero), it is exactly the Gaussian interval
//! of that sum carried through the function. The basic (reverse-percentile)
//! interval is not, and it covered the truth markedly less often in the
//! tests (RMSE 81% and R² 78% for a 90% interval, against 90% and 89%).
//!
//! The interval covers the noise only: it says what the DP noise costs, for
//! the customers that were evaluated. Sampling error of the held-out set
//! (which customers happened to be held out) is not in it.
//!
//! The bootstrap draws from a ChaCha20 stream seeded by the caller, not from
//! the OS: it post-processes a value that is already public, so the draws
//! protect nothing, and a fixed seed makes a report reproducible.

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use serde::{Deserialize, Serialize};
use veil_dp_noise::Gaussian;

use crate::EvaluationError;

/// A released value and the standard deviation of the Gaussian noise that was
/// added to it before release (0 when it carries none).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NoisyValue {
    /// The value as released.
    pub value: f64,
    /// Standard deviation of the noise in `value`: for a sum over partners
    /// that each noised their part, the root of the sum of their variances.
    pub noise_standard_deviation: f64,
}

impl NoisyValue {
    /// A value released without noise.
    pub fn exact(value: f64) -> Self {
        Self {
            value,
            noise_standard_deviation: 0.0,
        }
    }

    pub(crate) fn check(&self, field: impl Fn() -> String) -> Result<(), EvaluationError> {
        if !self.value.is_finite() {
            return Err(EvaluationError::InvalidValue {
                field: format!("{}.value", field()),
                value: self.value,
            });
        }
        let deviation = self.noise_standard_deviation;
        if !(deviation.is_finite() && deviation >= 0.0) {
            return Err(EvaluationError::InvalidValue {
                field: format!("{}.noise_standard_deviation", field()),
                value: deviation,
            });
        }
        Ok(())
    }
}

/// How intervals are computed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct IntervalConfig {
    /// Two-sided coverage, in (0, 1): 0.9 gives 90% intervals.
    confidence: f64,
    /// Bootstrap replicates; more make the interval's ends steadier.
    replicates: usize,
    /// Seed of the bootstrap's generator, recorded so a report can be redone.
    seed: u64,
}

/// Fewest replicates that place a 95% interval's ends on more than a handful
/// of draws.
const MIN_REPLICATES: usize = 100;

impl IntervalConfig {
    /// Checks `confidence` is in (0, 1) and `replicates` at least 100.
    pub fn new(confidence: f64, replicates: usize, seed: u64) -> Result<Self, EvaluationError> {
        if !(confidence > 0.0 && confidence < 1.0) {
            return Err(EvaluationError::IntervalConfig(format!(
                "confidence {confidence} is not strictly between 0 and 1"
            )));
        }
        if replicates < MIN_REPLICATES {
            return Err(EvaluationError::IntervalConfig(format!(
                "{replicates} replicates; at least {MIN_REPLICATES} are needed"
            )));
        }
        Ok(Self {
            confidence,
            replicates,
            seed,
        })
    }

    /// Two-sided coverage.
    pub fn confidence(&self) -> f64 {
        self.confidence
    }

    /// Bootstrap replicates.
    pub fn replicates(&self) -> usize {
        self.replicates
    }

    /// Seed of the bootstrap's generator.
    pub fn seed(&self) -> u64 {
        self.seed
    }
}

/// A metric's estimate from the release and its interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// The metric computed from the released values.
    pub value: f64,
    /// Lower end of the interval.
    pub lower: f64,
    /// Upper end of the interval.
    pub upper: f64,
}

impl Estimate {
    /// Whether `truth` lies in the closed interval.
    pub fn contains(&self, truth: f64) -> bool {
        self.lower <= truth && truth <= self.upper
    }
}

/// Metric values in a fixed order, each with the range it can take.
#[derive(Debug, Default)]
pub(crate) struct Flat {
    pub(crate) values: Vec<f64>,
    pub(crate) ranges: Vec<(f64, f64)>,
}

impl Flat {
    pub(crate) fn push(&mut self, value: f64, range: (f64, f64)) {
        self.values.push(value);
        self.ranges.push(range);
    }
}

/// A probability or a rate: [0, 1].
pub(crate) const UNIT: (f64, f64) = (0.0, 1.0);
/// A count, an error or a lift: [0, ∞).
pub(crate) const NON_NEGATIVE: (f64, f64) = (0.0, f64::INFINITY);
/// Anything.
pub(crate) const REAL: (f64, f64) = (f64::NEG_INFINITY, f64::INFINITY);

/// Estimates and intervals of every value `metrics` computes from the
/// released values. `metrics` must return the same number of values in the
/// same order for any input; a value it cannot compute is NaN (then that
/// estimate is NaN, or the replicate is left out of that interval).
pub(crate) fn bootstrap(
    released: &[NoisyValue],
    metrics: impl Fn(&[f64]) -> Flat,
    config: &IntervalConfig,
) -> Vec<Estimate> {
    let observed: Vec<f64> = released.iter().map(|value| value.value).collect();
    let point = metrics(&observed);
    let mut samples: Vec<Vec<f64>> =
        vec![Vec::with_capacity(config.replicates); point.values.len()];
    let mut rng = ChaCha20Rng::seed_from_u64(config.seed);
    // A unit deviation is always valid; scaled per value below.
    let standard = Gaussian::new(1.0).ok();
    let mut replicate = observed.clone();
    for _ in 0..config.replicates {
        for ((slot, released), observed) in replicate.iter_mut().zip(released).zip(&observed) {
            let deviation = released.noise_standard_deviation;
            *slot = match standard {
                Some(standard) if deviation > 0.0 => {
                    observed + deviation * standard.sample(&mut rng)
                }
                _ => *observed,
            };
        }
        let values = metrics(&replicate).values;
        for (column, value) in samples.iter_mut().zip(values) {
            if value.is_finite() {
                column.push(value);
            }
        }
    }
    let alpha = 1.0 - config.confidence;
    point
        .values
        .iter()
        .zip(&point.ranges)
        .zip(samples.iter_mut())
        .map(|((&value, &(low, high)), column)| {
            if !value.is_finite() || column.is_empty() {
                return Estimate {
                    value,
                    lower: value,
                    upper: value,
                };
            }
            column.sort_by(f64::total_cmp);
            let lower = quantile(column, alpha / 2.0).clamp(low, high);
            let upper = quantile(column, 1.0 - alpha / 2.0).clamp(low, high);
            Estimate {
                value,
                lower: lower.min(value),
                upper: upper.max(value),
            }
        })
        .collect()
}

/// Quantile of sorted, non-empty samples, linear between order statistics
/// (Hyndman and Fan's type 7, numpy's default).
fn quantile(sorted: &[f64], probability: f64) -> f64 {
    let position = probability * (sorted.len() - 1) as f64;
    let below = position.floor() as usize;
    let above = position.ceil() as usize;
    let (Some(low), Some(high)) = (sorted.get(below), sorted.get(above)) else {
        return f64::NAN;
    };
    low + (high - low) * (position - below as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean_of(values: &[f64]) -> Flat {
        let mut flat = Flat::default();
        flat.push(values.iter().sum::<f64>() / values.len() as f64, REAL);
        flat
    }

    #[test]
    fn noise_free_values_get_zero_width_intervals() {
        let config = IntervalConfig::new(0.9, 200, 7).unwrap();
        let estimates = bootstrap(
            &[NoisyValue::exact(2.0), NoisyValue::exact(4.0)],
            mean_of,
            &config,
        );
        assert_eq!(
            estimates,
            vec![Estimate {
                value: 3.0,
                lower: 3.0,
                upper: 3.0
            }]
        );
    }

    #[test]
    fn a_linear_metric_gets_the_normal_interval() {
        // The mean of four values each with deviation 2 has deviation 1: a 90%
        // interval is ±1.645, to within the bootstrap's Monte Carlo error
        // (about 2% of the width at 20,000 replicates).
        let config = IntervalConfig::new(0.9, 20_000, 11).unwrap();
        let released = [NoisyValue {
            value: 10.0,
            noise_standard_deviation: 2.0,
        }; 4];
        let estimate = bootstrap(&released, mean_of, &config)[0];
        assert_eq!(estimate.value, 10.0);
        assert!((estimate.upper - 11.645).abs() < 0.05, "{estimate:?}");
        assert!((estimate.lower - 8.355).abs() < 0.05, "{estimate:?}");
    }

    #[test]
    fn the_same_seed_gives_the_same_interval() {
        let released = [NoisyValue {
            value: 1.0,
            noise_standard_deviation: 0.5,
        }];
        let config = IntervalConfig::new(0.95, 100, 3).unwrap();
        assert_eq!(
            bootstrap(&released, mean_of, &config),
            bootstrap(&released, mean_of, &config)
        );
    }

    #[test]
    fn configurations_outside_their_range_are_refused() {
        for (confidence, replicates) in [(0.0, 1000), (1.0, 1000), (f64::NAN, 1000), (0.9, 99)] {
            assert!(
                matches!(
                    IntervalConfig::new(confidence, replicates, 0),
                    Err(EvaluationError::IntervalConfig(_))
                ),
                "{confidence} {replicates}"
            );
        }
    }
}
