//! The transaction log a node's features are computed from, grouped by customer, and the
//! older single-file form of a node's `[data]` table ([`CsvSource`]). Reading, checking and
//! de-identifying the rows is `veil-partner-data`'s one ingestion path; this module only holds
//! the types it produces and the per-cell parsers it shares.
//!
//! Invariants:
//! - Raw customer ids never appear in a [`RowError`] message or in a rejects file; the id
//!   column is written as [`REDACTED`] there.
//! - Amounts are plain decimals (`12.50`, `-0` is zero); negative, empty, NaN or infinite amounts
//!   are rejected because refunds would make the log-scaled spend features undefined.

use std::collections::HashMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::timestamp::day_of;

/// What is written instead of a raw customer id in the rejects file.
pub const REDACTED: &str = "<redacted>";

/// Column name used in a [`RowError`] about the record as a whole (wrong number of fields).
pub const WHOLE_RECORD_COLUMN: &str = "(record)";

/// Which header names hold which role. Only the three required roles are read today; the
/// optional ones are checked to exist when named, so a typo in a config is caught early.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct ColumnMapping {
    /// Header of the customer identifier column.
    #[serde(default = "default_customer_id_column")]
    pub customer_id: String,
    /// Header of the transaction timestamp column (see [`crate::timestamp`] for formats).
    #[serde(default = "default_timestamp_column")]
    pub timestamp: String,
    /// Header of the transaction amount column.
    #[serde(default = "default_amount_column")]
    pub amount: String,
    /// Header of the item quantity column, if the partner has one.
    #[serde(default)]
    pub quantity: Option<String>,
    /// Header of the product category column, if the partner has one.
    #[serde(default)]
    pub category: Option<String>,
    /// Header of the sales channel column, if the partner has one.
    #[serde(default)]
    pub channel: Option<String>,
}

fn default_customer_id_column() -> String {
    "customer_id".to_owned()
}

fn default_timestamp_column() -> String {
    "timestamp".to_owned()
}

fn default_amount_column() -> String {
    "amount".to_owned()
}

impl Default for ColumnMapping {
    fn default() -> Self {
        Self {
            customer_id: default_customer_id_column(),
            timestamp: default_timestamp_column(),
            amount: default_amount_column(),
            quantity: None,
            category: None,
            channel: None,
        }
    }
}

/// One CSV file of transactions and how to read it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct CsvSource {
    /// The file to read; it must start with a header row.
    pub path: PathBuf,
    /// Header names of the columns used.
    #[serde(default)]
    pub columns: ColumnMapping,
    /// Field separator; a single ASCII character other than a quote or line break.
    #[serde(default = "default_delimiter")]
    pub delimiter: char,
    /// Where rejected rows are written (`row,column,error` then the original fields, with the
    /// customer id redacted). `None` keeps rejects only in the report's samples.
    #[serde(default)]
    pub rejects_path: Option<PathBuf>,
    /// Abort if more than this fraction of rows is rejected (default 0.1).
    #[serde(default = "default_max_reject_fraction")]
    pub max_reject_fraction: f64,
}

fn default_delimiter() -> char {
    ','
}

fn default_max_reject_fraction() -> f64 {
    0.1
}

impl CsvSource {
    /// A comma-separated file with the default column names, no rejects file and a 10% limit.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            columns: ColumnMapping::default(),
            delimiter: default_delimiter(),
            rejects_path: None,
            max_reject_fraction: default_max_reject_fraction(),
        }
    }
}

/// One accepted transaction: when, how much, and optionally in which product category and
/// through which sales channel. The customer is the group it sits in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transaction {
    /// Seconds since 1970-01-01T00:00:00Z.
    pub unix_seconds: i64,
    /// Amount spent, finite and not negative.
    pub amount: f64,
    /// Product category as a code of the loader's category dictionary; only equality between
    /// codes matters to the features, so codes need not agree between partners.
    pub category: Option<u16>,
    /// Sales channel as a code of the loader's channel dictionary (same rules as `category`).
    pub channel: Option<u16>,
}

impl Transaction {
    /// A transaction without category or channel.
    pub fn new(unix_seconds: i64, amount: f64) -> Self {
        Self {
            unix_seconds,
            amount,
            category: None,
            channel: None,
        }
    }

    /// The UTC day number (days since 1970-01-01) the transaction falls on.
    pub fn day(&self) -> i64 {
        day_of(self.unix_seconds)
    }
}

/// Gender as used by the profile features; anything not recognised is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gender {
    /// Recorded as female.
    Female,
    /// Recorded as male.
    Male,
}

impl Gender {
    /// Reads the common spellings (`F`, `female`, `W`, `woman`, `女`, and the male
    /// counterparts), case-insensitively; anything else, including a suppressed `*`, is unknown.
    pub fn parse(text: &str) -> Option<Gender> {
        match text.trim().to_lowercase().as_str() {
            "f" | "female" | "w" | "woman" | "女" | "女性" => Some(Gender::Female),
            "m" | "male" | "man" | "男" | "男性" => Some(Gender::Male),
            _ => None,
        }
    }
}

/// A customer's de-identified profile attributes, as far as features can use them. They come
/// from *generalised* quasi-identifiers (age bands, birth decades), never from raw values.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct CustomerProfile {
    /// Age in years at the profile's export, taken as the middle of the generalised band.
    pub age_years: Option<f32>,
    /// Birth year, taken as the middle of the generalised year or decade.
    pub birth_year: Option<f32>,
    /// Gender, when recorded and not suppressed.
    pub gender: Option<Gender>,
}

/// One customer's accepted transactions, sorted by time (ties keep file order).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CustomerHistory {
    pub(crate) customer_id: String,
    pub(crate) transactions: Vec<Transaction>,
    /// The joined profile row, when there is one.
    pub(crate) profile: Option<CustomerProfile>,
}

/// Accepted transactions grouped by customer. Customers are kept sorted by id so every
/// iteration order (and so every derived row order) is stable across runs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TransactionLog {
    /// Sorted by customer id; each history sorted by time.
    customers: Vec<CustomerHistory>,
    /// Cached total, so reports need not walk every history.
    n_transactions: usize,
    /// The loader's category dictionary: the name of each code, in code
    /// order (empty when the log has no category column or was not loaded
    /// from one). Lets a job map codes to its public item names.
    category_names: Vec<String>,
}

impl TransactionLog {
    /// Groups transactions by customer id, sorting customers by id and each history by time.
    pub fn from_transactions(
        transactions: impl IntoIterator<Item = (String, Transaction)>,
    ) -> Self {
        let mut grouped: HashMap<String, Vec<Transaction>> = HashMap::new();
        for (customer_id, transaction) in transactions {
            grouped.entry(customer_id).or_default().push(transaction);
        }
        Self::from_grouped(grouped)
    }

    fn from_grouped(grouped: HashMap<String, Vec<Transaction>>) -> Self {
        Self::from_grouped_with_profiles(grouped, &HashMap::new())
    }

    /// Builds a log from transactions already grouped by customer id, attaching each customer's
    /// profile from `profiles` when it has one. Profiles of customers without transactions are
    /// not part of the log; counting them is the caller's job.
    pub fn from_grouped_with_profiles(
        grouped: HashMap<String, Vec<Transaction>>,
        profiles: &HashMap<String, CustomerProfile>,
    ) -> Self {
        let mut n_transactions = 0;
        let mut customers: Vec<CustomerHistory> = grouped
            .into_iter()
            .map(|(customer_id, mut transactions)| {
                // A stable sort keeps same-second purchases in file order.
                transactions.sort_by_key(|transaction| transaction.unix_seconds);
                n_transactions += transactions.len();
                let profile = profiles.get(&customer_id).copied();
                CustomerHistory {
                    customer_id,
                    transactions,
                    profile,
                }
            })
            .collect();
        customers.sort_unstable_by(|left, right| left.customer_id.cmp(&right.customer_id));
        Self {
            customers,
            n_transactions,
            category_names: Vec::new(),
        }
    }

    /// The log with the loader's category dictionary (`names[code]`).
    pub fn with_category_names(self, names: Vec<String>) -> Self {
        Self {
            category_names: names,
            ..self
        }
    }

    /// The category name of a transaction's code, if the dictionary has one.
    pub fn category_name(&self, code: u16) -> Option<&str> {
        self.category_names
            .get(usize::from(code))
            .map(String::as_str)
    }

    /// Number of distinct customers.
    pub fn n_customers(&self) -> usize {
        self.customers.len()
    }

    /// Number of accepted transactions over all customers.
    pub fn n_transactions(&self) -> usize {
        self.n_transactions
    }

    /// Customer ids in a stable (sorted) order.
    pub fn customer_ids(&self) -> impl Iterator<Item = &str> {
        self.customers
            .iter()
            .map(|customer| customer.customer_id.as_str())
    }

    /// Each customer's id with its time-sorted transactions, in customer id order.
    pub fn customers(&self) -> impl Iterator<Item = (&str, &[Transaction])> {
        self.customers.iter().map(|customer| {
            (
                customer.customer_id.as_str(),
                customer.transactions.as_slice(),
            )
        })
    }

    /// Each customer's id, time-sorted transactions and profile, in customer id order.
    pub fn customers_with_profiles(
        &self,
    ) -> impl Iterator<Item = (&str, &[Transaction], Option<&CustomerProfile>)> {
        self.customers.iter().map(|customer| {
            (
                customer.customer_id.as_str(),
                customer.transactions.as_slice(),
                customer.profile.as_ref(),
            )
        })
    }

    /// Number of customers with a joined profile.
    pub fn n_profiles(&self) -> usize {
        self.customers
            .iter()
            .filter(|customer| customer.profile.is_some())
            .count()
    }

    /// The earliest and latest transaction times, or `None` for an empty log.
    pub fn time_range(&self) -> Option<(i64, i64)> {
        let firsts = self
            .customers
            .iter()
            .filter_map(|customer| customer.transactions.first());
        let lasts = self
            .customers
            .iter()
            .filter_map(|customer| customer.transactions.last());
        let earliest = firsts.map(|transaction| transaction.unix_seconds).min()?;
        let latest = lasts.map(|transaction| transaction.unix_seconds).max()?;
        Some((earliest, latest))
    }
}

/// One rejected row: where it is and what was wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{}: row {row}, column '{column}': {message}", file.display())]
pub struct RowError {
    /// The file the row came from.
    pub file: PathBuf,
    /// 1-based line number in the file, where the header is line 1.
    pub row: u64,
    /// Header name of the offending column, or `(record)` for a wrong number of fields.
    pub column: String,
    /// What was wrong; never contains the raw customer id.
    pub message: String,
}

/// Longest excerpt of a bad amount quoted back in an error.
const MAX_QUOTED_AMOUNT_CHARS: usize = 24;

/// Parses a non-negative decimal amount; the error message quotes at most a short excerpt.
pub fn parse_amount(text: &str) -> Result<f64, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("amount is empty".to_owned());
    }
    let excerpt = || {
        text.chars()
            .take(MAX_QUOTED_AMOUNT_CHARS)
            .collect::<String>()
    };
    // Rust's float parser also accepts "NaN", "inf" and "infinity"; those are rejected below.
    let amount: f64 = text
        .parse()
        .map_err(|_| format!("cannot parse '{}' as a decimal amount", excerpt()))?;
    if !amount.is_finite() {
        return Err(format!("amount '{}' is not a finite number", excerpt()));
    }
    if amount < 0.0 {
        return Err(format!(
            "amount '{}' is negative; refunds are not supported",
            excerpt()
        ));
    }
    // Normalises -0.0 so sums and logs never see a negative zero.
    Ok(amount + 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_amount(text: &str, expected: Result<f64, &str>) {
        let parsed = parse_amount(text);
        match (parsed, expected) {
            (Ok(value), Ok(expected_value)) => {
                assert_eq!(value.to_bits(), expected_value.to_bits(), "{text:?}")
            }
            (Err(message), Err(expected_fragment)) => {
                assert!(message.contains(expected_fragment), "{text:?}: {message}")
            }
            (parsed, expected) => panic!("{text:?}: got {parsed:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn amounts() {
        check_amount("12.50", Ok(12.5));
        check_amount(" 3 ", Ok(3.0));
        check_amount("-0", Ok(0.0));
        check_amount("1e2", Ok(100.0));
        check_amount("", Err("empty"));
        check_amount("NaN", Err("not a finite"));
        check_amount("inf", Err("not a finite"));
        check_amount("-infinity", Err("not a finite"));
        check_amount("-4.00", Err("negative"));
        check_amount("1,000.00", Err("cannot parse '1,000.00'"));
        check_amount("$12", Err("cannot parse"));
    }

    #[test]
    fn log_groups_sorts_and_counts() {
        let at = |unix_seconds| Transaction::new(unix_seconds, 1.0);
        let log = TransactionLog::from_transactions([
            ("b".to_owned(), at(30)),
            ("a".to_owned(), at(20)),
            ("b".to_owned(), at(10)),
        ]);
        assert_eq!(log.n_customers(), 2);
        assert_eq!(log.n_transactions(), 3);
        assert_eq!(log.customer_ids().collect::<Vec<_>>(), ["a", "b"]);
        let b_times: Vec<i64> = log
            .customers()
            .filter(|(id, _)| *id == "b")
            .flat_map(|(_, transactions)| {
                transactions
                    .iter()
                    .map(|transaction| transaction.unix_seconds)
            })
            .collect();
        assert_eq!(b_times, [10, 30]);
        assert_eq!(log.time_range(), Some((10, 30)));
        assert_eq!(TransactionLog::default().time_range(), None);
    }

    #[test]
    fn csv_source_serde_defaults() {
        let source: CsvSource =
            serde_json::from_str(r#"{"path": "a.csv"}"#).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(source, CsvSource::new("a.csv"));
        let mapping: ColumnMapping =
            serde_json::from_str(r#"{"customer_id": "cust", "channel": "via"}"#)
                .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(mapping.customer_id, "cust");
        assert_eq!(mapping.timestamp, "timestamp");
        assert_eq!(mapping.channel.as_deref(), Some("via"));
    }
}
