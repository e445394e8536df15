//! The coordinator side of one round, as a typestate with an explicit failure.
//!
//! Each phase collects client messages through `handle_*` (a bad message is
//! rejected and its sender treated as silent) until the coordinator, on its
//! own deadline, calls `finish_phase`: the phase ends with whoever replied.
//! `finish_phase` returns the next phase and what to send, or `RoundFailed`
//! with a named reason. The library reads no clock and does no IO.
//!
//! The result is the exact sum modulo 2^b of the encoded inputs of the
//! survivors (the clients whose masked input was accepted), or a failure:
//! every self mask and every pairwise mask with a dropped client is removed
//! from seeds whose reconstruction is checked against a commitment or a public
//! key, so a wrong sum cannot come out of dropouts or bad shares.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use x25519_dalek::StaticSecret;

use crate::crypto::{self, CryptoError};
use crate::messages::{
    ConsistencySignature, EncryptedShares, ForwardedShares, KeyAdvertisement, KeyDirectory,
    MaskedInput as MaskedInputMessage, RevealedShare, SurvivorList, UnmaskRequest, UnmaskResponse,
};
use crate::params::{IdentityDirectory, NodeId, ProtocolParams, RoundShared};
use crate::prg;
use crate::shamir::{self, SEED_LIMBS, Share};

/// Bytes in one share ciphertext: two shares of `SEED_LIMBS` u64 limbs plus the 16-byte tag.
const SHARE_CIPHERTEXT_LENGTH: usize = 2 * SEED_LIMBS * 8 + 16;

/// The protocol phases, for naming where a round failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Clients advertise signed round keys.
    AdvertiseKeys,
    /// Clients send encrypted shares to neighbours.
    ShareKeys,
    /// Clients upload masked inputs.
    MaskedInput,
    /// Clients sign the survivor list.
    ConsistencyCheck,
    /// Clients reveal shares to remove masks.
    Unmask,
}

/// Which secret a share belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    /// The self-mask seed b of a survivor.
    SelfMaskSeed,
    /// The mask secret key of a dropped client.
    MaskSecretKey,
}

/// Why a round ended without a result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FailureReason {
    /// Too few clients replied in a phase for any client to reach its threshold.
    #[error("{live} clients replied in {phase:?}; at least {required} are needed")]
    TooFewClients {
        /// The phase that ended short.
        phase: Phase,
        /// How many replied.
        live: usize,
        /// The minimum.
        required: usize,
    },
    /// Fewer than t shares of a secret arrived, so its mask cannot be removed.
    #[error("{received} of {required} shares of {peer}'s {secret:?} arrived")]
    NotEnoughShares {
        /// The client whose secret is missing.
        peer: NodeId,
        /// Which secret.
        secret: SecretKind,
        /// Shares received.
        received: usize,
        /// t.
        required: usize,
    },
    /// The shares reconstructed a value that does not match the client's
    /// commitment or advertised public key: at least one share was wrong.
    #[error("shares of {peer}'s {secret:?} reconstruct a wrong value")]
    BadReconstruction {
        /// The client whose secret failed to reconstruct.
        peer: NodeId,
        /// Which secret.
        secret: SecretKind,
    },
    /// A thread reconstructing secrets or removing masks panicked (a bug)
    /// before finishing, so the sum may still hold masks and is not released.
    #[error("an unmasking thread stopped before finishing")]
    UnmaskingAborted,
    /// A continuation's survivors did not all send, so their masks cannot
    /// cancel and the sum is not released.
    #[error(
        "{missing} of the round's survivors sent no continuation input (first: {first_missing})"
    )]
    ContinuationIncomplete {
        /// Survivors that did not send.
        missing: usize,
        /// The first of them, by id.
        first_missing: NodeId,
    },
    /// A pairwise mask could not be recomputed.
    #[error("recomputing masks of {peer} failed: {source}")]
    MaskRecomputation {
        /// The dropped client.
        peer: NodeId,
        /// The cryptographic failure.
        source: CryptoError,
    },
}

/// The explicit failure state of a round.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("secure aggregation round failed: {reason}")]
pub struct RoundFailed {
    /// Why the round failed.
    pub reason: FailureReason,
}

impl From<FailureReason> for RoundFailed {
    fn from(reason: FailureReason) -> Self {
        RoundFailed { reason }
    }
}

/// Why one client message was not accepted. The sender is then treated as
/// having not replied in this phase; the round goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RejectedMessage {
    /// The sender is not eligible in this phase (not in the cohort, or it missed an earlier phase).
    #[error("{node} is not expected in this phase")]
    NotExpected {
        /// The sender.
        node: NodeId,
    },
    /// The sender already replied in this phase.
    #[error("{node} already replied in this phase")]
    Duplicate {
        /// The sender.
        node: NodeId,
    },
    /// The sender has no enrolled identity key, or its signature is invalid.
    #[error("signature of {node} is invalid")]
    InvalidSignature {
        /// The sender.
        node: NodeId,
    },
    /// The ciphertexts are not addressed to exactly the sender's advertised neighbours.
    #[error("shares of {node} are not addressed to exactly its live neighbours")]
    WrongRecipients {
        /// The sender.
        node: NodeId,
    },
    /// A vector or ciphertext has the wrong length.
    #[error("{node} sent {actual} where {expected} was expected")]
    WrongLength {
        /// The sender.
        node: NodeId,
        /// The expected length.
        expected: usize,
        /// The received length.
        actual: usize,
    },
    /// A revealed share was not requested, or cannot come from this sender.
    #[error("{node} revealed a share of {peer} it should not have")]
    UnexpectedShare {
        /// The sender.
        node: NodeId,
        /// The peer whose share it is.
        peer: NodeId,
    },
}

/// What the coordinator is configured with for one round.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The job this round belongs to.
    pub job_id: String,
    /// The round number.
    pub round: u32,
    /// The job's protocol parameters.
    pub params: Arc<ProtocolParams>,
    /// Enrolled identity keys, to reject forged advertisements and signatures early.
    pub identities: Arc<IdentityDirectory>,
}

/// The coordinator's round in phase `State`.
pub struct ServerSession<State> {
    /// Parameters, graph, binding and identities shared by all phases.
    shared: Arc<RoundShared>,
    /// Data owned by the current phase.
    phase: State,
}

/// Collecting key advertisements.
pub struct AdvertiseKeys {
    /// Accepted advertisements by cohort index (U1).
    advertisements: BTreeMap<usize, KeyAdvertisement>,
}

/// Collecting encrypted shares.
pub struct ShareKeys {
    /// U1's advertisements.
    advertisements: BTreeMap<usize, KeyAdvertisement>,
    /// Accepted share messages by sender index (U2).
    shares: BTreeMap<usize, EncryptedShares>,
}

/// Collecting masked inputs.
pub struct MaskedInput {
    /// U1's advertisements, for mask public keys.
    advertisements: BTreeMap<usize, KeyAdvertisement>,
    /// U2: self-mask commitments by sender index.
    commitments: BTreeMap<usize, [u8; 32]>,
    /// Running sum of accepted masked inputs, so memory stays O(d) for any n.
    masked_sum: Vec<u32>,
    /// U3: senders whose masked input was added.
    survivors: BTreeSet<usize>,
}

/// Collecting consistency signatures.
pub struct ConsistencyCheck {
    /// U1's advertisements.
    advertisements: BTreeMap<usize, KeyAdvertisement>,
    /// U2's commitments.
    commitments: BTreeMap<usize, [u8; 32]>,
    /// Sum of U3's masked inputs.
    masked_sum: Vec<u32>,
    /// U3 by index.
    survivors: BTreeSet<usize>,
    /// The signed transcript of the survivor list sent to everyone.
    transcript: Vec<u8>,
    /// U4: accepted signatures by signer index.
    signatures: BTreeMap<usize, ConsistencySignature>,
}

/// Collecting revealed shares.
pub struct Unmask {
    /// U1's advertisements.
    advertisements: BTreeMap<usize, KeyAdvertisement>,
    /// U2's commitments.
    commitments: BTreeMap<usize, [u8; 32]>,
    /// Sum of U3's masked inputs.
    masked_sum: Vec<u32>,
    /// U3 by index.
    survivors: BTreeSet<usize>,
    /// Dropped clients (U2 minus U3) whose masks remain in some survivor's input.
    dropped: BTreeSet<usize>,
    /// U4: who may respond.
    signers: BTreeSet<usize>,
    /// Who has responded.
    responders: BTreeSet<usize>,
    /// Self-mask shares received, by peer index.
    self_mask_shares: BTreeMap<usize, Vec<Share>>,
    /// Mask-key shares received, by peer index.
    mask_key_shares: BTreeMap<usize, Vec<Share>>,
}

/// The round's result.
pub struct Finished {
    /// Sum of the survivors' encoded inputs modulo 2^b.
    unmasked_sum: Vec<u32>,
    /// The survivors, sorted.
    survivors: Vec<NodeId>,
}

impl<State> ServerSession<State> {
    fn next<Next>(self, phase: Next) -> ServerSession<Next> {
        ServerSession {
            shared: self.shared,
            phase,
        }
    }

    fn threshold(&self) -> usize {
        self.shared.params.reconstruction_threshold()
    }

    /// Each client needs t live neighbours, so fewer than t + 1 live clients cannot succeed.
    fn require_clients(&self, phase: Phase, live: usize) -> Result<(), RoundFailed> {
        let required = self.threshold() + 1;
        if live < required {
            return Err(FailureReason::TooFewClients {
                phase,
                live,
                required,
            }
            .into());
        }
        Ok(())
    }

    fn eligible_index(
        &self,
        node: &NodeId,
        eligible: impl Fn(usize) -> bool,
    ) -> Result<usize, RejectedMessage> {
        self.shared
            .params
            .cohort_index(node)
            .filter(|&index| eligible(index))
            .ok_or_else(|| RejectedMessage::NotExpected { node: node.clone() })
    }

    fn nodes(&self, indices: impl IntoIterator<Item = usize>) -> Vec<NodeId> {
        node_list(&self.shared, indices)
    }
}

/// The node ids at the given cohort positions.
fn node_list(shared: &RoundShared, indices: impl IntoIterator<Item = usize>) -> Vec<NodeId> {
    indices
        .into_iter()
        .filter_map(|index| shared.node_at(index).cloned())
        .collect()
}

impl ServerSession<AdvertiseKeys> {
    /// Starts a round.
    pub fn new(config: ServerConfig) -> Self {
        let shared = RoundShared::new(
            config.job_id,
            config.round,
            config.params,
            config.identities,
        );
        ServerSession {
            shared: Arc::new(shared),
            phase: AdvertiseKeys {
                advertisements: BTreeMap::new(),
            },
        }
    }

    /// Accepts a signed key advertisement from a cohort member.
    pub fn handle_key_advertisement(
        &mut self,
        advertisement: KeyAdvertisement,
    ) -> Result<(), RejectedMessage> {
        let node = &advertisement.node_id;
        let index = self.eligible_index(node, |_| true)?;
        if self.phase.advertisements.contains_key(&index) {
            return Err(RejectedMessage::Duplicate { node: node.clone() });
        }
        let transcript = crypto::advertisement_transcript(
            &self.shared.binding,
            node,
            &advertisement.encryption_public_key,
            &advertisement.mask_public_key,
        );
        let valid = self
            .shared
            .identities
            .public_key(node)
            .is_some_and(|identity| {
                crypto::verify_identity_signature(identity, &transcript, &advertisement.signature)
            });
        if !valid {
            return Err(RejectedMessage::InvalidSignature { node: node.clone() });
        }
        self.phase.advertisements.insert(index, advertisement);
        Ok(())
    }

    /// Ends the phase: the directory of received advertisements goes to every client.
    pub fn finish_phase(self) -> Result<(ServerSession<ShareKeys>, KeyDirectory), RoundFailed> {
        self.require_clients(Phase::AdvertiseKeys, self.phase.advertisements.len())?;
        let directory = KeyDirectory {
            advertisements: self.phase.advertisements.values().cloned().collect(),
        };
        let advertisements = self.phase.advertisements;
        Ok((
            ServerSession {
                shared: self.shared,
                phase: ShareKeys {
                    advertisements,
                    shares: BTreeMap::new(),
                },
            },
            directory,
        ))
    }
}

impl ServerSession<ShareKeys> {
    /// Accepts a client's encrypted shares if they go to exactly its advertised neighbours.
    pub fn handle_encrypted_shares(
        &mut self,
        shares: EncryptedShares,
    ) -> Result<(), RejectedMessage> {
        let node = shares.sender.clone();
        let advertised = &self.phase.advertisements;
        let index = self.eligible_index(&node, |index| advertised.contains_key(&index))?;
        if self.phase.shares.contains_key(&index) {
            return Err(RejectedMessage::Duplicate { node });
        }
        let expected: BTreeSet<usize> = self
            .shared
            .graph
            .neighbours_of(index)
            .iter()
            .copied()
            .filter(|neighbour| advertised.contains_key(neighbour))
            .collect();
        let mut addressed = BTreeSet::new();
        for entry in &shares.ciphertexts {
            let recipient = self.shared.params.cohort_index(&entry.peer);
            if !recipient.is_some_and(|recipient| {
                expected.contains(&recipient) && addressed.insert(recipient)
            }) {
                return Err(RejectedMessage::WrongRecipients { node });
            }
            if entry.ciphertext.len() != SHARE_CIPHERTEXT_LENGTH {
                return Err(RejectedMessage::WrongLength {
                    node,
                    expected: SHARE_CIPHERTEXT_LENGTH,
                    actual: entry.ciphertext.len(),
                });
            }
        }
        if addressed != expected {
            return Err(RejectedMessage::WrongRecipients { node });
        }
        self.phase.shares.insert(index, shares);
        Ok(())
    }

    /// Ends the phase: each share sender receives the ciphertexts addressed to it
    /// by other share senders. Clients that did not send shares get nothing and
    /// can no longer take part.
    pub fn finish_phase(
        self,
    ) -> Result<(ServerSession<MaskedInput>, Vec<ForwardedShares>), RoundFailed> {
        self.require_clients(Phase::ShareKeys, self.phase.shares.len())?;
        let mut forwarded: BTreeMap<usize, ForwardedShares> = BTreeMap::new();
        for &index in self.phase.shares.keys() {
            if let Some(recipient) = self.shared.node_at(index) {
                forwarded.insert(
                    index,
                    ForwardedShares {
                        recipient: recipient.clone(),
                        ciphertexts: Vec::new(),
                    },
                );
            }
        }
        let mut commitments = BTreeMap::new();
        for (sender_index, message) in self.phase.shares {
            commitments.insert(sender_index, message.self_mask_commitment);
            for entry in message.ciphertexts {
                let Some(recipient_index) = self.shared.params.cohort_index(&entry.peer) else {
                    continue;
                };
                if let Some(bundle) = forwarded.get_mut(&recipient_index) {
                    bundle
                        .ciphertexts
                        .push(crate::messages::AddressedCiphertext {
                            peer: message.sender.clone(),
                            ciphertext: entry.ciphertext,
                        });
                }
            }
        }
        let phase = MaskedInput {
            advertisements: self.phase.advertisements,
            commitments,
            masked_sum: vec![0u32; self.shared.params.vector_length()],
            survivors: BTreeSet::new(),
        };
        Ok((
            ServerSession {
                shared: self.shared,
                phase,
            },
            forwarded.into_values().collect(),
        ))
    }
}

impl ServerSession<MaskedInput> {
    /// Adds a share sender's masked input into the running sum.
    pub fn handle_masked_input(
        &mut self,
        input: &MaskedInputMessage,
    ) -> Result<(), RejectedMessage> {
        let node = &input.sender;
        let commitments = &self.phase.commitments;
        let index = self.eligible_index(node, |index| commitments.contains_key(&index))?;
        if self.phase.survivors.contains(&index) {
            return Err(RejectedMessage::Duplicate { node: node.clone() });
        }
        let expected = self.phase.masked_sum.len();
        if input.masked_vector.len() != expected {
            return Err(RejectedMessage::WrongLength {
                node: node.clone(),
                expected,
                actual: input.masked_vector.len(),
            });
        }
        for (total, &value) in self.phase.masked_sum.iter_mut().zip(&input.masked_vector) {
            *total = total.wrapping_add(value);
        }
        self.phase.survivors.insert(index);
        Ok(())
    }

    /// Ends the phase: the survivor list goes to every survivor to sign.
    pub fn finish_phase(
        self,
    ) -> Result<(ServerSession<ConsistencyCheck>, SurvivorList), RoundFailed> {
        self.require_clients(Phase::MaskedInput, self.phase.survivors.len())?;
        let survivors = self.nodes(self.phase.survivors.iter().copied());
        let transcript = crypto::consistency_transcript(&self.shared.binding, &survivors);
        let MaskedInput {
            advertisements,
            commitments,
            masked_sum,
            survivors: survivor_indices,
        } = self.phase;
        let phase = ConsistencyCheck {
            advertisements,
            commitments,
            masked_sum,
            survivors: survivor_indices,
            transcript,
            signatures: BTreeMap::new(),
        };
        Ok((
            ServerSession {
                shared: self.shared,
                phase,
            },
            SurvivorList { survivors },
        ))
    }
}

impl ServerSession<ConsistencyCheck> {
    /// Accepts a survivor's signature over the survivor list.
    pub fn handle_consistency_signature(
        &mut self,
        signature: ConsistencySignature,
    ) -> Result<(), RejectedMessage> {
        let node = signature.signer.clone();
        let survivors = &self.phase.survivors;
        let index = self.eligible_index(&node, |index| survivors.contains(&index))?;
        if self.phase.signatures.contains_key(&index) {
            return Err(RejectedMessage::Duplicate { node });
        }
        let valid = self
            .shared
            .identities
            .public_key(&node)
            .is_some_and(|identity| {
                crypto::verify_identity_signature(
                    identity,
                    &self.phase.transcript,
                    &signature.signature,
                )
            });
        if !valid {
            return Err(RejectedMessage::InvalidSignature { node });
        }
        self.phase.signatures.insert(index, signature);
        Ok(())
    }

    /// Ends the phase: asks for self-mask shares of every survivor and mask-key
    /// shares of every dropped client whose pairwise masks remain in the sum.
    pub fn finish_phase(self) -> Result<(ServerSession<Unmask>, UnmaskRequest), RoundFailed> {
        self.require_clients(Phase::ConsistencyCheck, self.phase.signatures.len())?;
        let ServerSession { shared, phase } = self;
        let ConsistencyCheck {
            advertisements,
            commitments,
            masked_sum,
            survivors,
            signatures,
            ..
        } = phase;
        let dropped: BTreeSet<usize> = commitments
            .keys()
            .copied()
            .filter(|index| !survivors.contains(index))
            .filter(|&index| {
                shared
                    .graph
                    .neighbours_of(index)
                    .iter()
                    .any(|neighbour| survivors.contains(neighbour))
            })
            .collect();
        let request = UnmaskRequest {
            signatures: signatures.values().cloned().collect(),
            self_mask_share_peers: node_list(&shared, survivors.iter().copied()),
            mask_key_share_peers: node_list(&shared, dropped.iter().copied()),
        };
        let phase = Unmask {
            advertisements,
            commitments,
            masked_sum,
            survivors,
            dropped,
            signers: signatures.into_keys().collect(),
            responders: BTreeSet::new(),
            self_mask_shares: BTreeMap::new(),
            mask_key_shares: BTreeMap::new(),
        };
        Ok((ServerSession { shared, phase }, request))
    }
}

impl ServerSession<Unmask> {
    /// Accepts a signer's revealed shares if each is one it could hold and was asked for.
    pub fn handle_unmask_response(
        &mut self,
        response: UnmaskResponse,
    ) -> Result<(), RejectedMessage> {
        let node = response.sender.clone();
        let signers = &self.phase.signers;
        let index = self.eligible_index(&node, |index| signers.contains(&index))?;
        if self.phase.responders.contains(&index) {
            return Err(RejectedMessage::Duplicate { node });
        }
        let own_x = self.shared.x_coordinate(index);
        let check = |revealed: &RevealedShare,
                     requested: &BTreeSet<usize>|
         -> Result<usize, RejectedMessage> {
            let unexpected = || RejectedMessage::UnexpectedShare {
                node: node.clone(),
                peer: revealed.peer.clone(),
            };
            let peer = self
                .shared
                .params
                .cohort_index(&revealed.peer)
                .ok_or_else(unexpected)?;
            let plausible = requested.contains(&peer)
                && self.shared.graph.are_neighbours(index, peer)
                && revealed.share.x == own_x
                && revealed.share.y.len() == SEED_LIMBS;
            if plausible {
                Ok(peer)
            } else {
                Err(unexpected())
            }
        };
        let mut accepted_self_mask = Vec::with_capacity(response.self_mask_shares.len());
        for revealed in &response.self_mask_shares {
            accepted_self_mask.push(check(revealed, &self.phase.survivors)?);
        }
        let mut accepted_mask_key = Vec::with_capacity(response.mask_key_shares.len());
        for revealed in &response.mask_key_shares {
            accepted_mask_key.push(check(revealed, &self.phase.dropped)?);
        }
        let unique_self: BTreeSet<usize> = accepted_self_mask.iter().copied().collect();
        let unique_key: BTreeSet<usize> = accepted_mask_key.iter().copied().collect();
        if unique_self.len() != accepted_self_mask.len()
            || unique_key.len() != accepted_mask_key.len()
        {
            return Err(RejectedMessage::Duplicate { node });
        }
        for (peer, revealed) in accepted_self_mask
            .into_iter()
            .zip(response.self_mask_shares)
        {
            self.phase
                .self_mask_shares
                .entry(peer)
                .or_default()
                .push(revealed.share);
        }
        for (peer, revealed) in accepted_mask_key.into_iter().zip(response.mask_key_shares) {
            self.phase
                .mask_key_shares
                .entry(peer)
                .or_default()
                .push(revealed.share);
        }
        self.phase.responders.insert(index);
        Ok(())
    }

    fn reconstruct(&self, peer: usize, secret: SecretKind) -> Result<[u8; 32], RoundFailed> {
        let store = match secret {
            SecretKind::SelfMaskSeed => &self.phase.self_mask_shares,
            SecretKind::MaskSecretKey => &self.phase.mask_key_shares,
        };
        let shares = store.get(&peer).map_or(&[][..], Vec::as_slice);
        let peer_node = || {
            self.shared
                .node_at(peer)
                .cloned()
                .unwrap_or_else(|| NodeId::from_decoded("?"))
        };
        let required = self.threshold();
        if shares.len() < required {
            return Err(FailureReason::NotEnoughShares {
                peer: peer_node(),
                secret,
                received: shares.len(),
                required,
            }
            .into());
        }
        shamir::reconstruct_seed(shares, required).map_err(|_| {
            FailureReason::BadReconstruction {
                peer: peer_node(),
                secret,
            }
            .into()
        })
    }

    /// Ends the round: removes every self mask of a survivor and every pairwise
    /// mask between a survivor and a dropped client, and returns the exact sum.
    ///
    /// Every secret is reconstructed and checked first (Shamir interpolation,
    /// O(t²), and one hash or one X25519 base multiplication each, spread over
    /// the cores), so a bad share fails the round before any mask is
    /// expanded. Then the masks are removed in parallel ([`remove_masks`]).
    /// If several secrets are bad, the first reconstruction failure in the
    /// order survivors-then-dropped is reported, whatever the thread count,
    /// and before any pairwise-seed failure.
    pub fn finish_phase(self) -> Result<ServerSession<Finished>, RoundFailed> {
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let node_at = |index: usize| {
            self.shared
                .node_at(index)
                .cloned()
                .unwrap_or_else(|| NodeId::from_decoded("?"))
        };
        // Interpolation costs about t² field multiplications per secret: below
        // ~2^16 in all, threads would cost more than they save.
        let threshold = self.threshold();
        let secrets = self.phase.survivors.len() + self.phase.dropped.len();
        let reconstruction_threads =
            if secrets.saturating_mul(threshold).saturating_mul(threshold) < 1 << 16 {
                1
            } else {
                threads
            };
        let survivors: Vec<usize> = self.phase.survivors.iter().copied().collect();
        let self_mask_seeds = parallel_map(&survivors, reconstruction_threads, |&survivor| {
            let seed = self.reconstruct(survivor, SecretKind::SelfMaskSeed)?;
            let node = node_at(survivor);
            let committed = self.phase.commitments.get(&survivor);
            if committed
                != Some(&crypto::self_mask_commitment(
                    &self.shared.binding,
                    &node,
                    &seed,
                ))
            {
                return Err(RoundFailed::from(FailureReason::BadReconstruction {
                    peer: node,
                    secret: SecretKind::SelfMaskSeed,
                }));
            }
            Ok(seed)
        })?;
        let mut removals = Vec::new();
        for seed in self_mask_seeds {
            removals.push(MaskRemoval::SelfMask { seed: seed? });
        }
        let dropped: Vec<usize> = self.phase.dropped.iter().copied().collect();
        let dropped_secrets = parallel_map(&dropped, reconstruction_threads, |&dropped| {
            let secret_bytes = self.reconstruct(dropped, SecretKind::MaskSecretKey)?;
            let dropped_node = node_at(dropped);
            let mask_secret = StaticSecret::from(secret_bytes);
            let advertised = self
                .phase
                .advertisements
                .get(&dropped)
                .map(|advertisement| advertisement.mask_public_key);
            if advertised != Some(crypto::public_key_of(&mask_secret)) {
                return Err(RoundFailed::from(FailureReason::BadReconstruction {
                    peer: dropped_node,
                    secret: SecretKind::MaskSecretKey,
                }));
            }
            Ok((dropped, dropped_node, mask_secret))
        })?
        .into_iter()
        .collect::<Result<Vec<_>, RoundFailed>>()?;
        // Each survivor's mask key is used once per dropped neighbour: its
        // Edwards form is computed once, here, in parallel.
        let keyed_survivors: Vec<usize> = self
            .phase
            .survivors
            .iter()
            .copied()
            .filter(|&survivor| {
                self.shared
                    .graph
                    .neighbours_of(survivor)
                    .iter()
                    .any(|neighbour| self.phase.dropped.contains(neighbour))
            })
            .collect();
        let prepared_keys: BTreeMap<usize, crypto::PreparedPublicKey> = parallel_map(
            &keyed_survivors,
            if keyed_survivors.len() < 64 {
                1
            } else {
                threads
            },
            |&survivor| {
                self.phase
                    .advertisements
                    .get(&survivor)
                    .map(|advertisement| {
                        (
                            survivor,
                            crypto::PreparedPublicKey::new(&advertisement.mask_public_key),
                        )
                    })
            },
        )?
        .into_iter()
        .flatten()
        .collect();
        for (dropped, dropped_node, mask_secret) in &dropped_secrets {
            for neighbour in self.shared.graph.neighbours_of(*dropped) {
                if !self.phase.survivors.contains(&neighbour) {
                    continue;
                }
                let (Some(survivor_node), Some(survivor_public_key)) = (
                    self.shared.node_at(neighbour),
                    prepared_keys.get(&neighbour),
                ) else {
                    continue;
                };
                removals.push(MaskRemoval::Pairwise {
                    dropped_secret: mask_secret,
                    dropped_node,
                    survivor_node,
                    survivor_public_key,
                });
            }
        }
        let mut sum = self.phase.masked_sum.clone();
        remove_masks(&mut sum, &removals, &self.shared.binding, threads)?;
        let modulus_mask = self.shared.params.modulus_mask();
        for value in &mut sum {
            *value &= modulus_mask;
        }
        let survivors = self.nodes(self.phase.survivors.iter().copied());
        Ok(self.next(Finished {
            unmasked_sum: sum,
            survivors,
        }))
    }
}

/// One mask the coordinator must take out of the sum of masked inputs.
enum MaskRemoval<'a> {
    /// A survivor's self mask, from its reconstructed and verified seed.
    SelfMask {
        /// The seed b of the survivor.
        seed: [u8; 32],
    },
    /// The pairwise mask between a dropped client and a surviving neighbour,
    /// whose seed is recomputed from the dropped client's reconstructed key.
    Pairwise {
        /// The dropped client's reconstructed, verified mask secret key.
        dropped_secret: &'a StaticSecret,
        /// The dropped client.
        dropped_node: &'a NodeId,
        /// The surviving neighbour.
        survivor_node: &'a NodeId,
        /// The survivor's advertised mask public key, prepared once.
        survivor_public_key: &'a crypto::PreparedPublicKey,
    },
}

impl MaskRemoval<'_> {
    /// Takes this mask out of `accumulator`: self masks were added by their
    /// owner; a pairwise mask was added by the survivor if its id is the lower
    /// of the pair and subtracted otherwise, so the opposite is done here.
    fn apply(
        &self,
        binding: &crate::params::RoundBinding,
        accumulator: &mut [u32],
    ) -> Result<(), FailureReason> {
        match self {
            MaskRemoval::SelfMask { seed } => prg::subtract_mask(seed, accumulator),
            MaskRemoval::Pairwise {
                dropped_secret,
                dropped_node,
                survivor_node,
                survivor_public_key,
            } => {
                let seed = crypto::pairwise_mask_seed_prepared(
                    dropped_secret,
                    survivor_public_key,
                    binding,
                    dropped_node,
                    survivor_node,
                )
                .map_err(|source| FailureReason::MaskRecomputation {
                    peer: (*dropped_node).clone(),
                    source,
                })?;
                if survivor_node < dropped_node {
                    prg::subtract_mask(&seed, accumulator);
                } else {
                    prg::add_mask(&seed, accumulator);
                }
            }
        }
        Ok(())
    }
}

/// Applies `function` to every item on up to `threads` scoped threads, each
/// taking one contiguous run of the items, and returns the results in the
/// items' order, so callers see the same results as from a serial map.
fn parallel_map<Item: Sync, Output: Send>(
    items: &[Item],
    threads: usize,
    function: impl Fn(&Item) -> Output + Sync,
) -> Result<Vec<Output>, RoundFailed> {
    let threads = threads.clamp(1, items.len().max(1));
    if threads == 1 {
        return Ok(items.iter().map(&function).collect());
    }
    let run_length = items.len().div_ceil(threads);
    let mut runs = items.chunks(run_length);
    let first_run = runs.next().unwrap_or_default();
    std::thread::scope(|scope| {
        let helpers: Vec<_> = runs
            .map(|run| scope.spawn(|| run.iter().map(&function).collect::<Vec<Output>>()))
            .collect();
        let mut outputs: Vec<Output> = first_run.iter().map(&function).collect();
        for helper in helpers {
            // A helper that panicked (a bug) leaves results missing; the
            // round must fail rather than go on without them.
            let Ok(run_outputs) = helper.join() else {
                return Err(FailureReason::UnmaskingAborted.into());
            };
            outputs.extend(run_outputs);
        }
        Ok(outputs)
    })
}

/// Below this much estimated work (in words of keystream) the masks are
/// removed on the calling thread: spawning a thread costs tens of
/// microseconds, as much as expanding ~10^5 words.
const PARALLEL_MIN_WORDS: usize = 1 << 17;

/// What one X25519 agreement plus HKDF costs, in words of mask expansion
/// (~70 µs against ~6 GB/s of keystream), for deciding whether to use threads.
const PAIRWISE_SEED_COST_WORDS: usize = 1 << 17;

/// Removes every mask in `removals` from `sum`, on up to `threads` threads.
///
/// Each thread pulls the next removal from a shared counter and applies it to
/// its own accumulator (the first thread to `sum` itself, the others to zeroed
/// vectors); the accumulators are then added into `sum`. Addition modulo 2^32
/// is associative and commutative, so the result is bit-identical to removing
/// the masks one after another on one thread, whatever the interleaving.
///
/// Why per-thread accumulators rather than giving each thread a range of
/// columns: a pairwise mask first needs its seed, an X25519 agreement that
/// costs about as much as expanding 10^5 words, and splitting columns would
/// repeat it (and the HKDF and AES key schedule) on every thread, while whole
/// masks per thread do each once. With 2 cores the price is one extra vector
/// of d words and one pass to add it, and at d = 10^5 (400 KB) each thread's
/// accumulator stays in its own core's L2 cache. Pulling from a counter
/// rather than splitting the list in halves keeps both cores busy when one of
/// them is shared with other work, and when cheap self masks and costlier
/// pairwise masks are unevenly spread.
///
/// If a pairwise seed cannot be recomputed, the failure of the earliest such
/// removal in `removals` is returned, as on one thread.
fn remove_masks(
    sum: &mut [u32],
    removals: &[MaskRemoval<'_>],
    binding: &crate::params::RoundBinding,
    threads: usize,
) -> Result<(), RoundFailed> {
    let pairwise = removals
        .iter()
        .filter(|removal| matches!(removal, MaskRemoval::Pairwise { .. }))
        .count();
    let estimated_words = removals
        .len()
        .saturating_mul(sum.len())
        .saturating_add(pairwise.saturating_mul(PAIRWISE_SEED_COST_WORDS));
    let threads = if estimated_words < PARALLEL_MIN_WORDS {
        1
    } else {
        threads.clamp(1, removals.len().max(1))
    };
    if threads == 1 {
        for removal in removals {
            removal.apply(binding, sum)?;
        }
        return Ok(());
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    // Each worker returns the index and reason of its first failure, if any.
    // Removals are pulled in increasing order, so the smallest failing index
    // overall is always reached and reported by whichever worker pulled it.
    let work = |accumulator: &mut [u32]| -> Option<(usize, FailureReason)> {
        loop {
            let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let removal = removals.get(index)?;
            if let Err(reason) = removal.apply(binding, accumulator) {
                return Some((index, reason));
            }
        }
    };
    let length = sum.len();
    let (own_failure, others) = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut accumulator = vec![0u32; length];
                    let failure = work(&mut accumulator);
                    (accumulator, failure)
                })
            })
            .collect();
        let own_failure = work(sum);
        let others: Vec<_> = helpers.into_iter().map(|helper| helper.join()).collect();
        (own_failure, others)
    });
    let mut first_failure = own_failure;
    for joined in others {
        // A helper that panicked left its masks in the sum, so the round
        // must not be released.
        let Ok((accumulator, failure)) = joined else {
            return Err(FailureReason::UnmaskingAborted.into());
        };
        for (total, &part) in sum.iter_mut().zip(&accumulator) {
            *total = total.wrapping_add(part);
        }
        first_failure = match (first_failure, failure) {
            (Some(mine), Some(theirs)) if theirs.0 < mine.0 => Some(theirs),
            (None, theirs) => theirs,
            (mine, _) => mine,
        };
    }
    match first_failure {
        Some((_, reason)) => Err(reason.into()),
        None => Ok(()),
    }
}

impl ServerSession<Finished> {
    /// The sum of the survivors' encoded inputs modulo 2^b.
    pub fn unmasked_sum(&self) -> &[u32] {
        &self.phase.unmasked_sum
    }

    /// The clients whose inputs are in the sum, sorted.
    pub fn survivors(&self) -> &[NodeId] {
        &self.phase.survivors
    }

    /// Takes the sum out of the session.
    pub fn into_unmasked_sum(self) -> Vec<u32> {
        self.phase.unmasked_sum
    }

    /// The server side of a continuation of this round (see
    /// [`crate::client::Continuation`]): vectors of `vector_length` words
    /// modulo 2^`modulus_bits` from exactly this round's survivors.
    pub fn continuation(&self, vector_length: usize, modulus_bits: u32) -> ContinuationSum {
        ContinuationSum::new(self.phase.survivors.clone(), vector_length, modulus_bits)
    }
}

/// The coordinator's side of a continuation: one masked vector from each of
/// the round's survivors, summed as they arrive. The pairwise masks cancel
/// only in the sum over all of them, and no share exists to remove a
/// missing one's masks, so the sum is released only when all have sent.
#[derive(Debug)]
pub struct ContinuationSum {
    /// Who must send: the finished round's survivors.
    survivors: BTreeSet<NodeId>,
    /// Who has sent.
    received: BTreeSet<NodeId>,
    /// Running sum of the received vectors, modulo 2^32.
    sum: Vec<u32>,
    /// Reduces the sum modulo 2^b at the end.
    modulus_mask: u32,
}

impl ContinuationSum {
    /// The continuation of a finished round whose survivors are `survivors`
    /// (as [`ServerSession::<Finished>::survivors`] gave them): vectors of
    /// `vector_length` words modulo 2^`modulus_bits` (1..=32).
    pub fn new(
        survivors: impl IntoIterator<Item = NodeId>,
        vector_length: usize,
        modulus_bits: u32,
    ) -> Self {
        ContinuationSum {
            survivors: survivors.into_iter().collect(),
            received: BTreeSet::new(),
            sum: vec![0; vector_length],
            modulus_mask: crate::params::modulus_mask(modulus_bits.clamp(1, 32)),
        }
    }

    /// Adds a survivor's masked vector to the sum.
    pub fn handle_masked_input(
        &mut self,
        input: &MaskedInputMessage,
    ) -> Result<(), RejectedMessage> {
        let node = &input.sender;
        if !self.survivors.contains(node) {
            return Err(RejectedMessage::NotExpected { node: node.clone() });
        }
        if self.received.contains(node) {
            return Err(RejectedMessage::Duplicate { node: node.clone() });
        }
        if input.masked_vector.len() != self.sum.len() {
            return Err(RejectedMessage::WrongLength {
                node: node.clone(),
                expected: self.sum.len(),
                actual: input.masked_vector.len(),
            });
        }
        for (total, &value) in self.sum.iter_mut().zip(&input.masked_vector) {
            *total = total.wrapping_add(value);
        }
        self.received.insert(node.clone());
        Ok(())
    }

    /// The survivors that must send, sorted.
    pub fn survivors(&self) -> impl Iterator<Item = &NodeId> {
        self.survivors.iter()
    }

    /// Ends the continuation: the exact sum modulo 2^b if every survivor
    /// sent, otherwise a failure naming how many did not (their masks stay
    /// in the sum, which is discarded).
    pub fn finish(self) -> Result<Vec<u32>, RoundFailed> {
        if let Some(first) = self.survivors.difference(&self.received).next() {
            return Err(FailureReason::ContinuationIncomplete {
                missing: self.survivors.len() - self.received.len(),
                first_missing: first.clone(),
            }
            .into());
        }
        let modulus_mask = self.modulus_mask;
        Ok(self
            .sum
            .into_iter()
            .map(|value| value & modulus_mask)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::RoundBinding;

    fn node(name: &str) -> NodeId {
        NodeId::new(name).unwrap()
    }

    fn binding() -> RoundBinding {
        let params = ProtocolParams::new(vec![node("a"), node("b")], [0; 32], 1, 1, 32, 1).unwrap();
        RoundBinding::new("job", 1, &params)
    }

    /// Removes `removals` from a fixed starting vector on `threads` threads.
    fn removed(
        removals: &[MaskRemoval<'_>],
        threads: usize,
        length: usize,
    ) -> Result<Vec<u32>, RoundFailed> {
        let mut sum: Vec<u32> = (0..length as u32)
            .map(|i| i.wrapping_mul(0x9e37_79b9))
            .collect();
        remove_masks(&mut sum, removals, &binding(), threads)?;
        Ok(sum)
    }

    #[test]
    fn parallel_mask_removal_is_bit_identical_to_serial() {
        let secrets: Vec<StaticSecret> = (1..=3u8).map(|i| StaticSecret::from([i; 32])).collect();
        let publics: Vec<crypto::PreparedPublicKey> = (4..=8u8)
            .map(|i| {
                crypto::PreparedPublicKey::new(&crypto::public_key_of(&StaticSecret::from([i; 32])))
            })
            .collect();
        let dropped = [node("d1"), node("d2"), node("d3")];
        let survivors = [node("a"), node("b"), node("e1"), node("e2"), node("z")];
        let mut removals: Vec<MaskRemoval<'_>> = (0..6u8)
            .map(|i| MaskRemoval::SelfMask { seed: [i; 32] })
            .collect();
        for (secret, dropped_node) in secrets.iter().zip(&dropped) {
            for (public, survivor_node) in publics.iter().zip(&survivors) {
                removals.push(MaskRemoval::Pairwise {
                    dropped_secret: secret,
                    dropped_node,
                    survivor_node,
                    survivor_public_key: public,
                });
            }
        }
        // 1999 words: not a multiple of the 4-word AES block or the buffer.
        for length in [1, 1999, 40_000] {
            let serial = removed(&removals, 1, length).unwrap();
            for threads in [2, 3, 8, 64] {
                assert_eq!(
                    removed(&removals, threads, length).unwrap(),
                    serial,
                    "{threads} threads, length {length}"
                );
            }
        }
    }

    #[test]
    fn parallel_map_keeps_the_order_of_a_serial_map() {
        // Reconstruction failures are reported by scanning the results in
        // order, so the order must not depend on the thread count.
        let items: Vec<u32> = (0..101).collect();
        let serial: Vec<Result<u32, u32>> = items
            .iter()
            .map(|&item| {
                if item % 17 == 16 {
                    Err(item)
                } else {
                    Ok(item * 3)
                }
            })
            .collect();
        for threads in [1, 2, 3, 7, 101, 500] {
            let parallel = parallel_map(&items, threads, |&item| {
                if item % 17 == 16 {
                    Err(item)
                } else {
                    Ok(item * 3)
                }
            })
            .unwrap();
            assert_eq!(parallel, serial, "{threads} threads");
        }
        assert_eq!(
            parallel_map(&[] as &[u32], 4, |&item| item).unwrap(),
            Vec::<u32>::new()
        );
    }

    #[test]
    fn parallel_mask_removal_reports_the_first_failure_as_serial_does() {
        // The all-zero public key is a low-order point: its agreement is refused.
        let low_order = crypto::PreparedPublicKey::new(&[0u8; 32]);
        let good =
            crypto::PreparedPublicKey::new(&crypto::public_key_of(&StaticSecret::from([9u8; 32])));
        let secret = StaticSecret::from([1u8; 32]);
        let names: Vec<NodeId> = (0..12).map(|i| node(&format!("d{i:02}"))).collect();
        let survivor = node("s");
        let removals: Vec<MaskRemoval<'_>> = names
            .iter()
            .enumerate()
            .map(|(index, dropped_node)| MaskRemoval::Pairwise {
                dropped_secret: &secret,
                dropped_node,
                survivor_node: &survivor,
                survivor_public_key: if index == 5 || index == 9 {
                    &low_order
                } else {
                    &good
                },
            })
            .collect();
        let expected = Err(RoundFailed::from(FailureReason::MaskRecomputation {
            peer: node("d05"),
            source: CryptoError::NonContributoryKey,
        }));
        for threads in [1, 2, 3, 12] {
            assert_eq!(
                removed(&removals, threads, 100),
                expected,
                "{threads} threads"
            );
        }
    }
}
