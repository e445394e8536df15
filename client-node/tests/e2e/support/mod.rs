//! End-to-end scaffolding shared by the plaintext (`--insecure-dev`) tests:
//! a real coordinator on 127.0.0.1, real nodes that have registered, and an
//! operator's `watch` to the job's end, each wait with its own deadline.
// Each test module uses only part of this module.
#![allow(dead_code)]

pub mod console_visitor;
pub mod network_lab;
pub mod prometheus;
pub mod recording_proxy;
pub mod seeded;
pub mod webdriver;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use client_node::config::NodeConfig;
use client_node::node::{NodeProgress, RunOptions, run_with};
use coordinator::CoordinatorConfig;
use coordinator::operator::{OperatorClient, WatchUpdate};
use tokio::sync::mpsc;
use veil_metrics::{CoordinatorMetrics, NodeMetrics};
use veil_wire::v1;

/// The machine, as the tests of this binary share it: the harness runs tests
/// on several threads, but a federation's deadlines are set for the
/// machine's cores, not for a share of them.
static MACHINE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// For a test that runs whole federation jobs with phase deadlines: waits
/// until no other test runs, and keeps the machine until the guard drops.
pub async fn whole_machine() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    MACHINE.write().await
}

/// For a light test (a few RPCs, a scripted coordinator, one node): runs
/// beside other light tests, never beside a federation.
pub async fn share_of_machine() -> tokio::sync::RwLockReadGuard<'static, ()> {
    MACHINE.read().await
}

/// [`share_of_machine`] for a test that is not async (one running the node's
/// binary, say).
pub fn share_of_machine_blocking() -> tokio::sync::RwLockReadGuard<'static, ()> {
    MACHINE.blocking_read()
}

/// A coordinator serving plaintext in this process.
pub struct Coordinator {
    /// `http://127.0.0.1:PORT`.
    pub address: String,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Coordinator {
    /// Starts one with its state in `state_dir`.
    pub async fn start(state_dir: PathBuf) -> Self {
        Self::start_counted(state_dir, None).await
    }

    /// Starts one that counts into `metrics`.
    pub async fn start_counted(
        state_dir: PathBuf,
        metrics: Option<Arc<CoordinatorMetrics>>,
    ) -> Self {
        Self::start_with(CoordinatorConfig {
            state_dir: Some(state_dir),
            metrics,
            ..CoordinatorConfig::insecure_development()
        })
        .await
    }

    /// Starts one that also serves its console (self-signed, on 127.0.0.1); returns the
    /// console's address too.
    pub async fn start_with_console(state_dir: PathBuf) -> (Self, std::net::SocketAddr) {
        let console = coordinator::console::ConsoleConfig::bind(
            "127.0.0.1:0".parse().unwrap(),
            coordinator::console::ConsoleIdentity::SelfSigned {
                hosts: vec!["127.0.0.1".to_owned()],
            },
        )
        .unwrap();
        let console_address = console.local_addr().unwrap();
        let coordinator = Self::start_with(CoordinatorConfig {
            state_dir: Some(state_dir),
            console: Some(console),
            ..CoordinatorConfig::insecure_development()
        })
        .await;
        (coordinator, console_address)
    }

    async fn start_with(config: CoordinatorConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(coordinator::run(config, listener, async {
            let _ = stopped.await;
        }));
        Self {
            address,
            stop,
            server,
        }
    }

    /// An operator connection to it.
    pub async fn operator(&self) -> OperatorClient {
        coordinator::operator::connect(&self.address, None)
            .await
            .unwrap()
    }

    /// Stops it and waits until it has stopped (its files are closed).
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.server.await;
    }
}

/// Node `node-{index}` in plaintext development mode, reading `file`, with
/// its state in `state/node-{index}.state` and the default policy.
pub fn dev_node_config(index: usize, address: &str, file: &Path, state: &Path) -> NodeConfig {
    NodeConfig {
        node_id: format!("node-{index}"),
        tls_dir: None,
        insecure_dev: true,
        privacy_audit_kit: None,
        coordinator: address.to_owned(),
        data: veil_behaviour_features::CsvSource::new(file.to_owned()).into(),
        state_dir: Some(state.join(format!("node-{index}.state"))),
        policy: client_node::policy::NodePolicy::default(),
    }
}

/// Starts a node per config and returns once every one has registered.
pub async fn start_nodes(configs: Vec<NodeConfig>) -> Vec<tokio::task::JoinHandle<()>> {
    start_counted_nodes(configs.into_iter().map(|config| (config, None)).collect()).await
}

/// [`start_nodes`], each node counting into its own metrics if given.
pub async fn start_counted_nodes(
    configs: Vec<(NodeConfig, Option<Arc<NodeMetrics>>)>,
) -> Vec<tokio::task::JoinHandle<()>> {
    start_nodes_with_options(
        configs
            .into_iter()
            .map(|(config, metrics)| {
                let options = RunOptions {
                    metrics,
                    ..RunOptions::default()
                };
                (config, options)
            })
            .collect(),
    )
    .await
}

/// [`start_nodes`], each node with its own hooks (the progress channel is
/// this function's).
pub async fn start_nodes_with_options(
    configs: Vec<(NodeConfig, RunOptions)>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let expected = configs.len();
    let (progress_sender, mut progress) = mpsc::unbounded_channel();
    let mut nodes = Vec::new();
    for (config, options) in configs {
        let options = RunOptions {
            progress: Some(progress_sender.clone()),
            ..options
        };
        nodes.push(tokio::spawn(async move {
            let _ = run_with(config, options, std::future::pending::<()>()).await;
        }));
    }
    let mut registered = 0;
    while registered < expected {
        let update = tokio::time::timeout(Duration::from_secs(60), progress.recv())
            .await
            .expect("nodes register within a minute")
            .expect("progress channel open");
        if update == NodeProgress::Registered {
            registered += 1;
        }
    }
    nodes
}

/// Follows a job to its end (failing by name after `patience`) and returns
/// its final status with every message `watch` printed, one per line.
pub async fn watch_to_end(
    operator: &mut OperatorClient,
    job_id: &str,
    patience: Duration,
) -> (v1::JobStatus, String) {
    let mut messages = Vec::new();
    let status = tokio::time::timeout(
        patience,
        coordinator::operator::watch(operator, job_id, |update| {
            if let WatchUpdate::Message(message) = update {
                messages.push(message.to_owned());
            }
        }),
    )
    .await
    .unwrap_or_else(|_| panic!("job {job_id} did not end within {patience:?}"))
    .unwrap();
    (status, messages.join("\n"))
}

/// Submits and starts `spec`, then watches the job to its end as
/// [`watch_to_end`] does; returns the job id too.
pub async fn run_job_to_end(
    operator: &mut OperatorClient,
    spec: v1::JobSpec,
    patience: Duration,
) -> (String, v1::JobStatus, String) {
    let job_id = coordinator::operator::submit(operator, spec)
        .await
        .unwrap_or_else(|error| panic!("submitting the job: {error}"));
    coordinator::operator::start(operator, &job_id)
        .await
        .unwrap_or_else(|error| panic!("starting {job_id}: {error}"));
    let (status, transcript) = watch_to_end(operator, &job_id, patience).await;
    (job_id, status, transcript)
}

/// A partner's charges for `job_id` as its node's ledger (in `node_state`) holds them, and how
/// they reconcile with the coordinator's: pass the coordinator's charges for the job, every
/// partner's; this takes the partner's own.
pub fn reconcile_partner(
    coordinator_charges: &[veil_privacy_ledger::Charge],
    node_state: &Path,
    partner: &str,
    job_id: &str,
) -> (
    Vec<veil_privacy_ledger::Charge>,
    veil_privacy_ledger::ReconcileReport,
) {
    let node_charges: Vec<veil_privacy_ledger::Charge> =
        veil_privacy_ledger::SqliteLedger::open(&node_state.join("ledger.sqlite"))
            .unwrap_or_else(|error| panic!("{partner}'s ledger: {error}"))
            .charges_for_partner(partner)
            .unwrap_or_else(|error| panic!("{partner}'s charges: {error}"))
            .into_iter()
            .filter(|charge| charge.job_id == job_id)
            .collect();
    let coordinator_view: Vec<veil_privacy_ledger::Charge> = coordinator_charges
        .iter()
        .filter(|charge| charge.partner_id == partner)
        .cloned()
        .collect();
    let report = veil_privacy_ledger::reconcile(&coordinator_view, &node_charges);
    (node_charges, report)
}

/// Asserts that each of `nodes` partners (`node-<i>`, state in `<dir>/node-<i>.state`) was
/// charged once per release of an analysis job, at the customer level, in both ledgers, which
/// agree, and that the composed spend is within `epsilon` at `delta`.
pub fn assert_each_release_charged_once(
    coordinator_state: &Path,
    dir: &Path,
    nodes: usize,
    job_id: &str,
    releases: u32,
    (epsilon, delta): (f64, f64),
) {
    let coordinator_charges =
        veil_privacy_ledger::SqliteLedger::open(&coordinator_state.join("ledger.sqlite"))
            .unwrap()
            .charges_for_job(job_id)
            .unwrap();
    for index in 0..nodes {
        let partner = format!("node-{index}");
        let (node_charges, report) = reconcile_partner(
            &coordinator_charges,
            &dir.join(format!("node-{index}.state")),
            &partner,
            job_id,
        );
        assert!(report.is_consistent(), "{partner}: {report:?}");
        assert_eq!(node_charges.len() as u32, releases, "{partner}");
        let mut rounds: Vec<u64> = node_charges.iter().map(|charge| charge.round).collect();
        rounds.sort_unstable();
        rounds.dedup();
        assert_eq!(rounds.len() as u32, releases, "one charge per release");
        assert!(
            node_charges
                .iter()
                .all(|charge| charge.unit == veil_privacy_ledger::PrivacyUnit::Customer)
        );
        let spent = veil_privacy_ledger::compose(node_charges.iter(), delta).unwrap();
        assert!(
            spent.epsilon <= epsilon,
            "{partner} spent ε = {}",
            spent.epsilon
        );
    }
}

/// What a `client-node run` process logs once the coordinator has accepted its registration.
pub const REGISTERED_LOG_LINE: &str = "registered with the coordinator";

/// Waits until the node process writing `log` (its standard output and error) has registered,
/// failing by name at `deadline`: starting a job only after every node is known makes its first
/// phase invite all of them.
pub async fn wait_until_registered(log: &Path, deadline: Instant) {
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(REGISTERED_LOG_LINE) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the node logging to {} never registered:\n{text}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
