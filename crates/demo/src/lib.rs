//! The local federation demo: generated data for three partners, a
//! coordinator and three nodes talking real gRPC on 127.0.0.1, then the same
//! model trained centrally and by each partner alone, all scored on the same
//! pooled held-out customers; then a shared segmentation of the same
//! partners' customers, and an HTML report of each job.
//!
//! The demo is its own crate so that the partner's `client-node` binary does
//! not link the coordinator, its SQLite state and its audit trail.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use client_node::config::NodeConfig;
use client_node::data::JobRows;
use client_node::local::{evaluate_on_rows, train_on_rows};
use coordinator::CoordinatorConfig;
use coordinator::operator::{self, WatchUpdate};
use veil_behaviour_features::{CsvSource, CustomerRow};
use veil_job::JobSpec;
use veil_job::export::ExportedModel;
use veil_job::file::JobFile;
use veil_job::{STANDARD_JOB, STANDARD_SEGMENT_JOB};
use veil_pki::{LocalPki, Role};
use veil_synth_data::{SynthConfig, write_partner_files};
use veil_wire::v1;

/// Demo settings; [`DemoConfig::standard`] is what the README's command runs.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Where data, configs, the model and scores are written.
    pub output_dir: PathBuf,
    /// Number of partners (and nodes).
    pub partners: usize,
    /// Seed of the synthetic data.
    pub data_seed: u64,
    /// The job file text; `{cutoff}` is replaced by the data's suggested cutoff.
    pub job_template: String,
    /// The segmentation job's text, with the same replacements.
    pub segment_template: String,
}

impl DemoConfig {
    /// The README demo: three partners, the standard job.
    pub fn standard(output_dir: PathBuf) -> Self {
        Self {
            output_dir,
            partners: 3,
            data_seed: 2026,
            job_template: STANDARD_JOB.to_owned(),
            segment_template: STANDARD_SEGMENT_JOB.to_owned(),
        }
    }
}

/// AUCs of the three ways to train, on the same pooled held-out customers.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// Federated model (the coordinator's export).
    pub federated_auc: f64,
    /// One model on all partners' pooled training rows.
    pub centralised_auc: f64,
    /// Each partner's model trained on its own rows only.
    pub partner_alone_auc: Vec<(String, f64)>,
    /// Pooled held-out customers the AUCs are measured on.
    pub holdout_customers: usize,
    /// The coordinator's per-round metrics.
    pub rounds: Vec<v1::RoundMetrics>,
    /// The exported model.
    pub model_path: PathBuf,
    /// The first partner's local score file.
    pub scores_path: PathBuf,
    /// Seconds the federated job took.
    pub federation_seconds: f64,
    /// The segmentation's profile at each k, as its report shows it.
    pub segments: Vec<veil_report::Segments>,
    /// Seconds the segmentation job took.
    pub segmentation_seconds: f64,
    /// The first partner's local segment file.
    pub segments_path: PathBuf,
    /// The churn job's HTML report.
    pub report_path: PathBuf,
    /// The segmentation job's HTML report.
    pub segments_report_path: PathBuf,
}

impl DemoReport {
    /// Mean AUC of the partner-alone models.
    pub fn mean_partner_alone_auc(&self) -> f64 {
        let n = self.partner_alone_auc.len().max(1) as f64;
        self.partner_alone_auc
            .iter()
            .map(|(_, auc)| auc)
            .sum::<f64>()
            / n
    }

    /// The figures the README states, as JSON (`veil-demo --summary-json FILE`), so that a test
    /// can check the real command's output against the README.
    pub fn summary_json(&self) -> String {
        let partners: Vec<serde_json::Value> = self
            .partner_alone_auc
            .iter()
            .map(|(partner, auc)| serde_json::json!({ "partner": partner, "auc": auc }))
            .collect();
        serde_json::json!({
            "holdout_customers": self.holdout_customers,
            "federated_auc": self.federated_auc,
            "centralised_auc": self.centralised_auc,
            "partner_alone_auc": partners,
            "mean_partner_alone_auc": self.mean_partner_alone_auc(),
            "rounds": self.rounds.len(),
            "federation_seconds": self.federation_seconds,
            "model_path": self.model_path,
            "scores_path": self.scores_path,
            "segmentation_seconds": self.segmentation_seconds,
            "segments": self.segments.iter().map(|fit| serde_json::json!({
                "k": fit.k,
                "cost": fit.cost,
                "sizes": fit.segments.iter().map(|s| s.size).collect::<Vec<_>>(),
                "label_rates": fit.segments.iter().map(|s| s.label_rate).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "segments_path": self.segments_path,
            "report_path": self.report_path,
            "segments_report_path": self.segments_report_path,
        })
        .to_string()
    }

    /// The segment table: the noised cost of every k, and the profile of
    /// the smallest k.
    pub fn segment_table(&self) -> String {
        let mut text =
            String::from("\nShared segments (federated DP k-means, customer-level ε = 1)\n");
        for fit in &self.segments {
            text.push_str(&format!(
                "  k = {:<3} noised cost {:.0}\n",
                fit.k,
                fit.cost.unwrap_or(f64::NAN)
            ));
        }
        let Some(fit) = self.segments.first() else {
            return text;
        };
        text.push_str(&format!(
            "\n  {:<12}{:>10}{:>12}",
            "segment", "customers", "churn rate"
        ));
        for feature in &fit.features {
            text.push_str(&format!("{:>16}", feature));
        }
        text.push('\n');
        for segment in &fit.segments {
            let name = segment
                .name
                .split(' ')
                .take(2)
                .collect::<Vec<_>>()
                .join(" ");
            text.push_str(&format!("  {:<12}{:>10.0}", name, segment.size));
            match segment.label_rate {
                Some(rate) => text.push_str(&format!("{:>12.3}", rate)),
                None => text.push_str(&format!("{:>12}", "-")),
            }
            for value in &segment.centroid {
                text.push_str(&format!("{:>16.2}", value));
            }
            text.push('\n');
        }
        text
    }

    /// The closing table.
    pub fn table(&self) -> String {
        let mut text = format!(
            "\nAUC on {} pooled held-out customers (same rows for every model)\n",
            self.holdout_customers
        );
        text.push_str(&format!(
            "  {:<34}{:.4}\n",
            "federated (Veil)", self.federated_auc
        ));
        text.push_str(&format!(
            "  {:<34}{:.4}\n",
            "centralised (pooled data)", self.centralised_auc
        ));
        for (partner, auc) in &self.partner_alone_auc {
            text.push_str(&format!("  {:<34}{:.4}\n", format!("{partner} alone"), auc));
        }
        text.push_str(&format!(
            "  {:<34}{:.4}\n",
            "mean of partners alone",
            self.mean_partner_alone_auc()
        ));
        text
    }
}

/// Runs the whole demo, reporting job progress through `on_update`.
pub async fn run_demo(
    config: &DemoConfig,
    on_update: impl FnMut(WatchUpdate<'_>),
) -> anyhow::Result<DemoReport> {
    let data_dir = config.output_dir.join("data");
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let synth = SynthConfig::demo(config.partners, config.data_seed);
    let files = write_partner_files(&synth, &data_dir)?;
    let names: Vec<String> = synth.partners.iter().map(|p| p.name.clone()).collect();

    // The job file, written out so an operator can reuse it with `coordinator submit`.
    let job_text = config
        .job_template
        .replace(
            "{cutoff}",
            &synth.suggested_cutoff().format("%Y-%m-%d").to_string(),
        )
        .replace("{horizon}", &synth.suggested_horizon_days().to_string());
    let job_path = config.output_dir.join("job.toml");
    std::fs::write(&job_path, &job_text)?;
    let job_wire = JobFile::parse(&job_text)
        .context("demo job file")?
        .to_wire();
    let spec = JobSpec::from_wire(&job_wire).context("demo job file")?;

    // Each demo run is a fresh federation: a fresh coordinator numbers its
    // jobs from 1 again, so the previous run's ledgers and keys go.
    let coordinator_state = config.output_dir.join("coordinator.state");
    for name in &names {
        remove_if_present(&config.output_dir.join(format!("{name}.state")))?;
    }
    remove_if_present(&coordinator_state)?;

    // A federation CA and a certificate for every member, as an operator
    // would make them with `coordinator ca init` and `coordinator ca issue`:
    // the demo runs real mTLS with role checks.
    let pki_dir = config.output_dir.join("pki");
    remove_if_present(&pki_dir)?;
    let pki = LocalPki::create(&pki_dir)?;
    let coordinator_files = pki.coordinator()?;
    let operator_files = pki.member(Role::Operator, "operator")?;
    let revocations = pki.revocations()?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = format!("https://127.0.0.1:{}", listener.local_addr()?.port());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let wait_for_stop = |mut receiver: tokio::sync::watch::Receiver<bool>| async move {
        let _ = receiver.wait_for(|stop| *stop).await;
    };
    let server = tokio::spawn(coordinator::run(
        CoordinatorConfig {
            state_dir: Some(coordinator_state.clone()),
            ..CoordinatorConfig::mtls(coordinator_files.server(revocations)?)
        },
        listener,
        wait_for_stop(stopped.clone()),
    ));

    let mut nodes = Vec::new();
    let mut sources = Vec::new();
    for (name, file) in names.iter().zip(&files) {
        let mut source = CsvSource::new(file.clone());
        source.rejects_path = Some(data_dir.join(format!("{name}.rejects.csv")));
        pki.member(Role::Node, name)?;
        let node_config = NodeConfig {
            node_id: name.clone(),
            coordinator: address.clone(),
            data: source.clone().into(),
            state_dir: Some(config.output_dir.join(format!("{name}.state"))),
            policy: Default::default(),
            tls_dir: Some(pki.folder(name)),
            insecure_dev: false,
            privacy_audit_kit: None,
        };
        write_node_config(&config.output_dir, &node_config)?;
        sources.push((name.clone(), source));
        nodes.push(tokio::spawn(client_node::node::run(
            node_config,
            wait_for_stop(stopped.clone()),
        )));
    }

    let started = Instant::now();
    let mut client = operator::connect(&address, Some(&operator_files.client()?)).await?;
    let job_id = operator::submit(&mut client, job_wire).await?;
    operator::start(&mut client, &job_id).await?;
    let status = operator::watch(&mut client, &job_id, on_update).await?;
    let federation_seconds = started.elapsed().as_secs_f64();
    if v1::JobState::try_from(status.state) != Ok(v1::JobState::Succeeded) {
        anyhow::bail!(
            "the federated job did not succeed: {}",
            status.failure_reason
        );
    }
    let model = operator::fetch_model(&mut client, &job_id).await?;
    let model_path = config.output_dir.join("model.veil");
    model.write(&model_path)?;

    // The same partners' customers, segmented together.
    let segment_text = config
        .segment_template
        .replace(
            "{cutoff}",
            &synth.suggested_cutoff().format("%Y-%m-%d").to_string(),
        )
        .replace("{horizon}", &synth.suggested_horizon_days().to_string());
    std::fs::write(config.output_dir.join("segments-job.toml"), &segment_text)?;
    let segment_wire = JobFile::parse(&segment_text)
        .context("demo segmentation job file")?
        .to_wire();
    let segmentation_started = Instant::now();
    let segment_job_id = operator::submit(&mut client, segment_wire).await?;
    operator::start(&mut client, &segment_job_id).await?;
    let segment_status = operator::watch(&mut client, &segment_job_id, |_| {}).await?;
    let segmentation_seconds = segmentation_started.elapsed().as_secs_f64();
    if v1::JobState::try_from(segment_status.state) != Ok(v1::JobState::Succeeded) {
        anyhow::bail!(
            "the segmentation job did not succeed: {}",
            segment_status.failure_reason
        );
    }
    let segmentation = operator::fetch_model(&mut client, &segment_job_id).await?;
    let segmentation_path = config.output_dir.join("segments.veil");
    segmentation.write(&segmentation_path)?;

    let _ = stop.send(true);
    for node in nodes {
        node.await??;
    }
    server.await??;

    // Reports from the coordinator's stored state, as `coordinator report` makes them.
    let report_path = config.output_dir.join("report.html");
    coordinator::report::write_report(&coordinator_state, &job_id, &report_path, false)?;
    let segments_report_path = config.output_dir.join("segments-report.html");
    coordinator::report::write_report(
        &coordinator_state,
        &segment_job_id,
        &segments_report_path,
        false,
    )?;
    let segments =
        coordinator::report::load_report(&coordinator_state, &segment_job_id, String::new(), 0)?
            .segments;
    let segments_path = config.output_dir.join(format!("{}-segments.csv", names[0]));
    client_node::analysis::segment_customers(
        &segmentation_path,
        segments.first().map(|fit| fit.k),
        &sources[0].1.clone().into(),
        &segments_path,
    )?;

    let scores_path = config.output_dir.join(format!("{}-scores.csv", names[0]));
    client_node::score::score(
        &model_path,
        &sources[0].1.clone().into(),
        client_node::score::ScoringCutoff::MustMatchModel(spec.label.cutoff),
        &scores_path,
    )?;

    let baseline_spec = spec.clone();
    let baseline_sources = sources.clone();
    let baselines =
        tokio::task::spawn_blocking(move || baselines(&baseline_spec, &baseline_sources, &model))
            .await??;
    Ok(DemoReport {
        federated_auc: baselines.federated,
        centralised_auc: baselines.centralised,
        partner_alone_auc: baselines.partner_alone,
        holdout_customers: baselines.holdout_customers,
        rounds: status.history,
        model_path,
        scores_path,
        federation_seconds,
        segments,
        segmentation_seconds,
        segments_path,
        report_path,
        segments_report_path,
    })
}

fn remove_if_present(folder: &Path) -> anyhow::Result<()> {
    match std::fs::remove_dir_all(folder) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(error).with_context(|| format!("cannot remove {}", folder.display()))
        }
        _ => Ok(()),
    }
}

fn write_node_config(dir: &Path, config: &NodeConfig) -> anyhow::Result<()> {
    let text = config.to_toml()?;
    let path = dir.join(format!("{}.node.toml", config.node_id));
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
}

struct Baselines {
    federated: f64,
    centralised: f64,
    partner_alone: Vec<(String, f64)>,
    holdout_customers: usize,
}

/// Trains the comparison models with the federated job's settings (the
/// partner-alone trainer of `client-node train-local`): the same rows and
/// split, architecture, optimiser, batch size and learning rate, and as many
/// epochs as the federation ran (rounds x local epochs).
fn baselines(
    spec: &JobSpec,
    sources: &[(String, CsvSource)],
    federated: &ExportedModel,
) -> anyhow::Result<Baselines> {
    let mut per_partner = Vec::new();
    for (name, source) in sources {
        let (log, _) = client_node::data::load_partner_data(&source.clone().into())?;
        per_partner.push((name.clone(), JobRows::prepare(&log, spec)));
    }
    let pooled_holdout: Vec<CustomerRow> = per_partner
        .iter()
        .flat_map(|(_, rows)| rows.holdout.clone())
        .collect();
    let auc_of = |model: &ExportedModel| -> anyhow::Result<f64> {
        evaluate_on_rows(model, &pooled_holdout)?
            .auc
            .context("held-out data has a single class")
    };

    let federated_auc = auc_of(federated)?;
    let pooled_train: Vec<CustomerRow> = per_partner
        .iter()
        .flat_map(|(_, rows)| rows.train.clone())
        .collect();
    let centralised = auc_of(&train_on_rows(spec, &pooled_train)?)?;
    let partner_alone = per_partner
        .iter()
        .map(|(name, rows)| Ok((name.clone(), auc_of(&train_on_rows(spec, &rows.train)?)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Baselines {
        federated: federated_auc,
        centralised,
        partner_alone,
        holdout_customers: pooled_holdout.len(),
    })
}
