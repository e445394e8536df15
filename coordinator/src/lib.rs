//! The coordinator: a thin tonic layer around the `veil-federation` engine,
//! plus the operator's client commands.
//!
//! [`server::run`] serves the node and operator services on a listener until
//! a shutdown future resolves. `main.rs` only parses arguments and calls into
//! this crate: [`operator`] for the operator's client commands, [`ca_admin`]
//! and [`audit_admin`] for the CA and the auditor's offline commands,
//! [`report`] and [`privacy_test`] for reports and empirical privacy tests,
//! [`console`] for the operators' and auditors' web console.
//! What this crate does *not* do: decide anything about rounds (that is the
//! sans-IO engine in `veil-federation`), know what a job means (that is
//! `veil-job`), or train (that is `client-node` with `veil-models`).

pub mod audit;
pub mod audit_admin;
mod auth;
pub mod ca_admin;
pub mod console;
pub mod convert;
pub mod intake;
mod member_limits;
mod metrics;
pub mod operator;
mod privacy;
pub mod privacy_test;
pub mod report;
pub mod rules;
pub mod server;
mod service;
mod spans;
mod state;
mod submission;

pub use member_limits::MemberLimits;
pub use server::{CoordinatorConfig, Transport, run};
