//! A partner's data at the door of its node: read the transaction log and the optional customer
//! profile table (CSV, Parquet or PostgreSQL), check every row against the declared column
//! roles, de-identify every row *before* any value is interpreted, enforce k-anonymity on the
//! profile's quasi-identifiers, join the two on the pseudonymised customer id, and write the
//! de-identification report. The result is a [`TransactionLog`] keyed by pseudonyms.
//!
//! What it does *not* do: the detectors, pseudonyms, generalisation and k-anonymity themselves
//! live in `veil-deid`; the features and the legacy single-file loader in `veil-features`; the
//! node's configuration file and networking in `client-node`.

mod config;
mod error;
mod grouping;
mod pipeline;
mod report;
mod source;

use std::collections::{HashMap, HashSet};

pub use config::{
    DEFAULT_MAX_REJECT_FRACTION, DeidSettings, Input, PartnerDataConfig, SourceConfig,
    TextEncoding, UndeclaredColumns,
};
pub use error::PartnerDataError;
pub use pipeline::MAX_SAMPLE_ERRORS;
pub use report::{
    AUDITOR_SUMMARY, JoinReport, PartnerDataReport, REPORT_JSON, REPORT_TEXT, SourceReport,
};
pub use source::sniff_delimiter;

use veil_deid::GeneralisationPolicy;
use veil_features::{CustomerProfile, Gender, TransactionLog};

use crate::pipeline::{ProfileRows, SourceKind, SourceRows, read_source};

/// The de-identified data of one partner.
#[derive(Debug)]
pub struct PartnerData {
    /// Transactions and profiles keyed by pseudonymised customer id.
    pub log: TransactionLog,
    /// What the load did; also written to the report folder.
    pub report: PartnerDataReport,
}

/// Loads and de-identifies the partner's data, writes the report into
/// `config.deid.report_dir`, and returns the log keyed by pseudonyms.
pub fn load_partner_data(config: &PartnerDataConfig) -> Result<PartnerData, PartnerDataError> {
    load(config, None)
}

/// Like [`load_partner_data`], and also returns pseudonym → raw customer id for outputs that
/// stay on the partner's premises, such as the local score file. Nothing sent anywhere may use
/// the map.
pub fn load_partner_data_with_local_ids(
    config: &PartnerDataConfig,
) -> Result<(PartnerData, HashMap<String, String>), PartnerDataError> {
    let mut local_ids = HashMap::new();
    let data = load(config, Some(&mut local_ids))?;
    Ok((data, local_ids))
}

fn load(
    config: &PartnerDataConfig,
    local_ids: Option<&mut HashMap<String, String>>,
) -> Result<PartnerData, PartnerDataError> {
    if let Some(folder) = config.deid.key_path.parent()
        && !folder.as_os_str().is_empty()
    {
        std::fs::create_dir_all(folder).map_err(|error| PartnerDataError::Deid {
            input: "pseudonymisation key".to_owned(),
            error: veil_deid::DeidError::KeyIo {
                path: config.deid.key_path.clone(),
                source: error,
            },
        })?;
    }
    let (transaction_rows, transactions_report) = read_source(
        SourceKind::Transactions,
        &config.transactions,
        &config.deid,
        local_ids,
    )?;
    let SourceRows::Transactions(transaction_rows) = transaction_rows else {
        unreachable_kind()?
    };
    let mut grouped = transaction_rows.grouped;
    let mut join = JoinReport {
        customers_with_transactions: grouped.len() as u64,
        ..JoinReport::default()
    };
    let (profiles, profile_report) = match &config.profile {
        Some(profile_config) => {
            let (rows, mut report) =
                read_source(SourceKind::Profile, profile_config, &config.deid, None)?;
            let SourceRows::Profile(rows) = rows else {
                unreachable_kind()?
            };
            let AnonymisedProfiles {
                profiles,
                suppressed,
                report: deid_report,
            } = anonymise_profiles(*rows, &profile_config.describe())?;
            report.deid = Some(deid_report);
            for customer in &suppressed {
                if let Some(history) = grouped.remove(customer) {
                    join.customers_suppressed += 1;
                    join.transactions_suppressed += history.len() as u64;
                }
            }
            join.profiles_without_transactions = profiles
                .keys()
                .chain(suppressed.iter())
                .filter(|customer| !grouped.contains_key(*customer))
                .count() as u64
                - join.customers_suppressed;
            (profiles, Some(report))
        }
        None => (HashMap::new(), None),
    };
    join.customers_kept = grouped.len() as u64;
    join.customers_with_profile = grouped
        .keys()
        .filter(|customer| profiles.contains_key(*customer))
        .count() as u64;
    join.customers_without_profile = join.customers_kept - join.customers_with_profile;
    let log = TransactionLog::from_grouped_with_profiles(grouped, &profiles);
    let report = PartnerDataReport {
        transactions: transactions_report,
        profile: profile_report,
        join,
    };
    report.write(&config.deid.report_dir)?;
    Ok(PartnerData { log, report })
}

/// `read_source` returns the kind it was asked for; this keeps the match total without a panic.
fn unreachable_kind<T>() -> Result<T, PartnerDataError> {
    Err(PartnerDataError::Config {
        input: "internal".to_owned(),
        reason: "a source returned rows of the wrong kind".to_owned(),
    })
}

/// The profile table after the k-anonymity pass.
struct AnonymisedProfiles {
    /// Released customers' profiles, by pseudonym.
    profiles: HashMap<String, CustomerProfile>,
    /// Customers whose profile row was suppressed.
    suppressed: HashSet<String>,
    /// The de-identification report including the pass.
    report: veil_deid::DeidReport,
}

/// Runs the k-anonymity pass over the profile rows and turns the released rows' generalised
/// values into profiles.
fn anonymise_profiles(
    rows: ProfileRows,
    input: &str,
) -> Result<AnonymisedProfiles, PartnerDataError> {
    let ProfileRows {
        mut customer_by_row,
        tuples,
        mut deidentifier,
        rules,
    } = rows;
    let (kept, _) =
        deidentifier
            .enforce_k_anonymity(tuples)
            .map_err(|error| PartnerDataError::Deid {
                input: input.to_owned(),
                error,
            })?;
    let mut profiles = HashMap::with_capacity(kept.len());
    for released in kept {
        let Some(customer) = customer_by_row.remove(&released.row_index) else {
            continue;
        };
        let mut profile = CustomerProfile::default();
        for (rule, value) in rules.iter().zip(&released.values) {
            match rule {
                GeneralisationPolicy::AgeBand { .. } => profile.age_years = band_middle(value),
                GeneralisationPolicy::BirthDateToYear => profile.birth_year = year_middle(value),
                GeneralisationPolicy::Gender { .. } => profile.gender = Gender::parse(value),
                GeneralisationPolicy::PostcodePrefix { .. } | GeneralisationPolicy::City { .. } => {
                }
            }
        }
        profiles.insert(customer, profile);
    }
    // What is left was suppressed.
    let suppressed = customer_by_row.into_values().collect();
    Ok(AnonymisedProfiles {
        profiles,
        suppressed,
        report: deidentifier.report(),
    })
}

/// The middle of an age band `lo-hi`, or `None` for `*`.
fn band_middle(value: &str) -> Option<f32> {
    let (low, high) = value.split_once('-')?;
    let low: f32 = low.trim().parse().ok()?;
    let high: f32 = high.trim().parse().ok()?;
    Some((low + high) / 2.0)
}

/// A generalised birth year `1987` as itself, a decade `1980s` as its middle, `*` as `None`.
fn year_middle(value: &str) -> Option<f32> {
    match value.strip_suffix('s') {
        Some(decade) => decade.parse::<f32>().ok().map(|start| start + 4.5),
        None => value.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generalised_values_become_numbers() {
        assert_eq!(band_middle("30-39"), Some(34.5));
        assert_eq!(band_middle("*"), None);
        assert_eq!(year_middle("1987"), Some(1987.0));
        assert_eq!(year_middle("1980s"), Some(1984.5));
        assert_eq!(year_middle("*"), None);
    }
}
