//! The coordinator's side as a sans-IO state machine: it says which release
//! it needs next ([`SegmentationCoordinator::request`]), takes the noised sum
//! over the nodes ([`SegmentationCoordinator::handle_sum`]) and ends with one
//! outcome per k. It does no IO, reads no clock and sees nothing but noised
//! sums; every decision (dense cells, tiny clusters, re-seeding) is
//! post-processing of them.

use rand_core::RngCore;
use serde::{Deserialize, Serialize};
use veil_behaviour_features::Scaling;

use crate::baseline::weighted_kmeans;
use crate::config::SegmentationConfig;
use crate::error::SegmentationError;
use crate::node::Request;
use crate::points::nearest;
use crate::release::{PrivacyPlan, Release, ReleaseKind};
use crate::seeding::{candidate_centres, clip_offset, coreset};

/// A cluster (or seeding cell) counts as tiny when its noised count is below
/// this many standard deviations of the count's noise: its mean would be
/// mostly noise, so it is re-seeded (Lloyd) or flagged (profile).
pub const TINY_CLUSTER_NOISE_DEVIATIONS: f64 = 4.0;

/// Restarts of weighted k-means++ on the seeding coreset.
const CORESET_RESTARTS: usize = 8;

/// One segment of a fitted k, from the noised profile release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentProfile {
    /// Noised number of customers (never below 0).
    pub size: f64,
    /// Noised mean of each feature, in original units, of the segment's
    /// customers clamped to the box with offsets clipped to the radius; the
    /// centroid when the segment is tiny.
    pub mean: Vec<f64>,
    /// Noised share of labelled-positive customers, in `[0, 1]`; `None`
    /// without a label or when the segment is tiny.
    pub label_rate: Option<f64>,
    /// False when the noised size is below the tiny-cluster threshold: the
    /// mean and label rate are then not shown.
    pub reliable: bool,
}

/// The fitted segmentation at one k.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusteringOutcome {
    /// Number of segments.
    pub k: usize,
    /// Centroids in the public scaling (what [`crate::SegmentModel`] assigns by).
    pub centroids: Vec<Vec<f64>>,
    /// Centroids in original units.
    pub centroids_original: Vec<Vec<f64>>,
    /// One profile per segment.
    pub segments: Vec<SegmentProfile>,
    /// Noised k-means cost at the centroids, in scaled units, each customer's
    /// squared distance capped at `D²`: the number the elbow plot shows.
    pub noised_cost: f64,
    /// Clusters re-seeded during Lloyd because their noised count was tiny.
    pub reseeded: usize,
}

/// Where the machine is.
#[derive(Debug, Clone, PartialEq)]
enum Phase {
    /// Waiting for the seeding sum.
    Seeding,
    /// Fitting `k_values[position]`; `iteration == config.iterations` means
    /// the profile release is next.
    Fitting {
        position: usize,
        iteration: usize,
        centroids: Vec<Vec<f64>>,
        reseeded: usize,
    },
    /// Every k is fitted.
    Done,
}

/// The coordinator of one segmentation job.
#[derive(Debug, Clone)]
pub struct SegmentationCoordinator {
    /// The job, validated.
    config: SegmentationConfig,
    /// The plan the nodes also compute; release indices refer to it.
    plan: PrivacyPlan,
    /// The public scaling, to report centroids and means in original units.
    scaling: Scaling,
    /// The weighted coreset from the seeding release: seeds every k and
    /// supplies replacements for tiny clusters without a new release.
    coreset: Vec<(Vec<f64>, f64)>,
    /// Index of the next release in the plan.
    next_release: usize,
    phase: Phase,
    outcomes: Vec<ClusteringOutcome>,
}

impl SegmentationCoordinator {
    /// A coordinator for `config`, reporting in original units of `scaling`.
    pub fn new(config: SegmentationConfig, scaling: Scaling) -> Result<Self, SegmentationError> {
        let plan = config.plan()?;
        if scaling.mean.len() != config.n_features || scaling.std.len() != config.n_features {
            return Err(SegmentationError::WrongLength {
                what: "public scaling",
                expected: config.n_features,
                actual: scaling.mean.len().min(scaling.std.len()),
            });
        }
        Ok(Self {
            config,
            plan,
            scaling,
            coreset: Vec::new(),
            next_release: 0,
            phase: Phase::Seeding,
            outcomes: Vec::new(),
        })
    }

    /// The plan, for charging each release before it is requested.
    pub fn plan(&self) -> &PrivacyPlan {
        &self.plan
    }

    /// What every node must release next, or `None` when done.
    pub fn request(&self) -> Option<Request> {
        match &self.phase {
            Phase::Seeding => Some(Request {
                release: self.next_release,
                centroids: Vec::new(),
            }),
            Phase::Fitting { centroids, .. } => Some(Request {
                release: self.next_release,
                centroids: centroids.clone(),
            }),
            Phase::Done => None,
        }
    }

    /// The outcomes, one per k in config order, once every k is fitted.
    pub fn outcomes(&self) -> Option<&[ClusteringOutcome]> {
        match self.phase {
            Phase::Done => Some(&self.outcomes),
            _ => None,
        }
    }

    /// Takes the noised integer sum of release `release` over the nodes.
    /// `rng` drives weighted k-means++ on the coreset (post-processing, so
    /// any generator is private; a seeded one makes runs reproducible).
    /// On error the machine is unchanged and still waits for that release.
    pub fn handle_sum<R: RngCore>(
        &mut self,
        release: usize,
        sum: &[i64],
        rng: &mut R,
    ) -> Result<(), SegmentationError> {
        let expected = match self.phase {
            Phase::Done => None,
            _ => Some(self.next_release),
        };
        if expected != Some(release) {
            return Err(SegmentationError::OutOfOrder {
                expected,
                actual: release,
            });
        }
        let spec = *self
            .plan
            .release(release)
            .ok_or(SegmentationError::OutOfOrder {
                expected,
                actual: release,
            })?;
        spec.check_length("released sum", sum.len())?;
        let phase = std::mem::replace(&mut self.phase, Phase::Done);
        let next = match (phase, spec.kind) {
            (Phase::Seeding, ReleaseKind::Seeding) => {
                let centres = candidate_centres(&self.config);
                let min_count = TINY_CLUSTER_NOISE_DEVIATIONS * spec.summed_noise_deviation();
                self.coreset = coreset(sum, &centres, &self.config, &spec, min_count);
                self.start_k(0, rng)
            }
            (
                Phase::Fitting {
                    position,
                    iteration,
                    mut centroids,
                    mut reseeded,
                },
                ReleaseKind::Lloyd { .. },
            ) => {
                reseeded += self.lloyd_update(&mut centroids, sum, &spec);
                Phase::Fitting {
                    position,
                    iteration: iteration + 1,
                    centroids,
                    reseeded,
                }
            }
            (
                Phase::Fitting {
                    position,
                    centroids,
                    reseeded,
                    ..
                },
                ReleaseKind::Profile { k },
            ) => {
                let outcome = self.profile(k, centroids, reseeded, sum, &spec);
                self.outcomes.push(outcome);
                self.start_k(position + 1, rng)
            }
            (phase, _) => {
                self.phase = phase;
                return Err(SegmentationError::OutOfOrder {
                    expected,
                    actual: release,
                });
            }
        };
        self.phase = next;
        self.next_release += 1;
        Ok(())
    }

    fn start_k<R: RngCore>(&self, position: usize, rng: &mut R) -> Phase {
        let Some(&k) = self.config.k_values.get(position) else {
            return Phase::Done;
        };
        let rows: Vec<&[f64]> = self
            .coreset
            .iter()
            .map(|(point, _)| point.as_slice())
            .collect();
        let weights: Vec<f64> = self.coreset.iter().map(|(_, weight)| *weight).collect();
        let mut centroids = weighted_kmeans(&rows, &weights, k, CORESET_RESTARTS, rng);
        // Fewer distinct coreset points than k: pad with the public centre.
        while centroids.len() < k {
            centroids.push(vec![0.0; self.config.n_features]);
        }
        Phase::Fitting {
            position,
            iteration: 0,
            centroids,
            reseeded: 0,
        }
    }

    /// One damped relative step; returns how many clusters were re-seeded.
    fn lloyd_update(&self, centroids: &mut [Vec<f64>], sum: &[i64], spec: &Release) -> usize {
        let d = self.config.n_features;
        let granularity = spec.granularity();
        let min_count = TINY_CLUSTER_NOISE_DEVIATIONS * spec.summed_noise_deviation();
        let mut tiny = Vec::new();
        for (index, (centroid, block)) in centroids
            .iter_mut()
            .zip(sum.chunks_exact(self.config.lloyd_block()))
            .enumerate()
        {
            let count = block[d] as f64 * granularity;
            if count < min_count {
                tiny.push(index);
                continue;
            }
            let mut step: Vec<f64> = block[..d]
                .iter()
                .map(|&value| value as f64 * granularity / count)
                .collect();
            clip_offset(&mut step, self.config.radius);
            for (value, step) in centroid.iter_mut().zip(step) {
                *value = (*value + self.config.damping * step)
                    .clamp(-self.config.box_bound, self.config.box_bound);
            }
        }
        for &index in &tiny {
            // The coreset point worst served by the other centroids.
            let others: Vec<Vec<f64>> = centroids
                .iter()
                .enumerate()
                .filter(|(other, _)| *other != index)
                .map(|(_, centroid)| centroid.clone())
                .collect();
            let replacement = self
                .coreset
                .iter()
                .map(|(point, weight)| (point, weight * nearest(point, &others).1))
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(point, _)| point.clone());
            if let Some(replacement) = replacement {
                centroids[index] = replacement;
            }
        }
        tiny.len()
    }

    fn profile(
        &self,
        k: usize,
        centroids: Vec<Vec<f64>>,
        reseeded: usize,
        sum: &[i64],
        spec: &Release,
    ) -> ClusteringOutcome {
        let d = self.config.n_features;
        let granularity = spec.granularity();
        let min_count = TINY_CLUSTER_NOISE_DEVIATIONS * spec.summed_noise_deviation();
        let cost_cap = self.config.cost_bound * self.config.cost_bound;
        let mut noised_cost = 0.0;
        let mut segments = Vec::with_capacity(k);
        for (centroid, block) in centroids
            .iter()
            .zip(sum.chunks_exact(self.config.profile_block()))
        {
            let count = block[d] as f64 * granularity;
            noised_cost += block[d + 1] as f64 * granularity * cost_cap;
            let reliable = count >= min_count;
            let mean_scaled = if reliable {
                let mut offset: Vec<f64> = block[..d]
                    .iter()
                    .map(|&value| value as f64 * granularity / count)
                    .collect();
                clip_offset(&mut offset, self.config.radius);
                centroid
                    .iter()
                    .zip(offset)
                    .map(|(centre, offset)| centre + offset)
                    .collect()
            } else {
                centroid.clone()
            };
            let label_rate = (self.config.with_label && reliable)
                .then(|| (block[d + 2] as f64 * granularity / count).clamp(0.0, 1.0));
            segments.push(SegmentProfile {
                size: count.max(0.0),
                mean: self.to_original(&mean_scaled),
                label_rate,
                reliable,
            });
        }
        ClusteringOutcome {
            k,
            centroids_original: centroids.iter().map(|c| self.to_original(c)).collect(),
            centroids,
            segments,
            noised_cost: noised_cost.max(0.0),
            reseeded,
        }
    }

    fn to_original(&self, scaled: &[f64]) -> Vec<f64> {
        scaled
            .iter()
            .zip(self.scaling.mean.iter().zip(&self.scaling.std))
            .map(|(value, (mean, std))| value * std + mean)
            .collect()
    }
}
