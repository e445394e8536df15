//! The coordinator's shared state: the engine behind a lock, the wake-up
//! signal for long polls and the deadline timer, the event fan-out, and the
//! job store.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use tokio::sync::{Notify, broadcast};
use veil_federation::store::JobStore;
use veil_federation::{Engine, EngineError, EngineEvent, EventKind, JobStatus};
use veil_job::JobSpec;

use crate::audit::AuditTrail;
use crate::metrics::EventMetrics;
use crate::privacy::PrivacyGuard;
use crate::spans::EventSpans;

/// Everything the services share.
pub(crate) struct Shared {
    /// A std mutex, not tokio's: every engine call is short and synchronous,
    /// and the guard is never held across an `.await`.
    engine: Mutex<Engine<JobSpec>>,
    /// Signalled whenever the engine emitted events, which is exactly when a
    /// task may have appeared or a deadline moved: long polls and the timer
    /// re-check then, and not on every call (that would spin).
    pub(crate) changed: Notify,
    /// Progress events for `WatchJob` streams. Lagging watchers skip events
    /// and re-read the status, so a slow operator cannot stall the engine.
    pub(crate) events: broadcast::Sender<EngineEvent>,
    /// Durable snapshots, written at every committed transition.
    store: Mutex<Box<dyn JobStore<JobSpec> + Send>>,
    /// The privacy ledger and budget gate, consulted inside the engine lock.
    pub(crate) privacy: Mutex<PrivacyGuard>,
    /// The signed, hash-chained audit log.
    pub(crate) audit: Arc<Mutex<AuditTrail>>,
    /// The Prometheus metrics, updated from the same events, under the
    /// engine lock (after the privacy guard, so ε gauges see new charges).
    pub(crate) metrics: Mutex<EventMetrics>,
    /// The open job, round and phase spans, advanced by the same events under the engine
    /// lock, so a span ends exactly when its event says it did.
    spans: Mutex<EventSpans>,
    /// The software version each node announced at its last registration,
    /// for the console's federation page. Not in the engine: it decides
    /// nothing. A std mutex, held for one map access.
    pub(crate) node_versions: Mutex<std::collections::BTreeMap<String, String>>,
    /// Held while receipts a node acknowledged are issued again from the whole log, read
    /// and verified anew: one such read at a time, however many nodes ask (a tokio mutex,
    /// held across the read).
    pub(crate) receipt_reissues: tokio::sync::Mutex<()>,
}

impl Shared {
    /// The global model of `job` after aggregation `model_version`, from the
    /// durable store (`None` when it keeps no such checkpoint).
    pub(crate) fn model_checkpoint(
        &self,
        job: &str,
        model_version: u32,
    ) -> Result<Option<Vec<f32>>, veil_federation::store::StoreError> {
        lock(&self.store).model_checkpoint(job, model_version)
    }

    /// A succeeded job's final model and its version: from the engine while
    /// it holds it, else from the job store's checkpoint of that version
    /// (the engine releases an ended job's model once it is stored).
    pub(crate) fn final_model(&self, job: &str) -> Result<(Arc<Vec<f32>>, u32), StoredJobError> {
        let held = self.read(|engine| {
            let version = engine.final_model_version(job)?;
            match engine.final_model(job) {
                Ok(model) => Ok((Some(model), version)),
                Err(EngineError::ModelInStore { .. }) => Ok((None, version)),
                Err(error) => Err(error),
            }
        })?;
        match held {
            (Some(model), version) => Ok((model, version)),
            (None, version) => {
                let model = self.model_checkpoint(job, version)?.ok_or_else(|| {
                    StoredJobError::NotStored {
                        job: job.to_owned(),
                        model_version: version,
                    }
                })?;
                Ok((Arc::new(model), version))
            }
        }
    }

    /// A job's status with its completed rounds after the first `known`:
    /// from the engine, or from the job store once the engine has released
    /// a finished job's history ([`JobStatus::history_in_store`]).
    pub(crate) fn status_after(
        &self,
        job: &str,
        known: usize,
    ) -> Result<JobStatus, StoredJobError> {
        let mut status = self.read(|engine| engine.status_after(job, known))?;
        if status.history_in_store {
            // After the engine's lock is released (a finished job's rounds no
            // longer change): commits take the store's lock inside the
            // engine's, so holding neither while waiting for the other keeps
            // the order.
            let rounds = lock(&self.store).rounds(job)?;
            status.history = rounds.into_iter().skip(known).collect();
        }
        Ok(status)
    }

    /// [`Self::status_after`] with every completed round.
    pub(crate) fn status(&self, job: &str) -> Result<JobStatus, StoredJobError> {
        self.status_after(job, 0)
    }

    pub(crate) fn new(
        engine: Engine<JobSpec>,
        store: Box<dyn JobStore<JobSpec> + Send>,
        privacy: PrivacyGuard,
        audit: Arc<Mutex<AuditTrail>>,
        metrics: EventMetrics,
    ) -> Self {
        let (events, _) = broadcast::channel(1024);
        Self {
            engine: Mutex::new(engine),
            changed: Notify::new(),
            events,
            store: Mutex::new(store),
            privacy: Mutex::new(privacy),
            audit,
            metrics: Mutex::new(metrics),
            spans: Mutex::default(),
            node_versions: Mutex::default(),
            receipt_reissues: tokio::sync::Mutex::new(()),
        }
    }

    /// Runs `operation` on the engine with the current time, then publishes,
    /// logs and persists whatever it caused.
    pub(crate) fn with_engine<R>(
        &self,
        operation: impl FnOnce(&mut Engine<JobSpec>, Instant) -> R,
    ) -> R {
        let mut engine = lock(&self.engine);
        let now = Instant::now();
        let result = operation(&mut engine, now);
        let mut durable_changes = BTreeSet::new();
        let mut any_event = false;
        let mut privacy = lock(&self.privacy);
        let mut audit = lock(&self.audit);
        let mut metrics = lock(&self.metrics);
        let mut spans = lock(&self.spans);
        while let Some(event) = engine.poll_event() {
            any_event = true;
            spans.record(&event);
            // May refuse the round or record its charges; its own events
            // come out of this same loop.
            let outcome = privacy.observe(&mut engine, &event, now);
            metrics.observe(&engine, &privacy, &event, &outcome, now);
            if let Err(blocked) = audit.observe(&engine, &event, &outcome) {
                // A release the audit log does not hold must not happen:
                // the job stops before its model can be read.
                tracing::error!(job = %event.job, %blocked, "stopping the job");
                if let Err(error) = engine.fail_job(&event.job, blocked.to_string(), now) {
                    tracing::error!(job = %event.job, %error, "could not stop the job");
                }
            }
            if !matches!(
                event.kind,
                EventKind::ReplyRejected { .. }
                    | EventKind::WaitingForNodes { .. }
                    | EventKind::SecureStepOpened { .. }
                    | EventKind::NodeDeclined { .. }
            ) {
                durable_changes.insert(event.job.clone());
            }
            // No receivers is normal when nobody watches.
            let _ = self.events.send(event);
        }
        for job in durable_changes {
            if let Ok(snapshot) = engine.snapshot(&job) {
                match lock(&self.store).save(&snapshot) {
                    // The store now holds the ended job's model and history: the
                    // engine keeps only its summary, so a week of jobs does not
                    // grow the coordinator (exports read the model from the store).
                    Ok(()) if snapshot.state.is_terminal() => {
                        if let Err(error) = engine.release_finished_job(&job) {
                            tracing::error!(job = %job, %error, "could not release an ended job");
                        }
                    }
                    Ok(()) => {}
                    Err(error) => {
                        tracing::error!(job = %job, %error, "could not persist job snapshot");
                    }
                }
            }
        }
        // Every call, so the node gauges follow registrations, heartbeats
        // and (through the deadline timer's ticks) silence.
        metrics.observe_nodes(&engine, now);
        drop(spans);
        drop(metrics);
        drop(audit);
        drop(privacy);
        drop(engine);
        if any_event {
            self.changed.notify_waiters();
        }
        result
    }

    /// Reads the engine without advancing it.
    pub(crate) fn read<R>(&self, operation: impl FnOnce(&Engine<JobSpec>) -> R) -> R {
        operation(&lock(&self.engine))
    }
}

/// Why a finished job's model or round history cannot be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoredJobError {
    /// No such job, or it did not succeed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Reading the job store failed.
    #[error(transparent)]
    Store(#[from] veil_federation::store::StoreError),
    /// The store holds no checkpoint of the final version (its last save failed).
    #[error(
        "the job store keeps no checkpoint of job {job}'s final model (version {model_version})"
    )]
    NotStored {
        /// Job id.
        job: String,
        /// The final model's version.
        model_version: u32,
    },
}

/// A poisoned lock means a panic elsewhere; the engine's invariants hold
/// between calls, so carrying on is safer than taking the server down.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
