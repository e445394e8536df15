//! What can go wrong opening, writing or reading a job store, naming the file
//! and the job.

use std::path::PathBuf;

use thiserror::Error;
use veil_federation::store::StoreError;
use veil_sqlite_db::{DbError, rusqlite};

use crate::codec::DescriptorDecodeError;

/// A job store failure.
#[derive(Debug, Error)]
pub enum JobStoreError {
    /// The database could not be opened or its schema brought up to date.
    #[error(transparent)]
    Open(#[from] DbError),
    /// SQLite refused a statement; `context` says which job and which step.
    #[error("{path}: {context}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// What was being done, naming the job when there is one.
        context: String,
        /// SQLite's own error.
        #[source]
        source: rusqlite::Error,
    },
    /// A stored job cannot be turned back into a snapshot.
    #[error("{path}: stored job '{job}' is unreadable: {what}")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// The job.
        job: String,
        /// Which part is wrong, and how.
        what: String,
    },
    /// The caller's codec refused a stored descriptor.
    #[error("{path}: the descriptor of stored job '{job}' does not decode: {source}")]
    Descriptor {
        /// The database file.
        path: PathBuf,
        /// The job.
        job: String,
        /// The codec's error.
        #[source]
        source: DescriptorDecodeError,
    },
    /// A snapshot cannot be stored as it is; nothing was written.
    #[error("cannot store job '{job}': {reason}")]
    InvalidSnapshot {
        /// The job.
        job: String,
        /// Why.
        reason: String,
    },
}

impl From<JobStoreError> for StoreError {
    fn from(error: JobStoreError) -> Self {
        // The engine's boundary carries a message; keep the whole chain in it,
        // since the operator reads it from the coordinator's log.
        let mut message = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            let text = cause.to_string();
            if !message.contains(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            source = cause.source();
        }
        StoreError { message }
    }
}
