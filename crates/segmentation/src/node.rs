//! The node's side: pure functions from a partner's customers and the
//! public centroids to the integer vector it releases, and the one entry
//! point that checks a request, computes the vector and adds the node's
//! noise share.
//!
//! Layouts (per cluster, clusters in order; `u = clip(x - c, r)` is a
//! customer's offset from its nearest centroid `c`, clipped to ℓ2 norm `r`;
//! every value is quantised to whole steps of the release's `γ`):
//! - Lloyd: `[Σu_0 .. Σu_{d-1}, count]`.
//! - Profile: `[Σu_0 .. Σu_{d-1}, count, Σ min(‖x - c‖², D²)/D², label count]`,
//!   the last only when the job has a label.
//! - Seeding: see [`crate::seeding::local_seeding_sums`].

use rand_core::CryptoRng;

use crate::config::SegmentationConfig;
use crate::error::SegmentationError;
use crate::points::{Points, nearest};
use crate::release::{PrivacyPlan, Release, ReleaseKind};
use crate::seeding::{candidate_centres, clip_offset, local_seeding_sums};

/// What the coordinator asks every node for: which release of the plan, at
/// which centroids (none for seeding). Nodes take the release's kind and
/// noise from their own copy of the plan, never from the request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Index into the plan's releases.
    pub release: usize,
    /// Centroids in the public scaling (empty for seeding).
    pub centroids: Vec<Vec<f64>>,
}

/// The loop every release shares: each customer's offset from its nearest
/// centre, clipped to `radius` and quantised, is added to that centre's
/// block of `block` values, followed by a count of 1; `extra` then adds the
/// release's other per-customer values (row index, squared distance, the
/// block's remaining slots). Only the customer's own block changes.
pub(crate) fn accumulate_offsets(
    points: &Points,
    centres: &[Vec<f64>],
    radius: f64,
    release: &Release,
    block: usize,
    mut extra: impl FnMut(usize, f64, &mut [i64]),
) -> Vec<i64> {
    let d = points.n_features();
    let mut sums = vec![0i64; centres.len() * block];
    let one = release.quantise(1.0);
    let mut offset = vec![0.0; d];
    for (index, row) in points.rows().enumerate() {
        let (centre, distance) = nearest(row, centres);
        for ((value, coordinate), slot) in row.iter().zip(&centres[centre]).zip(offset.iter_mut()) {
            *slot = value - coordinate;
        }
        clip_offset(&mut offset, radius);
        let target = &mut sums[centre * block..(centre + 1) * block];
        for (sum, value) in target.iter_mut().zip(&offset) {
            *sum = sum.saturating_add(release.quantise(*value));
        }
        target[d] = target[d].saturating_add(one);
        extra(index, distance, &mut target[d + 1..]);
    }
    sums
}

/// The Lloyd vector before noise: for each cluster, the quantised sum of
/// its customers' clipped offsets from its centroid and their count.
pub fn local_cluster_sums(
    points: &Points,
    centroids: &[Vec<f64>],
    radius: f64,
    release: &Release,
) -> Vec<i64> {
    accumulate_offsets(
        points,
        centroids,
        radius,
        release,
        points.n_features() + 1,
        |_, _, _| {},
    )
}

/// The profile vector before noise (layout in the module docs). `labels`
/// must be given exactly when the config has a label.
pub fn local_profile_sums(
    points: &Points,
    labels: Option<&[bool]>,
    centroids: &[Vec<f64>],
    config: &SegmentationConfig,
    release: &Release,
) -> Vec<i64> {
    let one = release.quantise(1.0);
    let cost_cap = config.cost_bound * config.cost_bound;
    accumulate_offsets(
        points,
        centroids,
        config.radius,
        release,
        config.profile_block(),
        |index, distance, rest| {
            rest[0] = rest[0].saturating_add(release.quantise(distance.min(cost_cap) / cost_cap));
            if config.with_label && labels.and_then(|labels| labels.get(index)) == Some(&true) {
                rest[1] = rest[1].saturating_add(one);
            }
        },
    )
}

/// The node's whole step: checks the request against its own plan and
/// data, computes the release's vector and adds its noise share from `rng`
/// (a cryptographic generator keyed by the OS in production). Charging the
/// release and releasing it at most once is the node protocol's job.
pub fn node_release<R: CryptoRng>(
    config: &SegmentationConfig,
    plan: &PrivacyPlan,
    request: &Request,
    points: &Points,
    labels: Option<&[bool]>,
    rng: &mut R,
) -> Result<Vec<i64>, SegmentationError> {
    let release = plan
        .release(request.release)
        .ok_or(SegmentationError::OutOfOrder {
            expected: None,
            actual: request.release,
        })?;
    if points.n_features() != config.n_features {
        return Err(SegmentationError::WrongLength {
            what: "customer feature width",
            expected: config.n_features,
            actual: points.n_features(),
        });
    }
    match (config.with_label, labels) {
        (true, Some(labels)) if labels.len() == points.len() => {}
        (true, Some(labels)) => {
            return Err(SegmentationError::LabelCount {
                labels: labels.len(),
                points: points.len(),
            });
        }
        (true, None) => {
            return Err(SegmentationError::LabelCount {
                labels: 0,
                points: points.len(),
            });
        }
        (false, _) => {}
    }
    let expected_centroids = match release.kind {
        ReleaseKind::Seeding | ReleaseKind::RfmHistograms => 0,
        ReleaseKind::Lloyd { k, .. } | ReleaseKind::Profile { k } => k,
    };
    check_centroids(&request.centroids, expected_centroids, config)?;
    let mut vector = match release.kind {
        ReleaseKind::Seeding => {
            local_seeding_sums(points, &candidate_centres(config), config, release)
        }
        ReleaseKind::Lloyd { .. } => {
            local_cluster_sums(points, &request.centroids, config.radius, release)
        }
        ReleaseKind::Profile { .. } => {
            local_profile_sums(points, labels, &request.centroids, config, release)
        }
        ReleaseKind::RfmHistograms => {
            return Err(SegmentationError::OutOfOrder {
                expected: None,
                actual: request.release,
            });
        }
    };
    release.add_noise(&mut vector, rng)?;
    Ok(vector)
}

/// Centroids from the coordinator are outside input: count, width, finite
/// and inside the box.
fn check_centroids(
    centroids: &[Vec<f64>],
    expected: usize,
    config: &SegmentationConfig,
) -> Result<(), SegmentationError> {
    if centroids.len() != expected {
        return Err(SegmentationError::WrongLength {
            what: "requested centroids",
            expected,
            actual: centroids.len(),
        });
    }
    for (index, centroid) in centroids.iter().enumerate() {
        if centroid.len() != config.n_features {
            return Err(SegmentationError::WrongLength {
                what: "a requested centroid",
                expected: config.n_features,
                actual: centroid.len(),
            });
        }
        if let Some(feature) = centroid
            .iter()
            .position(|value| !(value.is_finite() && value.abs() <= config.box_bound))
        {
            return Err(SegmentationError::InvalidConfig {
                field: "request.centroids",
                reason: format!(
                    "centroid {index}, feature {feature} is not a finite number inside the box"
                ),
            });
        }
    }
    Ok(())
}
