//! Analysis job kinds: shared segments (federated DP k-means) and RFM cut
//! points. For each kind: its settings from the wire, the releases it implies
//! (calibrated by `veil-segmentation` from the job's budget), the public
//! parameters the coordinator derives for each release from the sums before
//! it, and the job's result, which it exports in place of a trained model.
//!
//! Both sides compute the same privacy plan from the spec alone, so neither
//! a coordinator nor a node can be talked into less noise; release `i` runs
//! as round `i + 1` and is charged under that round in both ledgers.

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use veil_behaviour_features::Scaling;
use veil_federation::AggregationMode;
use veil_federation::secure::cohort_threshold;
use veil_privacy_ledger::Mechanism;
use veil_segmentation::rfm::{RfmBins, RfmCutPoints, rfm_plan};
use veil_segmentation::{
    CandidateLayout, ClusteringOutcome, PrivacyPlan, Release, SeedingConfig, SegmentModel,
    SegmentationConfig, SegmentationCoordinator, SegmentationPrivacy,
};
use veil_wire::v1;

use crate::basket_analysis::{BasketOutcome, BasketRules};
use crate::lifetime_analysis::{
    LIFETIME_RESULT_LEN, LifetimeOutcome, LifetimeValue, fit_to_parameters,
};
use crate::spec::{JobSpecError, invalid};

/// Default Lloyd steps per k.
pub const DEFAULT_ITERATIONS: usize = 5;
/// Default ℓ2 clip of a customer's offset from its centroid (scaled units).
pub const DEFAULT_RADIUS: f64 = 1.0;
/// Default share of the noised mean offset a centroid moves by.
pub const DEFAULT_DAMPING: f64 = 0.9;
/// Default number of public Halton cells of the seeding histogram.
pub const DEFAULT_SEEDING_CELLS: usize = 1024;
/// Default offset clip of the seeding histogram.
pub const DEFAULT_SEEDING_RADIUS: f64 = 1.5;
/// Default clamp of scaled features.
pub const DEFAULT_BOX_BOUND: f64 = 3.0;
/// Default cap of a customer's distance in the released cost.
pub const DEFAULT_COST_BOUND: f64 = 3.0;
/// Cut points of an RFM result: four per field, three fields.
pub const RFM_RESULT_LEN: usize = 12;

/// An analysis job kind with its validated settings and privacy plan.
#[derive(Debug, Clone, PartialEq)]
pub enum Analysis {
    /// Federated DP k-means over the job's features.
    Segment(Segmentation),
    /// Federated DP quintile cut points of recency, frequency and monetary value.
    Rfm(Rfm),
    /// BG/NBD and Gamma-Gamma lifetime value, fitted to a noised histogram.
    LifetimeValue(LifetimeValue),
    /// Federated DP frequent itemsets and association rules.
    BasketRules(BasketRules),
}

/// A segmentation job's settings and the plan they imply.
#[derive(Debug, Clone, PartialEq)]
pub struct Segmentation {
    /// The k-means settings, with the job's budget and `t`.
    pub config: SegmentationConfig,
    /// Every release, calibrated to the budget.
    pub plan: PrivacyPlan,
}

/// An RFM job's public bins and the plan of its one release.
#[derive(Debug, Clone, PartialEq)]
pub struct Rfm {
    /// Public bin edges of each field.
    pub bins: RfmBins,
    /// The histogram release, calibrated to the budget.
    pub plan: PrivacyPlan,
}

/// What an analysis produced, derived from its released sums only.
#[derive(Debug, Clone, PartialEq)]
pub enum AnalysisOutcome {
    /// One fitted segmentation per k, in the job's order.
    Segments(Vec<ClusteringOutcome>),
    /// The shared RFM cut points.
    Rfm(RfmCutPoints),
    /// The lifetime-value fit and its holdout check.
    LifetimeValue(LifetimeOutcome),
    /// Frequent itemsets and rules.
    BasketRules(BasketOutcome),
}

/// The parts of a job spec an analysis depends on, validated before it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AnalysisContext<'a> {
    /// Features per customer.
    pub n_features: usize,
    /// Whether the job defines a label a segment may report the rate of.
    pub has_binary_label: bool,
    /// Customer-level ε per partner for the whole job.
    pub epsilon: f64,
    /// Its δ.
    pub delta: f64,
    /// Secure or plain aggregation.
    pub aggregation: &'a AggregationMode,
    /// The smallest cohort a release may have.
    pub min_participants: u32,
}

impl AnalysisContext<'_> {
    /// The privacy every release is calibrated to. `t` is the honest-input
    /// floor of the smallest secure cohort (more nodes only add noise), or
    /// 1 with plain aggregation, where each node's own noise must suffice.
    fn privacy(&self) -> Result<SegmentationPrivacy, JobSpecError> {
        let min_survivors = match self.aggregation {
            AggregationMode::Secure(settings) => {
                cohort_threshold(self.min_participants as usize, settings)
                    .map_err(|error| invalid("min_participants", error))?
            }
            AggregationMode::Plain => 1,
        };
        if !self.epsilon.is_finite() {
            return Err(invalid(
                "privacy.customer_epsilon",
                "an analysis calibrates its noise to its budget, which must be finite",
            ));
        }
        Ok(SegmentationPrivacy {
            epsilon: self.epsilon,
            delta: self.delta,
            min_survivors: min_survivors as u64,
        })
    }
}

impl Analysis {
    /// Whether the node's releases read the job's feature rows (the
    /// behaviour features of every customer); the other kinds read the
    /// transaction log directly.
    pub fn reads_feature_rows(&self) -> bool {
        matches!(self, Self::Segment(_))
    }

    /// Validates the wire form and calibrates the plan.
    pub(crate) fn from_wire(
        wire: &v1::Analysis,
        context: AnalysisContext<'_>,
    ) -> Result<Self, JobSpecError> {
        match &wire.kind {
            Some(v1::analysis::Kind::Segment(segment)) => {
                Segmentation::from_wire(segment, context).map(Analysis::Segment)
            }
            Some(v1::analysis::Kind::Rfm(rfm)) => Rfm::from_wire(rfm, context).map(Analysis::Rfm),
            Some(v1::analysis::Kind::LifetimeValue(lifetime)) => {
                LifetimeValue::from_wire(lifetime, context.epsilon, context.delta)
                    .map(Analysis::LifetimeValue)
            }
            Some(v1::analysis::Kind::BasketRules(rules)) => {
                let privacy = context.privacy()?;
                let target = veil_basket_rules::PrivacyTarget {
                    epsilon: privacy.epsilon,
                    delta: privacy.delta,
                    min_survivors: privacy.min_survivors,
                };
                BasketRules::from_wire(rules, target).map(Analysis::BasketRules)
            }
            None => Err(invalid("analysis", "names no analysis kind")),
        }
    }

    /// The wire form.
    pub(crate) fn to_wire(&self) -> v1::Analysis {
        let kind = match self {
            Analysis::Segment(segment) => v1::analysis::Kind::Segment(segment.to_wire()),
            Analysis::Rfm(rfm) => v1::analysis::Kind::Rfm(v1::Rfm {
                recency_edges: rfm.bins.recency.clone(),
                frequency_edges: rfm.bins.frequency.clone(),
                monetary_edges: rfm.bins.monetary.clone(),
            }),
            Analysis::LifetimeValue(lifetime) => {
                v1::analysis::Kind::LifetimeValue(lifetime.to_wire())
            }
            Analysis::BasketRules(rules) => v1::analysis::Kind::BasketRules(rules.to_wire()),
        };
        v1::Analysis { kind: Some(kind) }
    }

    /// The job kind's name, as `watch` and the report show it.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Analysis::Segment(_) => "segment",
            Analysis::Rfm(_) => "rfm",
            Analysis::LifetimeValue(_) => "lifetime-value",
            Analysis::BasketRules(_) => "basket-rules",
        }
    }

    /// The calibrated plan of every release of a `veil-segmentation` kind.
    pub fn plan(&self) -> Option<&PrivacyPlan> {
        match self {
            Analysis::Segment(segment) => Some(&segment.plan),
            Analysis::Rfm(rfm) => Some(&rfm.plan),
            Analysis::LifetimeValue(_) => None,
            Analysis::BasketRules(_) => None,
        }
    }

    /// Release `index` of a `veil-segmentation` kind's plan.
    pub fn release(&self, index: usize) -> Option<&Release> {
        self.plan()?.release(index)
    }

    /// Customer-level ε per partner of every release composed.
    pub fn planned_epsilon(&self) -> f64 {
        match self {
            Analysis::BasketRules(rules) => rules.planned_epsilon(),
            Analysis::LifetimeValue(lifetime) => lifetime.planned_epsilon(),
            _ => self.plan().map_or(f64::INFINITY, PrivacyPlan::epsilon),
        }
    }

    /// What both ledgers charge for release `index`, and the honest inputs
    /// `t` its noise is calibrated for.
    pub fn release_mechanism(&self, index: usize) -> Option<(Mechanism, u64)> {
        match self {
            Analysis::BasketRules(rules) => rules.release_mechanism(index),
            Analysis::LifetimeValue(lifetime) => {
                (index < 2).then(|| (lifetime.mechanism(index), 1))
            }
            _ => self.release(index).map(|release| {
                (
                    Mechanism::DistributedDiscreteGaussian(release.mechanism()),
                    release.min_survivors,
                )
            }),
        }
    }

    /// The statistics length of each release, in order.
    pub fn release_lengths(&self) -> Vec<usize> {
        match self {
            Analysis::LifetimeValue(lifetime) => lifetime.release_lengths(),
            Analysis::BasketRules(rules) => rules.release_lengths(),
            _ => self.plan().map_or_else(Vec::new, |plan| {
                plan.releases()
                    .iter()
                    .map(|release| release.dimension)
                    .collect()
            }),
        }
    }

    /// Length of the exported result: every k's centroids, or the cut points.
    pub fn result_len(&self) -> usize {
        match self {
            Analysis::Segment(segment) => {
                segment.config.k_values.iter().sum::<usize>() * segment.config.n_features
            }
            Analysis::Rfm(_) => RFM_RESULT_LEN,
            Analysis::LifetimeValue(_) => LIFETIME_RESULT_LEN,
            Analysis::BasketRules(rules) => rules.result_len(),
        }
    }

    /// The public parameters of release `index`: the centroids of a Lloyd
    /// step or profile (in the public scaling, flattened), nothing for
    /// seeding and RFM. Derived by replaying the coordinator's state machine
    /// over the sums released so far, so a restarted coordinator derives
    /// exactly the same.
    pub fn release_parameters(
        &self,
        index: usize,
        released: &[&[f64]],
        scaling: &Scaling,
        seed: u64,
    ) -> Result<Vec<f64>, String> {
        match self {
            Analysis::Segment(segment) => {
                let machine = segment.replay(released, scaling, seed)?;
                let request = machine
                    .request()
                    .ok_or_else(|| format!("release {index}: the segmentation is complete"))?;
                if request.release != index {
                    return Err(format!(
                        "release {index} asked for, but the segmentation is at release {}",
                        request.release
                    ));
                }
                Ok(request.centroids.concat())
            }
            Analysis::Rfm(_) if index == 0 => Ok(Vec::new()),
            Analysis::Rfm(_) => Err(format!("an RFM job has one release, not {}", index + 1)),
            Analysis::LifetimeValue(lifetime) => lifetime.release_parameters(index, released),
            Analysis::BasketRules(rules) => rules.release_parameters(index, released),
        }
    }

    /// The outcome from every release's sum.
    pub fn outcome(
        &self,
        released: &[&[f64]],
        scaling: &Scaling,
        seed: u64,
    ) -> Result<AnalysisOutcome, String> {
        match self {
            Analysis::Segment(segment) => {
                let machine = segment.replay(released, scaling, seed)?;
                let outcomes = machine.outcomes().ok_or_else(|| {
                    format!(
                        "{} of {} releases: the segmentation is not complete",
                        released.len(),
                        segment.plan.releases().len()
                    )
                })?;
                Ok(AnalysisOutcome::Segments(outcomes.to_vec()))
            }
            Analysis::Rfm(rfm) => {
                let (Some(release), [sum]) = (rfm.plan.release(0), released) else {
                    return Err(format!(
                        "an RFM job has one release, {} were given",
                        released.len()
                    ));
                };
                let integers = release
                    .from_statistics(sum)
                    .map_err(|error| error.to_string())?;
                RfmCutPoints::from_noised_histograms(&integers, &rfm.bins, release)
                    .map(AnalysisOutcome::Rfm)
                    .map_err(|error| error.to_string())
            }
            Analysis::LifetimeValue(lifetime) => lifetime
                .outcome(released)
                .map(AnalysisOutcome::LifetimeValue),
            Analysis::BasketRules(rules) => {
                rules.outcome(released).map(AnalysisOutcome::BasketRules)
            }
        }
    }
}

impl AnalysisOutcome {
    /// The exported result ([`Analysis::result_len`] values): every k's
    /// centroids in the public scaling, or the 12 cut points.
    pub fn result_parameters(&self) -> Vec<f32> {
        match self {
            AnalysisOutcome::Segments(outcomes) => outcomes
                .iter()
                .flat_map(|outcome| outcome.centroids.iter().flatten())
                .map(|&value| value as f32)
                .collect(),
            AnalysisOutcome::Rfm(cuts) => cuts
                .recency
                .iter()
                .chain(&cuts.frequency)
                .chain(&cuts.monetary)
                .map(|&value| value as f32)
                .collect(),
            AnalysisOutcome::LifetimeValue(outcome) => fit_to_parameters(&outcome.fit)
                .into_iter()
                .map(|value| value as f32)
                .collect(),
            AnalysisOutcome::BasketRules(outcome) => outcome.result_parameters(),
        }
    }
}

impl Segmentation {
    fn from_wire(
        wire: &v1::Segmentation,
        context: AnalysisContext<'_>,
    ) -> Result<Self, JobSpecError> {
        if wire.with_label && !context.has_binary_label {
            return Err(invalid(
                "segment.with_label",
                "a label rate needs a binary task (churn or propensity)",
            ));
        }
        let or = |value: f64, default: f64| if value == 0.0 { default } else { value };
        let config = SegmentationConfig {
            n_features: context.n_features,
            box_bound: or(wire.box_bound, DEFAULT_BOX_BOUND),
            k_values: wire.k_values.iter().map(|&k| k as usize).collect(),
            iterations: if wire.iterations == 0 {
                DEFAULT_ITERATIONS
            } else {
                wire.iterations as usize
            },
            radius: or(wire.radius, DEFAULT_RADIUS),
            damping: or(wire.damping, DEFAULT_DAMPING),
            seeding: SeedingConfig {
                layout: CandidateLayout::Halton {
                    count: if wire.seeding_cells == 0 {
                        DEFAULT_SEEDING_CELLS
                    } else {
                        wire.seeding_cells as usize
                    },
                },
                radius: or(wire.seeding_radius, DEFAULT_SEEDING_RADIUS),
            },
            cost_bound: or(wire.cost_bound, DEFAULT_COST_BOUND),
            with_label: wire.with_label,
            privacy: context.privacy()?,
        };
        let plan = config
            .plan()
            .map_err(|error| invalid("segment", error.to_string()))?;
        Ok(Self { config, plan })
    }

    fn to_wire(&self) -> v1::Segmentation {
        let config = &self.config;
        let CandidateLayout::Halton {
            count: seeding_cells,
        } = config.seeding.layout
        else {
            unreachable!("job files only make Halton seeding cells")
        };
        v1::Segmentation {
            k_values: config.k_values.iter().map(|&k| k as u32).collect(),
            iterations: config.iterations as u32,
            radius: config.radius,
            damping: config.damping,
            seeding_cells: seeding_cells as u32,
            seeding_radius: config.seeding.radius,
            box_bound: config.box_bound,
            cost_bound: config.cost_bound,
            with_label: config.with_label,
        }
    }

    /// The coordinator's state machine after `released`, replayed from the
    /// start. Its k-means++ seeding on the noised coreset draws from a
    /// generator keyed by the job's seed: post-processing needs no secret
    /// randomness, and a replay must draw the same.
    fn replay(
        &self,
        released: &[&[f64]],
        scaling: &Scaling,
        seed: u64,
    ) -> Result<SegmentationCoordinator, String> {
        let mut machine = SegmentationCoordinator::new(self.config.clone(), scaling.clone())
            .map_err(|error| error.to_string())?;
        let mut rng = ChaCha20Rng::from_seed(post_processing_seed(seed));
        for (index, sum) in released.iter().enumerate() {
            let release = self
                .plan
                .release(index)
                .ok_or_else(|| format!("release {index} is not in the plan"))?;
            let integers = release
                .from_statistics(sum)
                .map_err(|error| format!("release {index}: {error}"))?;
            machine
                .handle_sum(index, &integers, &mut rng)
                .map_err(|error| format!("release {index}: {error}"))?;
        }
        Ok(machine)
    }

    /// The model of each k from an exported result, in the job's k order.
    pub fn models(
        &self,
        result: &[f32],
        scaling: &Scaling,
    ) -> Result<Vec<SegmentModel>, JobSpecError> {
        let d = self.config.n_features;
        let expected = self.config.k_values.iter().sum::<usize>() * d;
        if result.len() != expected {
            return Err(invalid(
                "result",
                format!(
                    "a segmentation result has {expected} values, got {}",
                    result.len()
                ),
            ));
        }
        let mut offset = 0;
        let mut models = Vec::with_capacity(self.config.k_values.len());
        for &k in &self.config.k_values {
            let centroids: Vec<Vec<f64>> = result[offset..offset + k * d]
                .chunks_exact(d)
                .map(|centroid| centroid.iter().map(|&value| f64::from(value)).collect())
                .collect();
            offset += k * d;
            models.push(
                SegmentModel::from_centroids(centroids, scaling.clone(), self.config.box_bound)
                    .map_err(|error| invalid("result", error.to_string()))?,
            );
        }
        Ok(models)
    }
}

impl Rfm {
    fn from_wire(wire: &v1::Rfm, context: AnalysisContext<'_>) -> Result<Self, JobSpecError> {
        let standard = RfmBins::standard();
        let or = |edges: &[f64], default: Vec<f64>| {
            if edges.is_empty() {
                default
            } else {
                edges.to_vec()
            }
        };
        let bins = RfmBins {
            recency: or(&wire.recency_edges, standard.recency),
            frequency: or(&wire.frequency_edges, standard.frequency),
            monetary: or(&wire.monetary_edges, standard.monetary),
        };
        let plan = rfm_plan(&bins, &context.privacy()?)
            .map_err(|error| invalid("rfm", error.to_string()))?;
        Ok(Self { bins, plan })
    }

    /// The cut points of an exported result.
    pub fn cut_points(result: &[f32]) -> Result<RfmCutPoints, JobSpecError> {
        let values: Vec<f64> = result.iter().map(|&value| f64::from(value)).collect();
        let [r0, r1, r2, r3, f0, f1, f2, f3, m0, m1, m2, m3] = values.as_slice() else {
            return Err(invalid(
                "result",
                format!(
                    "an RFM result has {RFM_RESULT_LEN} values, got {}",
                    result.len()
                ),
            ));
        };
        Ok(RfmCutPoints {
            recency: [*r0, *r1, *r2, *r3],
            frequency: [*f0, *f1, *f2, *f3],
            monetary: [*m0, *m1, *m2, *m3],
        })
    }
}

/// The post-processing generator's key: public, fixed by the job's seed.
fn post_processing_seed(seed: u64) -> [u8; 32] {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(b"veil analysis post-processing v1");
    context.update(&seed.to_le_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}
