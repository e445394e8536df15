//! What the engine needs to know about a job: participants, rounds, deadlines,
//! strategy and the shapes of the vectors it will aggregate.

use std::time::Duration;

use thiserror::Error;

use crate::aggregate::ExpectedShape;
use crate::phase::Phase;
use crate::privacy::{PartnerPrivacy, PartnerPrivacyError};
use crate::secure::{MIN_SECURE_COHORT, SecureSettings, secure_round_parameters};
use crate::strategy::Strategy;

/// How a job's replies are summed.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum AggregationMode {
    /// The coordinator sees every reply. Only when a job asks for it.
    Plain,
    /// SecAgg+: the coordinator learns only sums over surviving nodes.
    Secure(SecureSettings),
}

impl AggregationMode {
    /// The name shown in job status.
    pub fn name(&self) -> &'static str {
        match self {
            AggregationMode::Plain => "plain",
            AggregationMode::Secure(_) => "secure",
        }
    }
}

/// Per-phase deadlines, counted from the moment a phase opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PhaseTimeouts {
    /// Deadline of the feature-statistics phase.
    pub feature_stats: Duration,
    /// Deadline of each training phase.
    pub train: Duration,
    /// Deadline of each evaluation phase.
    pub evaluate: Duration,
    /// How long a job waits for enough eligible nodes to open its next
    /// phase before it fails, naming how many it had and needed. Counted
    /// from the first time it found too few (again after a coordinator
    /// restart). Plans saved before this existed get the default.
    #[serde(default = "default_wait_for_nodes")]
    pub wait_for_nodes: Duration,
}

/// Default of [`PhaseTimeouts::wait_for_nodes`]: ten minutes, long enough
/// for a partner to restart its node, short enough that a job with a dead
/// federation does not hang an operator's `watch`.
pub const DEFAULT_WAIT_FOR_NODES: Duration = Duration::from_secs(600);

fn default_wait_for_nodes() -> Duration {
    DEFAULT_WAIT_FOR_NODES
}

/// The round-relevant part of a job, validated by [`JobPlan::validate`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JobPlan {
    /// Number of training rounds after the feature-statistics round.
    pub rounds: u32,
    /// A phase proceeds only with at least this many replies.
    pub min_participants: u32,
    /// At most this many nodes are invited to a phase.
    pub max_participants: u32,
    /// Deadlines per phase.
    pub timeouts: PhaseTimeouts,
    /// How the coordinator turns the aggregated delta into the next model.
    pub strategy: Strategy,
    /// Length of the model vector.
    pub parameter_count: usize,
    /// Length of the statistics vector of a feature-statistics reply.
    pub feature_statistics_len: usize,
    /// Length of the statistics vector of a training reply.
    pub train_statistics_len: usize,
    /// Length of the statistics vector of an evaluation reply.
    pub evaluate_statistics_len: usize,
    /// How many times a phase is retried when too few nodes reply, before the
    /// job fails.
    pub max_phase_attempts: u32,
    /// Plain or secure aggregation, with the secure parameters.
    pub aggregation: AggregationMode,
    /// Partner-level differential privacy of each round's aggregate.
    pub partner_privacy: PartnerPrivacy,
    /// An analysis job's releases: the statistics length of each, in
    /// order. Release `i` runs as round `i + 1` of [`Phase::Release`]; there
    /// is no feature-statistics round and no training, and the "model" is
    /// the job's result (`parameter_count` values), derived from the
    /// released sums after the last release. Empty for a training job (and
    /// in plans saved before analysis jobs existed).
    #[serde(default)]
    pub releases: Vec<usize>,
}

/// A job plan that cannot run, naming the offending field.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum PlanError {
    /// A count that must be positive is zero.
    #[error("{field} must be at least 1")]
    Zero {
        /// The field.
        field: &'static str,
    },
    /// `max_participants` is below `min_participants`.
    #[error("max_participants ({max}) is below min_participants ({min})")]
    ParticipantRange {
        /// Minimum asked for.
        min: u32,
        /// Maximum asked for.
        max: u32,
    },
    /// A timeout of zero would close a phase before anyone can reply.
    #[error("the {phase} timeout must be positive")]
    ZeroTimeout {
        /// Which phase.
        phase: &'static str,
    },
    /// A strategy parameter is out of range.
    #[error("strategy parameter {field} = {value} is out of range ({expected})")]
    StrategyParameter {
        /// Parameter name.
        field: &'static str,
        /// Its value.
        value: f64,
        /// The accepted range.
        expected: &'static str,
    },
    /// An analysis plan whose rounds are not its releases.
    #[error("an analysis job runs one round per release: {rounds} rounds, {releases} releases")]
    AnalysisRounds {
        /// Rounds planned.
        rounds: u32,
        /// Releases planned.
        releases: usize,
    },
    /// A release of length zero.
    #[error("release {index} of the analysis has length 0")]
    EmptyRelease {
        /// Its index.
        index: usize,
    },
    /// A secure-aggregation parameter is out of range.
    #[error("aggregation.{field} = {value} is out of range ({expected})")]
    SecureParameter {
        /// The field.
        field: &'static str,
        /// Its value.
        value: f64,
        /// The accepted range.
        expected: &'static str,
    },
    /// The partner-level privacy settings cannot be used.
    #[error(transparent)]
    PartnerPrivacy(#[from] PartnerPrivacyError),
    /// The smallest cohort cannot tolerate the collusion the job states.
    #[error("aggregation.collusion_fraction: {0}")]
    Collusion(String),
    /// The initial model does not have `parameter_count` values.
    #[error("initial model has {actual} parameters, the plan says {expected}")]
    InitialModelShape {
        /// Declared length.
        expected: usize,
        /// Given length.
        actual: usize,
    },
    /// The initial model contains NaN or infinity.
    #[error("initial model parameter {index} is not finite")]
    InitialModelNotFinite {
        /// First offending index.
        index: usize,
    },
}

impl JobPlan {
    /// Whether this is an analysis job (releases, no training).
    pub fn is_analysis(&self) -> bool {
        !self.releases.is_empty()
    }

    /// What a reply to `phase` of `round` must look like. A release round
    /// outside the plan expects nothing a reply can match.
    pub fn reply_shape(&self, round: u32, phase: Phase) -> ExpectedShape {
        match phase {
            Phase::Release => ExpectedShape {
                vector_len: 0,
                statistics_len: (round as usize)
                    .checked_sub(1)
                    .and_then(|index| self.releases.get(index))
                    .copied()
                    .unwrap_or(0),
                positive_weight: false,
            },
            Phase::FeatureStats => ExpectedShape {
                vector_len: 0,
                statistics_len: self.feature_statistics_len,
                positive_weight: false,
            },
            Phase::Train => ExpectedShape {
                vector_len: self.parameter_count,
                statistics_len: self.train_statistics_len,
                positive_weight: true,
            },
            Phase::Evaluate => ExpectedShape {
                vector_len: 0,
                statistics_len: self.evaluate_statistics_len,
                positive_weight: false,
            },
        }
    }

    /// Checks every field, returning the first problem found.
    pub fn validate(&self) -> Result<(), PlanError> {
        for (field, value) in [
            ("rounds", u64::from(self.rounds)),
            ("min_participants", u64::from(self.min_participants)),
            ("max_phase_attempts", u64::from(self.max_phase_attempts)),
            ("parameter_count", self.parameter_count as u64),
        ] {
            if value == 0 {
                return Err(PlanError::Zero { field });
            }
        }
        if self.is_analysis() {
            if self.rounds as usize != self.releases.len() {
                return Err(PlanError::AnalysisRounds {
                    rounds: self.rounds,
                    releases: self.releases.len(),
                });
            }
            if let Some(index) = self.releases.iter().position(|&len| len == 0) {
                return Err(PlanError::EmptyRelease { index });
            }
        }
        if self.max_participants < self.min_participants {
            return Err(PlanError::ParticipantRange {
                min: self.min_participants,
                max: self.max_participants,
            });
        }
        for (phase, timeout) in [
            ("feature_stats", self.timeouts.feature_stats),
            ("train", self.timeouts.train),
            ("evaluate", self.timeouts.evaluate),
            ("wait_for_nodes", self.timeouts.wait_for_nodes),
        ] {
            if timeout.is_zero() {
                return Err(PlanError::ZeroTimeout { phase });
            }
        }
        if let AggregationMode::Secure(settings) = &self.aggregation {
            validate_secure(settings, self.min_participants)?;
        }
        self.partner_privacy.validate()?;
        if matches!(self.partner_privacy, PartnerPrivacy::Distributed { .. })
            && self.aggregation == AggregationMode::Plain
        {
            return Err(PartnerPrivacyError::DistributedNeedsSecure.into());
        }
        self.strategy.validate()
    }
}

fn validate_secure(settings: &SecureSettings, min_participants: u32) -> Result<(), PlanError> {
    let checks = [
        (
            "clip_range",
            f64::from(settings.clip_range),
            settings.clip_range.is_finite() && settings.clip_range > 0.0,
            "finite and > 0",
        ),
        (
            "modulus_bits",
            f64::from(settings.modulus_bits),
            (16..=32).contains(&settings.modulus_bits),
            "16 to 32",
        ),
        (
            "max_weight",
            settings.max_weight,
            settings.max_weight.is_finite() && settings.max_weight >= 1.0,
            "finite and >= 1",
        ),
        (
            "dropout_rate",
            settings.dropout_rate,
            (0.0..0.5).contains(&settings.dropout_rate),
            "in [0, 0.5)",
        ),
        (
            "step_timeout_ms",
            settings.step_timeout.as_millis() as f64,
            !settings.step_timeout.is_zero(),
            "> 0",
        ),
        (
            "collusion_fraction",
            settings.collusion_fraction,
            (0.0..0.5).contains(&settings.collusion_fraction)
                && settings.collusion_fraction + settings.dropout_rate < 1.0,
            "in [0, 0.5)",
        ),
        (
            "security_bits",
            f64::from(settings.security_bits),
            (16..=128).contains(&settings.security_bits),
            "16 to 128",
        ),
        (
            "min_participants",
            f64::from(min_participants),
            min_participants as usize >= MIN_SECURE_COHORT,
            "at least 3 with secure aggregation",
        ),
    ];
    for (field, value, ok, expected) in checks {
        if !ok {
            return Err(PlanError::SecureParameter {
                field,
                value,
                expected,
            });
        }
    }
    // The smallest cohort the job accepts must meet its own collusion bound,
    // or no round could ever open.
    secure_round_parameters(min_participants as usize, settings)
        .map_err(|error| PlanError::Collusion(error.to_string()))?;
    Ok(())
}
