//! Why a partner's data could not be loaded. Every variant names the input (a file path or a
//! PostgreSQL table, never a connection URL); row-level problems are not errors but rejects.

use std::path::PathBuf;

use veil_de_identification::DeidError;

/// A load that could not complete; nothing from the data is used.
#[derive(Debug, thiserror::Error)]
pub enum PartnerDataError {
    /// The file could not be opened.
    #[error("cannot open {input}: {error}")]
    Open {
        /// The input.
        input: String,
        /// The underlying IO error.
        error: std::io::Error,
    },
    /// Reading failed part-way (IO error, or text not valid in the declared encoding).
    #[error("{input}: read failed, nothing from this input was loaded: {error}")]
    Read {
        /// The input.
        input: String,
        /// The CSV reader's error, which carries the position.
        error: csv::Error,
    },
    /// The Parquet file could not be read.
    #[error("{input}: cannot read Parquet: {error}")]
    Parquet {
        /// The input.
        input: String,
        /// The Parquet error.
        error: parquet::errors::ParquetError,
    },
    /// The `parquet` crate panicked while decoding the file's data pages: it asserts on some
    /// malformed pages (a run length past the page's end) instead of returning an error. The
    /// panic is caught where the reader is called, and the file is refused.
    #[error(
        "{input}: a Parquet data page at or before row {row} is malformed (the Parquet reader          could not decode it), nothing from this input was loaded"
    )]
    ParquetPageMalformed {
        /// The input.
        input: String,
        /// The row being read (1-based) when the reader gave up.
        row: u64,
    },
    /// The Parquet footer (the file's schema and row-group metadata) could not be decoded, so
    /// no row was read.
    #[error(
        "{input}: the Parquet footer (schema and row-group metadata) is malformed or truncated, \
         nothing from this input was loaded: {error}"
    )]
    ParquetFooter {
        /// The input.
        input: String,
        /// The Parquet decoder's error.
        error: parquet::errors::ParquetError,
    },
    /// The Parquet footer decoded but describes data the file does not hold (a column chunk
    /// outside the file, a negative size or count), so no row was read.
    #[error(
        "{input}: the Parquet footer does not match the file, nothing from this input was loaded: {reason}"
    )]
    ParquetLayout {
        /// The input.
        input: String,
        /// Which row group and column is wrong, and how.
        reason: String,
    },
    /// The database could not be reached or the table or query failed.
    #[error("{input}: {error}")]
    Postgres {
        /// The input.
        input: String,
        /// The driver's error.
        error: postgres::Error,
    },
    /// The configured delimiter cannot separate fields.
    #[error(
        "delimiter {delimiter:?} is not allowed; use one ASCII character other than a quote or line break"
    )]
    InvalidDelimiter {
        /// The configured delimiter.
        delimiter: char,
    },
    /// No delimiter splits the first lines consistently.
    #[error(
        "{input}: cannot tell the field delimiter from the first lines (tried , ; tab |); set `delimiter`"
    )]
    UnknownDelimiter {
        /// The input.
        input: String,
    },
    /// The input is empty: not even a header row.
    #[error("{input}: the input is empty; expected a header row and data rows")]
    EmptyFile {
        /// The input.
        input: String,
    },
    /// The input has a header but no data rows.
    #[error("{input}: the input has a header but no data rows")]
    NoRows {
        /// The input.
        input: String,
    },
    /// A column the configuration declares is not in the input.
    #[error("{input}: no column '{column}' (declared as {role}) in the header; found: {}", found.join(", "))]
    MissingColumn {
        /// The input.
        input: String,
        /// The declared column.
        column: String,
        /// What it was declared as.
        role: String,
        /// The columns the input does have.
        found: Vec<String>,
    },
    /// A column of the input has no declared role and undeclared columns are refused.
    #[error(
        "{input}: column '{column}' has no declared role; declare it under `columns` (use \"drop\" to remove it)"
    )]
    UndeclaredColumn {
        /// The input.
        input: String,
        /// The undeclared column.
        column: String,
    },
    /// The source's configuration is inconsistent.
    #[error("{input}: {reason}")]
    Config {
        /// The input.
        input: String,
        /// What is wrong.
        reason: String,
    },
    /// `max_reject_fraction` is not within [0, 1].
    #[error("{input}: max_reject_fraction {value} must be between 0 and 1")]
    InvalidRejectFraction {
        /// The input.
        input: String,
        /// The configured value.
        value: f64,
    },
    /// De-identification could not be configured or completed (policy, key or k-anonymity).
    #[error("{input}: de-identification: {error}")]
    Deid {
        /// The input, or `pseudonymisation key` for key problems.
        input: String,
        /// The de-identification error.
        error: DeidError,
    },
    /// The rejects file could not be written.
    #[error("cannot write rejects file {}: {error}", path.display())]
    RejectsFile {
        /// The rejects file.
        path: PathBuf,
        /// The CSV or IO error.
        error: csv::Error,
    },
    /// A report file could not be written.
    #[error("cannot write de-identification report {}: {error}", path.display())]
    Report {
        /// The report file.
        path: PathBuf,
        /// The IO error.
        error: std::io::Error,
    },
    /// Too many rows were rejected to trust the rest.
    #[error(
        "{input}: {rejected} of {read} rows were rejected, more than the allowed fraction \
         {threshold}; fix the export or the column roles (the rejects file gives each row's reason)"
    )]
    TooManyRejects {
        /// The input.
        input: String,
        /// Rows rejected.
        rejected: u64,
        /// Data rows read.
        read: u64,
        /// The configured `max_reject_fraction`.
        threshold: f64,
    },
}
