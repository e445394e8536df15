//! The fitted segmentation a node applies locally (`client-node segment`):
//! each customer to its nearest centroid, with the distance.

use serde::{Deserialize, Serialize};
use veil_behaviour_features::Scaling;

use crate::coordinator::ClusteringOutcome;
use crate::error::SegmentationError;
use crate::points::{check_box, nearest};

/// A customer's segment.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    /// Zero-based segment index.
    pub segment: usize,
    /// Euclidean distance to the segment's centroid, in the public scaling
    /// (standard deviations of the public spread), after clamping to the box.
    pub distance: f64,
}

/// Centroids plus the public scaling and box they live in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentModel {
    /// Centroids in the public scaling.
    centroids: Vec<Vec<f64>>,
    /// The public scaling customers are standardised with.
    scaling: Scaling,
    /// `B` of the box.
    box_bound: f64,
}

impl SegmentModel {
    /// The model of one fitted k.
    pub fn new(
        outcome: &ClusteringOutcome,
        scaling: Scaling,
        box_bound: f64,
    ) -> Result<Self, SegmentationError> {
        Self::from_centroids(outcome.centroids.clone(), scaling, box_bound)
    }

    /// The model of centroids in the public scaling (as a job's exported
    /// result carries them), refused unless every one has the scaling's width.
    pub fn from_centroids(
        centroids: Vec<Vec<f64>>,
        scaling: Scaling,
        box_bound: f64,
    ) -> Result<Self, SegmentationError> {
        let n_features = scaling.mean.len();
        check_box(n_features, box_bound)?;
        if centroids.is_empty() {
            return Err(SegmentationError::InvalidConfig {
                field: "centroids",
                reason: "a model needs at least one centroid".to_owned(),
            });
        }
        if let Some(bad) = centroids.iter().find(|c| c.len() != n_features) {
            return Err(SegmentationError::WrongLength {
                what: "centroid",
                expected: n_features,
                actual: bad.len(),
            });
        }
        if centroids.iter().flatten().any(|value| !value.is_finite()) {
            return Err(SegmentationError::InvalidConfig {
                field: "centroids",
                reason: "a centroid value is not finite".to_owned(),
            });
        }
        Ok(Self {
            centroids,
            scaling,
            box_bound,
        })
    }

    /// Number of segments.
    pub fn k(&self) -> usize {
        self.centroids.len()
    }

    /// The segment of one customer given in original units; `row` is the
    /// customer's index, used only to name it in an error.
    pub fn assign(&self, row: usize, features: &[f64]) -> Result<Assignment, SegmentationError> {
        let expected = self.scaling.mean.len();
        if features.len() != expected {
            return Err(SegmentationError::WrongWidth {
                row,
                expected,
                actual: features.len(),
            });
        }
        let mut scaled = Vec::with_capacity(expected);
        for (feature, ((value, mean), std)) in features
            .iter()
            .zip(&self.scaling.mean)
            .zip(&self.scaling.std)
            .enumerate()
        {
            if !value.is_finite() {
                return Err(SegmentationError::NonFinite { row, feature });
            }
            scaled.push(((value - mean) / std).clamp(-self.box_bound, self.box_bound));
        }
        let (segment, squared) = nearest(&scaled, &self.centroids);
        Ok(Assignment {
            segment,
            distance: squared.sqrt(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_customer_goes_to_the_nearest_centroid_in_the_public_scaling() {
        let outcome = ClusteringOutcome {
            k: 2,
            centroids: vec![vec![0.0, 0.0], vec![2.0, 0.0]],
            centroids_original: Vec::new(),
            segments: Vec::new(),
            noised_cost: 0.0,
            reseeded: 0,
        };
        let scaling = Scaling {
            mean: vec![100.0, 0.0],
            std: vec![10.0, 1.0],
        };
        let model = SegmentModel::new(&outcome, scaling, 3.0).expect("valid model");
        // 115 is 1.5 spreads above the mean: nearer the second centroid, 0.5 away.
        assert_eq!(
            model.assign(0, &[115.0, 0.0]),
            Ok(Assignment {
                segment: 1,
                distance: 0.5
            })
        );
        // Far outside the box is clamped to 3 spreads before measuring.
        assert_eq!(
            model.assign(1, &[1000.0, 0.0]),
            Ok(Assignment {
                segment: 1,
                distance: 1.0
            })
        );
        assert_eq!(model.k(), 2);
    }
}
