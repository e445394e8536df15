//! A node certificate holder that floods the coordinator (issue 18): more stalled upload
//! streams than a node may hold, then heartbeats, task fetches and forbidden operator calls in
//! tight loops, over several connections. Over real mTLS, three honest nodes run a secure job
//! meanwhile. The job completes with every node in every round, and the flooder is refused
//! with `ResourceExhausted` naming the per-node rate and in-flight limits, as the
//! coordinator's `requests_limited` counter records. Connections past the node's cap are
//! closed unserved. (Refusals are held for a moment before they are answered; the round-time
//! cost of a flood is measured by `scripts/bench-flood`, not here.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use client_node::config::NodeConfig;
use client_node::policy::NodePolicy;
use coordinator::{CoordinatorConfig, MemberLimits};
use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use veil_metrics::{CoordinatorMetrics, LimitLabels, Registry};
use veil_pki::{LocalPki, Role};
use veil_wire::v1;
use veil_wire::v1::node_service_client::NodeServiceClient;
use veil_wire::v1::operator_service_client::OperatorServiceClient;

use crate::support;

const HONEST_NODES: usize = 3;
const ROUNDS: u32 = 2;
/// Connections the flooder opens: more connections must not buy more requests.
const FLOOD_CONNECTIONS: usize = 4;
/// Upload streams the flooder opens and never feeds, per connection: together more than the
/// 32 requests a node may have in flight.
const STALLED_STREAMS_PER_CONNECTION: usize = 12;
const PATIENCE: Duration = Duration::from_secs(180);

/// What the flooder's calls came back with.
#[derive(Default)]
struct FloodTally {
    rate_refusals: AtomicU64,
    in_flight_refusals: AtomicU64,
    /// The forbidden operator call refused by the role gate, each refusal audited.
    role_refusals: AtomicU64,
    other_answers: AtomicU64,
}

impl FloodTally {
    fn record(&self, status: Option<&tonic::Status>) {
        let counter = match status {
            Some(status) if status.code() == Code::ResourceExhausted => {
                if status.message().contains("request rate") {
                    &self.rate_refusals
                } else if status.message().contains("in flight") {
                    &self.in_flight_refusals
                } else {
                    panic!("a ResourceExhausted that names no limit: {status}");
                }
            }
            Some(status) if status.code() == Code::PermissionDenied => &self.role_refusals,
            _ => &self.other_answers,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs a two-round secure job to its end; returns its final status, the watch transcript
/// and how long it took from its start.
async fn run_job(
    operator: &mut coordinator::operator::OperatorClient,
    name: &str,
) -> ((v1::JobStatus, String), Duration) {
    let mut job = veil_job::standard_job("2024-10-02", 90);
    job.name = name.to_owned();
    job.rounds = ROUNDS;
    job.model_mut().kind = "logistic_regression".to_owned();
    job.model_mut().hidden = Vec::new();
    job.training_mut().local_epochs = 1;
    let job_id = coordinator::operator::submit(operator, job.to_wire())
        .await
        .unwrap();
    let started = Instant::now();
    coordinator::operator::start(operator, &job_id)
        .await
        .unwrap();
    let outcome = support::watch_to_end(operator, &job_id, PATIENCE).await;
    (outcome, started.elapsed())
}

/// Waits until `done`, failing by name at `deadline`.
async fn wait_until(what: &str, deadline: Instant, done: impl Fn() -> bool) {
    while !done() {
        assert!(Instant::now() < deadline, "the flooder was never {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn flood_channel(address: &str, tls: &veil_pki::ClientTls) -> Channel {
    Endpoint::from_shared(address.to_owned())
        .unwrap()
        .tls_config(tls.tonic_config())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_node_is_refused_and_an_honest_job_still_completes() {
    let _machine = support::whole_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let pki = LocalPki::create(&root.join("pki")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    let metrics = Arc::new(CoordinatorMetrics::register(&mut Registry::default()));
    let coordinator_state = root.join("coordinator.state");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(coordinator::run(
        CoordinatorConfig {
            state_dir: Some(coordinator_state.clone()),
            metrics: Some(Arc::clone(&metrics)),
            ..CoordinatorConfig::mtls(
                pki.coordinator()
                    .unwrap()
                    .server(pki.revocations().unwrap())
                    .unwrap(),
            )
        },
        listener,
        async {
            let _ = stopped.await;
        },
    ));

    let mut synth = veil_synth_data::SynthConfig::demo(HONEST_NODES, 31);
    for partner in &mut synth.partners {
        partner.n_customers = 400;
    }
    let files = veil_synth_data::write_partner_files(&synth, &root.join("data")).unwrap();
    let mut configs = Vec::new();
    for (index, file) in files.iter().enumerate() {
        let name = format!("node-{index}");
        pki.member(Role::Node, &name).unwrap();
        configs.push(NodeConfig {
            node_id: name.clone(),
            coordinator: address.clone(),
            data: veil_behaviour_features::CsvSource::new(file.clone()).into(),
            state_dir: Some(root.join(format!("{name}.state"))),
            policy: NodePolicy::default(),
            tls_dir: Some(pki.folder(&name)),
            insecure_dev: false,
            privacy_audit_kit: None,
        });
    }
    let nodes = support::start_nodes(configs).await;

    let operator_tls = pki
        .member(Role::Operator, "operator")
        .unwrap()
        .client()
        .unwrap();
    let mut operator = coordinator::operator::connect(&address, Some(&operator_tls))
        .await
        .unwrap();
    // A job on a quiet coordinator, for comparison, then the same job under the flood.
    let ((quiet_status, _), quiet_time) = run_job(&mut operator, "quiet").await;
    assert_eq!(
        v1::JobState::try_from(quiet_status.state),
        Ok(v1::JobState::Succeeded)
    );

    // The flooder holds a valid node certificate but never registers, so no job invites it:
    // whatever it does to the honest job, it does through load alone.
    let flooder_tls = pki
        .member(Role::Node, "node-flood")
        .unwrap()
        .client()
        .unwrap();
    let mut channels = Vec::new();
    for _ in 0..FLOOD_CONNECTIONS {
        channels.push(flood_channel(&address, &flooder_tls).await);
    }
    let tally = Arc::new(FloodTally::default());
    let flood_started = Instant::now();
    let deadline = flood_started + PATIENCE;

    // First, more upload streams than a node may have in flight, spread over its
    // connections, never fed: exactly the surplus is refused, whatever the connection.
    let mut stalled_senders = Vec::new();
    let mut stalled = tokio::task::JoinSet::new();
    for channel in &channels {
        for _ in 0..STALLED_STREAMS_PER_CONNECTION {
            let (sender, receiver) = tokio::sync::mpsc::channel::<v1::ResultChunk>(1);
            stalled_senders.push(sender);
            let mut client = NodeServiceClient::new(channel.clone());
            let tally = Arc::clone(&tally);
            stalled.spawn(async move {
                let outcome = client
                    .submit_result(tokio_stream::wrappers::ReceiverStream::new(receiver))
                    .await;
                tally.record(outcome.as_ref().err());
            });
        }
    }
    let in_flight_cap = MemberLimits::default().concurrent_requests as usize;
    let surplus = (FLOOD_CONNECTIONS * STALLED_STREAMS_PER_CONNECTION - in_flight_cap) as u64;
    wait_until("refused for streams in flight", deadline, || {
        tally.in_flight_refusals.load(Ordering::Relaxed) >= surplus
    })
    .await;
    assert_eq!(tally.in_flight_refusals.load(Ordering::Relaxed), surplus);

    // Then calls in tight loops on every connection, until the job ends: refused for
    // requests in flight while the streams stall, and for rate once they are let go.
    let flooding = Arc::new(AtomicBool::new(true));
    let mut flood = tokio::task::JoinSet::new();
    for (index, channel) in channels.iter().enumerate() {
        let tally = Arc::clone(&tally);
        let flooding = Arc::clone(&flooding);
        let mut nodes = NodeServiceClient::new(channel.clone());
        let mut operators = OperatorServiceClient::new(channel.clone());
        flood.spawn(async move {
            let node_id = "node-flood".to_owned();
            while flooding.load(Ordering::Relaxed) {
                // By connection: a heartbeat, a task fetch that does not wait, or an
                // operator call a node may not make (each refusal of which the gate audits).
                let status = match index % 3 {
                    0 => nodes
                        .heartbeat(v1::HeartbeatRequest {
                            node_id: node_id.clone(),
                        })
                        .await
                        .err(),
                    1 => nodes
                        .fetch_task(v1::FetchTaskRequest {
                            node_id: node_id.clone(),
                            wait_ms: 0,
                        })
                        .await
                        .err(),
                    _ => operators
                        .get_job_status(v1::JobRef {
                            job_id: "job-1".to_owned(),
                        })
                        .await
                        .err(),
                };
                tally.record(status.as_ref());
            }
        });
    }
    wait_until("refused in its loops", deadline, || {
        tally.in_flight_refusals.load(Ordering::Relaxed) > surplus
    })
    .await;
    drop(stalled_senders);
    while stalled.join_next().await.is_some() {}
    wait_until("rate-limited", deadline, || {
        tally.rate_refusals.load(Ordering::Relaxed) > 0
    })
    .await;

    let ((status, transcript), job_time) = run_job(&mut operator, "under-flood").await;
    flooding.store(false, Ordering::Relaxed);
    while flood.join_next().await.is_some() {}
    let flood_time = flood_started.elapsed();

    // More connections than a node may hold, while its first four are still open: exactly
    // the surplus is closed unserved (its call fails on the connection), the rest are served.
    let connection_cap = MemberLimits::default().connections as usize;
    let surplus_connections = 2;
    let mut refused_connections = 0u64;
    let mut served_connections = 0u64;
    let mut extra = Vec::new();
    for _ in 0..connection_cap - FLOOD_CONNECTIONS + surplus_connections {
        // Dialled by the call itself: a refused connection is closed without a word, which
        // an eager connect could take for a failed dial.
        extra.push(
            Endpoint::from_shared(address.clone())
                .unwrap()
                .tls_config(flooder_tls.tonic_config())
                .unwrap()
                .connect_lazy(),
        );
    }
    let mut calls = tokio::task::JoinSet::new();
    for channel in &extra {
        let mut client = NodeServiceClient::new(channel.clone());
        calls.spawn(async move {
            client
                .heartbeat(v1::HeartbeatRequest {
                    node_id: "node-flood".to_owned(),
                })
                .await
        });
    }
    while let Some(outcome) = calls.join_next().await {
        match outcome.unwrap() {
            // Served: the engine does not know the node, or a limit refused the call.
            Err(status)
                if matches!(
                    status.code(),
                    Code::FailedPrecondition | Code::ResourceExhausted
                ) =>
            {
                tally.record(Some(&status));
                served_connections += 1;
            }
            Ok(_) => served_connections += 1,
            Err(_) => refused_connections += 1,
        }
    }
    drop(extra);
    println!(
        "{served_connections} more connections served, {refused_connections} closed past the cap"
    );
    assert_eq!(refused_connections, surplus_connections as u64);
    drop(channels);
    for node in nodes {
        node.abort();
    }
    let _ = stop.send(());
    let _ = server.await;

    assert_eq!(
        v1::JobState::try_from(status.state),
        Ok(v1::JobState::Succeeded),
        "{}\n{transcript}",
        status.failure_reason
    );
    assert_eq!(status.history.len() as u32, ROUNDS);
    for round in &status.history {
        assert_eq!(round.participants as usize, HONEST_NODES, "{round:?}");
    }
    let rate_refusals = tally.rate_refusals.load(Ordering::Relaxed);
    let in_flight_refusals = tally.in_flight_refusals.load(Ordering::Relaxed);
    let role_refusals = tally.role_refusals.load(Ordering::Relaxed);
    let other_answers = tally.other_answers.load(Ordering::Relaxed);
    println!(
        "job on a quiet coordinator: {quiet_time:.1?}; under flood: {job_time:.1?}; flooder refused {rate_refusals} times for rate, \
         {in_flight_refusals} for requests in flight and {role_refusals} by its role, \
         {other_answers} calls answered otherwise"
    );
    // The coordinator counted every refusal the flooder saw (and refused nobody else).
    let counted = |limit: &str| {
        metrics
            .requests_limited
            .get_or_create(&LimitLabels::new(limit))
            .get()
    };
    assert_eq!(counted("rate"), rate_refusals);
    assert_eq!(counted("concurrency"), in_flight_refusals);
    assert_eq!(counted("connections"), surplus_connections as u64);

    // Every role refusal is in the audit log, in batches: one entry per 10 s window, the
    // repeats counted in its reason, so the flood cost a handful of synced appends.
    assert!(role_refusals > 0);
    let public_key = veil_audit_log::AuditPublicKey::from_hex(
        std::fs::read_to_string(coordinator_state.join(coordinator::audit::AUDIT_PUBLIC_KEY_FILE))
            .unwrap()
            .trim(),
    )
    .unwrap();
    let log_path = coordinator_state.join(coordinator::audit::AUDIT_LOG_FILE);
    let head = veil_audit_log::Head::read(&veil_audit_log::head_path_for(&log_path)).unwrap();
    let audit = veil_audit_log::verify_log_file(&log_path, &public_key, head.as_ref()).unwrap();
    let mut audited_entries = 0u64;
    let mut audited_refusals = 0u64;
    for entry in &audit.entries {
        let veil_audit_log::AuditEvent::AuthFailure { rpc, reason, .. } = &entry.event else {
            continue;
        };
        assert_eq!(entry.actor, "node/node-flood", "{reason}");
        assert_eq!(rpc, "GetJobStatus");
        audited_entries += 1;
        // An entry is one refusal, or the count of a batch's repeats.
        audited_refusals += repeats_in(reason).unwrap_or(1);
    }
    println!("{role_refusals} role refusals audited in {audited_entries} entries");
    assert_eq!(audited_refusals, role_refusals);
    let windows = flood_time.as_secs() / 10 + 2;
    assert!(
        audited_entries <= 2 * windows,
        "{audited_entries} entries for a flood of {flood_time:?}"
    );
}

/// The repeats a batch entry's reason counts ("refused N more times within …"); `None` for
/// the entry of a single refusal.
fn repeats_in(reason: &str) -> Option<u64> {
    reason
        .split_once("(refused ")
        .and_then(|(_, rest)| rest.split_once(' '))
        .map(|(count, _)| count.parse().unwrap())
}
