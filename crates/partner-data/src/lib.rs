//! A partner's data at the door of its node: read the transaction log and the optional customer
//! profile table (CSV, Parquet or PostgreSQL), check every row against the declared column
//! roles, de-identify every row *before* any value is interpreted, generalise the profile's
//! quasi-identifiers by their declared rules and measure the k-anonymity that reaches, join the
//! two on the pseudonymised customer id, and write the de-identification report. The result is a
//! [`TransactionLog`] keyed by pseudonyms.
//!
//! Every step is per row or per customer: a customer's transactions and profile in the log
//! depend on that customer's own rows (and the policy and key), never on other customers' rows,
//! and no customer is left out because of others. Adding or removing one customer therefore
//! changes the log in that customer only, which is the adjacency customer-level DP-SGD is
//! charged for (`tests/join_properties.rs` checks it on random tables).
//!
//! What it does *not* do: the detectors, pseudonyms, generalisation and k-anonymity themselves
//! live in `veil-de-identification`; the features and the legacy single-file loader in `veil-behaviour-features`; the
//! node's configuration file and networking in `client-node`.

mod config;
mod error;
mod grouping;
mod pipeline;
mod profile;
mod report;
mod source;

use std::collections::HashMap;

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

use veil_behaviour_features::TransactionLog;

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
            error: veil_de_identification::DeidError::KeyIo {
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
    let grouped = transaction_rows.grouped;
    let category_names = transaction_rows.category_names;
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
            let ProfileRows {
                profiles,
                tuples,
                mut deidentifier,
            } = *rows;
            // Measured for the report only: every accepted profile row feeds training with its
            // declared generalisation, whatever k the table reaches.
            deidentifier
                .measure_k_anonymity(&tuples)
                .map_err(|error| PartnerDataError::Deid {
                    input: profile_config.describe(),
                    error,
                })?;
            report.deid = Some(deidentifier.report());
            join.profiles_without_transactions = profiles
                .keys()
                .filter(|customer| !grouped.contains_key(*customer))
                .count() as u64;
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
    let log = TransactionLog::from_grouped_with_profiles(grouped, &profiles)
        .with_category_names(category_names);
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
