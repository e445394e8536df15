//! Local scoring: the federation's exported model applied to the partner's
//! own transactions, written as `customer_id,score` for every customer.
//! Features come from the same de-identified data path as training; the raw
//! customer id is put back only in this local file. Nothing is sent anywhere.

use std::path::Path;

use anyhow::Context;
use chrono::NaiveDate;
use veil_behaviour_features::build_scoring_rows;
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
    /// The day whose history was scored.
    pub cutoff: NaiveDate,
}

/// The day whose history the scores describe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoringCutoff {
    /// The cutoff the model was trained with, as its file records it.
    AsTrained,
    /// A date the partner typed: it must equal the model's, because a
    /// cutoff one day off is the usual mistake, not a choice.
    MustMatchModel(NaiveDate),
    /// A different date on purpose (scoring today's customers with last
    /// quarter's model): allowed, and the caller is told.
    Different(NaiveDate),
}

impl ScoringCutoff {
    /// The date to score at, given the model's cutoff; a typed date that
    /// differs from the model's is refused with both dates named.
    pub fn resolve(self, model_cutoff: NaiveDate) -> anyhow::Result<NaiveDate> {
        match self {
            ScoringCutoff::AsTrained => Ok(model_cutoff),
            ScoringCutoff::MustMatchModel(cutoff) if cutoff == model_cutoff => Ok(cutoff),
            ScoringCutoff::MustMatchModel(cutoff) => anyhow::bail!(
                "--cutoff {cutoff} differs from the cutoff the model was trained with, {model_cutoff} \
                 (task.cutoff: the last day of history, {} day(s) apart). Omit --cutoff to score \
                 as of the model's cutoff, or add --different-cutoff to score as of {cutoff} on purpose",
                (cutoff - model_cutoff).num_days().abs()
            ),
            ScoringCutoff::Different(cutoff) => Ok(cutoff),
        }
    }
}

/// Scores every customer of `source` as of the resolved cutoff and writes `output`.
pub fn score(
    model_path: &Path,
    data: &PartnerDataConfig,
    cutoff: ScoringCutoff,
    output: &Path,
) -> anyhow::Result<ScoreSummary> {
    let model = ExportedModel::read(model_path)?;
    if let Some(analysis) = &model.spec.analysis {
        anyhow::bail!(
            "{} is the result of a {} job, not a trained model (use `client-node {}`)",
            model_path.display(),
            analysis.kind_name(),
            analysis.kind_name()
        );
    }
    let cutoff = cutoff
        .resolve(model.spec.label.cutoff)
        .with_context(|| format!("scoring with {}", model_path.display()))?;
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
        cutoff,
    })
}

/// Writes `customer_id,score` rows to `output`, owner-only: the file pairs
/// raw customer ids with their scores, the most sensitive thing the node
/// writes, so the umask must not decide who can read it.
fn write_scores<'a>(
    output: &Path,
    scored: impl IntoIterator<Item = (&'a str, f32)>,
) -> anyhow::Result<()> {
    let records: Vec<[String; 2]> = scored
        .into_iter()
        .map(|(customer_id, score)| [customer_id.to_owned(), format!("{score:.6}")])
        .collect();
    write_owner_only_csv(output, &["customer_id", "score"], &records)
}

/// Writes a CSV that pairs raw customer ids with results: owner-only, so
/// the umask does not decide who reads it.
pub(crate) fn write_owner_only_csv<const N: usize>(
    output: &Path,
    header: &[&str; N],
    records: &[[String; N]],
) -> anyhow::Result<()> {
    let file = veil_behaviour_features::create_owner_only(output)
        .with_context(|| format!("cannot write {}", output.display()))?;
    let mut writer = csv::Writer::from_writer(std::io::BufWriter::new(file));
    writer.write_record(header)?;
    for record in records {
        writer.write_record(record)?;
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

    #[test]
    fn a_cutoff_other_than_the_models_is_refused_unless_meant() {
        let trained = NaiveDate::from_ymd_opt(2024, 10, 2).unwrap();
        let next_day = NaiveDate::from_ymd_opt(2024, 10, 3).unwrap();
        assert_eq!(ScoringCutoff::AsTrained.resolve(trained).unwrap(), trained);
        assert_eq!(
            ScoringCutoff::MustMatchModel(trained)
                .resolve(trained)
                .unwrap(),
            trained
        );
        let refusal = ScoringCutoff::MustMatchModel(next_day)
            .resolve(trained)
            .unwrap_err()
            .to_string();
        for expected in [
            "2024-10-03",
            "2024-10-02",
            "1 day(s) apart",
            "--different-cutoff",
        ] {
            assert!(
                refusal.contains(expected),
                "{expected:?} missing from: {refusal}"
            );
        }
        assert_eq!(
            ScoringCutoff::Different(next_day).resolve(trained).unwrap(),
            next_day
        );
    }
}
