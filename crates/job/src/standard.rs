//! The standard demo-size churn job: what the README's demo runs, and the
//! template the end-to-end tests start from.
//!
//! The text has two placeholders, `{cutoff}` and `{horizon}`, which the demo
//! fills from the generated data's suggested cutoff.

use crate::file::JobFile;

/// The demo's job: churn, MLP(64,32), FedAvg with Adam locally.
pub const STANDARD_JOB: &str = r#"
name = "demo-churn"
rounds = 12
min_participants = 3
max_participants = 3
holdout_fraction = 0.25
seed = 7

[task]
kind = "churn"
cutoff = "{cutoff}"
horizon_days = {horizon}

[model]
kind = "mlp"
hidden = [64, 32]

[training]
local_epochs = 3
batch_size = 64
learning_rate = 0.025
optimizer = "adam"

[strategy]
kind = "fedavg"

# Secure aggregation (SecAgg+) is the default; shown here for reference.
[aggregation]
mode = "secure"
clip_range = 1.0
modulus_bits = 32
max_weight = 100000

# Customer-level DP-SGD at every partner: full-batch Poisson steps (q = 1),
# 3 per round, sigma = 8.7, clip 5; with the noisy evaluation of the final
# model (statistics noise 5, the default) and nothing else released:
# epsilon = 2.995 per partner over 12 rounds (delta = 1e-5). Partner-level
# noise is off: with three partners no noise level gives both a useful model
# and a meaningful partner-level epsilon.
[privacy]
customers = "dp-sgd"
customer_noise_multiplier = 8.7
customer_clip_norm = 5.0
customer_sampling_rate = 1.0
customer_epsilon = 3.5
partners = "off"
delta = 1e-5

[timeouts]
feature_stats_secs = 60
train_secs = 120
evaluate_secs = 60
"#;

/// The demo's segmentation job: shared customer segments over four
/// behaviour features at k = 3 and 5 (the noised cost of each is released,
/// for the elbow), at customer-level ε = 1 per partner for the whole job.
/// `{cutoff}` and `{horizon}` as in [`STANDARD_JOB`]; the task is the churn
/// label, whose rate each segment reports.
pub const STANDARD_SEGMENT_JOB: &str = r#"
name = "demo-segments"
min_participants = 3
max_participants = 3
seed = 7

[task]
kind = "churn"
cutoff = "{cutoff}"
horizon_days = {horizon}

[features]
names = ["recency_days", "frequency", "monetary", "tenure_days"]

[segment]
k = [3, 5]
iterations = 5
with_label = true

# Every release (the seeding histogram, 5 Lloyd steps and a profile per k) is
# noised at the partners with the distributed discrete Gaussian and summed by
# secure aggregation; all of them together spend at most this.
[privacy]
customer_epsilon = 1.0
delta = 1e-6

[timeouts]
feature_stats_secs = 30
"#;

/// The standard job as a typed [`JobFile`] for `cutoff` (YYYY-MM-DD, the
/// last day of history) and a label window of `horizon_days`: the start of
/// every job a test or benchmark builds. Change its fields, not its text, so
/// that a change to the template breaks the build instead of silently
/// leaving a text replacement with nothing to replace.
pub fn standard_job(cutoff: &str, horizon_days: u32) -> JobFile {
    let text = STANDARD_JOB
        .replace("{cutoff}", cutoff)
        .replace("{horizon}", &horizon_days.to_string());
    match JobFile::parse(&text) {
        Ok(file) => file,
        // The template is a constant checked by this module's tests; a
        // failure here is a bug in this crate, not bad input.
        Err(error) => unreachable!("the standard job template does not parse: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use veil_privacy_ledger::{Charge, PrivacyUnit};

    use super::*;
    use crate::JobSpec;

    /// The demo job's customer-level ε per partner over all its rounds,
    /// statistics releases included, as the ledgers will compose it.
    fn demo_customer_epsilon(template: &str) -> f64 {
        let text = template
            .replace("{cutoff}", "2025-06-30")
            .replace("{horizon}", "60");
        let spec = JobSpec::from_wire(&JobFile::parse(&text).unwrap().to_wire()).unwrap();
        let party = crate::RoundParty {
            job_id: "demo",
            round: 1,
            partner_id: "partner-0",
            dataset_id: "partner-0",
            cohort: 3,
        };
        let charges: Vec<Charge> = crate::job_charges(&spec, party)
            .unwrap()
            .into_iter()
            .filter(|charge| charge.unit == PrivacyUnit::Customer)
            .map(|charge| Charge::new(charge, 0).unwrap())
            .collect();
        // Every round, and the final evaluation under its own key.
        assert_eq!(charges.len(), spec.rounds as usize + 1);
        let mut accountant = veil_privacy_accounting::Accountant::new();
        for charge in &charges {
            charge.mechanism.compose_into(&mut accountant).unwrap();
        }
        let report = accountant.epsilon(spec.privacy.delta).unwrap();
        report.epsilon_pld.min(report.epsilon_rdp)
    }

    #[test]
    fn the_standard_job_parses_for_any_cutoff_and_is_valid() {
        let file = standard_job("2024-10-02", 90);
        assert_eq!(file.rounds, 12);
        assert_eq!(file.task.cutoff, "2024-10-02");
        JobSpec::from_wire(&file.to_wire()).unwrap();
    }

    #[test]
    fn the_demo_segmentation_is_valid_and_spends_at_most_one_customer_epsilon() {
        let text = STANDARD_SEGMENT_JOB
            .replace("{cutoff}", "2025-06-30")
            .replace("{horizon}", "60");
        let spec = JobSpec::from_wire(&JobFile::parse(&text).unwrap().to_wire()).unwrap();
        assert_eq!(spec.rounds, 1 + 2 * 6);
        let spent = crate::planned_spend(&spec).unwrap();
        assert_eq!(spent.len(), 1);
        assert!(spent[0].epsilon <= 1.0, "{:?}", spent[0]);
    }

    #[test]
    fn the_demo_spends_at_most_three_customer_epsilon_per_partner() {
        let epsilon = demo_customer_epsilon(STANDARD_JOB);
        println!("demo customer-level epsilon per partner: {epsilon:.4}");
        assert!(epsilon <= 3.0, "{epsilon}");
        assert!(epsilon > 2.5, "the demo should use its budget: {epsilon}");
    }
}
