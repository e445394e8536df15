//! What the engine's events mean for the coordinator's Prometheus metrics:
//! rounds started, committed, failed and refused, phase durations,
//! secure-aggregation dropouts and recoveries, declines, and the ε gauges.
//! Called inside the engine lock with the same events the audit trail and
//! `watch` see, so the three never disagree about what happened.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

use veil_federation::{AggregationMode, Engine, EngineEvent, EventKind, JobId, Phase};
use veil_job::JobSpec;
use veil_metrics::{CoordinatorMetrics, EpsilonLabels, JobLabels, PhaseLabels};
use veil_privacy_ledger::PrivacyUnit;

use crate::member_limits::ConnectionSlot;
use crate::privacy::{PrivacyGuard, PrivacyOutcome};

/// How long a finished job's per-job series (round counters, ε gauges) stay
/// exposed: long enough for scrapes every 15 to 60 s to see its final values
/// several times. Then they are removed, so a coordinator that runs jobs for
/// months neither grows job after job nor exposes an ever longer page; the
/// figures stay in the ledger, the audit log and `coordinator status`.
pub(crate) const FINISHED_SERIES_GRACE: Duration = Duration::from_secs(120);

/// Finished jobs whose series are exposed at most, however recent: many
/// short jobs within the grace period must not grow the page without bound.
pub(crate) const FINISHED_JOBS_EXPOSED: usize = 32;

/// The metrics and the little they remember between events.
pub(crate) struct EventMetrics {
    pub(crate) metrics: Arc<CoordinatorMetrics>,
    /// When each phase under way first opened, for its duration.
    phase_opened: HashMap<(JobId, u32, Phase), Instant>,
    /// Training rounds started and not yet ended, per job, so a job that
    /// fails mid-round counts that round as failed exactly once.
    open_rounds: HashMap<JobId, BTreeSet<u32>>,
    /// The (partner, unit) pairs of each job's ε gauges, to remove them.
    epsilon_series: HashMap<JobId, BTreeSet<(String, String)>>,
    /// Finished jobs whose series are exposed, with when they finished,
    /// oldest first.
    finished: VecDeque<(JobId, Instant)>,
}

impl EventMetrics {
    pub(crate) fn new(metrics: Arc<CoordinatorMetrics>) -> Self {
        Self {
            metrics,
            phase_opened: HashMap::new(),
            open_rounds: HashMap::new(),
            epsilon_series: HashMap::new(),
            finished: VecDeque::new(),
        }
    }

    /// Notes that `job` finished at `now`: its series stay for
    /// [`FINISHED_SERIES_GRACE`] (or until [`FINISHED_JOBS_EXPOSED`] later
    /// jobs have finished).
    fn job_finished(&mut self, job: &str, now: Instant) {
        if !self.finished.iter().any(|(finished, _)| finished == job) {
            self.finished.push_back((job.to_owned(), now));
        }
        self.retire_finished(now);
    }

    /// Removes the series of finished jobs past their grace period, and of
    /// the oldest beyond [`FINISHED_JOBS_EXPOSED`].
    fn retire_finished(&mut self, now: Instant) {
        while let Some((_, finished_at)) = self.finished.front() {
            let expired = now.saturating_duration_since(*finished_at) >= FINISHED_SERIES_GRACE;
            if !expired && self.finished.len() <= FINISHED_JOBS_EXPOSED {
                break;
            }
            let Some((oldest, _)) = self.finished.pop_front() else {
                break;
            };
            let labels = JobLabels::new(&oldest);
            for family in [
                &self.metrics.rounds_started,
                &self.metrics.rounds_committed,
                &self.metrics.rounds_failed,
                &self.metrics.rounds_refused,
            ] {
                family.remove(&labels);
            }
            let mut epsilon: Vec<(String, String)> = [PrivacyUnit::Customer, PrivacyUnit::Partner]
                .into_iter()
                .map(|unit| (String::new(), unit.name().to_owned()))
                .collect();
            epsilon.extend(self.epsilon_series.remove(&oldest).unwrap_or_default());
            for (partner, unit) in epsilon {
                let labels = EpsilonLabels {
                    job: oldest.clone(),
                    partner,
                    unit,
                };
                self.metrics.epsilon_spent.remove(&labels);
                self.metrics.epsilon_budget.remove(&labels);
            }
        }
    }

    /// Counts one event, after the privacy guard reacted to it.
    pub(crate) fn observe(
        &mut self,
        engine: &Engine<JobSpec>,
        privacy: &PrivacyGuard,
        event: &EngineEvent,
        outcome: &PrivacyOutcome,
        now: Instant,
    ) {
        self.retire_finished(now);
        let job = &event.job;
        let metrics = Arc::clone(&self.metrics);
        let job_labels = JobLabels::new(job);
        match &event.kind {
            EventKind::Submitted => self.record_budget(engine, job),
            EventKind::PhaseOpened {
                round,
                phase,
                attempt,
                ..
            } => {
                self.phase_opened
                    .entry((job.clone(), *round, *phase))
                    .or_insert(now);
                if *phase == Phase::Train && *attempt == 1 {
                    let started = self.open_rounds.entry(job.clone()).or_default();
                    if started.insert(*round) {
                        metrics.rounds_started.get_or_create(&job_labels).inc();
                    }
                }
            }
            EventKind::PhaseCompleted {
                round,
                phase,
                dropped,
                ..
            } => {
                self.observe_phase_end(job, *round, *phase, now);
                if is_secure(engine, job) && !dropped.is_empty() {
                    let labels = PhaseLabels::new(phase);
                    metrics
                        .secure_dropouts
                        .get_or_create(&labels)
                        .inc_by(dropped.len() as u64);
                    metrics.secure_recoveries.get_or_create(&labels).inc();
                }
            }
            EventKind::PhaseAbandoned { round, phase, .. } => {
                self.observe_phase_end(job, *round, *phase, now);
            }
            EventKind::SecureRoundFailed { phase, .. } => {
                metrics
                    .secure_failed_attempts
                    .get_or_create(&PhaseLabels::new(phase))
                    .inc();
            }
            EventKind::NodeDeclined { phase, .. } => {
                metrics
                    .declines
                    .get_or_create(&PhaseLabels::new(phase))
                    .inc();
            }
            EventKind::ReplyRejected { phase, .. } => {
                metrics
                    .replies_rejected
                    .get_or_create(&PhaseLabels::new(phase))
                    .inc();
            }
            EventKind::RoundCompleted(record) => {
                self.close_round(job, record.round);
                if record.abandoned.is_some() {
                    metrics.rounds_failed.get_or_create(&job_labels).inc();
                } else {
                    metrics.rounds_committed.get_or_create(&job_labels).inc();
                }
            }
            EventKind::RoundRefused { round, .. } => {
                self.close_round(job, *round);
                metrics.rounds_refused.get_or_create(&job_labels).inc();
            }
            EventKind::Failed { .. } | EventKind::Cancelled | EventKind::Succeeded => {
                let unfinished = self
                    .open_rounds
                    .remove(job)
                    .map_or(0, |rounds| rounds.len());
                if matches!(event.kind, EventKind::Failed { .. }) && unfinished > 0 {
                    metrics
                        .rounds_failed
                        .get_or_create(&job_labels)
                        .inc_by(unfinished as u64);
                }
                self.phase_opened
                    .retain(|(phase_job, _, _), _| phase_job != job);
                self.job_finished(job, now);
            }
            EventKind::Started
            | EventKind::WaitingForNodes { .. }
            | EventKind::SecureStepOpened { .. } => {}
        }
        if !outcome.charged.is_empty() {
            self.record_epsilon(engine, privacy, job);
        }
    }

    /// The live and registered node counts at `now`.
    pub(crate) fn observe_nodes(&self, engine: &Engine<JobSpec>, now: Instant) {
        let activity = engine.node_activity(now);
        let live = activity.iter().filter(|node| node.live).count();
        self.metrics.connected_nodes.set(live as i64);
        self.metrics.registered_nodes.set(activity.len() as i64);
    }

    fn observe_phase_end(&mut self, job: &str, round: u32, phase: Phase, now: Instant) {
        if let Some(opened) = self.phase_opened.remove(&(job.to_owned(), round, phase)) {
            self.metrics
                .phase_duration
                .get_or_create(&PhaseLabels::new(phase))
                .observe(now.saturating_duration_since(opened).as_secs_f64());
        }
    }

    fn close_round(&mut self, job: &str, round: u32) {
        if let Some(rounds) = self.open_rounds.get_mut(job) {
            rounds.remove(&round);
        }
    }

    fn record_budget(&self, engine: &Engine<JobSpec>, job: &str) {
        let Ok(spec) = engine.descriptor(job) else {
            return;
        };
        let budget = spec.privacy.job_budget(job);
        for unit in [PrivacyUnit::Customer, PrivacyUnit::Partner] {
            self.metrics
                .epsilon_budget
                .get_or_create(&EpsilonLabels {
                    job: job.to_owned(),
                    partner: String::new(),
                    unit: unit.name().to_owned(),
                })
                .set(budget.for_unit(unit).epsilon);
        }
    }

    fn record_epsilon(&mut self, engine: &Engine<JobSpec>, privacy: &PrivacyGuard, job: &str) {
        match privacy.epsilon_spent_rdp(engine, job) {
            Ok(spent) => {
                for (partner, unit, epsilon) in spent {
                    self.epsilon_series
                        .entry(job.to_owned())
                        .or_default()
                        .insert((partner.clone(), unit.name().to_owned()));
                    self.metrics
                        .epsilon_spent
                        .get_or_create(&EpsilonLabels {
                            job: job.to_owned(),
                            partner,
                            unit: unit.name().to_owned(),
                        })
                        .set(epsilon);
                }
            }
            Err(error) => {
                tracing::warn!(job, error = %format!("{error:#}"), "ε gauge not updated");
            }
        }
    }
}

fn is_secure(engine: &Engine<JobSpec>, job: &str) -> bool {
    engine
        .plan(job)
        .is_ok_and(|plan| matches!(plan.aggregation, AggregationMode::Secure(_)))
}

/// A connection whose bytes read and written are counted into the
/// coordinator's `received`/`sent` counters: what crossed the network,
/// TLS records and HTTP/2 framing included. Tonic sees the inner stream's
/// connection info unchanged, so mTLS identities still reach the gate.
pub(crate) struct CountingIo<T> {
    inner: T,
    metrics: Arc<CoordinatorMetrics>,
    /// The node's connection slot (`member_limits.rs`), given back when the connection
    /// closes; `None` for operators, auditors and plaintext development.
    _slot: Option<ConnectionSlot>,
}

impl<T> CountingIo<T> {
    pub(crate) fn new(
        inner: T,
        metrics: Arc<CoordinatorMetrics>,
        slot: Option<ConnectionSlot>,
    ) -> Self {
        Self {
            inner,
            metrics,
            _slot: slot,
        }
    }
}

impl<T: Connected> Connected for CountingIo<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for CountingIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buffer.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(context, buffer);
        let read = buffer.filled().len().saturating_sub(before);
        if read > 0 {
            self.metrics.received_bytes.inc_by(read as u64);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CountingIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(context, buffer);
        if let Poll::Ready(Ok(written)) = &polled {
            self.metrics.sent_bytes.inc_by(*written as u64);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(context, buffers);
        if let Poll::Ready(Ok(written)) = &polled {
            self.metrics.sent_bytes.inc_by(*written as u64);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(context)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(context)
    }
}

#[cfg(test)]
mod tests {
    use veil_metrics::Registry;

    use super::*;

    /// Per-job series of a finished job are exposed for its grace period,
    /// and for the most recent [`FINISHED_JOBS_EXPOSED`] finished jobs at
    /// most; a running job's series are never removed.
    #[test]
    fn finished_jobs_keep_their_series_for_a_grace_period_and_a_bounded_count() {
        let mut registry = Registry::default();
        let metrics = Arc::new(CoordinatorMetrics::register(&mut registry));
        let mut events = EventMetrics::new(Arc::clone(&metrics));
        let spent = |job: &str| EpsilonLabels {
            job: job.to_owned(),
            partner: "bank-a".to_owned(),
            unit: "customer".to_owned(),
        };
        let exposed = |job: &str| {
            metrics.rounds_committed.get(&JobLabels::new(job)).is_some()
                && metrics.epsilon_spent.get(&spent(job)).is_some()
        };
        let start = Instant::now();
        let finish = |events: &mut EventMetrics, job: &str, at: Instant| {
            metrics
                .rounds_committed
                .get_or_create(&JobLabels::new(job))
                .inc();
            metrics.epsilon_spent.get_or_create(&spent(job)).set(0.5);
            events
                .epsilon_series
                .entry(job.to_owned())
                .or_default()
                .insert(("bank-a".to_owned(), "customer".to_owned()));
            events.job_finished(job, at);
            // A second end event of the same job changes nothing.
            events.job_finished(job, at);
        };
        metrics
            .rounds_committed
            .get_or_create(&JobLabels::new("job-running"))
            .inc();

        // Many short jobs within the grace period: the count bounds them.
        let jobs: Vec<String> = (1..=FINISHED_JOBS_EXPOSED + 8)
            .map(|number| format!("job-{number}"))
            .collect();
        for (index, job) in jobs.iter().enumerate() {
            finish(&mut events, job, start + Duration::from_secs(index as u64));
        }
        let (retired, kept) = jobs.split_at(8);
        assert!(retired.iter().all(|job| !exposed(job)));
        assert!(kept.iter().all(|job| exposed(job)));
        assert!(events.epsilon_series.len() <= FINISHED_JOBS_EXPOSED);
        let page = veil_metrics::encode(&registry).unwrap();
        assert!(!page.contains("job=\"job-1\""), "{page}");
        assert_eq!(
            page.matches("veil_coordinator_epsilon_spent{").count(),
            FINISHED_JOBS_EXPOSED
        );

        // Just before a job's grace period ends it is still there; after it,
        // at the next event, it is gone, and so is every job finished before it.
        let last = jobs.last().unwrap();
        let last_finished = start + Duration::from_secs(jobs.len() as u64 - 1);
        events.retire_finished(last_finished + FINISHED_SERIES_GRACE - Duration::from_secs(1));
        assert!(exposed(last));
        events.retire_finished(last_finished + FINISHED_SERIES_GRACE);
        assert!(jobs.iter().all(|job| !exposed(job)));
        assert!(events.finished.is_empty());
        assert!(events.epsilon_series.is_empty());
        assert!(
            metrics
                .rounds_committed
                .get(&JobLabels::new("job-running"))
                .is_some()
        );
    }
}
