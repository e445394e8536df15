//! Simulated federation: many in-process nodes with scripted behaviour drive
//! the engine through whole jobs, with deterministic, passed-in time.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use veil_federation::store::{JobStore, MemoryStore};
use veil_federation::{
    AggregationMode, Engine, EngineConfig, EngineError, EventKind, JobPlan, JobState, Phase,
    PhaseTimeouts, RejectReason, ResultKey, Strategy, Submission, SubmissionBody, SubmitOutcome,
    TaskAssignment,
};

const PARAMETERS: usize = 4;
const TIMEOUT: Duration = Duration::from_secs(10);
/// How long a job may wait for enough nodes before it fails.
const WAIT_FOR_NODES: Duration = Duration::from_secs(300);

/// How a simulated node answers its tasks.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Behaviour {
    /// Replies at once with a delta of `delta` everywhere and `weight` examples.
    Honest { delta: f32, weight: f64 },
    /// Never replies.
    Silent,
    /// Replies with one parameter too many.
    WrongShape,
    /// Replies with a NaN in the delta.
    NotFinite,
}

struct Harness {
    engine: Engine<&'static str>,
    now: Instant,
    nodes: Vec<(String, Behaviour)>,
}

fn plan(min: u32, max: u32, rounds: u32, strategy: Strategy) -> JobPlan {
    JobPlan {
        rounds,
        min_participants: min,
        max_participants: max,
        timeouts: PhaseTimeouts {
            feature_stats: TIMEOUT,
            train: TIMEOUT,
            evaluate: TIMEOUT,
            wait_for_nodes: WAIT_FOR_NODES,
        },
        strategy,
        parameter_count: PARAMETERS,
        feature_statistics_len: 3,
        train_statistics_len: 2,
        evaluate_statistics_len: 2,
        max_phase_attempts: 2,
        aggregation: AggregationMode::Plain,
        partner_privacy: Default::default(),
        releases: Vec::new(),
    }
}

impl Harness {
    fn new(nodes: &[(&str, Behaviour)]) -> Self {
        let now = Instant::now();
        let mut engine = Engine::new(EngineConfig {
            node_liveness: Duration::from_secs(60),
        });
        for (name, _) in nodes {
            engine.register_node(name, None, now);
        }
        Self {
            engine,
            now,
            nodes: nodes.iter().map(|(n, b)| (n.to_string(), *b)).collect(),
        }
    }

    fn start(&mut self, plan: JobPlan) -> String {
        let job = self
            .engine
            .submit_job(plan, "test job", vec![0.0; PARAMETERS], self.now)
            .unwrap();
        self.engine.start_job(&job, self.now).unwrap();
        job
    }

    fn reply(
        &mut self,
        node: &str,
        behaviour: Behaviour,
        task: &TaskAssignment,
    ) -> Option<Result<SubmitOutcome, RejectReason>> {
        let key = ResultKey {
            job: task.job.clone(),
            round: task.round,
            phase: task.phase,
        };
        let vector_len = if task.phase == Phase::Train {
            PARAMETERS
        } else {
            0
        };
        let statistics = vec![
            1.0;
            if task.phase == Phase::FeatureStats {
                3
            } else {
                2
            }
        ];
        let (weight, vector) = match behaviour {
            Behaviour::Honest { delta, weight } => (weight, vec![delta; vector_len]),
            Behaviour::Silent => return None,
            Behaviour::WrongShape => (1.0, vec![0.0; vector_len + 1]),
            Behaviour::NotFinite => {
                let mut vector = vec![0.0; vector_len];
                if let Some(first) = vector.first_mut() {
                    *first = f32::NAN;
                }
                (1.0, vector)
            }
        };
        let submission = Submission {
            node: node.to_owned(),
            key,
            body: SubmissionBody::Plain {
                weight,
                statistics,
                vector,
            },
        };
        Some(self.engine.submit(&submission, self.now))
    }

    /// Lets every node act once; returns whether any reply was accepted.
    fn tick(&mut self) -> bool {
        let mut accepted = false;
        for (node, behaviour) in self.nodes.clone() {
            if let Some(task) = self.engine.next_task(&node, self.now).unwrap() {
                accepted |= matches!(self.reply(&node, behaviour, &task), Some(Ok(_)));
            }
        }
        accepted
    }

    /// Runs until the job ends, jumping time to each deadline when nobody acts.
    fn run(&mut self, job: &str) -> JobState {
        for _ in 0..1000 {
            let state = self.engine.status(job).unwrap().state;
            if state != JobState::Running {
                return state;
            }
            let progressed = self.tick();
            let still_running = self.engine.status(job).unwrap().state == JobState::Running;
            if still_running && !progressed {
                let deadline = self
                    .engine
                    .poll_timeout()
                    .expect("a running job has a deadline");
                self.now = deadline;
                self.engine.handle_timeout(self.now);
            }
        }
        panic!("job did not end in 1000 steps");
    }

    fn events(&mut self) -> Vec<EventKind> {
        std::iter::from_fn(|| self.engine.poll_event())
            .map(|e| e.kind)
            .collect()
    }
}

const HONEST: Behaviour = Behaviour::Honest {
    delta: 1.0,
    weight: 1.0,
};

#[test]
fn a_node_with_tasks_in_several_jobs_gets_the_one_that_closes_first() {
    let mut harness = Harness::new(&[("a", HONEST), ("b", HONEST)]);
    let mut patient = plan(2, 2, 1, Strategy::FedAvg);
    patient.timeouts.feature_stats = TIMEOUT * 6;
    let first = harness.start(patient);
    harness.now += Duration::from_secs(1);
    let hurried = harness.start(plan(2, 2, 1, Strategy::FedAvg));
    // The hurried job was submitted second (a higher id) and opened later, but its phase
    // closes first.
    let task = harness.engine.next_task("a", harness.now).unwrap().unwrap();
    assert_eq!(task.job, hurried);
    assert!(matches!(harness.reply("a", HONEST, &task), Some(Ok(_))));
    // Answered, the node is offered the other job's task.
    let task = harness.engine.next_task("a", harness.now).unwrap().unwrap();
    assert_eq!(task.job, first);
    // With equal deadlines the lower job id goes first.
    let mut harness = Harness::new(&[("a", HONEST), ("b", HONEST)]);
    let first = harness.start(plan(2, 2, 1, Strategy::FedAvg));
    harness.start(plan(2, 2, 1, Strategy::FedAvg));
    let task = harness.engine.next_task("a", harness.now).unwrap().unwrap();
    assert_eq!(task.job, first);
}

#[test]
fn honest_nodes_finish_every_round_with_the_weighted_mean() {
    let mut harness = Harness::new(&[
        (
            "a",
            Behaviour::Honest {
                delta: 1.0,
                weight: 1.0,
            },
        ),
        (
            "b",
            Behaviour::Honest {
                delta: 4.0,
                weight: 3.0,
            },
        ),
        (
            "c",
            Behaviour::Honest {
                delta: -2.0,
                weight: 4.0,
            },
        ),
    ]);
    let job = harness.start(plan(3, 3, 3, Strategy::FedAvg));
    assert_eq!(harness.run(&job), JobState::Succeeded);
    // Weighted mean delta per round: (1*1 + 3*4 + 4*-2) / 8 = 5/8.
    let model = harness.engine.final_model(&job).unwrap();
    assert_eq!(*model, vec![3.0 * 5.0 / 8.0; PARAMETERS]);
    let status = harness.engine.status(&job).unwrap();
    assert_eq!(status.completed_rounds, 3);
    assert!(
        status
            .history
            .iter()
            .all(|r| r.train_participants == 3 && r.dropped.is_empty())
    );
    assert_eq!(status.history[0].train_weight, 8.0);
}

#[test]
fn a_silent_node_is_dropped_and_the_round_proceeds_at_the_deadline() {
    let mut harness = Harness::new(&[("a", HONEST), ("b", HONEST), ("mute", Behaviour::Silent)]);
    let job = harness.start(plan(2, 3, 2, Strategy::FedAvg));
    assert_eq!(harness.run(&job), JobState::Succeeded);
    let status = harness.engine.status(&job).unwrap();
    for record in &status.history {
        assert_eq!(record.train_participants, 2);
        assert_eq!(record.dropped, vec!["mute".to_string()]);
    }
}

#[test]
fn a_late_reply_is_refused_and_the_node_joins_the_next_phase() {
    let mut harness = Harness::new(&[("a", HONEST), ("b", HONEST), ("late", HONEST)]);
    let job = harness.start(plan(2, 3, 2, Strategy::FedAvg));
    // Feature statistics from everyone.
    harness.tick();
    // Round 1 training: "late" fetches its task but answers only after the deadline.
    let late_task = harness
        .engine
        .next_task("late", harness.now)
        .unwrap()
        .unwrap();
    assert_eq!((late_task.round, late_task.phase), (1, Phase::Train));
    for node in ["a", "b"] {
        let task = harness
            .engine
            .next_task(node, harness.now)
            .unwrap()
            .unwrap();
        harness.reply(node, HONEST, &task);
    }
    harness.now = late_task.deadline;
    harness.engine.handle_timeout(harness.now);
    let refused = harness.reply("late", HONEST, &late_task).unwrap();
    assert!(
        matches!(
            refused,
            Err(RejectReason::PhaseClosed {
                round: 1,
                phase: Phase::Train,
                ..
            })
        ),
        "{refused:?}"
    );
    // Only the round's contributors evaluate its model: the late node is
    // not asked (its evaluation would be a release the round did not pay
    // for), and it joins the next round's training.
    let next = harness.engine.next_task("late", harness.now).unwrap();
    assert!(next.is_none(), "{next:?}");
    assert_eq!(harness.run(&job), JobState::Succeeded);
    let status = harness.engine.status(&job).unwrap();
    assert_eq!(status.history[0].train_participants, 2);
    assert_eq!(status.history[0].evaluate_participants, 2);
    assert_eq!(status.history[1].train_participants, 3);
}

#[test]
fn misbehaving_replies_are_rejected_by_name_and_the_round_completes() {
    let mut harness = Harness::new(&[
        ("a", HONEST),
        ("b", HONEST),
        ("shape", Behaviour::WrongShape),
        ("nan", Behaviour::NotFinite),
    ]);
    let job = harness.start(plan(2, 4, 1, Strategy::FedAvg));
    // The faulty nodes send a vector where none belongs, so feature statistics
    // close at the deadline with the two honest replies.
    harness.tick();
    harness.now = harness.engine.poll_timeout().unwrap();
    harness.engine.handle_timeout(harness.now);
    let task = harness
        .engine
        .next_task("shape", harness.now)
        .unwrap()
        .unwrap();
    assert_eq!(
        harness
            .reply("shape", Behaviour::WrongShape, &task)
            .unwrap(),
        Err(RejectReason::WrongShape {
            what: "model delta",
            expected: PARAMETERS,
            actual: PARAMETERS + 1
        })
    );
    assert_eq!(
        harness.reply("nan", Behaviour::NotFinite, &task).unwrap(),
        Err(RejectReason::NonFinite {
            what: "model delta",
            index: 0
        })
    );
    // A node that never registered is refused too.
    assert_eq!(
        harness.reply("intruder", HONEST, &task).unwrap(),
        Err(RejectReason::UnknownNode {
            node: "intruder".into()
        })
    );
    assert_eq!(harness.run(&job), JobState::Succeeded);
    let status = harness.engine.status(&job).unwrap();
    assert_eq!(status.history[0].train_participants, 2);
    assert_eq!(
        *harness.engine.final_model(&job).unwrap(),
        vec![1.0; PARAMETERS]
    );
    let rejected = harness
        .events()
        .into_iter()
        .filter(|e| matches!(e, EventKind::ReplyRejected { .. }))
        .count();
    assert!(rejected >= 3, "every rejection is an event, got {rejected}");
}

#[test]
fn a_retried_submit_is_counted_once() {
    let mut harness = Harness::new(&[("a", HONEST), ("b", HONEST)]);
    let job = harness.start(plan(2, 2, 1, Strategy::FedAvg));
    let task = harness.engine.next_task("a", harness.now).unwrap().unwrap();
    assert_eq!(
        harness.reply("a", HONEST, &task).unwrap(),
        Ok(SubmitOutcome::Accepted)
    );
    assert_eq!(
        harness.reply("a", HONEST, &task).unwrap(),
        Ok(SubmitOutcome::Duplicate)
    );
    let task = harness.engine.next_task("b", harness.now).unwrap().unwrap();
    harness.reply("b", HONEST, &task);
    // The phase closed with both; a retry after the close is still a duplicate.
    assert_eq!(
        harness.reply("a", HONEST, &task).unwrap(),
        Ok(SubmitOutcome::Duplicate)
    );
    assert_eq!(harness.run(&job), JobState::Succeeded);
}

#[test]
fn too_few_replies_extend_the_phase_then_fail_with_a_named_reason() {
    let mut harness = Harness::new(&[
        ("a", HONEST),
        ("mute1", Behaviour::Silent),
        ("mute2", Behaviour::Silent),
    ]);
    let job = harness.start(plan(2, 3, 1, Strategy::FedAvg));
    let state = harness.run(&job);
    assert_eq!(
        state,
        JobState::Failed {
            reason: "round 0 phase feature-stats: only 1 of the minimum 2 participants replied, after 2 attempts"
                .into()
        }
    );
}

#[test]
fn a_restarted_node_is_invited_to_the_next_round() {
    let mut harness = Harness::new(&[("a", HONEST), ("b", HONEST), ("crashy", HONEST)]);
    let job = harness.start(plan(2, 3, 2, Strategy::FedAvg));
    harness.tick(); // feature statistics.
    // "crashy" dies holding its training task: it never replies this round.
    harness.nodes[2].1 = Behaviour::Silent;
    while harness.engine.status(&job).unwrap().current == Some((1, Phase::Train)) {
        harness.tick();
        harness.now = harness.engine.poll_timeout().unwrap();
        harness.engine.handle_timeout(harness.now);
    }
    // It restarts, registers again and behaves.
    harness.engine.register_node("crashy", None, harness.now);
    harness.nodes[2].1 = HONEST;
    assert_eq!(harness.run(&job), JobState::Succeeded);
    let history = harness.engine.status(&job).unwrap().history;
    assert_eq!(history[0].train_participants, 2);
    assert_eq!(history[1].train_participants, 3);
}

#[test]
fn a_job_waits_for_enough_live_nodes() {
    let mut harness = Harness::new(&[("a", HONEST)]);
    let job = harness.start(plan(2, 2, 1, Strategy::FedAvg));
    assert_eq!(
        harness.engine.status(&job).unwrap().waiting_for_nodes,
        Some(1)
    );
    assert!(
        harness
            .engine
            .next_task("a", harness.now)
            .unwrap()
            .is_none()
    );
    harness.engine.register_node("b", None, harness.now);
    harness.nodes.push(("b".into(), HONEST));
    assert_eq!(harness.run(&job), JobState::Succeeded);
}

#[test]
fn a_job_whose_nodes_are_gone_fails_after_its_wait_for_nodes_with_the_reason() {
    let mut harness = Harness::new(&[("a", HONEST)]);
    let job = harness.start(plan(2, 2, 1, Strategy::FedAvg));
    let waiting_from = harness.now;
    // Node a stops heartbeating too. Just before the deadline the job
    // still waits, announced once.
    harness.now = waiting_from + WAIT_FOR_NODES - Duration::from_secs(1);
    harness.engine.handle_timeout(harness.now);
    assert_eq!(
        harness.engine.status(&job).unwrap().state,
        JobState::Running
    );
    let mut waiting_events = 0;
    let mut failure = None;
    harness.now = waiting_from + WAIT_FOR_NODES;
    harness.engine.handle_timeout(harness.now);
    while let Some(event) = harness.engine.poll_event() {
        match event.kind {
            EventKind::WaitingForNodes { .. } => waiting_events += 1,
            EventKind::Failed { reason } => failure = Some(reason),
            _ => {}
        }
    }
    assert_eq!(waiting_events, 1, "announced once, not on every check");
    let reason = failure.expect("the job fails");
    assert!(
        reason.contains("waited 300 s for nodes and only 0 are eligible; the phase needs 2"),
        "{reason}"
    );
    assert!(reason.contains("timeouts.wait_for_nodes_secs"), "{reason}");
    assert!(matches!(
        harness.engine.status(&job).unwrap().state,
        JobState::Failed { .. }
    ));
}

#[test]
fn a_restored_engine_resumes_from_the_last_committed_phase() {
    let mut harness = Harness::new(&[("a", HONEST), ("b", HONEST)]);
    let job = harness.start(plan(2, 2, 3, Strategy::FedAvg));
    harness.tick(); // feature statistics
    harness.tick(); // round 1 train
    harness.tick(); // round 1 evaluate
    // Round 2 training is half done when the coordinator "crashes".
    let task = harness.engine.next_task("a", harness.now).unwrap().unwrap();
    harness.reply("a", HONEST, &task);
    let snapshot = harness.engine.snapshot(&job).unwrap();
    assert_eq!(snapshot.cursor, (2, Phase::Train));

    let mut restored = Harness {
        engine: Engine::restore(
            EngineConfig {
                node_liveness: Duration::from_secs(60),
            },
            vec![snapshot],
        ),
        now: harness.now,
        nodes: harness.nodes.clone(),
    };
    for (node, _) in restored.nodes.clone() {
        restored.engine.register_node(&node, None, restored.now);
    }
    assert_eq!(restored.run(&job), JobState::Succeeded);
    assert_eq!(
        *restored.engine.final_model(&job).unwrap(),
        vec![3.0; PARAMETERS]
    );
    // New jobs get fresh ids after a restore.
    let next = restored
        .engine
        .submit_job(
            plan(1, 1, 1, Strategy::FedAvg),
            "x",
            vec![0.0; PARAMETERS],
            restored.now,
        )
        .unwrap();
    assert_ne!(next, job);
}

#[test]
fn operator_errors_name_the_job() {
    let mut harness = Harness::new(&[("a", HONEST)]);
    let error = harness
        .engine
        .start_job("job-404", harness.now)
        .unwrap_err();
    assert_eq!(error.to_string(), "unknown job 'job-404'");
    let job = harness.start(plan(1, 1, 1, Strategy::FedAvg));
    let error = harness.engine.start_job(&job, harness.now).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("job '{job}' is running: cannot start")
    );
    assert!(harness.engine.final_model(&job).is_err());
    harness.engine.cancel_job(&job, harness.now).unwrap();
    assert_eq!(
        harness.engine.status(&job).unwrap().state,
        JobState::Cancelled
    );
}

#[test]
fn fedadam_and_fedprox_run_to_completion() {
    for strategy in [
        Strategy::FedProx { proximal_mu: 0.1 },
        Strategy::FedAdam {
            server_learning_rate: 0.1,
            beta1: 0.9,
            beta2: 0.99,
            tau: 1e-3,
        },
    ] {
        let mut harness = Harness::new(&[("a", HONEST), ("b", HONEST)]);
        let job = harness.start(plan(2, 2, 2, strategy));
        assert_eq!(harness.run(&job), JobState::Succeeded);
        let model = harness.engine.final_model(&job).unwrap();
        assert!(
            model.iter().all(|v| *v > 0.0),
            "{strategy:?} moved along the delta: {model:?}"
        );
    }
}

proptest! {
    #[test]
    fn fedavg_is_the_example_weighted_mean(
        replies in proptest::collection::vec((-10.0f32..10.0, 1u32..1000), 1..8)
    ) {
        let behaviours: Vec<(String, Behaviour)> = replies
            .iter()
            .enumerate()
            .map(|(i, (delta, weight))| (format!("n{i}"), Behaviour::Honest { delta: *delta, weight: f64::from(*weight) }))
            .collect();
        let named: Vec<(&str, Behaviour)> = behaviours.iter().map(|(n, b)| (n.as_str(), *b)).collect();
        let mut harness = Harness::new(&named);
        let n = replies.len() as u32;
        let job = harness.start(plan(n, n, 1, Strategy::FedAvg));
        prop_assert_eq!(harness.run(&job), JobState::Succeeded);
        let total: f64 = replies.iter().map(|(_, w)| f64::from(*w)).sum();
        let expected: f64 = replies.iter().map(|(d, w)| f64::from(*d) * f64::from(*w)).sum::<f64>() / total;
        let model = harness.engine.final_model(&job).unwrap();
        // The engine sums in f64 and rounds once to f32: one f32 ulp of slack.
        prop_assert!((f64::from(model[0]) - expected).abs() <= 1e-6 * expected.abs().max(1.0));
    }
}

/// A week of jobs must not grow the coordinator: once a finished job's final snapshot is in
/// the store and the engine released it, the engine keeps only its summary (state, plan,
/// history, model version), not its model, optimiser moments, open phase or retry keys.
#[test]
fn a_finished_job_keeps_only_its_summary_once_released() {
    let fedadam = Strategy::FedAdam {
        server_learning_rate: 0.1,
        beta1: 0.9,
        beta2: 0.99,
        tau: 1e-3,
    };
    let mut harness = Harness::new(&[("a", HONEST), ("b", HONEST)]);
    let mut finished = Vec::new();
    let mut store = MemoryStore::new();
    for _ in 0..10 {
        let job = harness.start(plan(2, 2, 2, fedadam));
        assert_eq!(harness.run(&job), JobState::Succeeded);
        // Until the caller has stored the final snapshot, the engine holds it whole.
        let held = harness.engine.footprint();
        assert_eq!(held.model_values, PARAMETERS);
        assert_eq!(held.optimizer_values, 2 * PARAMETERS);
        assert!(held.retry_keys == 0, "{held:?}");
        let model = harness.engine.final_model(&job).unwrap();
        assert_eq!(model.len(), PARAMETERS);
        let version = harness.engine.final_model_version(&job).unwrap();
        assert_eq!(
            harness.engine.snapshot(&job).unwrap().model_version,
            version
        );

        // The caller stores the final snapshot, then releases the job.
        store.save(&harness.engine.snapshot(&job).unwrap()).unwrap();
        harness.engine.release_finished_job(&job).unwrap();
        let in_store = EngineError::ModelInStore {
            job: job.clone(),
            model_version: version,
        };
        assert_eq!(harness.engine.final_model(&job), Err(in_store.clone()));
        assert_eq!(harness.engine.snapshot(&job), Err(in_store.clone()));
        assert_eq!(harness.engine.global_model(&job, version), Err(in_store));
        assert_eq!(harness.engine.final_model_version(&job), Ok(version));
        finished.push(job);
    }
    // A job cancelled in the middle of its training phase, and one still running.
    let cancelled = harness.start(plan(2, 2, 2, fedadam));
    harness.tick();
    harness.engine.cancel_job(&cancelled, harness.now).unwrap();
    harness.engine.release_finished_job(&cancelled).unwrap();
    let running = harness.start(plan(2, 2, 2, fedadam));
    harness.tick();
    assert!(matches!(
        harness.engine.release_finished_job(&running),
        Err(EngineError::WrongState { .. })
    ));

    let footprint = harness.engine.footprint();
    assert_eq!(footprint.jobs, 12);
    assert_eq!(footprint.finished_jobs, 11);
    // Only the running job's model, moments and phase are held.
    assert_eq!(footprint.model_values, PARAMETERS, "{footprint:?}");
    assert_eq!(footprint.optimizer_values, 2 * PARAMETERS, "{footprint:?}");
    assert_eq!(footprint.open_phases, 1, "{footprint:?}");
    let running_keys = harness.engine.footprint().retry_keys;
    assert_eq!(
        running_keys, 2,
        "the running job's feature-statistics replies"
    );
    // Nor any finished job's rounds (the running one has completed none).
    assert_eq!(footprint.history_values, 0, "{footprint:?}");
    // What operators read of finished jobs: the summary from the engine,
    // the rounds from the store.
    for job in &finished {
        let status = harness.engine.status(job).unwrap();
        assert_eq!(status.state, JobState::Succeeded);
        assert_eq!(status.completed_rounds, 2);
        assert!(status.history_in_store, "{status:?}");
        assert!(status.history.is_empty(), "{status:?}");
        let rounds = store.rounds(job).unwrap();
        assert_eq!(
            rounds.iter().map(|record| record.round).collect::<Vec<_>>(),
            [1, 2]
        );
    }
    let live = harness.engine.status(&running).unwrap();
    assert!(!live.history_in_store);
    // An engine restored from the store releases finished jobs at once.
    let snapshot = harness.engine.snapshot(&running).unwrap();
    let mut ended = harness.engine.snapshot(&running).unwrap();
    ended.id = "job-99".to_owned();
    ended.state = JobState::Cancelled;
    let restored: Engine<&'static str> = Engine::restore(
        EngineConfig {
            node_liveness: Duration::from_secs(60),
        },
        vec![snapshot, ended],
    );
    let restored_footprint = restored.footprint();
    assert_eq!(restored_footprint.model_values, PARAMETERS);
    assert_eq!(restored_footprint.optimizer_values, 2 * PARAMETERS);
}
