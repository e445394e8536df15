//! The one error type of the ledger. Budget refusals are not errors: they are
//! [`crate::BudgetRefusal`] values the caller turns into events.

use crate::charge::ChargeKey;

/// Why a ledger operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// A charge field is out of range or inconsistent.
    #[error("invalid charge: {field} {reason}")]
    InvalidCharge {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A different charge is already recorded under the same key: the same
    /// round of the same job was priced differently, which must be looked at
    /// by a person, not silently resolved.
    #[error("a different charge is already recorded for {key}")]
    ConflictingCharge {
        /// The contested key (boxed to keep the error small).
        key: Box<ChargeKey>,
    },
    /// A budget or cap that is not a valid (ε, δ).
    #[error("invalid budget: {0}")]
    InvalidBudget(&'static str),
    /// A planned charge was checked against another job's budget.
    #[error("planned charge for job {found} checked against the budget of job {expected}")]
    WrongJob {
        /// The budget's job.
        expected: String,
        /// The charge's job.
        found: String,
    },
    /// A time stamp outside the calendar range the period arithmetic supports.
    #[error("time stamp {0} is outside the supported calendar range")]
    TimeOutOfRange(i64),
    /// The accountant refused a mechanism or δ.
    #[error(transparent)]
    Accounting(#[from] veil_privacy_accounting::AccountingError),
    /// Opening or migrating the database failed.
    #[error(transparent)]
    Database(#[from] veil_sqlite_db::DbError),
    /// A query on the ledger database failed.
    #[error("ledger database: {0}")]
    Sqlite(#[from] veil_sqlite_db::rusqlite::Error),
    /// A stored row cannot be a charge (edited by hand or corrupted).
    #[error("corrupt ledger row: {0}")]
    CorruptRow(String),
    /// A file named on the command line could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A command-line option needed by the chosen output is missing.
    #[error("{0} is required for this output")]
    MissingArgument(&'static str),
    /// JSON export or import failed.
    #[error("ledger JSON: {0}")]
    Json(#[from] serde_json::Error),
}
