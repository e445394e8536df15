//! The node's main loop: register, long-poll for tasks, run them against the
//! partner's data, submit, repeat, until shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tonic::Code;
use veil_features::{Scaling, TransactionLog};
use veil_job::{JobSpec, statistics};
use veil_models::{Dataset, evaluate, train};
use veil_wire::v1;

use crate::config::NodeConfig;
use crate::data::{JobRows, to_dataset};
use crate::transport::{NodeClient, is_transient};

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

/// Loads the partner's log, then serves tasks until `shutdown` resolves.
pub async fn run(config: NodeConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
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
    let log = Arc::new(log);
    let client = NodeClient::new(&config.coordinator, &config.node_id)?;
    tokio::pin!(shutdown);
    tokio::select! {
        result = serve(client, log) => result,
        _ = &mut shutdown => {
            tracing::info!(node = %config.node_id, "node stopping");
            Ok(())
        }
    }
}

async fn serve(mut client: NodeClient, log: Arc<TransactionLog>) -> anyhow::Result<()> {
    let heartbeat_interval = register_with_backoff(&mut client).await;
    let heartbeat = tokio::spawn(heartbeat_loop(client.clone(), heartbeat_interval));
    let mut jobs: HashMap<String, PreparedJob> = HashMap::new();
    let mut backoff = Duration::from_millis(200);
    let result = loop {
        match client.fetch_task(LONG_POLL).await {
            Ok(Some(task)) => {
                backoff = Duration::from_millis(200);
                let job_id = task.job_id.clone();
                if let Err(error) = handle_task(&mut client, &log, &mut jobs, task).await {
                    tracing::warn!(node = %client.node_id, job = %job_id, error = %format!("{error:#}"), "task failed");
                }
            }
            Ok(None) => {}
            Err(status) if status.code() == Code::FailedPrecondition => {
                // The coordinator forgot us (it restarted): register again.
                register_with_backoff(&mut client).await;
            }
            Err(status) if is_transient(&status) => {
                tracing::warn!(node = %client.node_id, code = ?status.code(), "coordinator unreachable, retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                register_with_backoff(&mut client).await;
            }
            Err(status) => break Err(anyhow::anyhow!("fetching tasks: {}", status.message())),
        }
    };
    heartbeat.abort();
    result
}

/// Registers, retrying with exponential backoff until the coordinator answers.
async fn register_with_backoff(client: &mut NodeClient) -> Duration {
    let mut delay = Duration::from_millis(100);
    loop {
        match client.register().await {
            Ok(response) => {
                tracing::info!(node = %client.node_id, "registered with the coordinator");
                return Duration::from_millis(u64::from(response.heartbeat_interval_ms.max(500)));
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

async fn handle_task(
    client: &mut NodeClient,
    log: &Arc<TransactionLog>,
    jobs: &mut HashMap<String, PreparedJob>,
    task: v1::Task,
) -> anyhow::Result<()> {
    let wire_spec = task.spec.as_ref().context("task carries no job spec")?;
    let spec = JobSpec::from_wire(wire_spec).context("task carries an invalid job spec")?;
    if !jobs.get(&task.job_id).is_some_and(|job| job.spec == spec) {
        let log = Arc::clone(log);
        let prepare_spec = spec.clone();
        let rows =
            tokio::task::spawn_blocking(move || JobRows::prepare(&log, &prepare_spec)).await?;
        tracing::info!(
            node = %client.node_id,
            job = %task.job_id,
            train = rows.train.len(),
            holdout = rows.holdout.len(),
            "job data prepared"
        );
        jobs.insert(
            task.job_id.clone(),
            PreparedJob {
                spec: spec.clone(),
                rows,
                scaled: None,
            },
        );
    }
    let Some(job) = jobs.get_mut(&task.job_id) else {
        bail!("job data missing right after preparation");
    };
    let n_features = spec.features.n_features();
    let mut header = v1::ResultHeader {
        node_id: client.node_id.clone(),
        job_id: task.job_id.clone(),
        round: task.round,
        phase: task.phase,
        weight: 0.0,
        statistics: Vec::new(),
        vector_length: 0,
    };
    let mut vector = Vec::new();
    match v1::Phase::try_from(task.phase) {
        Ok(v1::Phase::FeatureStats) => {
            let sums = job.rows.feature_sums(n_features);
            header.weight = sums.count as f64;
            header.statistics = statistics::feature_sums_to_vector(&sums);
        }
        Ok(phase @ (v1::Phase::Train | v1::Phase::Evaluate)) => {
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
            let global = client
                .download_model(&task.job_id, task.model_version, task.parameter_count)
                .await?;
            let model_spec = spec.model_spec();
            if phase == v1::Phase::Train {
                if train_set.n_rows() == 0 {
                    bail!("no training rows for this job: not taking part");
                }
                let config = spec.training_config(task.round, node_seed(&client.node_id));
                let global_for_training = global.clone();
                let outcome = tokio::task::spawn_blocking(move || {
                    train(&model_spec, &global_for_training, &train_set, &config)
                })
                .await??;
                vector = outcome
                    .parameters
                    .iter()
                    .zip(&global)
                    .map(|(local, global)| local - global)
                    .collect();
                header.weight = outcome.examples as f64;
                header.statistics =
                    statistics::train_statistics(outcome.mean_training_loss, outcome.examples);
                header.vector_length = vector.len() as u64;
            } else {
                let stats = tokio::task::spawn_blocking(move || {
                    evaluate(&model_spec, &global, &holdout_set)
                })
                .await??;
                header.weight = stats.count as f64;
                header.statistics = stats.to_vector();
            }
        }
        _ => bail!("unknown phase value {}", task.phase),
    }
    let phase_name = v1::Phase::try_from(task.phase).map_or("unknown", |p| p.as_str_name());
    match client.submit(header, &vector).await {
        Ok(duplicate) => {
            tracing::info!(node = %client.node_id, job = %task.job_id, round = task.round, phase = phase_name, duplicate, "result submitted");
            Ok(())
        }
        Err(status) => bail!(
            "round {} {phase_name}: result refused: {}",
            task.round,
            status.message()
        ),
    }
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
