//! The node's edge with the wire: a `veil.v1` task into the state machine's
//! [`NodeTask`], and the machine's answers back into result headers. A
//! malformed task becomes a typed refusal here and never reaches the machine.

use prost::Message;
use veil_federation::{DeclineCode, Phase, SecureStep};
use veil_job::JobSpec;
use veil_node_protocol::{MemberCredential, NodeTask, SecureRequest};
use veil_wire::v1;

/// Why a task could not be read: always declined as `InvalidTask`.
#[derive(Debug, thiserror::Error)]
#[error("malformed task: {0}")]
pub struct MalformedTask(pub String);

fn malformed(detail: impl Into<String>) -> MalformedTask {
    MalformedTask(detail.into())
}

pub use veil_job::wire_codes::secure_step_to_wire;

/// Wire phase to domain.
pub fn phase_from_wire(raw: i32) -> Result<Phase, MalformedTask> {
    veil_job::wire_codes::phase_from_wire(raw).map_err(|error| malformed(error.to_string()))
}

/// Wire secure step to domain; a task always names one.
pub fn secure_step_from_wire(raw: i32) -> Result<SecureStep, MalformedTask> {
    veil_job::wire_codes::secure_step_from_wire(raw)
        .map_err(|error| malformed(error.to_string()))?
        .ok_or_else(|| malformed("a secure task without a step"))
}

/// A decline code as it travels.
pub fn decline_code_to_wire(code: DeclineCode) -> i32 {
    code.wire_value()
}

/// SHA-256 of a spec's wire encoding: what a node pins per job.
pub fn spec_digest(spec: &v1::JobSpec) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, &spec.encode_to_vec());
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(digest.as_ref());
    bytes
}

/// Reads a task; the spec is validated by the one validation path both sides use.
pub fn task_from_wire(task: &v1::Task) -> Result<NodeTask, MalformedTask> {
    let wire_spec = task
        .spec
        .as_ref()
        .ok_or_else(|| malformed("the task carries no job spec"))?;
    let spec = JobSpec::from_wire(wire_spec)
        .map_err(|error| malformed(format!("the task's job spec is invalid: {error}")))?;
    let secure = task.secure.as_ref().map(secure_from_wire).transpose()?;
    Ok(NodeTask {
        job_id: task.job_id.clone(),
        round: task.round,
        phase: phase_from_wire(task.phase)?,
        spec,
        spec_digest: spec_digest(wire_spec),
        secure,
        release_parameters: task.release_parameters.clone(),
    })
}

fn secure_from_wire(wire: &v1::SecureStepTask) -> Result<SecureRequest, MalformedTask> {
    let parameters = wire
        .parameters
        .as_ref()
        .ok_or_else(|| malformed("the secure task carries no parameters"))?;
    let graph_seed: [u8; 32] = parameters
        .graph_seed
        .as_slice()
        .try_into()
        .map_err(|_| malformed("the graph seed is not 32 bytes"))?;
    let size = |value: u64, what: &str| {
        usize::try_from(value).map_err(|_| malformed(format!("{what} {value} is too large")))
    };
    Ok(SecureRequest {
        step: secure_step_from_wire(wire.step)?,
        attempt: wire.attempt,
        cohort: parameters.cohort.clone(),
        graph_seed,
        neighbour_count: size(u64::from(parameters.neighbour_count), "neighbour count")?,
        reconstruction_threshold: size(
            u64::from(parameters.reconstruction_threshold),
            "reconstruction threshold",
        )?,
        modulus_bits: parameters.modulus_bits,
        vector_length: size(parameters.vector_length, "vector length")?,
        members: wire
            .identities
            .iter()
            .map(|identity| MemberCredential {
                node_id: identity.node_id.clone(),
                certificate_der: identity.certificate_der.clone(),
                claimed_key: identity.public_key.clone(),
            })
            .collect(),
        payload: wire.payload.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decline_codes_match_the_wire_enum_by_name() {
        // The proto's names are the domain names in SCREAMING_SNAKE_CASE:
        // a code added on one side only fails here.
        for code in DeclineCode::ALL {
            let wire = v1::DeclineCode::try_from(decline_code_to_wire(code))
                .unwrap_or_else(|error| panic!("{code}: {error}"));
            let expected = format!(
                "DECLINE_CODE_{}",
                code.as_str().replace('-', "_").to_uppercase()
            );
            assert_eq!(wire.as_str_name(), expected);
        }
    }

    #[test]
    fn steps_and_phases_round_trip() {
        for step in [
            SecureStep::AdvertiseKeys,
            SecureStep::ShareKeys,
            SecureStep::MaskedInput,
            SecureStep::ConsistencyCheck,
            SecureStep::Unmask,
            SecureStep::ContinuationInput,
        ] {
            assert_eq!(
                secure_step_from_wire(secure_step_to_wire(step) as i32).ok(),
                Some(step)
            );
        }
        assert!(phase_from_wire(0).is_err());
        assert!(secure_step_from_wire(99).is_err());
    }

    #[test]
    fn a_task_without_a_spec_is_malformed_by_name() {
        let error = task_from_wire(&v1::Task::default()).expect_err("no spec");
        assert!(error.to_string().contains("no job spec"), "{error}");
    }
}
