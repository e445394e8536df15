//! The phases of a job: a leaf module that the engine, the plan, the aggregators and the secure
//! rounds all name, so none of them imports another just for this type.

use std::fmt;

/// The phases of a job, in the order they run within a round.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Phase {
    /// Round 0: nodes report additive feature statistics for shared scaling.
    FeatureStats,
    /// Nodes train from the global model and send weighted deltas.
    Train,
    /// Nodes evaluate the new global model on their held-out split.
    Evaluate,
    /// An analysis job's release (a segmentation step, a histogram): nodes
    /// compute the job kind's noised vector at the public parameters the
    /// coordinator derived from the releases before it.
    Release,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::FeatureStats => "feature-stats",
            Phase::Train => "train",
            Phase::Evaluate => "evaluate",
            Phase::Release => "release",
        })
    }
}
