//! The node's state machine: takes a task with `now` and the node's ledger,
//! decides (refuse, compute, or send), and returns the durable records that
//! must be written before anything leaves. No IO, no clock.
//!
//! Every protection a partner relies on against a coordinator that deviates
//! from the protocol is decided here, once:
//! - the job spec is pinned at the job's first task;
//! - the partner's policy and yearly caps;
//! - peers are authenticated from certificates, never from the coordinator's word;
//! - (k, t), the graph seed, the modulus and the vector length are recomputed;
//! - the number of attempts per phase is bounded by the spec;
//! - a phase's input leaves at most once, computed once and stored first;
//! - a charge is recorded before the input it pays for leaves, and a
//!   conflicting charge is refused, never skipped;
//! - a round's model is evaluated only by a node whose update is in the
//!   round's aggregate.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rand_core::{CryptoRng, RngCore};
use ring::signature::{Ed25519KeyPair, KeyPair};
use veil_federation::secure::{GraphSeedInput, protocol_round_of, round_graph_seed};
use veil_federation::{
    AggregationMode, DeclineCode, ParticipantError, Phase, ReplyEncoding, SecureParticipant,
    SecureStep, SecureTask,
};
use veil_job::{RoundParty, job_charges, phase_charges};
use veil_privacy_ledger::{Charge, check_partner_caps};
use veil_secure_aggregation::{Continuation, ProtocolParams, SurvivorList};

use crate::memory::{NodeMemory, PhaseKey, Record};
use crate::policy::NodePolicy;
use crate::task::{NodeTask, PhaseReply, SecureRequest};
use crate::trust::{PeerTrust, RememberedCredentials};

/// What the node does about a task.
#[derive(Debug)]
pub enum Decision {
    /// Refuse: send `code`, after writing `commit`.
    Decline {
        /// What the coordinator is told.
        code: DeclineCode,
        /// What the node's log says (never sent).
        detail: String,
        /// Records to write first (the refusal itself, at least).
        commit: Vec<Record>,
    },
    /// Compute the phase's reply from the partner's data, then call
    /// [`NodeMachine::reply_computed`]; write `commit` first.
    Compute {
        /// Records to write first (a spec pin).
        commit: Vec<Record>,
    },
    /// Send `message`, after writing `commit`.
    Send {
        /// Records to write first: charges, the release, the stored reply.
        commit: Vec<Record>,
        /// What leaves the node.
        message: Outgoing,
    },
}

/// What leaves the node.
#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    /// A reply in the clear (plain aggregation only).
    Plain(PhaseReply),
    /// A secure-aggregation message.
    Secure {
        /// The step it answers.
        step: SecureStep,
        /// The attempt.
        attempt: u32,
        /// The message in veil-secure-aggregation's encoding.
        payload: Vec<u8>,
    },
}

/// Fixed facts about the node.
pub struct MachineIdentity {
    /// The node's id (its certificate's name).
    pub node_id: String,
    /// The key it signs protocol messages with (its certificate's key).
    pub signing_key: Arc<Ed25519KeyPair>,
}

/// The node's decision logic and what it must remember between tasks.
pub struct NodeMachine {
    node_id: String,
    signing_key: Arc<Ed25519KeyPair>,
    own_key: [u8; 32],
    policy: NodePolicy,
    trust: PeerTrust,
    /// Credentials `trust` has verified, so each is verified once per job
    /// rather than once per secure phase.
    remembered_credentials: RememberedCredentials,
    /// Durable facts, replayed from the node's store at start-up.
    memory: NodeMemory,
    /// Protocol instances under way, by phase, with their attempt. Not
    /// durable: a node that restarts mid-attempt declines the attempt's
    /// later steps (its round keys are gone), which is safe.
    participants: HashMap<PhaseKey, (u32, SecureParticipant)>,
    /// Per job, the continuation of its latest secure training instance that
    /// this node finished inside the sum: the round's evaluation may be
    /// summed with it in one step. Not durable either: a restarted node
    /// declines the continuation, and the coordinator's retry runs the full
    /// protocol.
    continuations: HashMap<String, TrainedInstance>,
    /// Jobs whose whole remaining plan fitted the partner's caps at a task
    /// in this process's life. Composing a job's plan with the PLD
    /// accountant costs tens of milliseconds, too much for every protocol
    /// step; once a plan fits, each phase's own charges are still checked
    /// against the caps (another job may spend them meanwhile). Not
    /// durable: a restarted node plans again.
    affordable_jobs: HashSet<String>,
}

impl std::fmt::Debug for NodeMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeMachine")
            .field("node_id", &self.node_id)
            .field("memory", &self.memory)
            .finish_non_exhaustive()
    }
}

/// A secure training instance this node finished inside the sum, kept for
/// the continuation that sums the round's evaluation.
struct TrainedInstance {
    /// The training round.
    round: u32,
    /// The instance's protocol parameters; a continuation must name them.
    params: ProtocolParams,
    /// The round's pairwise seeds with its signed survivors.
    continuation: Continuation,
}

/// A refusal on its way out of a check.
struct Refusal {
    code: DeclineCode,
    detail: String,
}

fn refuse(code: DeclineCode, detail: impl Into<String>) -> Refusal {
    Refusal {
        code,
        detail: detail.into(),
    }
}

impl NodeMachine {
    /// A machine for `identity` under `policy` and `trust`, resuming `memory`.
    pub fn new(
        identity: MachineIdentity,
        policy: NodePolicy,
        trust: PeerTrust,
        memory: NodeMemory,
    ) -> Self {
        let mut own_key = [0u8; 32];
        own_key.copy_from_slice(identity.signing_key.public_key().as_ref());
        Self {
            node_id: identity.node_id,
            signing_key: identity.signing_key,
            own_key,
            policy,
            trust,
            remembered_credentials: RememberedCredentials::default(),
            memory,
            participants: HashMap::new(),
            continuations: HashMap::new(),
            affordable_jobs: HashSet::new(),
        }
    }

    /// What the node remembers.
    pub fn memory(&self) -> &NodeMemory {
        &self.memory
    }

    /// Replaces the revocation list's serials (the IO layer re-reads the
    /// node's copy of the list before each task).
    pub fn update_revocations(&mut self, revoked: std::collections::BTreeSet<veil_pki::Serial>) {
        if let PeerTrust::Federation {
            revoked: current, ..
        } = &mut self.trust
        {
            *current = revoked;
        }
    }

    /// Decides what to do about `task`. `ledger` is every charge the node's
    /// ledger holds for this partner.
    pub fn handle_task<R: RngCore + CryptoRng>(
        &mut self,
        task: &NodeTask,
        now_unix_seconds: u64,
        ledger: &[Charge],
        rng: &mut R,
    ) -> Decision {
        let mut commit = Vec::new();
        match self.decide(task, now_unix_seconds, ledger, rng, &mut commit) {
            Ok(decision) => decision,
            Err(refusal) => self.decline(task, refusal, now_unix_seconds),
        }
        .with_first(commit)
    }

    /// Continues a task after [`Decision::Compute`]: stores the reply (it
    /// is computed once; any later attempt of the phase reuses it, so no
    /// retry draws fresh noise), then decides as for a new task.
    pub fn reply_computed<R: RngCore + CryptoRng>(
        &mut self,
        task: &NodeTask,
        reply: PhaseReply,
        now_unix_seconds: u64,
        ledger: &[Charge],
        rng: &mut R,
    ) -> Decision {
        let key = phase_key(task);
        if self.memory.replies.contains_key(&key) {
            // Never overwrite: the first computed reply is the only one.
            return self.handle_task(task, now_unix_seconds, ledger, rng);
        }
        let record = Record::StoreReply { key, reply };
        self.memory.apply(&record);
        self.handle_task(task, now_unix_seconds, ledger, rng)
            .with_first(vec![record])
    }

    /// A local failure while computing or sending: refuse with a code.
    pub fn local_failure(
        &mut self,
        task: &NodeTask,
        code: DeclineCode,
        detail: String,
    ) -> Decision {
        self.decline(task, refuse(code, detail), 0)
    }

    fn decline(&mut self, task: &NodeTask, refusal: Refusal, now_unix_seconds: u64) -> Decision {
        let key = phase_key(task);
        // A refused phase's protocol state is useless now.
        self.participants.remove(&key);
        Decision::Decline {
            code: refusal.code,
            detail: refusal.detail,
            commit: vec![Record::Refusal {
                key,
                code: refusal.code,
                at_unix_seconds: now_unix_seconds,
            }],
        }
    }

    fn decide<R: RngCore + CryptoRng>(
        &mut self,
        task: &NodeTask,
        now_unix_seconds: u64,
        ledger: &[Charge],
        rng: &mut R,
        commit: &mut Vec<Record>,
    ) -> Result<Decision, Refusal> {
        let spec = &task.spec;
        match self.memory.spec_pins.get(&task.job_id) {
            Some(pinned) if *pinned != task.spec_digest => {
                return Err(refuse(
                    DeclineCode::SpecChanged,
                    format!(
                        "job '{}' arrived with a spec other than the one pinned at its first task",
                        task.job_id
                    ),
                ));
            }
            Some(_) => {}
            None => {
                let record = Record::PinSpec {
                    job_id: task.job_id.clone(),
                    digest: task.spec_digest,
                };
                self.memory.apply(&record);
                commit.push(record);
            }
        }
        if let Some(refusal) = self
            .policy
            .refusal(spec)
            .or_else(|| self.policy.audit_refusal(spec, &self.node_id))
        {
            return Err(refuse(refusal.code, refusal.detail));
        }
        check_position(task)?;
        let key = phase_key(task);
        if task.phase == Phase::Evaluate
            && !self
                .memory
                .contributed
                .contains(&(task.job_id.clone(), task.round))
        {
            return Err(refuse(
                DeclineCode::EvaluationNotAllowed,
                format!(
                    "round {} evaluation: this node's update is not in the round's aggregate",
                    task.round
                ),
            ));
        }
        match (&spec.aggregation, &task.secure) {
            (AggregationMode::Plain, None) => self.plain(task, &key, now_unix_seconds, ledger),
            (AggregationMode::Secure(_), Some(secure)) => {
                self.secure(task, secure, &key, now_unix_seconds, ledger, rng)
            }
            (mode, _) => Err(refuse(
                DeclineCode::ModeMismatch,
                format!(
                    "the task does not match the job's {} aggregation mode",
                    mode.name()
                ),
            )),
        }
    }

    fn plain(
        &mut self,
        task: &NodeTask,
        key: &PhaseKey,
        now_unix_seconds: u64,
        ledger: &[Charge],
    ) -> Result<Decision, Refusal> {
        let Some(reply) = self.memory.replies.get(key).cloned() else {
            self.charges(task, 0, now_unix_seconds, ledger)?;
            return Ok(Decision::Compute { commit: Vec::new() });
        };
        // A plain reply may be sent again only as the identical stored
        // bytes: it tells the coordinator nothing new.
        let mut commit: Vec<Record> = self
            .charges(task, 0, now_unix_seconds, ledger)?
            .into_iter()
            .map(Record::Charge)
            .collect();
        if !self.memory.released.contains_key(key) {
            commit.push(Record::Released {
                key: key.clone(),
                attempt: 0,
            });
        }
        if task.phase == Phase::Train {
            commit.push(Record::Contributed {
                job_id: task.job_id.clone(),
                round: task.round,
            });
        }
        for record in &commit {
            self.memory.apply(record);
        }
        Ok(Decision::Send {
            commit,
            message: Outgoing::Plain(reply),
        })
    }

    fn secure<R: RngCore + CryptoRng>(
        &mut self,
        task: &NodeTask,
        request: &SecureRequest,
        key: &PhaseKey,
        now_unix_seconds: u64,
        ledger: &[Charge],
        rng: &mut R,
    ) -> Result<Decision, Refusal> {
        let max_attempts = task.spec.plan().max_phase_attempts;
        if request.attempt == 0 || request.attempt > max_attempts {
            return Err(refuse(
                DeclineCode::AttemptLimit,
                format!(
                    "attempt {} of round {} {}: the spec allows attempts 1 to {max_attempts}",
                    request.attempt, task.round, task.phase
                ),
            ));
        }
        if request.step == SecureStep::ContinuationInput {
            return self.continue_training(task, request, key, now_unix_seconds, ledger, rng);
        }
        if let Some(&released) = self.memory.released.get(key) {
            // Only the rest of the very attempt whose masked input left may
            // go on: any other attempt would be a second release.
            let continuing = released == request.attempt && request.step > SecureStep::MaskedInput;
            if !continuing {
                return Err(refuse(
                    DeclineCode::AlreadyReleased,
                    format!(
                        "round {} {}: this node's input left in attempt {released}; {} of attempt {} refused",
                        task.round, task.phase, request.step, request.attempt
                    ),
                ));
            }
        }
        if request.step == SecureStep::AdvertiseKeys {
            return self.advertise(task, request, key, now_unix_seconds, ledger, rng);
        }
        let Some((attempt, mut participant)) = self.participants.remove(key) else {
            return Err(refuse(
                DeclineCode::LostState,
                format!(
                    "no protocol state for round {} {} attempt {} (the node restarted)",
                    task.round, task.phase, request.attempt
                ),
            ));
        };
        if attempt != request.attempt {
            return Err(refuse(
                DeclineCode::LostState,
                format!(
                    "asked for {} of attempt {}, but this node is in attempt {attempt}",
                    request.step, request.attempt
                ),
            ));
        }
        let params = self.protocol_params(task, request)?;
        let mut commit = Vec::new();
        match request.step {
            SecureStep::MaskedInput => {
                // The only message that depends on the data: charged first,
                // and marked as released before it leaves.
                let charges =
                    self.charges(task, params.cohort().len(), now_unix_seconds, ledger)?;
                commit.extend(charges.into_iter().map(Record::Charge));
                if let (Phase::Train, AggregationMode::Secure(settings)) =
                    (task.phase, &task.spec.aggregation)
                {
                    // Checked at the first step; recorded with the charge.
                    let graph = veil_secure_aggregation::check_neighbour_parameters(
                        &settings.graph_requirements(params.cohort().len()),
                        params.neighbour_count(),
                        params.reconstruction_threshold(),
                    )
                    .map_err(|error| refuse(DeclineCode::ParametersMismatch, error.to_string()))?;
                    commit.push(Record::Guarantee {
                        job_id: task.job_id.clone(),
                        round: task.round,
                        guarantee: graph.guarantee.to_string(),
                    });
                }
                commit.push(Record::Released {
                    key: key.clone(),
                    attempt: request.attempt,
                });
            }
            SecureStep::ConsistencyCheck if task.phase == Phase::Train => {
                let survivors = SurvivorList::from_bytes(&request.payload).map_err(|error| {
                    refuse(
                        DeclineCode::InvalidTask,
                        format!("the survivor list is malformed: {error}"),
                    )
                })?;
                if survivors
                    .survivors
                    .iter()
                    .any(|node| node.as_str() == self.node_id)
                {
                    commit.push(Record::Contributed {
                        job_id: task.job_id.clone(),
                        round: task.round,
                    });
                }
            }
            _ => {}
        }
        let secure_task = SecureTask {
            step: request.step,
            attempt: request.attempt,
            params: Arc::new(params),
            members: Arc::new(Vec::new()),
            payload: Arc::new(request.payload.clone()),
        };
        let payload = participant
            .respond(&secure_task, rng)
            .map_err(participant_refusal)?;
        for record in &commit {
            self.memory.apply(record);
        }
        if !participant.is_done() {
            self.participants
                .insert(key.clone(), (request.attempt, participant));
        } else if task.phase == Phase::Train {
            match participant.take_continuation() {
                Some(continuation) => {
                    self.continuations.insert(
                        task.job_id.clone(),
                        TrainedInstance {
                            round: task.round,
                            params: secure_task.params.as_ref().clone(),
                            continuation,
                        },
                    );
                }
                None => {
                    self.continuations.remove(&task.job_id);
                }
            }
        }
        Ok(Decision::Send {
            commit,
            message: Outgoing::Secure {
                step: request.step,
                attempt: request.attempt,
                payload,
            },
        })
    }

    fn advertise<R: RngCore + CryptoRng>(
        &mut self,
        task: &NodeTask,
        request: &SecureRequest,
        key: &PhaseKey,
        now_unix_seconds: u64,
        ledger: &[Charge],
        rng: &mut R,
    ) -> Result<Decision, Refusal> {
        let AggregationMode::Secure(settings) = &task.spec.aggregation else {
            return Err(refuse(DeclineCode::ModeMismatch, "not a secure job"));
        };
        let identities = self
            .trust
            .verify_cohort(
                &mut self.remembered_credentials,
                &self.node_id,
                &self.own_key,
                &request.cohort,
                &request.members,
                now_unix_seconds,
            )
            .map_err(|refusal| refuse(refusal.code, refusal.detail))?;
        let n = request.cohort.len();
        if n < self.policy.min_cohort {
            return Err(refuse(
                DeclineCode::PolicyCohortTooSmall,
                format!(
                    "a cohort of {n} is below the policy's minimum of {}",
                    self.policy.min_cohort
                ),
            ));
        }
        // (k, t) from public data: the cohort size, the job's dropout and
        // collusion bounds and its security parameter.
        veil_secure_aggregation::check_neighbour_parameters(
            &settings.graph_requirements(n),
            request.neighbour_count,
            request.reconstruction_threshold,
        )
        .map_err(|error| refuse(DeclineCode::ParametersMismatch, error.to_string()))?;
        let cohort: Vec<&str> = request.cohort.iter().map(String::as_str).collect();
        let expected_seed = round_graph_seed(
            &settings.graph_seed,
            GraphSeedInput {
                job: &task.job_id,
                round: task.round,
                phase: task.phase,
                attempt: request.attempt,
                cohort: &cohort,
            },
        );
        if request.graph_seed != expected_seed {
            return Err(refuse(
                DeclineCode::ParametersMismatch,
                "the neighbour graph seed is not the one public round data gives",
            ));
        }
        let shape = task.spec.plan().reply_shape(task.round, task.phase);
        let encoding = ReplyEncoding::new(
            shape.vector_len,
            shape.statistics_len,
            n,
            settings,
            &task.spec.privacy.partners,
        )
        .map_err(|error| refuse(DeclineCode::ParametersMismatch, error.to_string()))?;
        if request.vector_length != encoding.encoded_len()
            || request.modulus_bits != settings.modulus_bits
        {
            return Err(refuse(
                DeclineCode::ParametersMismatch,
                format!(
                    "the protocol parameters (length {}, {} bits) do not match the job (length {}, {} bits)",
                    request.vector_length,
                    request.modulus_bits,
                    encoding.encoded_len(),
                    settings.modulus_bits
                ),
            ));
        }
        // Checked (not recorded) before anything is computed; recorded just
        // before the masked input leaves.
        self.charges(task, n, now_unix_seconds, ledger)?;
        let params = self.protocol_params(task, request)?;
        let Some(encoded) = self.encoded_reply(key, &encoding, rng)? else {
            return Ok(Decision::Compute { commit: Vec::new() });
        };
        let secure_task = SecureTask {
            step: request.step,
            attempt: request.attempt,
            params: Arc::new(params),
            members: Arc::new(Vec::new()),
            payload: Arc::new(request.payload.clone()),
        };
        let (participant, payload) = SecureParticipant::start(
            &task.job_id,
            protocol_round_of(task.round, task.phase),
            &self.node_id,
            &secure_task,
            self.policy.secure_policy(),
            Arc::new(identities),
            Arc::clone(&self.signing_key),
            encoded,
            rng,
        )
        .map_err(participant_refusal)?;
        // A new attempt supersedes an older one that never released.
        self.participants
            .insert(key.clone(), (request.attempt, participant));
        Ok(Decision::Send {
            commit: Vec::new(),
            message: Outgoing::Secure {
                step: request.step,
                attempt: request.attempt,
                payload,
            },
        })
    }

    /// The round's evaluation as a continuation of its training instance:
    /// this node's evaluation reply, masked with the training's pairwise
    /// seeds with the survivors it signed, in one message. The node uses
    /// its own survivor list and seeds, whatever the task says; a task that
    /// names other parameters than the instance it finished is refused.
    fn continue_training<R: RngCore + CryptoRng>(
        &mut self,
        task: &NodeTask,
        request: &SecureRequest,
        key: &PhaseKey,
        now_unix_seconds: u64,
        ledger: &[Charge],
        rng: &mut R,
    ) -> Result<Decision, Refusal> {
        let AggregationMode::Secure(settings) = &task.spec.aggregation else {
            return Err(refuse(DeclineCode::ModeMismatch, "not a secure job"));
        };
        if task.phase != Phase::Evaluate {
            return Err(refuse(
                DeclineCode::InvalidTask,
                format!(
                    "round {} {}: only an evaluation continues a training instance",
                    task.round, task.phase
                ),
            ));
        }
        if let Some(&released) = self.memory.released.get(key) {
            return Err(refuse(
                DeclineCode::AlreadyReleased,
                format!(
                    "round {} {}: this node's input left in attempt {released}; the continuation of attempt {} is refused",
                    task.round, task.phase, request.attempt
                ),
            ));
        }
        let Some(trained) = self
            .continuations
            .get(&task.job_id)
            .filter(|trained| trained.round == task.round)
        else {
            return Err(refuse(
                DeclineCode::LostState,
                format!(
                    "no finished training instance of round {} to continue (the node restarted, or its input was not in that sum)",
                    task.round
                ),
            ));
        };
        let named = self.protocol_params(task, request)?;
        let trained_params = &trained.params;
        if named.cohort() != trained_params.cohort()
            || named.graph_seed() != trained_params.graph_seed()
            || named.neighbour_count() != trained_params.neighbour_count()
            || named.reconstruction_threshold() != trained_params.reconstruction_threshold()
            || named.modulus_bits() != trained_params.modulus_bits()
        {
            return Err(refuse(
                DeclineCode::ParametersMismatch,
                format!(
                    "the continuation names other parameters than round {}'s training instance",
                    task.round
                ),
            ));
        }
        let n = trained.continuation.survivors().len();
        let shape = task.spec.plan().reply_shape(task.round, task.phase);
        let encoding = ReplyEncoding::new(
            shape.vector_len,
            shape.statistics_len,
            n,
            settings,
            &task.spec.privacy.partners,
        )
        .map_err(|error| refuse(DeclineCode::ParametersMismatch, error.to_string()))?;
        if named.vector_length() != encoding.encoded_len() {
            return Err(refuse(
                DeclineCode::ParametersMismatch,
                format!(
                    "the continuation's length {} does not match the job's {} for {n} survivors",
                    named.vector_length(),
                    encoding.encoded_len()
                ),
            ));
        }
        // Checked before anything is computed, recorded as the input leaves.
        let charges = self.charges(task, n, now_unix_seconds, ledger)?;
        let Some(encoded) = self.encoded_reply(key, &encoding, rng)? else {
            return Ok(Decision::Compute { commit: Vec::new() });
        };
        let Some(trained) = self.continuations.remove(&task.job_id) else {
            return Err(refuse(DeclineCode::LostState, "the continuation is gone"));
        };
        let masked = trained
            .continuation
            .masked_input(
                protocol_round_of(task.round, task.phase),
                trained.params.modulus_bits(),
                &encoded,
            )
            .map_err(|error| {
                refuse(
                    DeclineCode::LocalFailure,
                    format!("masking the continuation input: {error}"),
                )
            })?;
        let mut commit: Vec<Record> = charges.into_iter().map(Record::Charge).collect();
        commit.push(Record::Released {
            key: key.clone(),
            attempt: request.attempt,
        });
        for record in &commit {
            self.memory.apply(record);
        }
        Ok(Decision::Send {
            commit,
            message: Outgoing::Secure {
                step: request.step,
                attempt: request.attempt,
                payload: masked.to_bytes(),
            },
        })
    }

    /// The phase's stored reply, encoded for secure aggregation; `None`
    /// while it has not been computed yet.
    fn encoded_reply<R: RngCore + CryptoRng>(
        &self,
        key: &PhaseKey,
        encoding: &ReplyEncoding,
        rng: &mut R,
    ) -> Result<Option<Vec<u32>>, Refusal> {
        let Some(reply) = self.memory.replies.get(key) else {
            return Ok(None);
        };
        encoding
            .encode(reply.weight, &reply.statistics, &reply.vector, rng)
            .map(Some)
            .map_err(|error| {
                refuse(
                    DeclineCode::LocalFailure,
                    format!("encoding the reply: {error}"),
                )
            })
    }

    fn protocol_params(
        &self,
        task: &NodeTask,
        request: &SecureRequest,
    ) -> Result<ProtocolParams, Refusal> {
        let cohort = request
            .cohort
            .iter()
            .map(|node| veil_secure_aggregation::NodeId::new(node.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| refuse(DeclineCode::InvalidTask, error.to_string()))?;
        ProtocolParams::new(
            cohort,
            request.graph_seed,
            request.neighbour_count,
            request.reconstruction_threshold,
            request.modulus_bits,
            request.vector_length,
        )
        .map_err(|error| {
            refuse(
                DeclineCode::InvalidTask,
                format!(
                    "round {} {}: invalid protocol parameters: {error}",
                    task.round, task.phase
                ),
            )
        })
    }

    /// The charges the phase costs this partner that its ledger does not
    /// hold yet, after refusing any that would exceed its caps or conflict
    /// with a charge already recorded under the same key.
    fn charges(
        &mut self,
        task: &NodeTask,
        cohort: usize,
        now_unix_seconds: u64,
        ledger: &[Charge],
    ) -> Result<Vec<Charge>, Refusal> {
        let party = RoundParty {
            job_id: &task.job_id,
            round: task.round,
            partner_id: &self.node_id,
            // One dataset per node: the caps compose every job this node joins.
            dataset_id: &self.node_id,
            cohort,
        };
        let now = i64::try_from(now_unix_seconds).unwrap_or(i64::MAX);
        let planned = phase_charges(&task.spec, task.phase, party)
            .map_err(|error| refuse(DeclineCode::InvalidTask, error.to_string()))?
            .into_iter()
            .map(|charge| Charge::new(charge, now))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| refuse(DeclineCode::InvalidTask, error.to_string()))?;
        let mut new = Vec::new();
        for charge in planned {
            match ledger.iter().find(|old| old.key() == charge.key()) {
                Some(old) if old.same_charge_as(&charge) => {}
                Some(_) => {
                    return Err(refuse(
                        DeclineCode::ChargeConflict,
                        format!(
                            "round {} {}: the ledger holds a different {:?} charge under the same key",
                            task.round, task.phase, charge.unit
                        ),
                    ));
                }
                None => new.push(charge),
            }
        }
        // The caps are checked against this phase's charges, and against the
        // whole job's plan until it has fitted once: a node that cannot
        // afford every round and the final evaluation declines the job at
        // its first task, rather than train a few rounds and veto the rest.
        // (Planned as if the node took part in every round, the most it can
        // spend; charges already in the ledger are not planned twice.)
        let caps = self.policy.caps(&self.node_id);
        refuse_over_caps(&caps, ledger, &new, "this phase")?;
        if self.affordable_jobs.contains(&task.job_id) {
            return Ok(new);
        }
        let remaining_plan = job_charges(&task.spec, RoundParty { round: 1, ..party })
            .map_err(|error| refuse(DeclineCode::InvalidTask, error.to_string()))?
            .into_iter()
            .map(|charge| Charge::new(charge, now))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| refuse(DeclineCode::InvalidTask, error.to_string()))?
            .into_iter()
            .filter(|charge| !ledger.iter().any(|old| old.key() == charge.key()))
            .collect::<Vec<_>>();
        refuse_over_caps(&caps, ledger, &remaining_plan, "the rest of the job")?;
        self.affordable_jobs.insert(task.job_id.clone());
        Ok(new)
    }
}

/// Refuses when `planned` on top of `ledger` would exceed any of `caps`,
/// saying what was planned (`what`) and which cap.
fn refuse_over_caps(
    caps: &[veil_privacy_ledger::PartnerCap],
    ledger: &[Charge],
    planned: &[Charge],
    what: &str,
) -> Result<(), Refusal> {
    let refusals = check_partner_caps(caps, ledger, planned)
        .map_err(|error| refuse(DeclineCode::InvalidTask, error.to_string()))?;
    if refusals.is_empty() {
        return Ok(());
    }
    let reasons: Vec<String> = refusals.iter().map(ToString::to_string).collect();
    Err(refuse(
        DeclineCode::PrivacyCapExceeded,
        format!("partner privacy cap, for {what}: {}", reasons.join("; ")),
    ))
}

impl Decision {
    /// Puts `records` before the decision's own.
    fn with_first(self, records: Vec<Record>) -> Self {
        if records.is_empty() {
            return self;
        }
        let prepend = |commit: Vec<Record>| {
            let mut all = records.clone();
            all.extend(commit);
            all
        };
        match self {
            Decision::Decline {
                code,
                detail,
                commit,
            } => Decision::Decline {
                code,
                detail,
                commit: prepend(commit),
            },
            Decision::Compute { commit } => Decision::Compute {
                commit: prepend(commit),
            },
            Decision::Send { commit, message } => Decision::Send {
                commit: prepend(commit),
                message,
            },
        }
    }
}

fn phase_key(task: &NodeTask) -> PhaseKey {
    PhaseKey {
        job_id: task.job_id.clone(),
        round: task.round,
        phase: task.phase,
    }
}

/// Refuses a round or phase outside the job: for training, feature
/// statistics only in round 0, training and evaluation only in rounds 1 to
/// `rounds`; for an analysis, only its releases, in rounds 1 to `rounds`.
fn check_position(task: &NodeTask) -> Result<(), Refusal> {
    let rounds = task.spec.rounds;
    let analysis = task.spec.analysis.is_some();
    let valid = match task.phase {
        Phase::FeatureStats => !analysis && task.round == 0,
        Phase::Train | Phase::Evaluate => !analysis && (1..=rounds).contains(&task.round),
        Phase::Release => analysis && (1..=rounds).contains(&task.round),
    };
    if valid {
        Ok(())
    } else {
        Err(refuse(
            DeclineCode::InvalidTask,
            format!(
                "round {} {} is outside the job's {rounds} rounds",
                task.round, task.phase
            ),
        ))
    }
}

fn participant_refusal(error: ParticipantError) -> Refusal {
    let code = match error {
        ParticipantError::MalformedPayload { .. } | ParticipantError::Parameters(_) => {
            DeclineCode::InvalidTask
        }
        ParticipantError::OutOfStep { .. } => DeclineCode::LostState,
        ParticipantError::Protocol(_) => DeclineCode::ProtocolRefused,
    };
    refuse(code, error.to_string())
}
