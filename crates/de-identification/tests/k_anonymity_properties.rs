//! Properties of the k-anonymity / l-diversity measurement (what training data gets) and of the
//! export pass, checked against the data itself.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use proptest::prelude::*;
use veil_de_identification::{
    ColumnPolicy, ColumnRole, DeidError, DeidPolicy, Deidentifier, GeneralisationPolicy,
    KAnonymityMode, PseudonymKey, generalise, generalise_at_level,
};

const CITIES: [&str; 5] = ["杭州", "宁波", "成都", "Shanghai", "Lhasa"];
const OUTCOMES: [&str; 3] = ["churned", "stayed", "paused"];

fn rules() -> Vec<(&'static str, GeneralisationPolicy)> {
    vec![
        ("age", GeneralisationPolicy::AgeBand { width: 5 }),
        ("gender", GeneralisationPolicy::Gender { suppress: false }),
        (
            "postcode",
            GeneralisationPolicy::PostcodePrefix { length: 4 },
        ),
        (
            "city",
            GeneralisationPolicy::City {
                to_region: false,
                region_map: BTreeMap::from([
                    ("杭州".to_owned(), "华东".to_owned()),
                    ("宁波".to_owned(), "华东".to_owned()),
                    ("成都".to_owned(), "西南".to_owned()),
                    ("Shanghai".to_owned(), "华东".to_owned()),
                ]),
            },
        ),
    ]
}

fn policy(k: usize, l: Option<usize>) -> DeidPolicy {
    let mut columns = vec![ColumnPolicy {
        name: "customer_id".to_owned(),
        role: ColumnRole::Identifier,
    }];
    for (name, rule) in rules() {
        columns.push(ColumnPolicy {
            name: name.to_owned(),
            role: ColumnRole::QuasiIdentifier(rule),
        });
    }
    columns.push(ColumnPolicy {
        name: "outcome".to_owned(),
        role: ColumnRole::Sensitive,
    });
    DeidPolicy { columns, k, l }
}

/// One synthetic person: age, gender, postcode, city, outcome.
type Person = (u32, &'static str, String, &'static str, &'static str);

fn person() -> impl Strategy<Value = Person> {
    (
        0u32..100,
        prop::sample::select(vec!["F", "M", "X"]),
        prop::sample::select(vec![
            "100081", "100082", "100190", "310012", "610041", "850000",
        ]),
        prop::sample::select(CITIES.to_vec()),
        prop::sample::select(OUTCOMES.to_vec()),
    )
        .prop_map(|(age, gender, postcode, city, outcome)| {
            (age, gender, postcode.to_owned(), city, outcome)
        })
}

fn raw_quasi_identifiers(person: &Person) -> [String; 4] {
    [
        person.0.to_string(),
        person.1.to_owned(),
        person.2.clone(),
        person.3.to_owned(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// What training data gets: the classes of the declared generalisation, measured as they
    /// are. Nothing is recoded or suppressed whatever k and l ask for, and the report is what the
    /// level-0 values themselves show.
    #[test]
    fn measurement_reports_the_declared_classes_and_changes_nothing(
        people in prop::collection::vec(person(), 0..250),
        k in 1usize..8,
        l in prop::option::of(1usize..4),
    ) {
        let mut engine = Deidentifier::new(policy(k, l), PseudonymKey::from_bytes([5; 32]))
            .expect("valid policy");
        let mut tuples = Vec::new();
        let mut classes: HashMap<Vec<String>, Vec<usize>> = HashMap::new();
        for (index, person) in people.iter().enumerate() {
            let age = person.0.to_string();
            let customer = format!("customer-{index}");
            let record = [
                Some(customer.as_str()),
                Some(age.as_str()),
                Some(person.1),
                Some(person.2.as_str()),
                Some(person.3),
                Some(person.4),
            ];
            let record = engine.process_record(&record).expect("well-formed record");
            // The record's quasi-identifiers are the raw values under the declared rules.
            let declared: Vec<String> = raw_quasi_identifiers(person)
                .iter()
                .zip(rules())
                .map(|(raw, (_, rule))| generalise(raw, &rule))
                .collect();
            let output: Vec<String> = record.values[1..5].iter().flatten().cloned().collect();
            prop_assert_eq!(&output, &declared);
            classes.entry(declared).or_default().push(index);
            tuples.push(record.quasi_identifiers);
        }
        let report = engine.measure_k_anonymity(&tuples).expect("tuples of this engine");
        prop_assert_eq!(report.mode, KAnonymityMode::Measured);
        prop_assert_eq!(report.records_in, people.len() as u64);
        prop_assert_eq!(report.records_kept, people.len() as u64);
        prop_assert_eq!(report.records_suppressed, 0);
        prop_assert!(report.generalisation_levels.iter().all(|level| level.level == 0));
        let mut histogram = BTreeMap::new();
        for members in classes.values() {
            *histogram.entry(members.len() as u64).or_insert(0u64) += 1;
        }
        prop_assert_eq!(&report.class_size_histogram, &histogram);
        prop_assert_eq!(report.equivalence_classes, classes.len() as u64);
        prop_assert_eq!(report.k_achieved, histogram.keys().next().copied());
        let l_achieved = classes
            .values()
            .map(|members| {
                members.iter().map(|index| people[*index].4).collect::<BTreeSet<_>>().len() as u64
            })
            .min();
        prop_assert_eq!(report.l_achieved, l_achieved);
        let k_met = report.k_achieved.is_none_or(|achieved| achieved >= k as u64);
        let l_met = l.is_none_or(|l| l_achieved.is_none_or(|achieved| achieved >= l as u64));
        prop_assert_eq!(report.meets_targets(), k_met && l_met);
    }

    /// The export pass (never used for training data).
    #[test]
    fn released_classes_meet_k_and_l_and_the_report_matches_the_data(
        people in prop::collection::vec(person(), 0..250),
        k in 1usize..8,
        l in prop::option::of(1usize..4),
        max_suppression_fraction in 0.0f64..0.4,
    ) {
        let mut engine = Deidentifier::new(
            policy(k, l),
            PseudonymKey::from_bytes([5; 32]),
        ).expect("valid policy");
        let mut tuples = Vec::new();
        for (index, person) in people.iter().enumerate() {
            let age = person.0.to_string();
            let customer = format!("customer-{index}");
            let record = [
                Some(customer.as_str()),
                Some(age.as_str()),
                Some(person.1),
                Some(person.2.as_str()),
                Some(person.3),
                Some(person.4),
            ];
            tuples.push(engine.process_record(&record).expect("well-formed record").quasi_identifiers);
        }
        let total = people.len();
        let distinct_outcomes: BTreeSet<&str> = people.iter().map(|person| person.4).collect();
        let impossible = total > 0
            && (total < k || l.is_some_and(|l| distinct_outcomes.len() < l));

        match engine.enforce_k_anonymity_for_export(tuples, max_suppression_fraction) {
            Err(DeidError::SuppressionAboveLimit { suppressed, total: reported_total, limit }) => {
                // Full generalisation puts everyone in one class, so rejection happens exactly
                // when that single class still fails k or l.
                prop_assert!(impossible, "rejected although a release was possible");
                prop_assert_eq!(reported_total, total as u64);
                prop_assert!(suppressed > limit);
            }
            Err(other) => prop_assert!(false, "unexpected error {other}"),
            Ok((kept, report)) => {
                prop_assert!(!impossible, "released although k or l cannot be met");
                prop_assert_eq!(report.mode, KAnonymityMode::EnforcedForExport);
                prop_assert_eq!(report.records_in, total as u64);
                prop_assert_eq!(kept.len() as u64 + report.records_suppressed, total as u64);
                prop_assert_eq!(report.records_kept, kept.len() as u64);
                let limit = (max_suppression_fraction * total as f64).floor() as u64;
                prop_assert!(report.records_suppressed <= limit);

                // Row indices are unique, in input order, and point at real input rows.
                let rows: Vec<u64> = kept.iter().map(|record| record.row_index).collect();
                prop_assert!(rows.windows(2).all(|pair| pair[0] < pair[1]));
                prop_assert!(rows.iter().all(|row| (*row as usize) < total));

                // Every released value is the raw value generalised at the reported level.
                let levels: Vec<usize> =
                    report.generalisation_levels.iter().map(|level| level.level).collect();
                for record in &kept {
                    let raw = raw_quasi_identifiers(&people[record.row_index as usize]);
                    for (((value, raw), (_, rule)), level) in
                        record.values.iter().zip(&raw).zip(rules()).zip(&levels)
                    {
                        prop_assert_eq!(value.as_ref(), generalise_at_level(raw, &rule, *level));
                    }
                }

                // Equivalence classes as the released data shows them.
                let mut classes: HashMap<Vec<String>, Vec<u64>> = HashMap::new();
                for record in &kept {
                    let key = record.values.iter().map(|value| value.to_string()).collect();
                    classes.entry(key).or_default().push(record.row_index);
                }
                let mut histogram = BTreeMap::new();
                for members in classes.values() {
                    prop_assert!(members.len() >= k, "class of {} < k = {k}", members.len());
                    *histogram.entry(members.len() as u64).or_insert(0u64) += 1;
                }
                prop_assert_eq!(&report.class_size_histogram, &histogram);
                prop_assert_eq!(report.equivalence_classes, classes.len() as u64);
                prop_assert_eq!(report.k_achieved, histogram.keys().next().copied());

                let diversity: Vec<u64> = classes
                    .values()
                    .map(|members| {
                        members
                            .iter()
                            .map(|row| people[*row as usize].4)
                            .collect::<BTreeSet<_>>()
                            .len() as u64
                    })
                    .collect();
                if let Some(l) = l {
                    prop_assert!(diversity.iter().all(|distinct| *distinct >= l as u64));
                }
                prop_assert_eq!(report.l_achieved, diversity.iter().min().copied());
            }
        }
    }
}

fn run(
    people: &[(u32, &str, &str)],
    k: usize,
    l: Option<usize>,
    fraction: f64,
) -> Result<
    (
        Vec<veil_de_identification::KeptQuasiIdentifiers>,
        veil_de_identification::KAnonymityReport,
    ),
    DeidError,
> {
    let mut engine =
        Deidentifier::new(policy(k, l), PseudonymKey::from_bytes([6; 32])).expect("valid policy");
    let tuples = people
        .iter()
        .map(|(age, gender, outcome)| {
            let age = age.to_string();
            let record = [
                Some("id"),
                Some(age.as_str()),
                Some(*gender),
                Some("100081"),
                Some("杭州"),
                Some(*outcome),
            ];
            engine
                .process_record(&record)
                .map(|record| record.quasi_identifiers)
        })
        .collect::<Result<Vec<_>, _>>()?;
    engine.enforce_k_anonymity_for_export(tuples, fraction)
}

#[test]
fn l_diversity_suppresses_a_homogeneous_class_and_reports_the_minimum() {
    // Two classes of three: the twenties are diverse, the fifties all churned.
    let people = [
        (21, "F", "churned"),
        (22, "F", "stayed"),
        (23, "F", "stayed"),
        (51, "F", "churned"),
        (52, "F", "churned"),
        (53, "F", "churned"),
    ];
    let (kept, report) = run(&people, 3, Some(2), 0.5).expect("within the suppression limit");
    assert_eq!(
        kept.iter()
            .map(|record| record.row_index)
            .collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert_eq!(report.records_suppressed, 3);
    assert_eq!(report.l_achieved, Some(2));
    assert_eq!(report.k_achieved, Some(3));

    // Without an l requirement both classes are released, and l achieved shows the weak class.
    let (kept, report) = run(&people, 3, None, 0.0).expect("k is met");
    assert_eq!(kept.len(), 6);
    assert_eq!(report.l_achieved, Some(1));

    // When suppression is not allowed, the pass generalises until the classes merge.
    let (kept, report) = run(&people, 3, Some(2), 0.0).expect("generalisation suffices");
    assert_eq!(kept.len(), 6);
    assert_eq!(report.equivalence_classes, 1);
    assert_eq!(report.l_achieved, Some(2));
}

#[test]
fn impossible_targets_refuse_the_export() {
    let people = [(30, "F", "churned"), (31, "M", "stayed")];
    assert!(matches!(
        run(&people, 3, None, 0.1),
        Err(DeidError::SuppressionAboveLimit {
            suppressed: 2,
            total: 2,
            limit: 0
        })
    ));
    let same_outcome = [
        (30, "F", "churned"),
        (31, "M", "churned"),
        (32, "F", "churned"),
    ];
    assert!(matches!(
        run(&same_outcome, 1, Some(2), 0.0),
        Err(DeidError::SuppressionAboveLimit { suppressed: 3, .. })
    ));
    // An empty job releases nothing and fails nothing.
    let (kept, report) = run(&[], 5, Some(2), 0.0).expect("empty input");
    assert!(kept.is_empty());
    assert_eq!(
        (report.k_achieved, report.l_achieved, report.records_in),
        (None, None, 0)
    );
}
