//! What a training job is, in one place: the validated [`JobSpec`], the job
//! file an operator writes, the conversion to and from the `veil.v1` wire
//! message, and the layout of the additive statistics vectors that nodes send.
//!
//! Both the coordinator and the client node validate a job through
//! [`JobSpec::from_wire`], so a job the coordinator accepted is one every node
//! can run. This crate does not train, aggregate or talk to the network:
//! training is `veil-models`, aggregation is `veil-federation`, the gRPC
//! services are in `coordinator` and `client-node`.

pub mod analysis;
pub mod basket_analysis;
pub mod export;
pub mod file;
pub mod lifetime_analysis;
pub mod privacy;
pub mod spec;
pub mod standard;
pub mod statistics;
pub mod wire_codes;

pub use privacy::{
    PlannedSpend, PrivacySpec, RoundParty, StatisticsPrivacy, check_planned_budget,
    customer_round_charge, final_evaluation_charge, job_charges, phase_charges, planned_spend,
    round_charges,
};
pub use spec::{JobSpec, JobSpecError, LocalTraining, PrivacyAuditRequest};
pub use standard::{STANDARD_JOB, STANDARD_SEGMENT_JOB, standard_job};
