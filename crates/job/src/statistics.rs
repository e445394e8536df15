//! The layout of the additive statistics vectors nodes send, and their
//! interpretation once summed. One module, so node and coordinator cannot
//! disagree on what index means what.
//!
//! - Feature statistics: `[count, sum_0..sum_{n-1}, sum_sq_0..sum_sq_{n-1}]`.
//! - Training statistics: `[training loss summed over examples, examples]`.
//! - Evaluation statistics: `veil_models::EvalStats::to_vector`.

use thiserror::Error;
use veil_features::{FeatureSums, Scaling};
use veil_models::{EvalStats, OutputKind};

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
}
