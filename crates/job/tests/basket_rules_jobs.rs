//! Basket-rules job files: parsed, validated, round-tripped through the
//! wire, planned as one fixed-length release per level within their budget
//! and charged once per release; the coordinator's replay over simulated
//! partners' noised sums finds the planted pairs at ε = 1; a node refuses
//! candidates that are not item ids of the vocabulary.

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use veil_basket_rules::simulate::{SimulationConfig, category_name, simulate};
use veil_basket_rules::{BasketGrouping, Baskets, local_counts};
use veil_federation::{Phase, ReleaseDirector};
use veil_job::analysis::{Analysis, AnalysisOutcome};
use veil_job::basket_analysis::{BasketRules, candidates_from_parameters};
use veil_job::file::{BasketRulesSection, JobFile};
use veil_job::privacy::{RoundParty, job_charges, phase_charges, planned_spend};
use veil_job::{JobSpec, JobSpecError};
use veil_privacy_ledger::{Mechanism, PrivacyUnit, TrustModel};

const CATEGORIES: u32 = 24;
const PARTNERS: usize = 4;

const RULES_JOB: &str = r#"
name = "cross-sell"
min_participants = 4
max_participants = 4
seed = 5

[task]
kind = "churn"
cutoff = "2024-06-30"
horizon_days = 90

[basket_rules]
items = ["placeholder"]
min_support = 0.03
min_confidence = 0.2
max_itemset_size = 2
itemset_caps = [4]
max_candidates = 64
window_days = 28
top_n = 10

[privacy]
customer_epsilon = 1.0
delta = 1e-6
"#;

/// The job file with the simulation's vocabulary.
fn rules_file() -> JobFile {
    let mut file = JobFile::parse(RULES_JOB).expect("parses");
    section(&mut file).items = (0..CATEGORIES).map(category_name).collect();
    file
}

fn section(file: &mut JobFile) -> &mut BasketRulesSection {
    file.basket_rules.as_mut().expect("a basket-rules file")
}

fn spec_of(file: &JobFile) -> Result<JobSpec, JobSpecError> {
    JobSpec::from_wire(&file.to_wire())
}

fn job_of(spec: &JobSpec) -> &BasketRules {
    match &spec.analysis {
        Some(Analysis::BasketRules(job)) => job,
        other => panic!("a basket-rules job, got {other:?}"),
    }
}

fn party(round: u32, cohort: usize) -> RoundParty<'static> {
    RoundParty {
        job_id: "job-1",
        round,
        partner_id: "shop-a",
        dataset_id: "shop-a",
        cohort,
    }
}

#[test]
fn a_rules_job_plans_one_fixed_length_release_per_level_within_its_budget() {
    let spec = spec_of(&rules_file()).expect("valid");
    let job = job_of(&spec);
    assert_eq!(spec.rounds, 2, "one release per level");
    let plan = spec.plan();
    assert!(plan.is_analysis());
    // Level 1: every item, the basket total and the node count; level 2:
    // the candidate slots and the node count.
    assert_eq!(
        plan.releases,
        vec![CATEGORIES as usize + 2, 64 + 1],
        "fixed before any data"
    );
    assert_eq!(plan.parameter_count, 10 * (2 * 2 + 9));
    assert!(job.planned_epsilon() <= 1.0);
    let spent = planned_spend(&spec).expect("plans");
    assert_eq!(spent.len(), 1, "customer-level only");
    assert_eq!(spent[0].unit, PrivacyUnit::Customer);
    assert!(
        spent[0].epsilon <= 1.0 && spent[0].epsilon > 0.95,
        "the ledger composes to {} (the plan: {})",
        spent[0].epsilon,
        job.planned_epsilon()
    );
    let charges = job_charges(&spec, party(1, 4)).expect("charges");
    assert_eq!(charges.len(), 2);
    for charge in &charges {
        assert_eq!(charge.trust_model, TrustModel::Distributed);
        assert!(matches!(charge.mechanism, Mechanism::Gaussian { .. }));
    }
    let again = JobSpec::from_wire(&spec.to_wire()).expect("valid again");
    assert_eq!(again, spec);
}

#[test]
fn each_release_is_charged_once_and_a_round_outside_the_plan_is_refused() {
    let spec = spec_of(&rules_file()).expect("valid");
    for round in 1..=2 {
        let charges = phase_charges(&spec, Phase::Release, party(round, 4)).expect("charged");
        assert_eq!(charges.len(), 1);
        assert_eq!(charges[0].round, u64::from(round));
    }
    let outside = phase_charges(&spec, Phase::Release, party(3, 4));
    assert!(outside.is_err(), "round 3 of 2 releases: {outside:?}");
}

#[test]
fn under_plain_aggregation_each_node_noises_for_itself_and_the_ledger_takes_it_as_local() {
    let text = RULES_JOB.replace("[privacy]", "[aggregation]\nmode = \"plain\"\n\n[privacy]");
    let mut file = JobFile::parse(&text).expect("parses");
    section(&mut file).items = (0..CATEGORIES).map(category_name).collect();
    let spec = spec_of(&file).expect("valid");
    assert_eq!(job_of(&spec).noise.target().min_survivors, 1);
    for charge in job_charges(&spec, party(1, 0)).expect("charges") {
        assert_eq!(charge.trust_model, TrustModel::LocalDpSgd);
        veil_privacy_ledger::Charge::new(charge, 0).expect("a node's own noise");
    }
    // A secure job's charge is accepted by the ledger as distributed noise.
    let secure = spec_of(&rules_file()).expect("valid");
    for charge in job_charges(&secure, party(1, 4)).expect("charges") {
        veil_privacy_ledger::Charge::new(charge, 0).expect("distributed noise");
    }
}

/// One partner's release `index`, as `client-node` computes it.
fn node_release(
    job: &BasketRules,
    index: usize,
    parameters: &[f64],
    baskets: &Baskets,
    rng: &mut ChaCha20Rng,
) -> Vec<f64> {
    let candidates = candidates_from_parameters(job, index, parameters).expect("valid candidates");
    let mut counts =
        local_counts(baskets, &candidates, job.miner.itemset_caps[index], rng).expect("counts");
    counts.resize(job.count_len(index), 0);
    job.noise
        .release(index)
        .expect("planned")
        .add_node_noise(&mut counts, rng)
        .expect("noised");
    let mut statistics: Vec<f64> = counts.iter().map(|&count| count as f64).collect();
    statistics.push(1.0);
    statistics
}

#[test]
fn the_coordinators_replay_over_noised_sums_finds_the_planted_pairs_at_epsilon_one() {
    let simulation = simulate(&SimulationConfig {
        seed: 21,
        categories: CATEGORIES,
        partners: PARTNERS as u32,
        customers_per_partner: 1_500,
        days: 28,
        max_visits_per_customer: 1,
        mean_basket_size: 2.5,
        max_basket_size: 6,
        planted_pairs: 2,
        pair_rate: 0.3,
    })
    .expect("valid simulation");
    let partners = simulation
        .baskets(BasketGrouping::CustomerWindow)
        .expect("baskets");
    let spec = spec_of(&rules_file()).expect("valid");
    let job = job_of(&spec);
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let mut released: Vec<Vec<f64>> = Vec::new();
    for index in 0..job.levels() {
        let sums: Vec<&[f64]> = released.iter().map(Vec::as_slice).collect();
        let parameters = spec.release_parameters(index, &sums).expect("parameters");
        if index == 0 {
            assert!(parameters.is_empty(), "level 1 counts every item");
        }
        let mut sum = vec![0.0; job.count_len(index) + 1];
        for baskets in &partners {
            for (total, value) in
                sum.iter_mut()
                    .zip(node_release(job, index, &parameters, baskets, &mut rng))
            {
                *total += value;
            }
        }
        assert_eq!(sum.last(), Some(&(PARTNERS as f64)), "the noise shares");
        released.push(sum);
    }
    let sums: Vec<&[f64]> = released.iter().map(Vec::as_slice).collect();
    let Some(analysis) = &spec.analysis else {
        unreachable!("checked above")
    };
    let outcome = analysis
        .outcome(&sums, &spec.features.public_scaling(), spec.seed)
        .expect("an outcome");
    let AnalysisOutcome::BasketRules(outcome) = &outcome else {
        panic!("basket rules, got {outcome:?}");
    };
    for &(left, right) in &simulation.planted_pairs {
        assert!(
            outcome.itemsets.find(&[left, right]).is_some(),
            "planted pair ({left}, {right}) not found"
        );
        assert!(
            outcome
                .rules
                .iter()
                .any(|rule| rule.antecedent == [left] && rule.consequent == [right]),
            "no rule {left} -> {right} in {:?}",
            outcome.rules
        );
    }
    let result = spec.result_parameters(&sums).expect("a result");
    assert_eq!(result.len(), spec.plan().parameter_count);
    // The first slot holds the best rule: its antecedent's id plus one.
    assert_eq!(result[0], (outcome.rules[0].antecedent[0] + 1) as f32);
}

#[test]
fn a_node_refuses_candidates_that_are_not_item_ids_of_the_vocabulary() {
    let spec = spec_of(&rules_file()).expect("valid");
    let job = job_of(&spec);
    assert!(candidates_from_parameters(job, 1, &[0.0, 1.0, 2.0, 5.0]).is_ok());
    for (index, parameters) in [
        (0, vec![0.0]),
        (1, vec![0.0, 1.5]),
        (1, vec![0.0, -1.0]),
        (1, vec![0.0, f64::from(CATEGORIES)]),
        (1, vec![0.0, 1.0, 2.0]),
        (1, vec![1.0, 0.0]),
        (1, vec![0.0, f64::NAN]),
        (2, Vec::new()),
    ] {
        let refused = candidates_from_parameters(job, index, &parameters);
        assert!(refused.is_err(), "{index} {parameters:?}: {refused:?}");
    }
    let too_many: Vec<f64> = (0..65).flat_map(|_| [0.0, 1.0]).collect();
    assert!(candidates_from_parameters(job, 1, &too_many).is_err());
}

#[test]
fn rules_settings_that_cannot_run_name_their_field() {
    let cases: [(fn(&mut BasketRulesSection), &str); 5] = [
        (
            |section| section.items.push(category_name(0)),
            "basket_rules.items",
        ),
        (|section| section.items.clear(), "basket_rules.items"),
        (
            |section| section.max_itemset_size = Some(1),
            "basket_rules.max_itemset_size",
        ),
        (
            |section| section.itemset_caps = vec![4, 4, 4],
            "basket_rules.itemset_caps",
        ),
        (|section| section.min_support = 0.0, "basket_rules"),
    ];
    for (edit, field) in cases {
        let mut file = rules_file();
        edit(section(&mut file));
        let error = spec_of(&file).expect_err("refused");
        assert_eq!(error.field, field, "{error}");
    }
    let both = format!("{RULES_JOB}\n[rfm]\n");
    let error = JobFile::parse(&both).expect_err("one analysis per job");
    assert!(error.to_string().contains("only one of"), "{error}");
    let bad_grouping = RULES_JOB.replace("top_n = 10", "top_n = 10\nbaskets = \"week\"");
    let error = JobFile::parse(&bad_grouping).expect_err("customer or day");
    assert!(
        error.to_string().contains("basket_rules.baskets"),
        "{error}"
    );
}
