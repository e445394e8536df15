//! The `veil-privacy` command line: argument types and the `run` function the
//! binary calls, so tests and the binary share one code path.

use clap::{Parser, Subcommand};
use serde::Serialize;

use crate::accountant::{Accountant, DpEvent};
use crate::calibration::{CalibrationTarget, calibrate_noise_multiplier};
use crate::error::AccountingError;

/// Differential privacy accounting for Veil training jobs; prints JSON.
#[derive(Debug, Parser)]
#[command(name = "veil-privacy", version)]
pub struct Cli {
    /// What to compute.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// ε spent by `steps` Poisson-subsampled Gaussian rounds.
    Epsilon {
        /// Poisson sampling probability per round, in (0, 1].
        #[arg(long)]
        sampling_rate: f64,
        /// Noise standard deviation over the clip norm.
        #[arg(long)]
        noise_multiplier: f64,
        /// Number of rounds.
        #[arg(long)]
        steps: u64,
        /// Target δ, in (0, 1).
        #[arg(long)]
        delta: f64,
    },
    /// Smallest noise multiplier that keeps `steps` rounds within (ε, δ).
    Calibrate {
        /// Poisson sampling probability per round, in (0, 1].
        #[arg(long)]
        sampling_rate: f64,
        /// Number of rounds.
        #[arg(long)]
        steps: u64,
        /// Target ε.
        #[arg(long)]
        epsilon: f64,
        /// Target δ, in (0, 1).
        #[arg(long)]
        delta: f64,
    },
}

/// Output of `calibrate`.
#[derive(Debug, Serialize)]
struct CalibrationOutput {
    noise_multiplier: f64,
}

/// Executes a parsed command and returns the JSON line to print.
pub fn run(cli: &Cli) -> Result<String, AccountingError> {
    let json = match cli.command {
        Command::Epsilon {
            sampling_rate,
            noise_multiplier,
            steps,
            delta,
        } => {
            let mut accountant = Accountant::new();
            accountant.compose(DpEvent::PoissonSampledGaussian {
                sampling_rate,
                noise_multiplier,
                steps,
            })?;
            serde_json::to_string(&accountant.epsilon(delta)?)
        }
        Command::Calibrate {
            sampling_rate,
            steps,
            epsilon,
            delta,
        } => {
            let noise_multiplier = calibrate_noise_multiplier(&CalibrationTarget {
                sampling_rate,
                steps,
                epsilon,
                delta,
            })?;
            serde_json::to_string(&CalibrationOutput { noise_multiplier })
        }
    };
    // Serialising plain structs of f64 cannot fail except on non-finite
    // numbers, which serde_json writes as null; keep that visible, not fatal.
    Ok(json.unwrap_or_else(|error| format!("{{\"error\":\"{error}\"}}")))
}
