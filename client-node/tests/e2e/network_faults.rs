//! Faults on a real network (issue 18, part 2): the coordinator (in this process, over mTLS)
//! and real `client-node` processes, each in a network namespace of its own joined to the
//! coordinator's by a veth link ([`support::network_lab`]). Under 200 ms round trips with
//! jitter, 5% packet loss on every link, one node cut off for longer than a phase deadline
//! and then let back, and the coordinator's address disappearing and coming back, every job
//! completes; no round commits with fewer than its minimum participants, no charge is
//! counted twice, and every node's ledger agrees with the coordinator's.
//!
//! This kernel has no `sch_netem`: latency is added in user space by the relay between the
//! coordinator's address and the coordinator, loss and partitions are nft rules on the node's
//! link, and flapping removes the address itself (docs/network-faults.md).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use coordinator::CoordinatorConfig;
use coordinator::operator::OperatorClient;
use veil_pki::{
    CertificateRequest, FederationCa, MemberFiles, REVOCATIONS_FILE, RevocationList, Role, Validity,
};
use veil_privacy_ledger::{Charge, Release, SqliteLedger};
use veil_wire::v1;

use crate::support;
use crate::support::network_lab::{COORDINATOR_IP, Latency, LinkFault, NetworkLab, Relay};

/// Longest wait for any one thing (a node registering, a job reaching a point, its end).
const PATIENCE: Duration = Duration::from_secs(150);
/// Status polling interval.
const POLL: Duration = Duration::from_millis(50);
/// Customers per partner: small, so a round trains in well under a second.
const CUSTOMERS: usize = 400;

/// The coordinator serving mTLS in this process on 127.0.0.1; the lab's relay carries the
/// nodes' connections to it.
struct Coordinator {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Coordinator {
    /// Stops it and waits until its files are closed.
    async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
            let _ = (&mut self.server).await;
        }
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A federation of `nodes` node processes in the lab. Fields drop in order: the node
/// processes and namespaces first, the folder they write to last.
struct Federation {
    lab: NetworkLab,
    relay: Relay,
    coordinator: Coordinator,
    operator: OperatorClient,
    nodes: usize,
    dir: tempfile::TempDir,
}

impl Federation {
    /// A CA, the coordinator (its certificate valid for 127.0.0.1, where the operator calls
    /// it, and for [`COORDINATOR_IP`], where nodes do), the lab, and `nodes` registered nodes.
    async fn start(nodes: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        let validity = Validity::starting_now(Duration::from_secs(86_400));
        let ca = FederationCa::create("network-faults", validity).unwrap();
        ca.save(&root.join("pki/ca")).unwrap();
        let (coordinator_files, _) = MemberFiles::issue_into(
            &ca,
            &CertificateRequest::coordinator(
                "coordinator",
                vec!["127.0.0.1".to_owned(), COORDINATOR_IP.to_owned()],
                validity,
            ),
            &root.join("pki/coordinator"),
        )
        .unwrap();
        let (operator_files, _) = MemberFiles::issue_into(
            &ca,
            &CertificateRequest::member(Role::Operator, "operator", validity),
            &root.join("pki/operator"),
        )
        .unwrap();
        let revocations = RevocationList::open(root.join("pki/ca").join(REVOCATIONS_FILE)).unwrap();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(coordinator::run(
            CoordinatorConfig {
                state_dir: Some(root.join("coordinator.state")),
                ..CoordinatorConfig::mtls(coordinator_files.server(revocations).unwrap())
            },
            listener,
            async {
                let _ = stopped.await;
            },
        ));
        let coordinator = Coordinator {
            stop: Some(stop),
            server,
        };
        let mut lab = NetworkLab::create(&root, nodes);
        let relay = Relay::start(lab.socket(), address);

        let mut synth = veil_synth_data::SynthConfig::demo(nodes, 41);
        for partner in &mut synth.partners {
            partner.n_customers = CUSTOMERS;
        }
        let files = veil_synth_data::write_partner_files(&synth, &root.join("data")).unwrap();
        for (index, file) in files.iter().enumerate() {
            let name = format!("node-{index}");
            MemberFiles::issue_into(
                &ca,
                &CertificateRequest::member(Role::Node, &name, validity),
                &root.join("pki").join(&name),
            )
            .unwrap();
            let config = root.join(format!("{name}.toml"));
            std::fs::write(
                &config,
                format!(
                    "node_id = \"{name}\"\ncoordinator = \"{}\"\ntls_dir = \"{}\"\nstate_dir = \"{}\"\n\
                     [data]\npath = \"{}\"\n",
                    lab.coordinator_url(),
                    root.join("pki").join(&name).display(),
                    root.join(format!("{name}.state")).display(),
                    file.display()
                ),
            )
            .unwrap();
            let mut node = Command::new(env!("CARGO_BIN_EXE_client-node"));
            node.args(["run", "--config"]).arg(&config);
            lab.spawn_on_node(index, node, &root.join(format!("{name}.log")));
        }
        let deadline = Instant::now() + PATIENCE;
        for index in 0..nodes {
            support::wait_until_registered(&root.join(format!("node-{index}.log")), deadline).await;
        }
        let operator = coordinator::operator::connect(
            &format!("https://127.0.0.1:{}", address.port()),
            Some(&operator_files.client().unwrap()),
        )
        .await
        .unwrap();
        Self {
            lab,
            relay,
            coordinator,
            operator,
            nodes,
            dir,
        }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Submits and starts a job; returns its id.
    async fn submit(&mut self, spec: v1::JobSpec) -> String {
        let job_id = coordinator::operator::submit(&mut self.operator, spec)
            .await
            .unwrap_or_else(|error| panic!("submitting the job: {error:#}"));
        coordinator::operator::start(&mut self.operator, &job_id)
            .await
            .unwrap_or_else(|error| panic!("starting {job_id}: {error:#}"));
        job_id
    }

    async fn status(&mut self, job_id: &str) -> v1::JobStatus {
        self.operator
            .get_job_status(v1::JobRef {
                job_id: job_id.to_owned(),
            })
            .await
            .unwrap_or_else(|status| panic!("status of {job_id}: {status}"))
            .into_inner()
    }

    /// Polls until `reached` holds or the job has ended, failing by name after [`PATIENCE`].
    async fn wait_for(
        &mut self,
        job_id: &str,
        what: &str,
        reached: impl Fn(&v1::JobStatus) -> bool,
    ) -> v1::JobStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let status = self.status(job_id).await;
            if reached(&status) || ended(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last status {status:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The last lines of every node's log, for failure messages.
    fn logs(&self) -> String {
        let mut text = String::new();
        for index in 0..self.nodes {
            let log = std::fs::read_to_string(self.root().join(format!("node-{index}.log")))
                .unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            text.push_str(&format!("--- node-{index} ---\n"));
            text.push_str(&lines[lines.len().saturating_sub(15)..].join("\n"));
            text.push('\n');
        }
        text
    }

    /// Kills the nodes and stops the coordinator, then checks the books: the job succeeded,
    /// every committed round had at least `min_participants`, the coordinator charged no key
    /// twice and exactly one charge per participant of every round, and each node's ledger
    /// holds every charge the coordinator holds for it, priced the same. Returns the
    /// charges each node holds that the coordinator does not (a masked input that left the
    /// node, and was charged there first, but never reached the coordinator).
    async fn check_books(
        mut self,
        job_id: &str,
        status: &v1::JobStatus,
        min_participants: u32,
    ) -> BTreeMap<String, Vec<Charge>> {
        assert_eq!(
            v1::JobState::try_from(status.state),
            Ok(v1::JobState::Succeeded),
            "{job_id} did not succeed: {}\n{}",
            status.failure_reason,
            self.logs()
        );
        for round in &status.history {
            assert!(
                round.participants >= min_participants,
                "round {} committed with {} participants, fewer than {min_participants}",
                round.round,
                round.participants
            );
        }
        let root = self.root().to_owned();
        // The ledgers are read as the processes left them on disk.
        drop(self.lab);
        self.coordinator.stop().await;
        let coordinator_charges = SqliteLedger::open(&root.join("coordinator.state/ledger.sqlite"))
            .unwrap()
            .charges_for_job(job_id)
            .unwrap();
        let keys: HashSet<_> = coordinator_charges.iter().map(Charge::key).collect();
        assert_eq!(keys.len(), coordinator_charges.len(), "a key charged twice");
        for round in &status.history {
            let charged = coordinator_charges
                .iter()
                .filter(|charge| {
                    charge.release != Release::FinalEvaluation
                        && charge.round == u64::from(round.round)
                })
                .count();
            assert_eq!(
                charged, round.participants as usize,
                "round {}: charges against participants",
                round.round
            );
        }
        let mut node_only = BTreeMap::new();
        for index in 0..self.nodes {
            let partner = format!("node-{index}");
            let (node_charges, report) = support::reconcile_partner(
                &coordinator_charges,
                &root.join(format!("{partner}.state")),
                &partner,
                job_id,
            );
            assert!(
                report.missing_on_node.is_empty() && report.mismatched.is_empty(),
                "{partner}: the coordinator holds charges the node does not, or prices them \
                 differently: {report:?}"
            );
            assert!(!node_charges.is_empty(), "{partner} was never charged");
            node_only.insert(partner, report.missing_on_coordinator);
        }
        node_only
    }
}

/// "participants per round [4, 4, 3]": what a test prints of a finished job.
fn participants(status: &v1::JobStatus) -> String {
    let per_round: Vec<u32> = status
        .history
        .iter()
        .map(|round| round.participants)
        .collect();
    format!("participants per round {per_round:?}")
}

fn ended(status: &v1::JobStatus) -> bool {
    !matches!(
        v1::JobState::try_from(status.state),
        Ok(v1::JobState::Running | v1::JobState::Pending)
    )
}

/// A small secure job (the standard job's DP-SGD and SecAgg+) over `nodes` nodes, needing
/// all but one, with the given phase deadlines.
fn job(nodes: u32, rounds: u32, phase_secs: f64, step_secs: f64) -> v1::JobSpec {
    let mut job = veil_job::standard_job("2024-10-02", 90);
    job.rounds = rounds;
    job.min_participants = nodes - 1;
    job.max_participants = nodes;
    job.model_mut().kind = "logistic_regression".to_owned();
    job.model_mut().hidden = Vec::new();
    job.training_mut().local_epochs = 1;
    job.aggregation.step_timeout_secs = Some(step_secs);
    job.timeouts.feature_stats_secs = Some(phase_secs);
    job.timeouts.train_secs = Some(phase_secs);
    job.timeouts.evaluate_secs = Some(phase_secs);
    job.to_wire()
}

/// Every node's link and the relay both ways: 100 ms each way (a 200 ms round trip), each
/// chunk ±40 ms. The job completes with every node in every round, and the ledgers agree
/// key for key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_completes_over_200_ms_round_trips_with_jitter() {
    let _machine = support::whole_machine().await;
    let mut federation = Federation::start(4).await;
    federation.relay.set_latency(Some(Latency {
        one_way: Duration::from_millis(100),
        jitter: Duration::from_millis(40),
    }));
    let job_id = federation.submit(job(4, 2, 60.0, 20.0)).await;
    let status = federation
        .wait_for(&job_id, "the job's end", |_| false)
        .await;
    println!("{}", participants(&status));
    let history = status.history.clone();
    let node_only = federation.check_books(&job_id, &status, 3).await;
    assert!(
        history.iter().all(|round| round.participants == 4),
        "latency alone should not cost a round a participant: {history:?}"
    );
    for (partner, charges) in node_only {
        assert!(charges.is_empty(), "{partner}: {charges:?}");
    }
}

/// 5% of packets dropped in both directions on every node's link (nft `numgen random mod
/// 100 < 5 drop`): TCP recovers them and the job completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_completes_with_5_percent_packet_loss_on_every_link() {
    let _machine = support::whole_machine().await;
    let mut federation = Federation::start(4).await;
    for index in 0..4 {
        federation.lab.apply(index, LinkFault::Loss { percent: 5 });
    }
    let job_id = federation.submit(job(4, 3, 60.0, 20.0)).await;
    let status = federation
        .wait_for(&job_id, "the job's end", |_| false)
        .await;
    let dropped: Vec<u64> = (0..4)
        .map(|index| federation.lab.dropped_packets(index))
        .collect();
    println!(
        "packets dropped per link: {dropped:?}; {}",
        participants(&status)
    );
    assert!(
        dropped.iter().all(|&packets| packets > 0),
        "every link should have lost packets: {dropped:?}"
    );
    let node_only = federation.check_books(&job_id, &status, 3).await;
    for (partner, charges) in node_only {
        assert!(charges.is_empty(), "{partner}: {charges:?}");
    }
}

/// One node cut off (every packet dropped) after round 1 for longer than a phase deadline:
/// a round commits without it, with the minimum of three; let back, it takes part again
/// before the job ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_node_is_left_out_past_the_deadline_and_rejoins() {
    let _machine = support::whole_machine().await;
    let mut federation = Federation::start(4).await;
    let phase_secs = 4.0;
    let job_id = federation.submit(job(4, 8, phase_secs, 3.0)).await;
    let cut = 3;
    federation
        .wait_for(&job_id, "round 1", |status| status.completed_rounds >= 1)
        .await;
    federation.lab.apply(cut, LinkFault::Partition);
    let partitioned_at = Instant::now();
    let at_partition = federation.status(&job_id).await.completed_rounds;
    // Cut off until a round has committed without the node and for longer than a phase's
    // deadline.
    let without = federation
        .wait_for(&job_id, "a round without the cut-off node", |status| {
            status.completed_rounds > at_partition + 1
        })
        .await;
    let longer_than_a_deadline = Duration::from_secs_f64(phase_secs) + Duration::from_secs(1);
    if let Some(rest) = longer_than_a_deadline.checked_sub(partitioned_at.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    let dropped = federation.lab.dropped_packets(cut);
    federation.lab.heal(cut);
    let cut_for = partitioned_at.elapsed();
    let healed_after_rounds = federation.status(&job_id).await.completed_rounds;
    assert!(
        !ended(&without),
        "the job ended while a node was cut off: {without:?}"
    );
    let status = federation
        .wait_for(&job_id, "the job's end", |_| false)
        .await;
    println!(
        "cut off after round {at_partition} for {:.1} s ({} packets dropped), let back after \
         round {healed_after_rounds}; {}",
        cut_for.as_secs_f64(),
        dropped,
        participants(&status)
    );
    let history = status.history.clone();
    let node_only = federation.check_books(&job_id, &status, 3).await;
    assert!(
        history
            .iter()
            .any(|round| round.round > at_partition && round.participants == 3),
        "no round ran without the cut-off node: {history:?}"
    );
    assert!(
        history
            .iter()
            .any(|round| round.round > healed_after_rounds && round.participants == 4),
        "the node never took part again after the partition healed (after round \
         {healed_after_rounds}): {history:?}"
    );
    for (partner, charges) in node_only {
        if partner != format!("node-{cut}") {
            assert!(charges.is_empty(), "{partner}: {charges:?}");
        }
        println!(
            "{partner}: {} charges the coordinator does not hold",
            charges.len()
        );
    }
}

/// The coordinator's address removed for 1.5 s and added back, four times while the job
/// runs (each outage shorter than a phase's deadline): nodes' connections stall and recover,
/// and the job completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_completes_while_the_coordinator_address_flaps() {
    const FLAPS: usize = 4;
    let _machine = support::whole_machine().await;
    let mut federation = Federation::start(4).await;
    let job_id = federation.submit(job(4, 8, 30.0, 10.0)).await;
    federation
        .wait_for(&job_id, "the first training phase", |status| {
            status.current_phase == v1::Phase::Train as i32
        })
        .await;
    for flap in 0..FLAPS {
        let status = federation.status(&job_id).await;
        assert!(
            !ended(&status),
            "the job ended after {flap} of {FLAPS} flaps: {status:?}"
        );
        federation.lab.remove_coordinator_address();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        federation.lab.restore_coordinator_address();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let status = federation
        .wait_for(&job_id, "the job's end", |_| false)
        .await;
    println!("{FLAPS} flaps; {}", participants(&status));
    let node_only = federation.check_books(&job_id, &status, 3).await;
    for (partner, charges) in node_only {
        assert!(charges.is_empty(), "{partner}: {charges:?}");
    }
}

/// The lab removes everything it made, even when the test using it fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lab_leaves_no_namespace_behind_even_after_a_panic() {
    let _machine = support::share_of_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let dir_path: PathBuf = dir.path().to_owned();
    let before = namespaces_of_this_process();
    let expected_while_up = before.len() + 3;
    let outcome = std::panic::catch_unwind(move || {
        let lab = NetworkLab::create(&dir_path, 2);
        lab.apply(0, LinkFault::Partition);
        assert_eq!(namespaces_of_this_process().len(), expected_while_up);
        panic!("a failing test");
    });
    assert!(outcome.is_err());
    assert_eq!(namespaces_of_this_process(), before);
}

/// The names of the namespaces this process's labs hold now.
fn namespaces_of_this_process() -> Vec<String> {
    let list = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
        .unwrap_or_default();
    let prefix = format!("veil-nf-{}-", std::process::id());
    let mut names: Vec<String> = list
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| name.starts_with(&prefix))
        .map(str::to_owned)
        .collect();
    names.sort();
    names
}
