//! Streaming weighted sums of node results, with the validation that keeps a
//! malformed reply from touching the sum.
//!
//! Replies are folded in as they arrive, so memory stays at one model-sized
//! buffer per open phase whatever the number of nodes. Every check runs
//! before the first addition: a rejected reply leaves the sums unchanged.

use thiserror::Error;

use crate::phase::Phase;

/// Why a node's reply was refused. The round goes on without it.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum RejectReason {
    /// The node never registered (or the coordinator forgot it).
    #[error("unknown node '{node}': register before submitting")]
    UnknownNode {
        /// The claimed node id.
        node: String,
    },
    /// The job id is not known to the coordinator.
    #[error("unknown job '{job}'")]
    UnknownJob {
        /// The job id.
        job: String,
    },
    /// The reply is for a phase that is not open (late, early or finished).
    #[error("job '{job}' round {round} phase {phase} is not open (the job is at {current})")]
    PhaseClosed {
        /// Job id.
        job: String,
        /// Round of the reply.
        round: u32,
        /// Phase of the reply.
        phase: Phase,
        /// Where the job is now.
        current: String,
    },
    /// The node was not invited to this phase.
    #[error("node '{node}' was not invited to job '{job}' round {round} phase {phase}")]
    NotInvited {
        /// Node id.
        node: String,
        /// Job id.
        job: String,
        /// Round.
        round: u32,
        /// Phase.
        phase: Phase,
    },
    /// A vector has the wrong length.
    #[error("{what} has {actual} values, expected {expected}")]
    WrongShape {
        /// Which vector.
        what: &'static str,
        /// Expected length.
        expected: usize,
        /// Received length.
        actual: usize,
    },
    /// A vector contains NaN or infinity.
    #[error("{what} value {index} is not finite")]
    NonFinite {
        /// Which vector.
        what: &'static str,
        /// First offending index.
        index: usize,
    },
    /// The aggregation weight is negative, NaN or infinite (or zero for training).
    /// A secure-aggregation message was refused by the protocol.
    #[error("secure aggregation {step} message from '{node}' refused: {reason}")]
    SecureMessage {
        /// The sender.
        node: String,
        /// The step it answered.
        step: String,
        /// Why.
        reason: String,
    },
    /// A plain reply was sent to a secure phase or the reverse.
    #[error("job '{job}' aggregates in {expected} mode; this reply is for {actual} mode")]
    WrongMode {
        /// The job.
        job: String,
        /// The job's mode.
        expected: &'static str,
        /// The reply's.
        actual: &'static str,
    },
    #[error("weight {weight} is invalid: it must be finite and {expected}")]
    InvalidWeight {
        /// The weight sent.
        weight: f64,
        /// What was required.
        expected: &'static str,
    },
}

/// Sums of the replies accepted so far in one phase.
#[derive(Debug, Clone, PartialEq)]
pub struct Accumulator {
    /// Sum of `weight * vector` over accepted replies, in f64 so that summing
    /// many f32 deltas loses no precision.
    weighted_vector_sum: Vec<f64>,
    /// Sum of weights.
    weight_sum: f64,
    /// Element-wise sum of the statistics vectors.
    statistics_sum: Vec<f64>,
    /// Replies folded in.
    replies: u32,
}

/// The shapes one phase expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpectedShape {
    /// Model-vector length (0 when the phase carries no vector).
    pub vector_len: usize,
    /// Statistics-vector length.
    pub statistics_len: usize,
    /// Whether a zero weight is refused (training replies must carry examples).
    pub positive_weight: bool,
}

impl Accumulator {
    /// Empty sums for a phase of the given shape.
    pub fn new(shape: ExpectedShape) -> Self {
        Self {
            weighted_vector_sum: vec![0.0; shape.vector_len],
            weight_sum: 0.0,
            statistics_sum: vec![0.0; shape.statistics_len],
            replies: 0,
        }
    }

    /// Checks a reply against `shape` without changing anything.
    pub fn validate(
        shape: ExpectedShape,
        weight: f64,
        statistics: &[f64],
        vector: &[f32],
    ) -> Result<(), RejectReason> {
        let weight_ok = weight.is_finite()
            && if shape.positive_weight {
                weight > 0.0
            } else {
                weight >= 0.0
            };
        if !weight_ok {
            return Err(RejectReason::InvalidWeight {
                weight,
                expected: if shape.positive_weight { "> 0" } else { ">= 0" },
            });
        }
        if vector.len() != shape.vector_len {
            return Err(RejectReason::WrongShape {
                what: "model delta",
                expected: shape.vector_len,
                actual: vector.len(),
            });
        }
        if statistics.len() != shape.statistics_len {
            return Err(RejectReason::WrongShape {
                what: "statistics",
                expected: shape.statistics_len,
                actual: statistics.len(),
            });
        }
        if let Some(index) = vector.iter().position(|v| !v.is_finite()) {
            return Err(RejectReason::NonFinite {
                what: "model delta",
                index,
            });
        }
        if let Some(index) = statistics.iter().position(|v| !v.is_finite()) {
            return Err(RejectReason::NonFinite {
                what: "statistics",
                index,
            });
        }
        Ok(())
    }

    /// Folds in a reply that [`Accumulator::validate`] accepted.
    pub fn add(&mut self, weight: f64, statistics: &[f64], vector: &[f32]) {
        for (sum, value) in self.weighted_vector_sum.iter_mut().zip(vector) {
            *sum += weight * f64::from(*value);
        }
        for (sum, value) in self.statistics_sum.iter_mut().zip(statistics) {
            *sum += value;
        }
        self.weight_sum += weight;
        self.replies += 1;
    }

    /// Sums computed elsewhere (decoded from a secure aggregate), for the
    /// same downstream use as folded replies.
    pub fn from_sums(
        shape: ExpectedShape,
        weighted_vector_sum: Vec<f64>,
        weight_sum: f64,
        statistics_sum: Vec<f64>,
        replies: u32,
    ) -> Self {
        let mut weighted_vector_sum = weighted_vector_sum;
        weighted_vector_sum.resize(shape.vector_len, 0.0);
        let mut statistics_sum = statistics_sum;
        statistics_sum.resize(shape.statistics_len, 0.0);
        Self {
            weighted_vector_sum,
            weight_sum,
            statistics_sum,
            replies,
        }
    }

    /// The weighted vector sum, for adding central noise before it is used.
    pub fn weighted_vector_sum_mut(&mut self) -> &mut [f64] {
        &mut self.weighted_vector_sum
    }

    /// Number of replies folded in.
    pub fn replies(&self) -> u32 {
        self.replies
    }

    /// Sum of weights.
    pub fn weight_sum(&self) -> f64 {
        self.weight_sum
    }

    /// Element-wise sum of the statistics vectors.
    pub fn statistics_sum(&self) -> &[f64] {
        &self.statistics_sum
    }

    /// The weighted mean vector, or `None` when no weight was received.
    pub fn weighted_mean(&self) -> Option<Vec<f64>> {
        (self.weight_sum > 0.0).then(|| {
            self.weighted_vector_sum
                .iter()
                .map(|sum| sum / self.weight_sum)
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: ExpectedShape = ExpectedShape {
        vector_len: 3,
        statistics_len: 2,
        positive_weight: true,
    };

    #[test]
    fn weighted_mean_weights_by_examples() {
        let mut accumulator = Accumulator::new(SHAPE);
        accumulator.add(1.0, &[1.0, 2.0], &[1.0, 0.0, 3.0]);
        accumulator.add(3.0, &[0.5, 0.5], &[-1.0, 4.0, 3.0]);
        assert_eq!(accumulator.weighted_mean().unwrap(), vec![-0.5, 3.0, 3.0]);
        assert_eq!(accumulator.statistics_sum(), &[1.5, 2.5]);
        assert_eq!(accumulator.replies(), 2);
    }

    #[test]
    fn bad_replies_are_named() {
        let check = |weight: f64, statistics: &[f64], vector: &[f32], expected: RejectReason| {
            assert_eq!(
                Accumulator::validate(SHAPE, weight, statistics, vector),
                Err(expected)
            );
        };
        check(
            1.0,
            &[0.0, 0.0],
            &[0.0; 4],
            RejectReason::WrongShape {
                what: "model delta",
                expected: 3,
                actual: 4,
            },
        );
        check(
            1.0,
            &[0.0],
            &[0.0; 3],
            RejectReason::WrongShape {
                what: "statistics",
                expected: 2,
                actual: 1,
            },
        );
        check(
            1.0,
            &[0.0, 0.0],
            &[0.0, f32::NAN, 0.0],
            RejectReason::NonFinite {
                what: "model delta",
                index: 1,
            },
        );
        check(
            1.0,
            &[f64::INFINITY, 0.0],
            &[0.0; 3],
            RejectReason::NonFinite {
                what: "statistics",
                index: 0,
            },
        );
        check(
            0.0,
            &[0.0, 0.0],
            &[0.0; 3],
            RejectReason::InvalidWeight {
                weight: 0.0,
                expected: "> 0",
            },
        );
    }
}
