//! Customers as points in the public box, and the distances k-means needs.
//!
//! Features arrive in their public scaling (`veil_behaviour_features::Scaling`, fixed
//! from the feature formulas, never from data) and are clamped to the box
//! `[-B, B]^d`. Clamping is a per-customer, data-independent map, so it costs
//! no privacy and bounds every later computation.

use veil_behaviour_features::Scaling;

use crate::error::SegmentationError;

/// One partner's customers in the public scaling, row-major and clamped to
/// the box. Flat storage: a million customers are one allocation.
#[derive(Debug, Clone, PartialEq)]
pub struct Points {
    /// Features per customer, `d`.
    n_features: usize,
    /// `len() * n_features` values, each in `[-box_bound, box_bound]`.
    values: Vec<f64>,
}

impl Points {
    /// Points already in the public scaling; each value is clamped to
    /// `[-box_bound, box_bound]`. Refuses rows of the wrong width and
    /// non-finite values, naming the row and feature.
    pub fn from_scaled<Row: AsRef<[f64]>>(
        rows: &[Row],
        n_features: usize,
        box_bound: f64,
    ) -> Result<Self, SegmentationError> {
        check_box(n_features, box_bound)?;
        let mut values = Vec::with_capacity(rows.len() * n_features);
        for (row_index, row) in rows.iter().enumerate() {
            let row = row.as_ref();
            if row.len() != n_features {
                return Err(SegmentationError::WrongWidth {
                    row: row_index,
                    expected: n_features,
                    actual: row.len(),
                });
            }
            for (feature, value) in row.iter().enumerate() {
                if !value.is_finite() {
                    return Err(SegmentationError::NonFinite {
                        row: row_index,
                        feature,
                    });
                }
                values.push(value.clamp(-box_bound, box_bound));
            }
        }
        Ok(Self { n_features, values })
    }

    /// Points in original units, standardised by the public `scaling` and
    /// clamped to the box.
    pub fn from_original<Row: AsRef<[f64]>>(
        rows: &[Row],
        scaling: &Scaling,
        box_bound: f64,
    ) -> Result<Self, SegmentationError> {
        let n_features = scaling.mean.len();
        let scaled: Vec<Vec<f64>> = rows
            .iter()
            .map(|row| {
                let row = row.as_ref();
                row.iter()
                    .enumerate()
                    .map(
                        |(index, value)| match (scaling.mean.get(index), scaling.std.get(index)) {
                            (Some(mean), Some(std)) => (value - mean) / std,
                            _ => *value,
                        },
                    )
                    .collect()
            })
            .collect();
        Self::from_scaled(&scaled, n_features, box_bound)
    }

    /// Number of customers.
    pub fn len(&self) -> usize {
        self.values.len().checked_div(self.n_features).unwrap_or(0)
    }

    /// Whether there are no customers.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Features per customer.
    pub fn n_features(&self) -> usize {
        self.n_features
    }

    /// The customers' rows in order.
    pub fn rows(&self) -> impl Iterator<Item = &[f64]> {
        self.values.chunks_exact(self.n_features.max(1))
    }

    /// Pools several partners' points (for baselines and tests; production
    /// never pools).
    pub fn concat(parts: &[&Points]) -> Result<Self, SegmentationError> {
        let n_features = parts.first().map_or(0, |part| part.n_features);
        let mut values = Vec::new();
        for part in parts {
            if part.n_features != n_features {
                return Err(SegmentationError::WrongLength {
                    what: "pooled partner's feature width",
                    expected: n_features,
                    actual: part.n_features,
                });
            }
            values.extend_from_slice(&part.values);
        }
        Ok(Self { n_features, values })
    }
}

pub(crate) fn check_box(n_features: usize, box_bound: f64) -> Result<(), SegmentationError> {
    if n_features == 0 {
        return Err(SegmentationError::InvalidConfig {
            field: "n_features",
            reason: "must be at least 1".to_owned(),
        });
    }
    if !(box_bound.is_finite() && box_bound > 0.0) {
        return Err(SegmentationError::InvalidConfig {
            field: "box_bound",
            reason: format!("must be a positive finite number, got {box_bound}"),
        });
    }
    Ok(())
}

/// `‖a - b‖²`.
pub(crate) fn squared_distance(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// The nearest centroid and the squared distance to it; ties go to the
/// lower index, so every party assigns a customer the same way.
pub(crate) fn nearest(point: &[f64], centroids: &[Vec<f64>]) -> (usize, f64) {
    let mut best = (0, f64::INFINITY);
    for (index, centroid) in centroids.iter().enumerate() {
        let distance = squared_distance(point, centroid);
        if distance < best.1 {
            best = (index, distance);
        }
    }
    best
}

/// The k-means cost: the sum over customers of the squared distance to the
/// nearest centroid.
pub fn kmeans_cost(points: &Points, centroids: &[Vec<f64>]) -> f64 {
    points.rows().map(|row| nearest(row, centroids).1).sum()
}
