//! The coordinator's protocol core: jobs, rounds and phases as a sans-IO state
//! machine ([`Engine`]), plus the aggregation strategies it applies.
//!
//! Inputs arrive through methods that take `now`; outputs leave as return
//! values, [`Engine::poll_event`] and [`Engine::poll_timeout`]. The engine does
//! no IO, reads no clock and spawns nothing, so the same code runs under the
//! tonic service and under the simulated harness in `tests/`.
//!
//! What it does *not* do: it never interprets what a job trains. The job's task,
//! feature and model description is an opaque descriptor `D` chosen by the
//! caller (the `coordinator` crate), and statistics are plain additive `f64`
//! vectors whose meaning lives in `veil-behaviour-features` and `veil-models`. The wire
//! format lives in `veil-wire`; persistence lives behind [`store::JobStore`].

pub mod aggregate;
pub mod decline;
pub mod engine;
pub mod participant;
pub mod phase;
pub mod plan;
pub mod privacy;
pub mod secure;
pub mod store;
pub mod strategy;

pub use aggregate::{Accumulator, ExpectedShape, RejectReason};
pub use decline::DeclineCode;
pub use engine::{
    Engine, EngineConfig, EngineError, EngineEvent, EngineFootprint, EventKind, JobSnapshot,
    JobState, JobStatus, NodeActivity, NodeCredential, ReleaseDirector, ResultKey, RoundRecord,
    Submission, SubmissionBody, SubmitOutcome, TaskAssignment,
};
pub use participant::{ParticipantError, SecureParticipant};
pub use phase::Phase;
pub use plan::{AggregationMode, DEFAULT_WAIT_FOR_NODES, JobPlan, PhaseTimeouts, PlanError};
pub use privacy::{PartnerPrivacy, PartnerPrivacyError};
pub use secure::{
    CohortMember, FinishedInstance, ReplyEncoding, SecureSettings, SecureStep, SecureTask,
};
pub use strategy::{ServerOptimizer, Strategy};

/// Identifier of a client node, as it registered.
pub type NodeId = String;

/// Identifier of a job, assigned by the engine.
pub type JobId = String;
