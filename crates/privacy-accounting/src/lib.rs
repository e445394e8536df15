//! Differential privacy accounting: RDP and PLD accountants for the
//! Poisson-subsampled Gaussian, the distributed discrete Gaussian of DP-FedAvg
//! with secure aggregation (RDP), composition across rounds and jobs, the
//! exact analytic Gaussian, and noise calibration.
//!
//! This crate is pure computation: it does no IO, reads no clock and draws no
//! randomness. It does not sample noise (that is `veil-dp-noise`), does not
//! clip updates (also `veil-dp-noise`), and does not store budgets or ledgers
//! (the coordinator persists [`DpEvent`]s and replays them into an
//! [`Accountant`]). The `veil-privacy` binary is a thin CLI over [`cli::run`].

mod accountant;
mod analytic_gaussian;
mod bound;
mod calibration;
pub mod cli;
mod distributed;
mod error;
mod fft;
mod pld;
mod rdp;
mod special;

pub use accountant::{Accountant, DpEvent, EpsilonReport, PldUnbounded, RdpCurves};
pub use analytic_gaussian::{analytic_gaussian_delta, analytic_gaussian_epsilon};
pub use calibration::{CalibrationTarget, calibrate_noise_multiplier};
pub use distributed::{
    DiscreteEncoding, DistributedCalibrationTarget, DistributedDiscreteGaussian, MIN_NODE_SIGMA,
    RoundedSensitivity, calibrate_node_sigma, rounded_sensitivity, summed_discrete_gaussian_tau,
};
pub use error::AccountingError;
pub use pld::{Adjacency, BOTH_ADJACENCIES, DiscretePld, PldConfig, SubsampledGaussian};
pub use rdp::{
    FractionalCoefficients, RdpConversion, default_orders, epsilon_from_rdp,
    rdp_poisson_subsampled_gaussian,
};
pub use special::normal_upper_quantile;
