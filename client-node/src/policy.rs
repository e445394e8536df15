//! The partner's own policy, enforced by its node whatever a job asks:
//! which aggregation modes it accepts, the secure-aggregation threshold
//! floor below which it will not reveal anything, and the privacy caps its
//! dataset may spend per calendar year across every job.

use serde::{Deserialize, Serialize};
use veil_federation::AggregationMode;
use veil_job::JobSpec;
use veil_ledger::{PartnerCap, Period, PrivacyUnit};

/// `[policy]` in the node config.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodePolicy {
    /// The lowest secure-aggregation threshold t the node accepts, and the
    /// fewest surviving neighbours it will unmask with.
    #[serde(default = "default_min_secure_threshold")]
    pub min_secure_threshold: usize,
    /// Whether the node joins jobs that aggregate in the clear. Off by
    /// default: a plain job shows the coordinator this partner's update.
    #[serde(default)]
    pub allow_plain_aggregation: bool,
    /// Customer-level ε this node's dataset may spend per calendar year,
    /// composed over every job (`inf` for no cap).
    #[serde(default = "default_epsilon_cap")]
    pub customer_epsilon_per_year: f64,
    /// Partner-level ε this node may spend per calendar year.
    #[serde(default = "default_epsilon_cap")]
    pub partner_epsilon_per_year: f64,
    /// δ at which the caps are measured.
    #[serde(default = "default_cap_delta")]
    pub cap_delta: f64,
}

fn default_epsilon_cap() -> f64 {
    8.0
}

fn default_cap_delta() -> f64 {
    1e-5
}

fn default_min_secure_threshold() -> usize {
    2
}

impl Default for NodePolicy {
    fn default() -> Self {
        Self {
            min_secure_threshold: default_min_secure_threshold(),
            allow_plain_aggregation: false,
            customer_epsilon_per_year: default_epsilon_cap(),
            partner_epsilon_per_year: default_epsilon_cap(),
            cap_delta: default_cap_delta(),
        }
    }
}

impl NodePolicy {
    /// Why this node refuses a job outright, if it does.
    pub fn refusal(&self, spec: &JobSpec) -> Option<String> {
        match spec.aggregation {
            AggregationMode::Plain if !self.allow_plain_aggregation => Some(
                "partner policy refuses plain aggregation (set policy.allow_plain_aggregation to allow it)"
                    .to_owned(),
            ),
            _ => None,
        }
    }

    /// The caps on `dataset_id`, one per privacy unit.
    pub fn caps(&self, dataset_id: &str) -> Vec<PartnerCap> {
        [
            (PrivacyUnit::Customer, self.customer_epsilon_per_year),
            (PrivacyUnit::Partner, self.partner_epsilon_per_year),
        ]
        .into_iter()
        .map(|(unit, epsilon)| PartnerCap {
            dataset_id: dataset_id.to_owned(),
            period: Period::CalendarYear,
            epsilon,
            delta: self.cap_delta,
            unit,
        })
        .collect()
    }

    /// The secure-aggregation policy handed to the protocol.
    pub fn secure_policy(&self) -> veil_secagg::PartnerPolicy {
        veil_secagg::PartnerPolicy {
            minimum_threshold: self.min_secure_threshold,
        }
    }
}
