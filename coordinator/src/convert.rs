//! Conversions between the engine's domain types and `veil.v1` messages, and
//! the mapping of domain errors to gRPC status codes. The only place where
//! `tonic::Status` is built from a domain error.

use tonic::Status;
use veil_federation::{EngineError, JobState, JobStatus, Phase, RejectReason, RoundRecord};
use veil_job::{JobSpec, statistics};
use veil_wire::v1;

/// Domain phase to wire phase.
pub fn phase_to_wire(phase: Phase) -> v1::Phase {
    match phase {
        Phase::FeatureStats => v1::Phase::FeatureStats,
        Phase::Train => v1::Phase::Train,
        Phase::Evaluate => v1::Phase::Evaluate,
    }
}

/// Wire phase to domain phase; unspecified or unknown values are refused.
pub fn phase_from_wire(raw: i32) -> Result<Phase, Status> {
    match v1::Phase::try_from(raw) {
        Ok(v1::Phase::FeatureStats) => Ok(Phase::FeatureStats),
        Ok(v1::Phase::Train) => Ok(Phase::Train),
        Ok(v1::Phase::Evaluate) => Ok(Phase::Evaluate),
        _ => Err(Status::invalid_argument(format!(
            "unknown phase value {raw}"
        ))),
    }
}

/// Engine errors as status codes.
pub fn engine_error(error: EngineError) -> Status {
    let message = error.to_string();
    match error {
        EngineError::UnknownJob { .. } => Status::not_found(message),
        EngineError::UnknownNode { .. } => Status::failed_precondition(message),
        EngineError::InvalidPlan(_) => Status::invalid_argument(message),
        EngineError::WrongState { .. } | EngineError::ModelVersionUnavailable { .. } => {
            Status::failed_precondition(message)
        }
    }
}

/// Refused submissions as status codes.
pub fn reject_reason(reason: RejectReason) -> Status {
    let message = reason.to_string();
    match reason {
        RejectReason::UnknownNode { .. } => Status::failed_precondition(message),
        RejectReason::UnknownJob { .. } => Status::not_found(message),
        RejectReason::PhaseClosed { .. } => Status::failed_precondition(message),
        RejectReason::NotInvited { .. } => Status::permission_denied(message),
        RejectReason::WrongShape { .. }
        | RejectReason::NonFinite { .. }
        | RejectReason::InvalidWeight { .. } => Status::invalid_argument(message),
    }
}

/// Metrics of one completed round, interpreted from its summed statistics.
pub fn round_metrics(spec: &JobSpec, record: &RoundRecord) -> v1::RoundMetrics {
    let evaluation =
        statistics::evaluation(spec.model_spec().output, &record.evaluate_statistics).ok();
    v1::RoundMetrics {
        round: record.round,
        participants: record.train_participants,
        mean_training_loss: statistics::mean_training_loss(&record.train_statistics)
            .unwrap_or(f64::NAN),
        eval_loss: evaluation
            .as_ref()
            .and_then(|e| e.mean_loss())
            .unwrap_or(f64::NAN),
        eval_auc: evaluation
            .as_ref()
            .and_then(|e| e.auc())
            .unwrap_or(f64::NAN),
        eval_rmse: evaluation
            .as_ref()
            .and_then(|e| e.rmse())
            .unwrap_or(f64::NAN),
        eval_examples: evaluation.as_ref().map_or(0, |e| e.count),
    }
}

/// A job's status as the operator sees it.
pub fn job_status(spec: &JobSpec, status: &JobStatus) -> v1::JobStatus {
    let (state, failure_reason) = match &status.state {
        JobState::Pending => (v1::JobState::Pending, String::new()),
        JobState::Running => (v1::JobState::Running, String::new()),
        JobState::Succeeded => (v1::JobState::Succeeded, String::new()),
        JobState::Failed { reason } => (v1::JobState::Failed, reason.clone()),
        JobState::Cancelled => (v1::JobState::Cancelled, String::new()),
    };
    v1::JobStatus {
        job_id: status.job.clone(),
        state: state as i32,
        completed_rounds: status.completed_rounds,
        total_rounds: status.total_rounds,
        current_phase: status
            .current
            .map_or(v1::Phase::Unspecified, |(_, phase)| phase_to_wire(phase))
            as i32,
        failure_reason,
        aggregation_mode: "plain".to_owned(),
        history: status
            .history
            .iter()
            .map(|r| round_metrics(spec, r))
            .collect(),
        job_name: spec.name.clone(),
    }
}
