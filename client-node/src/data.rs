//! The node's data path: the partner's sources are read and de-identified
//! (pseudonymised customer ids, PII redacted, quasi-identifiers generalised
//! and held to k-anonymity) *before* any feature is derived, then turned into a
//! job's training and held-out datasets. The demo's baselines use the same
//! functions, so the federated, centralised and partner-alone models see
//! identical rows and splits.

use anyhow::Context;
use veil_behaviour_features::{
    CustomerRow, FeatureSums, RowError, Scaling, TransactionLog, build_examples, split_holdout,
};
use veil_job::JobSpec;
use veil_models::{Dataset, ModelError};
use veil_partner_data::{PartnerDataConfig, PartnerDataReport};

/// Counts from loading the partner's data, for logs; the full report is in
/// the configured report folder.
#[derive(Debug, Clone)]
pub struct LoadSummary {
    /// Rows accepted over all sources.
    pub rows_accepted: u64,
    /// Rows rejected over all sources (each in its rejects file).
    pub rows_rejected: u64,
    /// The first rejections of each source; they quote only de-identified values.
    pub sample_errors: Vec<RowError>,
    /// Everything the load and de-identification did.
    pub report: PartnerDataReport,
}

/// Reads and de-identifies the partner's data. The returned log is keyed by
/// pseudonyms: raw customer ids and other direct identifiers never reach
/// feature derivation, training or the network.
pub fn load_partner_data(
    config: &PartnerDataConfig,
) -> anyhow::Result<(TransactionLog, LoadSummary)> {
    let data = veil_partner_data::load_partner_data(config)
        .with_context(|| format!("loading {}", config.describe()))?;
    let summary = LoadSummary {
        rows_accepted: data.report.rows_accepted(),
        rows_rejected: data.report.rows_rejected(),
        sample_errors: data.report.sample_errors(),
        report: data.report,
    };
    Ok((data.log, summary))
}

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
    /// Builds labelled rows for `spec` and splits them. An analysis that
    /// reads the transaction log itself (RFM, lifetime value, basket rules)
    /// gets none: deriving every customer's behaviour features would cost
    /// it the most time of its whole job and be thrown away.
    pub fn prepare(log: &TransactionLog, spec: &JobSpec) -> Self {
        if spec
            .analysis
            .as_ref()
            .is_some_and(|analysis| !analysis.reads_feature_rows())
        {
            return Self {
                train: Vec::new(),
                holdout: Vec::new(),
            };
        }
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
