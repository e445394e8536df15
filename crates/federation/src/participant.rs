//! A node's side of one secure phase: turns each [`SecureTask`] the
//! coordinator hands out into the protocol message to send back, keeping the
//! client state machine between steps. Sans-IO like the engine, so the
//! simulated harness and `client-node` run the same code.

use std::sync::Arc;

use rand_core::{CryptoRng, RngCore};
use ring::signature::Ed25519KeyPair;
use thiserror::Error;
use veil_secure_aggregation::client::{self, ClientSession};
use veil_secure_aggregation::{
    ClientConfig, ClientError, Continuation, ForwardedShares, IdentityDirectory, KeyDirectory,
    NodeId, PartnerPolicy, SurvivorList, UnmaskRequest,
};

use crate::secure::{SecureStep, SecureTask};

/// Why a node cannot answer a step. The node then declines the phase.
#[derive(Debug, Error)]
pub enum ParticipantError {
    /// The protocol refused (policy, bad signature, inconsistent view...).
    #[error("secure aggregation: {0}")]
    Protocol(#[from] ClientError),
    /// The coordinator's payload does not decode.
    #[error("the coordinator's {step} payload is malformed: {reason}")]
    MalformedPayload {
        /// The step.
        step: SecureStep,
        /// The decoder's message.
        reason: String,
    },
    /// The task is for a step this participant is not at (lost or skipped state).
    #[error("asked for {asked}, but this node's protocol state is at {at}")]
    OutOfStep {
        /// The step asked for.
        asked: SecureStep,
        /// Where the node is.
        at: &'static str,
    },
    /// The task's identities or parameters are unusable.
    #[error("invalid secure-aggregation parameters: {0}")]
    Parameters(String),
}

enum State {
    Advertised(ClientSession<client::ShareKeys>),
    Shared(ClientSession<client::MaskedInput>),
    Masked(ClientSession<client::ConsistencyCheck>),
    Checked(ClientSession<client::Unmask>),
    Done,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Advertised(_) => "share-keys",
            State::Shared(_) => "masked-input",
            State::Masked(_) => "consistency-check",
            State::Checked(_) => "unmask",
            State::Done => "finished",
        }
    }
}

/// One node's protocol instance for one phase attempt.
pub struct SecureParticipant {
    state: State,
    input: Vec<u32>,
    /// After the last step, when this node's input is in the sum: what a
    /// continuation of the instance needs (see [`Self::take_continuation`]).
    continuation: Option<Continuation>,
}

impl std::fmt::Debug for SecureParticipant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureParticipant")
            .field("state", &self.state.name())
            .finish_non_exhaustive()
    }
}

impl SecureParticipant {
    /// Answers the first step: checks the job against the partner's policy,
    /// then advertises signed round keys. `identities` are the cohort's keys
    /// as the node verified them itself (from certificates chained to its own
    /// CA), never a list the coordinator wrote. `encoded_input` is the node's
    /// reply already encoded with [`crate::ReplyEncoding`]; it is only used
    /// (masked) at the masked-input step.
    #[allow(clippy::too_many_arguments)]
    pub fn start<R: RngCore + CryptoRng>(
        job: &str,
        protocol_round: u32,
        node: &str,
        task: &SecureTask,
        policy: PartnerPolicy,
        identities: Arc<IdentityDirectory>,
        signing_key: Arc<Ed25519KeyPair>,
        encoded_input: Vec<u32>,
        rng: &mut R,
    ) -> Result<(Self, Vec<u8>), ParticipantError> {
        if task.step != SecureStep::AdvertiseKeys {
            return Err(ParticipantError::OutOfStep {
                asked: task.step,
                at: "not started",
            });
        }
        let node_id =
            NodeId::new(node).map_err(|error| ParticipantError::Parameters(error.to_string()))?;
        let config = ClientConfig {
            job_id: job.to_owned(),
            round: protocol_round,
            node_id,
            params: Arc::clone(&task.params),
            policy,
            identities,
        };
        let session = ClientSession::new(config, signing_key)?;
        let (session, advertisement) = session.advertise_keys(rng)?;
        Ok((
            SecureParticipant {
                state: State::Advertised(session),
                input: encoded_input,
                continuation: None,
            },
            advertisement.to_bytes(),
        ))
    }

    /// Answers a later step with the message to send.
    pub fn respond<R: RngCore + CryptoRng>(
        &mut self,
        task: &SecureTask,
        rng: &mut R,
    ) -> Result<Vec<u8>, ParticipantError> {
        let malformed =
            |reason: veil_secure_aggregation::DecodeError| ParticipantError::MalformedPayload {
                step: task.step,
                reason: reason.to_string(),
            };
        let state = std::mem::replace(&mut self.state, State::Done);
        let at = state.name();
        let (next, message) = match (task.step, state) {
            (SecureStep::ShareKeys, State::Advertised(session)) => {
                let directory = KeyDirectory::from_bytes(&task.payload).map_err(malformed)?;
                let (session, shares) = session.share_keys(&directory, rng)?;
                (State::Shared(session), shares.to_bytes())
            }
            (SecureStep::MaskedInput, State::Shared(session)) => {
                let forwarded = ForwardedShares::from_bytes(&task.payload).map_err(malformed)?;
                let input = std::mem::take(&mut self.input);
                let (session, masked) = session.masked_input(&forwarded, &input)?;
                (State::Masked(session), masked.to_bytes())
            }
            (SecureStep::ConsistencyCheck, State::Masked(session)) => {
                let survivors = SurvivorList::from_bytes(&task.payload).map_err(malformed)?;
                let (session, signature) = session.consistency_check(&survivors)?;
                (State::Checked(session), signature.to_bytes())
            }
            (SecureStep::Unmask, State::Checked(session)) => {
                let request = UnmaskRequest::from_bytes(&task.payload).map_err(malformed)?;
                let (response, continuation) = session.unmask_and_continue(&request)?;
                self.continuation = continuation;
                (State::Done, response.to_bytes())
            }
            (asked, _) => return Err(ParticipantError::OutOfStep { asked, at }),
        };
        self.state = next;
        Ok(message)
    }

    /// Whether the node has sent its last message.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Once done, the continuation of this instance, if this node's input
    /// is in the sum (once: later calls give `None`).
    pub fn take_continuation(&mut self) -> Option<Continuation> {
        self.continuation.take()
    }
}
