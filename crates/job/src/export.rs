//! The exported model file: one file carrying the job spec (task, features,
//! model), the federation's feature scaling and the parameters, sealed with a
//! SHA-256 digest so a truncated or altered file is refused.
//!
//! Layout (all integers little-endian):
//! `b"VEILMODEL\0"` | `u32` format version (1) | `u64` header length |
//! header (`veil.v1.ModelInfo`, protobuf) | `parameter_count` × `f32` |
//! 32-byte SHA-256 of everything before it.

use std::path::Path;

use prost::Message;
use ring::digest;
use thiserror::Error;
use veil_behaviour_features::Scaling;
use veil_wire::v1;

use crate::spec::{JobSpec, JobSpecError};

const MAGIC: &[u8; 10] = b"VEILMODEL\0";
const FORMAT_VERSION: u32 = 1;
const DIGEST_LEN: usize = 32;

/// Why a model file could not be written or read.
#[derive(Debug, Error)]
pub enum ExportError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// The file is not a Veil model or is damaged.
    #[error("{path}: not a valid Veil model file: {reason}")]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The embedded job spec is invalid.
    #[error("{path}: embedded job spec is invalid: {source}")]
    Spec {
        /// The file.
        path: String,
        /// The spec error.
        source: JobSpecError,
    },
}

/// A trained model with everything needed to score at a partner.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportedModel {
    /// The job that trained it.
    pub job_id: String,
    /// Task, features, model architecture.
    pub spec: JobSpec,
    /// Feature scaling agreed by the federation.
    pub scaling: Scaling,
    /// Flat parameters in `veil-models` layout.
    pub parameters: Vec<f32>,
    /// Final evaluation metrics, if known.
    pub final_metrics: Option<v1::RoundMetrics>,
}

impl ExportedModel {
    /// The wire header describing this model.
    pub fn info(&self) -> v1::ModelInfo {
        v1::ModelInfo {
            job_id: self.job_id.clone(),
            spec: Some(self.spec.to_wire()),
            scaling: Some(v1::Scaling {
                mean: self.scaling.mean.clone(),
                std: self.scaling.std.clone(),
            }),
            parameter_count: self.parameters.len() as u64,
            final_metrics: self.final_metrics.clone(),
            // A model file holds the final model only, not its history.
            model_version: 0,
        }
    }

    /// Serialises the model file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let header = self.info().encode_to_vec();
        let mut bytes = Vec::with_capacity(
            MAGIC.len() + 12 + header.len() + self.parameters.len() * 4 + DIGEST_LEN,
        );
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&header);
        for value in &self.parameters {
            bytes.extend_from_slice(&value.to_le_bytes());
        }
        let sealed = digest::digest(&digest::SHA256, &bytes);
        bytes.extend_from_slice(sealed.as_ref());
        bytes
    }

    /// SHA-256 of the file contents, hex: the model's identity in reports.
    pub fn digest_hex(&self) -> String {
        let bytes = self.to_bytes();
        bytes[bytes.len() - DIGEST_LEN..]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Parses and verifies a model file's bytes; `path` only names errors.
    pub fn from_bytes(bytes: &[u8], path: &str) -> Result<Self, ExportError> {
        let corrupt = |reason: &str| ExportError::Corrupt {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        if bytes.len() < MAGIC.len() + 12 + DIGEST_LEN || &bytes[..MAGIC.len()] != MAGIC {
            return Err(corrupt("missing the VEILMODEL header"));
        }
        let (body, stored_digest) = bytes.split_at(bytes.len() - DIGEST_LEN);
        if digest::digest(&digest::SHA256, body).as_ref() != stored_digest {
            return Err(corrupt(
                "digest mismatch: the file was truncated or altered",
            ));
        }
        let mut cursor = MAGIC.len();
        let version = u32::from_le_bytes(
            body[cursor..cursor + 4]
                .try_into()
                .map_err(|_| corrupt("short header"))?,
        );
        cursor += 4;
        if version != FORMAT_VERSION {
            return Err(corrupt(&format!(
                "format version {version}, this build reads {FORMAT_VERSION}"
            )));
        }
        let header_len = u64::from_le_bytes(
            body[cursor..cursor + 8]
                .try_into()
                .map_err(|_| corrupt("short header"))?,
        );
        cursor += 8;
        let header_end = usize::try_from(header_len)
            .ok()
            .and_then(|len| cursor.checked_add(len))
            .filter(|end| *end <= body.len())
            .ok_or_else(|| corrupt("header length runs past the end of the file"))?;
        let info = v1::ModelInfo::decode(&body[cursor..header_end])
            .map_err(|e| corrupt(&format!("header: {e}")))?;
        let values = &body[header_end..];
        if values.len() % 4 != 0 || (values.len() / 4) as u64 != info.parameter_count {
            return Err(corrupt(
                "parameter block does not match the header's parameter count",
            ));
        }
        let parameters = values
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let spec_wire = info
            .spec
            .as_ref()
            .ok_or_else(|| corrupt("header has no job spec"))?;
        let spec = JobSpec::from_wire(spec_wire).map_err(|source| ExportError::Spec {
            path: path.to_owned(),
            source,
        })?;
        let scaling_wire = info
            .scaling
            .clone()
            .ok_or_else(|| corrupt("header has no scaling"))?;
        let n_features = spec.features.n_features();
        if scaling_wire.mean.len() != n_features || scaling_wire.std.len() != n_features {
            return Err(corrupt("scaling does not match the feature count"));
        }
        let model = ExportedModel {
            job_id: info.job_id.clone(),
            scaling: Scaling {
                mean: scaling_wire.mean,
                std: scaling_wire.std,
            },
            parameters,
            final_metrics: info.final_metrics,
            spec,
        };
        // A trained model's architecture, or an analysis' result length.
        if model.parameters.len() != model.spec.plan().parameter_count {
            return Err(corrupt(
                "parameter count does not match the job's model or analysis",
            ));
        }
        Ok(model)
    }

    /// Writes the model file.
    pub fn write(&self, path: &Path) -> Result<(), ExportError> {
        std::fs::write(path, self.to_bytes()).map_err(|source| ExportError::Io {
            path: path.display().to_string(),
            source,
        })
    }

    /// Reads and verifies a model file.
    pub fn read(path: &Path) -> Result<Self, ExportError> {
        let bytes = std::fs::read(path).map_err(|source| ExportError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }
}
