//! The load's report: per-source row counts, samples of rejected rows and the de-identification
//! report, plus the join's counts; written locally as JSON and text, with a value-free summary
//! for auditors.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use veil_behaviour_features::{RowError, create_owner_only};
use veil_de_identification::DeidReport;

use crate::error::PartnerDataError;

/// File names inside the report folder.
pub const REPORT_JSON: &str = "deid-report.json";
/// The human-readable report.
pub const REPORT_TEXT: &str = "deid-report.txt";
/// The summary that may be shared with auditors: counts only, no values, no column names.
pub const AUDITOR_SUMMARY: &str = "deid-auditor-summary.txt";

/// What happened to one input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceReport {
    /// The input's description (a path or a table, never a connection URL).
    pub input: String,
    /// Data rows read.
    pub rows_read: u64,
    /// Rows accepted; `rows_accepted + rows_rejected == rows_read`.
    pub rows_accepted: u64,
    /// Rows rejected, each written to the rejects file when one is configured.
    pub rows_rejected: u64,
    /// Where rejected rows were written.
    pub rejects_path: Option<PathBuf>,
    /// The first few rejections, in input order. Messages quote only de-identified values.
    pub sample_errors: Vec<RowError>,
    /// What de-identification did to the source's columns.
    pub deid: Option<DeidReport>,
}

impl SourceReport {
    pub(crate) fn new(input: String, rejects_path: Option<PathBuf>) -> Self {
        Self {
            input,
            rows_read: 0,
            rows_accepted: 0,
            rows_rejected: 0,
            rejects_path,
            sample_errors: Vec::new(),
            deid: None,
        }
    }
}

/// How the sources were joined on the pseudonymised customer id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinReport {
    /// Customers with at least one accepted transaction.
    pub customers_with_transactions: u64,
    /// Customers in the final log: every customer with a transaction, since no customer is
    /// left out because of the others' profile rows.
    pub customers_kept: u64,
    /// Of those, customers with a profile row.
    pub customers_with_profile: u64,
    /// Customers kept without a profile row (their profile features are "unknown").
    pub customers_without_profile: u64,
    /// Profile rows whose customer has no transaction.
    pub profiles_without_transactions: u64,
}

/// Everything one load did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartnerDataReport {
    /// The transaction log.
    pub transactions: SourceReport,
    /// The profile table, when configured.
    pub profile: Option<SourceReport>,
    /// The join.
    pub join: JoinReport,
}

impl PartnerDataReport {
    /// Rows accepted over all sources.
    pub fn rows_accepted(&self) -> u64 {
        self.sources().map(|source| source.rows_accepted).sum()
    }

    /// Rows rejected over all sources.
    pub fn rows_rejected(&self) -> u64 {
        self.sources().map(|source| source.rows_rejected).sum()
    }

    /// The sample rejections of every source.
    pub fn sample_errors(&self) -> Vec<RowError> {
        self.sources()
            .flat_map(|source| source.sample_errors.iter().cloned())
            .collect()
    }

    fn sources(&self) -> impl Iterator<Item = &SourceReport> {
        std::iter::once(&self.transactions).chain(self.profile.as_ref())
    }

    /// The summary for auditors: row and customer counts, treatments per column count, PII
    /// hits per kind, and the k and l achieved. No values and no column names.
    pub fn auditor_summary(&self) -> String {
        let mut summary = String::new();
        for (label, source) in [
            ("transactions", Some(&self.transactions)),
            ("profile", self.profile.as_ref()),
        ] {
            let Some(source) = source else { continue };
            summary.push_str(&format!(
                "[{label}] rows read {}, accepted {}, rejected {}\n",
                source.rows_read, source.rows_accepted, source.rows_rejected
            ));
            if let Some(deid) = &source.deid {
                summary.push_str(&deid.auditor_summary());
            }
        }
        let join = &self.join;
        summary.push_str(&format!(
            "[join] customers kept {}, with profile {}, without profile {}, profiles without transactions {}\n",
            join.customers_kept,
            join.customers_with_profile,
            join.customers_without_profile,
            join.profiles_without_transactions
        ));
        summary
    }

    /// Writes `deid-report.json`, `deid-report.txt` and `deid-auditor-summary.txt` into
    /// `folder`, creating it if needed.
    pub fn write(&self, folder: &Path) -> Result<(), PartnerDataError> {
        let report_error = |path: &Path| {
            let path = path.to_owned();
            move |error| PartnerDataError::Report { path, error }
        };
        std::fs::create_dir_all(folder).map_err(report_error(folder))?;
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other);
        let files = [
            (
                REPORT_JSON,
                json.map_err(report_error(&folder.join(REPORT_JSON)))?,
            ),
            (REPORT_TEXT, self.to_string()),
            (AUDITOR_SUMMARY, self.auditor_summary()),
        ];
        for (name, text) in files {
            let path = folder.join(name);
            // The reports quote samples of rejected rows (de-identified values,
            // but still partner rows), so they are owner-only; the auditor
            // summary holds counts only and is written the same way because
            // sharing it is a deliberate copy, not a side effect of the umask.
            let mut file = create_owner_only(&path).map_err(report_error(&path))?;
            file.write_all(text.as_bytes())
                .map_err(report_error(&path))?;
        }
        Ok(())
    }
}

impl fmt::Display for PartnerDataReport {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (label, source) in [
            ("Transactions", Some(&self.transactions)),
            ("Profile", self.profile.as_ref()),
        ] {
            let Some(source) = source else { continue };
            writeln!(formatter, "{label}: {}", source.input)?;
            writeln!(
                formatter,
                "  rows read {}, accepted {}, rejected {}{}",
                source.rows_read,
                source.rows_accepted,
                source.rows_rejected,
                source
                    .rejects_path
                    .as_ref()
                    .map(|path| format!(" (see {})", path.display()))
                    .unwrap_or_default()
            )?;
            for error in &source.sample_errors {
                writeln!(formatter, "  rejected: {error}")?;
            }
            if let Some(deid) = &source.deid {
                for line in deid.to_string().lines() {
                    writeln!(formatter, "  {line}")?;
                }
            }
        }
        let join = &self.join;
        writeln!(formatter, "Join on pseudonymised customer id")?;
        writeln!(
            formatter,
            "  customers with transactions {}, kept {} ({} with a profile, {} without)",
            join.customers_with_transactions,
            join.customers_kept,
            join.customers_with_profile,
            join.customers_without_profile
        )?;
        writeln!(
            formatter,
            "  profiles without transactions: {}",
            join.profiles_without_transactions
        )
    }
}
