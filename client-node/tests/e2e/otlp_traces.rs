//! Span export over OTLP (issue 16): a real coordinator process and a real node process, both
//! run with `--otlp-endpoint` and `--log-json`, export to a collector in this test (the
//! OpenTelemetry project's generated trace service on 127.0.0.1) while a two-round job runs
//! on data seeded with personal values. After both exit on SIGINT, the collector holds the
//! coordinator's trace of the job (job span, a child per round, a grandchild per phase) and
//! the node's task spans with the same job and round; the JSON logs carry the same fields;
//! and no form of a seeded personal value is in any exported byte or log line.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client_node::config::NodeConfig;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;
use veil_wire::v1;

use crate::support;
use crate::support::seeded::{contains, forbidden_forms, seed_data, single_node_job};

const ROUNDS: u32 = 2;
const NODE_ID: &str = "otlp-node";
const PATIENCE: Duration = Duration::from_secs(120);

/// The collector: every export request, as received.
#[derive(Default, Clone)]
struct Collector {
    requests: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

async fn start_collector(collector: Collector) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    address
}

/// One exported span, flattened.
#[derive(Debug, Clone)]
struct ExportedSpan {
    service: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    attributes: BTreeMap<String, String>,
}

fn text_of(attributes: &[KeyValue]) -> BTreeMap<String, String> {
    attributes
        .iter()
        .map(|attribute| {
            let value = match attribute
                .value
                .as_ref()
                .and_then(|value| value.value.as_ref())
            {
                Some(Value::StringValue(text)) => text.clone(),
                Some(Value::IntValue(number)) => number.to_string(),
                Some(Value::BoolValue(flag)) => flag.to_string(),
                Some(Value::DoubleValue(number)) => number.to_string(),
                other => format!("{other:?}"),
            };
            (attribute.key.clone(), value)
        })
        .collect()
}

fn spans_of(requests: &[ExportTraceServiceRequest]) -> Vec<ExportedSpan> {
    let mut spans = Vec::new();
    for request in requests {
        for resource_spans in &request.resource_spans {
            let resource = resource_spans
                .resource
                .as_ref()
                .map(|resource| text_of(&resource.attributes))
                .unwrap_or_default();
            let service = resource.get("service.name").cloned().unwrap_or_default();
            for scope in &resource_spans.scope_spans {
                for span in &scope.spans {
                    spans.push(ExportedSpan {
                        service: service.clone(),
                        name: span.name.clone(),
                        trace_id: span.trace_id.clone(),
                        span_id: span.span_id.clone(),
                        parent_span_id: span.parent_span_id.clone(),
                        attributes: text_of(&span.attributes),
                    });
                }
            }
        }
    }
    spans
}

/// A process killed on drop, so a failing test leaves nothing running.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Process {
    fn spawn(binary: &Path, arguments: &[&str], log: &Path) -> Self {
        let log = File::create(log).expect("log file");
        Self(
            Command::new(binary)
                .args(arguments)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log file"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|error| panic!("starting {}: {error}", binary.display())),
        )
    }

    /// SIGINT (what Ctrl-C sends, the binaries' graceful stop), then waits for the exit, which
    /// is when the last spans have been handed to the collector.
    async fn interrupt_and_wait(mut self, name: &str) {
        let status = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -INT {name}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not exit within 30 s of SIGINT"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

fn binary(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_client-node")).with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace (`cargo test --release --workspace`)",
        path.display()
    );
    path
}

/// The JSON log lines of a file, skipping anything that is not JSON.
fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_of_a_job_reach_an_otlp_collector_from_both_sides_without_personal_values() {
    let _machine = support::whole_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let (seeded, synth) = seed_data(dir.path());
    let collector = Collector::default();
    let collector_address = start_collector(collector.clone()).await;
    let otlp = format!("http://{collector_address}");

    let port = free_port();
    let address = format!("http://127.0.0.1:{port}");
    let coordinator_log = dir.path().join("coordinator.log");
    let state_dir = dir.path().join("coordinator.state");
    let coordinator = Process::spawn(
        &binary("coordinator"),
        &[
            "--log-json",
            "--otlp-endpoint",
            &otlp,
            "serve",
            "--insecure-dev",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--state-dir",
            state_dir.to_str().unwrap(),
        ],
        &coordinator_log,
    );

    let config = NodeConfig {
        node_id: NODE_ID.to_owned(),
        tls_dir: None,
        insecure_dev: true,
        coordinator: address.clone(),
        data: seeded.config.clone(),
        state_dir: Some(dir.path().join("node.state")),
        policy: client_node::policy::NodePolicy {
            allow_plain_aggregation: true,
            ..Default::default()
        },
        privacy_audit_kit: None,
    };
    let config_path = dir.path().join("node.toml");
    std::fs::write(&config_path, toml::to_string(&config).unwrap()).unwrap();
    let node_log = dir.path().join("node.log");
    let node = Process::spawn(
        Path::new(env!("CARGO_BIN_EXE_client-node")),
        &[
            "--log-json",
            "--otlp-endpoint",
            &otlp,
            "run",
            "--config",
            config_path.to_str().unwrap(),
        ],
        &node_log,
    );
    support::wait_until_registered(&node_log, Instant::now() + PATIENCE).await;

    let mut operator = coordinator::operator::connect(&address, None)
        .await
        .unwrap();
    let job_file = single_node_job(&synth, ROUNDS);
    let (job_id, status, transcript) =
        support::run_job_to_end(&mut operator, job_file.to_wire(), PATIENCE).await;
    assert_eq!(
        v1::JobState::try_from(status.state),
        Ok(v1::JobState::Succeeded),
        "{status:?}\n{transcript}"
    );
    drop(operator);
    node.interrupt_and_wait("client-node").await;
    coordinator.interrupt_and_wait("coordinator").await;

    let requests = collector
        .requests
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let spans = spans_of(&requests);
    let of_job = |service: &str, name: &str| -> Vec<ExportedSpan> {
        spans
            .iter()
            .filter(|span| {
                span.service == service
                    && span.name == name
                    && span.attributes.get("job") == Some(&job_id)
            })
            .cloned()
            .collect()
    };

    // The coordinator's trace: one job span, a child per round, phases under their round.
    let job_spans = of_job("veil-coordinator", "job");
    assert_eq!(job_spans.len(), 1, "{spans:#?}");
    let job_span = &job_spans[0];
    let rounds = of_job("veil-coordinator", "round");
    let mut round_ids = BTreeMap::new();
    for round in &rounds {
        assert_eq!(round.trace_id, job_span.trace_id, "{round:?}");
        assert_eq!(round.parent_span_id, job_span.span_id, "{round:?}");
        round_ids.insert(round.span_id.clone(), round.attributes["round"].clone());
    }
    let numbered: BTreeSet<String> = round_ids.values().cloned().collect();
    for round in 1..=ROUNDS {
        assert!(
            numbered.contains(&round.to_string()),
            "no span for round {round}: {numbered:?}"
        );
    }
    let phases = of_job("veil-coordinator", "phase");
    let mut phases_per_round: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for phase in &phases {
        let round = round_ids
            .get(&phase.parent_span_id)
            .unwrap_or_else(|| panic!("phase span outside a round span: {phase:?}"));
        assert_eq!(&phase.attributes["round"], round, "{phase:?}");
        phases_per_round
            .entry(round.clone())
            .or_default()
            .insert(phase.attributes["phase"].clone());
    }
    for round in 1..=ROUNDS {
        let seen = phases_per_round.get(&round.to_string());
        assert!(
            seen.is_some_and(|seen| seen.contains("train") && seen.contains("evaluate")),
            "round {round} lacks a train or evaluate phase span: {phases_per_round:?}"
        );
    }

    // The node's side: a task span per phase it computed, with the same job and rounds.
    let tasks = of_job("veil-client-node", "task");
    let trained: BTreeSet<String> = tasks
        .iter()
        .filter(|task| task.attributes.get("phase").map(String::as_str) == Some("train"))
        .map(|task| {
            assert_eq!(
                task.attributes.get("node").map(String::as_str),
                Some(NODE_ID)
            );
            task.attributes["round"].clone()
        })
        .collect();
    let expected: BTreeSet<String> = (1..=ROUNDS).map(|round| round.to_string()).collect();
    assert_eq!(trained, expected, "{tasks:#?}");

    // JSON logs carry the same fields: a coordinator line inside a phase span of this job,
    // and a node line inside a task span of it.
    let inside = |path: &Path, span_name: &str| {
        json_lines(path).into_iter().any(|line| {
            line["span"]["name"] == span_name
                && line["span"]["job"] == job_id.as_str()
                && !line["span"]["round"].is_null()
        })
    };
    assert!(
        inside(&coordinator_log, "phase"),
        "no coordinator log line inside a phase span"
    );
    assert!(
        inside(&node_log, "task"),
        "no node log line inside a task span"
    );

    // Nothing personal in what was exported or logged.
    let exported: Vec<u8> = requests.iter().flat_map(Message::encode_to_vec).collect();
    let logs = [
        std::fs::read(&coordinator_log).unwrap(),
        std::fs::read(&node_log).unwrap(),
    ];
    for secret in &seeded.secrets {
        for form in forbidden_forms(secret) {
            assert!(
                !contains(&exported, &form),
                "a seeded personal value reached the collector"
            );
            for log in &logs {
                assert!(
                    !contains(log, &form),
                    "a seeded personal value reached a log"
                );
            }
        }
    }
    println!(
        "collector: {} export requests, {} spans ({} rounds, {} phases, {} node tasks)",
        requests.len(),
        spans.len(),
        rounds.len(),
        phases.len(),
        tasks.len()
    );
}
