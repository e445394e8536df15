//! The partner's own policy, enforced by its node whatever a job asks:
//! which aggregation modes and privacy settings it accepts, the secure-
//! aggregation floors below which it reveals nothing, and the privacy caps
//! its dataset may spend per calendar year across every job.

use serde::{Deserialize, Serialize};
use veil_federation::{AggregationMode, DeclineCode};
use veil_job::JobSpec;
use veil_privacy_ledger::{PartnerCap, Period, PrivacyUnit};

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
    /// Whether every job must train with customer-level DP (DP-SGD).
    #[serde(default)]
    pub require_customer_dp: bool,
    /// The smallest DP-SGD noise multiplier σ the node trains with.
    #[serde(default)]
    pub min_customer_noise_multiplier: f64,
    /// The largest customer-level ε one job may budget per partner.
    #[serde(default = "default_unlimited")]
    pub max_customer_epsilon_per_job: f64,
    /// The largest partner-level ε one job may budget per partner.
    #[serde(default = "default_unlimited")]
    pub max_partner_epsilon_per_job: f64,
    /// The smallest secure cohort the node joins.
    #[serde(default = "default_min_cohort")]
    pub min_cohort: usize,
    /// The smallest collusion fraction a secure job must tolerate.
    #[serde(default)]
    pub min_collusion_fraction: f64,
    /// The smallest security parameter (bits) a secure job may state.
    #[serde(default)]
    pub min_security_bits: u32,
    /// Whether this node takes part in an auditor's privacy test of a job
    /// that names it: it then adds the canaries of its installed audit kit
    /// to its training rows (docs/privacy-audit.md). Off by default: an
    /// audit job naming this node is refused.
    #[serde(default)]
    pub allow_privacy_audits: bool,
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

fn default_unlimited() -> f64 {
    f64::INFINITY
}

fn default_min_cohort() -> usize {
    veil_federation::secure::MIN_SECURE_COHORT
}

impl Default for NodePolicy {
    fn default() -> Self {
        Self {
            min_secure_threshold: default_min_secure_threshold(),
            allow_plain_aggregation: false,
            customer_epsilon_per_year: default_epsilon_cap(),
            partner_epsilon_per_year: default_epsilon_cap(),
            cap_delta: default_cap_delta(),
            require_customer_dp: false,
            min_customer_noise_multiplier: 0.0,
            max_customer_epsilon_per_job: default_unlimited(),
            max_partner_epsilon_per_job: default_unlimited(),
            min_cohort: default_min_cohort(),
            min_collusion_fraction: 0.0,
            min_security_bits: 0,
            allow_privacy_audits: false,
        }
    }
}

/// A policy refusal: the code that travels, and the detail the node logs.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyRefusal {
    /// What the coordinator is told.
    pub code: DeclineCode,
    /// What the partner's log says.
    pub detail: String,
}

impl NodePolicy {
    /// Why node `node_id` refuses an audit job naming it, if it does. Jobs
    /// that audit another partner are ordinary jobs here.
    pub fn audit_refusal(&self, spec: &JobSpec, node_id: &str) -> Option<PolicyRefusal> {
        let audit = spec.privacy_audit.as_ref()?;
        (audit.partner == node_id && !self.allow_privacy_audits).then(|| PolicyRefusal {
            code: DeclineCode::PolicyPrivacyAudit,
            detail: "partner policy refuses privacy audits (set policy.allow_privacy_audits to take part)"
                .to_owned(),
        })
    }

    /// Why this node refuses a job outright, if it does.
    pub fn refusal(&self, spec: &JobSpec) -> Option<PolicyRefusal> {
        let refuse = |code, detail: String| Some(PolicyRefusal { code, detail });
        let privacy = &spec.privacy;
        if matches!(spec.aggregation, AggregationMode::Plain) && !self.allow_plain_aggregation {
            return refuse(
                DeclineCode::PolicyPlainAggregation,
                "partner policy refuses plain aggregation (set policy.allow_plain_aggregation to allow it)"
                    .to_owned(),
            );
        }
        match &privacy.customers {
            None if self.require_customer_dp => {
                return refuse(
                    DeclineCode::PolicyCustomerDpRequired,
                    "partner policy requires customer-level DP; the job says customers = \"off\""
                        .to_owned(),
                );
            }
            Some(dp) if dp.noise_multiplier < self.min_customer_noise_multiplier => {
                return refuse(
                    DeclineCode::PolicyNoiseTooLow,
                    format!(
                        "the job's DP-SGD noise multiplier {} is below the policy's minimum {}",
                        dp.noise_multiplier, self.min_customer_noise_multiplier
                    ),
                );
            }
            _ => {}
        }
        for (unit, budget, maximum) in [
            (
                "customer",
                privacy.customer_epsilon,
                self.max_customer_epsilon_per_job,
            ),
            (
                "partner",
                privacy.partner_epsilon,
                self.max_partner_epsilon_per_job,
            ),
        ] {
            // A unit the job leaves unprotected spends nothing of it.
            let spends = match unit {
                "customer" => privacy.customers.is_some(),
                _ => !matches!(privacy.partners, veil_federation::PartnerPrivacy::Off),
            };
            if spends && !(budget <= maximum) {
                return refuse(
                    DeclineCode::PolicyEpsilonTooHigh,
                    format!(
                        "the job's {unit}-level budget ε = {budget} exceeds the policy's maximum {maximum} per job"
                    ),
                );
            }
        }
        if let AggregationMode::Secure(settings) = &spec.aggregation {
            if settings.collusion_fraction < self.min_collusion_fraction
                || settings.security_bits < self.min_security_bits
            {
                return refuse(
                    DeclineCode::PolicyCollusionTolerance,
                    format!(
                        "the job tolerates collusion {} at {} bits; the policy requires at least {} at {} bits",
                        settings.collusion_fraction,
                        settings.security_bits,
                        self.min_collusion_fraction,
                        self.min_security_bits
                    ),
                );
            }
            if (spec.max_participants as usize) < self.min_cohort {
                return refuse(
                    DeclineCode::PolicyCohortTooSmall,
                    format!(
                        "the job's cohorts hold at most {} nodes; the policy requires {}",
                        spec.max_participants, self.min_cohort
                    ),
                );
            }
        }
        None
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
    pub fn secure_policy(&self) -> veil_secure_aggregation::PartnerPolicy {
        veil_secure_aggregation::PartnerPolicy {
            minimum_threshold: self.min_secure_threshold,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(privacy: &str, aggregation: &str) -> JobSpec {
        let text = format!(
            r#"
name = "policy"
rounds = 2
min_participants = 3
max_participants = 4
[task]
kind = "churn"
cutoff = "2024-10-01"
horizon_days = 90
[model]
kind = "logistic_regression"
[training]
local_epochs = 1
batch_size = 32
learning_rate = 0.05
optimizer = "sgd"
[aggregation]
{aggregation}
[privacy]
{privacy}
"#
        );
        let wire = veil_job::file::JobFile::parse(&text)
            .unwrap_or_else(|error| panic!("{error}"))
            .to_wire();
        JobSpec::from_wire(&wire).unwrap_or_else(|error| panic!("{error}"))
    }

    /// One check per policy field: the job that breaks it, and the code.
    fn check(policy: NodePolicy, job: &JobSpec, expected: Option<DeclineCode>) {
        assert_eq!(
            policy.refusal(job).map(|refusal| refusal.code),
            expected,
            "{policy:?}"
        );
    }

    #[test]
    fn every_policy_requirement_refuses_with_its_own_code() {
        let dp = spec(
            "customers = \"dp-sgd\"\ncustomer_noise_multiplier = 1.0\ncustomer_epsilon = 4.0\npartners = \"off\"",
            "mode = \"secure\"\ncollusion_fraction = 0.2",
        );
        let no_dp = spec("customers = \"off\"", "mode = \"secure\"");
        let plain = spec("customers = \"dp-sgd\"", "mode = \"plain\"");
        check(NodePolicy::default(), &dp, None);
        check(
            NodePolicy::default(),
            &plain,
            Some(DeclineCode::PolicyPlainAggregation),
        );
        check(
            NodePolicy {
                require_customer_dp: true,
                ..NodePolicy::default()
            },
            &no_dp,
            Some(DeclineCode::PolicyCustomerDpRequired),
        );
        check(
            NodePolicy {
                min_customer_noise_multiplier: 1.5,
                ..NodePolicy::default()
            },
            &dp,
            Some(DeclineCode::PolicyNoiseTooLow),
        );
        check(
            NodePolicy {
                max_customer_epsilon_per_job: 3.0,
                ..NodePolicy::default()
            },
            &dp,
            Some(DeclineCode::PolicyEpsilonTooHigh),
        );
        check(
            NodePolicy {
                min_cohort: 5,
                ..NodePolicy::default()
            },
            &dp,
            Some(DeclineCode::PolicyCohortTooSmall),
        );
        check(
            NodePolicy {
                min_collusion_fraction: 0.3,
                ..NodePolicy::default()
            },
            &dp,
            Some(DeclineCode::PolicyCollusionTolerance),
        );
        check(
            NodePolicy {
                min_security_bits: 64,
                ..NodePolicy::default()
            },
            &dp,
            Some(DeclineCode::PolicyCollusionTolerance),
        );
    }

    #[test]
    fn an_audit_job_is_refused_by_the_named_partner_unless_its_policy_consents() {
        let mut audit = spec(
            "customers = \"dp-sgd\"\ncustomer_noise_multiplier = 1.0\ncustomer_epsilon = 4.0\npartners = \"off\"",
            "mode = \"secure\"",
        );
        audit.privacy_audit = Some(veil_job::PrivacyAuditRequest {
            partner: "retailer-a".to_owned(),
            commitment: [7; 32],
        });
        let refused = |policy: &NodePolicy, node: &str| {
            policy
                .audit_refusal(&audit, node)
                .map(|refusal| refusal.code)
        };
        let consenting = NodePolicy {
            allow_privacy_audits: true,
            ..NodePolicy::default()
        };
        assert_eq!(
            refused(&NodePolicy::default(), "retailer-a"),
            Some(DeclineCode::PolicyPrivacyAudit)
        );
        assert_eq!(refused(&consenting, "retailer-a"), None);
        // Another partner of the audited job trains as usual.
        assert_eq!(refused(&NodePolicy::default(), "retailer-b"), None);
        let policy: NodePolicy = toml::from_str("allow_privacy_audits = true\n")
            .unwrap_or_else(|error| panic!("{error}"));
        assert!(policy.allow_privacy_audits);
    }

    #[test]
    fn a_policy_file_reads_every_new_field() {
        let policy: NodePolicy = toml::from_str(
            "require_customer_dp = true\nmin_customer_noise_multiplier = 0.8\nmax_customer_epsilon_per_job = 3.0\nmin_cohort = 5\nmin_collusion_fraction = 0.25\nmin_security_bits = 40\n",
        )
        .unwrap_or_else(|error| panic!("{error}"));
        assert!(policy.require_customer_dp);
        assert_eq!(policy.min_cohort, 5);
        assert!(toml::from_str::<NodePolicy>("unknown_rule = 1").is_err());
    }
}
