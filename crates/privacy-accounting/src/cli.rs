//! The `veil-privacy` command line: argument types and the `run` function the
//! binary calls, so tests and the binary share one code path.

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::accountant::{Accountant, DpEvent};
use crate::calibration::{CalibrationTarget, calibrate_noise_multiplier};
use crate::distributed::{
    DiscreteEncoding, DistributedCalibrationTarget, DistributedDiscreteGaussian,
    calibrate_node_sigma, rounded_sensitivity, summed_discrete_gaussian_tau,
};
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
    /// ε spent by `rounds` of the distributed discrete Gaussian (RDP bound).
    DistributedEpsilon {
        /// How nodes encode and noise their updates.
        #[command(flatten)]
        distributed: DistributedArgs,
        /// Per-node discrete Gaussian σ, in integer units.
        #[arg(long)]
        node_sigma: f64,
        /// Target δ, in (0, 1).
        #[arg(long)]
        delta: f64,
    },
    /// Smallest per-node σ keeping `rounds` distributed rounds within (ε, δ).
    DistributedCalibrate {
        /// How nodes encode and noise their updates.
        #[command(flatten)]
        distributed: DistributedArgs,
        /// Target ε.
        #[arg(long)]
        epsilon: f64,
        /// Target δ, in (0, 1).
        #[arg(long)]
        delta: f64,
    },
}

/// The encoding, threshold and schedule of distributed discrete Gaussian rounds.
#[derive(Debug, Clone, Copy, Args)]
pub struct DistributedArgs {
    /// ℓ2 clip norm of each update, in model units.
    #[arg(long)]
    pub clip_norm: f64,
    /// Quantisation step γ (model units per integer unit).
    #[arg(long)]
    pub granularity: f64,
    /// Dimension of the rounded vector (after padding).
    #[arg(long)]
    pub dimension: u64,
    /// β of conditional randomised rounding, in [0, 1).
    #[arg(long)]
    pub rounding_beta: f64,
    /// Secure-aggregation threshold t (minimum survivors).
    #[arg(long)]
    pub min_survivors: u64,
    /// Rounds the partner takes part in.
    #[arg(long)]
    pub rounds: u64,
}

impl DistributedArgs {
    fn encoding(&self) -> DiscreteEncoding {
        DiscreteEncoding {
            clip_norm: self.clip_norm,
            granularity: self.granularity,
            dimension: self.dimension,
            rounding_beta: self.rounding_beta,
        }
    }
}

/// Output of `distributed-epsilon` and `distributed-calibrate`: the ε and
/// everything it was derived from, so the numbers can be checked by hand.
#[derive(Debug, Serialize)]
struct DistributedOutput {
    node_sigma: f64,
    epsilon: f64,
    l2_sensitivity: f64,
    l1_sensitivity: f64,
    tau: f64,
    effective_noise_multiplier: f64,
}

fn distributed_output(
    arguments: &DistributedArgs,
    node_sigma: f64,
    delta: f64,
) -> Result<DistributedOutput, AccountingError> {
    let mechanism = DistributedDiscreteGaussian {
        encoding: arguments.encoding(),
        node_sigma,
        min_survivors: arguments.min_survivors,
    };
    let mut accountant = Accountant::new();
    accountant.compose(DpEvent::DistributedDiscreteGaussian {
        mechanism,
        rounds: arguments.rounds,
    })?;
    let sensitivity = rounded_sensitivity(&mechanism.encoding)?;
    Ok(DistributedOutput {
        node_sigma,
        epsilon: accountant.epsilon(delta)?.epsilon,
        l2_sensitivity: sensitivity.l2,
        l1_sensitivity: sensitivity.l1,
        tau: summed_discrete_gaussian_tau(node_sigma, arguments.min_survivors),
        effective_noise_multiplier: mechanism.effective_noise_multiplier()?,
    })
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
        Command::DistributedEpsilon {
            distributed,
            node_sigma,
            delta,
        } => serde_json::to_string(&distributed_output(&distributed, node_sigma, delta)?),
        Command::DistributedCalibrate {
            distributed,
            epsilon,
            delta,
        } => {
            let node_sigma = calibrate_node_sigma(&DistributedCalibrationTarget {
                encoding: distributed.encoding(),
                min_survivors: distributed.min_survivors,
                rounds: distributed.rounds,
                epsilon,
                delta,
            })?;
            serde_json::to_string(&distributed_output(&distributed, node_sigma, delta)?)
        }
    };
    // Serialising plain structs of f64 cannot fail except on non-finite
    // numbers, which serde_json writes as null; keep that visible, not fatal.
    Ok(json.unwrap_or_else(|error| format!("{{\"error\":\"{error}\"}}")))
}
