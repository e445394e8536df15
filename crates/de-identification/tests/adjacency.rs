//! The add/remove adjacency customer-level DP-SGD is charged for, at the engine: for a profile
//! table D and D' = D with one more customer, every customer of D gets exactly the same
//! de-identified record (pseudonym, declared generalisation, redacted values) in D and D', and
//! no customer of either is suppressed. The export pass, which recodes from the whole table,
//! does not have this property, which is why training never uses it.

use std::collections::BTreeMap;

use proptest::prelude::*;
use veil_de_identification::{
    ColumnPolicy, ColumnRole, DeidPolicy, Deidentifier, GeneralisationPolicy, KAnonymityMode,
    PseudonymKey,
};

fn column(name: &str, role: ColumnRole) -> ColumnPolicy {
    ColumnPolicy {
        name: name.to_owned(),
        role,
    }
}

/// Every kind of rule and every other role a profile table can have.
fn policy(k: usize, l: Option<usize>) -> DeidPolicy {
    let quasi = ColumnRole::QuasiIdentifier;
    DeidPolicy {
        columns: vec![
            column("customer_id", ColumnRole::Identifier),
            column("email", ColumnRole::Drop),
            column("age", quasi(GeneralisationPolicy::AgeBand { width: 10 })),
            column("born", quasi(GeneralisationPolicy::BirthDateToYear)),
            column(
                "gender",
                quasi(GeneralisationPolicy::Gender { suppress: false }),
            ),
            column(
                "postcode",
                quasi(GeneralisationPolicy::PostcodePrefix { length: 3 }),
            ),
            column(
                "city",
                quasi(GeneralisationPolicy::City {
                    to_region: true,
                    region_map: BTreeMap::from([
                        ("杭州".to_owned(), "华东".to_owned()),
                        ("成都".to_owned(), "西南".to_owned()),
                    ]),
                }),
            ),
            column("segment", ColumnRole::Sensitive),
            column("notes", ColumnRole::Text),
        ],
        k,
        l,
    }
}

/// One profile row after the customer id: email, age, birth date, gender, postcode, city,
/// segment, notes. Values include missing, unreadable and PII-carrying ones.
type Row = [Option<String>; 8];

fn row() -> impl Strategy<Value = Row> {
    let choose = |values: &[&str]| {
        prop::option::weighted(
            0.9,
            prop::sample::select(
                values
                    .iter()
                    .map(|value| (*value).to_owned())
                    .collect::<Vec<_>>(),
            ),
        )
    };
    (
        choose(&["a@example.com", "b@example.org"]),
        prop::option::weighted(0.9, (0u32..140).prop_map(|age| age.to_string())),
        choose(&["1987-03-05", "19990101", "2001/12/31", "1987-02-30"]),
        choose(&["F", "M", "女", "x"]),
        choose(&["100081", "100190", "310012", "31", "call 13800138000"]),
        choose(&["杭州", "成都", "Lhasa"]),
        choose(&["gold", "silver"]),
        choose(&["likes tea", "mail me at z@example.com", ""]),
    )
        .prop_map(
            |(email, age, born, gender, postcode, city, segment, notes)| {
                [email, age, born, gender, postcode, city, segment, notes]
            },
        )
}

/// De-identifies a table of (customer id, row) and returns each customer's record by pseudonym,
/// after checking the k-anonymity measurement suppressed no one.
fn deidentify(
    table: &[(String, Row)],
    k: usize,
    l: Option<usize>,
) -> Result<BTreeMap<String, Vec<Option<String>>>, TestCaseError> {
    let mut engine = Deidentifier::new(policy(k, l), PseudonymKey::from_bytes([42; 32]))
        .map_err(|error| TestCaseError::fail(error.to_string()))?;
    let mut records = BTreeMap::new();
    let mut tuples = Vec::new();
    for (customer, row) in table {
        let mut values: Vec<Option<&str>> = vec![Some(customer.as_str())];
        values.extend(row.iter().map(Option::as_deref));
        let record = engine
            .process_record(&values)
            .map_err(|error| TestCaseError::fail(error.to_string()))?;
        let pseudonym = record.values[0].clone().unwrap_or_default();
        prop_assert!(records.insert(pseudonym, record.values).is_none());
        tuples.push(record.quasi_identifiers);
    }
    let report = engine
        .measure_k_anonymity(&tuples)
        .map_err(|error| TestCaseError::fail(error.to_string()))?;
    prop_assert_eq!(report.mode, KAnonymityMode::Measured);
    prop_assert_eq!(report.records_kept, table.len() as u64);
    prop_assert_eq!(report.records_suppressed, 0);
    Ok(records)
}

/// Checks that every customer of `smaller` has the same record in `larger`, and that `larger`
/// has exactly one more customer.
fn assert_neighbours_agree(
    smaller: &BTreeMap<String, Vec<Option<String>>>,
    larger: &BTreeMap<String, Vec<Option<String>>>,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(larger.len(), smaller.len() + 1);
    for (customer, record) in smaller {
        prop_assert_eq!(larger.get(customer), Some(record), "customer {}", customer);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn adding_or_removing_one_customer_changes_no_other_customers_record(
        rows in prop::collection::vec(row(), 1..30),
        extra in row(),
        position in any::<prop::sample::Index>(),
        removed in any::<prop::sample::Index>(),
        k in 1usize..6,
        l in prop::option::of(1usize..3),
    ) {
        let table: Vec<(String, Row)> = rows
            .into_iter()
            .enumerate()
            .map(|(index, row)| (format!("C{index}"), row))
            .collect();

        // Add: the new customer lands anywhere in the table, as rows do in a real export.
        let mut added = table.clone();
        added.insert(position.index(table.len() + 1), ("NEW".to_owned(), extra));
        assert_neighbours_agree(&deidentify(&table, k, l)?, &deidentify(&added, k, l)?)?;

        // Remove: one existing customer leaves.
        let mut fewer = table.clone();
        fewer.remove(removed.index(table.len()));
        assert_neighbours_agree(&deidentify(&fewer, k, l)?, &deidentify(&table, k, l)?)?;
    }
}

/// The contrast: the export pass picks its generalisation level from the whole table, so one
/// more customer changes the released values of customers already there. This is the behaviour
/// that used to shape training data and no longer does.
#[test]
fn the_export_pass_recodes_other_customers_which_is_why_training_does_not_use_it() {
    let policy = DeidPolicy {
        columns: vec![
            column("customer_id", ColumnRole::Identifier),
            column(
                "age",
                ColumnRole::QuasiIdentifier(GeneralisationPolicy::AgeBand { width: 5 }),
            ),
        ],
        k: 2,
        l: None,
    };
    let export = |ages: &[&str]| {
        let mut engine =
            Deidentifier::new(policy.clone(), PseudonymKey::from_bytes([1; 32])).expect("policy");
        let tuples: Vec<_> = ages
            .iter()
            .enumerate()
            .map(|(index, age)| {
                let customer = format!("C{index}");
                engine
                    .process_record(&[Some(customer.as_str()), Some(*age)])
                    .expect("record")
                    .quasi_identifiers
            })
            .collect();
        let (kept, _) = engine
            .enforce_k_anonymity_for_export(tuples, 0.0)
            .expect("reachable");
        kept.into_iter()
            .map(|record| record.values[0].to_string())
            .collect::<Vec<_>>()
    };
    // Two customers in 30-34 form a class of two: nothing to do.
    assert_eq!(export(&["30", "31"]), ["30-34", "30-34"]);
    // A third aged 37 is alone in 35-39, so the pass widens the whole column, and the first two
    // customers' values change although their rows did not.
    assert_eq!(export(&["30", "31", "37"]), ["30-39", "30-39", "30-39"]);
}
