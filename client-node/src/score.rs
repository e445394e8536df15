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
    let scored = rows.iter().zip(&scores).map(|(row, score)| {
        // Every pseudonym in the log came with its raw id; the pseudonym is only a
        // defensive fallback and is as local as the raw id.
        let customer_id = local_ids.get(&row.customer_id).unwrap_or(&row.customer_id);
        (customer_id.as_str(), *score)
    });
    write_scores(output, scored)?;
    Ok(ScoreSummary {
        customers_scored: rows.len(),
        rows_rejected: report.rows_rejected(),
    })
}

/// Writes `customer_id,score` rows to `output`, owner-only: the file pairs
/// raw customer ids with their scores, the most sensitive thing the node
/// writes, so the umask must not decide who can read it.
fn write_scores<'a>(
    output: &Path,
    scored: impl IntoIterator<Item = (&'a str, f32)>,
) -> anyhow::Result<()> {
    let file = veil_features::create_owner_only(output)
        .with_context(|| format!("cannot write {}", output.display()))?;
    let mut writer = csv::Writer::from_writer(std::io::BufWriter::new(file));
    writer.write_record(["customer_id", "score"])?;
    for (customer_id, score) in scored {
        writer.write_record([customer_id, &format!("{score:.6}")])?;
    }
    writer
        .flush()
        .with_context(|| format!("writing {}", output.display()))?;
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_score_file_is_owner_only() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let output = dir.path().join("scores.csv");
        write_scores(&output, [("C-1", 0.25_f32), ("C-2", 0.75)])?;
        let mode = std::fs::metadata(&output)?.permissions().mode();
        assert_eq!(mode & 0o077, 0, "score file mode {mode:o}");
        assert_eq!(
            std::fs::read_to_string(&output)?,
            "customer_id,score\nC-1,0.250000\nC-2,0.750000\n"
        );
        Ok(())
    }
}
