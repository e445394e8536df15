//! End-to-end scaffolding shared by the plaintext (`--insecure-dev`) tests:
//! a real coordinator on 127.0.0.1, real nodes that have registered, and an
//! operator's `watch` to the job's end, each wait with its own deadline.
// Each test file uses only part of this module.
#![allow(dead_code)]

pub mod prometheus;
pub mod seeded;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use client_node::config::NodeConfig;
use client_node::node::{NodeProgress, RunOptions, run_with};
use coordinator::CoordinatorConfig;
use coordinator::operator::{OperatorClient, WatchUpdate};
use tokio::sync::mpsc;
use veil_metrics::{CoordinatorMetrics, NodeMetrics};
use veil_wire::v1;

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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(coordinator::run(
            CoordinatorConfig {
                state_dir: Some(state_dir),
                metrics,
                ..CoordinatorConfig::insecure_development()
            },
            listener,
            async {
                let _ = stopped.await;
            },
        ));
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

/// Starts a node per config and returns once every one has registered.
pub async fn start_nodes(configs: Vec<NodeConfig>) -> Vec<tokio::task::JoinHandle<()>> {
    start_counted_nodes(configs.into_iter().map(|config| (config, None)).collect()).await
}

/// [`start_nodes`], each node counting into its own metrics if given.
pub async fn start_counted_nodes(
    configs: Vec<(NodeConfig, Option<Arc<NodeMetrics>>)>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let expected = configs.len();
    let (progress_sender, mut progress) = mpsc::unbounded_channel();
    let mut nodes = Vec::new();
    for (config, metrics) in configs {
        let options = RunOptions {
            progress: Some(progress_sender.clone()),
            metrics,
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
