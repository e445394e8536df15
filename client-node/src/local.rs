//! Training and evaluation at one partner, with no coordinator: the yardstick
//! a partner measures the federation against. `client-node train-local`
//! trains the job's model on the partner's own training customers only;
//! `client-node evaluate` scores any model file (federated or local) on the
//! partner's own held-out customers. Both use the node's data path and the
//! job's split, so the two models are compared on the same customers. The
//! demo's baselines are built from the same functions.
//!
//! Nothing here is sent anywhere, so nothing here is charged: the figures
//! stay with the partner.

use std::path::Path;

use anyhow::Context;
use veil_behaviour_features::{CustomerRow, FeatureSums, Scaling};
use veil_job::JobSpec;
use veil_job::export::ExportedModel;
use veil_models::{OutputKind, exact_auc, predict, train};
use veil_partner_data::PartnerDataConfig;

use crate::data::{JobRows, load_partner_data, to_dataset};

/// The job id recorded in a model file trained by [`train_local`], so a
/// local model is never mistaken for a federated export.
pub const LOCAL_JOB_ID: &str = "local";

/// How a model did on a set of held-out customers.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalEvaluation {
    /// Held-out customers scored.
    pub customers: usize,
    /// Binary tasks: exact AUC, `None` if the held-out customers have one class.
    pub auc: Option<f64>,
    /// Mean loss (binary cross-entropy or squared error).
    pub mean_loss: Option<f64>,
    /// Regression tasks: root mean squared error.
    pub rmse: Option<f64>,
}

/// Trains `spec`'s model on `rows` alone, as long as the federation would
/// have trained it (rounds × local epochs), from the job's initial model and
/// with the rows' own scaling. DP-SGD is not applied: the model never leaves.
pub fn train_on_rows(spec: &JobSpec, rows: &[CustomerRow]) -> anyhow::Result<ExportedModel> {
    let n_features = spec.features.n_features();
    let model_spec = spec.model_spec();
    let scaling = Scaling::from_sums(&FeatureSums::from_rows(rows, n_features))
        .context("the training customers' feature scaling")?;
    let data = to_dataset(rows, &scaling, n_features)?;
    let mut config = spec.training_config(0, 0);
    config.epochs = spec.training.local_epochs * spec.rounds as usize;
    // No global model to stay close to.
    config.proximal_mu = 0.0;
    let initial = model_spec.initial_parameters(spec.seed);
    let outcome = train(&model_spec, &initial, &data, &config)?;
    Ok(ExportedModel {
        job_id: LOCAL_JOB_ID.to_owned(),
        spec: spec.clone(),
        scaling,
        parameters: outcome.parameters,
        final_metrics: None,
    })
}

/// Scores `rows` with `model` and measures it against their labels.
pub fn evaluate_on_rows(
    model: &ExportedModel,
    rows: &[CustomerRow],
) -> anyhow::Result<LocalEvaluation> {
    let n_features = model.spec.features.n_features();
    let model_spec = model.spec.model_spec();
    let data = to_dataset(rows, &model.scaling, n_features)?;
    let stats = veil_models::evaluate(&model_spec, &model.parameters, &data)?;
    let auc = match model_spec.output {
        OutputKind::Binary => {
            let scores = predict(&model_spec, &model.parameters, &data.features)?;
            let labels: Vec<f32> = rows
                .iter()
                .map(|row| row.label.unwrap_or(f32::NAN))
                .collect();
            exact_auc(&scores, &labels)
        }
        OutputKind::Regression => None,
    };
    Ok(LocalEvaluation {
        customers: rows.len(),
        auc,
        mean_loss: stats.mean_loss(),
        rmse: matches!(model_spec.output, OutputKind::Regression)
            .then(|| stats.rmse())
            .flatten(),
    })
}

/// `client-node train-local`: loads the partner's data, splits it as the
/// job would, and trains on the training customers only.
pub fn train_local(spec: &JobSpec, data: &PartnerDataConfig) -> anyhow::Result<ExportedModel> {
    anyhow::ensure!(
        spec.analysis.is_none(),
        "job '{}' is an analysis; it trains no model to compare with",
        spec.name
    );
    let (log, _) = load_partner_data(data)?;
    let rows = JobRows::prepare(&log, spec);
    anyhow::ensure!(
        !rows.train.is_empty(),
        "{} has no customers with a label for this job (task.cutoff {} is the last day of history; the label window is the {} days after it)",
        data.describe(),
        spec.label.cutoff,
        spec.label.horizon_days
    );
    train_on_rows(spec, &rows.train)
}

/// `client-node evaluate`: the model in `model_path` on this partner's
/// held-out customers, split by the model's own job (seed and
/// `holdout_fraction`), so a federated and a local model of the same job are
/// measured on the same customers.
pub fn evaluate_local(
    model_path: &Path,
    data: &PartnerDataConfig,
) -> anyhow::Result<LocalEvaluation> {
    let model = ExportedModel::read(model_path)?;
    anyhow::ensure!(
        model.spec.analysis.is_none(),
        "{} is the result of an analysis job, not a trained model; there is nothing to evaluate",
        model_path.display()
    );
    let (log, _) = load_partner_data(data)?;
    let rows = JobRows::prepare(&log, &model.spec);
    anyhow::ensure!(
        !rows.holdout.is_empty(),
        "{}: the model's job holds out no customers here (holdout_fraction {}); nothing to evaluate on",
        model_path.display(),
        model.spec.holdout_fraction
    );
    evaluate_on_rows(&model, &rows.holdout)
        .with_context(|| format!("evaluating {}", model_path.display()))
}
