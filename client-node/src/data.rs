//! Turning the partner's transaction log into a job's training and held-out
//! datasets. The demo's baselines use the same functions, so the federated,
//! centralised and partner-alone models see identical rows and splits.

use veil_features::TransactionLog;
use veil_features::{CustomerRow, FeatureSums, Scaling, build_examples, split_holdout};
use veil_job::JobSpec;
use veil_models::{Dataset, ModelError};

/// A job's rows at one partner: labelled, split, not yet scaled.
#[derive(Debug, Clone)]
pub struct JobRows {
    /// Rows the node trains on.
    pub train: Vec<CustomerRow>,
    /// Rows kept for evaluation only.
    pub holdout: Vec<CustomerRow>,
}

/// The split salt depends only on the job's seed, so every run of a job puts
/// a customer on the same side. It is not a secret: it only has to be stable.
pub fn holdout_salt(spec: &JobSpec) -> Vec<u8> {
    format!("veil-holdout-v1-{}", spec.seed).into_bytes()
}

impl JobRows {
    /// Builds labelled rows for `spec` and splits them.
    pub fn prepare(log: &TransactionLog, spec: &JobSpec) -> Self {
        let rows = build_examples(log, &spec.label, &spec.features);
        let (train, holdout) = split_holdout(rows, spec.holdout_fraction, &holdout_salt(spec));
        Self { train, holdout }
    }

    /// Additive feature statistics of the training rows, for federated scaling.
    pub fn feature_sums(&self, n_features: usize) -> FeatureSums {
        FeatureSums::from_rows(&self.train, n_features)
    }
}

/// Scales rows and packs them into a dataset. Rows without a label are
/// refused, since a silent default label would corrupt training.
pub fn to_dataset(
    rows: &[CustomerRow],
    scaling: &Scaling,
    n_features: usize,
) -> Result<Dataset, ModelError> {
    let mut features = Vec::with_capacity(rows.len() * n_features);
    let mut labels = Vec::with_capacity(rows.len());
    for row in rows {
        let mut scaled = row.features.clone();
        scaling.apply(&mut scaled);
        features.extend_from_slice(&scaled);
        labels.push(row.label.unwrap_or(f32::NAN));
    }
    Dataset::new(features, labels, n_features)
}
