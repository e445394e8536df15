//! The node's main loop: register, long-poll for tasks, run them against the
//! partner's data, submit, repeat, until shutdown. Secure phases are answered
//! step by step through the SecAgg+ client, so the phase's reply leaves the
//! node only masked.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use tokio::sync::mpsc;
use tonic::Code;
use veil_features::{Scaling, TransactionLog};
use veil_federation::secure::{protocol_round_of, round_graph_seed};
use veil_federation::{
    AggregationMode, Phase, ReplyEncoding, SecureParticipant, SecureStep, SecureTask,
};
use veil_job::statistics::ReleaseNoise;
use veil_job::{JobSpec, StatisticsPrivacy, statistics};
use veil_job::{RoundParty, phase_charges};
use veil_ledger::{Charge, SqliteLedger, check_partner_caps};
use veil_models::{
    Dataset, EvalStats, ExampleBounds, evaluate, evaluate_clamped, train, train_dp_sgd,
};
use veil_secagg::ProtocolParams;
use veil_wire::v1;

use crate::config::NodeConfig;
use crate::data::{JobRows, to_dataset};
use crate::identity::NodeIdentity;
use crate::policy::NodePolicy;
use crate::receipts::ReceiptKeeper;
use crate::transport::{NodeClient, ResultBody, is_transient};

/// How long each `FetchTask` long poll may wait.
const LONG_POLL: Duration = Duration::from_secs(20);

/// A job's prepared data at this node, kept across its rounds.
struct PreparedJob {
    spec: JobSpec,
    rows: JobRows,
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
    },
}

/// Optional hooks of a running node.
#[derive(Debug, Default, Clone)]
pub struct RunOptions {
    /// Receives one message after every accepted submission.
    pub progress: Option<mpsc::UnboundedSender<NodeProgress>>,
}

/// Secure-aggregation state of the phases under way, by (job, round, phase, attempt).
type Participants = HashMap<(String, u32, Phase, u32), SecureParticipant>;

/// Everything the task loop carries between tasks.
struct NodeState {
    client: NodeClient,
    /// This partner's own copy of every privacy charge it accepted.
    ledger: SqliteLedger,
    /// The coordinator's signed receipts of the rounds this node joined.
    receipts: ReceiptKeeper,
    log: Arc<TransactionLog>,
    identity: NodeIdentity,
    policy: NodePolicy,
    jobs: HashMap<String, PreparedJob>,
    participants: Participants,
    /// Stochastic rounding and protocol randomness: ChaCha20 keyed from the OS.
    rng: ChaCha20Rng,
    progress: Option<mpsc::UnboundedSender<NodeProgress>>,
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
    // bound to its name; without, a key kept in the state folder.
    let (identity, tls) = match config.tls_files() {
        Some(files) => {
            let tls = files
                .client()
                .with_context(|| format!("node '{}': TLS files", config.node_id))?;
            let (_, _, key) = files
                .load()
                .with_context(|| format!("node '{}': TLS files", config.node_id))?;
            (NodeIdentity::from_key_pair(key.into_key_pair()), Some(tls))
        }
        None => {
            tracing::warn!(node = %config.node_id, "no tls_dir configured: talking to the coordinator without TLS (insecure development mode)");
            let identity = NodeIdentity::load_or_create(&config.state_dir())
                .with_context(|| format!("node '{}': identity key", config.node_id))?;
            (identity, None)
        }
    };
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
    for error in &report.sample_errors {
        tracing::warn!(node = %config.node_id, %error, "rejected row");
    }
    crate::identity::create_state_dir(&config.state_dir())?;
    let ledger_path = config.state_dir().join("ledger.sqlite");
    let ledger = SqliteLedger::open(&ledger_path).with_context(|| {
        format!(
            "node '{}': privacy ledger {}",
            config.node_id,
            ledger_path.display()
        )
    })?;
    let receipts = ReceiptKeeper::open(&config.state_dir(), &config.node_id)
        .with_context(|| format!("node '{}': receipts", config.node_id))?;
    let state = NodeState {
        client: NodeClient::new(&config.coordinator, &config.node_id, tls.as_ref())?,
        ledger,
        receipts,
        log: Arc::new(log),
        identity,
        policy: config.policy.clone(),
        jobs: HashMap::new(),
        participants: HashMap::new(),
        rng: ChaCha20Rng::from_os_rng(),
        progress: options.progress,
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
                if let Err(error) = handle_task(&mut state, task).await {
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
    let response = register_with_backoff(&mut state.client, identity_key).await;
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
) -> v1::RegisterResponse {
    let mut delay = Duration::from_millis(100);
    loop {
        match client.register(identity_key).await {
            Ok(response) => {
                tracing::info!(node = %client.node_id, "registered with the coordinator");
                return response;
            }
            Err(status) => {
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

/// One phase's reply before it is sent: in the clear for plain jobs, encoded
/// and masked for secure ones.
struct Reply {
    weight: f64,
    statistics: Vec<f64>,
    vector: Vec<f32>,
}

fn phase_of(task: &v1::Task) -> anyhow::Result<Phase> {
    match v1::Phase::try_from(task.phase) {
        Ok(v1::Phase::FeatureStats) => Ok(Phase::FeatureStats),
        Ok(v1::Phase::Train) => Ok(Phase::Train),
        Ok(v1::Phase::Evaluate) => Ok(Phase::Evaluate),
        _ => bail!("unknown phase value {}", task.phase),
    }
}

async fn handle_task(state: &mut NodeState, task: v1::Task) -> anyhow::Result<()> {
    let wire_spec = task.spec.as_ref().context("task carries no job spec")?;
    let spec = JobSpec::from_wire(wire_spec).context("task carries an invalid job spec")?;
    let phase = phase_of(&task)?;
    let header = v1::ResultHeader {
        node_id: state.client.node_id.clone(),
        job_id: task.job_id.clone(),
        round: task.round,
        phase: task.phase,
        ..Default::default()
    };
    if let Some(reason) = state.policy.refusal(&spec) {
        return decline(state, header, phase, reason).await;
    }
    match (&spec.aggregation, task.secure.as_ref()) {
        (AggregationMode::Plain, None) => {
            if let Some(reason) = privacy_gate(
                state,
                &spec,
                phase,
                &task.job_id,
                task.round,
                0,
                Commit::Record,
            )? {
                return decline(state, header, phase, reason).await;
            }
            let reply = compute_reply(state, &spec, &task, phase).await?;
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
                phase,
                None,
            )
            .await
        }
        (AggregationMode::Secure(_), Some(secure)) => {
            // The phase is checked against the caps before anything is
            // computed, and charged just before the masked input (the only
            // message that depends on the data) leaves.
            let commit = match v1::SecureStep::try_from(secure.step) {
                Ok(v1::SecureStep::AdvertiseKeys) => Some(Commit::CheckOnly),
                Ok(v1::SecureStep::MaskedInput) => Some(Commit::Record),
                _ => None,
            };
            if let Some(commit) = commit {
                let cohort = secure.parameters.as_ref().map_or(0, |p| p.cohort.len());
                if let Some(reason) = privacy_gate(
                    state,
                    &spec,
                    phase,
                    &task.job_id,
                    task.round,
                    cohort,
                    commit,
                )? {
                    return decline(state, header, phase, reason).await;
                }
            }
            match secure_message(state, &spec, &task, phase, secure).await {
                Ok((step, attempt, payload)) => {
                    let header = v1::ResultHeader {
                        secure_step: secure.step,
                        secure_attempt: attempt,
                        payload_bytes: payload.len() as u64,
                        ..header
                    };
                    send(
                        state,
                        header,
                        ResultBody::Bytes(&payload),
                        phase,
                        Some(step),
                    )
                    .await
                }
                Err(error) => {
                    let reason = format!("{error:#}");
                    decline(state, header, phase, reason).await
                }
            }
        }
        // The job says secure but the task is plain (or the reverse): never
        // send anything in the clear on a coordinator's word alone.
        (mode, _) => {
            let reason = format!(
                "the task does not match the job's {} aggregation mode",
                mode.name()
            );
            decline(state, header, phase, reason).await
        }
    }
}

/// The protocol message answering one secure step.
async fn secure_message(
    state: &mut NodeState,
    spec: &JobSpec,
    task: &v1::Task,
    phase: Phase,
    wire: &v1::SecureStepTask,
) -> anyhow::Result<(SecureStep, u32, Vec<u8>)> {
    let AggregationMode::Secure(settings) = &spec.aggregation else {
        bail!("not a secure job");
    };
    let secure = secure_task_from_wire(wire)?;
    let key = (task.job_id.clone(), task.round, phase, secure.attempt);
    let payload = if secure.step == SecureStep::AdvertiseKeys {
        let expected_seed =
            round_graph_seed(&settings.graph_seed, task.round, phase, secure.attempt);
        if secure.params.graph_seed() != &expected_seed {
            bail!("the neighbour graph seed is not the one the job fixes");
        }
        let shape = spec.plan().reply_shape(phase);
        let encoding = ReplyEncoding::new(
            shape.vector_len,
            shape.statistics_len,
            secure.params.cohort().len(),
            settings,
            &spec.privacy.partners,
        )?;
        if secure.params.vector_length() != encoding.encoded_len()
            || secure.params.modulus_bits() != settings.modulus_bits
        {
            bail!(
                "the protocol parameters (length {}, {} bits) do not match the job (length {}, {} bits)",
                secure.params.vector_length(),
                secure.params.modulus_bits(),
                encoding.encoded_len(),
                settings.modulus_bits
            );
        }
        let reply = compute_reply(state, spec, task, phase).await?;
        let encoded = encoding.encode(
            reply.weight,
            &reply.statistics,
            &reply.vector,
            &mut state.rng,
        )?;
        // A new instance for this phase supersedes older ones of the job.
        state.participants.retain(|(job, round, old_phase, _), _| {
            job != &task.job_id || (*round, *old_phase) != (task.round, phase)
        });
        let (participant, message) = SecureParticipant::start(
            &task.job_id,
            protocol_round_of(task.round, phase),
            &state.client.node_id,
            &secure,
            state.policy.secure_policy(),
            state.identity.key_pair(),
            encoded,
            &mut state.rng,
        )?;
        state.participants.insert(key, participant);
        message
    } else {
        let Some(participant) = state.participants.get_mut(&key) else {
            bail!(
                "no protocol state for round {} {phase} attempt {} (the node restarted)",
                task.round,
                secure.attempt
            );
        };
        let result = participant.respond(&secure, &mut state.rng);
        if result.is_err() || participant.is_done() {
            state.participants.remove(&key);
        }
        result?
    };
    Ok((secure.step, secure.attempt, payload))
}

fn secure_task_from_wire(wire: &v1::SecureStepTask) -> anyhow::Result<SecureTask> {
    let step = match v1::SecureStep::try_from(wire.step) {
        Ok(v1::SecureStep::AdvertiseKeys) => SecureStep::AdvertiseKeys,
        Ok(v1::SecureStep::ShareKeys) => SecureStep::ShareKeys,
        Ok(v1::SecureStep::MaskedInput) => SecureStep::MaskedInput,
        Ok(v1::SecureStep::ConsistencyCheck) => SecureStep::ConsistencyCheck,
        Ok(v1::SecureStep::Unmask) => SecureStep::Unmask,
        _ => bail!("unknown secure step value {}", wire.step),
    };
    let parameters = wire
        .parameters
        .as_ref()
        .context("secure task carries no parameters")?;
    let cohort = parameters
        .cohort
        .iter()
        .map(|node| veil_secagg::NodeId::new(node.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    let graph_seed: [u8; 32] = parameters
        .graph_seed
        .as_slice()
        .try_into()
        .context("graph seed is not 32 bytes")?;
    let params = ProtocolParams::new(
        cohort,
        graph_seed,
        parameters.neighbour_count as usize,
        parameters.reconstruction_threshold as usize,
        parameters.modulus_bits,
        usize::try_from(parameters.vector_length).context("vector length")?,
    )?;
    let identities = wire
        .identities
        .iter()
        .map(|identity| {
            let key: [u8; 32] = identity.public_key.as_slice().try_into().with_context(|| {
                format!("identity key of '{}' is not 32 bytes", identity.node_id)
            })?;
            Ok((identity.node_id.clone(), key))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(SecureTask {
        step,
        attempt: wire.attempt,
        params: Arc::new(params),
        identities: Arc::new(identities),
        payload: Arc::new(wire.payload.clone()),
    })
}

/// Tells the coordinator this node will not take part, and why.
async fn decline(
    state: &mut NodeState,
    header: v1::ResultHeader,
    phase: Phase,
    reason: String,
) -> anyhow::Result<()> {
    tracing::warn!(node = %state.client.node_id, job = %header.job_id, round = header.round, %phase, %reason, "declining phase");
    let header = v1::ResultHeader {
        decline_reason: reason,
        ..header
    };
    send(state, header, ResultBody::Empty, phase, None).await
}

async fn send(
    state: &mut NodeState,
    header: v1::ResultHeader,
    body: ResultBody<'_>,
    phase: Phase,
    step: Option<SecureStep>,
) -> anyhow::Result<()> {
    let (job, round) = (header.job_id.clone(), header.round);
    // The update this round's commit (and so its receipt) will hold.
    let training_update = phase == Phase::Train
        && header.decline_reason.is_empty()
        && matches!(step, None | Some(SecureStep::MaskedInput));
    match state.client.submit(header, body).await {
        Ok(duplicate) => {
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
                });
            }
            Ok(())
        }
        Err(status) => bail!(
            "round {round} {phase}: result refused: {}",
            status.message()
        ),
    }
}

/// Whether the privacy gate only checks the caps or also records the charge.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Commit {
    CheckOnly,
    Record,
}

/// The partner's veto over a phase: prices it with the job's own rules
/// ([`phase_charges`], as the coordinator does), refuses it when it
/// would exceed this node's yearly caps whatever the coordinator says, and
/// with [`Commit::Record`] records the charges durably before the update is
/// sent. A round already charged (a replay or a retried attempt) is not
/// charged again. Returns the refusal, if any.
fn privacy_gate(
    state: &mut NodeState,
    spec: &JobSpec,
    phase: Phase,
    job_id: &str,
    round: u32,
    cohort: usize,
    commit: Commit,
) -> anyhow::Result<Option<String>> {
    let node_id = state.client.node_id.clone();
    let party = RoundParty {
        job_id,
        round,
        partner_id: &node_id,
        // One dataset per node: the caps compose every job this node joins.
        dataset_id: &node_id,
        cohort,
    };
    let now = unix_seconds();
    let planned = phase_charges(spec, phase, party)?
        .into_iter()
        .map(|charge| Charge::new(charge, now))
        .collect::<Result<Vec<_>, _>>()?;
    if planned.is_empty() {
        return Ok(None);
    }
    let existing = state.ledger.charges_for_partner(&node_id)?;
    let new: Vec<Charge> = planned
        .into_iter()
        .filter(|charge| !existing.iter().any(|old| old.key() == charge.key()))
        .collect();
    let refusals = check_partner_caps(&state.policy.caps(&node_id), &existing, &new)?;
    if !refusals.is_empty() {
        let reasons: Vec<String> = refusals.iter().map(ToString::to_string).collect();
        return Ok(Some(format!("partner privacy cap: {}", reasons.join("; "))));
    }
    if commit == Commit::Record {
        for charge in &new {
            state.ledger.record(charge)?;
        }
    }
    Ok(None)
}

fn unix_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64)
}

/// Computes this node's reply to a phase from its prepared data.
async fn compute_reply(
    state: &mut NodeState,
    spec: &JobSpec,
    task: &v1::Task,
    phase: Phase,
) -> anyhow::Result<Reply> {
    if !state
        .jobs
        .get(&task.job_id)
        .is_some_and(|job| &job.spec == spec)
    {
        let log = Arc::clone(&state.log);
        let prepare_spec = spec.clone();
        let rows =
            tokio::task::spawn_blocking(move || JobRows::prepare(&log, &prepare_spec)).await?;
        tracing::info!(
            node = %state.client.node_id,
            job = %task.job_id,
            train = rows.train.len(),
            holdout = rows.holdout.len(),
            "job data prepared"
        );
        state.jobs.insert(
            task.job_id.clone(),
            PreparedJob {
                spec: spec.clone(),
                rows,
                scaled: None,
            },
        );
    }
    let Some(job) = state.jobs.get_mut(&task.job_id) else {
        bail!("job data missing right after preparation");
    };
    let n_features = spec.features.n_features();
    let released = spec.privacy.statistics;
    if phase == Phase::FeatureStats {
        if released.is_some() {
            // Under customer-level DP the federation scales features
            // publicly (`job_scaling`): nothing about the data is released.
            return Ok(Reply {
                weight: 1.0,
                statistics: vec![0.0; statistics::feature_statistics_len(n_features)],
                vector: Vec::new(),
            });
        }
        let sums = job.rows.feature_sums(n_features);
        return Ok(Reply {
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
            bail!("no training rows for this job: not taking part");
        }
        let config = spec.training_config(task.round, node_seed(&state.client.node_id));
        let global_for_training = global.clone();
        let dp_sgd = spec.privacy.customers;
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
        let vector = outcome
            .parameters
            .iter()
            .zip(&global)
            .map(|(local, global)| local - global)
            .collect();
        if released.is_some() {
            // Under customer-level DP the example count and the training
            // loss would be released without noise: every partner's update
            // weighs the same, and no loss is reported.
            return Ok(Reply {
                weight: spec.uniform_weight(),
                statistics: statistics::train_statistics(0.0, 0),
                vector,
            });
        }
        Ok(Reply {
            weight: outcome.examples as f64,
            statistics: statistics::train_statistics(outcome.mean_training_loss, outcome.examples),
            vector,
        })
    } else {
        let Some(released) = released else {
            let stats =
                tokio::task::spawn_blocking(move || evaluate(&model_spec, &global, &holdout_set))
                    .await??;
            return Ok(Reply {
                weight: stats.count as f64,
                statistics: stats.to_vector(),
                vector: Vec::new(),
            });
        };
        let output = model_spec.output;
        if task.round < spec.rounds {
            // Only the final model's evaluation is released (and paid for);
            // the rounds before report nothing that depends on the data.
            return Ok(Reply {
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
        Ok(Reply {
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
    let train_set = Arc::new(to_dataset(&job.rows.train, scaling, n_features)?);
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
