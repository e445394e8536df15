//! Analysis job files (segments, RFM): parsed, validated, round-tripped
//! through the wire, planned within their budget, and refused with the
//! field named when they cannot run.

use veil_federation::{Phase, ReleaseDirector};
use veil_job::analysis::Analysis;
use veil_job::file::JobFile;
use veil_job::privacy::{RoundParty, job_charges, phase_charges, planned_spend};
use veil_job::{JobSpec, JobSpecError};
use veil_privacy_ledger::{PrivacyUnit, TrustModel};

const SEGMENT_JOB: &str = r#"
name = "segments"
min_participants = 3
max_participants = 3
seed = 11

[task]
kind = "churn"
cutoff = "2024-06-30"
horizon_days = 90

[features]
names = ["recency_days", "frequency", "monetary", "tenure_days"]

[segment]
k = [3, 5]
iterations = 4
with_label = true

[privacy]
customer_epsilon = 1.0
delta = 1e-6
"#;

fn spec_of(text: &str) -> Result<JobSpec, JobSpecError> {
    let file = JobFile::parse(text).expect("parses");
    JobSpec::from_wire(&file.to_wire())
}

fn party(round: u32, cohort: usize) -> RoundParty<'static> {
    RoundParty {
        job_id: "job-1",
        round,
        partner_id: "bank-a",
        dataset_id: "bank-a",
        cohort,
    }
}

#[test]
fn a_segment_job_plans_one_round_per_release_within_its_budget() {
    let spec = spec_of(SEGMENT_JOB).expect("valid");
    let Some(Analysis::Segment(segment)) = &spec.analysis else {
        panic!("a segment job");
    };
    // Seeding, then 4 Lloyd steps and a profile per k.
    assert_eq!(segment.plan.releases().len(), 1 + 2 * (4 + 1));
    assert_eq!(spec.rounds, 11);
    let plan = spec.plan();
    assert!(plan.is_analysis());
    assert_eq!(plan.releases.len(), 11);
    assert_eq!(plan.parameter_count, (3 + 5) * 4, "every k's centroids");
    assert!(segment.plan.epsilon() <= 1.0);
    // The ledger's own composition of the charges agrees with the plan.
    let spent = planned_spend(&spec).expect("plans");
    assert_eq!(spent.len(), 1, "customer-level only");
    assert_eq!(spent[0].unit, PrivacyUnit::Customer);
    assert!(
        spent[0].epsilon <= 1.0 && spent[0].epsilon > 0.5,
        "the ledger composes to {}",
        spent[0].epsilon
    );
    let charges = job_charges(&spec, party(1, 3)).expect("charges");
    assert_eq!(charges.len(), 11);
    // Noise calibrated for one honest input is each node's own: local.
    let expected = if segment.plan.releases()[0].min_survivors == 1 {
        TrustModel::LocalDpSgd
    } else {
        TrustModel::Distributed
    };
    assert!(charges.iter().all(|charge| charge.trust_model == expected));
}

#[test]
fn a_segment_job_round_trips_through_the_wire() {
    let spec = spec_of(SEGMENT_JOB).expect("valid");
    let again = JobSpec::from_wire(&spec.to_wire()).expect("valid again");
    assert_eq!(again, spec);
}

#[test]
fn each_release_is_charged_and_a_round_outside_the_plan_is_refused() {
    let spec = spec_of(SEGMENT_JOB).expect("valid");
    let first = phase_charges(&spec, Phase::Release, party(1, 3)).expect("charged");
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].round, 1);
    let outside = phase_charges(&spec, Phase::Release, party(12, 3));
    assert!(outside.is_err(), "round 12 of 11 releases: {outside:?}");
}

#[test]
fn the_first_release_is_seeding_with_no_parameters_and_later_ones_need_the_sums_before() {
    let spec = spec_of(SEGMENT_JOB).expect("valid");
    assert_eq!(spec.release_parameters(0, &[]), Ok(Vec::new()));
    // Release 1 needs release 0's sum; without it the replay is at release 0.
    let refused = spec.release_parameters(1, &[]);
    assert!(refused.is_err(), "{refused:?}");
}

#[test]
fn an_rfm_job_has_one_release_and_twelve_cut_points() {
    let text = r#"
name = "rfm"
min_participants = 3
max_participants = 3

[task]
kind = "churn"
cutoff = "2024-06-30"
horizon_days = 90

[rfm]

[privacy]
customer_epsilon = 0.5
"#;
    let spec = spec_of(text).expect("valid");
    assert_eq!(spec.rounds, 1);
    assert_eq!(spec.plan().parameter_count, 12);
    assert_eq!(spec.release_parameters(0, &[]), Ok(Vec::new()));
    let again = JobSpec::from_wire(&spec.to_wire()).expect("valid again");
    assert_eq!(again, spec);
}

#[test]
fn analysis_settings_that_cannot_run_name_their_field() {
    let cases = [
        (
            SEGMENT_JOB.replace("kind = \"churn\"", "kind = \"spend\""),
            "segment.with_label",
        ),
        (
            SEGMENT_JOB.replace("delta = 1e-6", "delta = 1e-6\ncustomers = \"off\""),
            "privacy.customers",
        ),
        (
            SEGMENT_JOB.replace("delta = 1e-6", "delta = 1e-6\npartners = \"distributed\""),
            "privacy.partners",
        ),
        (SEGMENT_JOB.replace("k = [3, 5]", "k = []"), "segment"),
        (
            SEGMENT_JOB.replace("customer_epsilon = 1.0", "customer_epsilon = inf"),
            "privacy.customer_epsilon",
        ),
    ];
    for (text, field) in cases {
        let error = spec_of(&text).expect_err("refused");
        assert_eq!(error.field, field, "{error}");
    }
    let both = format!("{SEGMENT_JOB}\n[rfm]\n");
    let error = JobFile::parse(&both).expect_err("one analysis per job");
    assert!(error.to_string().contains("only one of"), "{error}");
}

#[test]
fn a_training_job_still_needs_its_model_and_rounds() {
    let text = SEGMENT_JOB.replace(
        "[segment]\nk = [3, 5]\niterations = 4\nwith_label = true\n",
        "",
    );
    let error = spec_of(&text).expect_err("no model");
    assert_eq!(error.field, "model");
}

#[test]
fn under_plain_aggregation_each_node_noises_for_itself_and_the_ledger_takes_it_as_local() {
    let text = SEGMENT_JOB.replace("[privacy]", "[aggregation]\nmode = \"plain\"\n\n[privacy]");
    let spec = spec_of(&text).expect("valid");
    let Some(Analysis::Segment(segment)) = &spec.analysis else {
        panic!("a segment job");
    };
    assert!(
        segment
            .plan
            .releases()
            .iter()
            .all(|release| release.min_survivors == 1),
        "no other node's noise to count on"
    );
    for charge in job_charges(&spec, party(1, 0)).expect("charges") {
        assert_eq!(charge.trust_model, TrustModel::LocalDpSgd);
        veil_privacy_ledger::Charge::new(charge, 0).expect("a local discrete Gaussian");
    }
    // A secure job's releases are distributed noise for its smallest cohort.
    let secure = spec_of(SEGMENT_JOB).expect("valid");
    let Some(Analysis::Segment(secure_segment)) = &secure.analysis else {
        panic!("a segment job");
    };
    assert!(secure_segment.plan.releases()[0].min_survivors >= 1);
    assert!(phase_charges(&secure, Phase::Release, party(1, 3)).is_ok());
}

#[test]
fn a_lifetime_value_job_plans_two_local_gaussian_releases_within_its_budget() {
    let text = r#"
name = "clv"
min_participants = 3
max_participants = 3

[task]
kind = "churn"
cutoff = "2024-06-30"
horizon_days = 90

[lifetime_value]
min_spend = 1.0
max_spend = 500.0
holdout_days = 120

[privacy]
customer_epsilon = 1.0
delta = 1e-6
"#;
    let spec = spec_of(text).expect("valid");
    assert_eq!(spec.rounds, 2, "the histogram and the holdout check");
    assert_eq!(
        spec.plan().parameter_count,
        7,
        "r, alpha, a, b, p, q, gamma"
    );
    let charges = job_charges(&spec, party(1, 3)).expect("charges");
    assert_eq!(charges.len(), 2);
    assert!(
        charges
            .iter()
            .all(|charge| charge.trust_model == TrustModel::LocalDpSgd)
    );
    let spent = planned_spend(&spec).expect("plans");
    assert!(
        spent[0].epsilon <= 1.0 && spent[0].epsilon > 0.8,
        "{:?}",
        spent[0]
    );
    let again = JobSpec::from_wire(&spec.to_wire()).expect("valid again");
    assert_eq!(again, spec);
    let bad = text.replace("min_spend = 1.0", "min_spend = 0.0");
    assert_eq!(
        spec_of(&bad).expect_err("refused").field,
        "lifetime_value.min_spend"
    );
}
