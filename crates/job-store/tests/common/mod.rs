//! Shared by the job store's tests and benchmark: a test descriptor with its
//! codec, job plans, snapshots built directly, and a small federation of
//! honest in-process nodes that drives the real engine.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use veil_federation::{
    AggregationMode, Engine, EngineConfig, JobPlan, JobSnapshot, JobState, PartnerPrivacy, Phase,
    PhaseTimeouts, ReleaseDirector, ResultKey, RoundRecord, ServerOptimizer, Strategy, Submission,
    SubmissionBody,
};
use veil_job_store::{DescriptorCodec, DescriptorDecodeError};

/// The caller's descriptor in these tests.
#[derive(Debug, Clone, PartialEq)]
pub struct TestJob {
    pub name: String,
}

/// Test jobs train; they have no releases.
impl ReleaseDirector for TestJob {
    fn release_parameters(&self, _: usize, _: &[&[f64]]) -> Result<Vec<f64>, String> {
        Err("a test job trains".to_owned())
    }

    fn result_parameters(&self, _: &[&[f64]]) -> Result<Vec<f32>, String> {
        Err("a test job trains".to_owned())
    }
}

/// Stores a [`TestJob`] as its name in UTF-8.
pub struct NameCodec;

impl DescriptorCodec<TestJob> for NameCodec {
    fn encode(&self, descriptor: &TestJob) -> Vec<u8> {
        descriptor.name.as_bytes().to_vec()
    }

    fn decode(&self, bytes: &[u8]) -> Result<TestJob, DescriptorDecodeError> {
        let name = String::from_utf8(bytes.to_vec())?;
        Ok(TestJob { name })
    }
}

pub const TIMEOUT: Duration = Duration::from_secs(10);
/// How long a job may wait for enough nodes before it fails.
pub const WAIT_FOR_NODES: Duration = Duration::from_secs(300);
pub const FEATURE_STATISTICS_LEN: usize = 3;
pub const TRAIN_STATISTICS_LEN: usize = 2;
pub const EVALUATE_STATISTICS_LEN: usize = 2;

pub fn plan(
    parameter_count: usize,
    rounds: u32,
    min_participants: u32,
    strategy: Strategy,
) -> JobPlan {
    JobPlan {
        rounds,
        min_participants,
        max_participants: 8,
        timeouts: PhaseTimeouts {
            feature_stats: TIMEOUT,
            train: TIMEOUT,
            evaluate: TIMEOUT,
            wait_for_nodes: WAIT_FOR_NODES,
        },
        strategy,
        parameter_count,
        feature_statistics_len: FEATURE_STATISTICS_LEN,
        train_statistics_len: TRAIN_STATISTICS_LEN,
        evaluate_statistics_len: EVALUATE_STATISTICS_LEN,
        max_phase_attempts: 2,
        aggregation: AggregationMode::Plain,
        partner_privacy: PartnerPrivacy::Off,
        releases: Vec::new(),
    }
}

pub const FEDADAM: Strategy = Strategy::FedAdam {
    server_learning_rate: 0.1,
    beta1: 0.9,
    beta2: 0.99,
    tau: 1e-3,
};

/// A deterministic model of `parameter_count` values, distinct per `version`.
pub fn model(parameter_count: usize, version: u32) -> Vec<f32> {
    (0..parameter_count)
        .map(|index| (index as f32 * 1e-4).sin() + version as f32 * 0.5)
        .collect()
}

/// The record of completed round `round`, with values that differ by round.
pub fn round_record(round: u32) -> RoundRecord {
    RoundRecord {
        round,
        train_participants: 3,
        train_weight: 120.0 + f64::from(round),
        train_statistics: vec![0.25 * f64::from(round), 7.0],
        evaluate_participants: 3,
        evaluate_statistics: vec![f64::from(round) / 3.0, 90.0],
        dropped: if round.is_multiple_of(4) {
            vec![format!("node-{round}")]
        } else {
            Vec::new()
        },
        contributors: vec!["node-0".to_owned(), "node-1".to_owned()],
        secure_guarantee: Some(format!("tolerates {round} colluders")),
        abandoned: None,
        release_sum: Vec::new(),
    }
}

/// A running job after `completed_rounds` rounds, built directly rather than
/// by the engine, at model version `completed_rounds`.
pub fn synthetic_snapshot(
    job: &str,
    parameter_count: usize,
    completed_rounds: u32,
) -> JobSnapshot<TestJob> {
    let plan = plan(parameter_count, completed_rounds + 10, 3, Strategy::FedAvg);
    JobSnapshot {
        id: job.to_owned(),
        descriptor: TestJob {
            name: format!("synthetic {job}"),
        },
        state: JobState::Running,
        global: Arc::new(model(parameter_count, completed_rounds)),
        model_version: completed_rounds,
        optimizer: ServerOptimizer::new(plan.strategy, parameter_count),
        feature_statistics: Some(Arc::new(vec![10.0, 20.5, 3.25])),
        history: (1..=completed_rounds).map(round_record).collect(),
        cursor: (completed_rounds + 1, Phase::Train),
        pending_train: None,
        plan,
    }
}

/// Honest nodes and the engine they talk to, with time passed in.
pub struct Federation {
    pub engine: Engine<TestJob>,
    pub now: Instant,
    pub nodes: Vec<String>,
    /// Nodes from this index on never reply.
    pub honest: usize,
}

pub fn engine_config() -> EngineConfig {
    EngineConfig {
        node_liveness: Duration::from_secs(60),
    }
}

impl Federation {
    pub fn new(engine: Engine<TestJob>, n_nodes: usize) -> Self {
        let mut federation = Self {
            engine,
            now: Instant::now(),
            nodes: (0..n_nodes).map(|index| format!("node-{index}")).collect(),
            honest: n_nodes,
        };
        federation.register_nodes();
        federation
    }

    /// (Re-)registers every node, as nodes do after a coordinator restart.
    pub fn register_nodes(&mut self) {
        for node in &self.nodes {
            self.engine.register_node(node, None, self.now);
        }
    }

    /// Calls `commit` with the job's snapshot after each of its engine
    /// events, as the coordinator saves at each committed transition.
    pub fn commit_events(&mut self, commit: &mut impl FnMut(JobSnapshot<TestJob>)) {
        while let Some(event) = self.engine.poll_event() {
            if let Ok(snapshot) = self.engine.snapshot(&event.job) {
                commit(snapshot);
            }
        }
    }

    /// One pass of every node over its tasks; returns whether one replied.
    pub fn tick(&mut self, commit: &mut impl FnMut(JobSnapshot<TestJob>)) -> bool {
        let mut replied = false;
        for (index, node) in self.nodes.clone().iter().enumerate() {
            let task = self.engine.next_task(node, self.now).ok().flatten();
            self.commit_events(commit);
            let Some(task) = task else { continue };
            if index >= self.honest {
                continue;
            }
            let parameter_count = self
                .engine
                .plan(&task.job)
                .map(|plan| plan.parameter_count)
                .unwrap_or(0);
            let (statistics_len, vector_len) = match task.phase {
                Phase::FeatureStats => (FEATURE_STATISTICS_LEN, 0),
                Phase::Train => (TRAIN_STATISTICS_LEN, parameter_count),
                Phase::Evaluate => (EVALUATE_STATISTICS_LEN, 0),
                Phase::Release => unreachable!("test jobs train"),
            };
            let scale = (index + 1) as f64;
            let submission = Submission {
                node: node.clone(),
                key: ResultKey {
                    job: task.job.clone(),
                    round: task.round,
                    phase: task.phase,
                },
                body: SubmissionBody::Plain {
                    weight: 10.0 * scale,
                    statistics: (0..statistics_len).map(|i| scale + i as f64).collect(),
                    vector: vec![0.01 * scale as f32; vector_len],
                },
            };
            replied |= self.engine.submit(&submission, self.now).is_ok();
            self.commit_events(commit);
        }
        replied
    }

    /// Runs `job` until it leaves `Running` or `max_ticks` passes went by,
    /// jumping to the next deadline whenever nobody replies.
    pub fn run(
        &mut self,
        job: &str,
        max_ticks: usize,
        commit: &mut impl FnMut(JobSnapshot<TestJob>),
    ) -> JobState {
        for _ in 0..max_ticks {
            let state = self.state(job);
            if state != JobState::Running {
                return state;
            }
            if !self.tick(commit) && self.state(job) == JobState::Running {
                let Some(deadline) = self.engine.poll_timeout() else {
                    break;
                };
                self.now = deadline;
                self.engine.handle_timeout(self.now);
                self.commit_events(commit);
            }
        }
        self.state(job)
    }

    pub fn state(&self, job: &str) -> JobState {
        self.engine
            .status(job)
            .map(|status| status.state)
            .unwrap_or(JobState::Cancelled)
    }

    /// Submits and starts a job, committing its events.
    pub fn start(
        &mut self,
        plan: JobPlan,
        name: &str,
        commit: &mut impl FnMut(JobSnapshot<TestJob>),
    ) -> String {
        let parameters = model(plan.parameter_count, 0);
        let job = self
            .engine
            .submit_job(
                plan,
                TestJob {
                    name: name.to_owned(),
                },
                parameters,
                self.now,
            )
            .unwrap_or_else(|error| panic!("submit: {error}"));
        self.commit_events(commit);
        self.engine
            .start_job(&job, self.now)
            .unwrap_or_else(|error| panic!("start: {error}"));
        self.commit_events(commit);
        job
    }
}
