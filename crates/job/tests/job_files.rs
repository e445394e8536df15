//! Job files and wire specs: defaults, round trips, and errors that name the field.

use veil_job::file::JobFile;
use veil_job::{JobSpec, JobSpecError};

const DEMO: &str = r#"
name = "churn-demo"
rounds = 5
min_participants = 3
max_participants = 3

[task]
kind = "churn"
cutoff = "2024-09-30"
horizon_days = 90

[model]
kind = "mlp"
hidden = [64, 32]

[training]
local_epochs = 2
batch_size = 64
learning_rate = 0.005
optimizer = "adam"

[strategy]
kind = "fedprox"
proximal_mu = 0.05
"#;

fn check_error(edit: impl Fn(&mut veil_wire::v1::JobSpec), field: &str, fragment: &str) {
    let mut wire = JobFile::parse(DEMO).unwrap().to_wire();
    edit(&mut wire);
    let error: JobSpecError = JobSpec::from_wire(&wire).unwrap_err();
    assert_eq!(error.field, field, "{error}");
    assert!(
        error.to_string().contains(fragment),
        "'{error}' should mention '{fragment}'"
    );
}

#[test]
fn a_job_file_round_trips_through_the_wire() {
    let spec = JobSpec::from_wire(&JobFile::parse(DEMO).unwrap().to_wire()).unwrap();
    assert_eq!(spec.rounds, 5);
    assert_eq!(
        spec.features.features.len(),
        veil_behaviour_features::FeatureName::ALL.len()
    );
    assert_eq!(spec.strategy.proximal_mu(), 0.05);
    assert_eq!(JobSpec::from_wire(&spec.to_wire()).unwrap(), spec);
    let plan = spec.plan();
    assert_eq!(plan.parameter_count, spec.model_spec().parameter_count());
}

#[test]
fn secure_aggregation_is_the_default_and_plain_must_be_asked_for() {
    let spec = JobSpec::from_wire(&JobFile::parse(DEMO).unwrap().to_wire()).unwrap();
    assert_eq!(spec.aggregation.name(), "secure");
    let plain_text = format!("{DEMO}\n[aggregation]\nmode = \"plain\"\n");
    let plain = JobSpec::from_wire(&JobFile::parse(&plain_text).unwrap().to_wire()).unwrap();
    assert_eq!(plain.aggregation.name(), "plain");
    assert_eq!(JobSpec::from_wire(&plain.to_wire()).unwrap(), plain);
    check_error(
        |w| {
            if let Some(aggregation) = w.aggregation.as_mut() {
                aggregation.mode = "homomorphic".into();
            }
        },
        "aggregation.mode",
        "homomorphic",
    );
    check_error(
        |w| w.min_participants = 2,
        "min_participants",
        "secure aggregation",
    );
    check_error(
        |w| {
            if let Some(aggregation) = w.aggregation.as_mut() {
                aggregation.modulus_bits = 40;
            }
        },
        "aggregation.modulus_bits",
        "40",
    );
}

#[test]
fn unknown_names_are_refused_by_field_and_value() {
    check_error(|w| w.task = "fraud".into(), "task.kind", "fraud");
    check_error(
        |w| w.features = vec!["recency_days".into(), "shoe_size".into()],
        "features.names",
        "shoe_size",
    );
    check_error(
        |w| w.model.as_mut().unwrap().kind = "transformer".into(),
        "model.kind",
        "transformer",
    );
    check_error(
        |w| w.strategy.as_mut().unwrap().kind = "fedmagic".into(),
        "strategy.kind",
        "fedmagic",
    );
    check_error(
        |w| w.cutoff = "30/09/2024".into(),
        "task.cutoff",
        "30/09/2024",
    );
    check_error(|w| w.min_participants = 0, "plan", "min_participants");
    check_error(|w| w.max_participants = 1, "plan", "max_participants");
}

#[test]
fn a_malformed_job_file_names_the_problem() {
    let error = JobFile::parse("name = \"x\"\nrounds = \"five\"\n").unwrap_err();
    assert!(error.to_string().contains("rounds"), "{error}");
}

#[test]
fn partner_level_dp_without_customer_level_dp_is_refused() {
    // Without DP-SGD, feature sums, example counts and evaluation statistics
    // leave exactly: a partner-level ε would be a false claim.
    for mode in ["distributed", "central"] {
        check_error(
            |wire| {
                let privacy = wire.privacy.get_or_insert_with(Default::default);
                privacy.customers = "off".to_owned();
                privacy.partners = mode.to_owned();
            },
            "privacy.partners",
            "needs customers",
        );
    }
    // Saying nothing about partners then means no partner-level claim.
    let mut wire = JobFile::parse(DEMO).unwrap().to_wire();
    wire.privacy.get_or_insert_with(Default::default).customers = "off".to_owned();
    let spec = JobSpec::from_wire(&wire).unwrap();
    assert_eq!(spec.privacy.partners, veil_federation::PartnerPrivacy::Off);
}

#[test]
fn collusion_a_small_cohort_cannot_tolerate_is_refused_at_submission() {
    check_error(
        |wire| {
            let aggregation = wire.aggregation.get_or_insert_with(Default::default);
            aggregation.collusion_fraction = 0.45;
        },
        "plan",
        "cannot tolerate",
    );
}

/// A job is planned whole before it runs: every round and the final
/// evaluation, composed. A budget just above the plan fits; just below, the
/// job is refused, naming the planned ε, the rounds and the budget. More
/// rounds plan more ε.
#[test]
fn a_job_is_planned_whole_and_refused_when_its_plan_exceeds_its_budget() {
    let spec_with = |rounds: u32, budget: f64| {
        let mut file = JobFile::parse(DEMO).unwrap();
        file.rounds = rounds;
        file.privacy.customers = Some("dp-sgd".to_owned());
        file.privacy.partners = Some("off".to_owned());
        file.privacy.customer_epsilon = Some(budget);
        JobSpec::from_wire(&file.to_wire()).unwrap()
    };
    let planned = veil_job::planned_spend(&spec_with(5, 100.0)).unwrap();
    assert_eq!(planned.len(), 1, "customer level only: {planned:?}");
    let epsilon = planned[0].epsilon;
    assert!(epsilon.is_finite() && epsilon > 0.0, "{epsilon}");
    let longer = veil_job::planned_spend(&spec_with(10, 100.0)).unwrap();
    assert!(longer[0].epsilon > epsilon, "{longer:?} vs {epsilon}");
    assert!(veil_job::check_planned_budget(&spec_with(5, epsilon * 1.001)).is_ok());
    let below = epsilon * 0.999;
    let message = veil_job::check_planned_budget(&spec_with(5, below))
        .expect_err("over budget")
        .to_string();
    assert!(message.contains("privacy.customer_epsilon"), "{message}");
    assert!(
        message.contains(&format!("customer-level ε = {epsilon:.3}"))
            && message.contains("over its 5 rounds and final evaluation")
            && message.contains(&format!("above its budget of {below}")),
        "{message}"
    );
}
