//! The job and round state machine.
//!
//! A job runs one feature-statistics phase (round 0), then for each round a
//! training phase followed by an evaluation phase of the new global model.
//! A phase invites up to `max_participants` live nodes and closes when every
//! invitee has replied or its deadline passes. At close it proceeds if at
//! least `min_participants` replied; otherwise it is extended (new deadline,
//! newly live nodes invited, replies kept) up to `max_phase_attempts` times,
//! and then the job fails with a named reason. Absent nodes are simply not
//! counted; they are invited again to later phases once they are alive.
//!
//! An analysis job (a plan with releases) runs no model: round `i + 1` is
//! release `i`, one [`Phase::Release`] each, whose public parameters the job's
//! descriptor derives from the sums released before it ([`ReleaseDirector`]).

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::aggregate::{Accumulator, RejectReason};
use rand_chacha::ChaCha20Rng;

use crate::decline::DeclineCode;
use crate::phase::Phase;
use crate::plan::{AggregationMode, JobPlan, PlanError};
use crate::privacy::{PartnerPrivacy, add_central_noise, clip_update};
use crate::secure::{
    CohortMember, FinishedInstance, MIN_SECURE_COHORT, SecureRound, SecureRoundPosition,
    SecureStep, SecureTask, StepOutcome,
};
use crate::strategy::ServerOptimizer;
use crate::{JobId, NodeId};

/// The coordinator's half of an analysis job, implemented by the job
/// descriptor: what nodes need to compute each release. It sees only the
/// sums released before (noised by the nodes), so whatever it derives is
/// post-processing and costs no privacy. It must be a pure function of its
/// inputs: a restarted coordinator derives the same parameters again.
pub trait ReleaseDirector {
    /// The public parameters of release `index` (0-based), given the summed
    /// statistics of releases `0..index` in order. An error fails the job
    /// with its message.
    fn release_parameters(&self, index: usize, released: &[&[f64]]) -> Result<Vec<f64>, String>;

    /// The job's result from every release's sum, in the plan's
    /// `parameter_count` values: it becomes the job's model (version 1),
    /// exported, checkpointed and audited like a trained one.
    fn result_parameters(&self, released: &[&[f64]]) -> Result<Vec<f32>, String>;
}

/// Descriptors of training-only jobs (the engine's own tests and harnesses).
impl ReleaseDirector for () {
    fn release_parameters(&self, _: usize, _: &[&[f64]]) -> Result<Vec<f64>, String> {
        Err("this job describes no analysis".to_owned())
    }

    fn result_parameters(&self, _: &[&[f64]]) -> Result<Vec<f32>, String> {
        Err("this job describes no analysis".to_owned())
    }
}

/// Descriptors of training-only jobs (the engine's own tests and harnesses).
impl ReleaseDirector for &str {
    fn release_parameters(&self, _: usize, _: &[&[f64]]) -> Result<Vec<f64>, String> {
        Err("this job describes no analysis".to_owned())
    }

    fn result_parameters(&self, _: &[&[f64]]) -> Result<Vec<f32>, String> {
        Err("this job describes no analysis".to_owned())
    }
}

/// Engine-wide settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// A node not heard from for this long is not invited to new phases.
    pub node_liveness: Duration,
}

/// Lifecycle of a job.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum JobState {
    /// Submitted, not started.
    Pending,
    /// Rounds are running (or waiting for enough live nodes).
    Running,
    /// Every round completed; the final model is available.
    Succeeded,
    /// The job stopped for the given reason.
    Failed {
        /// Why it stopped.
        reason: String,
    },
    /// An operator cancelled it.
    Cancelled,
}

impl JobState {
    /// Whether the job has ended (succeeded, failed or cancelled): it takes
    /// no more submissions and opens no more phases.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed { .. } | JobState::Cancelled
        )
    }
}

/// What happened in one completed round, as additive sums.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RoundRecord {
    /// Round number, from 1.
    pub round: u32,
    /// Nodes whose training replies were aggregated.
    pub train_participants: u32,
    /// Sum of training weights (examples).
    pub train_weight: f64,
    /// Sum of the training statistics vectors.
    pub train_statistics: Vec<f64>,
    /// Nodes whose evaluation replies were aggregated.
    pub evaluate_participants: u32,
    /// Sum of the evaluation statistics vectors.
    pub evaluate_statistics: Vec<f64>,
    /// Invited nodes that did not reply in time, over both phases.
    pub dropped: Vec<NodeId>,
    /// Nodes whose training update is in the round's aggregate: only they
    /// are asked to evaluate the round's model.
    #[serde(default)]
    pub contributors: Vec<NodeId>,
    /// The secure-aggregation guarantee the training phase had ("tolerates
    /// 1 colluder and 1 dropout", "41.2 bits against 20% collusion").
    #[serde(default)]
    pub secure_guarantee: Option<String>,
    /// Why the round's training released no model update, when it did not:
    /// its inputs left in an attempt that could not finish, and a retry would
    /// have been a second release of the same round.
    #[serde(default)]
    pub abandoned: Option<String>,
    /// An analysis round's released sum (its participants are
    /// `train_participants`); empty in training rounds.
    #[serde(default)]
    pub release_sum: Vec<f64>,
}

/// What an [`Engine`] holds in memory, counted over its jobs
/// ([`Engine::footprint`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineFootprint {
    /// Jobs known, running or ended.
    pub jobs: usize,
    /// Of those, jobs that ended.
    pub finished_jobs: usize,
    /// Registered nodes.
    pub nodes: usize,
    /// Events not yet polled.
    pub queued_events: usize,
    /// Global-model parameters held, over all jobs.
    pub model_values: usize,
    /// Server-optimiser values held (FedAdam's moments), over all jobs.
    pub optimizer_values: usize,
    /// Keys of accepted submissions kept to recognise retries.
    pub retry_keys: usize,
    /// Phases open, each with its sums or secure-aggregation state.
    pub open_phases: usize,
    /// Values and node ids in round records (statistics, released sums,
    /// participants), the summary every job keeps.
    pub history_values: usize,
}

/// A read-only view of a job, for operators.
#[derive(Debug, Clone, PartialEq)]
pub struct JobStatus {
    /// Job id.
    pub job: JobId,
    /// Lifecycle state.
    pub state: JobState,
    /// Rounds fully completed.
    pub completed_rounds: u32,
    /// Rounds planned.
    pub total_rounds: u32,
    /// The round and phase in progress, if running.
    pub current: Option<(u32, Phase)>,
    /// When running but waiting: live nodes still missing to open the phase.
    pub waiting_for_nodes: Option<u32>,
    /// Completed rounds (after the first `known` of
    /// [`Engine::status_after`]); empty when `history_in_store`.
    pub history: Vec<RoundRecord>,
    /// The job has ended and the engine released its history: read it from
    /// the job store it was saved to ([`crate::store::JobStore::rounds`]).
    pub history_in_store: bool,
}

/// Identifies one result: with the node, the idempotency key of a submit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResultKey {
    /// Job id.
    pub job: JobId,
    /// Round number (0 for feature statistics).
    pub round: u32,
    /// Phase.
    pub phase: Phase,
}

/// One node's reply to a task.
#[derive(Debug, Clone, PartialEq)]
pub struct Submission {
    /// The sender.
    pub node: NodeId,
    /// Which phase it answers.
    pub key: ResultKey,
    /// What it says.
    pub body: SubmissionBody,
}

/// The content of a submission.
#[derive(Debug, Clone, PartialEq)]
pub enum SubmissionBody {
    /// A reply in the clear (plain aggregation only).
    Plain {
        /// Aggregation weight (examples for training).
        weight: f64,
        /// Additive statistics.
        statistics: Vec<f64>,
        /// Model delta (training only).
        vector: Vec<f32>,
    },
    /// A secure-aggregation protocol message.
    Secure {
        /// The protocol instance (phase attempt).
        attempt: u32,
        /// The step it answers.
        step: SecureStep,
        /// The message in veil-secure-aggregation's encoding.
        payload: Vec<u8>,
    },
    /// The node will not take part in this phase, and says why.
    Declined {
        /// The node's reason, from the fixed list.
        code: DeclineCode,
    },
}

/// Result of an accepted submit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitOutcome {
    /// Folded into the round.
    Accepted,
    /// The same key was accepted before; nothing changed (a safe retry).
    Duplicate,
}

/// A task handed to a node.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskAssignment {
    /// Job id.
    pub job: JobId,
    /// Round.
    pub round: u32,
    /// Phase.
    pub phase: Phase,
    /// Version of the global model the task works on (number of aggregations
    /// applied so far); the node downloads exactly this version.
    pub model_version: u32,
    /// When the phase (or, for secure phases, the step) closes.
    pub deadline: Instant,
    /// For secure phases: the protocol step to answer.
    pub secure: Option<SecureTask>,
    /// For release phases: the public parameters of the release.
    pub release_parameters: Option<Arc<Vec<f64>>>,
}

/// A progress event for operators and for persistence.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineEvent {
    /// The job it concerns.
    pub job: JobId,
    /// What happened.
    pub kind: EventKind,
}

/// Kinds of progress events.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// The job was submitted.
    Submitted,
    /// An operator started the job.
    Started,
    /// Not enough live nodes to open the next phase.
    WaitingForNodes {
        /// Live nodes now.
        live: u32,
        /// Nodes needed.
        needed: u32,
    },
    /// A phase opened (or was extended, when `attempt > 1`).
    PhaseOpened {
        /// Round.
        round: u32,
        /// Phase.
        phase: Phase,
        /// Invited nodes.
        invited: Vec<NodeId>,
        /// 1 for the first opening.
        attempt: u32,
    },
    /// A reply was refused; the phase goes on.
    ReplyRejected {
        /// Sender.
        node: NodeId,
        /// Round it claimed.
        round: u32,
        /// Phase it claimed.
        phase: Phase,
        /// Why.
        reason: RejectReason,
    },
    /// A phase closed with enough replies.
    PhaseCompleted {
        /// Round.
        round: u32,
        /// Phase.
        phase: Phase,
        /// Replies aggregated.
        participants: u32,
        /// Invitees whose reply is not in the sums (silent or declined).
        dropped: Vec<NodeId>,
    },
    /// A round's evaluation finished.
    /// A node declined a phase; the phase goes on without it.
    NodeDeclined {
        /// The node.
        node: NodeId,
        /// Round.
        round: u32,
        /// Phase.
        phase: Phase,
        /// The node's reason.
        code: DeclineCode,
    },
    /// A phase cannot finish without a second release: nodes whose input
    /// left in a failed attempt take part in no retry, and too few others
    /// remain. Its releases are charged; the job moves to the next round
    /// (training, evaluation) or fails (feature statistics).
    PhaseAbandoned {
        /// Round.
        round: u32,
        /// Phase.
        phase: Phase,
        /// Nodes whose input for the phase left (charged for it).
        released: Vec<NodeId>,
        /// The size of the cohort their input was priced for.
        cohort: u32,
        /// Why, with the numbers.
        reason: String,
    },
    /// A secure-aggregation step opened.
    SecureStepOpened {
        /// Round.
        round: u32,
        /// Phase.
        phase: Phase,
        /// The step.
        step: SecureStep,
        /// Nodes still in the protocol.
        remaining: u32,
    },
    /// A secure-aggregation instance failed; the phase is retried or the job fails.
    SecureRoundFailed {
        /// Round.
        round: u32,
        /// Phase.
        phase: Phase,
        /// Attempt.
        attempt: u32,
        /// The named reason.
        reason: String,
    },
    RoundCompleted(RoundRecord),
    /// The coordinator refused to run a round (its privacy budget would be
    /// exceeded); the job ends with the rounds already completed.
    RoundRefused {
        /// The round that did not run.
        round: u32,
        /// Why, naming the partner and the budget.
        reason: String,
    },
    /// Every round completed.
    Succeeded,
    /// The job failed.
    Failed {
        /// Why.
        reason: String,
    },
    /// The job was cancelled.
    Cancelled,
}

/// Errors of operator and node calls other than result submission.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum EngineError {
    /// No job with this id.
    #[error("unknown job '{job}'")]
    UnknownJob {
        /// The id asked for.
        job: JobId,
    },
    /// The node has not registered.
    #[error("unknown node '{node}': register first")]
    UnknownNode {
        /// The id given.
        node: NodeId,
    },
    /// The job plan is invalid.
    #[error("invalid job: {0}")]
    InvalidPlan(#[from] PlanError),
    /// The operation does not apply in the job's current state.
    #[error("job '{job}' is {state}: cannot {operation}")]
    WrongState {
        /// Job id.
        job: JobId,
        /// Its state.
        state: String,
        /// What was attempted.
        operation: &'static str,
    },
    /// The node is not part of the job's open phase.
    #[error("node '{node}' is not invited to an open phase of job '{job}'")]
    NotAMember {
        /// Job id.
        job: JobId,
        /// The node.
        node: NodeId,
    },
    /// The job has ended and the engine released its model
    /// ([`Engine::release_finished_job`]): the job store holds it, at this version.
    #[error("job '{job}' has ended; its model (version {model_version}) is in the job store")]
    ModelInStore {
        /// Job id.
        job: JobId,
        /// The final model's version, to read from the store.
        model_version: u32,
    },
    /// The requested global model version is no longer (or not yet) held.
    #[error("job '{job}' holds model version {current}, not {requested}")]
    ModelVersionUnavailable {
        /// Job id.
        job: JobId,
        /// Version asked for.
        requested: u32,
        /// Version held.
        current: u32,
    },
}

/// The durable part of a job: enough to resume from its last committed phase.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JobSnapshot<D> {
    /// Job id.
    pub id: JobId,
    /// The plan.
    pub plan: JobPlan,
    /// Caller's opaque description of the job.
    pub descriptor: D,
    /// Lifecycle state.
    pub state: JobState,
    /// Current global model.
    pub global: Arc<Vec<f32>>,
    /// Its version.
    pub model_version: u32,
    /// Server optimiser state.
    pub optimizer: ServerOptimizer,
    /// Summed feature statistics, once round 0 completed.
    pub feature_statistics: Option<Arc<Vec<f64>>>,
    /// Completed rounds.
    pub history: Vec<RoundRecord>,
    /// The next phase to run.
    pub cursor: (u32, Phase),
    /// Training sums of the current round, kept between its two phases.
    pub pending_train: Option<RoundRecord>,
}

#[derive(Debug)]
struct OpenPhase {
    attempt: u32,
    invited: BTreeSet<NodeId>,
    replied: BTreeSet<NodeId>,
    /// Nodes that answered by declining: replied, but not in the sums.
    declined: BTreeSet<NodeId>,
    deadline: Instant,
    aggregation: PhaseAggregation,
    /// A release phase's public parameters, derived when it opened.
    release_parameters: Option<Arc<Vec<f64>>>,
}

/// How the open phase sums replies.
#[derive(Debug)]
enum PhaseAggregation {
    Plain(Accumulator),
    Secure(Box<SecureRound>),
}

/// What makes a submission a retry of an accepted one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct AcceptedKey {
    round: u32,
    phase: Phase,
    /// 0 for plain replies, which survive phase extensions.
    attempt: u32,
    step: Option<SecureStep>,
    node: NodeId,
}

#[derive(Debug)]
struct Job<D> {
    durable: JobSnapshot<D>,
    /// The phase under way; not durable, since a restarted coordinator
    /// re-runs the phase from the last committed state.
    open: Option<OpenPhase>,
    /// Keys accepted during this process's life, for idempotent retries.
    accepted: HashSet<AcceptedKey>,
    /// Since when the job has had too few eligible nodes to open its next
    /// phase: set (and announced once, so a waiting job does not flood the
    /// event stream) the first time, cleared when a phase opens. The job
    /// fails once it has waited `timeouts.wait_for_nodes`. Not durable: a
    /// coordinator restart starts the wait again.
    waiting_since: Option<Instant>,
    /// Secure instances of the current phase that failed so far.
    failed_attempts: u32,
    /// Nodes whose input for the current phase left them (a masked input
    /// accepted in an attempt, or a node saying so after a restart). No
    /// later attempt of the phase includes them: a second sum over a
    /// different set would reveal their differences.
    released: BTreeSet<NodeId>,
    /// The cohort size the released inputs were priced for.
    released_cohort: usize,
    /// Nodes that declined the current phase or never answered its first
    /// step: a retry of it goes on without them (a small cohort's threshold
    /// tolerates few absences, and a node that said no once says no again).
    declined: BTreeSet<NodeId>,
    /// Events raised while handling a submission, emitted at the next step.
    pending_events: Vec<EventKind>,
    /// The job has ended and its final snapshot is in the caller's store, so
    /// the engine dropped its model, optimiser state and round history
    /// ([`Engine::release_finished_job`]): only its summary (plan,
    /// descriptor, state, feature sums, model version, the number of
    /// completed rounds) stays in memory.
    model_released: bool,
    /// Rounds the job completed, once its history is in the store only.
    rounds_in_store: u32,
    /// The secure training instance that finished the current round, so its
    /// evaluation can run as a continuation of it (one step, no new keys).
    /// Not durable: after a restart the evaluation runs the full protocol.
    finished_training: Option<(u32, FinishedInstance)>,
}

#[derive(Debug, Clone)]
struct NodeState {
    last_seen: Instant,
    /// Identity key and certificate, required for secure aggregation.
    credential: Option<NodeCredential>,
}

/// What a node registered to take part in secure aggregation.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeCredential {
    /// The Ed25519 key it signs protocol messages with.
    pub identity_key: [u8; 32],
    /// Its certificate (DER), relayed to its peers; empty in insecure development.
    pub certificate_der: Arc<Vec<u8>>,
}

/// One registered node as operators see it: when it was last heard from,
/// and whether that is within the liveness window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeActivity {
    /// The node.
    pub node: NodeId,
    /// Time since its registration or last heartbeat, task fetch or reply.
    pub silent_for: Duration,
    /// Heard from within `EngineConfig::node_liveness`: invited to new phases.
    pub live: bool,
    /// Registered with a secure-aggregation credential.
    pub secure_capable: bool,
}

/// The coordinator's state machine. `D` is the caller's job descriptor.
#[derive(Debug)]
pub struct Engine<D> {
    config: EngineConfig,
    nodes: BTreeMap<NodeId, NodeState>,
    jobs: BTreeMap<JobId, Job<D>>,
    events: VecDeque<EngineEvent>,
    next_job_number: u64,
    /// Central-mode Gaussian noise: ChaCha20 keyed from the OS by the caller
    /// (seeded only in tests). Without it, central-noise jobs fail closed.
    noise: Option<ChaCha20Rng>,
}

impl<D: Clone + ReleaseDirector> Engine<D> {
    /// An engine with no nodes and no jobs.
    pub fn new(config: EngineConfig) -> Self {
        Self {
            config,
            nodes: BTreeMap::new(),
            jobs: BTreeMap::new(),
            events: VecDeque::new(),
            next_job_number: 1,
            noise: None,
        }
    }

    /// Gives the engine its generator for central-mode noise.
    pub fn set_noise_source(&mut self, rng: ChaCha20Rng) {
        self.noise = Some(rng);
    }

    /// Stops a job that has not ended, for a reason outside the engine (a
    /// ledger that cannot record a charge): it fails with that reason.
    pub fn fail_job(
        &mut self,
        job: &str,
        reason: String,
        now: Instant,
    ) -> Result<JobStatus, EngineError> {
        let entry = self.job_mut(job)?;
        if entry.durable.state.is_terminal() {
            return Err(wrong_state(&entry.durable, "fail"));
        }
        entry.durable.state = JobState::Failed {
            reason: reason.clone(),
        };
        entry.open = None;
        self.emit(job, EventKind::Failed { reason });
        self.drive(now);
        self.status(job)
    }

    /// Refuses to run `round` of a running job, whose training phase may just
    /// have opened: nothing of the round has been released. The job ends as
    /// succeeded with the rounds it completed, or fails if it completed none.
    pub fn refuse_round(
        &mut self,
        job: &str,
        round: u32,
        reason: String,
        now: Instant,
    ) -> Result<JobStatus, EngineError> {
        let entry = self.job_mut(job)?;
        if entry.durable.state != JobState::Running || entry.durable.cursor.0 != round {
            return Err(wrong_state(&entry.durable, "refuse a round of"));
        }
        entry.open = None;
        let completed = entry.durable.history.len();
        let end = if completed > 0 {
            entry.durable.state = JobState::Succeeded;
            EventKind::Succeeded
        } else {
            let reason = format!("round {round} refused: {reason}");
            entry.durable.state = JobState::Failed {
                reason: reason.clone(),
            };
            EventKind::Failed { reason }
        };
        self.emit(job, EventKind::RoundRefused { round, reason });
        self.emit(job, end);
        self.drive(now);
        self.status(job)
    }

    /// An engine resuming the given jobs from their snapshots. Open phases
    /// are re-run; nodes must register again.
    pub fn restore(config: EngineConfig, snapshots: Vec<JobSnapshot<D>>) -> Self {
        let mut engine = Self::new(config);
        for snapshot in snapshots {
            let number = snapshot
                .id
                .strip_prefix("job-")
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
            engine.next_job_number = engine.next_job_number.max(number + 1);
            engine.jobs.insert(
                snapshot.id.clone(),
                Job {
                    durable: snapshot,
                    open: None,
                    accepted: HashSet::new(),
                    waiting_since: None,
                    failed_attempts: 0,
                    released: BTreeSet::new(),
                    released_cohort: 0,
                    declined: BTreeSet::new(),
                    pending_events: Vec::new(),
                    model_released: false,
                    rounds_in_store: 0,
                    finished_training: None,
                },
            );
        }
        // Jobs that ended are read from the store they were restored from:
        // they keep only their summary in memory, as if released when they ended.
        let ended: Vec<JobId> = engine
            .jobs
            .values()
            .filter(|job| job.durable.state.is_terminal())
            .map(|job| job.durable.id.clone())
            .collect();
        for job in ended {
            let _ = engine.release_finished_job(&job);
        }
        engine
    }

    /// Records a node as registered and alive (again, after a restart), with
    /// the credential it takes part in secure aggregation with.
    pub fn register_node(&mut self, node: &str, credential: Option<NodeCredential>, now: Instant) {
        self.nodes.insert(
            node.to_owned(),
            NodeState {
                last_seen: now,
                credential,
            },
        );
        self.drive(now);
    }

    /// Every registered node's activity at `now`, in node order.
    pub fn node_activity(&self, now: Instant) -> Vec<NodeActivity> {
        self.nodes
            .iter()
            .map(|(node, state)| {
                let silent_for = now.saturating_duration_since(state.last_seen);
                NodeActivity {
                    node: node.clone(),
                    silent_for,
                    live: silent_for <= self.config.node_liveness,
                    secure_capable: state.credential.is_some(),
                }
            })
            .collect()
    }

    /// Marks a registered node alive.
    pub fn heartbeat(&mut self, node: &str, now: Instant) -> Result<(), EngineError> {
        self.touch(node, now)?;
        self.drive(now);
        Ok(())
    }

    /// Adds a job in the `Pending` state.
    pub fn submit_job(
        &mut self,
        plan: JobPlan,
        descriptor: D,
        initial_parameters: Vec<f32>,
        now: Instant,
    ) -> Result<JobId, EngineError> {
        plan.validate()?;
        if initial_parameters.len() != plan.parameter_count {
            return Err(PlanError::InitialModelShape {
                expected: plan.parameter_count,
                actual: initial_parameters.len(),
            }
            .into());
        }
        if let Some(index) = initial_parameters.iter().position(|v| !v.is_finite()) {
            return Err(PlanError::InitialModelNotFinite { index }.into());
        }
        let id = format!("job-{}", self.next_job_number);
        self.next_job_number += 1;
        let optimizer = ServerOptimizer::new(plan.strategy, plan.parameter_count);
        let plan_for_cursor = plan.clone();
        let durable = JobSnapshot {
            id: id.clone(),
            plan,
            descriptor,
            state: JobState::Pending,
            global: Arc::new(initial_parameters),
            model_version: 0,
            optimizer,
            feature_statistics: None,
            history: Vec::new(),
            cursor: first_position(&plan_for_cursor),
            pending_train: None,
        };
        self.jobs.insert(
            id.clone(),
            Job {
                durable,
                open: None,
                accepted: HashSet::new(),
                waiting_since: None,
                failed_attempts: 0,
                released: BTreeSet::new(),
                released_cohort: 0,
                declined: BTreeSet::new(),
                pending_events: Vec::new(),
                model_released: false,
                rounds_in_store: 0,
                finished_training: None,
            },
        );
        self.emit(&id, EventKind::Submitted);
        self.drive(now);
        Ok(id)
    }

    /// Moves a pending job to `Running`.
    pub fn start_job(&mut self, job: &str, now: Instant) -> Result<JobStatus, EngineError> {
        let entry = self.job_mut(job)?;
        if entry.durable.state != JobState::Pending {
            return Err(wrong_state(&entry.durable, "start"));
        }
        entry.durable.state = JobState::Running;
        self.emit(job, EventKind::Started);
        self.drive(now);
        self.status(job)
    }

    /// Cancels a job that has not ended.
    pub fn cancel_job(&mut self, job: &str, now: Instant) -> Result<JobStatus, EngineError> {
        let entry = self.job_mut(job)?;
        if entry.durable.state.is_terminal() {
            return Err(wrong_state(&entry.durable, "cancel"));
        }
        entry.durable.state = JobState::Cancelled;
        entry.open = None;
        self.emit(job, EventKind::Cancelled);
        self.drive(now);
        self.status(job)
    }

    /// The operator's view of a job.
    pub fn status(&self, job: &str) -> Result<JobStatus, EngineError> {
        self.status_after(job, 0)
    }

    /// [`Engine::status`] with only the completed rounds after the first
    /// `known` in its history: what a follower that has seen those needs,
    /// without copying a long job's whole history on every event.
    pub fn status_after(&self, job: &str, known: usize) -> Result<JobStatus, EngineError> {
        let entry = self.job(job)?;
        let durable = &entry.durable;
        let completed_rounds = if entry.model_released {
            entry.rounds_in_store
        } else {
            durable.history.len() as u32
        };
        let running = durable.state == JobState::Running;
        let waiting_for_nodes = (running && entry.open.is_none()).then(|| {
            let live = self.live_nodes(None).len() as u32;
            durable.plan.min_participants.saturating_sub(live)
        });
        Ok(JobStatus {
            job: durable.id.clone(),
            state: durable.state.clone(),
            completed_rounds,
            total_rounds: durable.plan.rounds,
            current: running.then_some(durable.cursor),
            waiting_for_nodes,
            history: durable.history[known.min(durable.history.len())..].to_vec(),
            history_in_store: entry.model_released,
        })
    }

    /// Ids of every job, oldest first.
    pub fn job_ids(&self) -> Vec<JobId> {
        let mut ids: Vec<_> = self.jobs.keys().cloned().collect();
        ids.sort_by_key(|id| {
            id.strip_prefix("job-")
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(u64::MAX)
        });
        ids
    }

    /// The caller's descriptor of a job.
    pub fn descriptor(&self, job: &str) -> Result<&D, EngineError> {
        Ok(&self.job(job)?.durable.descriptor)
    }

    /// The plan of a job.
    pub fn plan(&self, job: &str) -> Result<&JobPlan, EngineError> {
        Ok(&self.job(job)?.durable.plan)
    }

    /// Summed feature statistics, once the feature-statistics phase completed.
    pub fn feature_statistics(&self, job: &str) -> Result<Option<Arc<Vec<f64>>>, EngineError> {
        Ok(self.job(job)?.durable.feature_statistics.clone())
    }

    /// The global model at exactly `version`, for a task's download.
    pub fn global_model(&self, job: &str, version: u32) -> Result<Arc<Vec<f32>>, EngineError> {
        let entry = self.job(job)?;
        let durable = &entry.durable;
        if entry.model_released {
            return Err(EngineError::ModelInStore {
                job: job.to_owned(),
                model_version: durable.model_version,
            });
        }
        if durable.model_version != version {
            return Err(EngineError::ModelVersionUnavailable {
                job: job.to_owned(),
                requested: version,
                current: durable.model_version,
            });
        }
        Ok(Arc::clone(&durable.global))
    }

    /// The global model `version` for `node`: only a node invited to the
    /// job's open phase may download it, and only while the job runs, so a
    /// model whose round failed to be charged (the job then fails) or a
    /// job the node is not part of is never handed out.
    pub fn model_for_node(
        &self,
        job: &str,
        node: &str,
        version: u32,
    ) -> Result<Arc<Vec<f32>>, EngineError> {
        let entry = self.job(job)?;
        let invited = entry
            .open
            .as_ref()
            .is_some_and(|open| match &open.aggregation {
                PhaseAggregation::Plain(_) => open.invited.contains(node),
                PhaseAggregation::Secure(secure) => secure.cohort().any(|member| member == node),
            });
        if entry.durable.state != JobState::Running || !invited {
            return Err(EngineError::NotAMember {
                job: job.to_owned(),
                node: node.to_owned(),
            });
        }
        self.global_model(job, version)
    }

    /// The final model of a job that succeeded, while the engine holds it:
    /// once released ([`Self::release_finished_job`]) this is
    /// [`EngineError::ModelInStore`] with the version to read from the store.
    pub fn final_model(&self, job: &str) -> Result<Arc<Vec<f32>>, EngineError> {
        let version = self.final_model_version(job)?;
        let entry = self.job(job)?;
        if entry.model_released {
            return Err(EngineError::ModelInStore {
                job: job.to_owned(),
                model_version: version,
            });
        }
        Ok(Arc::clone(&entry.durable.global))
    }

    /// The version of a succeeded job's final model (the job store's
    /// checkpoint of that version is the model), whether or not the engine
    /// still holds it.
    pub fn final_model_version(&self, job: &str) -> Result<u32, EngineError> {
        let durable = &self.job(job)?.durable;
        if durable.state != JobState::Succeeded {
            return Err(wrong_state(durable, "export its model"));
        }
        Ok(durable.model_version)
    }

    /// The durable state of a job, for persistence. A job whose state was
    /// released has no snapshot to give (it would lack the model the store
    /// already holds): [`EngineError::ModelInStore`].
    pub fn snapshot(&self, job: &str) -> Result<JobSnapshot<D>, EngineError> {
        let entry = self.job(job)?;
        if entry.model_released {
            return Err(EngineError::ModelInStore {
                job: job.to_owned(),
                model_version: entry.durable.model_version,
            });
        }
        Ok(entry.durable.clone())
    }

    /// Drops what a job that has ended no longer needs in memory: its global
    /// model, server-optimiser state and round history (and whatever of its
    /// phases and retries remained). Call it once the job's final snapshot
    /// is in the store: a finished job then costs the engine only its
    /// summary (plan, descriptor, state, summed feature statistics, model
    /// version, number of rounds); its model is read from the store's
    /// checkpoint of [`Self::final_model_version`] and its history from the
    /// store's rounds ([`JobStatus::history_in_store`]). Without this, every
    /// job ever run would keep its model and its rounds' evaluation
    /// histograms in memory for the life of the process.
    pub fn release_finished_job(&mut self, job: &str) -> Result<(), EngineError> {
        let entry = self.job_mut(job)?;
        if !entry.durable.state.is_terminal() {
            return Err(wrong_state(&entry.durable, "release the state of"));
        }
        if !entry.model_released {
            entry.rounds_in_store = entry.durable.history.len() as u32;
        }
        entry.model_released = true;
        entry.durable.history = Vec::new();
        entry.open = None;
        entry.durable.global = Arc::new(Vec::new());
        entry.durable.optimizer.release();
        entry.durable.pending_train = None;
        entry.accepted = HashSet::new();
        entry.released = BTreeSet::new();
        entry.finished_training = None;
        entry.declined = BTreeSet::new();
        entry.pending_events = Vec::new();
        Ok(())
    }

    /// What the engine holds in memory, counted: for tests and benches that
    /// check a finished job leaves nothing heavy behind.
    pub fn footprint(&self) -> EngineFootprint {
        let mut footprint = EngineFootprint {
            jobs: self.jobs.len(),
            nodes: self.nodes.len(),
            queued_events: self.events.len(),
            ..EngineFootprint::default()
        };
        for job in self.jobs.values() {
            let durable = &job.durable;
            if durable.state.is_terminal() {
                footprint.finished_jobs += 1;
            }
            footprint.model_values += durable.global.len();
            footprint.optimizer_values += durable.optimizer.retained_values();
            footprint.retry_keys += job.accepted.len();
            footprint.open_phases += usize::from(job.open.is_some());
            footprint.history_values += durable
                .history
                .iter()
                .chain(durable.pending_train.iter())
                .map(RoundRecord::retained_values)
                .sum::<usize>();
        }
        footprint
    }

    /// The next task for `node`, if one of its invitations is unanswered: of all its jobs'
    /// open tasks, the one whose phase (or secure step) closes first, ties going to the
    /// lower job id. A node answers one task at a time, so with jobs side by side this
    /// order decides which phase waits: earliest deadline first meets every deadline
    /// whenever any order could, where job-id order let a later job's open phase run out
    /// while its nodes served the earlier job's next step, which had time to spare.
    pub fn next_task(
        &mut self,
        node: &str,
        now: Instant,
    ) -> Result<Option<TaskAssignment>, EngineError> {
        self.touch(node, now)?;
        self.drive(now);
        let mut earliest: Option<TaskAssignment> = None;
        let mut offer = |assignment: TaskAssignment| {
            if earliest
                .as_ref()
                .is_none_or(|best| assignment.deadline < best.deadline)
            {
                earliest = Some(assignment);
            }
        };
        for job in self.jobs.values() {
            let Some(open) = &job.open else { continue };
            let (round, phase) = job.durable.cursor;
            let assignment = |deadline, secure| TaskAssignment {
                job: job.durable.id.clone(),
                round,
                phase,
                model_version: job.durable.model_version,
                deadline,
                secure,
                release_parameters: open.release_parameters.clone(),
            };
            match &open.aggregation {
                PhaseAggregation::Plain(_) => {
                    if open.invited.contains(node) && !open.replied.contains(node) {
                        offer(assignment(open.deadline, None));
                    }
                }
                PhaseAggregation::Secure(secure) => {
                    if let Some(task) = secure.task_for(node) {
                        offer(assignment(secure.deadline(), Some(task)));
                    }
                }
            }
        }
        Ok(earliest)
    }

    /// Folds in a node's reply, or refuses it with a named reason.
    pub fn submit(
        &mut self,
        submission: &Submission,
        now: Instant,
    ) -> Result<SubmitOutcome, RejectReason> {
        let outcome = self.try_submit(submission, now);
        if let Err(reason) = &outcome {
            if self.jobs.contains_key(&submission.key.job) {
                self.emit(
                    &submission.key.job,
                    EventKind::ReplyRejected {
                        node: submission.node.clone(),
                        round: submission.key.round,
                        phase: submission.key.phase,
                        reason: reason.clone(),
                    },
                );
            }
        }
        self.drive(now);
        outcome
    }

    /// Closes phases whose deadline has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.drive(now);
    }

    /// The earliest deadline the caller must wake up for.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.jobs
            .values()
            .filter_map(|job| job.open.as_ref())
            .map(|open| match &open.aggregation {
                PhaseAggregation::Plain(_) => open.deadline,
                PhaseAggregation::Secure(secure) => secure.deadline(),
            })
            .min()
    }

    /// The next progress event, oldest first.
    pub fn poll_event(&mut self) -> Option<EngineEvent> {
        self.events.pop_front()
    }

    fn try_submit(
        &mut self,
        submission: &Submission,
        now: Instant,
    ) -> Result<SubmitOutcome, RejectReason> {
        let node = submission.node.as_str();
        let key = &submission.key;
        if !self.nodes.contains_key(node) {
            return Err(RejectReason::UnknownNode {
                node: node.to_owned(),
            });
        }
        if let Some(state) = self.nodes.get_mut(node) {
            state.last_seen = now;
        }
        let job = self
            .jobs
            .get_mut(&key.job)
            .ok_or_else(|| RejectReason::UnknownJob {
                job: key.job.clone(),
            })?;
        let accepted_key = AcceptedKey {
            round: key.round,
            phase: key.phase,
            attempt: match &submission.body {
                SubmissionBody::Secure { attempt, .. } => *attempt,
                _ => 0,
            },
            step: match &submission.body {
                SubmissionBody::Secure { step, .. } => Some(*step),
                _ => None,
            },
            node: node.to_owned(),
        };
        if job.accepted.contains(&accepted_key) {
            return Ok(SubmitOutcome::Duplicate);
        }
        let durable = &job.durable;
        let open = match &mut job.open {
            Some(open) if durable.cursor == (key.round, key.phase) => open,
            _ => {
                return Err(RejectReason::PhaseClosed {
                    job: key.job.clone(),
                    round: key.round,
                    phase: key.phase,
                    current: describe_position(durable, job.open.is_some()),
                });
            }
        };
        let not_invited = || RejectReason::NotInvited {
            node: node.to_owned(),
            job: key.job.clone(),
            round: key.round,
            phase: key.phase,
        };
        let mode_name = durable.plan.aggregation.name();
        match (&submission.body, &mut open.aggregation) {
            (SubmissionBody::Declined { code }, aggregation) => {
                match aggregation {
                    PhaseAggregation::Plain(_) => {
                        if !open.invited.contains(node) {
                            return Err(not_invited());
                        }
                        open.replied.insert(node.to_owned());
                        open.declined.insert(node.to_owned());
                    }
                    PhaseAggregation::Secure(secure) => {
                        if !secure.cohort().any(|member| member == node) {
                            return Err(not_invited());
                        }
                        secure.withdraw(node);
                        // A node that lost its state or failed locally may
                        // well take part in a retry; any other "no" stands.
                        if !matches!(code, DeclineCode::LostState | DeclineCode::LocalFailure) {
                            job.declined.insert(node.to_owned());
                        }
                        if *code == DeclineCode::AlreadyReleased {
                            // Its input left in an attempt this engine does
                            // not remember (before a restart): it is out of
                            // every attempt of this phase.
                            job.released.insert(node.to_owned());
                            job.released_cohort = job.released_cohort.max(secure.cohort().count());
                        }
                    }
                }
                job.pending_events.push(EventKind::NodeDeclined {
                    node: node.to_owned(),
                    round: key.round,
                    phase: key.phase,
                    code: *code,
                });
            }
            (
                SubmissionBody::Plain {
                    weight,
                    statistics,
                    vector,
                },
                PhaseAggregation::Plain(accumulator),
            ) => {
                if !open.invited.contains(node) {
                    return Err(not_invited());
                }
                let shape = durable.plan.reply_shape(key.round, key.phase);
                Accumulator::validate(shape, *weight, statistics, vector)?;
                match durable.plan.partner_privacy {
                    // The trusted coordinator bounds each partner's influence
                    // itself before adding central noise.
                    PartnerPrivacy::Central {
                        clip_norm,
                        max_weight,
                        ..
                    } if !vector.is_empty() => {
                        let mut clipped = vector.clone();
                        clip_update(&mut clipped, clip_norm).map_err(|_| {
                            RejectReason::NonFinite {
                                what: "model delta",
                                index: 0,
                            }
                        })?;
                        accumulator.add(weight.min(max_weight), statistics, &clipped);
                    }
                    _ => accumulator.add(*weight, statistics, vector),
                }
                open.replied.insert(node.to_owned());
            }
            (
                SubmissionBody::Secure {
                    attempt,
                    step,
                    payload,
                },
                PhaseAggregation::Secure(secure),
            ) => {
                if !secure.cohort().any(|member| member == node) {
                    return Err(not_invited());
                }
                if let Err(reason) = secure.accept(node, *attempt, *step, payload) {
                    // A node whose message the protocol refused cannot take
                    // the next step, so stop waiting for it. A message for
                    // another step or attempt is merely late.
                    if *attempt == secure.attempt() && *step == secure.step() {
                        secure.withdraw(node);
                    }
                    return Err(reason);
                }
                if matches!(
                    step,
                    SecureStep::MaskedInput | SecureStep::ContinuationInput
                ) {
                    job.released.insert(node.to_owned());
                    job.released_cohort = job.released_cohort.max(secure.cohort().count());
                }
            }
            (body, _) => {
                return Err(RejectReason::WrongMode {
                    job: key.job.clone(),
                    expected: mode_name,
                    actual: match body {
                        SubmissionBody::Secure { .. } => "secure",
                        _ => "plain",
                    },
                });
            }
        }
        job.accepted.insert(accepted_key);
        Ok(SubmitOutcome::Accepted)
    }

    /// Advances every running job as far as `now` allows.
    fn drive(&mut self, now: Instant) {
        let ids: Vec<JobId> = self.jobs.keys().cloned().collect();
        for id in ids {
            // Each step either closes a phase or opens one, so a job needs at
            // most a handful of steps; the bound guards against a logic slip
            // turning into a busy loop.
            for _ in 0..8 {
                if !self.step(&id, now) {
                    break;
                }
            }
        }
        self.forget_finished_jobs_retries();
    }

    /// A job that has ended takes no more submissions, so what it kept to recognise retries
    /// (every accepted key of every phase, step and node) is dropped: otherwise the engine
    /// grows with every job it has ever run (the soak's coordinator did, by about 0.8 MiB a
    /// job at 100 nodes). Its snapshot (state, history, model) stays; a late retry is then
    /// refused as for a closed phase instead of answered as a duplicate.
    fn forget_finished_jobs_retries(&mut self) {
        for job in self.jobs.values_mut() {
            let finished = job.durable.state.is_terminal() && job.open.is_none();
            if finished && !job.accepted.is_empty() {
                job.accepted = HashSet::new();
                job.released = BTreeSet::new();
                job.declined = BTreeSet::new();
            }
        }
    }

    /// One transition of one job; returns whether anything changed.
    fn step(&mut self, id: &str, now: Instant) -> bool {
        let live = self.live_nodes(Some(now));
        let secure_candidates = self.secure_candidates(&live);
        let Some(job) = self.jobs.get_mut(id) else {
            return false;
        };
        if job.durable.state != JobState::Running {
            return false;
        }
        let noise = &mut self.noise;
        let mut events = std::mem::take(&mut job.pending_events);
        let changed = match &mut job.open {
            Some(OpenPhase {
                aggregation: PhaseAggregation::Secure(secure),
                ..
            }) => {
                if secure.step_complete(now) {
                    let outcome = secure.advance(now);
                    let step = secure.step();
                    let remaining = secure.cohort().filter(|node| secure.awaits(node)).count();
                    match outcome {
                        StepOutcome::Continue => {
                            let (round, phase) = job.durable.cursor;
                            events.push(EventKind::SecureStepOpened {
                                round,
                                phase,
                                step,
                                remaining: remaining as u32,
                            });
                        }
                        StepOutcome::Finished { sums, contributors } => {
                            let (round, phase) = job.durable.cursor;
                            job.finished_training = secure
                                .finished_instance()
                                .filter(|_| phase == Phase::Train)
                                .map(|instance| (round, instance));
                            finish_secure_phase(job, sums, contributors, noise, &mut events);
                        }
                        StepOutcome::Failed(reason) => {
                            fail_secure_attempt(job, reason, &mut events);
                        }
                    }
                    true
                } else {
                    false
                }
            }
            Some(open) => {
                let everyone_replied = open.replied.len() == open.invited.len();
                if everyone_replied || now >= open.deadline {
                    close_phase(job, &live, now, noise, &mut events);
                    true
                } else {
                    false
                }
            }
            None => open_phase(job, &live, &secure_candidates, now, &mut events),
        };
        for kind in events {
            self.emit(id, kind);
        }
        changed
    }

    fn live_nodes(&self, now: Option<Instant>) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, state)| match now {
                Some(now) => {
                    now.saturating_duration_since(state.last_seen) <= self.config.node_liveness
                }
                None => true,
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Live nodes that can take part in secure aggregation, with their credentials.
    fn secure_candidates(&self, live: &[NodeId]) -> Vec<CohortMember> {
        live.iter()
            .filter_map(|node| {
                let credential = self.nodes.get(node)?.credential.as_ref()?;
                Some(CohortMember {
                    node: node.clone(),
                    identity_key: credential.identity_key,
                    certificate_der: Arc::clone(&credential.certificate_der),
                })
            })
            .collect()
    }

    fn touch(&mut self, node: &str, now: Instant) -> Result<(), EngineError> {
        let state = self
            .nodes
            .get_mut(node)
            .ok_or_else(|| EngineError::UnknownNode {
                node: node.to_owned(),
            })?;
        state.last_seen = now;
        Ok(())
    }

    fn job(&self, job: &str) -> Result<&Job<D>, EngineError> {
        self.jobs.get(job).ok_or_else(|| EngineError::UnknownJob {
            job: job.to_owned(),
        })
    }

    fn job_mut(&mut self, job: &str) -> Result<&mut Job<D>, EngineError> {
        self.jobs
            .get_mut(job)
            .ok_or_else(|| EngineError::UnknownJob {
                job: job.to_owned(),
            })
    }

    fn emit(&mut self, job: &str, kind: EventKind) {
        self.events.push_back(EngineEvent {
            job: job.to_owned(),
            kind,
        });
    }
}

fn wrong_state<D>(durable: &JobSnapshot<D>, operation: &'static str) -> EngineError {
    EngineError::WrongState {
        job: durable.id.clone(),
        state: format!("{:?}", durable.state).to_lowercase(),
        operation,
    }
}

fn describe_position<D>(durable: &JobSnapshot<D>, open: bool) -> String {
    match durable.state {
        JobState::Running => {
            let (round, phase) = durable.cursor;
            let status = if open { "open" } else { "waiting for nodes" };
            format!("round {round} phase {phase}, {status}")
        }
        ref other => format!("{other:?}").to_lowercase(),
    }
}

/// Where a new job starts: the feature statistics of round 0 for training,
/// the first release for an analysis.
fn first_position(plan: &JobPlan) -> (u32, Phase) {
    if plan.is_analysis() {
        (1, Phase::Release)
    } else {
        (0, Phase::FeatureStats)
    }
}

/// The sums an analysis job released so far, in release order.
fn released_sums<D>(durable: &JobSnapshot<D>) -> Vec<&[f64]> {
    durable
        .history
        .iter()
        .map(|record| record.release_sum.as_slice())
        .collect()
}

fn phase_timeout(plan: &JobPlan, phase: Phase) -> Duration {
    match phase {
        // Releases are statistics phases, like the feature statistics.
        Phase::FeatureStats | Phase::Release => plan.timeouts.feature_stats,
        Phase::Train => plan.timeouts.train,
        Phase::Evaluate => plan.timeouts.evaluate,
    }
}

/// Picks up to `max_participants` live nodes, rotating the start by round so
/// that, when more nodes are live than invited, every node gets its turn.
fn select_participants(plan: &JobPlan, live: &[NodeId], round: u32) -> Vec<NodeId> {
    if live.is_empty() {
        return Vec::new();
    }
    let start = round as usize % live.len();
    live.iter()
        .cycle()
        .skip(start)
        .take(live.len().min(plan.max_participants as usize))
        .cloned()
        .collect()
}

fn open_phase<D: ReleaseDirector>(
    job: &mut Job<D>,
    live: &[NodeId],
    secure_candidates: &[CohortMember],
    now: Instant,
    events: &mut Vec<EventKind>,
) -> bool {
    let plan = &job.durable.plan;
    let (round, phase) = job.durable.cursor;
    let mut eligible: Vec<NodeId> = match &plan.aggregation {
        AggregationMode::Plain => live.to_vec(),
        AggregationMode::Secure(_) => secure_candidates
            .iter()
            .map(|member| member.node.clone())
            .collect(),
    };
    // Only nodes whose update is in the round's aggregate evaluate its model:
    // anyone else would release an evaluation the round did not pay for.
    if phase == Phase::Evaluate {
        // (A snapshot from before contributors were recorded lists none.)
        if let Some(train) = job
            .durable
            .pending_train
            .as_ref()
            .filter(|train| !train.contributors.is_empty())
        {
            eligible.retain(|node| train.contributors.contains(node));
        }
    }
    // A node whose input for this phase already left takes part in no
    // later attempt: two sums over sets that differ by one node give that
    // node's input, whatever the noise.
    eligible.retain(|node| !job.released.contains(node) && !job.declined.contains(node));
    let invited = select_participants(plan, &eligible, round);
    if (invited.len() as u32) < plan.min_participants {
        if !job.released.is_empty() {
            let reason = format!(
                "{} nodes' inputs left in an attempt that did not finish and only {} other nodes are eligible; the phase needs {}",
                job.released.len(),
                invited.len(),
                plan.min_participants
            );
            abandon_phase(job, reason, events);
            return true;
        }
        if !job.declined.is_empty() {
            let reason = format!(
                "round {round} phase {phase}: {} nodes declined or went silent and only {} others are eligible; the phase needs {}",
                job.declined.len(),
                invited.len(),
                plan.min_participants
            );
            job.durable.state = JobState::Failed {
                reason: reason.clone(),
            };
            events.push(EventKind::Failed { reason });
            return true;
        }
        match job.waiting_since {
            None => {
                job.waiting_since = Some(now);
                events.push(EventKind::WaitingForNodes {
                    live: eligible.len() as u32,
                    needed: plan.min_participants,
                });
            }
            Some(since) if now.saturating_duration_since(since) >= plan.timeouts.wait_for_nodes => {
                let reason = format!(
                    "round {round} phase {phase}: waited {} s for nodes and only {} are eligible; the phase needs {} (timeouts.wait_for_nodes_secs)",
                    plan.timeouts.wait_for_nodes.as_secs(),
                    eligible.len(),
                    plan.min_participants
                );
                job.waiting_since = None;
                job.durable.state = JobState::Failed {
                    reason: reason.clone(),
                };
                events.push(EventKind::Failed { reason });
                return true;
            }
            Some(_) => {}
        }
        return false;
    }
    job.waiting_since = None;
    let release_parameters = if phase == Phase::Release {
        let index = round.saturating_sub(1) as usize;
        let released = released_sums(&job.durable);
        match job.durable.descriptor.release_parameters(index, &released) {
            Ok(parameters) => Some(Arc::new(parameters)),
            Err(error) => {
                let reason = format!("round {round} phase {phase}: {error}");
                job.durable.state = JobState::Failed {
                    reason: reason.clone(),
                };
                events.push(EventKind::Failed { reason });
                return true;
            }
        }
    } else {
        None
    };
    let plan = &job.durable.plan;
    let attempt = job.failed_attempts + 1;
    let deadline = now + phase_timeout(plan, phase);
    let shape = plan.reply_shape(round, phase);
    let aggregation = match &plan.aggregation {
        AggregationMode::Plain => PhaseAggregation::Plain(Accumulator::new(shape)),
        AggregationMode::Secure(settings) => {
            let cohort: Vec<CohortMember> = secure_candidates
                .iter()
                .filter(|member| invited.contains(&member.node))
                .cloned()
                .collect();
            let position = SecureRoundPosition {
                job: &job.durable.id,
                round,
                phase,
                attempt,
            };
            // The evaluation continues the round's training instance when
            // exactly its survivors are invited, on the first attempt; a
            // retry (someone did not send) or any other cohort runs the
            // full protocol, which tolerates dropouts.
            let continued = job
                .finished_training
                .take()
                .filter(|(trained_round, instance)| {
                    phase == Phase::Evaluate
                        && *trained_round == round
                        && attempt == 1
                        && instance.survivors.len() >= MIN_SECURE_COHORT
                        && instance.survivors == cohort
                })
                .map(|(_, instance)| instance);
            let opened = match &continued {
                Some(instance) => SecureRound::continuation(
                    position,
                    instance,
                    shape,
                    settings,
                    &plan.partner_privacy,
                    deadline,
                ),
                None => SecureRound::open(
                    position,
                    cohort,
                    plan.min_participants as usize,
                    shape,
                    settings,
                    &plan.partner_privacy,
                    deadline,
                ),
            };
            match opened {
                Ok(secure) => PhaseAggregation::Secure(Box::new(secure)),
                Err(reason) => {
                    let reason = format!("round {round} phase {phase}: {reason}");
                    job.durable.state = JobState::Failed {
                        reason: reason.clone(),
                    };
                    events.push(EventKind::Failed { reason });
                    return true;
                }
            }
        }
    };
    events.push(EventKind::PhaseOpened {
        round,
        phase,
        invited: invited.clone(),
        attempt,
    });
    job.open = Some(OpenPhase {
        attempt,
        invited: invited.into_iter().collect(),
        replied: BTreeSet::new(),
        declined: BTreeSet::new(),
        deadline,
        aggregation,
        release_parameters,
    });
    true
}

/// A secure instance ended with a sum: the phase completes if enough nodes
/// are in it (the instance checked that before anyone unmasked), otherwise
/// it counts as a failed attempt.
fn finish_secure_phase<D: ReleaseDirector>(
    job: &mut Job<D>,
    sums: Accumulator,
    contributors: Vec<NodeId>,
    noise: &mut Option<ChaCha20Rng>,
    events: &mut Vec<EventKind>,
) {
    let minimum = job.durable.plan.min_participants as usize;
    if contributors.len() < minimum {
        let reason = format!(
            "only {} nodes' inputs are in the sum; the job needs {minimum}",
            contributors.len()
        );
        fail_secure_attempt(job, reason, events);
        return;
    }
    let Some(open) = job.open.take() else {
        return;
    };
    let dropped: Vec<NodeId> = open
        .invited
        .iter()
        .filter(|node| !contributors.contains(node))
        .cloned()
        .collect();
    let guarantee = match &open.aggregation {
        PhaseAggregation::Secure(secure) => Some(secure.graph().guarantee.to_string()),
        PhaseAggregation::Plain(_) => None,
    };
    complete_phase(
        job,
        sums,
        PhaseOutcome {
            dropped,
            contributors,
            guarantee,
        },
        noise,
        events,
    );
}

/// A secure instance failed: retry the phase with a fresh instance (without
/// the nodes whose input already left), or end it once the attempts are used
/// up: abandoned when inputs left (they are charged), failed otherwise.
fn fail_secure_attempt<D: ReleaseDirector>(
    job: &mut Job<D>,
    reason: String,
    events: &mut Vec<EventKind>,
) {
    let Some(open) = job.open.take() else {
        return;
    };
    let (round, phase) = job.durable.cursor;
    events.push(EventKind::SecureRoundFailed {
        round,
        phase,
        attempt: open.attempt,
        reason: reason.clone(),
    });
    // Members that never answered the first step sit the retry out: a
    // small cohort's threshold may tolerate no absence at all.
    if let PhaseAggregation::Secure(secure) = &open.aggregation {
        job.declined.extend(secure.silent_from_the_start());
    }
    job.failed_attempts = open.attempt;
    if open.attempt >= job.durable.plan.max_phase_attempts {
        if !job.released.is_empty() {
            let reason = format!(
                "secure aggregation failed {} times after inputs left; last: {reason}",
                open.attempt
            );
            abandon_phase(job, reason, events);
            return;
        }
        let reason = format!(
            "round {round} phase {phase}: secure aggregation failed {} times; last: {reason}",
            open.attempt
        );
        job.durable.state = JobState::Failed {
            reason: reason.clone(),
        };
        events.push(EventKind::Failed { reason });
    }
}

/// Ends a phase that cannot finish without a second release. Training and
/// evaluation move the job on to the next round with the model unchanged
/// (the round is spent, and charged to whoever released); feature
/// statistics fail the job, since no round can run without them.
fn abandon_phase<D: ReleaseDirector>(
    job: &mut Job<D>,
    reason: String,
    events: &mut Vec<EventKind>,
) {
    job.open = None;
    job.failed_attempts = 0;
    let (round, phase) = job.durable.cursor;
    let released: Vec<NodeId> = std::mem::take(&mut job.released).into_iter().collect();
    let cohort = std::mem::take(&mut job.released_cohort);
    job.declined.clear();
    events.push(EventKind::PhaseAbandoned {
        round,
        phase,
        released: released.clone(),
        cohort: cohort as u32,
        reason: reason.clone(),
    });
    let durable = &mut job.durable;
    match phase {
        // Every later release is derived from this one's sum.
        Phase::FeatureStats | Phase::Release => {
            let reason = format!("round {round} phase {phase} abandoned: {reason}");
            durable.state = JobState::Failed {
                reason: reason.clone(),
            };
            events.push(EventKind::Failed { reason });
        }
        Phase::Train => {
            let mut record = RoundRecord::empty(round);
            record.train_participants = released.len() as u32;
            record.abandoned = Some(reason);
            finish_round(durable, record, events);
        }
        Phase::Evaluate => {
            let record = durable
                .pending_train
                .take()
                .unwrap_or_else(|| RoundRecord::empty(round));
            finish_round(durable, record, events);
        }
    }
}

/// Records a finished round and moves the cursor on, or ends the job. An
/// analysis ends by deriving its result from every released sum.
fn finish_round<D: ReleaseDirector>(
    durable: &mut JobSnapshot<D>,
    record: RoundRecord,
    events: &mut Vec<EventKind>,
) {
    let round = record.round;
    durable.history.push(record.clone());
    events.push(EventKind::RoundCompleted(record));
    if round >= durable.plan.rounds {
        if durable.plan.is_analysis() {
            let result = durable
                .descriptor
                .result_parameters(&released_sums(durable))
                .and_then(|result| {
                    if result.len() != durable.plan.parameter_count {
                        Err(format!(
                            "the result has {} values, the plan says {}",
                            result.len(),
                            durable.plan.parameter_count
                        ))
                    } else if let Some(index) = result.iter().position(|value| !value.is_finite()) {
                        Err(format!("result value {index} is not finite"))
                    } else {
                        Ok(result)
                    }
                });
            match result {
                Ok(result) => {
                    durable.global = Arc::new(result);
                    durable.model_version += 1;
                }
                Err(error) => {
                    let reason = format!("deriving the analysis result: {error}");
                    durable.state = JobState::Failed {
                        reason: reason.clone(),
                    };
                    events.push(EventKind::Failed { reason });
                    return;
                }
            }
        }
        durable.state = JobState::Succeeded;
        events.push(EventKind::Succeeded);
    } else if durable.plan.is_analysis() {
        durable.cursor = (round + 1, Phase::Release);
    } else {
        durable.cursor = (round + 1, Phase::Train);
    }
}

impl RoundRecord {
    /// Statistics values and node ids the record holds.
    fn retained_values(&self) -> usize {
        self.train_statistics.len()
            + self.evaluate_statistics.len()
            + self.release_sum.len()
            + self.dropped.len()
            + self.contributors.len()
    }

    /// A round with nothing aggregated yet.
    fn empty(round: u32) -> Self {
        RoundRecord {
            round,
            train_participants: 0,
            train_weight: 0.0,
            train_statistics: Vec::new(),
            evaluate_participants: 0,
            evaluate_statistics: Vec::new(),
            dropped: Vec::new(),
            contributors: Vec::new(),
            secure_guarantee: None,
            abandoned: None,
            release_sum: Vec::new(),
        }
    }
}

/// Who a completed phase's sums hold, and the guarantee it had.
struct PhaseOutcome {
    /// Invitees whose reply is not in the sums.
    dropped: Vec<NodeId>,
    /// Nodes whose reply is.
    contributors: Vec<NodeId>,
    /// The secure-aggregation guarantee, for secure phases.
    guarantee: Option<String>,
}

fn close_phase<D: ReleaseDirector>(
    job: &mut Job<D>,
    live: &[NodeId],
    now: Instant,
    noise: &mut Option<ChaCha20Rng>,
    events: &mut Vec<EventKind>,
) {
    let Some(mut open) = job.open.take() else {
        return;
    };
    let durable = &mut job.durable;
    let (round, phase) = durable.cursor;
    let PhaseAggregation::Plain(accumulator) = &open.aggregation else {
        // Secure phases close through `finish_secure_phase`.
        job.open = Some(open);
        return;
    };
    let replies = accumulator.replies();
    if replies < durable.plan.min_participants {
        if open.attempt >= durable.plan.max_phase_attempts {
            let reason = format!(
                "round {round} phase {phase}: only {replies} of the minimum {} participants replied, after {} attempts",
                durable.plan.min_participants, open.attempt
            );
            durable.state = JobState::Failed {
                reason: reason.clone(),
            };
            events.push(EventKind::Failed { reason });
            return;
        }
        // Extend: keep the replies already folded in (they answer the same
        // model version) and invite whoever else is alive now.
        open.attempt += 1;
        for node in select_participants(&durable.plan, live, round) {
            if open.invited.len() >= durable.plan.max_participants as usize {
                break;
            }
            open.invited.insert(node);
        }
        open.deadline = now + phase_timeout(&durable.plan, phase);
        events.push(EventKind::PhaseOpened {
            round,
            phase,
            invited: open.invited.iter().cloned().collect(),
            attempt: open.attempt,
        });
        job.open = Some(open);
        return;
    }
    let dropped: Vec<NodeId> = open
        .invited
        .iter()
        .filter(|node| !open.replied.contains(*node) || open.declined.contains(*node))
        .cloned()
        .collect();
    let contributors: Vec<NodeId> = open
        .replied
        .iter()
        .filter(|node| !open.declined.contains(*node))
        .cloned()
        .collect();
    let PhaseAggregation::Plain(accumulator) = open.aggregation else {
        return;
    };
    complete_phase(
        job,
        accumulator,
        PhaseOutcome {
            dropped,
            contributors,
            guarantee: None,
        },
        noise,
        events,
    );
}

/// Applies a completed phase's sums and moves the cursor on.
fn complete_phase<D: ReleaseDirector>(
    job: &mut Job<D>,
    mut accumulator: Accumulator,
    outcome: PhaseOutcome,
    noise: &mut Option<ChaCha20Rng>,
    events: &mut Vec<EventKind>,
) {
    let PhaseOutcome {
        dropped,
        contributors,
        guarantee,
    } = outcome;
    job.failed_attempts = 0;
    job.released.clear();
    job.released_cohort = 0;
    job.declined.clear();
    let durable = &mut job.durable;
    let (round, phase) = durable.cursor;
    if let (
        Phase::Train,
        PartnerPrivacy::Central {
            noise_multiplier,
            clip_norm,
            max_weight,
        },
    ) = (phase, durable.plan.partner_privacy)
    {
        let added = match noise.as_mut() {
            Some(rng) => add_central_noise(
                accumulator.weighted_vector_sum_mut(),
                noise_multiplier,
                clip_norm,
                max_weight,
                rng,
            ),
            None => Err(crate::privacy::PartnerPrivacyError::NoNoiseSource),
        };
        if let Err(error) = added {
            // Fail closed: a noiseless aggregate must never become the model.
            let reason = format!("round {round}: {error}");
            durable.state = JobState::Failed {
                reason: reason.clone(),
            };
            events.push(EventKind::Failed { reason });
            return;
        }
    }
    let replies = accumulator.replies();
    events.push(EventKind::PhaseCompleted {
        round,
        phase,
        participants: replies,
        dropped: dropped.clone(),
    });
    match phase {
        Phase::FeatureStats => {
            durable.feature_statistics = Some(Arc::new(accumulator.statistics_sum().to_vec()));
            durable.cursor = (1, Phase::Train);
        }
        Phase::Train => {
            if let Some(mean_delta) = accumulator.weighted_mean() {
                let global = Arc::make_mut(&mut durable.global);
                durable.optimizer.apply(global, &mean_delta);
            }
            durable.model_version += 1;
            durable.pending_train = Some(RoundRecord {
                train_participants: replies,
                train_weight: accumulator.weight_sum(),
                train_statistics: accumulator.statistics_sum().to_vec(),
                dropped,
                contributors,
                secure_guarantee: guarantee,
                ..RoundRecord::empty(round)
            });
            durable.cursor = (round, Phase::Evaluate);
        }
        Phase::Evaluate => {
            let mut record = durable
                .pending_train
                .take()
                .unwrap_or_else(|| RoundRecord::empty(round));
            record.evaluate_participants = replies;
            record.evaluate_statistics = accumulator.statistics_sum().to_vec();
            for node in dropped {
                if !record.dropped.contains(&node) {
                    record.dropped.push(node);
                }
            }
            finish_round(durable, record, events);
        }
        Phase::Release => {
            let record = RoundRecord {
                train_participants: replies,
                dropped,
                contributors,
                secure_guarantee: guarantee,
                release_sum: accumulator.statistics_sum().to_vec(),
                ..RoundRecord::empty(round)
            };
            finish_round(durable, record, events);
        }
    }
}
