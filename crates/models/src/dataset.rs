//! Labelled example rows in the row-major layout that training and evaluation read.

use crate::ModelError;
use crate::spec::check_finite;

/// Row-major examples: features.len() == n_rows * n_features; labels.len() == n_rows.
///
/// Construction checks shape and finiteness once, so training and evaluation can trust the data.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Row-major feature values, `n_features` per row.
    pub features: Vec<f32>,
    /// One label per row: 0 or 1 (or a probability) for binary models, any finite value for
    /// regression.
    pub labels: Vec<f32>,
    /// Features per row.
    pub n_features: usize,
}

impl Dataset {
    /// Checks the shapes and that every value is finite.
    pub fn new(
        features: Vec<f32>,
        labels: Vec<f32>,
        n_features: usize,
    ) -> Result<Self, ModelError> {
        let dataset = Self {
            features,
            labels,
            n_features,
        };
        dataset.check()?;
        Ok(dataset)
    }

    /// Number of example rows.
    pub fn n_rows(&self) -> usize {
        self.labels.len()
    }

    /// Re-checks the invariants, because the fields are public and may have been edited after
    /// `new`.
    pub(crate) fn check(&self) -> Result<(), ModelError> {
        if self.n_features == 0 {
            return Err(ModelError::ZeroFeatures);
        }
        let expected = self.labels.len().saturating_mul(self.n_features);
        if self.features.len() != expected {
            return Err(ModelError::FeatureLength {
                expected,
                actual: self.features.len(),
            });
        }
        check_finite(&self.features, "features")?;
        check_finite(&self.labels, "labels")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_rejects_bad_shapes_and_non_finite_values() {
        assert_eq!(
            Dataset::new(vec![1.0; 5], vec![0.0, 1.0], 3),
            Err(ModelError::FeatureLength {
                expected: 6,
                actual: 5
            })
        );
        assert_eq!(
            Dataset::new(vec![], vec![], 0),
            Err(ModelError::ZeroFeatures)
        );
        assert!(matches!(
            Dataset::new(vec![1.0, f32::NAN], vec![0.0], 2),
            Err(ModelError::NonFinite {
                input: "features",
                index: 1,
                ..
            })
        ));
        assert!(matches!(
            Dataset::new(vec![1.0, 2.0], vec![f32::INFINITY], 2),
            Err(ModelError::NonFinite {
                input: "labels",
                index: 0,
                ..
            })
        ));
        let dataset = Dataset::new(vec![1.0; 6], vec![0.0, 1.0], 3);
        assert_eq!(dataset.map(|d| d.n_rows()), Ok(2));
    }
}
