//! The configuration of a segmentation job and the releases it implies.

use serde::{Deserialize, Serialize};

use crate::error::SegmentationError;
use crate::points::check_box;
use crate::release::{PrivacyPlan, ReleaseKind, ReleaseShape, SegmentationPrivacy};

/// Largest number of public candidate cells in the seeding release.
pub const MAX_CANDIDATES: usize = 1 << 16;

/// How the public box is cut into cells for DP seeding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "layout", rename_all = "snake_case")]
pub enum CandidateLayout {
    /// The Voronoi cells of the first `count` points of the Halton sequence
    /// in the box: any dimension, `count` cells.
    Halton {
        /// Number of cells.
        count: usize,
    },
    /// A regular grid of `per_axis^d` cells (only for few features).
    Grid {
        /// Cells along each axis.
        per_axis: usize,
    },
}

/// DP seeding: a noised histogram (with offset sums) over public cells.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SeedingConfig {
    /// The public cells.
    pub layout: CandidateLayout,
    /// ℓ2 clip of a customer's offset from its cell's public centre.
    pub radius: f64,
}

/// A segmentation job: features in their public scaling, the k to try,
/// Lloyd's settings and the customer-level budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentationConfig {
    /// Features per customer, `d`.
    pub n_features: usize,
    /// `B`: scaled features are clamped to `[-B, B]`.
    pub box_bound: f64,
    /// The numbers of clusters to fit, each with its own Lloyd steps and
    /// profile; the noised cost of each is released for the elbow.
    pub k_values: Vec<usize>,
    /// Lloyd steps per k.
    pub iterations: usize,
    /// `r`: ℓ2 clip of a customer's offset from its centroid (FastLloyd's
    /// radius constraint); the per-customer sensitivity scales with it.
    pub radius: f64,
    /// `η ∈ (0, 1]`: a centroid moves by `η` times its noised mean offset.
    pub damping: f64,
    /// DP seeding.
    pub seeding: SeedingConfig,
    /// `D`: a customer's squared distance counts at most `D²` in the cost.
    pub cost_bound: f64,
    /// Whether the job has a binary label whose rate each segment reports.
    pub with_label: bool,
    /// The customer-level budget.
    pub privacy: SegmentationPrivacy,
}

impl SegmentationConfig {
    /// The settings the crate's tests and benchmarks found to work on
    /// standardised features, for `n_features` features, the given k and
    /// budget: box 3, radius 1, 5 damped steps (η = 0.9), 1024 Halton cells
    /// with seeding radius 1.5, cost bound 3, no label.
    pub fn recommended(
        n_features: usize,
        k_values: Vec<usize>,
        privacy: SegmentationPrivacy,
    ) -> Self {
        Self {
            n_features,
            box_bound: 3.0,
            k_values,
            iterations: 5,
            radius: 1.0,
            damping: 0.9,
            seeding: SeedingConfig {
                layout: CandidateLayout::Halton { count: 1024 },
                radius: 1.5,
            },
            cost_bound: 3.0,
            with_label: false,
            privacy,
        }
    }

    /// Refuses a config that cannot run, naming the field.
    pub fn validate(&self) -> Result<(), SegmentationError> {
        let invalid = |field, reason: String| SegmentationError::InvalidConfig { field, reason };
        check_box(self.n_features, self.box_bound)?;
        if self.k_values.is_empty() {
            return Err(invalid("k_values", "must name at least one k".to_owned()));
        }
        if let Some(k) = self.k_values.iter().find(|&&k| !(1..=256).contains(&k)) {
            return Err(invalid("k_values", format!("k = {k} is outside 1..=256")));
        }
        if self.iterations == 0 || self.iterations > 100 {
            return Err(invalid(
                "iterations",
                format!("must be in 1..=100, got {}", self.iterations),
            ));
        }
        for (field, value) in [
            ("radius", self.radius),
            ("seeding.radius", self.seeding.radius),
            ("cost_bound", self.cost_bound),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return Err(invalid(
                    field,
                    format!("must be a positive finite number, got {value}"),
                ));
            }
        }
        if !(self.damping > 0.0 && self.damping <= 1.0) {
            return Err(invalid(
                "damping",
                format!("must be in (0, 1], got {}", self.damping),
            ));
        }
        let cells = self.candidate_count()?;
        let largest_k = self.k_values.iter().max().copied().unwrap_or(1);
        if cells < largest_k {
            return Err(invalid(
                "seeding.layout",
                format!("{cells} cells cannot seed k = {largest_k}"),
            ));
        }
        Ok(())
    }

    /// Number of public seeding cells.
    pub fn candidate_count(&self) -> Result<usize, SegmentationError> {
        let too_many = |cells: String| SegmentationError::InvalidConfig {
            field: "seeding.layout",
            reason: format!("{cells} cells, more than {MAX_CANDIDATES}"),
        };
        match self.seeding.layout {
            CandidateLayout::Halton { count } => {
                if count == 0 || count > MAX_CANDIDATES {
                    return Err(too_many(count.to_string()));
                }
                Ok(count)
            }
            CandidateLayout::Grid { per_axis } => {
                let exponent = u32::try_from(self.n_features).unwrap_or(u32::MAX);
                match per_axis.checked_pow(exponent) {
                    Some(cells) if per_axis > 0 && cells <= MAX_CANDIDATES => Ok(cells),
                    _ => Err(too_many(format!("{per_axis}^{}", self.n_features))),
                }
            }
        }
    }

    /// Length of one cluster's block in a Lloyd release: offset sums and count.
    pub(crate) fn lloyd_block(&self) -> usize {
        self.n_features + 1
    }

    /// Length of one segment's block in a profile release: offset sums,
    /// count, clipped cost, and the label count when there is a label.
    pub(crate) fn profile_block(&self) -> usize {
        self.n_features + 2 + usize::from(self.with_label)
    }

    /// The releases of the job in protocol order, with each one's
    /// per-customer sensitivity (see the crate docs, "Sensitivity").
    pub(crate) fn release_shapes(&self) -> Result<Vec<ReleaseShape>, SegmentationError> {
        self.validate()?;
        let cells = self.candidate_count()?;
        let mut shapes = vec![ReleaseShape {
            kind: ReleaseKind::Seeding,
            sensitivity: (self.seeding.radius.powi(2) + 1.0).sqrt(),
            dimension: cells * (self.n_features + 1),
        }];
        let lloyd_sensitivity = (self.radius.powi(2) + 1.0).sqrt();
        let profile_sensitivity =
            (self.radius.powi(2) + 2.0 + f64::from(u8::from(self.with_label))).sqrt();
        for &k in &self.k_values {
            for iteration in 0..self.iterations {
                shapes.push(ReleaseShape {
                    kind: ReleaseKind::Lloyd { k, iteration },
                    sensitivity: lloyd_sensitivity,
                    dimension: k * self.lloyd_block(),
                });
            }
            shapes.push(ReleaseShape {
                kind: ReleaseKind::Profile { k },
                sensitivity: profile_sensitivity,
                dimension: k * self.profile_block(),
            });
        }
        Ok(shapes)
    }

    /// The job's privacy plan: every release calibrated so that all of them
    /// together stay within `privacy`. Node and coordinator both compute it
    /// from the config, so neither can be talked into less noise.
    pub fn plan(&self) -> Result<PrivacyPlan, SegmentationError> {
        PrivacyPlan::calibrate(&self.release_shapes()?, &self.privacy)
    }
}
