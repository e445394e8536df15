//! What the coordinator asks of a node, in domain form: the wire conversion
//! (`client-node`'s edge) builds these, and nothing here trusts them.

use veil_federation::{Phase, SecureStep};
use veil_job::JobSpec;

/// One task as the node received it.
#[derive(Debug, Clone)]
pub struct NodeTask {
    /// The job.
    pub job_id: String,
    /// The round (0 for feature statistics).
    pub round: u32,
    /// The phase.
    pub phase: Phase,
    /// The job spec the task carries, validated by `JobSpec::from_wire`.
    pub spec: JobSpec,
    /// SHA-256 of the spec's wire encoding: pinned at the job's first task,
    /// so a coordinator cannot change a job under a node mid-way.
    pub spec_digest: [u8; 32],
    /// The secure-aggregation step, for secure phases.
    pub secure: Option<SecureRequest>,
    /// A release phase's public parameters as the coordinator states them
    /// (checked by the analysis against its own plan before use).
    pub release_parameters: Vec<f64>,
}

/// One secure-aggregation step as the coordinator states it.
#[derive(Debug, Clone)]
pub struct SecureRequest {
    /// The step to answer.
    pub step: SecureStep,
    /// The phase attempt (from 1; bounded by the spec).
    pub attempt: u32,
    /// The cohort, as listed.
    pub cohort: Vec<String>,
    /// The neighbour-graph seed the coordinator claims.
    pub graph_seed: [u8; 32],
    /// k as the coordinator states it.
    pub neighbour_count: usize,
    /// t as the coordinator states it.
    pub reconstruction_threshold: usize,
    /// b as the coordinator states it.
    pub modulus_bits: u32,
    /// The encoded vector's length as the coordinator states it.
    pub vector_length: usize,
    /// Credentials relayed for the cohort's members.
    pub members: Vec<MemberCredential>,
    /// The step's input in veil-secure-aggregation's encoding.
    pub payload: Vec<u8>,
}

/// A cohort member's credential as relayed by the coordinator.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberCredential {
    /// The member's node id.
    pub node_id: String,
    /// Its certificate (DER); the only source of its key under a federation.
    pub certificate_der: Vec<u8>,
    /// The key the coordinator says it registered; used only in insecure
    /// development, where there is no certificate.
    pub claimed_key: Vec<u8>,
}

/// A node's reply to a phase before encoding: what plain aggregation sends
/// and secure aggregation masks. Computed once per (job, round, phase) and
/// stored before anything derived from it leaves.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseReply {
    /// Aggregation weight.
    pub weight: f64,
    /// Additive statistics.
    pub statistics: Vec<f64>,
    /// Model delta (training only).
    pub vector: Vec<f32>,
}

impl PhaseReply {
    /// A compact binary form for the node's store: weight, statistics and
    /// vector as little-endian values behind their counts.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(24 + 8 * self.statistics.len() + 4 * self.vector.len());
        bytes.extend_from_slice(&self.weight.to_le_bytes());
        bytes.extend_from_slice(&(self.statistics.len() as u64).to_le_bytes());
        for value in &self.statistics {
            bytes.extend_from_slice(&value.to_le_bytes());
        }
        bytes.extend_from_slice(&(self.vector.len() as u64).to_le_bytes());
        for value in &self.vector {
            bytes.extend_from_slice(&value.to_le_bytes());
        }
        bytes
    }

    /// Reads [`PhaseReply::to_bytes`]; `None` when the bytes are not one.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let mut rest = bytes;
        let mut take = |n: usize| -> Option<&[u8]> {
            if rest.len() < n {
                return None;
            }
            let (head, tail) = rest.split_at(n);
            rest = tail;
            Some(head)
        };
        let weight = f64::from_le_bytes(take(8)?.try_into().ok()?);
        let n_statistics = usize::try_from(u64::from_le_bytes(take(8)?.try_into().ok()?)).ok()?;
        let mut statistics = Vec::with_capacity(n_statistics.min(1 << 20));
        for _ in 0..n_statistics {
            statistics.push(f64::from_le_bytes(take(8)?.try_into().ok()?));
        }
        let n_vector = usize::try_from(u64::from_le_bytes(take(8)?.try_into().ok()?)).ok()?;
        let mut vector = Vec::with_capacity(n_vector.min(1 << 24));
        for _ in 0..n_vector {
            vector.push(f32::from_le_bytes(take(4)?.try_into().ok()?));
        }
        if !rest.is_empty() {
            return None;
        }
        Some(PhaseReply {
            weight,
            statistics,
            vector,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn stored_replies_round_trip_bit_for_bit(
            weight in any::<f64>(),
            statistics in proptest::collection::vec(any::<f64>(), 0..20),
            vector in proptest::collection::vec(any::<f32>(), 0..50),
        ) {
            let reply = PhaseReply { weight, statistics, vector };
            let back = PhaseReply::from_bytes(&reply.to_bytes()).expect("decodes");
            prop_assert_eq!(back.to_bytes(), reply.to_bytes());
        }
    }

    #[test]
    fn truncated_or_padded_bytes_are_refused() {
        let reply = PhaseReply {
            weight: 1.0,
            statistics: vec![2.0],
            vector: vec![3.0],
        };
        let bytes = reply.to_bytes();
        assert_eq!(PhaseReply::from_bytes(&bytes[..bytes.len() - 1]), None);
        let mut padded = bytes.clone();
        padded.push(0);
        assert_eq!(PhaseReply::from_bytes(&padded), None);
    }
}
