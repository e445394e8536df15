//! Centralised k-means for comparison and for post-processing: weighted
//! k-means++ seeding (Arthur and Vassilvitskii 2007) refined by Lloyd's
//! algorithm, best of several restarts; and the adjusted Rand index
//! (Hubert and Arabie 1985) for comparing a clustering with the truth.
//!
//! The coordinator runs the weighted form on the noised seeding coreset
//! (post-processing of a DP release); tests and benchmarks run it on pooled
//! data, which production never has.

use rand_core::RngCore;

use crate::points::{Points, nearest, squared_distance};

/// Lloyd steps per restart; stops earlier once no assignment changes.
const MAX_LLOYD_STEPS: usize = 300;

/// Uniform in `[0, 1)` from 53 random bits.
pub(crate) fn uniform<R: RngCore>(rng: &mut R) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Weighted k-means (k-means++ seeding, then Lloyd) on `rows`, best of
/// `restarts` by weighted cost. Rows with non-positive weight are ignored.
/// Returns fewer than `k` centroids only when fewer distinct rows exist.
pub(crate) fn weighted_kmeans<R: RngCore>(
    rows: &[&[f64]],
    weights: &[f64],
    k: usize,
    restarts: usize,
    rng: &mut R,
) -> Vec<Vec<f64>> {
    let mut best: Option<(f64, Vec<Vec<f64>>)> = None;
    for _ in 0..restarts.max(1) {
        let mut centroids = plus_plus_seeds(rows, weights, k, rng);
        lloyd(rows, weights, &mut centroids);
        let cost: f64 = rows
            .iter()
            .zip(weights)
            .map(|(row, weight)| weight.max(0.0) * nearest(row, &centroids).1)
            .sum();
        if best.as_ref().is_none_or(|(best_cost, _)| cost < *best_cost) {
            best = Some((cost, centroids));
        }
    }
    best.map(|(_, centroids)| centroids).unwrap_or_default()
}

fn plus_plus_seeds<R: RngCore>(
    rows: &[&[f64]],
    weights: &[f64],
    k: usize,
    rng: &mut R,
) -> Vec<Vec<f64>> {
    let mut centroids: Vec<Vec<f64>> = Vec::with_capacity(k);
    let mut distances: Vec<f64> = vec![f64::INFINITY; rows.len()];
    while centroids.len() < k {
        // The first seed by weight, later ones by weight × squared distance.
        let scores: Vec<f64> = weights
            .iter()
            .zip(&distances)
            .map(|(weight, distance)| {
                let weight = weight.max(0.0);
                if distance.is_infinite() {
                    weight
                } else {
                    weight * distance
                }
            })
            .collect();
        let total: f64 = scores.iter().sum();
        // Zero or NaN total weight: nothing left to draw from.
        if total.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            break;
        }
        let mut target = uniform(rng) * total;
        let mut chosen = scores.len() - 1;
        for (index, score) in scores.iter().enumerate() {
            if target < *score {
                chosen = index;
                break;
            }
            target -= score;
        }
        let seed = rows[chosen].to_vec();
        for (distance, row) in distances.iter_mut().zip(rows) {
            *distance = distance.min(squared_distance(row, &seed));
        }
        centroids.push(seed);
    }
    centroids
}

fn lloyd(rows: &[&[f64]], weights: &[f64], centroids: &mut [Vec<f64>]) {
    let n_features = centroids.first().map_or(0, Vec::len);
    let mut assignment: Vec<usize> = vec![usize::MAX; rows.len()];
    for _ in 0..MAX_LLOYD_STEPS {
        let mut changed = false;
        let mut sums = vec![vec![0.0; n_features]; centroids.len()];
        let mut mass = vec![0.0; centroids.len()];
        for ((row, weight), assigned) in rows.iter().zip(weights).zip(&mut assignment) {
            let (cluster, _) = nearest(row, centroids);
            changed |= *assigned != cluster;
            *assigned = cluster;
            let weight = weight.max(0.0);
            mass[cluster] += weight;
            for (sum, value) in sums[cluster].iter_mut().zip(*row) {
                *sum += weight * value;
            }
        }
        for ((centroid, sum), mass) in centroids.iter_mut().zip(sums).zip(mass) {
            // An emptied cluster keeps its place; k-means++ makes that rare.
            if mass > 0.0 {
                *centroid = sum.into_iter().map(|value| value / mass).collect();
            }
        }
        if !changed {
            break;
        }
    }
}

/// Centralised k-means on pooled points: k-means++ seeding and Lloyd to
/// convergence, best of `restarts` by cost (scikit-learn's `KMeans` default
/// is best of 10 in older releases, the comparison the issue asks for).
pub fn kmeans_plus_plus<R: RngCore>(
    points: &Points,
    k: usize,
    restarts: usize,
    rng: &mut R,
) -> Vec<Vec<f64>> {
    let rows: Vec<&[f64]> = points.rows().collect();
    let weights = vec![1.0; rows.len()];
    weighted_kmeans(&rows, &weights, k, restarts, rng)
}

/// Each customer's nearest centroid.
pub fn assign_all(points: &Points, centroids: &[Vec<f64>]) -> Vec<usize> {
    points.rows().map(|row| nearest(row, centroids).0).collect()
}

/// The adjusted Rand index of two labellings of the same customers: 1 for
/// identical partitions (up to renaming), about 0 for independent ones.
/// Returns 1 when both put everyone in one cluster, and `None` when the
/// lengths differ.
pub fn adjusted_rand_index(first: &[usize], second: &[usize]) -> Option<f64> {
    if first.len() != second.len() {
        return None;
    }
    let rows = first.iter().max().map_or(0, |max| max + 1);
    let columns = second.iter().max().map_or(0, |max| max + 1);
    let mut table = vec![0u64; rows * columns];
    for (a, b) in first.iter().zip(second) {
        table[a * columns + b] += 1;
    }
    let pairs = |count: u64| (count as f64) * (count as f64 - 1.0) / 2.0;
    let index: f64 = table.iter().map(|&count| pairs(count)).sum();
    let row_sums: f64 = table
        .chunks(columns.max(1))
        .map(|row| pairs(row.iter().sum()))
        .sum();
    let column_sums: f64 = (0..columns)
        .map(|column| pairs((0..rows).map(|row| table[row * columns + column]).sum()))
        .sum();
    let total = pairs(first.len() as u64);
    let expected = row_sums * column_sums / total;
    let maximum = (row_sums + column_sums) / 2.0;
    if maximum == expected {
        return Some(1.0);
    }
    Some((index - expected) / (maximum - expected))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adjusted_rand_index_matches_hand_computed_values() {
        // Identical up to renaming.
        assert_eq!(adjusted_rand_index(&[0, 0, 1, 1], &[1, 1, 0, 0]), Some(1.0));
        // By hand (and scikit-learn's adjusted_rand_score): 4/7.
        let value = adjusted_rand_index(&[0, 0, 1, 1], &[0, 0, 1, 2]).unwrap_or(f64::NAN);
        assert!((value - 4.0 / 7.0).abs() < 1e-12, "{value}");
        // By hand: no agreeing pairs, expected index 18/15, maximum 4.5, so
        // (0 - 1.2) / (4.5 - 1.2) = -4/11.
        let value =
            adjusted_rand_index(&[0, 0, 0, 1, 1, 1], &[0, 1, 2, 0, 1, 2]).unwrap_or(f64::NAN);
        assert!((value + 4.0 / 11.0).abs() < 1e-12, "{value}");
        assert_eq!(adjusted_rand_index(&[0], &[0, 1]), None);
    }
}
