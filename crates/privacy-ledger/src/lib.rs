//! The privacy budget ledger: every round's privacy cost to every partner is
//! a [`Charge`], keyed by (job, round, partner, unit, [`Release`]) so a replayed round is
//! never charged twice; charges compose into ε with `veil-privacy-accounting`;
//! the coordinator checks [`JobBudget`]s and each node its own
//! [`PartnerCap`]s before a round, producing [`BudgetRefusal`] values (events,
//! not log lines); both sides keep a durable copy ([`SqliteLedger`]) that can
//! be [`reconcile`]d; auditors get an [`AuditorReport`] as text, SVG and JSON.
//!
//! Pure logic except [`SqliteLedger`] and the `veil-ledger` command line
//! ([`cli`]); no clock is read (times are passed in).
//! This crate does not compute ε itself (`veil-privacy-accounting`), draw noise
//! (`veil-dp-noise`), or move charges between coordinator and node (the
//! coordinator and `client-node` do, over `veil-wire`).

mod audit;
mod budget;
mod charge;
pub mod cli;
mod error;
mod reconcile;
mod store;

pub use audit::{AuditorReport, CapRow, EpsilonSeries, JobRow, SeriesPoint, ValueRange};
pub use budget::{
    Budget, BudgetRefusal, JobBudget, PartnerCap, Period, PeriodWindow, Projection, Refuser, Scope,
    Spent, check_job_budget, check_partner_caps, compose, compose_rdp, project,
};
pub use charge::{
    Charge, ChargeKey, ChargeSpec, Mechanism, PrivacyUnit, RecordOutcome, Release, TrustModel,
};
pub use error::LedgerError;
pub use reconcile::{Mismatch, ReconcileReport, reconcile};
pub use store::SqliteLedger;
