//! Feature scaling from additive sufficient statistics, so partners can pool a mean and a
//! standard deviation by summing counts, sums and sums of squares instead of sharing rows.

use serde::{Deserialize, Serialize};

use crate::features::CustomerRow;

/// Smallest standard deviation used for scaling, so a constant feature maps to 0 instead of
/// dividing by zero.
pub const MIN_STD: f64 = 1e-6;

/// Why feature statistics could not be combined or turned into a scaling.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FeatureError {
    /// Two statistics (or a statistic's two vectors) disagree on the number of features.
    #[error("feature statistics have {found} features where {expected} were expected")]
    WidthMismatch {
        /// The width of the accumulating statistics.
        expected: usize,
        /// The width that did not match.
        found: usize,
    },
    /// A scaling was requested from statistics of zero rows.
    #[error("cannot compute a scaling from zero rows")]
    NoRows,
    /// Adding two row counts overflowed.
    #[error("row count overflowed while merging feature statistics")]
    CountOverflow,
    /// A statistic is NaN or infinite, so no scaling can be derived from it.
    #[error("feature {feature_index} has a non-finite mean or standard deviation")]
    NonFinite {
        /// Zero-based position of the feature.
        feature_index: usize,
    },
}

/// Additive sufficient statistics for scaling; federated by summing across partners.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureSums {
    /// Number of rows summed.
    pub count: u64,
    /// Per-feature sum of values.
    pub sum: Vec<f64>,
    /// Per-feature sum of squared values.
    pub sum_of_squares: Vec<f64>,
}

impl FeatureSums {
    /// Statistics of zero rows, the identity for [`FeatureSums::merge`].
    pub fn empty(n_features: usize) -> Self {
        Self {
            count: 0,
            sum: vec![0.0; n_features],
            sum_of_squares: vec![0.0; n_features],
        }
    }

    /// Sums the rows' features. Rows whose width is not `n_features` are skipped (they cannot
    /// come from one [`crate::FeatureSpec`]), so the count always matches what was summed.
    pub fn from_rows(rows: &[CustomerRow], n_features: usize) -> Self {
        let mut sums = Self::empty(n_features);
        for row in rows.iter().filter(|row| row.features.len() == n_features) {
            sums.count += 1;
            let columns = sums.sum.iter_mut().zip(sums.sum_of_squares.iter_mut());
            for ((sum, sum_of_squares), value) in columns.zip(&row.features) {
                let value = f64::from(*value);
                *sum += value;
                *sum_of_squares += value * value;
            }
        }
        sums
    }

    /// Number of features these statistics describe.
    pub fn n_features(&self) -> usize {
        self.sum.len()
    }

    /// Adds another partner's statistics into these, as if their rows had been summed together.
    pub fn merge(&mut self, other: &FeatureSums) -> Result<(), FeatureError> {
        self.check_shape()?;
        other.check_shape()?;
        if other.n_features() != self.n_features() {
            return Err(FeatureError::WidthMismatch {
                expected: self.n_features(),
                found: other.n_features(),
            });
        }
        self.count = self
            .count
            .checked_add(other.count)
            .ok_or(FeatureError::CountOverflow)?;
        for (sum, other_sum) in self.sum.iter_mut().zip(&other.sum) {
            *sum += other_sum;
        }
        for (sum_of_squares, other_sum_of_squares) in
            self.sum_of_squares.iter_mut().zip(&other.sum_of_squares)
        {
            *sum_of_squares += other_sum_of_squares;
        }
        Ok(())
    }

    /// Statistics may arrive deserialised from elsewhere, so their two vectors are checked.
    fn check_shape(&self) -> Result<(), FeatureError> {
        if self.sum_of_squares.len() == self.sum.len() {
            Ok(())
        } else {
            Err(FeatureError::WidthMismatch {
                expected: self.sum.len(),
                found: self.sum_of_squares.len(),
            })
        }
    }
}

/// Per-feature mean and standard deviation for standardising features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scaling {
    /// Per-feature mean.
    pub mean: Vec<f64>,
    /// Per-feature population standard deviation, at least [`MIN_STD`].
    pub std: Vec<f64>,
}

impl Scaling {
    /// Mean and population standard deviation from pooled sums; the variance is clamped at
    /// zero because `E[x²] - E[x]²` can come out slightly negative in floating point.
    pub fn from_sums(sums: &FeatureSums) -> Result<Self, FeatureError> {
        sums.check_shape()?;
        if sums.count == 0 {
            return Err(FeatureError::NoRows);
        }
        // Row counts stay far below 2^52, so the conversion is exact.
        let count = sums.count as f64;
        let mut mean = Vec::with_capacity(sums.n_features());
        let mut std = Vec::with_capacity(sums.n_features());
        for (feature_index, (sum, sum_of_squares)) in
            sums.sum.iter().zip(&sums.sum_of_squares).enumerate()
        {
            let feature_mean = sum / count;
            let variance = (sum_of_squares / count - feature_mean * feature_mean).max(0.0);
            let feature_std = variance.sqrt().max(MIN_STD);
            if !feature_mean.is_finite() || !feature_std.is_finite() {
                return Err(FeatureError::NonFinite { feature_index });
            }
            mean.push(feature_mean);
            std.push(feature_std);
        }
        Ok(Self { mean, std })
    }

    /// Standardises features in place: `(x - mean) / std`. Extra trailing values beyond the
    /// scaling's width are left unchanged.
    pub fn apply(&self, features: &mut [f32]) {
        for ((value, mean), std) in features.iter_mut().zip(&self.mean).zip(&self.std) {
            *value = ((f64::from(*value) - mean) / std) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn row(features: Vec<f32>) -> CustomerRow {
        CustomerRow {
            customer_id: "c".to_owned(),
            features,
            label: None,
        }
    }

    #[test]
    fn scaling_standardises_to_zero_mean_unit_std() {
        let rows = vec![row(vec![1.0, 5.0]), row(vec![3.0, 5.0])];
        let sums = FeatureSums::from_rows(&rows, 2);
        assert_eq!(
            sums,
            FeatureSums {
                count: 2,
                sum: vec![4.0, 10.0],
                sum_of_squares: vec![10.0, 50.0]
            }
        );
        let scaling = Scaling::from_sums(&sums).unwrap_or_else(|error| panic!("{error}"));
        // These inputs are small integers, so mean and std are exact in f64.
        assert_eq!(scaling.mean, vec![2.0, 5.0]);
        assert_eq!(scaling.std, vec![1.0, MIN_STD]);
        let mut features = [3.0_f32, 5.0, 42.0];
        scaling.apply(&mut features);
        assert_eq!(features, [1.0, 0.0, 42.0]);
    }

    #[test]
    fn errors_are_typed() {
        assert_eq!(
            Scaling::from_sums(&FeatureSums::empty(3)),
            Err(FeatureError::NoRows)
        );
        let mut two = FeatureSums::empty(2);
        assert_eq!(
            two.merge(&FeatureSums::empty(3)),
            Err(FeatureError::WidthMismatch {
                expected: 2,
                found: 3
            })
        );
        let lopsided = FeatureSums {
            count: 1,
            sum: vec![1.0],
            sum_of_squares: vec![],
        };
        assert_eq!(
            Scaling::from_sums(&lopsided),
            Err(FeatureError::WidthMismatch {
                expected: 1,
                found: 0
            })
        );
        let infinite = FeatureSums {
            count: 1,
            sum: vec![0.0, f64::INFINITY],
            sum_of_squares: vec![0.0, 1.0],
        };
        assert_eq!(
            Scaling::from_sums(&infinite),
            Err(FeatureError::NonFinite { feature_index: 1 })
        );
        let mut full = FeatureSums {
            count: u64::MAX,
            sum: vec![],
            sum_of_squares: vec![],
        };
        let one = FeatureSums {
            count: 1,
            sum: vec![],
            sum_of_squares: vec![],
        };
        assert_eq!(full.merge(&one), Err(FeatureError::CountOverflow));
    }

    #[test]
    fn rows_of_the_wrong_width_are_not_counted() {
        let rows = vec![row(vec![1.0, 2.0]), row(vec![7.0])];
        assert_eq!(FeatureSums::from_rows(&rows, 2).count, 1);
    }

    proptest! {
        /// Merging the sums of any split of the rows gives the sums of all rows. Values are
        /// small integers so every partial sum is exact in f64 and equality can be exact.
        #[test]
        fn merge_equals_sums_of_the_union(
            values in proptest::collection::vec(proptest::collection::vec(-1000i32..1000, 3), 0..40),
            split_at in 0usize..40,
        ) {
            let rows: Vec<CustomerRow> = values
                .iter()
                .map(|row_values| row(row_values.iter().map(|value| *value as f32).collect()))
                .collect();
            let split_at = split_at.min(rows.len());
            let (left, right) = rows.split_at(split_at);
            let mut merged = FeatureSums::from_rows(left, 3);
            prop_assert_eq!(merged.merge(&FeatureSums::from_rows(right, 3)), Ok(()));
            prop_assert_eq!(merged, FeatureSums::from_rows(&rows, 3));
        }
    }
}
