//! In-process harness for secure-aggregation rounds: a cohort of simulated
//! clients with deterministic keys and randomness, an honest server, and a
//! driver that drops clients after any phase (in the spirit of quinn's `Pair`).

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::sync::Arc;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use ring::signature::{Ed25519KeyPair, KeyPair};
use veil_secure_aggregation::client::AdvertiseKeys;
use veil_secure_aggregation::server::Finished;
use veil_secure_aggregation::{
    ClientConfig, ClientError, ClientSession, Continuation, ForwardedShares, IdentityDirectory,
    NodeId, PartnerPolicy, ProtocolParams, RoundFailed, ServerConfig, ServerSession,
};

/// The job id every simulated round uses.
pub const JOB_ID: &str = "job-churn-7";
/// The round number every simulated round uses.
pub const ROUND: u32 = 3;

/// A cohort with enrolled identity keys and fixed inputs.
pub struct Cohort {
    /// The job's parameters.
    pub params: Arc<ProtocolParams>,
    /// Enrolled identity keys.
    pub identities: Arc<IdentityDirectory>,
    /// Identity key pairs by cohort position (the cohort is sorted).
    pub signing_keys: Vec<Arc<Ed25519KeyPair>>,
    /// Encoded inputs by cohort position.
    pub inputs: Vec<Vec<u32>>,
}

/// Node ids that sort in index order.
pub fn node(index: usize) -> NodeId {
    NodeId::new(format!("node-{index:04}")).expect("valid id")
}

impl Cohort {
    /// A cohort of `n` nodes with random inputs below 2^value_bits.
    pub fn new(
        n: usize,
        neighbour_count: usize,
        threshold: usize,
        modulus_bits: u32,
        vector_length: usize,
        seed: u64,
    ) -> Self {
        let nodes: Vec<NodeId> = (0..n).map(node).collect();
        let params = ProtocolParams::new(
            nodes.clone(),
            [seed as u8; 32],
            neighbour_count,
            threshold,
            modulus_bits,
            vector_length,
        )
        .expect("valid parameters");
        let signing_keys: Vec<Arc<Ed25519KeyPair>> = (0..n)
            .map(|index| {
                let mut key_seed = [0u8; 32];
                key_seed[..8].copy_from_slice(&(index as u64).to_le_bytes());
                key_seed[8..16].copy_from_slice(&seed.to_le_bytes());
                Arc::new(Ed25519KeyPair::from_seed_unchecked(&key_seed).expect("seed is 32 bytes"))
            })
            .collect();
        let identities = IdentityDirectory::from_entries(
            nodes.iter().cloned().zip(
                signing_keys
                    .iter()
                    .map(|key| key.public_key().as_ref().to_vec()),
            ),
        )
        .expect("32-byte keys");
        let mut input_rng = ChaCha20Rng::seed_from_u64(seed ^ 0x5eed);
        let modulus_mask = params.modulus_mask();
        let inputs = (0..n)
            .map(|_| {
                (0..vector_length)
                    .map(|_| rand_core::RngCore::next_u32(&mut input_rng) & modulus_mask)
                    .collect()
            })
            .collect();
        Cohort {
            params: Arc::new(params),
            identities: Arc::new(identities),
            signing_keys,
            inputs,
        }
    }

    /// The client session of the node at `index`, with the given policy floor.
    pub fn client_with_policy(
        &self,
        index: usize,
        minimum_threshold: usize,
    ) -> Result<ClientSession<AdvertiseKeys>, ClientError> {
        let config = ClientConfig {
            job_id: JOB_ID.to_owned(),
            round: ROUND,
            node_id: node(index),
            params: Arc::clone(&self.params),
            policy: PartnerPolicy { minimum_threshold },
            identities: Arc::clone(&self.identities),
        };
        ClientSession::new(config, Arc::clone(&self.signing_keys[index]))
    }

    /// The client session of the node at `index` under a permissive policy.
    pub fn client(&self, index: usize) -> ClientSession<AdvertiseKeys> {
        self.client_with_policy(index, 1)
            .expect("node is in the cohort")
    }

    /// An honest server session.
    pub fn server(&self) -> ServerSession<veil_secure_aggregation::server::AdvertiseKeys> {
        ServerSession::new(ServerConfig {
            job_id: JOB_ID.to_owned(),
            round: ROUND,
            params: Arc::clone(&self.params),
            identities: Arc::clone(&self.identities),
        })
    }

    /// The plain sum modulo 2^b of the inputs of `survivors`.
    pub fn plain_sum(&self, survivors: &BTreeSet<usize>) -> Vec<u32> {
        let mut sum = vec![0u32; self.params.vector_length()];
        for &index in survivors {
            for (total, &value) in sum.iter_mut().zip(&self.inputs[index]) {
                *total = total.wrapping_add(value);
            }
        }
        let modulus_mask = self.params.modulus_mask();
        sum.iter_mut().for_each(|value| *value &= modulus_mask);
        sum
    }
}

/// The last phase a simulated client completes before going silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropPoint {
    /// Never advertises keys.
    BeforeAdvertise,
    /// Advertises keys, then goes silent.
    AfterAdvertise,
    /// Sends shares, then goes silent.
    AfterShareKeys,
    /// Sends its masked input, then goes silent.
    AfterMaskedInput,
    /// Signs the survivor list, then goes silent.
    AfterConsistencyCheck,
    /// Completes the round.
    Never,
}

/// How a simulated round ended.
pub struct RoundOutcome {
    /// The server's result: the unmasked sum and survivors, or the failure.
    pub result: Result<(Vec<u32>, Vec<NodeId>), RoundFailed>,
    /// The positions whose masked input the server accepted.
    pub accepted_inputs: BTreeSet<usize>,
    /// Client refusals and errors, by position.
    pub client_errors: Vec<(usize, ClientError)>,
}

/// Runs one round with an honest server, dropping clients as told.
pub fn run_round(cohort: &Cohort, drops: &[DropPoint], rng_seed: u64) -> RoundOutcome {
    run_round_keeping_continuations(cohort, drops, rng_seed).outcome
}

/// A round's outcome with what a continuation of it needs: the finished
/// server session and each client's continuation, by position.
pub struct ContinuableRound {
    /// As [`run_round`] reports it.
    pub outcome: RoundOutcome,
    /// The server session, if the round finished.
    pub finished: Option<ServerSession<Finished>>,
    /// The continuations of clients that completed the round in its sum.
    pub continuations: Vec<(usize, Continuation)>,
}

/// [`run_round`], keeping the finished server session and the clients'
/// continuations.
pub fn run_round_keeping_continuations(
    cohort: &Cohort,
    drops: &[DropPoint],
    rng_seed: u64,
) -> ContinuableRound {
    let mut rng = ChaCha20Rng::seed_from_u64(rng_seed);
    let mut client_errors = Vec::new();
    let mut accepted_inputs = BTreeSet::new();
    let n = cohort.params.cohort().len();
    let goes_on = |index: usize, after: DropPoint| {
        drops.get(index).copied().unwrap_or(DropPoint::Never) != after
    };
    let outcome = |result, accepted_inputs, client_errors| ContinuableRound {
        outcome: RoundOutcome {
            result,
            accepted_inputs,
            client_errors,
        },
        finished: None,
        continuations: Vec::new(),
    };

    let mut server = cohort.server();
    let mut advertising = Vec::new();
    for index in 0..n {
        if !goes_on(index, DropPoint::BeforeAdvertise) {
            continue;
        }
        match cohort.client(index).advertise_keys(&mut rng) {
            Ok((session, message)) => {
                server
                    .handle_key_advertisement(message)
                    .expect("honest advertisement accepted");
                advertising.push((index, session));
            }
            Err(error) => client_errors.push((index, error)),
        }
    }
    let (mut server, directory) = match server.finish_phase() {
        Ok(next) => next,
        Err(failed) => return outcome(Err(failed), accepted_inputs, client_errors),
    };

    let mut sharing = Vec::new();
    for (index, session) in advertising {
        if !goes_on(index, DropPoint::AfterAdvertise) {
            continue;
        }
        match session.share_keys(&directory, &mut rng) {
            Ok((session, message)) => {
                server
                    .handle_encrypted_shares(message)
                    .expect("honest shares accepted");
                sharing.push((index, session));
            }
            Err(error) => client_errors.push((index, error)),
        }
    }
    let (mut server, forwarded) = match server.finish_phase() {
        Ok(next) => next,
        Err(failed) => return outcome(Err(failed), accepted_inputs, client_errors),
    };

    let mut masking = Vec::new();
    for (index, session) in sharing {
        if !goes_on(index, DropPoint::AfterShareKeys) {
            continue;
        }
        let empty = ForwardedShares {
            recipient: node(index),
            ciphertexts: Vec::new(),
        };
        let bundle = forwarded
            .iter()
            .find(|bundle| bundle.recipient == node(index))
            .unwrap_or(&empty);
        match session.masked_input(bundle, &cohort.inputs[index]) {
            Ok((session, message)) => {
                server
                    .handle_masked_input(&message)
                    .expect("honest masked input accepted");
                accepted_inputs.insert(index);
                masking.push((index, session));
            }
            Err(error) => client_errors.push((index, error)),
        }
    }
    let (mut server, survivor_list) = match server.finish_phase() {
        Ok(next) => next,
        Err(failed) => return outcome(Err(failed), accepted_inputs, client_errors),
    };

    let mut checking = Vec::new();
    for (index, session) in masking {
        if !goes_on(index, DropPoint::AfterMaskedInput) {
            continue;
        }
        match session.consistency_check(&survivor_list) {
            Ok((session, message)) => {
                server
                    .handle_consistency_signature(message)
                    .expect("honest signature accepted");
                checking.push((index, session));
            }
            Err(error) => client_errors.push((index, error)),
        }
    }
    let (mut server, request) = match server.finish_phase() {
        Ok(next) => next,
        Err(failed) => return outcome(Err(failed), accepted_inputs, client_errors),
    };

    let mut continuations = Vec::new();
    for (index, session) in checking {
        if !goes_on(index, DropPoint::AfterConsistencyCheck) {
            continue;
        }
        match session.unmask_and_continue(&request) {
            Ok((message, continuation)) => {
                server
                    .handle_unmask_response(message)
                    .expect("honest response accepted");
                continuations.extend(continuation.map(|continuation| (index, continuation)));
            }
            Err(error) => client_errors.push((index, error)),
        }
    }
    match server.finish_phase() {
        Ok(finished) => {
            let result = Ok((
                finished.unmasked_sum().to_vec(),
                finished.survivors().to_vec(),
            ));
            let mut round = outcome(result, accepted_inputs, client_errors);
            round.finished = Some(finished);
            round.continuations = continuations;
            round
        }
        Err(failed) => outcome(Err(failed), accepted_inputs, client_errors),
    }
}
