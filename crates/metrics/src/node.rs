//! A node's metric families, registered under `veil_node_`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::coordinator::{JobLabels, PhaseLabels};

/// Labels of a decline.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeclineLabels {
    /// The phase declined.
    pub phase: String,
    /// The reason, from the fixed list of decline codes.
    pub code: String,
}

/// Labels of per-source data counts.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// `transactions` or `profile`.
    pub source: String,
}

/// Labels of PII hits.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PiiLabels {
    /// `transactions` or `profile`.
    pub source: String,
    /// The kind of value found (`email`, `phone`, ...), never the value.
    pub kind: String,
}

/// Everything a node counts.
#[derive(Debug)]
pub struct NodeMetrics {
    /// Training rounds this node sent its (noised, possibly masked) update to.
    pub rounds_joined: Family<JobLabels, Counter>,
    /// Phases declined, by phase and decline code.
    pub declines: Family<DeclineLabels, Counter>,
    /// Releases sent: a plain reply or a masked input, each charged first.
    pub releases_sent: Family<PhaseLabels, Counter>,
    /// Submissions the coordinator refused.
    pub results_refused: Family<PhaseLabels, Counter>,
    /// Rows accepted from each source at load.
    pub rows_accepted: Family<SourceLabels, Counter>,
    /// Rows rejected at load (each written to the source's rejects file).
    pub rows_rejected: Family<SourceLabels, Counter>,
    /// PII values found and redacted, by source and kind.
    pub pii_redacted: Family<PiiLabels, Counter>,
    /// Records withheld by the k-anonymity pass.
    pub records_suppressed: Family<SourceLabels, Counter>,
    /// Columns replaced by keyed pseudonyms.
    pub columns_pseudonymised: Family<SourceLabels, Gauge>,
    /// The smallest equivalence class released (the k achieved).
    pub k_achieved: Family<SourceLabels, Gauge>,
}

impl NodeMetrics {
    /// Creates the families and registers them under `veil_node_`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            rounds_joined: Family::default(),
            declines: Family::default(),
            releases_sent: Family::default(),
            results_refused: Family::default(),
            rows_accepted: Family::default(),
            rows_rejected: Family::default(),
            pii_redacted: Family::default(),
            records_suppressed: Family::default(),
            columns_pseudonymised: Family::default(),
            k_achieved: Family::default(),
        };
        let registry = registry.sub_registry_with_prefix("veil_node");
        registry.register(
            "rounds_joined",
            "Training rounds this node sent its update to",
            metrics.rounds_joined.clone(),
        );
        registry.register(
            "declines",
            "Phases declined, by phase and decline code",
            metrics.declines.clone(),
        );
        registry.register(
            "releases_sent",
            "Releases sent (a plain reply or a masked input), each charged first",
            metrics.releases_sent.clone(),
        );
        registry.register(
            "results_refused",
            "Submissions the coordinator refused",
            metrics.results_refused.clone(),
        );
        registry.register(
            "rows_accepted",
            "Rows accepted at load",
            metrics.rows_accepted.clone(),
        );
        registry.register(
            "rows_rejected",
            "Rows rejected at load",
            metrics.rows_rejected.clone(),
        );
        registry.register(
            "pii_redacted",
            "PII values found and redacted, by kind",
            metrics.pii_redacted.clone(),
        );
        registry.register(
            "records_suppressed",
            "Records withheld by the k-anonymity pass",
            metrics.records_suppressed.clone(),
        );
        registry.register(
            "columns_pseudonymised",
            "Columns replaced by keyed pseudonyms",
            metrics.columns_pseudonymised.clone(),
        );
        registry.register(
            "k_achieved",
            "Size of the smallest equivalence class released",
            metrics.k_achieved.clone(),
        );
        metrics
    }

    /// Labels for one source.
    pub fn source(source: &str) -> SourceLabels {
        SourceLabels {
            source: source.to_owned(),
        }
    }
}
