//! Identifiers, the job's protocol parameters, the partner policy floor and the
//! trusted directory of node identity keys, shared by the client and the server.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::graph::NeighbourGraph;
use crate::wire::Writer;

/// The secure-aggregation protocol version: the message encoding and the mask
/// PRG together. It is the first byte of every encoded message and part of
/// [`ProtocolParams::fingerprint`], so parties built with different versions
/// refuse each other's messages (`DecodeError::ProtocolVersionMismatch`) and
/// fail each other's signatures instead of unmasking with different keystreams.
///
/// 1: ChaCha20 masks keyed directly by the seed. 2: AES-128-CTR masks keyed by
/// HKDF-SHA256 from the seed (`prg`).
pub const PROTOCOL_VERSION: u8 = 2;

/// Why a set of protocol parameters or identities was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    /// A node identifier is empty or longer than the wire format allows.
    #[error("node identifier must be 1..=65535 bytes, got {length}")]
    InvalidNodeIdLength {
        /// The length in bytes of the rejected identifier.
        length: usize,
    },
    /// The cohort lists the same node twice.
    #[error("node {node} appears twice in the cohort")]
    DuplicateCohortMember {
        /// The repeated node.
        node: NodeId,
    },
    /// Secure aggregation needs at least two clients to hide anyone.
    #[error("cohort has {size} members; at least 2 are needed")]
    CohortTooSmall {
        /// The cohort size.
        size: usize,
    },
    /// The neighbour count is not `n - 1` (full graph) and not an even number below it.
    #[error(
        "neighbour count {neighbour_count} is invalid for a cohort of {cohort_size}: use n-1 or an even number below it"
    )]
    InvalidNeighbourCount {
        /// The requested neighbour count k.
        neighbour_count: usize,
        /// The cohort size n.
        cohort_size: usize,
    },
    /// The threshold must be a strict majority of the neighbours and at most their number.
    #[error("threshold {threshold} must satisfy k/2 < t <= k for k = {neighbour_count}")]
    InvalidThreshold {
        /// The requested reconstruction threshold t.
        threshold: usize,
        /// The neighbour count k.
        neighbour_count: usize,
    },
    /// The modulus must be between 2^1 and 2^32 so uploads fit in 4 bytes per parameter.
    #[error("modulus bits {bits} outside 1..=32")]
    InvalidModulusBits {
        /// The requested modulus bit width b.
        bits: u32,
    },
    /// An empty model vector cannot be aggregated.
    #[error("vector length must be at least 1")]
    EmptyVector,
    /// An Ed25519 public key is not 32 bytes long.
    #[error("identity key of {node} has {length} bytes, expected 32")]
    InvalidIdentityKeyLength {
        /// The node whose key is malformed.
        node: NodeId,
        /// The length that was supplied.
        length: usize,
    },
}

/// A node's identifier, as used in the rest of Veil (the protobuf `node_id`).
///
/// Ordering is byte-wise on the UTF-8 text; it decides the sign of pairwise
/// masks and the Shamir x-coordinates, so every party must agree on it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(String);

impl NodeId {
    /// Wraps a node identifier, rejecting empty and over-long ones.
    pub fn new(id: impl Into<String>) -> Result<Self, ParamsError> {
        let id = id.into();
        if id.is_empty() || id.len() > usize::from(u16::MAX) {
            return Err(ParamsError::InvalidNodeIdLength { length: id.len() });
        }
        Ok(NodeId(id))
    }

    /// Builds an identifier the decoder has already length-checked.
    pub(crate) fn from_decoded(id: &str) -> Self {
        NodeId(id.to_owned())
    }

    /// The identifier's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// The secure-aggregation parameters of one job, identical for every party.
///
/// There is no `Default`: the cohort, threshold and modulus are decisions each
/// job must make (see `docs/secure-aggregation.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolParams {
    /// The nodes selected for the round, sorted and unique. The neighbour graph
    /// and the Shamir x-coordinates are derived from positions in this list.
    cohort: Vec<NodeId>,
    /// Public randomness for the neighbour graph. It must not be chosen by the
    /// coordinator after seeing the cohort, or it could place corrupt nodes
    /// around a victim; the job fixes it when it is submitted.
    graph_seed: [u8; 32],
    /// k: how many neighbours each client masks with and shares its secrets to.
    neighbour_count: usize,
    /// t: how many neighbour shares reconstruct a client's secret.
    reconstruction_threshold: usize,
    /// b: inputs, masks and uploads live in Z_{2^b}.
    modulus_bits: u32,
    /// d: the number of elements in each input vector.
    vector_length: usize,
}

impl ProtocolParams {
    /// Validates and normalises (sorts) the parameters.
    pub fn new(
        cohort: Vec<NodeId>,
        graph_seed: [u8; 32],
        neighbour_count: usize,
        reconstruction_threshold: usize,
        modulus_bits: u32,
        vector_length: usize,
    ) -> Result<Self, ParamsError> {
        let mut cohort = cohort;
        cohort.sort();
        if let Some(pair) = cohort.windows(2).find(|pair| pair.first() == pair.get(1)) {
            let node = pair
                .first()
                .cloned()
                .unwrap_or_else(|| NodeId(String::new()));
            return Err(ParamsError::DuplicateCohortMember { node });
        }
        let cohort_size = cohort.len();
        if cohort_size < 2 {
            return Err(ParamsError::CohortTooSmall { size: cohort_size });
        }
        let full_graph = neighbour_count == cohort_size - 1;
        let sparse_graph = neighbour_count >= 2
            && neighbour_count < cohort_size - 1
            && neighbour_count.is_multiple_of(2);
        if !full_graph && !sparse_graph {
            return Err(ParamsError::InvalidNeighbourCount {
                neighbour_count,
                cohort_size,
            });
        }
        if reconstruction_threshold * 2 <= neighbour_count
            || reconstruction_threshold > neighbour_count
        {
            return Err(ParamsError::InvalidThreshold {
                threshold: reconstruction_threshold,
                neighbour_count,
            });
        }
        if !(1..=32).contains(&modulus_bits) {
            return Err(ParamsError::InvalidModulusBits { bits: modulus_bits });
        }
        if vector_length == 0 {
            return Err(ParamsError::EmptyVector);
        }
        Ok(ProtocolParams {
            cohort,
            graph_seed,
            neighbour_count,
            reconstruction_threshold,
            modulus_bits,
            vector_length,
        })
    }

    /// The sorted cohort.
    pub fn cohort(&self) -> &[NodeId] {
        &self.cohort
    }

    /// The public seed of the neighbour graph.
    pub fn graph_seed(&self) -> &[u8; 32] {
        &self.graph_seed
    }

    /// k, the number of neighbours per client.
    pub fn neighbour_count(&self) -> usize {
        self.neighbour_count
    }

    /// t, the Shamir reconstruction threshold.
    pub fn reconstruction_threshold(&self) -> usize {
        self.reconstruction_threshold
    }

    /// b, the modulus bit width.
    pub fn modulus_bits(&self) -> u32 {
        self.modulus_bits
    }

    /// d, the vector length.
    pub fn vector_length(&self) -> usize {
        self.vector_length
    }

    /// The mask that reduces a `u32` modulo 2^b.
    pub fn modulus_mask(&self) -> u32 {
        modulus_mask(self.modulus_bits)
    }

    /// Position of a node in the sorted cohort.
    pub fn cohort_index(&self, node: &NodeId) -> Option<usize> {
        self.cohort.binary_search(node).ok()
    }

    /// Builds the neighbour graph these parameters describe.
    pub fn neighbour_graph(&self) -> NeighbourGraph {
        NeighbourGraph::new(
            self.cohort.len(),
            self.neighbour_count,
            &self.graph_seed,
            &self.fingerprint(),
        )
    }

    /// SHA-256 over every parameter and the protocol version. It is inside
    /// every signature, so a coordinator that hands different parameters (or
    /// cohorts) to different clients makes their signatures fail to verify for
    /// each other, and so does a client on another protocol version (mask PRG).
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint_at(PROTOCOL_VERSION)
    }

    /// The fingerprint as a build speaking `protocol_version` would compute it
    /// (from version 2 on; version 1 did not include the byte at all).
    fn fingerprint_at(&self, protocol_version: u8) -> [u8; 32] {
        let mut writer = Writer::new_raw();
        writer.fixed(b"veil-secagg protocol params v2");
        writer.fixed(&[protocol_version]);
        writer.node_ids(&self.cohort);
        writer.fixed(&self.graph_seed);
        writer.u64(self.neighbour_count as u64);
        writer.u64(self.reconstruction_threshold as u64);
        writer.u32(self.modulus_bits);
        writer.u64(self.vector_length as u64);
        let digest = ring::digest::digest(&ring::digest::SHA256, &writer.into_bytes());
        let mut fingerprint = [0u8; 32];
        fingerprint.copy_from_slice(digest.as_ref());
        fingerprint
    }
}

/// The mask that reduces a `u32` modulo 2^bits, for bits in 1..=32.
pub(crate) fn modulus_mask(bits: u32) -> u32 {
    if bits >= 32 {
        u32::MAX
    } else {
        (1u32 << bits) - 1
    }
}

/// Limits a partner organisation imposes on every job its node joins,
/// whatever the job asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerPolicy {
    /// The lowest reconstruction threshold t the node accepts. It is also the
    /// smallest number of surviving neighbours the node will unmask with, so a
    /// coordinator cannot isolate the node's input by dropping everyone else.
    pub minimum_threshold: usize,
}

/// A node's long-term Ed25519 identity key: the 32 bytes as enrolled, and
/// its curve point decoded once.
///
/// Why keep the point: a client checks about 2k identity signatures per
/// secure phase in one batch, and decoding each signer's key (a square root
/// in the field) was a third of the batch's cost. A node that keeps its
/// cohort's `IdentityVerifyingKey`s across rounds decodes each key once.
#[derive(Clone)]
pub struct IdentityVerifyingKey {
    bytes: [u8; 32],
    /// `None` when the bytes are not a point of edwards25519; every signature
    /// under such a key fails (ring has the final word on which).
    point: Option<ed25519_dalek::VerifyingKey>,
}

impl IdentityVerifyingKey {
    /// Decodes `bytes` (an encoding that is not a curve point is kept, and
    /// no signature verifies under it).
    pub fn new(bytes: [u8; 32]) -> Self {
        IdentityVerifyingKey {
            bytes,
            point: ed25519_dalek::VerifyingKey::from_bytes(&bytes).ok(),
        }
    }

    /// The key as enrolled.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// The decoded point, for batch verification.
    pub(crate) fn point(&self) -> Option<&ed25519_dalek::VerifyingKey> {
        self.point.as_ref()
    }
}

impl PartialEq for IdentityVerifyingKey {
    fn eq(&self, other: &Self) -> bool {
        // The point is a function of the bytes.
        self.bytes == other.bytes
    }
}

impl Eq for IdentityVerifyingKey {}

impl std::fmt::Debug for IdentityVerifyingKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_tuple("IdentityVerifyingKey")
            .field(&self.bytes)
            .finish()
    }
}

/// The long-term Ed25519 identity keys of enrolled nodes, as distributed by
/// Veil's enrolment (outside this crate). Signatures on key advertisements and
/// survivor lists are checked against it, so the coordinator cannot substitute keys.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdentityDirectory {
    /// Node to its identity key.
    keys: BTreeMap<NodeId, IdentityVerifyingKey>,
}

impl IdentityDirectory {
    /// Builds the directory from (node, public key) pairs.
    pub fn from_entries(
        entries: impl IntoIterator<Item = (NodeId, Vec<u8>)>,
    ) -> Result<Self, ParamsError> {
        let mut keys = BTreeMap::new();
        for (node, key) in entries {
            let key_array: [u8; 32] =
                key.as_slice()
                    .try_into()
                    .map_err(|_| ParamsError::InvalidIdentityKeyLength {
                        node: node.clone(),
                        length: key.len(),
                    })?;
            keys.insert(node, IdentityVerifyingKey::new(key_array));
        }
        Ok(IdentityDirectory { keys })
    }

    /// Builds the directory from keys already decoded.
    pub fn from_keys(entries: impl IntoIterator<Item = (NodeId, IdentityVerifyingKey)>) -> Self {
        IdentityDirectory {
            keys: entries.into_iter().collect(),
        }
    }

    /// The identity key of a node, if enrolled.
    pub fn public_key(&self, node: &NodeId) -> Option<&[u8; 32]> {
        self.keys.get(node).map(IdentityVerifyingKey::as_bytes)
    }

    /// The identity key of a node with its decoded point, if enrolled.
    pub(crate) fn identity_key(&self, node: &NodeId) -> Option<&IdentityVerifyingKey> {
        self.keys.get(node)
    }
}

/// What binds every signature, key derivation and ciphertext to one round of
/// one job under one parameter set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundBinding {
    /// The job identifier (protobuf `job_id`).
    pub job_id: String,
    /// The round number within the job.
    pub round: u32,
    /// `ProtocolParams::fingerprint` of the round's parameters.
    pub params_fingerprint: [u8; 32],
}

impl RoundBinding {
    /// Binds a job and round to a parameter set.
    pub fn new(job_id: impl Into<String>, round: u32, params: &ProtocolParams) -> Self {
        RoundBinding {
            job_id: job_id.into(),
            round,
            params_fingerprint: params.fingerprint(),
        }
    }

    /// Writes the binding into a transcript.
    pub(crate) fn write_into(&self, writer: &mut Writer) {
        writer.byte_string(self.job_id.as_bytes());
        writer.u32(self.round);
        writer.fixed(&self.params_fingerprint);
    }
}

/// Everything both sides of one round share, built once and shared by phases.
#[derive(Debug)]
pub(crate) struct RoundShared {
    /// The round's binding (job, round, parameter fingerprint).
    pub(crate) binding: RoundBinding,
    /// The validated protocol parameters.
    pub(crate) params: Arc<ProtocolParams>,
    /// The neighbour graph derived from the parameters.
    pub(crate) graph: NeighbourGraph,
    /// Trusted identity keys.
    pub(crate) identities: Arc<IdentityDirectory>,
}

impl RoundShared {
    pub(crate) fn new(
        job_id: String,
        round: u32,
        params: Arc<ProtocolParams>,
        identities: Arc<IdentityDirectory>,
    ) -> Self {
        let binding = RoundBinding::new(job_id, round, &params);
        let graph = params.neighbour_graph();
        RoundShared {
            binding,
            params,
            graph,
            identities,
        }
    }

    /// The Shamir x-coordinate of a cohort member: its position plus one, so never zero.
    pub(crate) fn x_coordinate(&self, cohort_index: usize) -> u64 {
        cohort_index as u64 + 1
    }

    /// The node at a cohort position.
    pub(crate) fn node_at(&self, cohort_index: usize) -> Option<&NodeId> {
        self.params.cohort.get(cohort_index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_protocol_version_is_fingerprinted() {
        let cohort = vec![NodeId::new("a").unwrap(), NodeId::new("b").unwrap()];
        let params = ProtocolParams::new(cohort, [0; 32], 1, 1, 32, 4).unwrap();
        assert_eq!(
            params.fingerprint(),
            params.fingerprint_at(PROTOCOL_VERSION)
        );
        // Another version's binding differs, so its signatures and derived
        // seeds cannot be mistaken for this version's.
        assert_ne!(params.fingerprint(), params.fingerprint_at(1));
        assert_ne!(
            params.fingerprint(),
            params.fingerprint_at(PROTOCOL_VERSION + 1)
        );
    }
}
