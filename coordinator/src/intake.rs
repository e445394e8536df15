//! What arrives from a node, checked before it reaches the engine and without IO: node ids,
//! and a result upload assembled chunk by chunk into a [`Submission`]. The node service drives
//! [`ResultUpload`] with the gRPC stream; the fuzz targets (`crates/fuzz-targets`) drive it with
//! arbitrary messages, so both exercise the same checks.

use veil_audit_log::AuditEvent;
use veil_federation::secure::SecureStep;
use veil_federation::{DeclineCode, ResultKey, Submission, SubmissionBody};
use veil_job::wire_codes::{UnknownWireValue, phase_from_wire, secure_step_from_wire};
use veil_wire::chunking::{ChunkError, VectorAssembler};
use veil_wire::v1::{self, result_chunk};

/// Why an upload or a node id was refused; every message names what was wrong and, for uploads,
/// which node, job, round and phase it came from. Messages carry no uploaded value.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The node id is not a short printable label.
    #[error("node_id must be 1-64 characters of ASCII letters, digits, '-', '_' or '.'")]
    InvalidNodeId,
    /// The stream did not start with a header, or a header came later.
    #[error("{0}")]
    Framing(&'static str),
    /// The header names a phase or step this coordinator does not know.
    #[error(transparent)]
    UnknownCode(#[from] UnknownWireValue),
    /// Anything else wrong with the upload.
    #[error("{0}")]
    Upload(String),
    /// An auditor's privacy-test result that cannot be right.
    #[error("{0}")]
    PrivacyAudit(String),
}

/// Node ids are partner-chosen labels; keep them printable and short so they are safe in logs
/// and file names.
pub fn validate_node_id(node_id: &str) -> Result<(), IntakeError> {
    let valid = !node_id.is_empty()
        && node_id.len() <= 64
        && node_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(IntakeError::InvalidNodeId)
    }
}

/// The largest secure-aggregation message a node may upload for a model of `parameter_count`
/// values: the masked input is 4 bytes per encoded value (parameters plus a few thousand
/// statistics limbs), and key and share messages are far smaller.
pub fn secure_payload_limit(parameter_count: u64) -> u64 {
    parameter_count.saturating_mul(4).saturating_add(1 << 20)
}

/// The header of a result stream, from its first message.
pub fn result_header(first: Option<v1::ResultChunk>) -> Result<v1::ResultHeader, IntakeError> {
    match first {
        Some(v1::ResultChunk {
            body: Some(result_chunk::Body::Header(header)),
        }) => Ok(header),
        _ => Err(IntakeError::Framing(
            "a result stream must start with its header",
        )),
    }
}

/// A result upload in progress: what the header announced and the value chunks so far.
#[derive(Debug)]
pub struct ResultUpload {
    node: String,
    key: ResultKey,
    where_from: String,
    body: UploadBody,
}

#[derive(Debug)]
enum UploadBody {
    Declined(DeclineCode),
    Secure {
        attempt: u32,
        step: SecureStep,
        announced: u64,
        payload: Vec<u8>,
    },
    Plain {
        weight: f64,
        statistics: Vec<f64>,
        assembler: VectorAssembler,
    },
}

impl ResultUpload {
    /// Starts an upload from its header. `parameter_count` is the job's model size, which bounds
    /// what a node may send: an oversized upload is refused before any of it is read.
    pub fn start(header: v1::ResultHeader, parameter_count: u64) -> Result<Self, IntakeError> {
        let phase = phase_from_wire(header.phase)?;
        let secure_step = secure_step_from_wire(header.secure_step)?;
        let where_from = format!(
            "result from node '{}' for job '{}' round {} phase {phase}",
            header.node_id, header.job_id, header.round
        );
        let body = if header.decline_code != 0 {
            let code = DeclineCode::from_wire_value(header.decline_code).ok_or_else(|| {
                IntakeError::Upload(format!(
                    "{where_from}: unknown decline code {}",
                    header.decline_code
                ))
            })?;
            UploadBody::Declined(code)
        } else if let Some(step) = secure_step {
            let limit = secure_payload_limit(parameter_count);
            if header.payload_bytes > limit {
                return Err(IntakeError::Upload(format!(
                    "{where_from}: secure {step} payload of {} bytes exceeds the job's limit of {limit}",
                    header.payload_bytes
                )));
            }
            UploadBody::Secure {
                attempt: header.secure_attempt,
                step,
                announced: header.payload_bytes,
                // The announcement is bounded by the limit above.
                payload: Vec::with_capacity(usize::try_from(header.payload_bytes).unwrap_or(0)),
            }
        } else {
            let assembler =
                VectorAssembler::new(header.vector_length, parameter_count).map_err(|error| {
                    IntakeError::Upload(format!("{where_from}: model delta {error}"))
                })?;
            UploadBody::Plain {
                weight: header.weight,
                statistics: header.statistics,
                assembler,
            }
        };
        Ok(Self {
            node: header.node_id,
            key: ResultKey {
                job: header.job_id,
                round: header.round,
                phase,
            },
            where_from,
            body,
        })
    }

    /// Adds the next message of the stream.
    pub fn push(&mut self, chunk: v1::ResultChunk) -> Result<(), IntakeError> {
        let Some(result_chunk::Body::Values(bytes)) = chunk.body else {
            return Err(IntakeError::Framing(
                "only value chunks may follow the header",
            ));
        };
        match &mut self.body {
            UploadBody::Declined(_) => Err(IntakeError::Upload(format!(
                "{}: a decline carries no values",
                self.where_from
            ))),
            UploadBody::Secure {
                announced, payload, ..
            } => {
                if payload.len() as u64 + bytes.len() as u64 > *announced {
                    return Err(IntakeError::Upload(format!(
                        "{}: more payload than the {announced} bytes announced",
                        self.where_from
                    )));
                }
                payload.extend_from_slice(&bytes);
                Ok(())
            }
            UploadBody::Plain { assembler, .. } => assembler
                .push(assembler.received(), &bytes)
                .map_err(|error: ChunkError| IntakeError::Upload(format!("model delta: {error}"))),
        }
    }

    /// The submission, once the stream has ended.
    pub fn finish(self) -> Result<Submission, IntakeError> {
        let body = match self.body {
            UploadBody::Declined(code) => SubmissionBody::Declined { code },
            UploadBody::Secure {
                attempt,
                step,
                announced,
                payload,
            } => {
                if payload.len() as u64 != announced {
                    return Err(IntakeError::Upload(format!(
                        "{}: {} payload bytes arrived, {announced} were announced",
                        self.where_from,
                        payload.len()
                    )));
                }
                SubmissionBody::Secure {
                    attempt,
                    step,
                    payload,
                }
            }
            UploadBody::Plain {
                weight,
                statistics,
                assembler,
            } => SubmissionBody::Plain {
                weight,
                statistics,
                vector: assembler
                    .finish()
                    .map_err(|error| IntakeError::Upload(format!("model delta: {error}")))?,
            },
        };
        Ok(Submission {
            node: self.node,
            key: self.key,
            body,
        })
    }
}

/// The audit-log entry for an auditor's privacy-test result, refused unless its counts and
/// figures can be right. The partner and commitment come from the job, not from the caller.
pub fn privacy_audit_event(
    result: v1::PrivacyAuditResult,
    partner: String,
    commitment: [u8; 32],
) -> Result<AuditEvent, IntakeError> {
    if result.guesses > result.canaries || result.correct > result.guesses {
        return Err(IntakeError::PrivacyAudit(
            "a privacy audit result needs correct <= guesses <= canaries".to_owned(),
        ));
    }
    let event = AuditEvent::PrivacyAuditRecorded {
        job_id: result.job_id,
        partner,
        commitment,
        attack: result.attack,
        canaries: result.canaries,
        guesses: result.guesses,
        correct: result.correct,
        delta: result.delta,
        confidence: result.confidence,
        epsilon_lower: result.epsilon_lower,
        epsilon_lower_gaussian: result.epsilon_lower_gaussian,
        epsilon_upper: result.epsilon_upper,
    };
    event
        .validate()
        .map_err(|error| IntakeError::PrivacyAudit(error.to_string()))?;
    Ok(event)
}
