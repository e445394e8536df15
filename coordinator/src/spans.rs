//! The coordinator's tracing spans: one per job, per round and per phase, opened and closed
//! by the engine's events, and the log line of every event written inside the span it
//! belongs to. So JSON logs carry `job`, `round` and `phase` as span fields, and an
//! OpenTelemetry collector (`--otlp-endpoint`) sees each job as one trace: the job span, a
//! child per round, a grandchild per phase, with the events (declines, dropouts, refusals)
//! on them and each span's duration the wall time of what it covers.
//!
//! The engine is sans-IO and its phases span many RPCs, so the spans live here, keyed by job,
//! round and phase, and not in any one request's task. A finished job's spans are dropped
//! (which ends them) at its last event: nothing stays behind per job. Span fields hold ids,
//! round numbers, phase names, node names and counts, never a customer value.

use std::collections::{BTreeMap, HashMap};

use tracing::Span;
use veil_federation::{EngineEvent, EventKind, JobId, Phase};

use crate::convert::describe_event;

/// The open spans of every job under way.
#[derive(Default)]
pub(crate) struct EventSpans {
    jobs: HashMap<JobId, JobSpans>,
}

/// One job's span and its open rounds.
struct JobSpans {
    job: Span,
    rounds: BTreeMap<u32, RoundSpans>,
}

/// One round's span and its open phases.
struct RoundSpans {
    round: Span,
    phases: HashMap<Phase, Span>,
}

impl EventSpans {
    /// Logs `event` inside its span, opening the spans it starts and then closing the ones
    /// it ends.
    pub(crate) fn record(&mut self, event: &EngineEvent) {
        let job = self
            .jobs
            .entry(event.job.clone())
            .or_insert_with(|| JobSpans {
                job: tracing::info_span!(parent: None, "job", job = %event.job),
                rounds: BTreeMap::new(),
            });
        match &event.kind {
            EventKind::PhaseOpened {
                round,
                phase,
                invited,
                attempt,
            } => {
                let phase_span = job.phase_span(&event.job, *round, *phase);
                if *attempt > 1 {
                    phase_span.record("attempts", attempt);
                }
                log(&phase_span, event);
                tracing::debug!(parent: &phase_span, invited = invited.len(), "phase invitations");
            }
            EventKind::ReplyRejected { round, phase, .. }
            | EventKind::NodeDeclined { round, phase, .. }
            | EventKind::SecureStepOpened { round, phase, .. }
            | EventKind::SecureRoundFailed { round, phase, .. } => {
                log(&job.phase_span(&event.job, *round, *phase), event);
            }
            EventKind::PhaseCompleted { round, phase, .. }
            | EventKind::PhaseAbandoned { round, phase, .. } => {
                log(&job.phase_span(&event.job, *round, *phase), event);
                if let Some(open) = job.rounds.get_mut(round) {
                    open.phases.remove(phase);
                }
            }
            EventKind::RoundCompleted(record) => {
                log(&job.round_span(&event.job, record.round), event);
                job.rounds.remove(&record.round);
            }
            EventKind::RoundRefused { round, .. } => {
                log(&job.round_span(&event.job, *round), event);
                job.rounds.remove(round);
            }
            EventKind::Submitted | EventKind::Started | EventKind::WaitingForNodes { .. } => {
                log(&job.job, event);
            }
            EventKind::Succeeded | EventKind::Failed { .. } | EventKind::Cancelled => {
                log(&job.job, event);
                // Children first, so each span ends before its parent.
                if let Some(mut finished) = self.jobs.remove(&event.job) {
                    finished.rounds.clear();
                }
            }
        }
    }

    /// The jobs with spans open, for tests of what is left behind.
    #[cfg(test)]
    fn open_jobs(&self) -> usize {
        self.jobs.len()
    }
}

impl JobSpans {
    fn round_span(&mut self, job: &JobId, round: u32) -> Span {
        let parent = &self.job;
        self.rounds
            .entry(round)
            .or_insert_with(|| RoundSpans {
                round: tracing::info_span!(parent: parent, "round", job = %job, round),
                phases: HashMap::new(),
            })
            .round
            .clone()
    }

    fn phase_span(&mut self, job: &JobId, round: u32, phase: Phase) -> Span {
        let round_span = self.round_span(job, round);
        let open = self.rounds.get_mut(&round).expect("opened just above");
        open.phases
            .entry(phase)
            .or_insert_with(|| {
                tracing::info_span!(
                    parent: &round_span,
                    "phase",
                    job = %job,
                    round,
                    phase = %phase,
                    attempts = tracing::field::Empty,
                )
            })
            .clone()
    }
}

/// The event's line, at the level its kind deserves, inside `span`.
fn log(span: &Span, event: &EngineEvent) {
    let job = event.job.as_str();
    let Some(message) = describe_event(&event.kind) else {
        return;
    };
    match &event.kind {
        EventKind::ReplyRejected { .. }
        | EventKind::Failed { .. }
        | EventKind::SecureRoundFailed { .. }
        | EventKind::NodeDeclined { .. }
        | EventKind::RoundRefused { .. } => tracing::warn!(parent: span, job, "{message}"),
        EventKind::SecureStepOpened { .. } => tracing::debug!(parent: span, job, "{message}"),
        _ => tracing::info!(parent: span, job, "{message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(job: &str, kind: EventKind) -> EngineEvent {
        EngineEvent {
            job: job.to_owned(),
            kind,
        }
    }

    fn opened(round: u32, phase: Phase) -> EventKind {
        EventKind::PhaseOpened {
            round,
            phase,
            invited: vec!["shop-a".to_owned()],
            attempt: 1,
        }
    }

    #[test]
    fn a_finished_job_leaves_no_span_open() {
        let mut spans = EventSpans::default();
        spans.record(&event("j1", EventKind::Submitted));
        spans.record(&event("j2", EventKind::Submitted));
        spans.record(&event("j1", opened(1, Phase::Train)));
        spans.record(&event("j2", opened(1, Phase::Train)));
        assert_eq!(spans.open_jobs(), 2);
        for (kind, job) in [
            (EventKind::Succeeded, "j1"),
            (
                EventKind::Failed {
                    reason: "stopped".to_owned(),
                },
                "j2",
            ),
        ] {
            spans.record(&event(job, kind));
        }
        assert_eq!(spans.open_jobs(), 0);
        spans.record(&event("j3", opened(2, Phase::Evaluate)));
        spans.record(&event("j3", EventKind::Cancelled));
        assert_eq!(spans.open_jobs(), 0);
    }

    #[test]
    fn phases_and_rounds_close_with_their_events() {
        let mut spans = EventSpans::default();
        spans.record(&event("j", opened(1, Phase::Train)));
        spans.record(&event(
            "j",
            EventKind::PhaseCompleted {
                round: 1,
                phase: Phase::Train,
                participants: 3,
                dropped: Vec::new(),
            },
        ));
        let job = &spans.jobs["j"];
        assert!(job.rounds[&1].phases.is_empty());
        spans.record(&event(
            "j",
            EventKind::RoundRefused {
                round: 1,
                reason: "budget".to_owned(),
            },
        ));
        assert!(spans.jobs["j"].rounds.is_empty());
    }
}
