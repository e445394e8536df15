//! Conversions between the engine's domain types and `veil.v1` messages, and
//! the mapping of domain errors to gRPC status codes. The only place where
//! `tonic::Status` is built from a domain error.

use tonic::Status;
use veil_federation::{
    EngineError, EventKind, JobState, JobStatus, Phase, RejectReason, RoundRecord, SecureStep,
    SecureTask,
};
use veil_job::{JobSpec, statistics};
use veil_wire::v1;

pub use veil_job::wire_codes::{phase_to_wire, secure_step_to_wire};

/// Wire phase to domain phase; unspecified or unknown values are refused.
pub fn phase_from_wire(raw: i32) -> Result<Phase, Status> {
    veil_job::wire_codes::phase_from_wire(raw)
        .map_err(|error| Status::invalid_argument(error.to_string()))
}

/// Wire secure step to domain; `Ok(None)` when unspecified (a plain reply).
pub fn secure_step_from_wire(raw: i32) -> Result<Option<SecureStep>, Status> {
    veil_job::wire_codes::secure_step_from_wire(raw)
        .map_err(|error| Status::invalid_argument(error.to_string()))
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
        EngineError::NotAMember { .. } => Status::permission_denied(message),
        EngineError::ModelInStore { .. } => Status::internal(message),
    }
}

/// A finished job's model that could not be read, as a status code.
pub(crate) fn stored_job_error(error: crate::state::StoredJobError) -> Status {
    match error {
        crate::state::StoredJobError::Engine(error) => engine_error(error),
        other => Status::internal(other.to_string()),
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
        RejectReason::WrongMode { .. } => Status::failed_precondition(message),
        RejectReason::WrongShape { .. }
        | RejectReason::NonFinite { .. }
        | RejectReason::SecureMessage { .. }
        | RejectReason::InvalidWeight { .. } => Status::invalid_argument(message),
    }
}

/// A node's secure step task on the wire.
pub fn secure_task_to_wire(task: &SecureTask) -> v1::SecureStepTask {
    let params = &task.params;
    v1::SecureStepTask {
        step: secure_step_to_wire(task.step) as i32,
        attempt: task.attempt,
        parameters: Some(v1::SecureParameters {
            cohort: params
                .cohort()
                .iter()
                .map(|node| node.as_str().to_owned())
                .collect(),
            graph_seed: params.graph_seed().to_vec(),
            neighbour_count: params.neighbour_count() as u32,
            reconstruction_threshold: params.reconstruction_threshold() as u32,
            modulus_bits: params.modulus_bits(),
            vector_length: params.vector_length() as u64,
        }),
        identities: task
            .members
            .iter()
            .map(|member| v1::NodeIdentity {
                node_id: member.node.clone(),
                public_key: member.identity_key.to_vec(),
                certificate_der: member.certificate_der.as_ref().clone(),
            })
            .collect(),
        payload: task.payload.as_ref().clone(),
    }
}

/// One line describing an engine event, for logs and the operator's stream.
/// `None` for events that only matter to the engine's bookkeeping.
pub fn describe_event(kind: &EventKind) -> Option<String> {
    let text = match kind {
        EventKind::Submitted => "job submitted".to_owned(),
        EventKind::Started => "job started".to_owned(),
        EventKind::WaitingForNodes { live, needed } => {
            format!("waiting for nodes: {live} eligible, {needed} needed")
        }
        EventKind::PhaseOpened {
            round,
            phase,
            invited,
            attempt,
        } => format!(
            "round {round} {phase}: opened (attempt {attempt}, {} invited)",
            invited.len()
        ),
        EventKind::ReplyRejected {
            node,
            round,
            phase,
            reason,
        } => format!("round {round} {phase}: rejected reply from '{node}': {reason}"),
        EventKind::NodeDeclined {
            node,
            round,
            phase,
            code,
        } => format!("round {round} {phase}: '{node}' declined: {code}"),
        EventKind::PhaseAbandoned {
            round,
            phase,
            released,
            reason,
            ..
        } => format!(
            "round {round} {phase}: abandoned ({} inputs released and charged, no second release): {reason}",
            released.len()
        ),
        EventKind::SecureStepOpened {
            round,
            phase,
            step,
            remaining,
        } => format!("round {round} {phase}: secure aggregation {step} ({remaining} nodes)"),
        EventKind::SecureRoundFailed {
            round,
            phase,
            attempt,
            reason,
        } => {
            format!("round {round} {phase}: secure aggregation attempt {attempt} failed: {reason}")
        }
        EventKind::PhaseCompleted {
            round,
            phase,
            participants,
            dropped,
        } => {
            if dropped.is_empty() {
                format!("round {round} {phase}: {participants} participants")
            } else {
                format!("round {round} {phase}: {participants} participants, dropped {dropped:?}")
            }
        }
        EventKind::RoundCompleted(record) => format!("round {} completed", record.round),
        EventKind::Succeeded => "job succeeded".to_owned(),
        EventKind::Failed { reason } => format!("job failed: {reason}"),
        EventKind::Cancelled => "job cancelled".to_owned(),
        EventKind::RoundRefused { round, reason } => {
            format!("round {round} refused by the coordinator's privacy budget: {reason}")
        }
    };
    Some(text)
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
        secure_guarantee: record.secure_guarantee.clone().unwrap_or_default(),
        abandoned: record.abandoned.clone().unwrap_or_default(),
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
        aggregation_mode: spec.aggregation.name().to_owned(),
        history: status
            .history
            .iter()
            .map(|r| round_metrics(spec, r))
            .collect(),
        job_name: spec.name.clone(),
        // Filled by the service from the ledger, which the engine does not see.
        privacy: Vec::new(),
    }
}

/// One partner's spend of a job as `status` and `watch` show it.
pub(crate) fn partner_spend_to_wire(spend: &crate::privacy::PartnerSpend) -> v1::PartnerSpend {
    v1::PartnerSpend {
        partner: spend.partner.clone(),
        unit: spend.unit.name().to_owned(),
        epsilon_spent: spend.spent,
        epsilon_planned: spend.planned,
        epsilon_budget: spend.budget,
    }
}

/// A receipt as it travels to its node.
pub(crate) fn receipt_to_wire(receipt: &veil_audit_log::Receipt) -> v1::Receipt {
    v1::Receipt {
        job_id: receipt.job_id.clone(),
        round: receipt.round,
        node_id: receipt.node_id.clone(),
        entry_seq: receipt.entry_seq,
        entry_hash: receipt.entry_hash.to_vec(),
        charges: receipt
            .charges
            .iter()
            .map(|charge| v1::EpsilonCharge {
                partner: charge.partner.clone(),
                unit: charge.unit.clone(),
                epsilon: charge.epsilon,
            })
            .collect(),
        signature: receipt.signature.clone(),
    }
}
