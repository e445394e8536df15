//! Reading a partner's transaction CSV into a [`TransactionLog`] grouped by customer, rejecting
//! malformed rows one by one into a rejects file instead of failing the whole load.
//!
//! Invariants:
//! - A file is never half-read silently: an IO or UTF-8 error anywhere is an [`IngestError`].
//! - Raw customer ids never appear in a [`RowError`] message or in the rejects file; the id
//!   column is written as `<redacted>` there.
//! - Amounts are plain decimals (`12.50`, `-0` is zero); negative, empty, NaN or infinite amounts
//!   are rejected because refunds would make the log-scaled spend features undefined.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::timestamp::{day_of, parse_timestamp};

/// How many row errors a [`LoadReport`] keeps verbatim; the rest are only counted (and written
/// to the rejects file when one is configured).
pub const MAX_SAMPLE_ERRORS: usize = 10;

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
        }
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

/// Counts and samples from one load, for logs and operator reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    /// The file that was read.
    pub file: PathBuf,
    /// Data rows read (the header is not counted).
    pub rows_read: u64,
    /// Rows turned into transactions.
    pub rows_accepted: u64,
    /// Rows rejected; `rows_accepted + rows_rejected == rows_read`.
    pub rows_rejected: u64,
    /// Where the rejected rows were written, if anywhere.
    pub rejects_path: Option<PathBuf>,
    /// The first few errors, in file order.
    pub sample_errors: Vec<RowError>,
}

/// Why a file could not be loaded at all.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The delimiter is not a single ASCII character usable as a separator.
    #[error(
        "delimiter {delimiter:?} is not allowed; use one ASCII character other than a quote or line break"
    )]
    InvalidDelimiter {
        /// The configured delimiter.
        delimiter: char,
    },
    /// `max_reject_fraction` is not a number between 0 and 1.
    #[error("max_reject_fraction {value} must be between 0 and 1")]
    InvalidRejectFraction {
        /// The configured value.
        value: f64,
    },
    /// The file could not be opened.
    #[error("cannot open {}: {source}", file.display())]
    Open {
        /// The file.
        file: PathBuf,
        /// The underlying IO error.
        source: std::io::Error,
    },
    /// Reading failed part-way (IO error or invalid UTF-8); nothing from the file is used.
    #[error("{}: read failed, nothing from this file was loaded: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// The underlying CSV error, which carries the position.
        source: csv::Error,
    },
    /// The file has no header row at all.
    #[error("{}: the file is empty; expected a header row and transactions", file.display())]
    EmptyFile {
        /// The file.
        file: PathBuf,
    },
    /// The file has a header but no data rows.
    #[error("{}: the file has a header but no transaction rows", file.display())]
    NoRows {
        /// The file.
        file: PathBuf,
    },
    /// A column named in the [`ColumnMapping`] is not in the header.
    #[error("{}: no column '{column}' (the {role} column) in the header; found: {}", file.display(), found.join(", "))]
    MissingColumn {
        /// The file.
        file: PathBuf,
        /// Which role the column plays, for example `customer id`.
        role: &'static str,
        /// The header name that was looked for.
        column: String,
        /// The header names the file does have.
        found: Vec<String>,
    },
    /// The rejects file could not be created or written.
    #[error("cannot write rejects file {}: {source}", path.display())]
    RejectsFile {
        /// The rejects file.
        path: PathBuf,
        /// The underlying CSV or IO error.
        source: csv::Error,
    },
    /// Too large a share of rows was rejected to trust the rest.
    #[error(
        "{}: {rejected} of {read} rows were rejected, more than the allowed fraction {threshold}; \
         fix the export or the column mapping (see the rejects file for each row's reason)",
        file.display()
    )]
    TooManyRejects {
        /// The file.
        file: PathBuf,
        /// Rows rejected.
        rejected: u64,
        /// Data rows read.
        read: u64,
        /// The configured `max_reject_fraction`.
        threshold: f64,
    },
}

/// Header positions of the columns a row is parsed from.
struct ColumnPositions {
    customer_id: usize,
    timestamp: usize,
    amount: usize,
}

/// A row's rejection before the file name is attached.
struct Rejection {
    column: String,
    message: String,
    /// Whether the record's fields can be trusted to sit under their headers; when not, the
    /// rejects file gets empty fields so a shifted raw id cannot leak into another column.
    fields_aligned: bool,
}

/// Reads a transaction CSV. Malformed rows are rejected individually (see [`LoadReport`]); the
/// whole load fails on IO or UTF-8 errors, a missing column, an empty file, or too many rejects.
pub fn load_transactions(source: &CsvSource) -> Result<(TransactionLog, LoadReport), IngestError> {
    let delimiter = ascii_delimiter(source.delimiter)?;
    if !(0.0..=1.0).contains(&source.max_reject_fraction) {
        return Err(IngestError::InvalidRejectFraction {
            value: source.max_reject_fraction,
        });
    }
    let file = source.path.clone();
    let input = File::open(&file).map_err(|error| IngestError::Open {
        file: file.clone(),
        source: error,
    })?;
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        // Field counts are checked per row so that one short row is a rejection, not an abort.
        .flexible(true)
        .from_reader(input);

    let headers = reader
        .headers()
        .map_err(|error| IngestError::Read {
            file: file.clone(),
            source: error,
        })?
        .clone();
    if headers.iter().all(|name| name.trim().is_empty()) {
        return Err(IngestError::EmptyFile { file });
    }
    let header_names: Vec<String> = headers.iter().map(|name| name.trim().to_owned()).collect();
    let positions = column_positions(&file, &header_names, &source.columns)?;

    let mut rejects_writer = match &source.rejects_path {
        Some(path) => Some(RejectsWriter::create(
            path,
            delimiter,
            &header_names,
            positions.customer_id,
        )?),
        None => None,
    };

    let mut grouped: HashMap<String, Vec<Transaction>> = HashMap::new();
    let mut report = LoadReport {
        file: file.clone(),
        rows_read: 0,
        rows_accepted: 0,
        rows_rejected: 0,
        rejects_path: source.rejects_path.clone(),
        sample_errors: Vec::new(),
    };
    let mut record = csv::StringRecord::new();
    loop {
        let has_record = reader
            .read_record(&mut record)
            .map_err(|error| IngestError::Read {
                file: file.clone(),
                source: error,
            })?;
        if !has_record {
            break;
        }
        report.rows_read += 1;
        // The header is line 1, so without position information data row n sits on line n + 1.
        let line = record
            .position()
            .map_or(report.rows_read + 1, |position| position.line());
        match parse_row(&record, header_names.len(), &positions, &header_names) {
            Ok((customer_id, transaction)) => {
                report.rows_accepted += 1;
                match grouped.get_mut(customer_id) {
                    Some(history) => history.push(transaction),
                    None => {
                        grouped.insert(customer_id.to_owned(), vec![transaction]);
                    }
                }
            }
            Err(rejection) => {
                report.rows_rejected += 1;
                if let Some(writer) = rejects_writer.as_mut() {
                    writer.write(line, &rejection, &record)?;
                }
                if report.sample_errors.len() < MAX_SAMPLE_ERRORS {
                    report.sample_errors.push(RowError {
                        file: file.clone(),
                        row: line,
                        column: rejection.column,
                        message: rejection.message,
                    });
                }
            }
        }
    }
    if let Some(writer) = rejects_writer {
        writer.finish()?;
    }

    if report.rows_read == 0 {
        return Err(IngestError::NoRows { file });
    }
    // Counts are far below 2^52, so the conversion to f64 is exact.
    let rejected_fraction = report.rows_rejected as f64 / report.rows_read as f64;
    if rejected_fraction > source.max_reject_fraction {
        return Err(IngestError::TooManyRejects {
            file,
            rejected: report.rows_rejected,
            read: report.rows_read,
            threshold: source.max_reject_fraction,
        });
    }
    Ok((TransactionLog::from_grouped(grouped), report))
}

fn ascii_delimiter(delimiter: char) -> Result<u8, IngestError> {
    match u8::try_from(delimiter) {
        Ok(byte) if byte.is_ascii() && !matches!(byte, b'"' | b'\n' | b'\r') => Ok(byte),
        _ => Err(IngestError::InvalidDelimiter { delimiter }),
    }
}

fn column_positions(
    file: &Path,
    header_names: &[String],
    mapping: &ColumnMapping,
) -> Result<ColumnPositions, IngestError> {
    let find = |role: &'static str, column: &str| {
        header_names
            .iter()
            .position(|name| name == column)
            .ok_or_else(|| IngestError::MissingColumn {
                file: file.to_path_buf(),
                role,
                column: column.to_owned(),
                found: header_names.to_vec(),
            })
    };
    let optional_columns = [
        ("quantity", &mapping.quantity),
        ("category", &mapping.category),
        ("channel", &mapping.channel),
    ];
    for (role, column) in optional_columns {
        if let Some(column) = column {
            find(role, column)?;
        }
    }
    Ok(ColumnPositions {
        customer_id: find("customer id", &mapping.customer_id)?,
        timestamp: find("timestamp", &mapping.timestamp)?,
        amount: find("amount", &mapping.amount)?,
    })
}

/// Parses one data record; the returned id borrows from the record to avoid an allocation for
/// customers already seen.
fn parse_row<'record>(
    record: &'record csv::StringRecord,
    n_header_fields: usize,
    positions: &ColumnPositions,
    header_names: &[String],
) -> Result<(&'record str, Transaction), Rejection> {
    if record.len() != n_header_fields {
        return Err(Rejection {
            column: WHOLE_RECORD_COLUMN.to_owned(),
            message: format!(
                "expected {n_header_fields} fields as in the header, found {}",
                record.len()
            ),
            fields_aligned: false,
        });
    }
    let cell = |position: usize| record.get(position).unwrap_or("");
    let reject = |position: usize, message: String| Rejection {
        column: header_names.get(position).cloned().unwrap_or_default(),
        message,
        fields_aligned: true,
    };

    let customer_id = cell(positions.customer_id).trim();
    if customer_id.is_empty() {
        return Err(reject(
            positions.customer_id,
            "customer id is empty".to_owned(),
        ));
    }
    let unix_seconds = parse_timestamp(cell(positions.timestamp))
        .map_err(|error| reject(positions.timestamp, error.to_string()))?;
    let amount = parse_amount(cell(positions.amount))
        .map_err(|message| reject(positions.amount, message))?;
    Ok((customer_id, Transaction::new(unix_seconds, amount)))
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

/// Writes rejected rows as `row,column,error,<original fields>` with the id redacted.
struct RejectsWriter {
    path: PathBuf,
    writer: csv::Writer<BufWriter<File>>,
    customer_id_position: usize,
    /// Reused buffer for one output record, to avoid an allocation per rejected row.
    fields: Vec<String>,
    n_original_fields: usize,
}

impl RejectsWriter {
    fn create(
        path: &Path,
        delimiter: u8,
        header_names: &[String],
        customer_id_position: usize,
    ) -> Result<Self, IngestError> {
        let to_error = |error: csv::Error| IngestError::RejectsFile {
            path: path.to_path_buf(),
            source: error,
        };
        // Rejected rows are partner rows (identifiers redacted, the rest not): owner-only.
        let file =
            crate::owner_only::create_owner_only(path).map_err(|error| to_error(error.into()))?;
        let mut writer = csv::WriterBuilder::new()
            .delimiter(delimiter)
            .from_writer(BufWriter::new(file));
        let mut header = vec!["row".to_owned(), "column".to_owned(), "error".to_owned()];
        header.extend(header_names.iter().cloned());
        writer.write_record(&header).map_err(to_error)?;
        Ok(Self {
            path: path.to_path_buf(),
            writer,
            customer_id_position,
            fields: header,
            n_original_fields: header_names.len(),
        })
    }

    fn write(
        &mut self,
        line: u64,
        rejection: &Rejection,
        record: &csv::StringRecord,
    ) -> Result<(), IngestError> {
        self.fields.clear();
        self.fields.push(line.to_string());
        self.fields.push(rejection.column.clone());
        self.fields.push(rejection.message.clone());
        for position in 0..self.n_original_fields {
            let field = if !rejection.fields_aligned {
                ""
            } else if position == self.customer_id_position {
                REDACTED
            } else {
                record.get(position).unwrap_or("")
            };
            self.fields.push(field.to_owned());
        }
        self.writer
            .write_record(&self.fields)
            .map_err(|error| IngestError::RejectsFile {
                path: self.path.clone(),
                source: error,
            })
    }

    fn finish(mut self) -> Result<(), IngestError> {
        self.writer
            .flush()
            .map_err(|error| IngestError::RejectsFile {
                path: self.path,
                source: error.into(),
            })
    }
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
    fn delimiters() {
        assert_eq!(ascii_delimiter(',').ok(), Some(b','));
        assert_eq!(ascii_delimiter(';').ok(), Some(b';'));
        assert_eq!(ascii_delimiter('\t').ok(), Some(b'\t'));
        for bad in ['"', '\n', 'é', '→'] {
            assert!(
                matches!(ascii_delimiter(bad), Err(IngestError::InvalidDelimiter { delimiter }) if delimiter == bad)
            );
        }
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
