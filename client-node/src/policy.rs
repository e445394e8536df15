//! The partner's own policy, enforced by its node whatever a job asks:
//! which aggregation modes it accepts and the secure-aggregation threshold
//! floor below which it will not reveal anything.

use serde::{Deserialize, Serialize};
use veil_federation::AggregationMode;
use veil_job::JobSpec;

/// `[policy]` in the node config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
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
}

fn default_min_secure_threshold() -> usize {
    2
}

impl Default for NodePolicy {
    fn default() -> Self {
        Self {
            min_secure_threshold: default_min_secure_threshold(),
            allow_plain_aggregation: false,
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

    /// The secure-aggregation policy handed to the protocol.
    pub fn secure_policy(&self) -> veil_secagg::PartnerPolicy {
        veil_secagg::PartnerPolicy {
            minimum_threshold: self.min_secure_threshold,
        }
    }
}
