//! The `veil-ledger` command line for auditors and operators: the report of a
//! ledger file (text, SVG or JSON) and the reconciliation of two ledger
//! files. The binary parses arguments and prints what [`run`] returns.

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};
use serde::de::DeserializeOwned;

use crate::audit::AuditorReport;
use crate::budget::{JobBudget, PartnerCap};
use crate::charge::PrivacyUnit;
use crate::error::LedgerError;
use crate::reconcile::reconcile;
use crate::store::SqliteLedger;

/// Inspect Veil privacy ledgers.
#[derive(Debug, Parser)]
#[command(name = "veil-ledger", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How to print a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Fixed-width table.
    Text,
    /// JSON export of the whole report.
    Json,
    /// SVG plot of ε over rounds for one job and unit (needs `--job`).
    Svg,
}

/// The unit to plot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UnitArgument {
    /// Customer-level.
    Customer,
    /// Partner-level.
    Partner,
}

impl From<UnitArgument> for PrivacyUnit {
    fn from(unit: UnitArgument) -> Self {
        match unit {
            UnitArgument::Customer => Self::Customer,
            UnitArgument::Partner => Self::Partner,
        }
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Per partner and job: mechanism, noise, clip, sampling, steps, δ, ε
    /// spent (RDP and PLD) and ε remaining; caps; ε over rounds.
    Report {
        /// The ledger file.
        #[arg(long)]
        ledger: PathBuf,
        /// JSON array of job budgets (`[{"job_id", "customer": {"epsilon",
        /// "delta"}, "partner": {...}}]`), for ε remaining.
        #[arg(long)]
        budgets: Option<PathBuf>,
        /// JSON array of partner caps, for ε remaining in the period.
        #[arg(long)]
        caps: Option<PathBuf>,
        /// UNIX seconds whose cap period to report; now when absent.
        #[arg(long)]
        as_of: Option<i64>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// The job to plot (SVG only).
        #[arg(long)]
        job: Option<String>,
        /// The unit to plot (SVG only).
        #[arg(long, value_enum, default_value = "customer")]
        unit: UnitArgument,
    },
    /// Compare the coordinator's ledger with one partner's node ledger.
    Reconcile {
        /// The coordinator's ledger file.
        #[arg(long)]
        coordinator: PathBuf,
        /// The node's ledger file.
        #[arg(long)]
        node: PathBuf,
        /// The node's partner id (the coordinator's other partners are ignored).
        #[arg(long)]
        partner: String,
    },
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, LedgerError> {
    let text = std::fs::read_to_string(path).map_err(|source| LedgerError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(serde_json::from_str(&text)?)
}

/// Executes a parsed command and returns what to print. `now_unix_s` is
/// the binary's clock reading, the default of `--as-of` (this library reads
/// no clock).
pub fn run(cli: &Cli, now_unix_s: i64) -> Result<String, LedgerError> {
    match &cli.command {
        Command::Report {
            ledger,
            budgets,
            caps,
            as_of,
            format,
            job,
            unit,
        } => {
            let charges = SqliteLedger::open(ledger)?.all_charges()?;
            let budgets: Vec<JobBudget> = budgets
                .as_deref()
                .map(read_json)
                .transpose()?
                .unwrap_or_default();
            let caps: Vec<PartnerCap> = caps
                .as_deref()
                .map(read_json)
                .transpose()?
                .unwrap_or_default();
            let report =
                AuditorReport::build(&charges, &budgets, &caps, as_of.unwrap_or(now_unix_s))?;
            match format {
                Format::Text => Ok(report.render_text()),
                Format::Json => report.to_json(),
                Format::Svg => {
                    let job = job
                        .as_deref()
                        .ok_or(LedgerError::MissingArgument("--job"))?;
                    Ok(report.render_svg(job, (*unit).into()))
                }
            }
        }
        Command::Reconcile {
            coordinator,
            node,
            partner,
        } => {
            let coordinator_charges =
                SqliteLedger::open(coordinator)?.charges_for_partner(partner)?;
            let node_charges = SqliteLedger::open(node)?.all_charges()?;
            let report = reconcile(&coordinator_charges, &node_charges);
            Ok(serde_json::to_string_pretty(&report)?)
        }
    }
}
