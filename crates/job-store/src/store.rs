//! [`SqliteJobStore`]: the engine's [`JobStore`] in one SQLite file.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use veil_federation::store::{JobStore, StoreError};
use veil_federation::{JobPlan, JobSnapshot, JobState, RoundRecord, ServerOptimizer};
use veil_sqlite_db::rusqlite::{
    self, Connection, OptionalExtension, Transaction, TransactionBehavior, params,
};
use veil_sqlite_db::{Migrated, open};

use crate::codec::DescriptorCodec;
use crate::encoding::{
    f32_blob, f32s_from_blob, f64_blob, f64s_from_blob, from_cbor, phase_from_name, phase_name,
    state_columns, state_from_columns, to_cbor,
};
use crate::error::JobStoreError;
use crate::schema::JOB_STORE_SCHEMA;

/// The coordinator's job snapshots and round checkpoints in one SQLite file.
///
/// `D` is the engine's job descriptor, stored through the caller's
/// [`DescriptorCodec`]. The store is `Send` whatever `D` is, so it fits the
/// coordinator's `Box<dyn JobStore<D> + Send>`.
pub struct SqliteJobStore<D> {
    /// One connection: the engine saves from one task at a time (`&mut self`),
    /// and each save is one short immediate transaction, so no pool is needed.
    connection: Connection,
    /// The caller's descriptor encoding, boxed so the store's type names only `D`.
    codec: Box<dyn DescriptorCodec<D> + Send>,
    /// The database file, for error messages.
    path: PathBuf,
    /// What opening did to the schema, for the coordinator's start-up log.
    migrated: Migrated,
    /// The optimiser state last committed for each unfinished job. FedAdam's
    /// moments are two f64 vectors of model size whose CBOR encoding costs
    /// about 100 ms at 10^6 parameters, and they change only with the model
    /// (one save in three), so an equal state is neither encoded nor written
    /// again. Only this store writes the file (one coordinator; see
    /// docs/coordinator-state.md), so the cache cannot go stale.
    committed_optimizers: HashMap<String, ServerOptimizer>,
}

impl<D> std::fmt::Debug for SqliteJobStore<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteJobStore")
            .field("path", &self.path)
            .field("migrated", &self.migrated)
            .finish_non_exhaustive()
    }
}

/// The parts of a snapshot in their stored form, computed before the write
/// lock is taken so the transaction only writes.
struct EncodedSnapshot<'a> {
    job: &'a str,
    descriptor: Vec<u8>,
    plan: Vec<u8>,
    state: &'static str,
    failure_reason: Option<&'a str>,
    cursor_round: u32,
    cursor_phase: &'static str,
    model_version: u32,
    parameters: Vec<u8>,
    /// `None` when equal to the committed state.
    optimizer: Option<Vec<u8>>,
    feature_statistics: Option<Vec<u8>>,
    pending_train: Option<Vec<u8>>,
    /// `(round, record)` in history order.
    rounds: Vec<(u32, Vec<u8>)>,
}

impl<'a> EncodedSnapshot<'a> {
    fn new<D>(
        snapshot: &'a JobSnapshot<D>,
        codec: &dyn DescriptorCodec<D>,
        committed_optimizer: Option<&ServerOptimizer>,
    ) -> Result<Self, JobStoreError> {
        let job = snapshot.id.as_str();
        let invalid = |reason: String| JobStoreError::InvalidSnapshot {
            job: job.to_owned(),
            reason,
        };
        let cbor = |what: &str, bytes: Result<Vec<u8>, String>| {
            bytes.map_err(|message| invalid(format!("encoding its {what}: {message}")))
        };
        // Rounds are keyed by number, so a history out of order or with a
        // repeat could not be read back as it was given.
        let mut rounds = Vec::with_capacity(snapshot.history.len());
        let mut previous: Option<u32> = None;
        for record in &snapshot.history {
            if previous.is_some_and(|previous| record.round <= previous) {
                return Err(invalid(format!(
                    "its history lists round {} after round {}",
                    record.round,
                    previous.unwrap_or_default()
                )));
            }
            previous = Some(record.round);
            rounds.push((record.round, cbor("round record", to_cbor(record))?));
        }
        let (state, failure_reason) = state_columns(&snapshot.state);
        let (cursor_round, cursor_phase) = snapshot.cursor;
        Ok(Self {
            job,
            descriptor: codec.encode(&snapshot.descriptor),
            plan: cbor("plan", to_cbor(&snapshot.plan))?,
            state,
            failure_reason,
            cursor_round,
            cursor_phase: phase_name(cursor_phase),
            model_version: snapshot.model_version,
            parameters: f32_blob(&snapshot.global),
            optimizer: if committed_optimizer == Some(&snapshot.optimizer) {
                None
            } else {
                Some(cbor("optimizer state", to_cbor(&snapshot.optimizer))?)
            },
            feature_statistics: snapshot
                .feature_statistics
                .as_deref()
                .map(|statistics| f64_blob(statistics)),
            pending_train: snapshot
                .pending_train
                .as_ref()
                .map(|record| cbor("pending training record", to_cbor(record)))
                .transpose()?,
            rounds,
        })
    }

    /// Writes the snapshot inside `transaction`, in the order the crate docs
    /// describe; the caller commits.
    fn write(&self, transaction: &Transaction<'_>, now: i64) -> Result<(), FailedStep> {
        // An upsert, never INSERT OR REPLACE: replacing would delete the row
        // and cascade to the job's checkpoints and rounds.
        transaction
            .execute(
                "INSERT INTO jobs (job_id, descriptor, plan, state, failure_reason, cursor_round,
                     cursor_phase, model_version, feature_statistics, pending_train,
                     updated_at_unix_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT (job_id) DO UPDATE SET
                     descriptor = excluded.descriptor, plan = excluded.plan,
                     state = excluded.state, failure_reason = excluded.failure_reason,
                     cursor_round = excluded.cursor_round, cursor_phase = excluded.cursor_phase,
                     model_version = excluded.model_version,
                     feature_statistics = excluded.feature_statistics,
                     pending_train = excluded.pending_train,
                     updated_at_unix_ms = excluded.updated_at_unix_ms",
                params![
                    self.job,
                    self.descriptor,
                    self.plan,
                    self.state,
                    self.failure_reason,
                    self.cursor_round,
                    self.cursor_phase,
                    self.model_version,
                    self.feature_statistics,
                    self.pending_train,
                    now,
                ],
            )
            .map_err(failed("writing the job row"))?;
        // Large blobs are written only when they changed: two saves in three
        // (phase opened, evaluation done) leave the model as it was, and the
        // comparison reads pages SQLite caches instead of appending megabytes
        // to the WAL.
        if let Some(optimizer) = &self.optimizer {
            transaction
                .execute(
                    "INSERT INTO optimizer_states (job_id, state) VALUES (?1, ?2)
                     ON CONFLICT (job_id) DO UPDATE SET state = excluded.state
                         WHERE state IS NOT excluded.state",
                    params![self.job, optimizer],
                )
                .map_err(failed("writing the optimiser state"))?;
        }
        transaction
            .execute(
                "INSERT INTO model_checkpoints (job_id, model_version, parameters, saved_at_unix_ms)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (job_id, model_version) DO UPDATE SET
                     parameters = excluded.parameters, saved_at_unix_ms = excluded.saved_at_unix_ms
                     WHERE parameters IS NOT excluded.parameters",
                params![self.job, self.model_version, self.parameters, now],
            )
            .map_err(failed("writing the model checkpoint"))?;
        transaction
            .execute(
                "DELETE FROM model_checkpoints WHERE job_id = ?1 AND model_version > ?2",
                params![self.job, self.model_version],
            )
            .map_err(failed("removing checkpoints newer than the snapshot"))?;
        let mut upsert_round = transaction
            .prepare(
                "INSERT INTO rounds (job_id, round, model_version, record, saved_at_unix_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (job_id, round) DO UPDATE SET
                     model_version = excluded.model_version, record = excluded.record,
                     saved_at_unix_ms = excluded.saved_at_unix_ms
                     WHERE record IS NOT excluded.record",
            )
            .map_err(failed("preparing the round write"))?;
        for (round, record) in &self.rounds {
            upsert_round
                .execute(params![self.job, round, self.model_version, record, now])
                .map_err(failed("writing a round record"))?;
        }
        let kept: BTreeSet<u32> = self.rounds.iter().map(|(round, _)| *round).collect();
        let stored: Vec<i64> = transaction
            .prepare("SELECT round FROM rounds WHERE job_id = ?1")
            .and_then(|mut statement| {
                statement
                    .query_map(params![self.job], |row| row.get(0))?
                    .collect()
            })
            .map_err(failed("listing stored rounds"))?;
        let mut delete_round = transaction
            .prepare("DELETE FROM rounds WHERE job_id = ?1 AND round = ?2")
            .map_err(failed("preparing the round removal"))?;
        for round in stored {
            let in_history = u32::try_from(round).is_ok_and(|round| kept.contains(&round));
            if !in_history {
                delete_round
                    .execute(params![self.job, round])
                    .map_err(failed("removing a round the snapshot does not have"))?;
            }
        }
        Ok(())
    }
}

/// The statement of a save that SQLite refused.
struct FailedStep {
    /// What the save was doing, for the error message.
    step: &'static str,
    source: rusqlite::Error,
}

/// Names the step for an error of SQLite.
fn failed(step: &'static str) -> impl FnOnce(rusqlite::Error) -> FailedStep {
    move |source| FailedStep { step, source }
}

/// Milliseconds since the Unix epoch, for the `*_at_unix_ms` columns; they
/// inform operators and are never read back into a snapshot.
fn unix_millis_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl<D> SqliteJobStore<D> {
    /// Opens (creating if needed) the store at `path`: WAL, `synchronous =
    /// FULL`, schema migrated to the latest version by `veil-sqlite-db`.
    pub fn open(
        path: &Path,
        codec: impl DescriptorCodec<D> + Send + 'static,
    ) -> Result<Self, JobStoreError> {
        let (connection, migrated) = open(path, &JOB_STORE_SCHEMA)?;
        Ok(Self {
            connection,
            codec: Box::new(codec),
            path: path.to_path_buf(),
            migrated,
            committed_optimizers: HashMap::new(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema versions found and reached when the store was opened.
    pub fn migrated(&self) -> Migrated {
        self.migrated
    }

    /// Replaces the stored snapshot of `snapshot.id` in one transaction: after
    /// a crash the file holds either the previous snapshot or this one, whole.
    ///
    /// The model version of the snapshot is added to the job's checkpoints
    /// (earlier versions are kept); versions after it and rounds missing from
    /// its history are removed, so the stored job is exactly this snapshot
    /// even when a job id is reused or a job is rewound.
    pub fn save_snapshot(&mut self, snapshot: &JobSnapshot<D>) -> Result<(), JobStoreError> {
        let encoded = EncodedSnapshot::new(
            snapshot,
            self.codec.as_ref(),
            self.committed_optimizers.get(&snapshot.id),
        )?;
        let job = encoded.job;
        let path = &self.path;
        let sqlite = |step: &'static str| {
            move |source| JobStoreError::Sqlite {
                path: path.clone(),
                context: format!("saving job '{job}': {step}"),
                source,
            }
        };
        // Immediate: take the write lock at BEGIN, so the transaction never
        // has to upgrade a read lock and fail with SQLITE_BUSY half-way.
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite("beginning the transaction"))?;
        encoded
            .write(&transaction, unix_millis_now())
            .map_err(|FailedStep { step, source }| sqlite(step)(source))?;
        transaction
            .commit()
            .map_err(sqlite("committing the transaction"))?;
        // A finished job is not saved again; do not hold its state.
        let finished = matches!(
            snapshot.state,
            JobState::Succeeded | JobState::Failed { .. } | JobState::Cancelled
        );
        if finished {
            self.committed_optimizers.remove(&snapshot.id);
        } else if encoded.optimizer.is_some() {
            self.committed_optimizers
                .insert(snapshot.id.clone(), snapshot.optimizer.clone());
        }
        Ok(())
    }

    /// Every stored job, read in one transaction so the tables agree, in
    /// job-id order. A job that cannot be read back fails the whole load with
    /// an error naming it: resuming the others silently would lose it.
    pub fn load_snapshots(&self) -> Result<Vec<JobSnapshot<D>>, JobStoreError> {
        let sqlite = |context: String| {
            move |source| JobStoreError::Sqlite {
                path: self.path.clone(),
                context,
                source,
            }
        };
        // Deferred: a read transaction, which in WAL mode sees one consistent
        // state while a writer may go on.
        let transaction = self
            .connection
            .unchecked_transaction()
            .map_err(sqlite("beginning the read transaction".to_owned()))?;
        let rows = transaction
            .prepare(
                "SELECT jobs.job_id, descriptor, plan, jobs.state, failure_reason, cursor_round,
                     cursor_phase, model_version, feature_statistics, pending_train,
                     optimizer_states.state
                 FROM jobs LEFT JOIN optimizer_states USING (job_id)
                 ORDER BY jobs.job_id",
            )
            .and_then(|mut statement| {
                statement
                    .query_map([], |row| {
                        Ok(StoredJob {
                            job: row.get(0)?,
                            descriptor: row.get(1)?,
                            plan: row.get(2)?,
                            state: row.get(3)?,
                            failure_reason: row.get(4)?,
                            cursor_round: row.get(5)?,
                            cursor_phase: row.get(6)?,
                            model_version: row.get(7)?,
                            feature_statistics: row.get(8)?,
                            pending_train: row.get(9)?,
                            optimizer: row.get(10)?,
                        })
                    })?
                    .collect::<rusqlite::Result<Vec<StoredJob>>>()
            })
            .map_err(sqlite("listing jobs".to_owned()))?;
        let mut snapshots = Vec::with_capacity(rows.len());
        for stored in rows {
            let job = stored.job.clone();
            let corrupt = |what: String| JobStoreError::Corrupt {
                path: self.path.clone(),
                job: job.clone(),
                what,
            };
            let model_version = u32::try_from(stored.model_version)
                .map_err(|_| corrupt(format!("model version {}", stored.model_version)))?;
            let parameters: Option<Vec<f32>> = transaction
                .query_row(
                    "SELECT parameters FROM model_checkpoints
                     WHERE job_id = ?1 AND model_version = ?2",
                    params![job, model_version],
                    |row| Ok(f32s_from_blob(row.get_ref(0)?.as_blob()?)),
                )
                .optional()
                .map_err(sqlite(format!(
                    "loading job '{job}': reading model version {model_version}"
                )))?
                .transpose()
                .map_err(|what| corrupt(format!("model version {model_version}: {what}")))?;
            let parameters = parameters.ok_or_else(|| {
                corrupt(format!(
                    "no checkpoint of its model version {model_version}"
                ))
            })?;
            let records = self.read_rounds(&transaction, &job)?;
            snapshots.push(self.decode(stored, model_version, parameters, records)?);
        }
        Ok(snapshots)
    }

    /// The global model of `job` at `model_version`, if that checkpoint is
    /// stored: version 0 is the initial model, version v the model after the
    /// v-th aggregation (after round v's training, in the engine).
    pub fn model_checkpoint(
        &self,
        job: &str,
        model_version: u32,
    ) -> Result<Option<Vec<f32>>, JobStoreError> {
        self.connection
            .query_row(
                "SELECT parameters FROM model_checkpoints WHERE job_id = ?1 AND model_version = ?2",
                params![job, model_version],
                |row| Ok(f32s_from_blob(row.get_ref(0)?.as_blob()?)),
            )
            .optional()
            .map_err(|source| JobStoreError::Sqlite {
                path: self.path.clone(),
                context: format!("reading job '{job}' model version {model_version}"),
                source,
            })?
            .transpose()
            .map_err(|what| JobStoreError::Corrupt {
                path: self.path.clone(),
                job: job.to_owned(),
                what: format!("model version {model_version}: {what}"),
            })
    }

    /// The model versions stored for `job`, oldest first.
    pub fn model_versions(&self, job: &str) -> Result<Vec<u32>, JobStoreError> {
        let sqlite = |source| JobStoreError::Sqlite {
            path: self.path.clone(),
            context: format!("listing the checkpoints of job '{job}'"),
            source,
        };
        let versions: Vec<i64> = self
            .connection
            .prepare(
                "SELECT model_version FROM model_checkpoints WHERE job_id = ?1
                 ORDER BY model_version",
            )
            .and_then(|mut statement| {
                statement
                    .query_map(params![job], |row| row.get(0))?
                    .collect()
            })
            .map_err(sqlite)?;
        versions
            .into_iter()
            .map(|version| {
                u32::try_from(version).map_err(|_| JobStoreError::Corrupt {
                    path: self.path.clone(),
                    job: job.to_owned(),
                    what: format!("model version {version}"),
                })
            })
            .collect()
    }

    /// One job's stored round records, read in round order.
    fn read_rounds(
        &self,
        connection: &Connection,
        job: &str,
    ) -> Result<Vec<(i64, Vec<u8>)>, JobStoreError> {
        connection
            .prepare("SELECT round, record FROM rounds WHERE job_id = ?1 ORDER BY round")
            .and_then(|mut statement| {
                statement
                    .query_map(params![job], |row| Ok((row.get(0)?, row.get(1)?)))?
                    .collect()
            })
            .map_err(|source| JobStoreError::Sqlite {
                path: self.path.clone(),
                context: format!("loading job '{job}': reading its rounds"),
                source,
            })
    }

    /// Round records decoded, each checked to be the round it is stored as.
    fn decode_rounds(
        &self,
        job: &str,
        records: Vec<(i64, Vec<u8>)>,
    ) -> Result<Vec<RoundRecord>, JobStoreError> {
        let corrupt = |what: String| JobStoreError::Corrupt {
            path: self.path.clone(),
            job: job.to_owned(),
            what,
        };
        records
            .into_iter()
            .map(|(round, bytes)| {
                let record: RoundRecord =
                    from_cbor(&bytes).map_err(|what| corrupt(format!("round {round}: {what}")))?;
                if i64::from(record.round) != round {
                    return Err(corrupt(format!(
                        "the record stored as round {round} is for round {}",
                        record.round
                    )));
                }
                Ok(record)
            })
            .collect()
    }

    /// The completed rounds of `job` as last saved, in order (empty for a
    /// job the file does not hold).
    pub fn rounds(&self, job: &str) -> Result<Vec<RoundRecord>, JobStoreError> {
        let records = self.read_rounds(&self.connection, job)?;
        self.decode_rounds(job, records)
    }

    /// Turns one job's stored columns back into its snapshot.
    fn decode(
        &self,
        stored: StoredJob,
        model_version: u32,
        parameters: Vec<f32>,
        records: Vec<(i64, Vec<u8>)>,
    ) -> Result<JobSnapshot<D>, JobStoreError> {
        let job = stored.job;
        let corrupt = |what: String| JobStoreError::Corrupt {
            path: self.path.clone(),
            job: job.clone(),
            what,
        };
        let descriptor =
            self.codec
                .decode(&stored.descriptor)
                .map_err(|source| JobStoreError::Descriptor {
                    path: self.path.clone(),
                    job: job.clone(),
                    source,
                })?;
        let plan: JobPlan =
            from_cbor(&stored.plan).map_err(|what| corrupt(format!("plan: {what}")))?;
        if parameters.len() != plan.parameter_count {
            return Err(corrupt(format!(
                "model version {model_version} has {} parameters, its plan says {}",
                parameters.len(),
                plan.parameter_count
            )));
        }
        let state = state_from_columns(&stored.state, stored.failure_reason).map_err(&corrupt)?;
        let cursor_round = u32::try_from(stored.cursor_round)
            .map_err(|_| corrupt(format!("cursor round {}", stored.cursor_round)))?;
        let cursor_phase = phase_from_name(&stored.cursor_phase)
            .ok_or_else(|| corrupt(format!("cursor phase '{}'", stored.cursor_phase)))?;
        let optimizer: ServerOptimizer = stored
            .optimizer
            .ok_or_else(|| corrupt("no optimiser state".to_owned()))
            .and_then(|bytes| {
                from_cbor(&bytes).map_err(|what| corrupt(format!("optimiser state: {what}")))
            })?;
        let feature_statistics = stored
            .feature_statistics
            .map(|bytes| f64s_from_blob(&bytes).map(Arc::new))
            .transpose()
            .map_err(|what| corrupt(format!("feature statistics: {what}")))?;
        let pending_train: Option<RoundRecord> = stored
            .pending_train
            .map(|bytes| from_cbor(&bytes))
            .transpose()
            .map_err(|what| corrupt(format!("pending training record: {what}")))?;
        let history = self.decode_rounds(&job, records)?;
        Ok(JobSnapshot {
            id: job.clone(),
            plan,
            descriptor,
            state,
            global: Arc::new(parameters),
            model_version,
            optimizer,
            feature_statistics,
            history,
            cursor: (cursor_round, cursor_phase),
            pending_train,
        })
    }
}

/// One row of `jobs` joined with its optimiser state, as SQLite returned it.
struct StoredJob {
    job: String,
    descriptor: Vec<u8>,
    plan: Vec<u8>,
    state: String,
    failure_reason: Option<String>,
    cursor_round: i64,
    cursor_phase: String,
    model_version: i64,
    feature_statistics: Option<Vec<u8>>,
    pending_train: Option<Vec<u8>>,
    optimizer: Option<Vec<u8>>,
}

impl<D> JobStore<D> for SqliteJobStore<D> {
    fn save(&mut self, snapshot: &JobSnapshot<D>) -> Result<(), StoreError> {
        Ok(self.save_snapshot(snapshot)?)
    }

    fn load_all(&self) -> Result<Vec<JobSnapshot<D>>, StoreError> {
        Ok(self.load_snapshots()?)
    }

    fn model_checkpoint(
        &self,
        job: &str,
        model_version: u32,
    ) -> Result<Option<Vec<f32>>, StoreError> {
        // The inherent method of the same name reads the checkpoint table.
        Ok(SqliteJobStore::model_checkpoint(self, job, model_version)?)
    }

    fn rounds(&self, job: &str) -> Result<Vec<RoundRecord>, StoreError> {
        Ok(SqliteJobStore::rounds(self, job)?)
    }
}
