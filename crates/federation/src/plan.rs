//! What the engine needs to know about a job: participants, rounds, deadlines,
//! strategy and the shapes of the vectors it will aggregate.

use std::time::Duration;

use thiserror::Error;

use crate::strategy::Strategy;

/// Per-phase deadlines, counted from the moment a phase opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhaseTimeouts {
    /// Deadline of the feature-statistics phase.
    pub feature_stats: Duration,
    /// Deadline of each training phase.
    pub train: Duration,
    /// Deadline of each evaluation phase.
    pub evaluate: Duration,
}

/// The round-relevant part of a job, validated by [`JobPlan::validate`].
#[derive(Debug, Clone, PartialEq)]
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
        ] {
            if timeout.is_zero() {
                return Err(PlanError::ZeroTimeout { phase });
            }
        }
        self.strategy.validate()
    }
}
