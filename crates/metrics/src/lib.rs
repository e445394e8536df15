//! Veil's Prometheus metrics: the metric families the coordinator and each
//! node keep ([`CoordinatorMetrics`], [`NodeMetrics`]) and the plain-HTTP
//! endpoint that serves them in the text exposition format ([`serve`]).
//!
//! Every label value is one of: a job id, a partner (node) name as its
//! certificate names it, or a word from a fixed list (phase, unit, outcome,
//! decline code, PII kind, data source). No label ever carries a customer
//! value, a pseudonym or a statistic; `docs/metrics.md` lists each metric.
//!
//! What this crate does *not* do: decide when a metric changes (the
//! coordinator maps its engine events in `coordinator::metrics`, the node
//! counts in `client_node::node`), serve anything but `/metrics` (the
//! operators' console is `veil-console`), or trace (that is `tracing`).

#![forbid(unsafe_code)]

mod coordinator;
mod endpoint;
mod node;

pub use coordinator::{CoordinatorMetrics, EpsilonLabels, JobLabels, LimitLabels, PhaseLabels};
pub use endpoint::{MetricsError, OPENMETRICS_CONTENT_TYPE, encode, serve, spawn_endpoint};
pub use node::{DeclineLabels, NodeMetrics, PiiLabels, SourceLabels};
pub use prometheus_client::metrics::histogram::Histogram;
pub use prometheus_client::registry::Registry;

use prometheus_client::metrics::histogram::exponential_buckets;

/// Latency buckets from 0.5 ms to about 16 s (16 doublings): wide enough
/// for an fsync'd SQLite or audit-log append on a slow disk.
fn write_latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0005, 2.0, 16)
}
