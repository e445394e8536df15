//! The layout of the additive statistics vectors nodes send, and their
//! interpretation once summed. One module, so node and coordinator cannot
//! disagree on what index means what.
//!
//! - Feature statistics: `[count, sum_0..sum_{n-1}, sum_sq_0..sum_sq_{n-1}]`.
//! - Training statistics: `[training loss summed over examples, examples]`.
//! - Evaluation statistics: `veil_models::EvalStats::to_vector`.

use thiserror::Error;
use veil_behaviour_features::{FeatureSums, Scaling};
use veil_models::{EVAL_BUCKETS, EvalStats, OutputKind};
use veil_scoring_evaluation::{BinaryRelease, NoisyValue, RegressionRelease};

/// Largest per-customer loss counted in released evaluation statistics of a
/// binary model (cross-entropy of a probability of about 4.5e-5).
pub const RELEASED_BINARY_LOSS_BOUND: f64 = 10.0;

/// Score buckets that are merged into one in a released evaluation
/// histogram: the noise is then added to 20 buckets, not 1000, and the AUC
/// keeps a 0.05 score resolution.
pub const RELEASED_BUCKET_WIDTH: usize = 50;

/// Length of the training statistics vector.
pub const TRAIN_STATISTICS_LEN: usize = 2;

/// A statistics vector that does not fit its layout.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum StatisticsError {
    /// Wrong length for the layout.
    #[error("{what} statistics have {actual} values, expected {expected}")]
    WrongLength {
        /// Which layout.
        what: &'static str,
        /// Expected length.
        expected: usize,
        /// Actual length.
        actual: usize,
    },
    /// The sums do not make a usable scaling or metric.
    #[error("{what} statistics are unusable: {message}")]
    Unusable {
        /// Which layout.
        what: &'static str,
        /// Why.
        message: String,
    },
}

/// Length of the feature statistics vector for `n_features` features.
pub fn feature_statistics_len(n_features: usize) -> usize {
    1 + 2 * n_features
}

/// Flattens feature sums.
pub fn feature_sums_to_vector(sums: &FeatureSums) -> Vec<f64> {
    let mut vector = Vec::with_capacity(1 + sums.sum.len() * 2);
    vector.push(sums.count as f64);
    vector.extend_from_slice(&sums.sum);
    vector.extend_from_slice(&sums.sum_of_squares);
    vector
}

/// The federation's scaling from summed feature statistics.
pub fn scaling_from_vector(vector: &[f64], n_features: usize) -> Result<Scaling, StatisticsError> {
    let expected = feature_statistics_len(n_features);
    if vector.len() != expected {
        return Err(StatisticsError::WrongLength {
            what: "feature",
            expected,
            actual: vector.len(),
        });
    }
    let count = vector[0];
    if !(count >= 1.0 && count.is_finite()) {
        return Err(StatisticsError::Unusable {
            what: "feature",
            message: format!("customer count is {count}"),
        });
    }
    let sums = FeatureSums {
        count: count.round() as u64,
        sum: vector[1..=n_features].to_vec(),
        sum_of_squares: vector[1 + n_features..].to_vec(),
    };
    Scaling::from_sums(&sums).map_err(|e| StatisticsError::Unusable {
        what: "feature",
        message: e.to_string(),
    })
}

/// The federation's scaling for `spec`: from the summed feature statistics,
/// or, under customer-level DP, where nodes release none, the public
/// scaling of the job's features.
pub fn job_scaling(spec: &crate::JobSpec, vector: &[f64]) -> Result<Scaling, StatisticsError> {
    if spec.privacy.statistics.is_some() {
        return Ok(spec.features.public_scaling());
    }
    scaling_from_vector(vector, spec.features.n_features())
}

/// The scaling a job's exported model (or analysis result) goes with: the
/// public scaling for an analysis, which releases no feature statistics,
/// otherwise [`job_scaling`] of the summed feature statistics, which a job
/// past round 0 has.
pub fn export_scaling(
    spec: &crate::JobSpec,
    feature_statistics: Option<&[f64]>,
) -> Result<Scaling, StatisticsError> {
    match (&spec.analysis, feature_statistics) {
        (Some(_), _) => Ok(spec.features.public_scaling()),
        (None, Some(vector)) => job_scaling(spec, vector),
        (None, None) => Err(StatisticsError::Unusable {
            what: "feature",
            message: "the job has not completed its feature-statistics round".to_owned(),
        }),
    }
}

/// Training statistics for `examples` examples with the given mean loss.
pub fn train_statistics(mean_loss: f64, examples: usize) -> Vec<f64> {
    vec![mean_loss * examples as f64, examples as f64]
}

/// Mean training loss from summed training statistics.
pub fn mean_training_loss(vector: &[f64]) -> Option<f64> {
    match vector {
        [loss_sum, examples] if *examples > 0.0 => Some(loss_sum / examples),
        _ => None,
    }
}

/// Length of the evaluation statistics vector for a model output.
pub fn evaluate_statistics_len(output: OutputKind) -> usize {
    EvalStats::empty(output).to_vector().len()
}

/// Summed evaluation statistics as metrics.
pub fn evaluation(output: OutputKind, vector: &[f64]) -> Result<EvalStats, StatisticsError> {
    EvalStats::from_vector(output, vector).map_err(|e| StatisticsError::Unusable {
        what: "evaluation",
        message: e.to_string(),
    })
}

/// Gaussian noise for one release of a statistics vector under
/// customer-level DP. Each coordinate has a scale, the most one customer can
/// add to it once its values are clamped; divided by its scale, adding or
/// removing one customer moves the vector by at most `sensitivity` in ℓ2.
/// Coordinate `i` then gets `N(0, (z · sensitivity · scale_i)²)`: the Gaussian
/// mechanism with noise multiplier `z`.
#[derive(Debug, Clone, PartialEq)]
pub struct ReleaseNoise {
    scales: Vec<f64>,
    sensitivity: f64,
}

impl ReleaseNoise {
    /// Evaluation statistics as `veil_models::evaluate_clamped` computes them
    /// with `value_bound` and [`RELEASED_BINARY_LOSS_BOUND`], histograms
    /// merged by [`coarsen_histograms`]. A customer adds to the six scalar
    /// sums and to exactly one histogram bucket, so the histograms count
    /// once in the sensitivity. Buckets that [`coarsen_histograms`] always
    /// leaves empty carry no data and get no noise (scale 0).
    pub fn evaluation(output: OutputKind, value_bound: f64) -> Self {
        let mut scales = match output {
            OutputKind::Binary => vec![1.0, RELEASED_BINARY_LOSS_BOUND, 1.0, 1.0, 1.0, 1.0],
            OutputKind::Regression => {
                let error = 2.0 * value_bound;
                vec![
                    1.0,
                    error * error,
                    error * error,
                    error,
                    value_bound,
                    value_bound * value_bound,
                ]
            }
        };
        let histograms = evaluate_statistics_len(output) - scales.len();
        scales.extend((0..histograms).map(|index| {
            if (index % EVAL_BUCKETS) % RELEASED_BUCKET_WIDTH == 0 {
                1.0
            } else {
                0.0
            }
        }));
        let one_hot_blocks = usize::from(histograms > 0);
        Self {
            sensitivity: ((6 + one_hot_blocks) as f64).sqrt(),
            scales,
        }
    }

    /// The noise standard deviation of coordinate `index` under multiplier `z`.
    pub fn standard_deviation(&self, index: usize, noise_multiplier: f64) -> f64 {
        noise_multiplier * self.sensitivity * self.scales.get(index).copied().unwrap_or(0.0)
    }

    /// The ℓ2 sensitivity after dividing each coordinate by its scale.
    pub fn sensitivity(&self) -> f64 {
        self.sensitivity
    }

    /// Adds the noise to `vector`, drawing standard normals from
    /// `standard_normal` (a cryptographic source in production).
    pub fn apply(
        &self,
        vector: &mut [f64],
        noise_multiplier: f64,
        mut standard_normal: impl FnMut() -> f64,
    ) -> Result<(), StatisticsError> {
        if vector.len() != self.scales.len() {
            return Err(StatisticsError::WrongLength {
                what: "released",
                expected: self.scales.len(),
                actual: vector.len(),
            });
        }
        for (index, value) in vector.iter_mut().enumerate() {
            let deviation = self.standard_deviation(index, noise_multiplier);
            if deviation > 0.0 {
                *value += deviation * standard_normal();
            }
        }
        Ok(())
    }
}

/// A job's final evaluation as released, each value with the deviation of
/// the noise in it, for `veil-scoring-evaluation`.
#[derive(Debug, Clone, PartialEq)]
pub enum EvaluationRelease {
    /// A binary model's score histograms (at the released resolution of
    /// `EVAL_BUCKETS / RELEASED_BUCKET_WIDTH` buckets) and scalar sums.
    Binary(BinaryRelease),
    /// A regression model's scalar sums (no bins: the release carries none yet).
    Regression(RegressionRelease),
}

/// Reads the summed evaluation statistics of `spec`'s final round, to which
/// `participants` nodes each added their own noise, as a release with its
/// noise deviations: under customer-level DP each value carries
/// `√participants` times the per-node deviation of [`ReleaseNoise`]; without
/// DP none. Runs of [`RELEASED_BUCKET_WIDTH`] buckets are merged, as
/// [`coarsen_histograms`] merges them before release (a no-op on DP
/// releases; without DP it reads a fine histogram at the same resolution).
pub fn evaluation_release(
    spec: &crate::JobSpec,
    vector: &[f64],
    participants: u32,
) -> Result<EvaluationRelease, StatisticsError> {
    let output = spec.model_spec().output;
    let expected = evaluate_statistics_len(output);
    if vector.len() != expected {
        return Err(StatisticsError::WrongLength {
            what: "evaluation",
            expected,
            actual: vector.len(),
        });
    }
    if let Some(index) = vector.iter().position(|value| !value.is_finite()) {
        return Err(StatisticsError::Unusable {
            what: "evaluation",
            message: format!("value {index} is {}", vector[index]),
        });
    }
    let deviation = |index: usize| match spec.privacy.statistics {
        Some(privacy) => {
            ReleaseNoise::evaluation(output, privacy.value_bound)
                .standard_deviation(index, privacy.noise_multiplier)
                * f64::from(participants).sqrt()
        }
        None => 0.0,
    };
    let value = |index: usize| NoisyValue {
        value: vector[index],
        noise_standard_deviation: deviation(index),
    };
    // The scalar sums, in `EvalStats::to_vector` order.
    let [
        count,
        _loss,
        squared_error,
        absolute_error,
        label_sum,
        label_square_sum,
    ] = [0, 1, 2, 3, 4, 5].map(value);
    Ok(match output {
        OutputKind::Binary => {
            let merged = |start: usize| -> Vec<NoisyValue> {
                (0..EVAL_BUCKETS / RELEASED_BUCKET_WIDTH)
                    .map(|run| {
                        let first = start + run * RELEASED_BUCKET_WIDTH;
                        let members = (first..first + RELEASED_BUCKET_WIDTH).map(value);
                        let (sum, variance) =
                            members.fold((0.0, 0.0), |(sum, variance), member| {
                                (
                                    sum + member.value,
                                    variance + member.noise_standard_deviation.powi(2),
                                )
                            });
                        NoisyValue {
                            value: sum,
                            noise_standard_deviation: variance.sqrt(),
                        }
                    })
                    .collect()
            };
            let scalars = evaluate_statistics_len(OutputKind::Regression);
            EvaluationRelease::Binary(BinaryRelease {
                positive: merged(scalars),
                negative: merged(scalars + EVAL_BUCKETS),
                count,
                squared_error_sum: squared_error,
            })
        }
        OutputKind::Regression => EvaluationRelease::Regression(RegressionRelease {
            count,
            absolute_error_sum: absolute_error,
            squared_error_sum: squared_error,
            label_sum,
            label_square_sum,
            bins: None,
        }),
    })
}

/// Merges each run of [`RELEASED_BUCKET_WIDTH`] score buckets into its first.
pub fn coarsen_histograms(stats: &mut EvalStats) {
    for histogram in [&mut stats.positive_histogram, &mut stats.negative_histogram] {
        for chunk in histogram.chunks_mut(RELEASED_BUCKET_WIDTH) {
            let total: u64 = chunk.iter().sum();
            chunk.fill(0);
            chunk[0] = total;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_sums_round_trip_to_scaling() {
        let sums = FeatureSums {
            count: 4,
            sum: vec![4.0, 8.0],
            sum_of_squares: vec![4.0, 32.0],
        };
        let vector = feature_sums_to_vector(&sums);
        assert_eq!(vector.len(), feature_statistics_len(2));
        let scaling = scaling_from_vector(&vector, 2).unwrap();
        assert_eq!(scaling, Scaling::from_sums(&sums).unwrap());
        assert!(matches!(
            scaling_from_vector(&vector, 3),
            Err(StatisticsError::WrongLength {
                expected: 7,
                actual: 5,
                ..
            })
        ));
    }

    #[test]
    fn training_loss_is_example_weighted() {
        let a = train_statistics(1.0, 10);
        let b = train_statistics(4.0, 30);
        let summed: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        assert_eq!(mean_training_loss(&summed), Some(130.0 / 40.0));
        assert_eq!(mean_training_loss(&[0.0, 0.0]), None);
    }

    #[test]
    fn release_noise_has_the_calibrated_deviation_and_spares_empty_buckets() {
        let noise = ReleaseNoise::evaluation(OutputKind::Binary, 12.0);
        let length = evaluate_statistics_len(OutputKind::Binary);
        assert!((noise.sensitivity() - 7f64.sqrt()).abs() < 1e-12);
        // A deterministic stand-in for the normal source: ±1 alternately.
        let mut sign = 1.0;
        let mut vector = vec![0.0; length];
        noise
            .apply(&mut vector, 2.0, || {
                sign = -sign;
                sign
            })
            .unwrap();
        let unit = 2.0 * 7f64.sqrt();
        assert!((vector[0].abs() - unit).abs() < 1e-9, "count");
        assert!(
            (vector[1].abs() - unit * RELEASED_BINARY_LOSS_BOUND).abs() < 1e-9,
            "loss"
        );
        assert!(
            vector[6].abs() > 0.0,
            "first bucket of a merged run is noised"
        );
        assert_eq!(vector[7], 0.0, "an always-empty bucket stays exactly empty");
        assert!(noise.apply(&mut vec![0.0; 3], 1.0, || 0.0).is_err());
    }

    #[test]
    fn the_release_reads_merged_buckets_with_the_summed_noise_deviation() {
        let text = "name = \"r\"\nrounds = 2\nmin_participants = 3\nmax_participants = 3\n\n[task]\nkind = \"churn\"\ncutoff = \"2024-09-30\"\nhorizon_days = 90\n\n[model]\nkind = \"logistic_regression\"\n\n[training]\nlocal_epochs = 1\nbatch_size = 32\nlearning_rate = 0.05\noptimizer = \"sgd\"\n\n[privacy]\ncustomers = \"dp-sgd\"\npartners = \"off\"\ncustomer_epsilon = 50\n";
        let spec = crate::JobSpec::from_wire(&crate::file::JobFile::parse(text).unwrap().to_wire())
            .unwrap();
        let privacy = spec.privacy.statistics.unwrap();
        let mut stats = EvalStats::empty(OutputKind::Binary);
        stats.count = 9;
        stats.squared_error_sum = 1.5;
        stats.positive_histogram[999] = 4;
        stats.negative_histogram[0] = 3;
        stats.negative_histogram[51] = 2;
        coarsen_histograms(&mut stats);
        let EvaluationRelease::Binary(release) =
            evaluation_release(&spec, &stats.to_vector(), 3).unwrap()
        else {
            unreachable!("a churn job is binary");
        };
        assert_eq!(release.positive.len(), 20);
        assert_eq!(release.positive[19].value, 4.0);
        assert_eq!(release.negative[0].value, 3.0);
        assert_eq!(release.negative[1].value, 2.0);
        assert_eq!(release.count.value, 9.0);
        assert_eq!(release.squared_error_sum.value, 1.5);
        // Three nodes each added z·√7 (one noised bucket per merged run).
        let per_node = privacy.noise_multiplier * 7f64.sqrt();
        let summed = per_node * 3f64.sqrt();
        assert!((release.positive[7].noise_standard_deviation - summed).abs() < 1e-9);
        assert!((release.count.noise_standard_deviation - summed).abs() < 1e-9);
        assert!(matches!(
            evaluation_release(&spec, &[0.0; 3], 3),
            Err(StatisticsError::WrongLength { .. })
        ));
    }

    #[test]
    fn coarse_histograms_keep_counts() {
        let mut stats = EvalStats::empty(OutputKind::Binary);
        stats.positive_histogram[3] = 2;
        stats.positive_histogram[49] = 1;
        stats.positive_histogram[50] = 4;
        coarsen_histograms(&mut stats);
        assert_eq!(stats.positive_histogram[0], 3);
        assert_eq!(stats.positive_histogram[50], 4);
        assert_eq!(stats.positive_histogram.iter().sum::<u64>(), 7);
    }
}
