//! The de-identification report: what was done to which column and how much was found, as
//! counts and column names only, for operators (JSON, `Display`) and auditors (`auditor_summary`).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::k_anonymity::{KAnonymityMode, KAnonymityReport};
use crate::scanner::{PiiCounts, PiiKind};

/// Summary of one de-identification job. By construction it holds no data values: only column
/// names (schema, chosen by the partner), counts and levels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeidReport {
    /// Records de-identified.
    pub rows_processed: u64,
    /// Records refused as malformed.
    pub rows_rejected: u64,
    /// Columns removed from the output.
    pub columns_dropped: Vec<String>,
    /// Columns replaced by keyed pseudonyms.
    pub columns_pseudonymised: Vec<String>,
    /// Quasi-identifier columns generalised.
    pub columns_generalised: Vec<String>,
    /// Columns scanned for PII and redacted.
    pub columns_scanned: Vec<String>,
    /// PII hits per scanned column and kind.
    pub pii_hits_per_column: BTreeMap<String, PiiCounts>,
    /// The k-anonymity measurement (or an export's pass), once it has run.
    pub k_anonymity: Option<KAnonymityReport>,
}

impl DeidReport {
    /// Total PII hits per kind over all columns.
    pub fn pii_hits_total(&self) -> PiiCounts {
        let mut total = PiiCounts::default();
        for counts in self.pii_hits_per_column.values() {
            total.add(counts);
        }
        total
    }

    /// A short plain-text summary for auditors. It is built only from counts, k/l figures and the
    /// number of columns per treatment, so it can be forwarded outside the partner without
    /// revealing data values or even the partner's schema.
    pub fn auditor_summary(&self) -> String {
        let mut summary = String::new();
        let totals = self.pii_hits_total();
        summary.push_str(&format!(
            "rows processed: {}, rows rejected: {}\n",
            self.rows_processed, self.rows_rejected
        ));
        summary.push_str(&format!(
            "columns: {} dropped, {} pseudonymised, {} generalised, {} scanned for PII\n",
            self.columns_dropped.len(),
            self.columns_pseudonymised.len(),
            self.columns_generalised.len(),
            self.columns_scanned.len()
        ));
        summary.push_str("PII redacted:");
        for kind in PiiKind::ALL {
            // Placeholders rather than kind names, so the line cannot echo a column called "email".
            summary.push_str(&format!(" {}={}", kind.placeholder(), totals.get(kind)));
        }
        summary.push('\n');
        match &self.k_anonymity {
            // No hyphens here ("k-anonymity", "level-0"): the test that no generalised value such
            // as an age band reaches the summary looks for them.
            Some(k_anonymity) if k_anonymity.mode == KAnonymityMode::Measured => {
                summary.push_str(&format!(
                    "k required {}, achieved {}; l required {}, achieved {}; {}; measured on the declared generalisation, nothing suppressed: records {}; equivalence classes {}\n",
                    k_anonymity.k_required,
                    optional(k_anonymity.k_achieved),
                    optional(k_anonymity.l_required.map(|l| l as u64)),
                    optional(k_anonymity.l_achieved),
                    target_verdict(k_anonymity),
                    k_anonymity.records_in,
                    k_anonymity.equivalence_classes,
                ))
            }
            Some(k_anonymity) => summary.push_str(&format!(
                "export: k required {}, achieved {}; l required {}, achieved {}; records kept {}, suppressed {} of {}; equivalence classes {}\n",
                k_anonymity.k_required,
                optional(k_anonymity.k_achieved),
                optional(k_anonymity.l_required.map(|l| l as u64)),
                optional(k_anonymity.l_achieved),
                k_anonymity.records_kept,
                k_anonymity.records_suppressed,
                k_anonymity.records_in,
                k_anonymity.equivalence_classes,
            )),
            None => summary.push_str("k-anonymity: not run\n"),
        }
        summary
    }
}

/// Whether the measured classes reach the targets, in words.
fn target_verdict(report: &KAnonymityReport) -> &'static str {
    if report.meets_targets() {
        "targets met"
    } else {
        "below target (coarsen the declared generalisation rules)"
    }
}

fn optional(value: Option<u64>) -> String {
    value.map_or_else(|| "none".to_owned(), |value| value.to_string())
}

impl fmt::Display for DeidReport {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(formatter, "De-identification report")?;
        writeln!(
            formatter,
            "  rows processed: {}, rejected: {}",
            self.rows_processed, self.rows_rejected
        )?;
        let list = |names: &[String]| {
            if names.is_empty() {
                "(none)".to_owned()
            } else {
                names.join(", ")
            }
        };
        writeln!(
            formatter,
            "  dropped:       {}",
            list(&self.columns_dropped)
        )?;
        writeln!(
            formatter,
            "  pseudonymised: {}",
            list(&self.columns_pseudonymised)
        )?;
        writeln!(
            formatter,
            "  generalised:   {}",
            list(&self.columns_generalised)
        )?;
        writeln!(formatter, "  PII redacted per column:")?;
        for (column, counts) in &self.pii_hits_per_column {
            write!(formatter, "    {column}:")?;
            for kind in PiiKind::ALL {
                write!(formatter, " {}={}", kind.name(), counts.get(kind))?;
            }
            writeln!(formatter)?;
        }
        match &self.k_anonymity {
            Some(k_anonymity) if k_anonymity.mode == KAnonymityMode::Measured => {
                writeln!(
                    formatter,
                    "  k-anonymity (measured, not enforced): k required {}, achieved {}; l required {}, achieved {}; {}",
                    k_anonymity.k_required,
                    optional(k_anonymity.k_achieved),
                    optional(k_anonymity.l_required.map(|l| l as u64)),
                    optional(k_anonymity.l_achieved),
                    target_verdict(k_anonymity),
                )?;
                writeln!(
                    formatter,
                    "    {} records in {} equivalence classes of the declared generalisation; none suppressed or recoded",
                    k_anonymity.records_in, k_anonymity.equivalence_classes
                )?;
            }
            Some(k_anonymity) => {
                writeln!(
                    formatter,
                    "  k-anonymity (enforced for export): k required {}, achieved {}; l required {}, achieved {}",
                    k_anonymity.k_required,
                    optional(k_anonymity.k_achieved),
                    optional(k_anonymity.l_required.map(|l| l as u64)),
                    optional(k_anonymity.l_achieved),
                )?;
                writeln!(
                    formatter,
                    "    records kept {}, suppressed {} of {}, in {} equivalence classes",
                    k_anonymity.records_kept,
                    k_anonymity.records_suppressed,
                    k_anonymity.records_in,
                    k_anonymity.equivalence_classes
                )?;
                for level in &k_anonymity.generalisation_levels {
                    writeln!(
                        formatter,
                        "    {}: generalisation level {} of {}",
                        level.column, level.level, level.top_level
                    )?;
                }
            }
            None => writeln!(formatter, "  k-anonymity: not run")?,
        }
        Ok(())
    }
}
