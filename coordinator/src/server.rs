//! Serving: wires the engine, the services, the health service and the
//! deadline timer onto one listener, until a shutdown future resolves.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use prost::Message;
use tokio::net::TcpListener;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::server::Connected as _;
use veil_federation::store::JobStore;
use veil_federation::{Engine, EngineConfig};
use veil_job::JobSpec;
use veil_job_store::{DescriptorCodec, DescriptorDecodeError, SqliteJobStore};
use veil_metrics::{CoordinatorMetrics, Registry};
use veil_pki::{
    ISSUED_FILE, IssuanceJournal, MemberFiles, REVOCATIONS_FILE, RevocationList, ServerTls,
    tls_incoming,
};
use veil_wire::MAX_MESSAGE_BYTES;
use veil_wire::v1::node_service_server::NodeServiceServer;
use veil_wire::v1::operator_service_server::OperatorServiceServer;

use crate::audit::AuditTrail;
use crate::auth::{Gate, REFUSAL_AUDIT_WINDOW};
use crate::console::ConsoleConfig;
use crate::member_limits::{MemberLimitLayer, MemberLimits, REQUEST_DEADLINE};
use crate::metrics::{CountingIo, EventMetrics};
use crate::privacy::PrivacyGuard;
use crate::service::{NodeApi, OperatorApi, ServiceLimits};
use crate::state::{Shared, lock};

/// How often the CA's journal and revocation list are checked for changes
/// to record; revocation itself takes effect at once, independently.
const CERTIFICATE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// How connections are secured.
#[derive(Debug, Clone)]
pub enum Transport {
    /// mTLS with federation certificates: every caller is a CA-issued node,
    /// operator or auditor, and each RPC checks the caller's role.
    Mtls(Arc<ServerTls>),
    /// Plaintext HTTP/2 with no identities: for local development and for
    /// tests that must see the bytes on the wire. Never the default.
    InsecureDevelopment,
}

/// How the coordinator serves. Built with [`CoordinatorConfig::mtls`] or,
/// explicitly, [`CoordinatorConfig::insecure_development`]; every other field
/// has a sensible default.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// mTLS or, explicitly, plaintext.
    pub transport: Transport,
    /// A node silent for longer than this is not invited to new phases.
    pub node_liveness: Duration,
    /// Interval nodes are told to heartbeat at.
    pub heartbeat_interval: Duration,
    /// Longest a `FetchTask` long poll is held open.
    pub max_long_poll: Duration,
    /// Concurrent requests served per connection.
    pub concurrency_per_connection: usize,
    /// What one node may ask, over all its connections: a node past these limits is
    /// refused with `ResourceExhausted` (`member_limits.rs`).
    pub member_limits: MemberLimits,
    /// Where the coordinator keeps its durable state (the privacy ledger).
    /// `None` uses a fresh temporary folder removed at shutdown: for tests
    /// and throwaway runs only.
    pub state_dir: Option<PathBuf>,
    /// Where the coordinator counts what it does, for a Prometheus endpoint
    /// the caller serves (`veil_metrics::serve`). `None` counts into a
    /// registry nobody reads.
    pub metrics: Option<Arc<CoordinatorMetrics>>,
    /// The web console for operators and auditors (`serve --console`);
    /// `None`, the default, serves none.
    pub console: Option<ConsoleConfig>,
}

impl CoordinatorConfig {
    /// Serving with mTLS.
    pub fn mtls(server: ServerTls) -> Self {
        Self::with_transport(Transport::Mtls(Arc::new(server)))
    }

    /// Serving with mTLS as the member `coordinator` of `tls_dir` (the folder `ca issue --role
    /// coordinator --name coordinator` writes), checking every connection against
    /// `revocations` (default: the CA's `revoked.txt` copied into that folder).
    pub fn mtls_from_folder(tls_dir: &Path, revocations: Option<PathBuf>) -> anyhow::Result<Self> {
        let revocations =
            RevocationList::open(revocations.unwrap_or_else(|| tls_dir.join(REVOCATIONS_FILE)))?;
        let files = MemberFiles::in_folder(tls_dir, "coordinator");
        Ok(Self::mtls(files.server(revocations)?))
    }

    /// Also serves Prometheus metrics at `http://address/metrics` (docs/metrics.md).
    pub async fn with_metrics_endpoint(mut self, address: SocketAddr) -> anyhow::Result<Self> {
        let mut registry = Registry::default();
        let metrics = CoordinatorMetrics::register(&mut registry);
        veil_metrics::spawn_endpoint(address, registry).await?;
        self.metrics = Some(Arc::new(metrics));
        Ok(self)
    }

    /// Serving plaintext, without identities or role checks.
    pub fn insecure_development() -> Self {
        Self::with_transport(Transport::InsecureDevelopment)
    }

    fn with_transport(transport: Transport) -> Self {
        Self {
            transport,
            node_liveness: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(5),
            max_long_poll: Duration::from_secs(20),
            concurrency_per_connection: 64,
            member_limits: MemberLimits::default(),
            state_dir: None,
            metrics: None,
            console: None,
        }
    }
}

/// Serves on `listener` until `shutdown` resolves, then drains and returns.
/// Jobs, model checkpoints and the privacy ledger live in SQLite files in the
/// state folder; jobs found there are resumed from their last committed phase.
pub async fn run(
    config: CoordinatorConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let engine_config = EngineConfig {
        node_liveness: config.node_liveness,
    };
    let (state_dir, _temporary) = match &config.state_dir {
        Some(dir) => (dir.clone(), None),
        None => {
            let temporary = tempfile::Builder::new()
                .prefix("veil-coordinator-")
                .tempdir()
                .context("creating a temporary state folder")?;
            (temporary.path().to_owned(), Some(temporary))
        }
    };
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("creating the state folder {}", state_dir.display()))?;
    let store_path = state_dir.join("jobs.sqlite");
    let store: Box<dyn JobStore<JobSpec> + Send> = Box::new(
        SqliteJobStore::open(&store_path, JobSpecCodec)
            .with_context(|| format!("coordinator job store {}", store_path.display()))?,
    );
    let metrics = config
        .metrics
        .clone()
        .unwrap_or_else(|| Arc::new(CoordinatorMetrics::register(&mut Registry::default())));
    let privacy = PrivacyGuard::open(
        &state_dir.join("ledger.sqlite"),
        metrics.ledger_write.clone(),
    )?;
    let audit = Arc::new(Mutex::new(AuditTrail::open(
        &state_dir,
        metrics.audit_write.clone(),
    )?));
    let certificate_files = match &config.transport {
        Transport::Mtls(server_tls) => {
            let revocations = server_tls.revocations().clone();
            let journal = IssuanceJournal::at(revocations.path().with_file_name(ISSUED_FILE));
            Some((journal, revocations))
        }
        Transport::InsecureDevelopment => None,
    };
    let console_certificate_files = certificate_files.clone();
    let audit_upkeep = tokio::spawn(keep_audit_current(Arc::clone(&audit), certificate_files));
    let snapshots = store.load_all()?;
    if !snapshots.is_empty() {
        tracing::info!(jobs = snapshots.len(), "resuming jobs from the store");
    }
    let mut engine = Engine::restore(engine_config, snapshots);
    engine.set_noise_source(
        veil_dp_noise::production_rng().context("seeding the central-noise generator")?,
    );
    let shared = Arc::new(Shared::new(
        engine,
        store,
        privacy,
        Arc::clone(&audit),
        EventMetrics::new(Arc::clone(&metrics)),
    ));
    let limits = ServiceLimits {
        max_long_poll: config.max_long_poll,
        heartbeat_interval: config.heartbeat_interval,
    };

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<NodeServiceServer<NodeApi>>()
        .await;
    health_reporter
        .set_serving::<OperatorServiceServer<OperatorApi>>()
        .await;

    let gate = Gate::new(matches!(config.transport, Transport::Mtls(_)), audit);
    let refusal_batches = tokio::spawn(record_refusal_batches(gate.clone()));
    let gate_at_shutdown = gate.clone();
    let node_service = NodeServiceServer::new(NodeApi {
        shared: Arc::clone(&shared),
        limits,
        gate: gate.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let operator_service = OperatorServiceServer::new(OperatorApi {
        shared: Arc::clone(&shared),
        gate,
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);

    let console = match &config.console {
        Some(console) => Some(crate::console::spawn(
            console,
            Arc::clone(&shared),
            &state_dir,
            console_certificate_files,
        )?),
        None => None,
    };

    let (stop_timer, timer_stopped) = tokio::sync::oneshot::channel::<()>();
    let timer = tokio::spawn(drive_deadlines(Arc::clone(&shared), timer_stopped));

    let address = listener.local_addr()?;
    let counted = Arc::clone(&metrics);
    let member_limits = MemberLimitLayer::new(config.member_limits, Arc::clone(&metrics));
    let connection_gate = member_limits.connection_gate();
    let router = tonic::transport::Server::builder()
        .concurrency_limit_per_connection(config.concurrency_per_connection)
        .timeout(REQUEST_DEADLINE)
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .layer(member_limits)
        .add_service(health_service)
        .add_service(node_service)
        .add_service(operator_service);
    let served = match &config.transport {
        Transport::Mtls(server_tls) => {
            tracing::info!(%address, "coordinator listening (mTLS)");
            // A node past its connection cap is held unserved for a moment and closed.
            let incoming = tls_incoming(listener, server_tls).filter_map(move |stream| {
                let io = match stream {
                    Ok(io) => io,
                    Err(error) => return Some(Err(error)),
                };
                match connection_gate.admit(io.connect_info().identity()) {
                    Ok(slot) => Some(Ok(CountingIo::new(io, Arc::clone(&counted), slot))),
                    Err(_) => {
                        connection_gate.hold_and_close(io);
                        None
                    }
                }
            });
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
        Transport::InsecureDevelopment => {
            tracing::warn!(
                %address,
                "coordinator listening WITHOUT TLS (insecure development mode): no identities, no role checks"
            );
            router
                .serve_with_incoming_shutdown(
                    TcpListenerStream::new(listener).map(move |stream| {
                        stream.map(|io| {
                            // As on the mTLS path: gRPC messages are small and
                            // latency-bound, and Nagle's algorithm held each
                            // reply back until the client's delayed ACK
                            // (40 ms a secure step on Linux).
                            if let Err(error) = io.set_nodelay(true) {
                                tracing::debug!(%error, "could not disable Nagle's algorithm");
                            }
                            CountingIo::new(io, Arc::clone(&counted), None)
                        })
                    }),
                    shutdown,
                )
                .await
        }
    };
    let _ = stop_timer.send(());
    let _ = timer.await;
    refusal_batches.abort();
    // Repeats counted in windows still open are recorded too.
    gate_at_shutdown
        .record_closed_refusal_batches(std::time::Instant::now() + REFUSAL_AUDIT_WINDOW);
    audit_upkeep.abort();
    if let Some(console) = console {
        console.abort();
    }
    tracing::info!("coordinator stopped");
    served.map_err(Into::into)
}

/// Verifies the whole audit log once (off the lock: it may take seconds),
/// then records the CA's issuances and revocations as they appear.
async fn keep_audit_current(
    audit: Arc<Mutex<AuditTrail>>,
    certificate_files: Option<(IssuanceJournal, RevocationList)>,
) {
    let verifier = lock(&audit).verifier();
    let verified = tokio::task::spawn_blocking(move || verifier.verify())
        .await
        .unwrap_or_else(|error| Err(format!("verification stopped: {error}")));
    lock(&audit).install_verified(verified);
    let Some((journal, revocations)) = certificate_files else {
        return;
    };
    let mut interval = tokio::time::interval(CERTIFICATE_CHECK_INTERVAL);
    loop {
        interval.tick().await;
        if let Err(error) = lock(&audit).record_certificate_changes(&journal, &revocations) {
            tracing::error!(error = %format!("{error:#}"), "certificate changes NOT recorded in the audit log");
        }
    }
}

/// Records repeated refusals once their window closes, so a flood's count reaches the audit
/// log within a second of the window's end even if the flood stopped.
async fn record_refusal_batches(gate: Gate) {
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    loop {
        interval.tick().await;
        gate.record_closed_refusal_batches(std::time::Instant::now());
    }
}

/// Wakes the engine at each phase deadline; re-plans whenever it changes.
async fn drive_deadlines(shared: Arc<Shared>, mut stop: tokio::sync::oneshot::Receiver<()>) {
    loop {
        let changed = shared.changed.notified();
        let deadline = shared.read(|engine| engine.poll_timeout());
        // At least once a second, deadline or not: jobs that wait for nodes
        // notice liveness changes, and the connected-nodes gauge falls when
        // nodes go silent. Driving the engine early does nothing harmful.
        let tick = tokio::time::Instant::now() + Duration::from_secs(1);
        let wake_at = deadline.map_or(tick, |deadline| {
            tokio::time::Instant::from_std(deadline).min(tick)
        });
        tokio::select! {
            _ = tokio::time::sleep_until(wake_at) => {
                shared.with_engine(|engine, now| engine.handle_timeout(now));
            }
            _ = changed => {}
            _ = &mut stop => return,
        }
    }
}

/// Job descriptors are stored in their protobuf wire form, the same bytes an
/// operator submits, and validated again when read back.
pub(crate) struct JobSpecCodec;

impl DescriptorCodec<JobSpec> for JobSpecCodec {
    fn encode(&self, descriptor: &JobSpec) -> Vec<u8> {
        descriptor.to_wire().encode_to_vec()
    }

    fn decode(&self, bytes: &[u8]) -> Result<JobSpec, DescriptorDecodeError> {
        let wire = veil_wire::v1::JobSpec::decode(bytes)?;
        Ok(JobSpec::from_wire(&wire)?)
    }
}
