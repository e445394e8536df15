//! Secure aggregation inside one phase: how a node's reply is encoded into
//! Z_{2^b}, and the coordinator's side of the SecAgg+ protocol driven step by
//! step with deadlines, ending in the same sums plain aggregation produces.
//!
//! The engine owns one [`SecureRound`] per open secure phase. The round is
//! in-memory only: a coordinator restart re-runs the phase with a fresh
//! protocol instance, which the protocol allows (new round keys every time).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_core::{CryptoRng, RngCore};
use thiserror::Error;
use veil_secure_aggregation::server::{self, ServerSession};
use veil_secure_aggregation::{
    ConsistencySignature, ContinuationSum, EncryptedShares, GraphError, GraphRequirements,
    IdentityDirectory, KeyAdvertisement, MaskedInput, NeighbourParameters, ProtocolParams,
    RejectedMessage, RoundFailed, ServerConfig, UnmaskResponse, choose_neighbour_parameters,
};

use veil_dp_noise::DiscreteGaussian;
use veil_privacy_accounting::DistributedDiscreteGaussian;

use crate::NodeId;
use crate::aggregate::{Accumulator, ExpectedShape, RejectReason};
use crate::phase::Phase;
use crate::privacy::{PartnerPrivacy, PartnerPrivacyError, clip_update, distributed_mechanism};

/// Default fraction of a round's cohort assumed to collude with the
/// coordinator when sizing the neighbour graph and the distributed noise.
pub const DEFAULT_COLLUSION_FRACTION: f64 = 0.2;
/// Default security parameter: the adversary learns a secret with
/// probability at most 2^-40 (sparse graphs).
pub const DEFAULT_SECURITY_BITS: u32 = 40;
/// A round fails for lack of surviving neighbours with probability at most 2^-20.
const CORRECTNESS_BITS: u32 = 20;
/// Statistics and weights are fixed point with this many fractional bits.
const STATISTIC_FRACTION_BITS: u32 = 20;
/// Total bits of one encoded statistic: sign, 65 integer bits, 20 fractional
/// bits, so a per-node sum of squared spend (easily 10^13) loses nothing.
const STATISTIC_TOTAL_BITS: u32 = 86;
/// A secure cohort needs three nodes: with two, each learns the other's input
/// from the sum and its own.
pub const MIN_SECURE_COHORT: usize = 3;

/// The job-level parameters of secure aggregation.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SecureSettings {
    /// Per-coordinate bound on the weight-normalised model delta.
    pub clip_range: f32,
    /// b: sums live in Z_{2^b}.
    pub modulus_bits: u32,
    /// Example counts are capped at this when weighting updates.
    pub max_weight: f64,
    /// Expected fraction of the cohort dropping out mid-round.
    pub dropout_rate: f64,
    /// Deadline of every step after the first.
    pub step_timeout: Duration,
    /// Public randomness fixed at job submission; each round's neighbour graph
    /// is derived from it, so the coordinator cannot pick a graph after seeing
    /// the cohort.
    pub graph_seed: [u8; 32],
    /// γ: the fraction of a cohort that may collude with the coordinator. The
    /// threshold resists the split-view attack with this many colluders, and
    /// distributed noise is calibrated for the honest survivors only.
    #[serde(default = "default_collusion_fraction")]
    pub collusion_fraction: f64,
    /// s: the security parameter (bits) of sparse neighbour graphs.
    #[serde(default = "default_security_bits")]
    pub security_bits: u32,
}

fn default_collusion_fraction() -> f64 {
    DEFAULT_COLLUSION_FRACTION
}

fn default_security_bits() -> u32 {
    DEFAULT_SECURITY_BITS
}

impl SecureSettings {
    /// What the neighbour graph of a cohort of `n_clients` must achieve: the
    /// requirements every party derives from the job alone.
    pub fn graph_requirements(&self, n_clients: usize) -> GraphRequirements {
        GraphRequirements {
            n_clients,
            dropout_rate: self.dropout_rate,
            corrupt_fraction: self.collusion_fraction,
            security_bits: self.security_bits,
            correctness_bits: CORRECTNESS_BITS,
        }
    }
}

/// The protocol steps, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SecureStep {
    /// Compute the reply, then advertise signed round keys.
    AdvertiseKeys,
    /// Share round secrets with neighbours.
    ShareKeys,
    /// Upload the masked, encoded reply.
    MaskedInput,
    /// Sign the survivor list.
    ConsistencyCheck,
    /// Reveal shares.
    Unmask,
    /// Upload the masked, encoded reply of a continuation: the evaluation of
    /// a round's model summed over exactly its training survivors with the
    /// training's pairwise seeds (one step, no new keys; see
    /// docs/secure-aggregation.md, "Continuations").
    ContinuationInput,
}

impl std::fmt::Display for SecureStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SecureStep::AdvertiseKeys => "advertise-keys",
            SecureStep::ShareKeys => "share-keys",
            SecureStep::MaskedInput => "masked-input",
            SecureStep::ConsistencyCheck => "consistency-check",
            SecureStep::Unmask => "unmask",
            SecureStep::ContinuationInput => "continuation-input",
        })
    }
}

/// Why a reply could not be encoded (node side) or a sum decoded (coordinator).
#[derive(Debug, Clone, Error, PartialEq)]
pub enum SecureEncodingError {
    /// A value is NaN or infinite.
    #[error("{what} value {index} is not finite")]
    NonFinite {
        /// Which part of the reply.
        what: &'static str,
        /// Its position.
        index: usize,
    },
    /// A statistic is too large for the fixed-point encoding.
    #[error("statistic {index} = {value} exceeds the secure encoding range ±{limit:e}")]
    StatisticOutOfRange {
        /// Its position (0 is the weight).
        index: usize,
        /// The value.
        value: f64,
        /// The largest magnitude encodable.
        limit: f64,
    },
    /// The reply does not have the phase's shape.
    #[error("{what} has {actual} values, expected {expected}")]
    WrongShape {
        /// Which part of the reply.
        what: &'static str,
        /// Expected length.
        expected: usize,
        /// Actual length.
        actual: usize,
    },
    /// Partner-level privacy cannot be applied as configured.
    #[error(transparent)]
    Privacy(#[from] PartnerPrivacyError),
    /// The modulus leaves too few bits per value for this cohort.
    #[error("{modulus_bits}-bit sums over {cohort} nodes leave no room for values")]
    ModulusTooSmall {
        /// b.
        modulus_bits: u32,
        /// The cohort size.
        cohort: usize,
    },
}

/// How one phase's reply (weight, statistics, vector) maps to a `u32` vector.
///
/// - The weight is normalised to `w = min(weight, max_weight) / max_weight`
///   and the vector is sent as `w * vector`, clipped per coordinate to
///   `clip_range` and encoded with unbiased stochastic rounding into
///   `value_bits` bits (one `u32` per coordinate: 4 bytes per parameter).
/// - The capped weight and the statistics are fixed point with
///   [`STATISTIC_FRACTION_BITS`] fractional bits, offset to be non-negative and
///   split into `limbs` limbs of `value_bits` bits. Each limb's sum over the
///   cohort fits in b bits, so the exact integer total is recovered from the
///   limb sums without carries being lost.
/// - With distributed partner-level DP the weighted vector is first clipped
///   to ℓ2 norm C, encoded into fewer `vector_bits` (leaving headroom for the
///   noise), and discrete Gaussian noise is added to the integers before
///   masking. The sum is decoded centred and modulo 2^b (Kairouz et al.
///   2021), so a noise excursion past the headroom wraps instead of biasing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplyEncoding {
    /// Coordinates of the model vector (0 outside training).
    pub vector_len: usize,
    /// Additive statistics of the phase.
    pub statistics_len: usize,
    /// Bits per encoded value, so that a cohort's sum cannot overflow b bits.
    pub value_bits: u32,
    /// Limbs per statistic.
    pub limbs: usize,
    /// Bits per encoded model coordinate (`value_bits` less the noise headroom).
    pub vector_bits: u32,
    /// b: sums live in Z_{2^b}.
    pub modulus_bits: u32,
    /// Per-coordinate clip of the weighted vector.
    pub clip_range: f32,
    /// Weight cap.
    pub max_weight: f64,
    /// ℓ2 bound of the weighted vector, when partner-level DP applies.
    pub update_clip_norm: Option<f64>,
    /// The noise each node adds, when partner-level DP is distributed.
    pub distributed: Option<DistributedDiscreteGaussian>,
}

/// The SecAgg+ graph of a round of `cohort` nodes: (k, t), the guarantee
/// they give, and how many honest inputs a released sum holds at least. The
/// coordinator opens rounds with it and every node recomputes it, so a
/// coordinator cannot downgrade (k, t) unnoticed.
pub fn secure_round_parameters(
    cohort: usize,
    settings: &SecureSettings,
) -> Result<NeighbourParameters, GraphError> {
    choose_neighbour_parameters(&settings.graph_requirements(cohort))
}

/// How many honest nodes' inputs a released sum of a round of `cohort` nodes
/// holds at least: the threshold t less the colluders the job tolerates.
/// Distributed noise is calibrated for this many, since a colluder can leave
/// its noise share out.
pub fn cohort_threshold(cohort: usize, settings: &SecureSettings) -> Result<usize, String> {
    secure_round_parameters(cohort, settings)
        .map(|graph| graph.honest_contributor_floor())
        .map_err(|error| error.to_string())
}

impl ReplyEncoding {
    /// The encoding for a phase of the given shape, a cohort of `cohort` nodes
    /// and the job's settings.
    pub fn new(
        vector_len: usize,
        statistics_len: usize,
        cohort: usize,
        settings: &SecureSettings,
        privacy: &PartnerPrivacy,
    ) -> Result<Self, SecureEncodingError> {
        let value_bits = veil_secure_aggregation::value_bits_for_sum(cohort, settings.modulus_bits)
            .ok()
            .filter(|&bits| bits >= 8)
            .ok_or(SecureEncodingError::ModulusTooSmall {
                modulus_bits: settings.modulus_bits,
                cohort,
            })?;
        let limbs = STATISTIC_TOTAL_BITS.div_ceil(value_bits) as usize;
        let too_small = SecureEncodingError::ModulusTooSmall {
            modulus_bits: settings.modulus_bits,
            cohort,
        };
        let (vector_bits, distributed) = match *privacy {
            PartnerPrivacy::Distributed {
                noise_multiplier,
                clip_norm,
            } if vector_len > 0 => {
                let threshold =
                    cohort_threshold(cohort, settings).map_err(PartnerPrivacyError::Accounting)?;
                // Each node deviates from the centre by at most half the
                // levels; the summed noise (of up to `cohort` nodes, each
                // calibrated for t) gets eight standard deviations on top.
                let noise_span =
                    8.0 * (cohort as f64 / threshold as f64).sqrt() * noise_multiplier * clip_norm
                        / f64::from(settings.clip_range);
                let spare_bits = (cohort as f64 + noise_span).log2().ceil();
                // Finer levels than the noise needs buy nothing, and the exact
                // sampler takes σ ≤ 2^16: aim for σ_node ≈ 2^15 integer units.
                let noise_bits = (f64::from(1u32 << 16)
                    * f64::from(settings.clip_range)
                    * (threshold as f64).sqrt()
                    / (noise_multiplier * clip_norm))
                    .log2()
                    .floor();
                let bits = (f64::from(settings.modulus_bits) - spare_bits)
                    .min(noise_bits)
                    .min(f64::from(value_bits));
                if bits < 8.0 {
                    return Err(too_small);
                }
                let vector_bits = bits as u32;
                let levels = f64::from((1u32 << vector_bits) - 1);
                let granularity = 2.0 * f64::from(settings.clip_range) / levels;
                let mechanism = distributed_mechanism(
                    noise_multiplier,
                    clip_norm,
                    granularity,
                    vector_len,
                    threshold,
                )?;
                (vector_bits, Some(mechanism))
            }
            _ => (value_bits, None),
        };
        Ok(ReplyEncoding {
            vector_len,
            statistics_len,
            value_bits,
            limbs,
            vector_bits,
            modulus_bits: settings.modulus_bits,
            clip_range: settings.clip_range,
            max_weight: settings.max_weight,
            update_clip_norm: if vector_len > 0 {
                privacy.clip_norm()
            } else {
                None
            },
            distributed,
        })
    }

    fn modulus_mask(&self) -> u32 {
        u32::try_from((1u64 << self.modulus_bits) - 1).unwrap_or(u32::MAX)
    }

    /// Length of the encoded vector.
    pub fn encoded_len(&self) -> usize {
        self.vector_len + (1 + self.statistics_len) * self.limbs
    }

    fn statistic_bits(&self) -> u32 {
        self.limbs as u32 * self.value_bits
    }

    fn statistic_offset(&self) -> i128 {
        1i128 << (self.statistic_bits() - 1)
    }

    /// Encodes one node's reply. Randomness (stochastic rounding) must come
    /// from a cryptographic generator: it hides the low bits of each value.
    pub fn encode<R: RngCore + CryptoRng>(
        &self,
        weight: f64,
        statistics: &[f64],
        vector: &[f32],
        rng: &mut R,
    ) -> Result<Vec<u32>, SecureEncodingError> {
        if vector.len() != self.vector_len {
            return Err(SecureEncodingError::WrongShape {
                what: "model delta",
                expected: self.vector_len,
                actual: vector.len(),
            });
        }
        if statistics.len() != self.statistics_len {
            return Err(SecureEncodingError::WrongShape {
                what: "statistics",
                expected: self.statistics_len,
                actual: statistics.len(),
            });
        }
        if !weight.is_finite() {
            return Err(SecureEncodingError::NonFinite {
                what: "weight",
                index: 0,
            });
        }
        let normalised_weight = (weight / self.max_weight).clamp(0.0, 1.0);
        let mut weighted: Vec<f32> = vector
            .iter()
            .map(|&value| (f64::from(value) * normalised_weight) as f32)
            .collect();
        if let Some(clip_norm) = self.update_clip_norm {
            clip_update(&mut weighted, clip_norm)?;
        }
        let mut encoded =
            veil_secure_aggregation::encode(&weighted, self.clip_range, self.vector_bits, rng)
                .map_err(|error| match error {
                    veil_secure_aggregation::EncodingError::NonFiniteValue { index } => {
                        SecureEncodingError::NonFinite {
                            what: "model delta",
                            index,
                        }
                    }
                    _ => SecureEncodingError::ModulusTooSmall {
                        modulus_bits: self.value_bits,
                        cohort: 0,
                    },
                })?;
        if let Some(mechanism) = &self.distributed {
            let noise = DiscreteGaussian::from_sigma(mechanism.node_sigma)
                .map_err(|error| PartnerPrivacyError::Accounting(format!("node noise: {error}")))?;
            let mask = self.modulus_mask();
            for value in &mut encoded {
                *value = value.wrapping_add(noise.sample(rng) as u32) & mask;
            }
        }
        encoded.reserve((1 + self.statistics_len) * self.limbs);
        // The weight itself travels exactly (capped, not normalised): example
        // counts are integers, and the fixed point keeps them exact.
        let capped_weight = normalised_weight * self.max_weight;
        let scalars = std::iter::once(capped_weight).chain(statistics.iter().copied());
        for (index, value) in scalars.enumerate() {
            self.push_statistic(&mut encoded, index, value, rng)?;
        }
        Ok(encoded)
    }

    fn push_statistic<R: RngCore + CryptoRng>(
        &self,
        out: &mut Vec<u32>,
        index: usize,
        value: f64,
        rng: &mut R,
    ) -> Result<(), SecureEncodingError> {
        if !value.is_finite() {
            return Err(SecureEncodingError::NonFinite {
                what: "statistics",
                index,
            });
        }
        let scaled = value * f64::from(1u32 << STATISTIC_FRACTION_BITS);
        let offset = self.statistic_offset();
        // Keep clear of the offset by a factor of two so rounding cannot wrap.
        let limit = (offset / 2) as f64;
        if scaled.abs() >= limit {
            return Err(SecureEncodingError::StatisticOutOfRange {
                index,
                value,
                limit: limit / f64::from(1u32 << STATISTIC_FRACTION_BITS),
            });
        }
        let floor = scaled.floor();
        let uniform = f64::from(rng.next_u32()) / 4_294_967_296.0;
        let rounded = if uniform < scaled - floor {
            floor + 1.0
        } else {
            floor
        };
        let shifted = (rounded as i128 + offset) as u128;
        let limb_mask = (1u128 << self.value_bits) - 1;
        for limb in 0..self.limbs {
            out.push(((shifted >> (limb as u32 * self.value_bits)) & limb_mask) as u32);
        }
        Ok(())
    }

    /// Decodes the unmasked sum of `summed` nodes' encodings into the sums
    /// plain aggregation would hold: `Σ w·v`, `Σ w` (both in examples) and the
    /// statistics' sums.
    pub fn decode(
        &self,
        sum: &[u32],
        summed: usize,
        shape: ExpectedShape,
    ) -> Result<Accumulator, SecureEncodingError> {
        if sum.len() != self.encoded_len() {
            return Err(SecureEncodingError::WrongShape {
                what: "unmasked sum",
                expected: self.encoded_len(),
                actual: sum.len(),
            });
        }
        let (vector_part, statistics_part) = sum.split_at(self.vector_len);
        let vector_sum = self.decode_vector(vector_part, summed);
        let offset = self.statistic_offset() * summed as i128;
        let scale = f64::from(1u32 << STATISTIC_FRACTION_BITS);
        let scalars: Vec<f64> = statistics_part
            .chunks_exact(self.limbs)
            .map(|limbs| {
                let total: i128 = limbs
                    .iter()
                    .enumerate()
                    .map(|(limb, &value)| i128::from(value) << (limb as u32 * self.value_bits))
                    .sum();
                (total - offset) as f64 / scale
            })
            .collect();
        let weight_sum = scalars.first().copied().unwrap_or(0.0);
        let weighted_vector_sum = vector_sum
            .iter()
            .map(|&value| value * self.max_weight)
            .collect();
        Ok(Accumulator::from_sums(
            shape,
            weighted_vector_sum,
            weight_sum,
            scalars.get(1..).map(<[f64]>::to_vec).unwrap_or_default(),
            summed as u32,
        ))
    }
}

impl ReplyEncoding {
    /// The sum of the weighted vectors from the sum of their encodings:
    /// each encoding is `(x + clip)·scale` (+ noise), so the summed offset
    /// `summed·levels/2` is removed and the remainder read as a signed value
    /// modulo 2^b. Without noise nothing wraps and this is exact decoding;
    /// with noise an excursion beyond the headroom wraps around (modular
    /// clipping, accounted as a rare large error) rather than saturating.
    fn decode_vector(&self, sum: &[u32], summed: usize) -> Vec<f64> {
        let levels = f64::from((1u32 << self.vector_bits) - 1);
        let modulus = (1u64 << self.modulus_bits) as f64;
        let centre = summed as f64 * levels / 2.0;
        let step = 2.0 * f64::from(self.clip_range) / levels;
        sum.iter()
            .map(|&total| {
                let mut offset = f64::from(total) - centre;
                offset -= modulus * ((offset / modulus) + 0.5).floor();
                offset * step
            })
            .collect()
    }
}

/// A cohort member as the coordinator knows it from its registration.
#[derive(Debug, Clone, PartialEq)]
pub struct CohortMember {
    /// The member's node id.
    pub node: NodeId,
    /// Its Ed25519 identity key, as it registered it.
    pub identity_key: [u8; 32],
    /// Its certificate (DER), relayed so that peers can check it against
    /// their own CA; empty in insecure development.
    pub certificate_der: Arc<Vec<u8>>,
}

/// What a node is asked to do in one step, with everything it needs.
#[derive(Debug, Clone, PartialEq)]
pub struct SecureTask {
    /// The step.
    pub step: SecureStep,
    /// The phase attempt this protocol instance belongs to.
    pub attempt: u32,
    /// The protocol parameters, identical for the whole cohort.
    pub params: Arc<ProtocolParams>,
    /// The cohort's members with their credentials, as they registered, in
    /// the first step of an instance only (a node authenticates its cohort
    /// there and keeps the keys for the instance; over mTLS at n = 100 the
    /// certificates are about 60 KB a task). A node verifies every
    /// certificate itself and trusts nothing else here.
    pub members: Arc<Vec<CohortMember>>,
    /// The step's input in veil-secure-aggregation's encoding (empty for the first step).
    pub payload: Arc<Vec<u8>>,
}

/// The server session in whichever state the round is in.
enum Stage {
    Advertise(ServerSession<server::AdvertiseKeys>),
    Share(ServerSession<server::ShareKeys>),
    Masked(ServerSession<server::MaskedInput>),
    Consistency(ServerSession<server::ConsistencyCheck>),
    Unmask(ServerSession<server::Unmask>),
    Continuation(ContinuationSum),
}

impl std::fmt::Debug for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::Advertise(_) => "Advertise",
            Stage::Share(_) => "Share",
            Stage::Masked(_) => "Masked",
            Stage::Consistency(_) => "Consistency",
            Stage::Unmask(_) => "Unmask",
            Stage::Continuation(_) => "Continuation",
        })
    }
}

/// How a step ended.
#[derive(Debug)]
pub enum StepOutcome {
    /// The next step is open.
    Continue,
    /// The protocol finished: these are the decoded sums and who is in them.
    Finished {
        /// The sums.
        sums: Accumulator,
        /// Nodes whose inputs are in the sum.
        contributors: Vec<NodeId>,
    },
    /// The protocol failed; the reason names the step and the shortfall.
    Failed(String),
}

/// The coordinator's side of one secure phase.
#[derive(Debug)]
pub struct SecureRound {
    attempt: u32,
    step: SecureStep,
    stage: Option<Stage>,
    params: Arc<ProtocolParams>,
    members: Arc<Vec<CohortMember>>,
    encoding: ReplyEncoding,
    shape: ExpectedShape,
    /// The graph's (k, t) and the guarantee they give, for the round record.
    graph: NeighbourParameters,
    /// The fewest inputs a sum may hold and still be released: checked
    /// before anyone is asked to unmask, so no sum is decoded only to be
    /// discarded (a discarded sum is still a release).
    min_contributors: usize,
    /// Nodes whose masked input this instance accepted: their input has left
    /// them for this (round, phase), and they take part in no later attempt.
    masked_inputs: BTreeSet<NodeId>,
    /// Nodes that answered the first step: the others are likely gone, and
    /// a retry goes on without them.
    advertised: BTreeSet<NodeId>,
    /// Nodes expected to answer the current step.
    expected: BTreeSet<NodeId>,
    /// Nodes that answered it.
    answered: BTreeSet<NodeId>,
    /// Input of the current step: shared, or per recipient.
    broadcast: Arc<Vec<u8>>,
    per_node: BTreeMap<NodeId, Arc<Vec<u8>>>,
    deadline: Instant,
    step_timeout: Duration,
    /// Once a full instance has finished: its survivors, for a continuation.
    finished_survivors: Option<Vec<NodeId>>,
}

/// What a continuation of a finished secure phase needs from it: its
/// parameters, graph and survivors, with their credentials.
#[derive(Debug, Clone)]
pub struct FinishedInstance {
    /// The finished instance's attempt.
    pub attempt: u32,
    /// Its protocol parameters.
    pub params: Arc<ProtocolParams>,
    /// Its (k, t) and guarantee, which the continuation inherits.
    pub graph: NeighbourParameters,
    /// The survivors (whose inputs are in its sum), sorted, with their credentials.
    pub survivors: Vec<CohortMember>,
}

/// Where a secure phase instance sits: the job, the round's position and
/// the attempt number.
#[derive(Debug, Clone, Copy)]
pub struct SecureRoundPosition<'a> {
    /// The job.
    pub job: &'a str,
    /// The round.
    pub round: u32,
    /// The phase.
    pub phase: Phase,
    /// The attempt, from 1.
    pub attempt: u32,
}

impl SecureRound {
    /// Opens the protocol for `cohort`; a released sum must hold at least
    /// `min_contributors` inputs.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        position: SecureRoundPosition<'_>,
        cohort: Vec<CohortMember>,
        min_contributors: usize,
        shape: ExpectedShape,
        settings: &SecureSettings,
        privacy: &PartnerPrivacy,
        first_deadline: Instant,
    ) -> Result<Self, String> {
        let SecureRoundPosition {
            job,
            round,
            phase,
            attempt,
        } = position;
        let n = cohort.len();
        if n < MIN_SECURE_COHORT {
            return Err(format!(
                "secure aggregation needs at least {MIN_SECURE_COHORT} nodes, {n} are available"
            ));
        }
        let encoding =
            ReplyEncoding::new(shape.vector_len, shape.statistics_len, n, settings, privacy)
                .map_err(|error| error.to_string())?;
        let graph = secure_round_parameters(n, settings).map_err(|error| error.to_string())?;
        let node_ids = cohort
            .iter()
            .map(|member| veil_secure_aggregation::NodeId::new(member.node.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| error.to_string())?;
        let cohort_names: Vec<&str> = cohort.iter().map(|member| member.node.as_str()).collect();
        let params = ProtocolParams::new(
            node_ids.clone(),
            round_graph_seed(
                &settings.graph_seed,
                GraphSeedInput {
                    job,
                    round,
                    phase,
                    attempt,
                    cohort: &cohort_names,
                },
            ),
            graph.neighbour_count,
            graph.reconstruction_threshold,
            settings.modulus_bits,
            encoding.encoded_len(),
        )
        .map_err(|error| error.to_string())?;
        let identities = IdentityDirectory::from_entries(
            node_ids
                .into_iter()
                .zip(cohort.iter().map(|member| member.identity_key.to_vec())),
        )
        .map_err(|error| error.to_string())?;
        let params = Arc::new(params);
        let session = ServerSession::new(ServerConfig {
            job_id: job.to_owned(),
            round: protocol_round(round, phase),
            params: Arc::clone(&params),
            identities: Arc::new(identities),
        });
        let expected = cohort.iter().map(|member| member.node.clone()).collect();
        Ok(SecureRound {
            attempt,
            step: SecureStep::AdvertiseKeys,
            stage: Some(Stage::Advertise(session)),
            params,
            members: Arc::new(cohort),
            encoding,
            shape,
            graph,
            min_contributors: min_contributors.max(1),
            masked_inputs: BTreeSet::new(),
            advertised: BTreeSet::new(),
            expected,
            answered: BTreeSet::new(),
            broadcast: Arc::new(Vec::new()),
            per_node: BTreeMap::new(),
            deadline: first_deadline,
            step_timeout: settings.step_timeout,
            finished_survivors: None,
        })
    }

    /// Opens a continuation of `finished` (the same round's training) for
    /// this phase: one step in which every survivor of `finished` sends its
    /// reply masked with the training's pairwise seeds. The sum exists only
    /// if all of them send; there is no dropout to tolerate and nothing to
    /// unmask.
    pub fn continuation(
        position: SecureRoundPosition<'_>,
        finished: &FinishedInstance,
        shape: ExpectedShape,
        settings: &SecureSettings,
        privacy: &PartnerPrivacy,
        first_deadline: Instant,
    ) -> Result<Self, String> {
        let n = finished.survivors.len();
        let encoding =
            ReplyEncoding::new(shape.vector_len, shape.statistics_len, n, settings, privacy)
                .map_err(|error| error.to_string())?;
        let trained = &finished.params;
        // The task names the finished instance's parameters (cohort, graph
        // seed, k, t, b) with this reply's length; each node checks them
        // against the instance it took part in.
        let params = ProtocolParams::new(
            trained.cohort().to_vec(),
            *trained.graph_seed(),
            trained.neighbour_count(),
            trained.reconstruction_threshold(),
            trained.modulus_bits(),
            encoding.encoded_len(),
        )
        .map_err(|error| error.to_string())?;
        let survivors = finished
            .survivors
            .iter()
            .map(|member| veil_secure_aggregation::NodeId::new(member.node.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| error.to_string())?;
        let sum = ContinuationSum::new(survivors, encoding.encoded_len(), trained.modulus_bits());
        let expected = finished
            .survivors
            .iter()
            .map(|member| member.node.clone())
            .collect();
        Ok(SecureRound {
            attempt: position.attempt,
            step: SecureStep::ContinuationInput,
            stage: Some(Stage::Continuation(sum)),
            params: Arc::new(params),
            members: Arc::new(finished.survivors.clone()),
            encoding,
            shape,
            graph: finished.graph.clone(),
            // Every survivor or nothing.
            min_contributors: n.max(1),
            masked_inputs: BTreeSet::new(),
            advertised: BTreeSet::new(),
            expected,
            answered: BTreeSet::new(),
            broadcast: Arc::new(Vec::new()),
            per_node: BTreeMap::new(),
            deadline: first_deadline,
            step_timeout: settings.step_timeout,
            finished_survivors: None,
        })
    }

    /// What a continuation of this instance needs, once it has finished
    /// (and only for a full instance: a continuation has no continuation).
    pub fn finished_instance(&self) -> Option<FinishedInstance> {
        let survivors = self.finished_survivors.as_ref()?;
        Some(FinishedInstance {
            attempt: self.attempt,
            params: Arc::clone(&self.params),
            graph: self.graph.clone(),
            survivors: self
                .members
                .iter()
                .filter(|member| survivors.contains(&member.node))
                .cloned()
                .collect(),
        })
    }

    /// The round's (k, t) and the guarantee they give.
    pub fn graph(&self) -> &NeighbourParameters {
        &self.graph
    }

    /// Nodes whose masked input this instance accepted.
    pub fn masked_inputs(&self) -> &BTreeSet<NodeId> {
        &self.masked_inputs
    }

    /// Cohort members that never answered the first step.
    pub fn silent_from_the_start(&self) -> Vec<NodeId> {
        self.cohort()
            .filter(|node| !self.advertised.contains(*node))
            .cloned()
            .collect()
    }

    /// The step currently open.
    pub fn step(&self) -> SecureStep {
        self.step
    }

    /// The attempt this instance belongs to.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The protocol parameters.
    pub fn params(&self) -> &ProtocolParams {
        &self.params
    }

    /// The current step's deadline.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether `node` owes an answer to the current step.
    pub fn awaits(&self, node: &str) -> bool {
        self.expected.contains(node) && !self.answered.contains(node)
    }

    /// Whether the step can be closed now.
    pub fn step_complete(&self, now: Instant) -> bool {
        self.answered.len() == self.expected.len() || now >= self.deadline
    }

    /// Nodes of the cohort.
    pub fn cohort(&self) -> impl Iterator<Item = &NodeId> {
        self.members.iter().map(|member| &member.node)
    }

    /// The task `node` must answer now, if any.
    pub fn task_for(&self, node: &str) -> Option<SecureTask> {
        if !self.awaits(node) {
            return None;
        }
        let payload = self
            .per_node
            .get(node)
            .cloned()
            .unwrap_or_else(|| Arc::clone(&self.broadcast));
        Some(SecureTask {
            step: self.step,
            attempt: self.attempt,
            params: Arc::clone(&self.params),
            members: if self.step == SecureStep::AdvertiseKeys {
                Arc::clone(&self.members)
            } else {
                Arc::new(Vec::new())
            },
            payload,
        })
    }

    /// A node stops taking part (it declined, or its message was refused).
    pub fn withdraw(&mut self, node: &str) {
        self.expected.remove(node);
    }

    /// Hands a node's message for the current step to the protocol.
    pub fn accept(
        &mut self,
        node: &str,
        attempt: u32,
        step: SecureStep,
        payload: &[u8],
    ) -> Result<(), RejectReason> {
        let refuse = |reason: String| RejectReason::SecureMessage {
            node: node.to_owned(),
            step: step.to_string(),
            reason,
        };
        if attempt != self.attempt || step != self.step {
            return Err(refuse(format!(
                "the open step is {} of attempt {}, not {step} of attempt {attempt}",
                self.step, self.attempt
            )));
        }
        if !self.awaits(node) {
            return Err(refuse("the node is not expected in this step".to_owned()));
        }
        let decode_error = |error: veil_secure_aggregation::DecodeError| refuse(error.to_string());
        let protocol_error = |error: RejectedMessage| refuse(error.to_string());
        let sender_matches = |sender: &veil_secure_aggregation::NodeId| {
            if sender.as_str() == node {
                Ok(())
            } else {
                Err(refuse(format!("message is signed as '{sender}'")))
            }
        };
        match self.stage.as_mut() {
            Some(Stage::Advertise(session)) => {
                let message = KeyAdvertisement::from_bytes(payload).map_err(decode_error)?;
                sender_matches(&message.node_id)?;
                session
                    .handle_key_advertisement(message)
                    .map_err(protocol_error)?;
                self.advertised.insert(node.to_owned());
            }
            Some(Stage::Share(session)) => {
                let message = EncryptedShares::from_bytes(payload).map_err(decode_error)?;
                sender_matches(&message.sender)?;
                session
                    .handle_encrypted_shares(message)
                    .map_err(protocol_error)?;
            }
            Some(Stage::Masked(session)) => {
                let message = MaskedInput::from_bytes(payload).map_err(decode_error)?;
                sender_matches(&message.sender)?;
                session
                    .handle_masked_input(&message)
                    .map_err(protocol_error)?;
                self.masked_inputs.insert(node.to_owned());
            }
            Some(Stage::Consistency(session)) => {
                let message = ConsistencySignature::from_bytes(payload).map_err(decode_error)?;
                sender_matches(&message.signer)?;
                session
                    .handle_consistency_signature(message)
                    .map_err(protocol_error)?;
            }
            Some(Stage::Unmask(session)) => {
                let message = UnmaskResponse::from_bytes(payload).map_err(decode_error)?;
                sender_matches(&message.sender)?;
                session
                    .handle_unmask_response(message)
                    .map_err(protocol_error)?;
            }
            Some(Stage::Continuation(sum)) => {
                let message = MaskedInput::from_bytes(payload).map_err(decode_error)?;
                sender_matches(&message.sender)?;
                sum.handle_masked_input(&message).map_err(protocol_error)?;
                self.masked_inputs.insert(node.to_owned());
            }
            None => return Err(refuse("the protocol has ended".to_owned())),
        }
        self.answered.insert(node.to_owned());
        Ok(())
    }

    /// Closes the current step (everyone answered or the deadline passed)
    /// and opens the next one.
    pub fn advance(&mut self, now: Instant) -> StepOutcome {
        let Some(stage) = self.stage.take() else {
            return StepOutcome::Failed("the protocol has already ended".to_owned());
        };
        let step = self.step;
        let failed = |error: RoundFailed| StepOutcome::Failed(format!("{step}: {error}"));
        let answered = std::mem::take(&mut self.answered);
        self.per_node.clear();
        let next = match stage {
            Stage::Advertise(session) => match session.finish_phase() {
                Ok((next, directory)) => {
                    self.broadcast = Arc::new(directory.to_bytes());
                    (Stage::Share(next), SecureStep::ShareKeys)
                }
                Err(error) => return failed(error),
            },
            Stage::Share(session) => match session.finish_phase() {
                Ok((next, forwarded)) => {
                    for shares in forwarded {
                        self.per_node.insert(
                            shares.recipient.as_str().to_owned(),
                            Arc::new(shares.to_bytes()),
                        );
                    }
                    (Stage::Masked(next), SecureStep::MaskedInput)
                }
                Err(error) => return failed(error),
            },
            Stage::Masked(_) if self.masked_inputs.len() < self.min_contributors => {
                // Checked before anyone unmasks: a sum that would be
                // discarded for holding too few inputs is never decoded.
                return StepOutcome::Failed(format!(
                    "{step}: only {} masked inputs arrived; a released sum needs {}",
                    self.masked_inputs.len(),
                    self.min_contributors
                ));
            }
            Stage::Masked(session) => match session.finish_phase() {
                Ok((next, survivors)) => {
                    self.broadcast = Arc::new(survivors.to_bytes());
                    (Stage::Consistency(next), SecureStep::ConsistencyCheck)
                }
                Err(error) => return failed(error),
            },
            Stage::Consistency(session) => match session.finish_phase() {
                Ok((next, request)) => {
                    self.broadcast = Arc::new(request.to_bytes());
                    (Stage::Unmask(next), SecureStep::Unmask)
                }
                Err(error) => return failed(error),
            },
            Stage::Continuation(sum) => {
                let contributors: Vec<NodeId> = sum
                    .survivors()
                    .map(|node| node.as_str().to_owned())
                    .collect();
                return match sum.finish() {
                    Ok(unmasked) => {
                        match self
                            .encoding
                            .decode(&unmasked, contributors.len(), self.shape)
                        {
                            Ok(sums) => StepOutcome::Finished { sums, contributors },
                            Err(error) => StepOutcome::Failed(format!("decoding the sum: {error}")),
                        }
                    }
                    Err(error) => failed(error),
                };
            }
            Stage::Unmask(session) => {
                return match session.finish_phase() {
                    Ok(finished) => {
                        let contributors: Vec<NodeId> = finished
                            .survivors()
                            .iter()
                            .map(|node| node.as_str().to_owned())
                            .collect();
                        // A continuation needs every survivor to hold its
                        // pairwise seeds, which only those that answered
                        // this last step are known to have.
                        if contributors.iter().all(|node| answered.contains(node)) {
                            self.finished_survivors = Some(contributors.clone());
                        }
                        match self.encoding.decode(
                            finished.unmasked_sum(),
                            contributors.len(),
                            self.shape,
                        ) {
                            Ok(sums) => StepOutcome::Finished { sums, contributors },
                            Err(error) => StepOutcome::Failed(format!("decoding the sum: {error}")),
                        }
                    }
                    Err(error) => failed(error),
                };
            }
        };
        self.stage = Some(next.0);
        self.step = next.1;
        // Only nodes that answered this step can take the next one; the
        // protocol's own bookkeeping agrees (it refuses anyone else).
        self.expected = answered;
        self.deadline = now + self.step_timeout;
        StepOutcome::Continue
    }
}

/// The protocol's round number for a (round, phase): every phase runs its own
/// instance, and the binding keeps their keys and shares apart.
fn protocol_round(round: u32, phase: Phase) -> u32 {
    let phase_index = match phase {
        Phase::FeatureStats => 0,
        Phase::Train => 1,
        Phase::Evaluate => 2,
        Phase::Release => 3,
    };
    round.saturating_mul(4).saturating_add(phase_index)
}

/// The protocol round number a node must use for `(round, phase)`.
pub fn protocol_round_of(round: u32, phase: Phase) -> u32 {
    protocol_round(round, phase)
}

/// The public data a round's neighbour-graph seed is derived from.
#[derive(Debug, Clone, Copy)]
pub struct GraphSeedInput<'a> {
    /// The job.
    pub job: &'a str,
    /// The round.
    pub round: u32,
    /// The phase.
    pub phase: Phase,
    /// The attempt (bounded by the spec's `max_phase_attempts`).
    pub attempt: u32,
    /// The cohort, in any order.
    pub cohort: &'a [&'a str],
}

/// Per-instance graph seed, derived from the job's public seed and public
/// round data (job, round, phase, attempt, cohort); nodes recompute it, so
/// the coordinator cannot pick a graph. It can only try another attempt,
/// and the spec bounds how many.
pub fn round_graph_seed(job_seed: &[u8; 32], input: GraphSeedInput<'_>) -> [u8; 32] {
    let mut cohort: Vec<&str> = input.cohort.to_vec();
    cohort.sort_unstable();
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(b"veil graph seed v2");
    context.update(job_seed);
    context.update(&(input.job.len() as u64).to_le_bytes());
    context.update(input.job.as_bytes());
    context.update(&protocol_round(input.round, input.phase).to_le_bytes());
    context.update(&input.attempt.to_le_bytes());
    context.update(&(cohort.len() as u64).to_le_bytes());
    for member in cohort {
        context.update(&(member.len() as u64).to_le_bytes());
        context.update(member.as_bytes());
    }
    let mut seed = [0u8; 32];
    seed.copy_from_slice(context.finish().as_ref());
    seed
}

#[cfg(test)]
mod tests {
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;

    fn settings() -> SecureSettings {
        SecureSettings {
            clip_range: 1.0,
            modulus_bits: 32,
            max_weight: 10_000.0,
            dropout_rate: 0.1,
            step_timeout: Duration::from_secs(5),
            graph_seed: [7; 32],
            collusion_fraction: DEFAULT_COLLUSION_FRACTION,
            security_bits: DEFAULT_SECURITY_BITS,
        }
    }

    #[test]
    fn statistics_and_weighted_vectors_survive_summation() {
        let shape = ExpectedShape {
            vector_len: 3,
            statistics_len: 3,
            positive_weight: true,
        };
        let encoding =
            ReplyEncoding::new(3, 3, 5, &settings(), &PartnerPrivacy::Off).expect("encoding");
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let replies = [
            (120.0, vec![1.5e13, -3.25, 0.0], vec![0.5f32, -0.25, 0.125]),
            (3000.0, vec![2.0e12, 7.0, 42.0], vec![-0.5f32, 0.75, 0.0]),
        ];
        let mut sum = vec![0u32; encoding.encoded_len()];
        for (weight, statistics, vector) in &replies {
            let encoded = encoding
                .encode(*weight, statistics, vector, &mut rng)
                .expect("encodes");
            for (total, value) in sum.iter_mut().zip(encoded) {
                *total = total.wrapping_add(value);
            }
        }
        let decoded = encoding.decode(&sum, 2, shape).expect("decodes");
        assert!((decoded.weight_sum() - 3120.0).abs() < 1e-3);
        let statistics = decoded.statistics_sum();
        assert!((statistics[0] - 1.7e13).abs() < 1e-3);
        assert!((statistics[1] - 3.75).abs() < 1e-5);
        assert!((statistics[2] - 42.0).abs() < 1e-5);
        let mean = decoded.weighted_mean().expect("positive weight");
        let expected = [
            (120.0 * 0.5 - 3000.0 * 0.5) / 3120.0,
            (120.0 * -0.25 + 3000.0 * 0.75) / 3120.0,
            (120.0 * 0.125) / 3120.0,
        ];
        for (got, want) in mean.iter().zip(expected) {
            assert!((got - want).abs() < 1e-4, "{got} vs {want}");
        }
    }

    #[test]
    fn out_of_range_statistics_are_refused_by_name() {
        let encoding =
            ReplyEncoding::new(0, 1, 5, &settings(), &PartnerPrivacy::Off).expect("encoding");
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let error = encoding
            .encode(1.0, &[1e30], &[], &mut rng)
            .expect_err("too large");
        assert!(matches!(
            error,
            SecureEncodingError::StatisticOutOfRange { index: 1, .. }
        ));
        let error = encoding
            .encode(1.0, &[f64::NAN], &[], &mut rng)
            .expect_err("nan");
        assert!(matches!(error, SecureEncodingError::NonFinite { .. }));
    }
}
