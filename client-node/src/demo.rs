//! The local federation demo: generated data for three partners, a
//! coordinator and three nodes talking real gRPC on 127.0.0.1, then the same
//! model trained centrally and by each partner alone, all scored on the same
//! pooled held-out customers.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use coordinator::CoordinatorConfig;
use coordinator::operator::{self, WatchUpdate};
use veil_features::{CsvSource, CustomerRow, FeatureSums, Scaling};
use veil_job::JobSpec;
use veil_job::export::ExportedModel;
use veil_job::file::JobFile;
use veil_models::{exact_auc, predict, train};
use veil_pki::{
    CertificateRequest, FederationCa, ISSUED_FILE, IssuanceJournal, MemberFiles, REVOCATIONS_FILE,
    RevocationList, Role, Validity,
};
use veil_synth::{SynthConfig, write_partner_files};
use veil_wire::v1;

use crate::config::NodeConfig;
use crate::data::{JobRows, to_dataset};

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
}

/// The demo's job: churn, MLP(64,32), FedAvg with Adam locally.
pub const STANDARD_JOB: &str = r#"
name = "demo-churn"
rounds = 12
min_participants = 3
max_participants = 3
holdout_fraction = 0.25
seed = 7

[task]
kind = "churn"
cutoff = "{cutoff}"
horizon_days = {horizon}

[model]
kind = "mlp"
hidden = [64, 32]

[training]
local_epochs = 3
batch_size = 64
learning_rate = 0.025
optimizer = "adam"

[strategy]
kind = "fedavg"

# Secure aggregation (SecAgg+) is the default; shown here for reference.
[aggregation]
mode = "secure"
clip_range = 1.0
modulus_bits = 32
max_weight = 100000

# Customer-level DP-SGD at every partner: full-batch Poisson steps (q = 1),
# 3 per round, sigma = 8.7, clip 5; with the noisy evaluation of the final
# model (statistics noise 5, the default) and nothing else released:
# epsilon = 2.995 per partner over 12 rounds (delta = 1e-5). Partner-level
# noise is off: with three partners no noise level gives both a useful model
# and a meaningful partner-level epsilon.
[privacy]
customers = "dp-sgd"
customer_noise_multiplier = 8.7
customer_clip_norm = 5.0
customer_sampling_rate = 1.0
customer_epsilon = 3.5
partners = "off"
delta = 1e-5

[timeouts]
feature_stats_secs = 60
train_secs = 120
evaluate_secs = 60
"#;

impl DemoConfig {
    /// The README demo: three partners, the standard job.
    pub fn standard(output_dir: PathBuf) -> Self {
        Self {
            output_dir,
            partners: 3,
            data_seed: 2026,
            job_template: STANDARD_JOB.to_owned(),
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
            state_dir: Some(coordinator_state),
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
        };
        write_node_config(&config.output_dir, &node_config)?;
        sources.push((name.clone(), source));
        nodes.push(tokio::spawn(crate::node::run(
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

    let _ = stop.send(true);
    for node in nodes {
        node.await??;
    }
    server.await??;

    let scores_path = config.output_dir.join(format!("{}-scores.csv", names[0]));
    crate::score::score(
        &model_path,
        &sources[0].1.clone().into(),
        spec.label.cutoff,
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
    })
}

/// A throwaway federation CA in one folder, with every member's folder
/// beside it (`<dir>/ca`, `<dir>/<name>`), for local federations: the demo
/// and the benchmarks. Production CAs are made with `coordinator ca`.
pub struct LocalPki {
    ca: FederationCa,
    dir: PathBuf,
    validity: Validity,
}

impl LocalPki {
    /// A new CA in `dir/ca`, and certificates valid for a week.
    pub fn create(dir: &Path) -> anyhow::Result<Self> {
        let validity = Validity::starting_now(Duration::from_secs(7 * 86_400));
        let ca = FederationCa::create("veil-local", validity)?;
        ca.save(&dir.join("ca"))?;
        Ok(Self {
            ca,
            dir: dir.to_owned(),
            validity,
        })
    }

    /// The coordinator's folder, valid for 127.0.0.1 and localhost.
    pub fn coordinator(&self) -> anyhow::Result<MemberFiles> {
        self.issue(CertificateRequest::coordinator(
            "coordinator",
            vec!["127.0.0.1".to_owned(), "localhost".to_owned()],
            self.validity,
        ))
    }

    /// A node's, operator's or auditor's folder.
    pub fn member(&self, role: Role, name: &str) -> anyhow::Result<MemberFiles> {
        self.issue(CertificateRequest::member(role, name, self.validity))
    }

    /// The member folder of `name` (for a node's `tls_dir`).
    pub fn folder(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The CA's revocation list, for the coordinator to check.
    pub fn revocations(&self) -> anyhow::Result<RevocationList> {
        Ok(RevocationList::open(
            self.dir.join("ca").join(REVOCATIONS_FILE),
        )?)
    }

    fn issue(&self, request: CertificateRequest) -> anyhow::Result<MemberFiles> {
        let folder = self.dir.join(&request.name);
        let (files, issued) = MemberFiles::issue_into(&self.ca, &request, &folder)?;
        // As `coordinator ca issue` does: the coordinator audits it from the journal.
        IssuanceJournal::at(self.dir.join("ca").join(ISSUED_FILE)).record(&issued)?;
        Ok(files)
    }
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

/// Trains the comparison models with the federated job's settings: the same
/// rows and split, architecture, optimiser, batch size and learning rate,
/// and as many epochs as the federation ran (rounds x local epochs).
fn baselines(
    spec: &JobSpec,
    sources: &[(String, CsvSource)],
    federated: &ExportedModel,
) -> anyhow::Result<Baselines> {
    let n_features = spec.features.n_features();
    let model_spec = spec.model_spec();
    let mut per_partner = Vec::new();
    for (name, source) in sources {
        let (log, _) = crate::data::load_partner_data(&source.clone().into())?;
        per_partner.push((name.clone(), JobRows::prepare(&log, spec)));
    }
    let pooled_holdout: Vec<CustomerRow> = per_partner
        .iter()
        .flat_map(|(_, rows)| rows.holdout.clone())
        .collect();
    let labels: Vec<f32> = pooled_holdout
        .iter()
        .map(|r| r.label.unwrap_or(f32::NAN))
        .collect();

    let auc_of = |parameters: &[f32], scaling: &Scaling| -> anyhow::Result<f64> {
        let holdout = to_dataset(&pooled_holdout, scaling, n_features)?;
        let scores = predict(&model_spec, parameters, &holdout.features)?;
        exact_auc(&scores, &labels).context("held-out data has a single class")
    };
    let train_alone = |rows: &[CustomerRow]| -> anyhow::Result<f64> {
        let scaling = Scaling::from_sums(&FeatureSums::from_rows(rows, n_features))?;
        let data = to_dataset(rows, &scaling, n_features)?;
        let mut config = spec.training_config(0, 0);
        config.epochs = spec.training.local_epochs * spec.rounds as usize;
        config.proximal_mu = 0.0;
        let initial = model_spec.initial_parameters(spec.seed);
        let outcome = train(&model_spec, &initial, &data, &config)?;
        auc_of(&outcome.parameters, &scaling)
    };

    let federated_auc = auc_of(&federated.parameters, &federated.scaling)?;
    let pooled_train: Vec<CustomerRow> = per_partner
        .iter()
        .flat_map(|(_, rows)| rows.train.clone())
        .collect();
    let centralised = train_alone(&pooled_train)?;
    let partner_alone = per_partner
        .iter()
        .map(|(name, rows)| Ok((name.clone(), train_alone(&rows.train)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Baselines {
        federated: federated_auc,
        centralised,
        partner_alone,
        holdout_customers: pooled_holdout.len(),
    })
}

#[cfg(test)]
mod tests {
    use veil_ledger::{Charge, PrivacyUnit};

    use super::*;

    /// The demo job's customer-level ε per partner over all its rounds,
    /// statistics releases included, as the ledgers will compose it.
    fn demo_customer_epsilon(template: &str) -> f64 {
        let text = template
            .replace("{cutoff}", "2025-06-30")
            .replace("{horizon}", "60");
        let spec = JobSpec::from_wire(&JobFile::parse(&text).unwrap().to_wire()).unwrap();
        let party = veil_job::RoundParty {
            job_id: "demo",
            round: 1,
            partner_id: "partner-0",
            dataset_id: "partner-0",
            cohort: 3,
        };
        let charges: Vec<Charge> = veil_job::job_charges(&spec, party)
            .unwrap()
            .into_iter()
            .filter(|charge| charge.unit == PrivacyUnit::Customer)
            .map(|charge| Charge::new(charge, 0).unwrap())
            .collect();
        // Every round, and the final evaluation under its own key.
        assert_eq!(charges.len(), spec.rounds as usize + 1);
        let mut accountant = veil_accounting::Accountant::new();
        for charge in &charges {
            charge.mechanism.compose_into(&mut accountant).unwrap();
        }
        let report = accountant.epsilon(spec.privacy.delta).unwrap();
        report.epsilon_pld.min(report.epsilon_rdp)
    }

    #[test]
    fn the_demo_spends_at_most_three_customer_epsilon_per_partner() {
        let epsilon = demo_customer_epsilon(STANDARD_JOB);
        println!("demo customer-level epsilon per partner: {epsilon:.4}");
        assert!(epsilon <= 3.0, "{epsilon}");
        assert!(epsilon > 2.5, "the demo should use its budget: {epsilon}");
    }
}
