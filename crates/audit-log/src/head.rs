//! The signed head checkpoint: the last entry's seq and hash, signed and
//! replaced atomically after each append, so cutting entries off the end of
//! the log is detectable.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::canonical;
use crate::hex;
use crate::key::{AuditPublicKey, AuditSigner};
use crate::lines::{self, SyncPolicy};

/// A signed statement "the log held entries up to `seq`, ending in `hash`".
///
/// Auditors should keep the heads they have seen: an attacker who can write
/// the log's directory can put back an older (genuinely signed) head, and only
/// a head held elsewhere, or a node's receipt, then reveals the truncation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Head {
    /// Seq of the last entry.
    pub seq: u64,
    /// Hash of the last entry.
    #[serde(with = "hex::digest")]
    pub hash: [u8; 32],
    /// The coordinator's signature of the head message (see `canonical`).
    #[serde(with = "hex::bytes")]
    pub signature: Vec<u8>,
}

/// Why a head file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    /// Reading the file failed.
    #[error("audit head file {path}: {source}")]
    Io {
        /// The head file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The file is not a head's JSON.
    #[error("audit head file {path} is malformed: {reason}")]
    Malformed {
        /// The head file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl Head {
    /// Signs a head for the entry `seq` with hash `hash`.
    pub(crate) fn sign(signer: &AuditSigner, seq: u64, hash: [u8; 32]) -> Self {
        Head {
            seq,
            hash,
            signature: signer.sign(&canonical::head_message(seq, &hash)),
        }
    }

    /// Whether the head was signed by `public_key`.
    pub fn is_signed_by(&self, public_key: &AuditPublicKey) -> bool {
        public_key.verifies(
            &canonical::head_message(self.seq, &self.hash),
            &self.signature,
        )
    }

    /// Reads a head file; `Ok(None)` if it does not exist (a log never appended to).
    pub fn read(path: &Path) -> Result<Option<Head>, HeadError> {
        let contents = match std::fs::read(path) {
            Ok(contents) => contents,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(HeadError::Io {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        serde_json::from_slice(&contents)
            .map(Some)
            .map_err(|error| HeadError::Malformed {
                path: path.to_owned(),
                reason: error.to_string(),
            })
    }

    /// Replaces the head file atomically (temporary file, then rename).
    pub(crate) fn write(&self, path: &Path, sync: SyncPolicy) -> io::Result<()> {
        let mut json = serde_json::to_vec(self).map_err(io::Error::other)?;
        json.push(b'\n');
        lines::replace_atomically(path, &json, sync)
    }
}

/// Where a log's head lives: next to it, with `.head` appended to its name.
pub fn head_path_for(log_path: &Path) -> PathBuf {
    let mut name = log_path.as_os_str().to_owned();
    name.push(".head");
    PathBuf::from(name)
}
