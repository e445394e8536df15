//! Local scoring: the federation's exported model applied to the partner's
//! own transactions, written as `customer_id,score` for every customer.
//! Nothing is sent anywhere.

use std::path::Path;

use anyhow::Context;
use chrono::NaiveDate;
use veil_features::{CsvSource, build_scoring_rows, load_transactions};
use veil_job::export::ExportedModel;
use veil_models::predict;

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
    source: &CsvSource,
    cutoff: NaiveDate,
    output: &Path,
) -> anyhow::Result<ScoreSummary> {
    let model = ExportedModel::read(model_path)?;
    let (log, report) =
        load_transactions(source).with_context(|| format!("loading {}", source.path.display()))?;
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
        writer.write_record([row.customer_id.as_str(), &format!("{score:.6}")])?;
    }
    writer
        .flush()
        .with_context(|| format!("writing {}", output.display()))?;
    Ok(ScoreSummary {
        customers_scored: rows.len(),
        rows_rejected: report.rows_rejected,
    })
}
