//! Creating a job: the one path gRPC `SubmitJob` and the console's start
//! form share, so every job is checked against its own budget, seeded,
//! planned and recorded in the audit log the same way whoever submits it.
//! Who may submit is the caller's check.

use prost::Message;
use veil_audit_log::AuditEvent;
use veil_federation::EngineError;
use veil_job::JobSpec;
use veil_wire::v1;

use crate::state::{Shared, lock};

/// Why a job was not created.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SubmitError {
    /// The job cannot finish within its own privacy budget.
    #[error("{0}")]
    OverBudget(String),
    /// The engine refused the plan.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Creates `spec` (parsed from `wire`) as a pending job for `actor`; returns
/// its id. The `JobCreated` audit entry carries the SHA-256 of `wire`.
pub(crate) fn create_job(
    shared: &Shared,
    actor: &str,
    wire: &v1::JobSpec,
    spec: JobSpec,
) -> Result<String, SubmitError> {
    // A job that cannot finish within its own budget is refused now, not
    // stopped part-way with a model nobody asked for.
    veil_job::check_planned_budget(&spec)
        .map_err(|error| SubmitError::OverBudget(error.to_string()))?;
    // A zero seed asks the coordinator to pick one; the initial model is not
    // a secret, so an ordinary generator is fine here.
    let seed = if spec.seed == 0 {
        rand::random::<u64>()
    } else {
        spec.seed
    };
    let initial = spec.initial_parameters(seed);
    let plan = spec.plan();
    let job_id = shared.with_engine(|engine, now| engine.submit_job(plan, spec, initial, now))?;
    let mut digest = [0; 32];
    digest.copy_from_slice(
        ring::digest::digest(&ring::digest::SHA256, &wire.encode_to_vec()).as_ref(),
    );
    lock(&shared.audit).record(
        actor,
        AuditEvent::JobCreated {
            job_id: job_id.clone(),
            spec_sha256: digest,
        },
    );
    Ok(job_id)
}
