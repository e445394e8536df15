//! Empirical privacy auditing statistics: turn an attacker's membership
//! guesses on randomly included canaries into a lower bound on ε that holds
//! with a stated confidence, from a single training run.
//!
//! - [`epsilon_lower_bound`]: Steinke, Nasr and Jagielski's one-run bound
//!   (NeurIPS 2023, Theorem 1 and the procedure of its Appendix D), valid for
//!   every (ε, δ)-DP mechanism.
//! - [`gaussian_epsilon_lower_bound`]: Mahloujifar, Melis and Chaudhuri's
//!   f-DP refinement (ICML 2025) with Gaussian trade-off curves, converted to
//!   ε at δ with Dong, Roth and Su's μ-GDP curve; tighter, but it assumes the
//!   mechanism's privacy is Gaussian-shaped.
//! - [`audit_scores`]: from per-canary attack scores to guesses (top `k_plus`
//!   "in", bottom `k_minus` "out"), the best bound over a [`GuessGrid`] with a
//!   Bonferroni correction for having chosen the best.
//!
//! Every ε here is a *lower* bound: a number that fails must fail towards
//! "no evidence" (ε = 0, p-value = 1), the opposite of the accountant, where
//! it fails towards ε = +∞.
//!
//! - [`canary`]: the auditor's seed, its commitment, the partner's kit and
//!   the canaries derived from the seed (HMAC-SHA-256), shared by the node
//!   that inserts them and the auditor's tool that attacks them.
//!
//! This crate is pure computation: no IO, no clock, no async; its only
//! randomness is a fresh audit seed from the system generator. It does not
//! insert canaries, run attacks or train anything (the node and
//! `coordinator audit privacy-test`), does not compute the accountant's
//! upper bound ε (`veil-privacy-accounting`, whose analytic Gaussian curve it reuses
//! for the μ-GDP conversion), and does not write reports or audit logs: its
//! results are serialisable for whoever does.

#![forbid(unsafe_code)]

pub mod canary;
mod error;
mod gaussian;
mod input;
mod one_run;
mod result;
mod scores;
mod special;

pub use error::AuditError;
pub use gaussian::gaussian_epsilon_lower_bound;
pub use input::{AuditLevel, GuessCounts};
pub use one_run::{epsilon_lower_bound, one_run_p_value};
pub use result::{BoundMethod, EpsilonLowerBound};
pub use scores::{GuessGrid, RankedCanaries, STANDARD_GRID_FRACTIONS, ScoreAudit, audit_scores};
