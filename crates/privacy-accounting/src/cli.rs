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

/// What `run` produced: the JSON line to print, and whether it carries a
/// finite guarantee at all.
#[derive(Debug, Clone, PartialEq)]
pub struct CliOutput {
    /// The JSON line for stdout. A `null` ε in it always comes with a
    /// `"reason"` string.
    pub json: String,
    /// Set when the headline ε is `+inf` (no guarantee): the binary then
    /// exits non-zero with this message, which names the parameter, so a
    /// script that only checks the exit status cannot take `null` for a
    /// small ε (in `jq`, `null < 1` is true).
    pub no_finite_guarantee: Option<String>,
}

/// Output of `epsilon`: the report and, whenever an ε is `null`, why.
#[derive(Debug, Serialize)]
struct EpsilonOutput {
    epsilon_pld: f64,
    epsilon_rdp: f64,
    epsilon: f64,
    /// Present exactly when some ε is not finite (printed as `null`).
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
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
    /// Present exactly when `epsilon` is not finite (printed as `null`).
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// The sentence for an infinite headline ε: the parameter first, because it
/// is the one the operator has to change.
fn no_guarantee_message(parameter: String, why: Option<String>) -> String {
    match why {
        Some(why) => format!("{parameter} gives no finite guarantee: {why}"),
        None => format!("{parameter} gives no finite guarantee"),
    }
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
    let report = accountant.epsilon(delta)?;
    // Only the headline ε is printed here (the PLD never covers these
    // rounds), so only its reason belongs next to it.
    let reason = (!report.epsilon.is_finite()).then(|| {
        no_guarantee_message(
            format!(
                "node sigma {node_sigma:?} over {} rounds with {} survivors, \
                 l2 sensitivity {:?} and delta {delta:?}",
                arguments.rounds, arguments.min_survivors, sensitivity.l2
            ),
            report.reason(),
        )
    });
    Ok(DistributedOutput {
        node_sigma,
        epsilon: report.epsilon,
        l2_sensitivity: sensitivity.l2,
        l1_sensitivity: sensitivity.l1,
        tau: summed_discrete_gaussian_tau(node_sigma, arguments.min_survivors),
        effective_noise_multiplier: mechanism.effective_noise_multiplier()?,
        reason,
    })
}

/// Output of `calibrate`.
#[derive(Debug, Serialize)]
struct CalibrationOutput {
    noise_multiplier: f64,
}

/// Executes a parsed command and returns the JSON line to print, and a
/// message when the result carries no finite guarantee.
pub fn run(cli: &Cli) -> Result<CliOutput, AccountingError> {
    let (json, no_finite_guarantee) = match cli.command {
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
            let report = accountant.epsilon(delta)?;
            let parameter = format!(
                "noise multiplier {noise_multiplier:?} (sampling rate {sampling_rate:?}, \
                 {steps} steps, delta {delta:?})"
            );
            let no_finite_guarantee = (!report.epsilon.is_finite())
                .then(|| no_guarantee_message(parameter.clone(), report.reason()));
            // With a finite headline only a secondary ε can be null; its own
            // reason (e.g. the PLD did not fit) says enough.
            let reason = no_finite_guarantee.clone().or_else(|| report.reason());
            let output = EpsilonOutput {
                epsilon_pld: report.epsilon_pld,
                epsilon_rdp: report.epsilon_rdp,
                epsilon: report.epsilon,
                reason,
            };
            (serde_json::to_string(&output), no_finite_guarantee)
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
            (
                serde_json::to_string(&CalibrationOutput { noise_multiplier }),
                None,
            )
        }
        Command::DistributedEpsilon {
            distributed,
            node_sigma,
            delta,
        } => {
            let output = distributed_output(&distributed, node_sigma, delta)?;
            let no_finite_guarantee = output.reason.clone();
            (serde_json::to_string(&output), no_finite_guarantee)
        }
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
            let output = distributed_output(&distributed, node_sigma, delta)?;
            let no_finite_guarantee = output.reason.clone();
            (serde_json::to_string(&output), no_finite_guarantee)
        }
    };
    // serde_json writes non-finite numbers as null and cannot otherwise fail
    // on these structs; should it fail, refuse (non-zero exit) rather than
    // print an error object with exit status 0.
    let json = json.map_err(|error| AccountingError::Output(error.to_string()))?;
    Ok(CliOutput {
        json,
        no_finite_guarantee,
    })
}
