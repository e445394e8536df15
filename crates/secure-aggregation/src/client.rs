//! The client side of one round, as a typestate: each phase is a value that is
//! consumed to produce the next phase and the message to send.
//!
//! `ClientSession<AdvertiseKeys>` → `advertise_keys` → `ClientSession<ShareKeys>`
//! → `share_keys` → `ClientSession<MaskedInput>` → `masked_input` →
//! `ClientSession<ConsistencyCheck>` → `consistency_check` →
//! `ClientSession<Unmask>` → `unmask` → done. Calling them out of order does
//! not compile. Every check that protects the client against an active
//! coordinator happens here and ends in a named `Refusal`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rand_core::{CryptoRng, RngCore};
use ring::signature::{Ed25519KeyPair, KeyPair};
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use crate::crypto::{self, CryptoError};
use crate::messages::{
    AddressedCiphertext, ConsistencySignature, EncryptedShares, ForwardedShares, KeyAdvertisement,
    KeyDirectory, MaskedInput as MaskedInputMessage, RevealedShare, SurvivorList, UnmaskRequest,
    UnmaskResponse, read_share_limbs, write_share_limbs,
};
use crate::params::{
    IdentityDirectory, IdentityVerifyingKey, NodeId, PartnerPolicy, ProtocolParams, RoundShared,
};
use crate::prg;
use crate::shamir::{self, ShamirError, Share};
use crate::wire::{Reader, Writer};

/// Why a client stopped because the coordinator (or the job) asked for
/// something unsafe. A refusing client sends nothing more this round.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The job's threshold is below the partner's policy floor.
    #[error("job threshold {job_threshold} is below the partner policy minimum {policy_minimum}")]
    ThresholdBelowPolicy {
        /// t requested by the job.
        job_threshold: usize,
        /// The partner's floor.
        policy_minimum: usize,
    },
    /// This node is not in the round's cohort.
    #[error("node is not in the round's cohort")]
    NotInCohort,
    /// The directory holds an advertisement from a node with no enrolled identity key.
    #[error("no enrolled identity key for {node}")]
    UnknownIdentity {
        /// The unknown node.
        node: NodeId,
    },
    /// An advertisement's signature does not verify: its keys were substituted.
    #[error("key advertisement of {node} has an invalid signature")]
    InvalidAdvertisementSignature {
        /// The node whose advertisement is forged.
        node: NodeId,
    },
    /// The directory shows this client's own keys differently from what it sent.
    #[error("the directory altered this node's own advertisement")]
    OwnAdvertisementAltered,
    /// A node appears twice in the directory.
    #[error("{node} is advertised twice")]
    DuplicateAdvertisement {
        /// The repeated node.
        node: NodeId,
    },
    /// A public key is reused between nodes or roles, which an honest client never does.
    #[error("{node} advertises a public key already in use")]
    ReusedPublicKey {
        /// The node whose key repeats an earlier one.
        node: NodeId,
    },
    /// Fewer than t neighbours advertised keys, so the secrets cannot be shared safely.
    #[error("only {live} neighbours advertised keys; threshold is {required}")]
    TooFewAdvertisedNeighbours {
        /// Neighbours with valid advertisements.
        live: usize,
        /// t.
        required: usize,
    },
    /// Shares addressed to another node were delivered here.
    #[error("shares addressed to {recipient} were delivered to this node")]
    MisaddressedShares {
        /// The recipient named in the message.
        recipient: NodeId,
    },
    /// Shares arrived from a node that is not an advertised neighbour, or twice from one.
    #[error("unexpected or repeated shares from {sender}")]
    UnexpectedShareSender {
        /// The sender.
        sender: NodeId,
    },
    /// A share ciphertext failed authentication or held malformed shares.
    #[error("shares from {sender} failed to decrypt")]
    ShareDecryptionFailed {
        /// The sender.
        sender: NodeId,
    },
    /// Fewer than t neighbours sent shares, so this client's masks would be too weak.
    #[error("only {live} neighbours sent shares; threshold is {required}")]
    TooFewShareSenders {
        /// Neighbours whose shares arrived.
        live: usize,
        /// t.
        required: usize,
    },
    /// The survivor list is unsorted, repeats a node or names a node outside the cohort.
    #[error("survivor list is malformed")]
    MalformedSurvivorList,
    /// A neighbour is listed as a survivor although its shares never reached this client.
    #[error("survivor {node} never sent shares to this neighbour")]
    SurvivorWithoutShares {
        /// The inconsistent survivor.
        node: NodeId,
    },
    /// Fewer than t neighbours survive: unmasking would expose too small a group.
    #[error("only {live} neighbours survive; threshold is {required}")]
    TooFewSurvivingNeighbours {
        /// Surviving neighbours.
        live: usize,
        /// t.
        required: usize,
    },
    /// A consistency signature does not verify on this client's survivor list:
    /// the coordinator showed different clients different views.
    #[error("consistency signature of {signer} does not match this node's view")]
    InconsistentView {
        /// The node whose signature is over a different list (or forged).
        signer: NodeId,
    },
    /// Fewer than t neighbours confirmed the same survivor list.
    #[error("only {valid} neighbours confirmed the survivor list; threshold is {required}")]
    TooFewConsistencySignatures {
        /// Valid signatures from neighbours.
        valid: usize,
        /// t.
        required: usize,
    },
    /// The coordinator asked for both the self-mask share and the mask-key share
    /// of one peer, which together would unmask that peer's input.
    #[error("both shares of {peer} were requested")]
    BothSharesRequested {
        /// The peer at risk.
        peer: NodeId,
    },
    /// The coordinator asked for the mask-key share of a survivor.
    #[error("mask-key share of survivor {peer} was requested")]
    MaskKeyShareOfSurvivorRequested {
        /// The surviving peer.
        peer: NodeId,
    },
    /// The coordinator asked for the self-mask share of a node not in the signed survivor list.
    #[error("self-mask share of non-survivor {peer} was requested")]
    SelfMaskShareOfDroppedPeerRequested {
        /// The dropped peer.
        peer: NodeId,
    },
}

/// Why a client session cannot continue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The client refused for safety or policy.
    #[error("refused: {0}")]
    Refused(#[from] Refusal),
    /// The signing key does not match this node's enrolled identity key.
    #[error("signing key does not match the enrolled identity key")]
    IdentityKeyMismatch,
    /// The input vector has the wrong length for the job.
    #[error("input has {actual} elements, the job expects {expected}")]
    InputLengthMismatch {
        /// d.
        expected: usize,
        /// The supplied length.
        actual: usize,
    },
    /// A continuation's modulus is outside 1..=32 bits.
    #[error("a {modulus_bits}-bit modulus is outside 1..=32 bits")]
    ModulusOutOfRange {
        /// The rejected b.
        modulus_bits: u32,
    },
    /// An input element does not fit in Z_{2^b}.
    #[error("input element {index} is not below 2^b")]
    InputOutOfRange {
        /// Position of the element.
        index: usize,
    },
    /// A cryptographic primitive failed.
    #[error("cryptography: {0}")]
    Crypto(#[from] CryptoError),
    /// Secret sharing failed.
    #[error("secret sharing: {0}")]
    Shamir(#[from] ShamirError),
}

/// What a client is configured with for one round.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The job this round belongs to.
    pub job_id: String,
    /// The round number.
    pub round: u32,
    /// This node's id.
    pub node_id: NodeId,
    /// The job's protocol parameters.
    pub params: Arc<ProtocolParams>,
    /// The partner's floor on the threshold.
    pub policy: PartnerPolicy,
    /// Enrolled identity keys of the cohort.
    pub identities: Arc<IdentityDirectory>,
}

/// State shared by every phase of one client's round.
struct ClientRound {
    /// Parameters, graph, binding and identities.
    shared: RoundShared,
    /// This node's id.
    node_id: NodeId,
    /// This node's position in the cohort.
    own_index: usize,
    /// The long-term identity key, held behind an `Arc` because the node keeps
    /// it for its whole life and ring key pairs cannot be cloned.
    signing_key: Arc<Ed25519KeyPair>,
}

/// A client's round in phase `Phase`.
pub struct ClientSession<Phase> {
    /// Data every phase needs.
    round: Arc<ClientRound>,
    /// Data owned by the current phase only.
    phase: Phase,
}

/// Before any message: the client will generate and advertise its round keys.
pub struct AdvertiseKeys;

/// Keys advertised; waiting for the server's key directory.
pub struct ShareKeys {
    /// Secret for decrypting shares sent to this client.
    encryption_secret: StaticSecret,
    /// Secret from which pairwise masks are agreed; Shamir-shared in this phase.
    mask_secret: StaticSecret,
    /// What this client advertised, to detect the directory altering it.
    own_advertisement: KeyAdvertisement,
}

/// A neighbour's verified round public keys.
#[derive(Clone, Copy)]
struct PeerKeys {
    /// For share decryption.
    encryption_public_key: [u8; 32],
    /// For pairwise masks.
    mask_public_key: [u8; 32],
}

/// Shares sent; waiting for the shares addressed to this client.
pub struct MaskedInput {
    /// Each neighbour's share-encryption agreement, computed once when
    /// sealing the shares sent to it and used again to open the shares it
    /// sends (one X25519 per neighbour instead of two), by cohort index.
    encryption_agreements: BTreeMap<usize, crypto::EncryptionAgreement>,
    /// Agrees pairwise masks.
    mask_secret: StaticSecret,
    /// This client's self-mask seed b.
    self_mask_seed: [u8; 32],
    /// Verified keys of the neighbours that advertised, by cohort index.
    peer_keys: BTreeMap<usize, PeerKeys>,
}

/// The two shares a neighbour entrusted to this client.
struct HeldShares {
    /// Share of the neighbour's self-mask seed.
    self_mask: Share,
    /// Share of the neighbour's mask secret key.
    mask_key: Share,
}

/// Each neighbour's pairwise mask seed, by cohort index, kept (zeroised on
/// drop) from the masked input to the end of the round for a
/// [`Continuation`].
type PairwiseSeeds = BTreeMap<usize, Zeroizing<[u8; 32]>>;

/// Masked input sent; waiting for the survivor list.
pub struct ConsistencyCheck {
    /// Shares held for each neighbour that sent them, by cohort index.
    held_shares: BTreeMap<usize, HeldShares>,
    /// The pairwise seeds this client masked with.
    pairwise_seeds: PairwiseSeeds,
}

/// Survivor list signed; waiting for the unmask request.
pub struct Unmask {
    /// Shares held for each neighbour that sent them, by cohort index.
    held_shares: BTreeMap<usize, HeldShares>,
    /// The survivor list this client signed; every signature must be on it.
    signed_survivors: Vec<NodeId>,
    /// The pairwise seeds this client masked with.
    pairwise_seeds: PairwiseSeeds,
}

impl<Phase> ClientSession<Phase> {
    fn next<Next>(self, phase: Next) -> ClientSession<Next> {
        ClientSession {
            round: self.round,
            phase,
        }
    }

    fn threshold(&self) -> usize {
        self.round.shared.params.reconstruction_threshold()
    }

    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.round.node_id
    }
}

impl ClientSession<AdvertiseKeys> {
    /// Starts a round, refusing jobs that break the partner's policy.
    pub fn new(
        config: ClientConfig,
        signing_key: Arc<Ed25519KeyPair>,
    ) -> Result<Self, ClientError> {
        let job_threshold = config.params.reconstruction_threshold();
        if job_threshold < config.policy.minimum_threshold {
            return Err(Refusal::ThresholdBelowPolicy {
                job_threshold,
                policy_minimum: config.policy.minimum_threshold,
            }
            .into());
        }
        let own_index = config
            .params
            .cohort_index(&config.node_id)
            .ok_or(Refusal::NotInCohort)?;
        let enrolled = config.identities.public_key(&config.node_id);
        if enrolled.map(|key| key.as_slice()) != Some(signing_key.public_key().as_ref()) {
            return Err(ClientError::IdentityKeyMismatch);
        }
        let shared = RoundShared::new(
            config.job_id,
            config.round,
            config.params,
            config.identities,
        );
        let round = ClientRound {
            shared,
            node_id: config.node_id,
            own_index,
            signing_key,
        };
        Ok(ClientSession {
            round: Arc::new(round),
            phase: AdvertiseKeys,
        })
    }

    /// Phase 1: generates the round's two X25519 key pairs and signs their public halves.
    pub fn advertise_keys<R: RngCore + CryptoRng>(
        self,
        rng: &mut R,
    ) -> Result<(ClientSession<ShareKeys>, KeyAdvertisement), ClientError> {
        let encryption_secret = crypto::generate_secret(rng);
        let mask_secret = crypto::generate_secret(rng);
        let encryption_public_key = crypto::public_key_of(&encryption_secret);
        let mask_public_key = crypto::public_key_of(&mask_secret);
        let transcript = crypto::advertisement_transcript(
            &self.round.shared.binding,
            &self.round.node_id,
            &encryption_public_key,
            &mask_public_key,
        );
        let advertisement = KeyAdvertisement {
            node_id: self.round.node_id.clone(),
            encryption_public_key,
            mask_public_key,
            signature: self.round.signing_key.sign(&transcript).as_ref().to_vec(),
        };
        let phase = ShareKeys {
            encryption_secret,
            mask_secret,
            own_advertisement: advertisement.clone(),
        };
        Ok((self.next(phase), advertisement))
    }
}

impl ClientSession<ShareKeys> {
    /// Phase 2: verifies the neighbours' advertisements and sends each of them,
    /// encrypted, one Shamir share of this client's self-mask seed and of its
    /// mask secret key.
    pub fn share_keys<R: RngCore + CryptoRng>(
        self,
        directory: &KeyDirectory,
        rng: &mut R,
    ) -> Result<(ClientSession<MaskedInput>, EncryptedShares), ClientError> {
        let round = Arc::clone(&self.round);
        let shared = &round.shared;
        let mut seen_nodes = BTreeSet::new();
        let mut seen_keys = BTreeSet::new();
        let mut peer_keys = BTreeMap::new();
        // Neighbours' advertisements with their transcripts and identity
        // keys, checked in one batch once the loop has done the cheap checks.
        let mut to_verify: Vec<(&KeyAdvertisement, Vec<u8>, &IdentityVerifyingKey)> = Vec::new();
        // A refusal found by a cheap check is reported only after the
        // signatures before it in the directory are checked, so the refusal
        // is the first problem in directory order, as when each signature was
        // checked on its own.
        let invalid_before =
            |to_verify: &[(&KeyAdvertisement, Vec<u8>, &IdentityVerifyingKey)],
             refusal: Refusal|
             -> ClientError {
                first_invalid_advertisement(to_verify)
                    .unwrap_or(refusal)
                    .into()
            };
        for advertisement in &directory.advertisements {
            let node = &advertisement.node_id;
            if !seen_nodes.insert(node.clone()) {
                return Err(invalid_before(
                    &to_verify,
                    Refusal::DuplicateAdvertisement { node: node.clone() },
                ));
            }
            if !seen_keys.insert(advertisement.encryption_public_key)
                || !seen_keys.insert(advertisement.mask_public_key)
            {
                return Err(invalid_before(
                    &to_verify,
                    Refusal::ReusedPublicKey { node: node.clone() },
                ));
            }
            if *node == round.node_id {
                if *advertisement != self.phase.own_advertisement {
                    return Err(invalid_before(&to_verify, Refusal::OwnAdvertisementAltered));
                }
                continue;
            }
            // Only neighbours matter; other advertisements are ignored unverified.
            let Some(index) = shared.params.cohort_index(node) else {
                continue;
            };
            if !shared.graph.are_neighbours(round.own_index, index) {
                continue;
            }
            let Some(identity) = shared.identities.identity_key(node) else {
                return Err(invalid_before(
                    &to_verify,
                    Refusal::UnknownIdentity { node: node.clone() },
                ));
            };
            let transcript = crypto::advertisement_transcript(
                &shared.binding,
                node,
                &advertisement.encryption_public_key,
                &advertisement.mask_public_key,
            );
            to_verify.push((advertisement, transcript, identity));
            peer_keys.insert(
                index,
                PeerKeys {
                    encryption_public_key: advertisement.encryption_public_key,
                    mask_public_key: advertisement.mask_public_key,
                },
            );
        }
        if let Some(refusal) = first_invalid_advertisement(&to_verify) {
            return Err(refusal.into());
        }
        let threshold = self.threshold();
        if peer_keys.len() < threshold {
            return Err(Refusal::TooFewAdvertisedNeighbours {
                live: peer_keys.len(),
                required: threshold,
            }
            .into());
        }
        let self_mask_seed = crypto::generate_seed(rng);
        let x_coordinates: Vec<u64> = peer_keys
            .keys()
            .map(|&index| shared.x_coordinate(index))
            .collect();
        let self_mask_shares = shamir::split_seed(&self_mask_seed, threshold, &x_coordinates, rng)?;
        let mask_key_shares = shamir::split_seed(
            &self.phase.mask_secret.to_bytes(),
            threshold,
            &x_coordinates,
            rng,
        )?;
        let mut ciphertexts = Vec::with_capacity(peer_keys.len());
        let mut encryption_agreements = BTreeMap::new();
        for ((&index, keys), (self_mask_share, mask_key_share)) in peer_keys
            .iter()
            .zip(self_mask_shares.iter().zip(&mask_key_shares))
        {
            let Some(recipient) = shared.node_at(index) else {
                continue;
            };
            let mut plaintext = Writer::new_raw();
            write_share_limbs(&mut plaintext, self_mask_share);
            write_share_limbs(&mut plaintext, mask_key_share);
            let agreement = crypto::EncryptionAgreement::new(
                &self.phase.encryption_secret,
                &keys.encryption_public_key,
            )?;
            let ciphertext = crypto::seal_shares(
                &agreement,
                &shared.binding,
                &round.node_id,
                recipient,
                &plaintext.into_bytes(),
            )?;
            encryption_agreements.insert(index, agreement);
            ciphertexts.push(AddressedCiphertext {
                peer: recipient.clone(),
                ciphertext,
            });
        }
        let message = EncryptedShares {
            sender: round.node_id.clone(),
            self_mask_commitment: crypto::self_mask_commitment(
                &shared.binding,
                &round.node_id,
                &self_mask_seed,
            ),
            ciphertexts,
        };
        let ShareKeys { mask_secret, .. } = self.phase;
        let phase = MaskedInput {
            encryption_agreements,
            mask_secret,
            self_mask_seed,
            peer_keys,
        };
        Ok((ClientSession { round, phase }, message))
    }
}

/// The refusal for the first advertisement in `to_verify` (advertisement,
/// its transcript, the signer's identity key) whose signature does not
/// verify, all checked in one batch.
fn first_invalid_advertisement(
    to_verify: &[(&KeyAdvertisement, Vec<u8>, &IdentityVerifyingKey)],
) -> Option<Refusal> {
    let signatures: Vec<crypto::IdentitySignature<'_>> = to_verify
        .iter()
        .map(
            |(advertisement, transcript, identity)| crypto::IdentitySignature {
                identity_key: identity,
                message: transcript,
                signature: &advertisement.signature,
            },
        )
        .collect();
    crypto::first_invalid_identity_signature(&signatures).map(|position| {
        Refusal::InvalidAdvertisementSignature {
            node: to_verify[position].0.node_id.clone(),
        }
    })
}

impl ClientSession<MaskedInput> {
    /// Phase 3: decrypts the shares neighbours sent, then uploads
    /// `input + PRG(b) + sum_v ±PRG(s_uv)` modulo 2^b, masking with exactly the
    /// neighbours whose shares arrived (the server forwarded them, so it knows).
    /// `input` holds encoded values already in Z_{2^b} (see `encoding::encode`).
    pub fn masked_input(
        self,
        forwarded: &ForwardedShares,
        input: &[u32],
    ) -> Result<(ClientSession<ConsistencyCheck>, MaskedInputMessage), ClientError> {
        let round = Arc::clone(&self.round);
        let shared = &round.shared;
        let expected = shared.params.vector_length();
        if input.len() != expected {
            return Err(ClientError::InputLengthMismatch {
                expected,
                actual: input.len(),
            });
        }
        let modulus_mask = shared.params.modulus_mask();
        if let Some(index) = input.iter().position(|&value| value & !modulus_mask != 0) {
            return Err(ClientError::InputOutOfRange { index });
        }
        if forwarded.recipient != round.node_id {
            return Err(Refusal::MisaddressedShares {
                recipient: forwarded.recipient.clone(),
            }
            .into());
        }
        let own_x = shared.x_coordinate(round.own_index);
        let mut held_shares = BTreeMap::new();
        for entry in &forwarded.ciphertexts {
            let sender = &entry.peer;
            let unexpected = || Refusal::UnexpectedShareSender {
                sender: sender.clone(),
            };
            let index = shared.params.cohort_index(sender).ok_or_else(unexpected)?;
            let agreement = self
                .phase
                .encryption_agreements
                .get(&index)
                .ok_or_else(unexpected)?;
            if held_shares.contains_key(&index) {
                return Err(unexpected().into());
            }
            let decryption_failed = || Refusal::ShareDecryptionFailed {
                sender: sender.clone(),
            };
            let plaintext = crypto::open_shares(
                agreement,
                &shared.binding,
                sender,
                &round.node_id,
                &entry.ciphertext,
            )
            .map_err(|_| decryption_failed())?;
            let mut reader = Reader::raw(&plaintext);
            let self_mask =
                read_share_limbs(&mut reader, own_x).map_err(|_| decryption_failed())?;
            let mask_key = read_share_limbs(&mut reader, own_x).map_err(|_| decryption_failed())?;
            reader.finish().map_err(|_| decryption_failed())?;
            held_shares.insert(
                index,
                HeldShares {
                    self_mask,
                    mask_key,
                },
            );
        }
        let threshold = self.threshold();
        if held_shares.len() < threshold {
            return Err(Refusal::TooFewShareSenders {
                live: held_shares.len(),
                required: threshold,
            }
            .into());
        }
        let mut masked_vector = input.to_vec();
        prg::add_mask(&self.phase.self_mask_seed, &mut masked_vector);
        let mut pairwise_seeds = PairwiseSeeds::new();
        for &index in held_shares.keys() {
            let (Some(peer), Some(keys)) =
                (shared.node_at(index), self.phase.peer_keys.get(&index))
            else {
                continue;
            };
            let seed = crypto::pairwise_mask_seed(
                &self.phase.mask_secret,
                &keys.mask_public_key,
                &shared.binding,
                &round.node_id,
                peer,
            )?;
            // The lower id adds and the higher subtracts, so the pair cancels in the sum.
            if round.node_id < *peer {
                prg::add_mask(&seed, &mut masked_vector);
            } else {
                prg::subtract_mask(&seed, &mut masked_vector);
            }
            pairwise_seeds.insert(index, Zeroizing::new(seed));
        }
        for value in &mut masked_vector {
            *value &= modulus_mask;
        }
        let message = MaskedInputMessage {
            sender: round.node_id.clone(),
            masked_vector,
        };
        Ok((
            ClientSession {
                round,
                phase: ConsistencyCheck {
                    held_shares,
                    pairwise_seeds,
                },
            },
            message,
        ))
    }
}

impl ClientSession<ConsistencyCheck> {
    /// Phase 4: checks the survivor list against what this client knows and
    /// signs it, so that in phase 5 every client can confirm all saw the same list.
    pub fn consistency_check(
        self,
        survivor_list: &SurvivorList,
    ) -> Result<(ClientSession<Unmask>, ConsistencySignature), ClientError> {
        let shared = &self.round.shared;
        let survivors = &survivor_list.survivors;
        let sorted = survivors.windows(2).all(|pair| pair.first() < pair.get(1));
        if !sorted
            || survivors
                .iter()
                .any(|node| shared.params.cohort_index(node).is_none())
        {
            return Err(Refusal::MalformedSurvivorList.into());
        }
        let mut surviving_neighbours = 0;
        for node in survivors {
            let Some(index) = shared.params.cohort_index(node) else {
                continue;
            };
            if !shared.graph.are_neighbours(self.round.own_index, index) {
                continue;
            }
            if !self.phase.held_shares.contains_key(&index) {
                return Err(Refusal::SurvivorWithoutShares { node: node.clone() }.into());
            }
            surviving_neighbours += 1;
        }
        let threshold = self.threshold();
        if surviving_neighbours < threshold {
            return Err(Refusal::TooFewSurvivingNeighbours {
                live: surviving_neighbours,
                required: threshold,
            }
            .into());
        }
        let transcript = crypto::consistency_transcript(&shared.binding, survivors);
        let message = ConsistencySignature {
            signer: self.round.node_id.clone(),
            signature: self.round.signing_key.sign(&transcript).as_ref().to_vec(),
        };
        let phase = Unmask {
            held_shares: self.phase.held_shares,
            signed_survivors: survivor_list.survivors.clone(),
            pairwise_seeds: self.phase.pairwise_seeds,
        };
        Ok((
            ClientSession {
                round: self.round,
                phase,
            },
            message,
        ))
    }
}

impl ClientSession<Unmask> {
    /// Phase 5: verifies that at least t neighbours signed the same survivor
    /// list, then reveals the self-mask share of each surviving peer and the
    /// mask-key share of each dropped peer, never both for one peer.
    pub fn unmask(self, request: &UnmaskRequest) -> Result<UnmaskResponse, ClientError> {
        self.unmask_and_continue(request)
            .map(|(response, _continuation)| response)
    }

    /// [`Self::unmask`], also returning the round's [`Continuation`] when
    /// this client is in the survivor list it signed (and so in the sum).
    pub fn unmask_and_continue(
        self,
        request: &UnmaskRequest,
    ) -> Result<(UnmaskResponse, Option<Continuation>), ClientError> {
        let shared = &self.round.shared;
        let survivors = &self.phase.signed_survivors;
        let transcript = crypto::consistency_transcript(&shared.binding, survivors);
        let mut confirming_neighbours = BTreeSet::new();
        // Neighbours' signatures with their identity keys, checked in one
        // batch after the loop (each is on the same transcript).
        let mut to_verify: Vec<(&NodeId, crypto::IdentitySignature<'_>)> = Vec::new();
        for signature in &request.signatures {
            let signer = &signature.signer;
            // Only neighbours hold this client's shares, so only their views
            // matter here; each neighbour checks its own neighbourhood in
            // turn. Skipping the rest keeps the cost O(k) instead of O(n)
            // signature verifications.
            let Some(index) = shared.params.cohort_index(signer) else {
                continue;
            };
            if !shared.graph.are_neighbours(self.round.own_index, index) {
                continue;
            }
            // A signer outside the list or without an identity is reported
            // after any bad signature before it, as the first problem in
            // the request's order.
            let inconsistent = |to_verify: &[(&NodeId, crypto::IdentitySignature<'_>)]| {
                first_inconsistent_signer(to_verify).unwrap_or_else(|| Refusal::InconsistentView {
                    signer: signer.clone(),
                })
            };
            if survivors.binary_search(signer).is_err() {
                return Err(inconsistent(&to_verify).into());
            }
            let Some(identity) = shared.identities.identity_key(signer) else {
                return Err(inconsistent(&to_verify).into());
            };
            to_verify.push((
                signer,
                crypto::IdentitySignature {
                    identity_key: identity,
                    message: &transcript,
                    signature: &signature.signature,
                },
            ));
            confirming_neighbours.insert(index);
        }
        if let Some(refusal) = first_inconsistent_signer(&to_verify) {
            return Err(refusal.into());
        }
        let threshold = self.threshold();
        if confirming_neighbours.len() < threshold {
            return Err(Refusal::TooFewConsistencySignatures {
                valid: confirming_neighbours.len(),
                required: threshold,
            }
            .into());
        }
        let self_mask_requested: BTreeSet<&NodeId> = request.self_mask_share_peers.iter().collect();
        for peer in &request.mask_key_share_peers {
            if self_mask_requested.contains(peer) {
                return Err(Refusal::BothSharesRequested { peer: peer.clone() }.into());
            }
            if survivors.binary_search(peer).is_ok() {
                return Err(Refusal::MaskKeyShareOfSurvivorRequested { peer: peer.clone() }.into());
            }
        }
        if let Some(peer) = request
            .self_mask_share_peers
            .iter()
            .find(|peer| survivors.binary_search(peer).is_err())
        {
            return Err(Refusal::SelfMaskShareOfDroppedPeerRequested { peer: peer.clone() }.into());
        }
        let reveal = |peers: &[NodeId], pick: fn(&HeldShares) -> &Share| -> Vec<RevealedShare> {
            let unique: BTreeSet<&NodeId> = peers.iter().collect();
            unique
                .into_iter()
                .filter_map(|peer| {
                    let index = shared.params.cohort_index(peer)?;
                    let held = self.phase.held_shares.get(&index)?;
                    Some(RevealedShare {
                        peer: peer.clone(),
                        share: pick(held).clone(),
                    })
                })
                .collect()
        };
        let response = UnmaskResponse {
            sender: self.round.node_id.clone(),
            self_mask_shares: reveal(&request.self_mask_share_peers, |held| &held.self_mask),
            mask_key_shares: reveal(&request.mask_key_share_peers, |held| &held.mask_key),
        };
        let continuation = survivors
            .binary_search(&self.round.node_id)
            .is_ok()
            .then(|| {
                // Only pairs inside the signed list: a survivor's mask with a
                // dropped neighbour is one the coordinator can recompute.
                let seeds = self
                    .phase
                    .pairwise_seeds
                    .into_iter()
                    .filter_map(|(index, seed)| {
                        let peer = shared.node_at(index)?;
                        survivors
                            .binary_search(peer)
                            .is_ok()
                            .then(|| (peer.clone(), seed))
                    })
                    .collect();
                Continuation {
                    node_id: self.round.node_id.clone(),
                    survivors: self.phase.signed_survivors.clone(),
                    seeds,
                }
            });
        Ok((response, continuation))
    }
}

/// One more sum over exactly a finished round's survivors, with no new keys,
/// shares or signatures: one message per client (docs/secure-aggregation.md,
/// "Continuations").
///
/// Each client masks its vector only with pairwise masks derived from the
/// round's pairwise seeds with its neighbours in the survivor list it
/// signed, and with no self mask. The masks cancel in the sum over the whole
/// list, and nothing is ever revealed to remove them, so the coordinator
/// gets the sum only if every survivor sends, and otherwise nothing. Any set
/// of continuation inputs the coordinator could unmask, it could unmask in
/// the round's own inputs, which carry the same pairwise masks (plus masks
/// with dropped neighbours, whose seeds it may reconstruct, and a self mask
/// whose seed it did reconstruct): a continuation protects a client exactly
/// as the round did. Used once: `masked_input` consumes it.
pub struct Continuation {
    /// This client.
    node_id: NodeId,
    /// The survivor list this client signed, sorted.
    survivors: Vec<NodeId>,
    /// The round's pairwise seed with each neighbour in `survivors`.
    seeds: BTreeMap<NodeId, Zeroizing<[u8; 32]>>,
}

impl std::fmt::Debug for Continuation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The seeds are secrets: only who and how many.
        f.debug_struct("Continuation")
            .field("node_id", &self.node_id)
            .field("survivors", &self.survivors.len())
            .field("neighbours", &self.seeds.len())
            .finish()
    }
}

impl Continuation {
    /// The round's survivors: who must all send for the sum to exist.
    pub fn survivors(&self) -> &[NodeId] {
        &self.survivors
    }

    /// Masks `input` (values already in Z_{2^b}, `modulus_bits` = b) for the
    /// continuation numbered `continuation_round`, which both sides bind into
    /// every mask with the vector's length and b.
    pub fn masked_input(
        self,
        continuation_round: u32,
        modulus_bits: u32,
        input: &[u32],
    ) -> Result<MaskedInputMessage, ClientError> {
        if !(1..=32).contains(&modulus_bits) {
            return Err(ClientError::ModulusOutOfRange { modulus_bits });
        }
        let modulus_mask = crate::params::modulus_mask(modulus_bits);
        if let Some(index) = input.iter().position(|&value| value & !modulus_mask != 0) {
            return Err(ClientError::InputOutOfRange { index });
        }
        let mut masked_vector = input.to_vec();
        for (peer, pairwise_seed) in &self.seeds {
            let seed = Zeroizing::new(crypto::continuation_mask_seed(
                pairwise_seed,
                continuation_round,
                input.len(),
                modulus_bits,
            )?);
            // The same orientation as the round's masks: lower id adds.
            if self.node_id < *peer {
                prg::add_mask(&seed, &mut masked_vector);
            } else {
                prg::subtract_mask(&seed, &mut masked_vector);
            }
        }
        for value in &mut masked_vector {
            *value &= modulus_mask;
        }
        Ok(MaskedInputMessage {
            sender: self.node_id,
            masked_vector,
        })
    }
}

/// The refusal for the first signer in `to_verify` whose consistency
/// signature does not verify, all checked in one batch.
fn first_inconsistent_signer(
    to_verify: &[(&NodeId, crypto::IdentitySignature<'_>)],
) -> Option<Refusal> {
    let signatures: Vec<crypto::IdentitySignature<'_>> =
        to_verify.iter().map(|(_, item)| *item).collect();
    crypto::first_invalid_identity_signature(&signatures).map(|position| {
        Refusal::InconsistentView {
            signer: to_verify[position].0.clone(),
        }
    })
}
