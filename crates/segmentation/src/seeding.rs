//! DP seeding: a noised histogram, with clipped offset sums, over public
//! cells of the box; the coordinator turns the dense cells into a weighted
//! coreset and seeds every k from it by weighted k-means++ (post-processing).
//!
//! Why this and not FedDP-KMeans (Scott et al., ICML 2025): its
//! initialisation needs server-side data to project onto and seed from,
//! which a Veil coordinator does not have; a histogram over public cells
//! needs nothing but the public scaling, is one additive vector (so it goes
//! through secure aggregation like every other release), and one release
//! seeds every k the job asks for. Plain grids grow as `m^d`; the Voronoi
//! cells of a Halton sequence give any number of cells in any dimension,
//! and the released offset sums place each coreset point at its cell's
//! (clipped) mean, not at the cell's centre.

use crate::config::{CandidateLayout, SegmentationConfig};
use crate::node::accumulate_offsets;
use crate::points::Points;
use crate::release::Release;

/// The first primes, one Halton base per feature (features beyond these
/// reuse a base with a different skip, which stays data-independent).
const PRIMES: [u32; 32] = [
    2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97,
    101, 103, 107, 109, 113, 127, 131,
];

/// Halton points skip the first few, which cluster near the origin corner.
const HALTON_SKIP: u64 = 20;

fn radical_inverse(mut index: u64, base: u32) -> f64 {
    let base = u64::from(base);
    let mut inverse = 0.0;
    let mut scale = 1.0 / base as f64;
    while index > 0 {
        inverse += (index % base) as f64 * scale;
        index /= base;
        scale /= base as f64;
    }
    inverse
}

/// The public centres of the seeding cells, the same at every party.
pub fn candidate_centres(config: &SegmentationConfig) -> Vec<Vec<f64>> {
    let bound = config.box_bound;
    let d = config.n_features;
    match config.seeding.layout {
        CandidateLayout::Halton { count } => (0..count as u64)
            .map(|index| {
                (0..d)
                    .map(|feature| {
                        let base = PRIMES[feature % PRIMES.len()];
                        let skip = HALTON_SKIP + 7919 * (feature / PRIMES.len()) as u64;
                        -bound + 2.0 * bound * radical_inverse(index + skip, base)
                    })
                    .collect()
            })
            .collect(),
        CandidateLayout::Grid { per_axis } => {
            let cells = config.candidate_count().unwrap_or(0);
            (0..cells)
                .map(|mut cell| {
                    (0..d)
                        .map(|_| {
                            let position = cell % per_axis;
                            cell /= per_axis;
                            -bound + (2 * position + 1) as f64 * bound / per_axis as f64
                        })
                        .collect()
                })
                .collect()
        }
    }
}

/// ℓ2-clips `offset` to `radius` in place.
pub(crate) fn clip_offset(offset: &mut [f64], radius: f64) {
    let norm = offset.iter().map(|value| value * value).sum::<f64>().sqrt();
    if norm > radius {
        let factor = radius / norm;
        for value in offset.iter_mut() {
            *value *= factor;
        }
    }
}

/// The node's seeding vector, before noise: for each public cell (in
/// order), the quantised sum of its customers' offsets from the cell's
/// centre, each clipped to `seeding.radius`, then their count. One customer
/// adds to one cell only.
pub fn local_seeding_sums(
    points: &Points,
    centres: &[Vec<f64>],
    config: &SegmentationConfig,
    release: &Release,
) -> Vec<i64> {
    accumulate_offsets(
        points,
        centres,
        config.seeding.radius,
        release,
        config.n_features + 1,
        |_, _, _| {},
    )
}

/// The weighted coreset of the noised seeding sum: one point per cell whose
/// noised count is at least `min_count`, at the cell's centre plus its
/// noised mean offset (clipped to the seeding radius, clamped to the box),
/// weighted by the noised count. Pure post-processing.
pub(crate) fn coreset(
    noised_sum: &[i64],
    centres: &[Vec<f64>],
    config: &SegmentationConfig,
    release: &Release,
    min_count: f64,
) -> Vec<(Vec<f64>, f64)> {
    let block = config.n_features + 1;
    let granularity = release.granularity();
    let mut cells: Vec<(Vec<f64>, f64)> = noised_sum
        .chunks_exact(block)
        .zip(centres)
        .map(|(cell, centre)| {
            let count = cell[config.n_features] as f64 * granularity;
            let mut offset: Vec<f64> = cell[..config.n_features]
                .iter()
                .map(|&sum| sum as f64 * granularity / count.max(1.0))
                .collect();
            clip_offset(&mut offset, config.seeding.radius);
            let point = centre
                .iter()
                .zip(&offset)
                .map(|(centre, offset)| {
                    (centre + offset).clamp(-config.box_bound, config.box_bound)
                })
                .collect();
            (point, count)
        })
        .collect();
    let largest_k = config.k_values.iter().max().copied().unwrap_or(1);
    let dense = cells
        .iter()
        .filter(|(_, count)| *count >= min_count)
        .count();
    if dense >= largest_k {
        cells.retain(|(_, count)| *count >= min_count);
    } else {
        // Too few dense cells: the densest `largest_k` by noised count.
        cells.sort_by(|a, b| b.1.total_cmp(&a.1));
        cells.truncate(largest_k);
        for cell in &mut cells {
            cell.1 = cell.1.max(1.0);
        }
    }
    cells
}
