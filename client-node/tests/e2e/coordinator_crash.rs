//! The coordinator as a real process, killed with SIGKILL at each point of a
//! round (during feature statistics, during training under secure
//! aggregation, during evaluation, right after a round committed) and
//! restarted on the same state folder and port, with real node processes
//! reconnecting on their own: the job resumes from its last committed phase
//! and succeeds, no committed round is lost, no round is charged twice, the
//! coordinator's ledger reconciles with every node's, and the final model can
//! be fetched.
//!
//! Recovery times are printed (`--nocapture`), never asserted.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use coordinator::operator::OperatorClient;
use veil_privacy_ledger::{PrivacyUnit, Release, SqliteLedger, compose, reconcile};
use veil_wire::v1;

use crate::support;

const NODES: usize = 3;
const ROUNDS: u32 = 5;
const CUSTOMER_EPSILON: f64 = 3.5;
/// Status polling interval: short, so a phase lasting a few tens of
/// milliseconds (evaluation) is still seen while it is open.
const POLL: Duration = Duration::from_millis(5);
/// Longest wait for any one thing; far above what the job needs.
const PATIENCE: Duration = Duration::from_secs(120);
/// How long into a training phase the coordinator is killed: nodes are then
/// training or exchanging secure-aggregation messages. Short: with Nagle's
/// algorithm off on plaintext connections too, a secure step no longer waits
/// for delayed ACKs and this job's whole training phase can end within 250 ms.
const INTO_TRAINING: Duration = Duration::from_millis(40);
/// Attempts at hitting an open evaluation or training phase before giving up.
const ATTEMPTS_PER_PHASE: usize = 3;

/// A child process killed (SIGKILL on Unix) and reaped when dropped, so a
/// failing test leaves nothing running.
struct KillOnDrop(Child);

impl KillOnDrop {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// Sends a job-control signal (`STOP` or `CONT`) through `kill(1)`.
    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.0.id().to_string())
            .status()
            .expect("kill(1) runs");
        assert!(status.success(), "kill -{signal} {} failed", self.0.id());
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The coordinator binary, built next to `client-node` by `cargo test --workspace`.
fn coordinator_binary() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_client-node")).with_file_name("coordinator");
    assert!(
        path.exists(),
        "{} is missing: build the workspace (`cargo test --release --workspace`) so the \
         coordinator binary sits next to client-node",
        path.display()
    );
    path
}

/// A free port on 127.0.0.1, fixed for every incarnation of the coordinator
/// because nodes reconnect to the address in their configuration.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// The coordinator's successive processes, sharing one state folder and port.
struct CoordinatorProcess {
    binary: PathBuf,
    port: u16,
    state_dir: PathBuf,
    log_dir: PathBuf,
    incarnations: usize,
    process: Option<KillOnDrop>,
}

impl CoordinatorProcess {
    fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts a new process; returns when it was spawned.
    fn spawn(&mut self) -> Instant {
        let log_path = self
            .log_dir
            .join(format!("coordinator-{}.log", self.incarnations));
        self.incarnations += 1;
        let log = File::create(&log_path).expect("coordinator log file");
        let started = Instant::now();
        let child = Command::new(&self.binary)
            // Plaintext: this test is about durability; mTLS has its own tests.
            .args([
                "serve",
                "--insecure-dev",
                "--listen",
                &format!("127.0.0.1:{}", self.port),
            ])
            .arg("--state-dir")
            .arg(&self.state_dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("coordinator log file"))
            .stderr(log)
            .spawn()
            .expect("the coordinator starts");
        self.process = Some(KillOnDrop(child));
        started
    }

    /// SIGKILL, then reap.
    fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Panics if the current process has exited, with its log.
    fn assert_alive(&mut self) {
        if let Some(process) = self.process.as_mut()
            && let Ok(Some(exit)) = process.0.try_wait()
        {
            panic!("the coordinator exited ({exit}):\n{}", self.logs());
        }
    }

    /// The end of every incarnation's log, for failure messages.
    fn logs(&self) -> String {
        let mut text = String::new();
        for incarnation in 0..self.incarnations {
            let path = self.log_dir.join(format!("coordinator-{incarnation}.log"));
            let log = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(30)..];
            text.push_str(&format!("--- coordinator incarnation {incarnation} ---\n"));
            text.push_str(&tail.join("\n"));
            text.push('\n');
        }
        text
    }

    /// Waits until the process answers operator calls; returns a client.
    async fn serving(&mut self) -> OperatorClient {
        let deadline = Instant::now() + PATIENCE;
        loop {
            self.assert_alive();
            if let Ok(mut client) = coordinator::operator::connect(&self.address(), None).await {
                let probe = client
                    .get_job_status(v1::JobRef {
                        job_id: "job-probe".to_owned(),
                    })
                    .await;
                match probe {
                    Ok(_) => return client,
                    Err(status) if status.code() != tonic::Code::Unavailable => return client,
                    Err(_) => {}
                }
            }
            assert!(Instant::now() < deadline, "the coordinator never served");
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Where a job is, ordered: rounds completed, then the phase of the round
/// under way (feature statistics < training < evaluation); a finished job is
/// past everything.
fn position(status: &v1::JobStatus) -> (u32, i32) {
    if status.state == v1::JobState::Succeeded as i32 {
        (u32::MAX, 0)
    } else {
        (status.completed_rounds, status.current_phase)
    }
}

fn phase_name(phase: i32) -> &'static str {
    match v1::Phase::try_from(phase) {
        Ok(v1::Phase::FeatureStats) => "feature statistics",
        Ok(v1::Phase::Train) => "training",
        Ok(v1::Phase::Evaluate) => "evaluation",
        _ => "no phase",
    }
}

/// Polls the job until `reached` holds; fails on a failed or cancelled job.
async fn wait_for(
    coordinator: &mut CoordinatorProcess,
    client: &mut OperatorClient,
    job_id: &str,
    what: &str,
    reached: impl Fn(&v1::JobStatus) -> bool,
) -> v1::JobStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        coordinator.assert_alive();
        let status = client
            .get_job_status(v1::JobRef {
                job_id: job_id.to_owned(),
            })
            .await
            .unwrap_or_else(|status| panic!("status of {job_id}: {status}"))
            .into_inner();
        let state = v1::JobState::try_from(status.state);
        assert!(
            !matches!(state, Ok(v1::JobState::Failed | v1::JobState::Cancelled)),
            "{job_id} ended while waiting for {what}: {}\n{}",
            status.failure_reason,
            coordinator.logs()
        );
        if reached(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last status {status:?}\n{}",
            coordinator.logs()
        );
        tokio::time::sleep(POLL).await;
    }
}

/// What one kill and restart showed.
struct Recovery {
    /// The durable position the restarted coordinator resumed from.
    restored: v1::JobStatus,
    /// From spawning the new process to it answering operator calls.
    to_serving: Duration,
    /// From spawning the new process to the job moving past the restored position.
    to_progress: Duration,
    /// A client of the new process.
    client: OperatorClient,
}

/// Kills the coordinator, restarts it on the same state folder and port, and
/// checks that nothing committed before the kill was lost.
async fn kill_and_restart(
    coordinator: &mut CoordinatorProcess,
    job_id: &str,
    at_kill: &v1::JobStatus,
    while_down: impl FnOnce(),
) -> Recovery {
    coordinator.kill();
    while_down();
    let spawned = coordinator.spawn();
    let mut client = coordinator.serving().await;
    let to_serving = spawned.elapsed();
    let restored = wait_for(coordinator, &mut client, job_id, "the restored job", |_| {
        true
    })
    .await;
    assert_eq!(
        v1::JobState::try_from(restored.state),
        Ok(v1::JobState::Running),
        "the job was not resumed: {restored:?}"
    );
    assert!(
        position(&restored) >= position(at_kill),
        "the restarted coordinator went back from {:?} to {:?}",
        position(at_kill),
        position(&restored)
    );
    // Every round reported as completed before the kill is still there, unchanged.
    assert!(restored.history.len() >= at_kill.history.len());
    for (before, after) in at_kill.history.iter().zip(&restored.history) {
        assert_eq!(
            format!("{before:?}"),
            format!("{after:?}"),
            "a committed round changed"
        );
    }
    let resumed_at = position(&restored);
    wait_for(
        coordinator,
        &mut client,
        job_id,
        "progress after the restart",
        |s| position(s) > resumed_at,
    )
    .await;
    Recovery {
        restored,
        to_serving,
        to_progress: spawned.elapsed(),
        client,
    }
}

fn report(label: &str, at_kill: &v1::JobStatus, recovery: &Recovery) {
    println!(
        "kill {label}: killed after {} completed rounds in {}, resumed after {} in {}; \
         serving after {:.0} ms, past the interrupted phase after {:.0} ms",
        at_kill.completed_rounds,
        phase_name(at_kill.current_phase),
        recovery.restored.completed_rounds,
        phase_name(recovery.restored.current_phase),
        recovery.to_serving.as_secs_f64() * 1e3,
        recovery.to_progress.as_secs_f64() * 1e3,
    );
}

fn job() -> v1::JobSpec {
    let mut job = veil_job::standard_job("2024-10-02", 90);
    job.rounds = ROUNDS;
    job.privacy.customer_epsilon = Some(CUSTOMER_EPSILON);
    job.aggregation.step_timeout_secs = Some(3.0);
    job.timeouts.train_secs = Some(20.0);
    job.timeouts.evaluate_secs = Some(10.0);
    job.to_wire()
}

fn spawn_node(config: &Path, log: &Path) -> KillOnDrop {
    let log = File::create(log).expect("node log file");
    KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_client-node"))
            .args(["run", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("node log file"))
            .stderr(log)
            .spawn()
            .expect("client-node starts"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_killed_at_every_phase_resumes_the_job_without_double_charges() {
    let _machine = support::whole_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let synth = veil_synth_data::SynthConfig::demo(NODES, 23);
    let files = veil_synth_data::write_partner_files(&synth, dir.path()).unwrap();
    let mut coordinator = CoordinatorProcess {
        binary: coordinator_binary(),
        port: free_port(),
        state_dir: dir.path().join("coordinator.state"),
        log_dir: dir.path().to_owned(),
        incarnations: 0,
        process: None,
    };
    coordinator.spawn();
    let mut client = coordinator.serving().await;

    let mut nodes = Vec::new();
    for (index, file) in files.iter().enumerate() {
        let config = dir.path().join(format!("node-{index}.toml"));
        std::fs::write(
            &config,
            format!(
                "node_id = \"node-{index}\"\ncoordinator = \"{}\"\ninsecure_dev = true\nstate_dir = \"{}\"\n\
                 [data]\npath = \"{}\"\n",
                coordinator.address(),
                dir.path().join(format!("node-{index}.state")).display(),
                file.display()
            ),
        )
        .unwrap();
        nodes.push(spawn_node(
            &config,
            &dir.path().join(format!("node-{index}.log")),
        ));
    }
    // Every node must have registered before one is stopped below.
    let deadline = Instant::now() + PATIENCE;
    for index in 0..NODES {
        support::wait_until_registered(&dir.path().join(format!("node-{index}.log")), deadline)
            .await;
    }

    // (a) During round 0's feature statistics. One node is stopped (SIGSTOP)
    // while still counted live, so the phase stays open with the others'
    // results in and its own missing until the coordinator dies.
    let stalled = NODES - 1;
    nodes[stalled].signal("STOP");
    let job_id = coordinator::operator::submit(&mut client, job())
        .await
        .unwrap();
    coordinator::operator::start(&mut client, &job_id)
        .await
        .unwrap();
    let at_kill = wait_for(
        &mut coordinator,
        &mut client,
        &job_id,
        "feature statistics",
        |s| s.current_phase == v1::Phase::FeatureStats as i32,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let recovery = kill_and_restart(&mut coordinator, &job_id, &at_kill, || {
        nodes[stalled].signal("CONT");
    })
    .await;
    assert_eq!(
        position(&recovery.restored),
        (0, v1::Phase::FeatureStats as i32)
    );
    report("(a) during feature statistics", &at_kill, &recovery);
    let mut recoveries = vec![recovery.to_progress];
    client = recovery.client;

    // (b) Training and (c) evaluation: a phase can commit between the last
    // poll and the kill; the restored position tells, and a miss is retried
    // at the next round.
    for (label, phase, delay) in [
        ("(b) during training", v1::Phase::Train, INTO_TRAINING),
        ("(c) during evaluation", v1::Phase::Evaluate, Duration::ZERO),
    ] {
        let mut hit = false;
        for _ in 0..ATTEMPTS_PER_PHASE {
            let at_kill = wait_for(&mut coordinator, &mut client, &job_id, label, |s| {
                s.current_phase == phase as i32
            })
            .await;
            assert!(
                at_kill.completed_rounds + 1 < ROUNDS,
                "no round left to kill {label}"
            );
            tokio::time::sleep(delay).await;
            let recovery = kill_and_restart(&mut coordinator, &job_id, &at_kill, || {}).await;
            report(label, &at_kill, &recovery);
            recoveries.push(recovery.to_progress);
            hit = position(&recovery.restored) == position(&at_kill);
            client = recovery.client;
            if hit {
                break;
            }
            println!("  the phase had committed before the kill; trying again");
        }
        assert!(hit, "never killed the coordinator {label}");
    }

    // (d) Right after a round committed.
    let before = wait_for(&mut coordinator, &mut client, &job_id, "a round", |_| true).await;
    let at_kill = wait_for(
        &mut coordinator,
        &mut client,
        &job_id,
        "the next round",
        |s| s.completed_rounds > before.completed_rounds,
    )
    .await;
    assert!(
        at_kill.completed_rounds < ROUNDS,
        "no round left after the kill"
    );
    let recovery = kill_and_restart(&mut coordinator, &job_id, &at_kill, || {}).await;
    report("(d) right after a round committed", &at_kill, &recovery);
    recoveries.push(recovery.to_progress);
    client = recovery.client;

    let status = wait_for(
        &mut coordinator,
        &mut client,
        &job_id,
        "the job's end",
        |s| s.state == v1::JobState::Succeeded as i32,
    )
    .await;
    assert_eq!(status.completed_rounds, ROUNDS);
    assert_eq!(status.history.len() as u32, ROUNDS);
    let model = coordinator::operator::fetch_model(&mut client, &job_id)
        .await
        .unwrap();
    let expected_parameters = veil_job::JobSpec::from_wire(&job())
        .unwrap()
        .model_spec()
        .parameter_count();
    assert_eq!(model.parameters.len(), expected_parameters);
    assert!(model.parameters.iter().all(|value| value.is_finite()));
    let slowest = recoveries.iter().max().unwrap();
    println!(
        "{} restarts; slowest restart to past the interrupted phase: {:.0} ms; \
         rounds abandoned after their inputs left: {:?}",
        recoveries.len(),
        slowest.as_secs_f64() * 1e3,
        status
            .history
            .iter()
            .filter(|round| !round.abandoned.is_empty())
            .map(|round| round.round)
            .collect::<Vec<_>>()
    );

    // One last kill -9 after the end: the ledgers are read as they were left on disk.
    for node in &mut nodes {
        node.kill();
    }
    coordinator.kill();

    // No (job, round, partner, unit) twice, and one customer-level charge per
    // partner that contributed to each committed round.
    let coordinator_ledger =
        SqliteLedger::open(&coordinator.state_dir.join("ledger.sqlite")).unwrap();
    let coordinator_charges = coordinator_ledger.charges_for_job(&job_id).unwrap();
    let keys: HashSet<_> = coordinator_charges.iter().map(|c| c.key()).collect();
    assert_eq!(keys.len(), coordinator_charges.len(), "a key charged twice");
    assert!(
        coordinator_charges
            .iter()
            .all(|charge| charge.unit == PrivacyUnit::Customer)
    );
    let (final_evaluations, round_charges): (Vec<_>, Vec<_>) = coordinator_charges
        .iter()
        .partition(|charge| charge.release == Release::FinalEvaluation);
    let contributions: u32 = status.history.iter().map(|round| round.participants).sum();
    assert_eq!(
        round_charges.len() as u32,
        contributions,
        "charges against contributions per round: {:?}",
        status.history
    );
    // The final model's evaluation: once per node, in the last round.
    assert_eq!(final_evaluations.len(), NODES, "{final_evaluations:?}");
    assert!(
        final_evaluations
            .iter()
            .all(|charge| charge.round == u64::from(ROUNDS))
    );
    for round in &status.history {
        let charged = round_charges
            .iter()
            .filter(|charge| charge.round == u64::from(round.round))
            .count() as u32;
        assert_eq!(charged, round.participants, "round {}", round.round);
    }
    for index in 0..NODES {
        let partner = format!("node-{index}");
        let node_ledger =
            SqliteLedger::open(&dir.path().join(format!("node-{index}.state/ledger.sqlite")))
                .unwrap();
        let node_charges: Vec<_> = node_ledger
            .charges_for_partner(&partner)
            .unwrap()
            .into_iter()
            .filter(|charge| charge.job_id == job_id)
            .collect();
        let coordinator_view: Vec<_> = coordinator_charges
            .iter()
            .filter(|charge| charge.partner_id == partner)
            .cloned()
            .collect();
        // Every node is needed for every round (three minimum participants,
        // three nodes), so a round re-run after a crash invites the same
        // nodes, and both sides hold exactly the same keys.
        let report = reconcile(&coordinator_view, &node_charges);
        assert!(report.is_consistent(), "{partner}: {report:?}");
        // Each node is charged once in every round whose update was
        // released, and once for the final evaluation. A kill during
        // training can leave a round abandoned instead: the inputs that left
        // before the kill are charged, no retry may release them a second
        // time, and the model stays as it was; a node whose input had not
        // left is not charged for that round.
        let charged_rounds: Vec<u64> = node_charges
            .iter()
            .filter(|charge| charge.release != Release::FinalEvaluation)
            .map(|charge| charge.round)
            .collect();
        for round in &status.history {
            let charged = charged_rounds
                .iter()
                .filter(|charged| **charged == u64::from(round.round))
                .count();
            if round.abandoned.is_empty() {
                assert_eq!(charged, 1, "{partner} in round {round:?}");
            } else {
                assert!(charged <= 1, "{partner} in round {round:?}");
            }
        }
        assert_eq!(
            charged_rounds.len() + 1,
            node_charges.len(),
            "{partner}: {:?}",
            node_charges
                .iter()
                .map(|charge| (charge.round, charge.release))
                .collect::<Vec<_>>()
        );
        let spent = compose(node_charges.iter(), 1e-5).unwrap();
        assert!(
            spent.epsilon <= CUSTOMER_EPSILON,
            "{partner} spent ε = {}",
            spent.epsilon
        );
    }

    // The audit log, written by five incarnations of the coordinator,
    // verifies as one chain under the coordinator's key (kept in the state
    // folder across restarts) and records every round's commit. A round
    // re-run after a crash may show a second commit entry: the log records
    // what happened, and the ledger above shows it was charged once.
    let state = dir.path().join("coordinator.state");
    let public_key = veil_audit_log::AuditPublicKey::from_hex(
        std::fs::read_to_string(state.join("audit-public.key"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    let log_path = state.join("audit.log");
    let head = veil_audit_log::Head::read(&veil_audit_log::head_path_for(&log_path)).unwrap();
    let audit = veil_audit_log::verify_log_file(&log_path, &public_key, head.as_ref()).unwrap();
    for round in 1..=u64::from(ROUNDS) {
        assert!(
            audit.entries.iter().any(|entry| matches!(
                &entry.event,
                veil_audit_log::AuditEvent::RoundCommitted { round: r, job_id: j, .. }
                    if *r == round && *j == job_id
            )),
            "round {round} has no commit entry"
        );
    }
    // The final evaluation is its own entry, naming every node and its ε.
    assert!(
        audit.entries.iter().any(|entry| matches!(
            &entry.event,
            veil_audit_log::AuditEvent::EvaluationReleased { round, job_id: j, participants, epsilon_charged }
                if *round == u64::from(ROUNDS) && *j == job_id
                    && participants.len() == NODES && epsilon_charged.len() == NODES
        )),
        "no evaluation release entry"
    );
}
