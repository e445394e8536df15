//! Secure aggregation end to end over real gRPC on 127.0.0.1: five nodes, one
//! killed mid-protocol. The round completes, and the model equals (within the
//! fixed-point encoding error) the one plain FedAvg gives over the nodes whose
//! inputs entered the sum.

use std::path::PathBuf;
use std::time::Duration;

use client_node::config::NodeConfig;
use client_node::node::{NodeProgress, RunOptions, run_with};
use client_node::policy::NodePolicy;
use coordinator::CoordinatorConfig;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use veil_federation::{Phase, SecureStep};
use veil_wire::v1;

use crate::support;

const NODES: usize = 5;
const VICTIM: usize = 4;

/// When the victim is killed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kill {
    Never,
    /// Right after it sent this secure step of round 1's training phase.
    AfterSecureStep(SecureStep),
    /// Right after it answered the feature-statistics phase (plain runs).
    AfterFeatureStats,
}

struct Federation {
    address: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start_coordinator() -> Federation {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(coordinator::run(
        CoordinatorConfig::insecure_development(),
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    Federation {
        address,
        _stop: stop,
    }
}

fn job(mode: &str) -> v1::JobSpec {
    let mut job = veil_job::standard_job("2024-10-02", 90);
    job.rounds = 1;
    job.max_participants = 5;
    job.aggregation.mode = Some(mode.to_owned());
    // The killed node is found missing by a step deadline; the others must
    // never miss one, even with both tests' ten nodes sharing two cores, or
    // the secure model would average fewer partners than the reference.
    job.aggregation.step_timeout_secs = Some(8.0);
    job.timeouts.train_secs = Some(30.0);
    job.timeouts.evaluate_secs = Some(30.0);
    // Exact comparison with plain FedAvg: no noise anywhere.
    job.privacy.customers = Some("off".to_owned());
    // And plain SGD, not Adam: Adam would turn the parallel kernels'
    // load-dependent rounding of near-zero gradients into full steps
    // (see reproducible.rs), and the two runs compared here train apart.
    job.training_mut().optimizer = Some("sgd".to_owned());
    job.training_mut().learning_rate = 0.1;
    job.to_wire()
}

/// Runs one job over five nodes, killing the victim as `kill` says, and
/// returns the final model.
async fn run_job(files: &[PathBuf], state: &std::path::Path, mode: &str, kill: Kill) -> Vec<f32> {
    let federation = start_coordinator().await;
    // Each run is a new federation whose coordinator numbers jobs from
    // job-1 again: nodes get fresh state, since a node pins each job id's
    // spec and refuses another spec under the same id.
    let run_state = tempfile::tempdir_in(state).unwrap();
    let state = run_state.path();
    let (progress_sender, mut progress) = mpsc::unbounded_channel::<(usize, NodeProgress)>();
    let mut nodes: Vec<JoinHandle<()>> = Vec::new();
    for (index, file) in files.iter().enumerate() {
        let config = NodeConfig {
            node_id: format!("node-{index}"),
            tls_dir: None,
            insecure_dev: true,
            privacy_audit_kit: None,
            coordinator: federation.address.clone(),
            data: veil_behaviour_features::CsvSource::new(file.clone()).into(),
            state_dir: Some(state.join(format!("node-{index}.state"))),
            policy: NodePolicy {
                allow_plain_aggregation: true,
                ..Default::default()
            },
        };
        let (sender, mut receiver) = mpsc::unbounded_channel();
        let forward = progress_sender.clone();
        tokio::spawn(async move {
            while let Some(update) = receiver.recv().await {
                let _ = forward.send((index, update));
            }
        });
        let options = RunOptions {
            progress: Some(sender),
            ..RunOptions::default()
        };
        nodes.push(tokio::spawn(async move {
            let _ = run_with(config, options, std::future::pending::<()>()).await;
        }));
    }
    // Start only once every node is registered, so every run's feature
    // statistics (and hence scaling) cover all five partners.
    let mut registered = 0;
    while registered < NODES {
        let (_, update) = tokio::time::timeout(Duration::from_secs(60), progress.recv())
            .await
            .expect("nodes register")
            .expect("progress channel open");
        if update == NodeProgress::Registered {
            registered += 1;
        }
    }
    let mut operator = coordinator::operator::connect(&federation.address, None)
        .await
        .unwrap();
    let job_id = coordinator::operator::submit(&mut operator, job(mode))
        .await
        .unwrap();
    coordinator::operator::start(&mut operator, &job_id)
        .await
        .unwrap();
    let watch = {
        let mut operator = operator.clone();
        let job_id = job_id.clone();
        tokio::spawn(async move {
            coordinator::operator::watch(&mut operator, &job_id, |update| {
                if let coordinator::operator::WatchUpdate::Message(message) = update {
                    println!("{message}");
                }
            })
            .await
            .unwrap()
        })
    };
    let mut killed = kill == Kill::Never;
    while !killed {
        let (index, update) = tokio::time::timeout(Duration::from_secs(60), progress.recv())
            .await
            .expect("nodes make progress")
            .expect("progress channel open");
        let NodeProgress::Submitted {
            round,
            phase,
            step: submitted_step,
            ..
        } = update
        else {
            continue;
        };
        let hit = match kill {
            Kill::AfterSecureStep(step) => {
                round == 1 && phase == Phase::Train && submitted_step == Some(step)
            }
            Kill::AfterFeatureStats => phase == Phase::FeatureStats,
            Kill::Never => false,
        };
        if index == VICTIM && hit {
            nodes[VICTIM].abort();
            killed = true;
        }
    }
    let status = watch.await.unwrap();
    assert_eq!(
        v1::JobState::try_from(status.state),
        Ok(v1::JobState::Succeeded),
        "{}",
        status.failure_reason
    );
    assert_eq!(status.aggregation_mode, mode);
    let model = coordinator::operator::fetch_model(&mut operator, &job_id)
        .await
        .unwrap();
    for node in nodes {
        node.abort();
    }
    model.parameters
}

fn max_difference(left: &[f32], right: &[f32]) -> f32 {
    assert_eq!(left.len(), right.len());
    left.iter()
        .zip(right)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

fn partner_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let synth = veil_synth_data::SynthConfig::demo(NODES, 31);
    veil_synth_data::write_partner_files(&synth, dir).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_before_its_masked_input_leaves_fedavg_over_the_four_survivors() {
    let _machine = support::whole_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let files = partner_files(dir.path());
    let secure = run_job(
        &files,
        dir.path(),
        "secure",
        Kill::AfterSecureStep(SecureStep::ShareKeys),
    )
    .await;
    // Plain reference: the victim takes part in the feature statistics (so
    // the scaling is the same) and is gone before training.
    let plain = run_job(&files, dir.path(), "plain", Kill::AfterFeatureStats).await;
    let difference = max_difference(&secure, &plain);
    assert!(
        difference < 1e-3,
        "secure and plain FedAvg differ by {difference}"
    );
    // And the victim's absence matters: with all five the model is different.
    let everyone = run_job(&files, dir.path(), "plain", Kill::Never).await;
    assert!(max_difference(&secure, &everyone) > 1e-3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_after_its_masked_input_is_unmasked_from_its_neighbours_shares() {
    let _machine = support::whole_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let files = partner_files(dir.path());
    let secure = run_job(
        &files,
        dir.path(),
        "secure",
        Kill::AfterSecureStep(SecureStep::MaskedInput),
    )
    .await;
    // Its masked input entered the sum, so plain FedAvg over all five is the
    // reference, while only four nodes finished the protocol.
    let plain = run_job(&files, dir.path(), "plain", Kill::Never).await;
    let difference = max_difference(&secure, &plain);
    assert!(
        difference < 1e-3,
        "secure and plain FedAvg differ by {difference}"
    );
}
