//! The node's IO shell: register, long-poll for tasks, hand each task to the
//! node's state machine ([`NodeMachine`]), write the records it returns
//! before anything leaves, compute replies (training, evaluation) when it
//! asks, and submit what it says to send. Every decision about what may
//! leave (pinned specs, peer certificates, secure-aggregation parameters,
//! one release per phase, charges, evaluation rights) is the machine's.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use tokio::sync::mpsc;
use tonic::Code;
use tracing::Instrument;
use veil_behaviour_features::{CustomerRow, Scaling, TransactionLog};
use veil_de_identification::PiiKind;
use veil_federation::{DeclineCode, Phase, SecureStep};
use veil_job::statistics::ReleaseNoise;
use veil_job::{JobSpec, StatisticsPrivacy, statistics};
use veil_metrics::{DeclineLabels, JobLabels, NodeMetrics, PhaseLabels, PiiLabels, Registry};
use veil_models::{
    Dataset, EvalStats, ExampleBounds, evaluate, evaluate_clamped, train, train_dp_sgd,
};
use veil_node_protocol::{
    Decision, MachineIdentity, NodeMachine, NodeTask, Outgoing, PeerTrust, PhaseReply,
};
use veil_partner_data::PartnerDataReport;
use veil_pki::RevocationList;
use veil_privacy_audit::canary::{Canary, commitment_hex, generate_canaries};
use veil_wire::v1;

use crate::config::{InstalledKit, NodeConfig};
use crate::data::{JobRows, to_dataset};
use crate::identity::NodeIdentity;
use crate::memory_store::MemoryStore;
use crate::receipts::ReceiptKeeper;
use crate::transport::{NodeClient, ResultBody, is_transient};
use crate::wire::{decline_code_to_wire, secure_step_to_wire, task_from_wire};

/// How long each `FetchTask` long poll may wait.
const LONG_POLL: Duration = Duration::from_secs(20);

/// A job's prepared data at this node, kept across its rounds.
struct PreparedJob {
    spec: JobSpec,
    rows: JobRows,
    /// The included canaries of the audit job naming this node (empty
    /// otherwise), in the model's input space: appended to the scaled
    /// training set only, never to the rows behind feature statistics,
    /// evaluation, scores or any report.
    canaries: Vec<Canary>,
    /// Scaled datasets, built once the federation's scaling is known; the
    /// scaling never changes after round 0, but it is compared to be safe.
    scaled: Option<(Scaling, Arc<Dataset>, Arc<Dataset>)>,
}

/// What the node reports as it works (for tests and operators' tooling that
/// embed a node).
#[derive(Debug, Clone, PartialEq)]
pub enum NodeProgress {
    /// The coordinator accepted the node's registration.
    Registered,
    /// The coordinator accepted a submission.
    Submitted {
        /// The job.
        job: String,
        /// The round.
        round: u32,
        /// The phase.
        phase: Phase,
        /// The secure step just answered, for secure phases.
        step: Option<SecureStep>,
        /// CPU time this node's task loop spent on the task on its own
        /// thread, outside training or evaluation and outside the upload:
        /// decoding, checks, the protocol step and the durable commit. For
        /// benchmarks of the secure steps' cost; `None` where the platform
        /// does not say (it is read from `/proc/thread-self/schedstat`).
        cpu: Option<Duration>,
    },
}

/// Optional hooks of a running node.
#[derive(Debug, Default, Clone)]
pub struct RunOptions {
    /// Receives one message after every accepted submission.
    pub progress: Option<mpsc::UnboundedSender<NodeProgress>>,
    /// Where the node counts what it does, for a Prometheus endpoint the
    /// caller serves (`veil_metrics::serve`); `None` counts into nothing read.
    pub metrics: Option<Arc<NodeMetrics>>,
    /// A deliberate bug or attack, for tests that prove an audit catches it
    /// or that the node's privacy holds against it. Only code embedding a
    /// node can set it: the `client-node` binary runs with the defaults, and
    /// no config field or flag reaches it.
    pub injected_fault: Option<InjectedFault>,
}

/// A deliberate bug or attack (see [`RunOptions::injected_fault`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectedFault {
    /// DP-SGD trains with its noise removed (σ = 0) while the state machine
    /// and the ledgers still charge the job's ε: the bug an empirical privacy
    /// audit must detect (docs/privacy-audit.md).
    DpSgdNoiseRemoved,
    /// Not a bug but an attacker: a partner colluding with the coordinator
    /// in an n − 1 attack sends a zero update every training round, so the
    /// aggregate is the victim's update alone (what customer-level DP at
    /// each partner, not secure aggregation, must protect).
    ColludingZeroUpdate,
}

/// Everything the task loop carries between tasks.
struct NodeState {
    client: NodeClient,
    /// The node's decisions: what it checks, releases and charges.
    machine: NodeMachine,
    /// Where the machine's records (and the partner's ledger) are written.
    store: MemoryStore,
    /// The node's copy of the federation's revocation list, re-read before
    /// each task so a revoked peer is refused at once (`None` in insecure
    /// development).
    revocations: Option<RevocationList>,
    /// The coordinator's signed receipts of the rounds this node joined.
    receipts: ReceiptKeeper,
    log: Arc<TransactionLog>,
    identity: NodeIdentity,
    /// The node's own certificate (DER), sent at registration so the
    /// coordinator can relay it to peers; empty in insecure development.
    certificate_der: Vec<u8>,
    jobs: HashMap<String, PreparedJob>,
    /// Where the partner installs an auditor's kit; set only with the
    /// policy's consent (checked at start-up).
    audit_kit_path: Option<PathBuf>,
    /// A test's deliberate bug or attack; always `None` in the binary.
    injected_fault: Option<InjectedFault>,
    /// Stochastic rounding and protocol randomness: ChaCha20 keyed from the OS.
    rng: ChaCha20Rng,
    progress: Option<mpsc::UnboundedSender<NodeProgress>>,
    /// Counts of rounds joined, declines and releases; never a data value.
    metrics: Arc<NodeMetrics>,
}

/// Loads the partner's log, then serves tasks until `shutdown` resolves.
pub async fn run(config: NodeConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    run_with(config, RunOptions::default(), shutdown).await
}

/// [`run`] with hooks.
pub async fn run_with(
    config: NodeConfig,
    options: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    // With mTLS the certificate's key is the node's identity, so the key
    // that signs its secure-aggregation advertisements is the one the CA
    // bound to its name, and the CA authenticates every peer. Without TLS the
    // node runs only when its config says it is a development setup.
    let (identity, tls, trust, certificate_der, revocations) = match config.tls_files() {
        Some(files) => {
            let tls = files
                .client()
                .with_context(|| format!("node '{}': TLS files", config.node_id))?;
            let (root, certificate_pem, key) = files
                .load()
                .with_context(|| format!("node '{}': TLS files", config.node_id))?;
            let certificate_der = veil_pki::certificate_der_from_pem(&certificate_pem)
                .with_context(|| {
                    format!("node '{}': {}", config.node_id, files.certificate.display())
                })?;
            let revocations_path = files
                .root
                .parent()
                .map(|dir| dir.join(veil_pki::REVOCATIONS_FILE))
                .unwrap_or_else(|| veil_pki::REVOCATIONS_FILE.into());
            let revocations = RevocationList::open(&revocations_path).with_context(|| {
                format!(
                    "node '{}': revocation list {}",
                    config.node_id,
                    revocations_path.display()
                )
            })?;
            let trust = PeerTrust::Federation {
                root: Arc::new(root),
                revoked: BTreeSet::new(),
            };
            (
                NodeIdentity::from_key_pair(key.into_key_pair()),
                Some(tls),
                trust,
                certificate_der,
                Some(revocations),
            )
        }
        None if config.insecure_dev => {
            tracing::warn!(node = %config.node_id, "no tls_dir: talking to the coordinator without TLS and taking peers' keys as relayed (insecure_dev = true)");
            let identity = NodeIdentity::load_or_create(&config.state_dir())
                .with_context(|| format!("node '{}': identity key", config.node_id))?;
            (
                identity,
                None,
                PeerTrust::InsecureDevelopment,
                Vec::new(),
                None,
            )
        }
        None => bail!(
            "node '{}': no tls_dir configured; a node talks to its coordinator over mTLS and authenticates its peers with the federation CA. Set tls_dir, or insecure_dev = true for local development only",
            config.node_id
        ),
    };
    // Every folder the node writes to exists (owner-only) before the log is
    // read: a missing folder must not cost a partner a full load first. The
    // rejects file's folder is made by the loader when it opens the file.
    crate::identity::create_state_dir(&config.state_dir())?;
    let audit_kit_path = config.audit_kit_path()?.map(Path::to_path_buf);
    let source = config.data.clone();
    let (log, report) =
        tokio::task::spawn_blocking(move || crate::data::load_partner_data(&source))
            .await?
            .with_context(|| {
                format!(
                    "node '{}': loading {}",
                    config.node_id,
                    config.data.describe()
                )
            })?;
    // Counts only: never customer ids or amounts.
    tracing::info!(
        node = %config.node_id,
        customers = log.n_customers(),
        rows_accepted = report.rows_accepted,
        rows_rejected = report.rows_rejected,
        "transaction log loaded"
    );
    let metrics = options
        .metrics
        .unwrap_or_else(|| Arc::new(NodeMetrics::register(&mut Registry::default())));
    count_load(&metrics, &report.report);
    for error in &report.sample_errors {
        tracing::warn!(node = %config.node_id, %error, "rejected row");
    }
    let store = MemoryStore::open(&config.state_dir()).with_context(|| {
        format!(
            "node '{}': memory and privacy ledger in {}",
            config.node_id,
            config.state_dir().display()
        )
    })?;
    let memory = store
        .load()
        .with_context(|| format!("node '{}': reading its memory", config.node_id))?;
    let receipts = ReceiptKeeper::open(&config.state_dir(), &config.node_id)
        .with_context(|| format!("node '{}': receipts", config.node_id))?;
    let machine = NodeMachine::new(
        MachineIdentity {
            node_id: config.node_id.clone(),
            signing_key: identity.key_pair(),
        },
        config.policy.clone(),
        trust,
        memory,
    );
    let state = NodeState {
        client: NodeClient::new(&config.coordinator, &config.node_id, tls.as_ref())?,
        machine,
        store,
        revocations,
        receipts,
        log: Arc::new(log),
        identity,
        certificate_der,
        jobs: HashMap::new(),
        audit_kit_path,
        injected_fault: options.injected_fault,
        rng: ChaCha20Rng::from_os_rng(),
        progress: options.progress,
        metrics,
    };
    tokio::pin!(shutdown);
    tokio::select! {
        result = serve(state) => result,
        _ = &mut shutdown => {
            tracing::info!(node = %config.node_id, "node stopping");
            Ok(())
        }
    }
}

async fn serve(mut state: NodeState) -> anyhow::Result<()> {
    let heartbeat_interval = register(&mut state).await?;
    if let Some(progress) = &state.progress {
        let _ = progress.send(NodeProgress::Registered);
    }
    let heartbeat = tokio::spawn(heartbeat_loop(state.client.clone(), heartbeat_interval));
    let mut backoff = Duration::from_millis(200);
    let result = loop {
        match state.client.fetch_task(LONG_POLL).await {
            Ok(Some(task)) => {
                backoff = Duration::from_millis(200);
                // A training task may belong to a round still owed a receipt;
                // any other task comes after the round's commit.
                let training = (task.phase == v1::Phase::Train as i32)
                    .then_some((task.job_id.as_str(), task.round));
                collect_receipts(&mut state, training).await;
                let job_id = task.job_id.clone();
                // One span per task: the node's side of a job's round and phase, in JSON
                // logs and (with `--otlp-endpoint`) in the collector.
                let span = tracing::info_span!(
                    "task",
                    node = %state.client.node_id,
                    job = %task.job_id,
                    round = task.round,
                    phase = %crate::wire::phase_from_wire(task.phase)
                        .map_or_else(|_| "unknown".to_owned(), |phase| phase.to_string()),
                );
                if let Err(error) = handle_task(&mut state, task).instrument(span).await {
                    tracing::warn!(node = %state.client.node_id, job = %job_id, error = %format!("{error:#}"), "task failed");
                }
            }
            Ok(None) => collect_receipts(&mut state, None).await,
            Err(status) if status.code() == Code::FailedPrecondition => {
                // The coordinator forgot us (it restarted): register again.
                if let Err(error) = register(&mut state).await {
                    break Err(error);
                }
            }
            Err(status) if is_transient(&status) => {
                tracing::warn!(node = %state.client.node_id, code = ?status.code(), "coordinator unreachable, retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                if let Err(error) = register(&mut state).await {
                    break Err(error);
                }
            }
            Err(status) => break Err(anyhow::anyhow!("fetching tasks: {}", status.message())),
        }
    };
    heartbeat.abort();
    result
}

/// Registers (retrying until the coordinator answers) and checks the
/// coordinator's audit key against the pinned one; returns the heartbeat interval.
async fn register(state: &mut NodeState) -> anyhow::Result<Duration> {
    let identity_key = state.identity.public_key();
    let response =
        register_with_backoff(&mut state.client, identity_key, &state.certificate_der).await;
    state.receipts.pin(&response.audit_public_key)?;
    Ok(Duration::from_millis(u64::from(
        response.heartbeat_interval_ms.max(500),
    )))
}

/// Fetches and stores the receipts of rounds that may have committed since
/// the last fetch. Failures are retried at the next opportunity: a receipt
/// can always be issued again from the coordinator's log.
async fn collect_receipts(state: &mut NodeState, current: Option<(&str, u32)>) {
    if !state.receipts.is_due(current) {
        return;
    }
    let node = state.client.node_id.clone();
    match state
        .client
        .fetch_receipts(state.receipts.after_seq())
        .await
    {
        Ok(fetched) => match state.receipts.store(fetched) {
            Ok(0) => {}
            Ok(stored) => tracing::info!(node = %node, stored, "receipts stored"),
            Err(error) => {
                tracing::error!(node = %node, error = %format!("{error:#}"), "receipts refused");
            }
        },
        Err(status) => {
            tracing::debug!(node = %node, code = ?status.code(), message = status.message(), "receipts not fetched");
        }
    }
}

/// Registers, retrying with exponential backoff until the coordinator answers.
async fn register_with_backoff(
    client: &mut NodeClient,
    identity_key: [u8; 32],
    certificate_der: &[u8],
) -> v1::RegisterResponse {
    let mut delay = Duration::from_millis(100);
    let mut hinted = false;
    loop {
        match client.register(identity_key, certificate_der).await {
            Ok(response) => {
                tracing::info!(node = %client.node_id, "registered with the coordinator");
                return response;
            }
            Err(status) => {
                // The one mistake a retry never fixes: said once, loudly.
                if let Some(hint) =
                    veil_pki::scheme_mismatch_hint(&client.address, &format!("{status:?}"))
                {
                    if !hinted {
                        tracing::warn!(node = %client.node_id, address = %client.address, "{hint}");
                        hinted = true;
                    }
                }
                tracing::debug!(node = %client.node_id, code = ?status.code(), "registration failed, retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn heartbeat_loop(mut client: NodeClient, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        if let Err(status) = client.heartbeat().await {
            tracing::debug!(node = %client.node_id, code = ?status.code(), "heartbeat failed");
        }
    }
}

async fn handle_task(state: &mut NodeState, task: v1::Task) -> anyhow::Result<()> {
    // Measured only for code embedding a node that asked for progress.
    let mut cpu = CpuMeter::start(state.progress.is_some());
    let header = v1::ResultHeader {
        node_id: state.client.node_id.clone(),
        job_id: task.job_id.clone(),
        round: task.round,
        phase: task.phase,
        ..Default::default()
    };
    let node_task = match task_from_wire(&task) {
        Ok(node_task) => node_task,
        Err(error) => {
            tracing::warn!(node = %state.client.node_id, job = %task.job_id, round = task.round, %error, "declining a malformed task");
            return send(
                state,
                decline_header(header, DeclineCode::InvalidTask),
                ResultBody::Empty,
                None,
                cpu.stop(),
            )
            .await;
        }
    };
    if let Some(revocations) = &state.revocations {
        // Fail closed: a list that cannot be read refuses every peer.
        let revoked: BTreeSet<veil_pki::Serial> = revocations
            .entries()
            .context("reading the node's revocation list")?
            .into_iter()
            .map(|revocation| revocation.serial)
            .collect();
        state.machine.update_revocations(revoked);
    }
    let mut decision = decide(state, &node_task, None)?;
    if let Decision::Compute { commit } = decision {
        state
            .store
            .commit(&commit)
            .context("writing the node's memory")?;
        // Training or evaluation is not the protocol's cost: not counted.
        cpu.pause();
        let computed = compute_reply(state, &node_task.spec, &task, node_task.phase).await;
        cpu.resume();
        decision = match computed {
            Ok(reply) => decide(state, &node_task, Some(reply))?,
            Err(error) => {
                let code = if error.downcast_ref::<NoTrainingRows>().is_some() {
                    DeclineCode::NoData
                } else if error.downcast_ref::<NoMatchingAuditKit>().is_some() {
                    DeclineCode::PolicyPrivacyAudit
                } else {
                    DeclineCode::LocalFailure
                };
                tracing::warn!(node = %state.client.node_id, job = %task.job_id, round = task.round, phase = %node_task.phase, error = %format!("{error:#}"), "could not compute the reply");
                state
                    .machine
                    .local_failure(&node_task, code, format!("{error:#}"))
            }
        };
    }
    match decision {
        Decision::Decline {
            code,
            detail,
            commit,
        } => {
            state
                .store
                .commit(&commit)
                .context("writing the node's memory")?;
            tracing::warn!(node = %state.client.node_id, job = %task.job_id, round = task.round, phase = %node_task.phase, %code, %detail, "declining phase");
            send(
                state,
                decline_header(header, code),
                ResultBody::Empty,
                None,
                cpu.stop(),
            )
            .await
        }
        Decision::Send { commit, message } => {
            // Charges, the release mark and the stored reply are durable
            // before the first byte of what they cover leaves.
            state
                .store
                .commit(&commit)
                .context("writing the node's memory")?;
            match message {
                Outgoing::Plain(reply) => {
                    let header = v1::ResultHeader {
                        weight: reply.weight,
                        statistics: reply.statistics,
                        vector_length: reply.vector.len() as u64,
                        ..header
                    };
                    send(
                        state,
                        header,
                        ResultBody::Values(&reply.vector),
                        None,
                        cpu.stop(),
                    )
                    .await
                }
                Outgoing::Secure {
                    step,
                    attempt,
                    payload,
                } => {
                    let header = v1::ResultHeader {
                        secure_step: secure_step_to_wire(step) as i32,
                        secure_attempt: attempt,
                        payload_bytes: payload.len() as u64,
                        ..header
                    };
                    send(
                        state,
                        header,
                        ResultBody::Bytes(&payload),
                        Some(step),
                        cpu.stop(),
                    )
                    .await
                }
            }
        }
        Decision::Compute { .. } => bail!("the node's state machine asked for the reply twice"),
    }
}

/// CPU time of the current thread, summed over the stretches of a task that
/// run without awaiting (so on one thread): Linux's per-thread schedstat, in
/// nanoseconds. Off unless asked for, and `None` where it cannot be read.
struct CpuMeter {
    /// CPU counted so far; `None` when off or unreadable.
    spent: Option<Duration>,
    /// The thread's CPU clock when the current stretch began; `None` while
    /// paused (across an await, when the task may move to another thread).
    since: Option<Duration>,
}

impl CpuMeter {
    fn start(enabled: bool) -> Self {
        let since = if enabled { thread_cpu_time() } else { None };
        CpuMeter {
            spent: since.map(|_| Duration::ZERO),
            since,
        }
    }

    fn pause(&mut self) {
        if let (Some(spent), Some(since), Some(now)) = (self.spent, self.since, thread_cpu_time()) {
            self.spent = Some(spent + now.saturating_sub(since));
        }
        self.since = None;
    }

    fn resume(&mut self) {
        if self.spent.is_some() {
            self.since = thread_cpu_time();
        }
    }

    fn stop(&mut self) -> Option<Duration> {
        self.pause();
        self.spent
    }
}

fn thread_cpu_time() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

/// Asks the machine, with the current time and the partner's ledger.
fn decide(
    state: &mut NodeState,
    task: &NodeTask,
    computed: Option<PhaseReply>,
) -> anyhow::Result<Decision> {
    let node_id = state.client.node_id.clone();
    let ledger = state
        .store
        .ledger
        .charges_for_partner(&node_id)
        .context("reading the node's privacy ledger")?;
    let now = unix_seconds();
    Ok(match computed {
        None => state
            .machine
            .handle_task(task, now, &ledger, &mut state.rng),
        Some(reply) => state
            .machine
            .reply_computed(task, reply, now, &ledger, &mut state.rng),
    })
}

fn decline_header(header: v1::ResultHeader, code: DeclineCode) -> v1::ResultHeader {
    v1::ResultHeader {
        decline_code: decline_code_to_wire(code),
        ..header
    }
}

async fn send(
    state: &mut NodeState,
    header: v1::ResultHeader,
    body: ResultBody<'_>,
    step: Option<SecureStep>,
    cpu: Option<Duration>,
) -> anyhow::Result<()> {
    let (job, round) = (header.job_id.clone(), header.round);
    let phase = crate::wire::phase_from_wire(header.phase)?;
    let declined = header.decline_code != 0;
    // The update this round's commit (and so its receipt) will hold.
    let training_update =
        phase == Phase::Train && !declined && matches!(step, None | Some(SecureStep::MaskedInput));
    let decline_code = DeclineCode::from_wire_value(header.decline_code);
    let phase_labels = PhaseLabels::new(phase);
    match state.client.submit(header, body).await {
        Ok(duplicate) => {
            if !duplicate {
                count_submission(&state.metrics, &job, phase, decline_code, step);
            }
            if training_update {
                state.receipts.await_round(&job, round);
            }
            tracing::info!(node = %state.client.node_id, job = %job, round, %phase, step = ?step, duplicate, "result submitted");
            if let Some(progress) = &state.progress {
                let _ = progress.send(NodeProgress::Submitted {
                    job,
                    round,
                    phase,
                    step,
                    cpu,
                });
            }
            Ok(())
        }
        Err(status) => {
            state
                .metrics
                .results_refused
                .get_or_create(&phase_labels)
                .inc();
            bail!(
                "round {round} {phase}: result refused: {}",
                status.message()
            )
        }
    }
}

/// Counts one accepted submission: a decline, or a release (a plain reply or
/// a masked input; the other secure steps carry keys and shares, not data).
fn count_submission(
    metrics: &NodeMetrics,
    job: &str,
    phase: Phase,
    decline_code: Option<DeclineCode>,
    step: Option<SecureStep>,
) {
    if let Some(code) = decline_code {
        metrics
            .declines
            .get_or_create(&DeclineLabels {
                phase: phase.to_string(),
                code: code.as_str().to_owned(),
            })
            .inc();
        return;
    }
    if matches!(step, None | Some(SecureStep::MaskedInput)) {
        metrics
            .releases_sent
            .get_or_create(&PhaseLabels::new(phase))
            .inc();
        if phase == Phase::Train {
            metrics
                .rounds_joined
                .get_or_create(&JobLabels::new(job))
                .inc();
        }
    }
}

/// Counts what loading and de-identifying the partner's data did: rows,
/// PII hits per kind, suppressed records, pseudonymised columns, k achieved.
fn count_load(metrics: &NodeMetrics, report: &PartnerDataReport) {
    for (name, source) in [
        ("transactions", Some(&report.transactions)),
        ("profile", report.profile.as_ref()),
    ] {
        let Some(source) = source else { continue };
        let labels = NodeMetrics::source(name);
        metrics
            .rows_accepted
            .get_or_create(&labels)
            .inc_by(source.rows_accepted);
        metrics
            .rows_rejected
            .get_or_create(&labels)
            .inc_by(source.rows_rejected);
        let Some(deid) = &source.deid else { continue };
        let hits = deid.pii_hits_total();
        for kind in PiiKind::ALL {
            metrics
                .pii_redacted
                .get_or_create(&PiiLabels {
                    source: name.to_owned(),
                    kind: kind.name().to_owned(),
                })
                .inc_by(hits.get(kind));
        }
        metrics
            .columns_pseudonymised
            .get_or_create(&labels)
            .set(deid.columns_pseudonymised.len() as i64);
        if let Some(k_anonymity) = &deid.k_anonymity {
            metrics
                .records_suppressed
                .get_or_create(&labels)
                .inc_by(k_anonymity.records_suppressed);
            if let Some(k) = k_anonymity.k_achieved {
                metrics.k_achieved.get_or_create(&labels).set(k as i64);
            }
        }
    }
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// The node has no training rows for a job: declined as `NoData`.
#[derive(Debug, thiserror::Error)]
#[error("no training rows for this job")]
struct NoTrainingRows;

/// An audit job names this node, which consents, but holds no kit whose seed
/// hashes to the job's commitment: declined rather than run without canaries,
/// which would report a meaningless lower bound of 0.
#[derive(Debug, thiserror::Error)]
#[error("the job audits this node but no installed privacy audit kit matches its commitment")]
struct NoMatchingAuditKit;

/// The included canaries this node trains on in `spec`: none unless the job
/// audits this node (its policy consent was checked by the state machine).
fn audit_canaries(
    node_id: &str,
    kit_path: Option<&Path>,
    spec: &JobSpec,
) -> anyhow::Result<Vec<Canary>> {
    let Some(audit) = spec
        .privacy_audit
        .as_ref()
        .filter(|audit| audit.partner == node_id)
    else {
        return Ok(Vec::new());
    };
    let Some(kit_path) = kit_path else {
        return Err(NoMatchingAuditKit.into());
    };
    let kit = InstalledKit::read(kit_path)?;
    if kit.commitment != audit.commitment {
        return Err(NoMatchingAuditKit.into());
    }
    // The commitment is public (the job carries it); the seed never appears.
    tracing::info!(node = %node_id, commitment = %commitment_hex(&kit.commitment), canaries = kit.canaries, "privacy audit: the job matches the installed kit");
    if spec.label.task.is_regression() {
        bail!("privacy audits need a binary task; canary labels are 0 or 1");
    }
    let canaries = generate_canaries(&kit.seed, kit.canaries, spec.features.n_features())?;
    Ok(canaries
        .into_iter()
        .filter(|canary| canary.included)
        .collect())
}

/// Computes this node's reply to a phase from its prepared data.
async fn compute_reply(
    state: &mut NodeState,
    spec: &JobSpec,
    task: &v1::Task,
    phase: Phase,
) -> anyhow::Result<PhaseReply> {
    if !state
        .jobs
        .get(&task.job_id)
        .is_some_and(|job| &job.spec == spec)
    {
        let log = Arc::clone(&state.log);
        let prepare_spec = spec.clone();
        let canaries =
            audit_canaries(&state.client.node_id, state.audit_kit_path.as_deref(), spec)?;
        let rows =
            tokio::task::spawn_blocking(move || JobRows::prepare(&log, &prepare_spec)).await?;
        tracing::info!(
            node = %state.client.node_id,
            job = %task.job_id,
            train = rows.train.len(),
            holdout = rows.holdout.len(),
            "job data prepared"
        );
        if !canaries.is_empty() {
            // Neither which canaries are in nor how many: that is the audit's secret.
            tracing::info!(node = %state.client.node_id, job = %task.job_id, "privacy audit: canaries added to the training rows");
        }
        state.jobs.insert(
            task.job_id.clone(),
            PreparedJob {
                spec: spec.clone(),
                rows,
                canaries,
                scaled: None,
            },
        );
    }
    let Some(job) = state.jobs.get_mut(&task.job_id) else {
        bail!("job data missing right after preparation");
    };
    if phase == Phase::Release {
        // Every customer takes part in an analysis: no holdout.
        let customers: Vec<&CustomerRow> = job.rows.train.iter().chain(&job.rows.holdout).collect();
        // The node's noise share comes from its own OS-keyed stream.
        let mut rng = veil_dp_noise::production_rng()?;
        return crate::analysis::release_reply(
            spec,
            task.round,
            &task.release_parameters,
            &customers,
            &state.log,
            &mut rng,
        );
    }
    let n_features = spec.features.n_features();
    let released = spec.privacy.statistics;
    if phase == Phase::FeatureStats {
        if released.is_some() {
            // Under customer-level DP the federation scales features
            // publicly (`job_scaling`): nothing about the data is released.
            return Ok(PhaseReply {
                weight: 1.0,
                statistics: vec![0.0; statistics::feature_statistics_len(n_features)],
                vector: Vec::new(),
            });
        }
        let sums = job.rows.feature_sums(n_features);
        return Ok(PhaseReply {
            weight: sums.count as f64,
            statistics: statistics::feature_sums_to_vector(&sums),
            vector: Vec::new(),
        });
    }
    let scaling_wire = task.scaling.clone().context("task carries no scaling")?;
    let scaling = Scaling {
        mean: scaling_wire.mean,
        std: scaling_wire.std,
    };
    if scaling.mean.len() != n_features || scaling.std.len() != n_features {
        bail!(
            "task scaling has {} features, the job has {n_features}",
            scaling.mean.len()
        );
    }
    let (train_set, holdout_set) = scaled_datasets(job, &scaling, n_features)?;
    let global = state
        .client
        .download_model(&task.job_id, task.model_version, task.parameter_count)
        .await?;
    let model_spec = spec.model_spec();
    if phase == Phase::Train {
        if train_set.n_rows() == 0 {
            return Err(NoTrainingRows.into());
        }
        let config = spec.training_config(task.round, node_seed(&state.client.node_id));
        let global_for_training = global.clone();
        let dp_sgd = match (spec.privacy.customers, state.injected_fault) {
            (Some(dp), Some(InjectedFault::DpSgdNoiseRemoved)) => {
                tracing::error!(
                    node = %state.client.node_id,
                    job = %task.job_id,
                    "INJECTED FAULT: DP-SGD noise removed while the ledgers charge the job's ε"
                );
                Some(veil_models::DpSgdConfig {
                    noise_multiplier: 0.0,
                    ..dp
                })
            }
            (dp, _) => dp,
        };
        // DP-SGD draws its batches and noise from its own OS-keyed stream.
        let mut dp_rng = veil_dp_noise::production_rng()?;
        let outcome = tokio::task::spawn_blocking(move || match dp_sgd {
            Some(dp) => train_dp_sgd(
                &model_spec,
                &global_for_training,
                &train_set,
                &config,
                &dp,
                &mut dp_rng,
            )
            .map(|outcome| outcome.training),
            None => train(&model_spec, &global_for_training, &train_set, &config),
        })
        .await??;
        let vector = if state.injected_fault == Some(InjectedFault::ColludingZeroUpdate) {
            vec![0.0; global.len()]
        } else {
            outcome
                .parameters
                .iter()
                .zip(&global)
                .map(|(local, global)| local - global)
                .collect()
        };
        if released.is_some() {
            // Under customer-level DP the example count and the training
            // loss would be released without noise: every partner's update
            // weighs the same, and no loss is reported.
            return Ok(PhaseReply {
                weight: spec.uniform_weight(),
                statistics: statistics::train_statistics(0.0, 0),
                vector,
            });
        }
        Ok(PhaseReply {
            weight: outcome.examples as f64,
            statistics: statistics::train_statistics(outcome.mean_training_loss, outcome.examples),
            vector,
        })
    } else {
        let Some(released) = released else {
            let stats =
                tokio::task::spawn_blocking(move || evaluate(&model_spec, &global, &holdout_set))
                    .await??;
            return Ok(PhaseReply {
                weight: stats.count as f64,
                statistics: stats.to_vector(),
                vector: Vec::new(),
            });
        };
        let output = model_spec.output;
        if task.round < spec.rounds {
            // Only the final model's evaluation is released (and paid for);
            // the rounds before report nothing that depends on the data.
            return Ok(PhaseReply {
                weight: 1.0,
                statistics: EvalStats::empty(output).to_vector(),
                vector: Vec::new(),
            });
        }
        let bounds = ExampleBounds {
            value_bound: released.value_bound,
            binary_loss_bound: statistics::RELEASED_BINARY_LOSS_BOUND,
        };
        let mut stats = tokio::task::spawn_blocking(move || {
            evaluate_clamped(&model_spec, &global, &holdout_set, bounds)
        })
        .await??;
        statistics::coarsen_histograms(&mut stats);
        let mut vector = stats.to_vector();
        add_release_noise(
            &ReleaseNoise::evaluation(output, released.value_bound),
            &mut vector,
            released,
        )?;
        Ok(PhaseReply {
            weight: vector[0].max(1.0),
            statistics: vector,
            vector: Vec::new(),
        })
    }
}

/// Adds a release's Gaussian noise from a ChaCha20 stream keyed by the OS.
fn add_release_noise(
    noise: &ReleaseNoise,
    vector: &mut [f64],
    released: StatisticsPrivacy,
) -> anyhow::Result<()> {
    let mut rng = veil_dp_noise::production_rng()?;
    let standard = veil_dp_noise::Gaussian::new(1.0)?;
    noise.apply(vector, released.noise_multiplier, || {
        standard.sample(&mut rng)
    })?;
    Ok(())
}

fn scaled_datasets(
    job: &mut PreparedJob,
    scaling: &Scaling,
    n_features: usize,
) -> anyhow::Result<(Arc<Dataset>, Arc<Dataset>)> {
    if let Some((cached, train_set, holdout_set)) = &job.scaled {
        if cached == scaling {
            return Ok((Arc::clone(train_set), Arc::clone(holdout_set)));
        }
    }
    let mut train_set = to_dataset(&job.rows.train, scaling, n_features)?;
    for canary in &job.canaries {
        // Canaries live in the scaled space already (see veil_privacy_audit::canary).
        train_set.features.extend_from_slice(&canary.features);
        train_set.labels.push(canary.label);
    }
    let train_set = Arc::new(train_set);
    let holdout_set = Arc::new(to_dataset(&job.rows.holdout, scaling, n_features)?);
    job.scaled = Some((
        scaling.clone(),
        Arc::clone(&train_set),
        Arc::clone(&holdout_set),
    ));
    Ok((train_set, holdout_set))
}

/// A per-node shuffling seed, so nodes do not walk their data in lockstep.
fn node_seed(node_id: &str) -> u64 {
    let digest = ring::digest::digest(&ring::digest::SHA256, node_id.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_le_bytes(bytes)
}
