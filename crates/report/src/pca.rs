//! A 2-D projection of segment centroids for the segment plot: principal
//! components of the centroids, each feature standardised across centroids
//! first so that a feature in large units does not decide the picture alone.

/// Power-iteration steps per component; the covariance is at most a few
/// dozen features square, and 200 steps converge far below pixel resolution.
const POWER_STEPS: usize = 200;

/// Each centroid's coordinates on the first two principal components. With
/// one feature (or centroids that vary along one direction only), the second
/// coordinate is 0. Rows of unequal length or non-finite values give `None`.
pub fn project_to_plane(centroids: &[Vec<f64>]) -> Option<Vec<(f64, f64)>> {
    let features = centroids.first()?.len();
    if features == 0
        || centroids
            .iter()
            .any(|row| row.len() != features || row.iter().any(|value| !value.is_finite()))
    {
        return None;
    }
    let count = centroids.len() as f64;
    let standardised: Vec<Vec<f64>> = {
        let mut columns = vec![(0.0, 0.0); features];
        for (feature, column) in columns.iter_mut().enumerate() {
            let mean = centroids.iter().map(|row| row[feature]).sum::<f64>() / count;
            let variance = centroids
                .iter()
                .map(|row| (row[feature] - mean).powi(2))
                .sum::<f64>()
                / count;
            *column = (mean, variance.sqrt());
        }
        centroids
            .iter()
            .map(|row| {
                row.iter()
                    .zip(&columns)
                    .map(|(value, (mean, deviation))| {
                        if *deviation > 0.0 {
                            (value - mean) / deviation
                        } else {
                            0.0
                        }
                    })
                    .collect()
            })
            .collect()
    };
    let mut covariance = vec![vec![0.0; features]; features];
    for row in &standardised {
        for i in 0..features {
            for j in 0..features {
                covariance[i][j] += row[i] * row[j] / count;
            }
        }
    }
    let first = leading_eigenvector(&covariance);
    let eigenvalue = rayleigh(&covariance, &first);
    for i in 0..features {
        for j in 0..features {
            covariance[i][j] -= eigenvalue * first[i] * first[j];
        }
    }
    let second = leading_eigenvector(&covariance);
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    Some(
        standardised
            .iter()
            .map(|row| (dot(row, &first), dot(row, &second)))
            .collect(),
    )
}

/// The unit eigenvector of the largest eigenvalue of a symmetric
/// positive semi-definite matrix (zero vector when the matrix is zero).
fn leading_eigenvector(matrix: &[Vec<f64>]) -> Vec<f64> {
    let size = matrix.len();
    // A start with distinct entries is not orthogonal to any eigenvector in practice.
    let mut vector: Vec<f64> = (0..size).map(|i| 1.0 + i as f64 / size as f64).collect();
    for _ in 0..POWER_STEPS {
        let next: Vec<f64> = matrix
            .iter()
            .map(|row| row.iter().zip(&vector).map(|(a, b)| a * b).sum())
            .collect();
        let norm = next.iter().map(|value| value * value).sum::<f64>().sqrt();
        if norm < 1e-12 {
            return vec![0.0; size];
        }
        vector = next.into_iter().map(|value| value / norm).collect();
    }
    vector
}

fn rayleigh(matrix: &[Vec<f64>], vector: &[f64]) -> f64 {
    matrix
        .iter()
        .zip(vector)
        .map(|(row, v)| v * row.iter().zip(vector).map(|(a, b)| a * b).sum::<f64>())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centroids_on_a_line_project_onto_the_first_axis() {
        // Three centroids along (1, 2, 0) in standardised units: all spread is
        // on the first component, none on the second.
        let centroids = vec![
            vec![0.0, 0.0, 5.0],
            vec![1.0, 2.0, 5.0],
            vec![2.0, 4.0, 5.0],
        ];
        let plane = project_to_plane(&centroids).unwrap();
        let spread = (plane[2].0 - plane[0].0).abs();
        assert!(spread > 2.0, "{plane:?}");
        assert!(plane.iter().all(|(_, y)| y.abs() < 1e-9), "{plane:?}");
        // Distances are kept: the middle centroid sits halfway.
        assert!((plane[1].0 - (plane[0].0 + plane[2].0) / 2.0).abs() < 1e-9);
    }

    #[test]
    fn ragged_or_empty_centroids_are_refused() {
        assert_eq!(project_to_plane(&[]), None);
        assert_eq!(project_to_plane(&[vec![1.0], vec![1.0, 2.0]]), None);
        assert_eq!(project_to_plane(&[vec![f64::NAN]]), None);
    }
}
