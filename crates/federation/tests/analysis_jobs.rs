//! Analysis jobs in a simulated federation: one release phase per round, each
//! release's public parameters derived by the descriptor from the sums
//! released before it, nothing but those sums kept, and the same parameters
//! derived again by an engine restored from a snapshot.

use std::time::{Duration, Instant};

use veil_federation::{
    AggregationMode, Engine, EngineConfig, EventKind, JobPlan, JobState, Phase, PhaseTimeouts,
    RejectReason, ReleaseDirector, ResultKey, Strategy, Submission, SubmissionBody, TaskAssignment,
};

const TIMEOUT: Duration = Duration::from_secs(10);

/// A toy analysis: release `i` has `lengths[i]` values, and its parameters
/// are `[i, total of everything released so far]`, so each release depends
/// on every sum before it. `fail_at` makes the director refuse one release.
#[derive(Debug, Clone)]
struct RunningTotal {
    fail_at: Option<usize>,
}

impl ReleaseDirector for RunningTotal {
    fn release_parameters(&self, index: usize, released: &[&[f64]]) -> Result<Vec<f64>, String> {
        if self.fail_at == Some(index) {
            return Err(format!("release {index}: the previous sums are unusable"));
        }
        assert_eq!(released.len(), index, "every earlier sum, and only those");
        let total: f64 = released.iter().flat_map(|sum| sum.iter()).sum();
        Ok(vec![index as f64, total])
    }

    /// The result: the last value of every release.
    fn result_parameters(&self, released: &[&[f64]]) -> Result<Vec<f32>, String> {
        Ok(released
            .iter()
            .map(|sum| sum.last().copied().unwrap_or(0.0) as f32)
            .collect())
    }
}

fn plan(lengths: &[usize]) -> JobPlan {
    JobPlan {
        rounds: lengths.len() as u32,
        min_participants: 2,
        max_participants: 3,
        timeouts: PhaseTimeouts {
            feature_stats: TIMEOUT,
            train: TIMEOUT,
            evaluate: TIMEOUT,
            wait_for_nodes: Duration::from_secs(300),
        },
        strategy: Strategy::FedAvg,
        parameter_count: lengths.len(),
        feature_statistics_len: 0,
        train_statistics_len: 0,
        evaluate_statistics_len: 0,
        max_phase_attempts: 2,
        aggregation: AggregationMode::Plain,
        partner_privacy: Default::default(),
        releases: lengths.to_vec(),
    }
}

const NODES: [&str; 3] = ["a", "b", "c"];

/// Node `n`'s reply: every value is the release's running total plus `n + 1`.
fn reply(node_index: usize, task: &TaskAssignment, length: usize) -> Submission {
    let parameters = task
        .release_parameters
        .as_ref()
        .expect("release parameters");
    Submission {
        node: NODES[node_index].to_owned(),
        key: ResultKey {
            job: task.job.clone(),
            round: task.round,
            phase: task.phase,
        },
        body: SubmissionBody::Plain {
            weight: 0.0,
            statistics: vec![parameters[1] + node_index as f64 + 1.0; length],
            vector: Vec::new(),
        },
    }
}

fn engine_with_nodes(now: Instant) -> Engine<RunningTotal> {
    let mut engine = Engine::new(EngineConfig {
        node_liveness: Duration::from_secs(60),
    });
    for node in NODES {
        engine.register_node(node, None, now);
    }
    engine
}

/// Every invited node answers the open release once; returns the
/// parameters they saw (all the same).
fn answer_round(engine: &mut Engine<RunningTotal>, lengths: &[usize], now: Instant) -> Vec<f64> {
    let mut seen: Option<Vec<f64>> = None;
    for (index, node) in NODES.iter().enumerate() {
        // A restored engine opens the phase as soon as enough nodes are back,
        // so a node that registered later may sit this release out.
        let Some(task) = engine.next_task(node, now).expect("registered") else {
            continue;
        };
        assert_eq!(task.phase, Phase::Release);
        let parameters = task.release_parameters.clone().expect("parameters");
        if let Some(seen) = &seen {
            assert_eq!(seen, &*parameters, "every node gets the same parameters");
        }
        seen = Some(parameters.to_vec());
        let length = lengths[task.round as usize - 1];
        engine
            .submit(&reply(index, &task, length), now)
            .expect("accepted");
    }
    seen.expect("at least one node had the release")
}

#[test]
fn an_analysis_runs_its_releases_in_order_each_derived_from_the_sums_before() {
    let lengths = [2, 3, 1];
    let now = Instant::now();
    let mut engine = engine_with_nodes(now);
    let job = engine
        .submit_job(
            plan(&lengths),
            RunningTotal { fail_at: None },
            vec![0.0; lengths.len()],
            now,
        )
        .expect("valid analysis");
    engine.start_job(&job, now).expect("starts");
    assert_eq!(
        engine.status(&job).expect("job").current,
        Some((1, Phase::Release)),
        "an analysis starts at its first release, with no feature statistics"
    );
    // Release 1: nothing before it. Each node adds (total + n + 1) per value.
    assert_eq!(answer_round(&mut engine, &lengths, now), vec![0.0, 0.0]);
    // Sum of release 1: 2 values of 1 + 2 + 3 = 6 each: total 12.
    assert_eq!(answer_round(&mut engine, &lengths, now), vec![1.0, 12.0]);
    // Release 2: 3 values of (12+1)+(12+2)+(12+3) = 42: total 12 + 126.
    assert_eq!(answer_round(&mut engine, &lengths, now), vec![2.0, 138.0]);
    let status = engine.status(&job).expect("job");
    assert_eq!(status.state, JobState::Succeeded);
    let sums: Vec<Vec<f64>> = status
        .history
        .iter()
        .map(|record| record.release_sum.clone())
        .collect();
    assert_eq!(sums, vec![vec![6.0; 2], vec![42.0; 3], vec![420.0]]);
    assert!(
        status
            .history
            .iter()
            .all(|record| record.train_participants == 3)
    );
    assert_eq!(
        *engine.final_model(&job).expect("succeeded"),
        vec![6.0, 42.0, 420.0],
        "the result is derived from every release and exported as the model"
    );
}

#[test]
fn a_reply_of_the_wrong_length_for_its_release_is_refused() {
    let lengths = [2, 3];
    let now = Instant::now();
    let mut engine = engine_with_nodes(now);
    let job = engine
        .submit_job(
            plan(&lengths),
            RunningTotal { fail_at: None },
            vec![0.0; lengths.len()],
            now,
        )
        .expect("valid analysis");
    engine.start_job(&job, now).expect("starts");
    let task = engine.next_task("a", now).expect("node").expect("task");
    // Release 1 has 2 values; 3 (release 2's length) is refused.
    let refused = engine.submit(&reply(0, &task, 3), now);
    assert!(
        matches!(
            refused,
            Err(RejectReason::WrongShape {
                expected: 2,
                actual: 3,
                ..
            })
        ),
        "{refused:?}"
    );
}

#[test]
fn a_restored_engine_derives_the_same_parameters_from_the_stored_sums() {
    let lengths = [2, 3, 1];
    let now = Instant::now();
    let mut engine = engine_with_nodes(now);
    let job = engine
        .submit_job(
            plan(&lengths),
            RunningTotal { fail_at: None },
            vec![0.0; lengths.len()],
            now,
        )
        .expect("valid analysis");
    engine.start_job(&job, now).expect("starts");
    answer_round(&mut engine, &lengths, now);
    answer_round(&mut engine, &lengths, now);
    let before_restart = engine.next_task("a", now).expect("node").expect("task");
    let snapshot = engine.snapshot(&job).expect("job");
    let later = now + Duration::from_secs(1);
    let mut restored = Engine::restore(
        EngineConfig {
            node_liveness: Duration::from_secs(60),
        },
        vec![snapshot],
    );
    for node in NODES {
        restored.register_node(node, None, later);
    }
    let after_restart = restored.next_task("a", later).expect("node").expect("task");
    assert_eq!(after_restart.round, 3);
    assert_eq!(
        after_restart.release_parameters,
        before_restart.release_parameters
    );
    answer_round(&mut restored, &lengths, later);
    assert_eq!(
        restored.status(&job).expect("job").state,
        JobState::Succeeded
    );
}

#[test]
fn a_director_that_cannot_derive_a_release_fails_the_job_with_its_reason() {
    let lengths = [2, 3];
    let now = Instant::now();
    let mut engine = engine_with_nodes(now);
    let job = engine
        .submit_job(
            plan(&lengths),
            RunningTotal { fail_at: Some(1) },
            vec![0.0; lengths.len()],
            now,
        )
        .expect("valid analysis");
    engine.start_job(&job, now).expect("starts");
    answer_round(&mut engine, &lengths, now);
    let status = engine.status(&job).expect("job");
    let JobState::Failed { reason } = &status.state else {
        panic!("expected a failure, got {:?}", status.state);
    };
    assert!(
        reason.contains("round 2 phase release") && reason.contains("unusable"),
        "{reason}"
    );
    let mut failed = false;
    while let Some(event) = engine.poll_event() {
        failed |= matches!(event.kind, EventKind::Failed { .. });
    }
    assert!(failed, "the failure is announced");
}

#[test]
fn an_analysis_plan_with_rounds_other_than_its_releases_is_refused() {
    let mut wrong_rounds = plan(&[2, 3]);
    wrong_rounds.rounds = 3;
    assert!(wrong_rounds.validate().is_err());
    assert!(plan(&[2, 0]).validate().is_err());
    assert!(plan(&[2, 3]).validate().is_ok());
}
