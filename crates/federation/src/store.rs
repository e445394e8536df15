//! The storage boundary of the coordinator's durable state.
//!
//! The engine hands out [`JobSnapshot`]s at every committed transition; a
//! store keeps the latest one per job, and [`crate::Engine::restore`] resumes
//! from them. The in-memory store serves tests and single-process runs; a
//! SQLite store implements the same trait for crash recovery.

use std::collections::BTreeMap;

use thiserror::Error;

use crate::JobId;
use crate::engine::{JobSnapshot, RoundRecord};

/// A store failure, named by the backend.
#[derive(Debug, Error)]
#[error("job store: {message}")]
pub struct StoreError {
    /// What went wrong, for the operator.
    pub message: String,
}

/// Where job snapshots are kept.
pub trait JobStore<D> {
    /// Replaces the stored snapshot of `snapshot.id`.
    fn save(&mut self, snapshot: &JobSnapshot<D>) -> Result<(), StoreError>;
    /// Every stored snapshot.
    fn load_all(&self) -> Result<Vec<JobSnapshot<D>>, StoreError>;
    /// The global model of `job` after aggregation `model_version` (0 is the
    /// initial model), if the store keeps that checkpoint.
    fn model_checkpoint(
        &self,
        job: &str,
        model_version: u32,
    ) -> Result<Option<Vec<f32>>, StoreError>;
    /// The completed rounds of `job`'s stored snapshot, in order (empty for
    /// a job the store does not hold): a finished job's history, which the
    /// engine no longer keeps ([`crate::JobStatus::history_in_store`]).
    fn rounds(&self, job: &str) -> Result<Vec<RoundRecord>, StoreError>;
}

/// A store that lives as long as the process.
#[derive(Debug, Default)]
pub struct MemoryStore<D> {
    snapshots: BTreeMap<JobId, JobSnapshot<D>>,
}

impl<D> MemoryStore<D> {
    /// An empty store.
    pub fn new() -> Self {
        Self {
            snapshots: BTreeMap::new(),
        }
    }
}

impl<D: Clone> JobStore<D> for MemoryStore<D> {
    fn save(&mut self, snapshot: &JobSnapshot<D>) -> Result<(), StoreError> {
        self.snapshots.insert(snapshot.id.clone(), snapshot.clone());
        Ok(())
    }

    fn load_all(&self) -> Result<Vec<JobSnapshot<D>>, StoreError> {
        Ok(self.snapshots.values().cloned().collect())
    }

    /// Only the latest model: a process-lifetime store keeps no history.
    fn model_checkpoint(
        &self,
        job: &str,
        model_version: u32,
    ) -> Result<Option<Vec<f32>>, StoreError> {
        Ok(self
            .snapshots
            .get(job)
            .filter(|snapshot| snapshot.model_version == model_version)
            .map(|snapshot| snapshot.global.as_ref().clone()))
    }

    fn rounds(&self, job: &str) -> Result<Vec<RoundRecord>, StoreError> {
        Ok(self
            .snapshots
            .get(job)
            .map(|snapshot| snapshot.history.clone())
            .unwrap_or_default())
    }
}
