//! Local scoring: the federation's exported model applied to the partner's
//! own transactions, written as `customer_id,score` for every customer.
//! Features come from the same de-identified data path as training; the raw
//! customer id is put back only in this local file. Nothing is sent anywhere.

use std::path::Path;

use anyhow::Context;
use chrono::NaiveDate;
use veil_features::build_scoring_rows;
use veil_job::export::ExportedModel;
use veil_models::predict;
use veil_partner_data::{PartnerDataConfig, load_partner_data_with_local_ids};

/// What a scoring run produced.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreSummary {
    /// Customers scored (every customer with a transaction up to the cutoff).
    pub customers_scored: usize,
    /// Rows rejected while reading the log.
    pub rows_rejected: u64,
}

/// Scores every customer of `source` as of `cutoff` and writes `output`.
pub fn score(
    model_path: &Path,
    data: &PartnerDataConfig,
    cutoff: NaiveDate,
    output: &Path,
) -> anyhow::Result<ScoreSummary> {
    let model = ExportedModel::read(model_path)?;
    let (data, local_ids) = load_partner_data_with_local_ids(data)
        .with_context(|| format!("loading {}", data.describe()))?;
    let (log, report) = (data.log, data.report);
    let features = &model.spec.features;
    let n_features = features.n_features();
    let rows = build_scoring_rows(&log, cutoff, features);
    let mut matrix = Vec::with_capacity(rows.len() * n_features);
    for row in &rows {
        let mut scaled = row.features.clone();
        model.scaling.apply(&mut scaled);
        matrix.extend_from_slice(&scaled);
    }
    let scores = predict(&model.spec.model_spec(), &model.parameters, &matrix)
        .with_context(|| format!("scoring with {}", model_path.display()))?;
    let mut writer = csv::Writer::from_path(output)
        .with_context(|| format!("cannot write {}", output.display()))?;
    writer.write_record(["customer_id", "score"])?;
    for (row, score) in rows.iter().zip(&scores) {
        // Every pseudonym in the log came with its raw id; the pseudonym is only a
        // defensive fallback and is as local as the raw id.
        let customer_id = local_ids.get(&row.customer_id).unwrap_or(&row.customer_id);
        writer.write_record([customer_id.as_str(), &format!("{score:.6}")])?;
    }
    writer
        .flush()
        .with_context(|| format!("writing {}", output.display()))?;
    Ok(ScoreSummary {
        customers_scored: rows.len(),
        rows_rejected: report.rows_rejected(),
    })
}
