//! client-node's end-to-end and command-line tests, in one test binary so that the
//! coordinator, the node and their generic code are compiled and linked once rather than
//! once per file. Tests that run federation jobs take [`support::whole_machine`] and run
//! alone; light ones take [`support::share_of_machine`] and run beside each other.

mod support;

mod audit_blocked;
mod concurrent_jobs;
mod console_browser;
mod coordinator_crash;
mod federation_e2e;
mod flooding_node;
mod holdout;
mod jobs_never_hang;
mod lifetime_e2e;
mod malicious_coordinator;
mod metrics_e2e;
mod mtls_roles;
mod network_faults;
mod node_killed;
mod otlp_traces;
mod partner_cli;
mod privacy_audit;
mod privacy_e2e;
mod reproducible;
mod rules_e2e;
mod scheme_hints;
mod secure_e2e;
mod segments_e2e;
mod wire_capture;
mod wire_round_trip;
