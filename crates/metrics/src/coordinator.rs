//! The coordinator's metric families, registered under `veil_coordinator_`.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::write_latency_buckets;

/// Labels of per-job counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    /// The job id.
    pub job: String,
}

impl JobLabels {
    /// Labels for one job.
    pub fn new(job: &str) -> Self {
        Self {
            job: job.to_owned(),
        }
    }
}

/// Labels of per-phase metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// `feature_stats`, `train` or `evaluate`.
    pub phase: String,
}

impl PhaseLabels {
    /// Labels for one phase, by its display name.
    pub fn new(phase: impl std::fmt::Display) -> Self {
        Self {
            phase: phase.to_string(),
        }
    }
}

/// Labels of the ε gauges.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EpsilonLabels {
    /// The job id.
    pub job: String,
    /// The partner, as its certificate names it (the node id).
    pub partner: String,
    /// `customer` or `partner`: whose privacy the ε is.
    pub unit: String,
}

/// Labels of the flood-limit counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    /// `rate` or `concurrency`: which per-node limit refused the request.
    pub limit: String,
}

impl LimitLabels {
    /// Labels for one limit.
    pub fn new(limit: &str) -> Self {
        Self {
            limit: limit.to_owned(),
        }
    }
}

/// Phase durations run from seconds (demo) to the train timeout (minutes):
/// 50 ms to about 27 minutes in 16 doublings.
fn phase_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 16))
}

/// Everything the coordinator counts. Cheap to update (atomics); shared as
/// an `Arc` between the services, the engine's event loop and the ledgers.
#[derive(Debug)]
pub struct CoordinatorMetrics {
    /// Training rounds whose first phase attempt opened.
    pub rounds_started: Family<JobLabels, Counter>,
    /// Rounds whose aggregate was committed (charged, audited, released).
    pub rounds_committed: Family<JobLabels, Counter>,
    /// Rounds that ended without a committed update: abandoned after a
    /// release, or under way when their job failed.
    pub rounds_failed: Family<JobLabels, Counter>,
    /// Rounds the privacy budget refused before they ran.
    pub rounds_refused: Family<JobLabels, Counter>,
    /// Seconds from a phase's first opening to its completion or abandonment.
    pub phase_duration: Family<PhaseLabels, Histogram, fn() -> Histogram>,
    /// gRPC message bytes received from nodes and operators (decoded
    /// protobuf size, at the service edge).
    pub received_bytes: Counter,
    /// gRPC message bytes sent to nodes and operators.
    pub sent_bytes: Counter,
    /// Nodes heard from within the liveness window.
    pub connected_nodes: Gauge,
    /// Nodes registered since the coordinator started.
    pub registered_nodes: Gauge,
    /// Invitees of secure phases whose input is not in the unmasked sum.
    pub secure_dropouts: Family<PhaseLabels, Counter>,
    /// Secure phases that completed although invitees dropped out: the
    /// survivors' shares removed the dropouts' masks.
    pub secure_recoveries: Family<PhaseLabels, Counter>,
    /// Secure-aggregation attempts that failed (the phase was retried or its
    /// job failed).
    pub secure_failed_attempts: Family<PhaseLabels, Counter>,
    /// Phases a node declined (vetoes included), by phase.
    pub declines: Family<PhaseLabels, Counter>,
    /// Replies refused as malformed or late, by phase.
    pub replies_rejected: Family<PhaseLabels, Counter>,
    /// ε spent so far per job, partner and unit: RDP composition of the
    /// partner's charges in the job at the job budget's δ (an upper bound,
    /// like `veil-ledger report`'s series).
    pub epsilon_spent: Family<EpsilonLabels, Gauge<f64, AtomicU64>>,
    /// The job budget's ε limit per job and unit (partner label empty).
    pub epsilon_budget: Family<EpsilonLabels, Gauge<f64, AtomicU64>>,
    /// Seconds to record one charge in the privacy ledger (SQLite, synced).
    pub ledger_write: Histogram,
    /// Seconds to append one entry to the signed audit log (synced).
    pub audit_write: Histogram,
    /// Node requests refused at the gRPC edge with `ResourceExhausted`, by the per-node
    /// limit they broke (the node is named in the coordinator's log, not in a label).
    pub requests_limited: Family<LimitLabels, Counter>,
}

impl CoordinatorMetrics {
    /// Creates the families and registers them in `registry` under
    /// `veil_coordinator_`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            rounds_started: Family::default(),
            rounds_committed: Family::default(),
            rounds_failed: Family::default(),
            rounds_refused: Family::default(),
            phase_duration: Family::new_with_constructor(phase_histogram),
            received_bytes: Counter::default(),
            sent_bytes: Counter::default(),
            connected_nodes: Gauge::default(),
            registered_nodes: Gauge::default(),
            secure_dropouts: Family::default(),
            secure_recoveries: Family::default(),
            secure_failed_attempts: Family::default(),
            declines: Family::default(),
            replies_rejected: Family::default(),
            epsilon_spent: Family::default(),
            epsilon_budget: Family::default(),
            ledger_write: Histogram::new(write_latency_buckets()),
            audit_write: Histogram::new(write_latency_buckets()),
            requests_limited: Family::default(),
        };
        let registry = registry.sub_registry_with_prefix("veil_coordinator");
        registry.register(
            "rounds_started",
            "Training rounds whose first phase attempt opened",
            metrics.rounds_started.clone(),
        );
        registry.register(
            "rounds_committed",
            "Rounds whose aggregate was committed (charged, audited, released)",
            metrics.rounds_committed.clone(),
        );
        registry.register(
            "rounds_failed",
            "Rounds that ended without a committed update",
            metrics.rounds_failed.clone(),
        );
        registry.register(
            "rounds_refused",
            "Rounds refused by the privacy budget before they ran",
            metrics.rounds_refused.clone(),
        );
        registry.register_with_unit(
            "phase_duration",
            "Time from a phase's first opening to its completion or abandonment",
            Unit::Seconds,
            metrics.phase_duration.clone(),
        );
        registry.register_with_unit(
            "received",
            "gRPC message bytes received (protobuf size, at the service edge)",
            Unit::Bytes,
            metrics.received_bytes.clone(),
        );
        registry.register_with_unit(
            "sent",
            "gRPC message bytes sent (protobuf size, at the service edge)",
            Unit::Bytes,
            metrics.sent_bytes.clone(),
        );
        registry.register(
            "connected_nodes",
            "Nodes heard from within the liveness window",
            metrics.connected_nodes.clone(),
        );
        registry.register(
            "registered_nodes",
            "Nodes registered since the coordinator started",
            metrics.registered_nodes.clone(),
        );
        registry.register(
            "secure_dropouts",
            "Invitees of secure phases whose input is not in the unmasked sum",
            metrics.secure_dropouts.clone(),
        );
        registry.register(
            "secure_recoveries",
            "Secure phases completed although invitees dropped out",
            metrics.secure_recoveries.clone(),
        );
        registry.register(
            "secure_failed_attempts",
            "Secure-aggregation attempts that failed",
            metrics.secure_failed_attempts.clone(),
        );
        registry.register(
            "declines",
            "Phases a node declined, vetoes included",
            metrics.declines.clone(),
        );
        registry.register(
            "replies_rejected",
            "Node replies refused as malformed, late or unexpected",
            metrics.replies_rejected.clone(),
        );
        registry.register(
            "epsilon_spent",
            "Epsilon spent per job, partner and unit (RDP bound at the job budget's delta)",
            metrics.epsilon_spent.clone(),
        );
        registry.register(
            "epsilon_budget",
            "The job budget's epsilon per job and unit",
            metrics.epsilon_budget.clone(),
        );
        registry.register_with_unit(
            "ledger_write",
            "Time to record one charge in the privacy ledger",
            Unit::Seconds,
            metrics.ledger_write.clone(),
        );
        registry.register_with_unit(
            "audit_write",
            "Time to append one entry to the signed audit log",
            Unit::Seconds,
            metrics.audit_write.clone(),
        );
        registry.register(
            "requests_limited",
            "Node requests refused with ResourceExhausted by a per-node rate or concurrency limit",
            metrics.requests_limited.clone(),
        );
        metrics
    }
}
