//! What a node remembers durably about its jobs, and the records that
//! change it. The machine returns records; the IO layer writes them (before
//! the message they accompany leaves) and replays them at start-up.

use std::collections::{BTreeMap, BTreeSet};

use veil_federation::{DeclineCode, Phase};
use veil_privacy_ledger::Charge;

use crate::task::PhaseReply;

/// One phase of one job at this node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PhaseKey {
    /// The job.
    pub job_id: String,
    /// The round.
    pub round: u32,
    /// The phase.
    pub phase: Phase,
}

/// One durable change, written before the message it accompanies leaves.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// The job's spec digest, pinned at its first task.
    PinSpec {
        /// The job.
        job_id: String,
        /// SHA-256 of the spec's wire encoding.
        digest: [u8; 32],
    },
    /// The phase's reply, computed once (with its noise) and reused by any
    /// later attempt, so no retry draws fresh noise.
    StoreReply {
        /// The phase.
        key: PhaseKey,
        /// The reply.
        reply: PhaseReply,
    },
    /// The node's input for the phase left, in this attempt (its masked
    /// input, or its plain reply).
    Released {
        /// The phase.
        key: PhaseKey,
        /// The attempt.
        attempt: u32,
    },
    /// The node's training update is in the round's aggregate (it saw itself
    /// among the survivors), so it may evaluate the round's model.
    Contributed {
        /// The job.
        job_id: String,
        /// The round.
        round: u32,
    },
    /// A privacy charge, for the node's ledger.
    Charge(Charge),
    /// The secure-aggregation guarantee of a round whose training input left
    /// (for the node's ledger, beside the round's charge).
    Guarantee {
        /// The job.
        job_id: String,
        /// The round.
        round: u32,
        /// The guarantee, as `veil_secure_aggregation::Guarantee` displays it.
        guarantee: String,
    },
    /// The node refused a task: kept so the partner can see every refusal.
    Refusal {
        /// The phase.
        key: PhaseKey,
        /// The code sent.
        code: DeclineCode,
        /// When, in Unix seconds.
        at_unix_seconds: u64,
    },
}

/// Everything the node remembers across restarts (but its ledger, which
/// lives in its own file).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeMemory {
    /// Pinned spec digests by job.
    pub spec_pins: BTreeMap<String, [u8; 32]>,
    /// Stored replies.
    pub replies: BTreeMap<PhaseKey, PhaseReply>,
    /// The attempt in which each phase's input left.
    pub released: BTreeMap<PhaseKey, u32>,
    /// (job, round) whose aggregate holds this node's training update.
    pub contributed: BTreeSet<(String, u32)>,
}

impl NodeMemory {
    /// Applies one record (charges and refusals change nothing here).
    pub fn apply(&mut self, record: &Record) {
        match record {
            Record::PinSpec { job_id, digest } => {
                self.spec_pins.insert(job_id.clone(), *digest);
            }
            Record::StoreReply { key, reply } => {
                self.replies.insert(key.clone(), reply.clone());
            }
            Record::Released { key, attempt } => {
                self.released.insert(key.clone(), *attempt);
            }
            Record::Contributed { job_id, round } => {
                self.contributed.insert((job_id.clone(), *round));
            }
            Record::Charge(_) | Record::Guarantee { .. } | Record::Refusal { .. } => {}
        }
    }
}
