//! The coordinator: a thin tonic layer around the `veil-federation` engine,
//! plus the operator's client commands.
//!
//! [`server::run`] serves the node and operator services on a listener until
//! a shutdown future resolves; `main.rs` only parses arguments and calls it.
//! What this crate does *not* do: decide anything about rounds (that is the
//! sans-IO engine in `veil-federation`), know what a job means (that is
//! `veil-job`), or train (that is `client-node` with `veil-models`).

pub mod audit;
mod auth;
pub mod convert;
mod metrics;
pub mod operator;
mod privacy;
pub mod privacy_test;
pub mod report;
pub mod server;
mod service;
mod state;

pub use server::{CoordinatorConfig, Transport, run};
