//! The add/remove adjacency customer-level DP-SGD is charged for, through the node's whole data
//! path: for random transaction logs and profile tables D, and D' = D with one customer added
//! (a profile row and transactions, anywhere in the files) or removed, every other customer has
//! exactly the same transactions, profile and behaviour features in D and D', and no customer is
//! left out. Along the way the report's k-anonymity figures are checked to be a measurement of
//! the declared generalisation (nothing recoded, nothing suppressed) and the join counts to add
//! up.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use veil_behaviour_features::{CustomerProfile, FeatureName, FeatureSpec, build_scoring_rows};
use veil_de_identification::{ColumnRole, GeneralisationPolicy, KAnonymityMode, generalise};
use veil_partner_data::{
    DeidSettings, Input, PartnerData, PartnerDataConfig, SourceConfig, TextEncoding,
    UndeclaredColumns, load_partner_data,
};

fn csv(path: PathBuf) -> Input {
    Input::Csv {
        path,
        delimiter: Some(','),
        encoding: TextEncoding::Utf8,
    }
}

fn roles(pairs: Vec<(&str, ColumnRole)>) -> BTreeMap<String, ColumnRole> {
    pairs
        .into_iter()
        .map(|(name, role)| (name.to_owned(), role))
        .collect()
}

fn source(input: Input, customer_id: &str, columns: BTreeMap<String, ColumnRole>) -> SourceConfig {
    SourceConfig {
        input,
        customer_id: customer_id.to_owned(),
        category: None,
        channel: None,
        columns,
        undeclared_columns: UndeclaredColumns::Error,
        rejects_path: None,
        // Unreadable ages are rejected row by row; the load itself never aborts on them here.
        max_reject_fraction: 1.0,
    }
}

/// The profile's quasi-identifier rules, in file order after the id.
fn profile_rules() -> [(&'static str, GeneralisationPolicy); 4] {
    [
        ("age", GeneralisationPolicy::AgeBand { width: 10 }),
        ("gender", GeneralisationPolicy::Gender { suppress: false }),
        (
            "postcode",
            GeneralisationPolicy::PostcodePrefix { length: 3 },
        ),
        ("born", GeneralisationPolicy::BirthDateToYear),
    ]
}

/// One profile row after the id: age, gender, postcode, birth date, segment.
type ProfileRow = (
    String,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
);

/// One purchase: month, day, amount in cents, category, channel.
type Purchase = (u32, u32, u32, &'static str, &'static str);

/// A customer's rows in both files.
#[derive(Debug, Clone)]
struct Customer {
    profile: Option<ProfileRow>,
    purchases: Vec<Purchase>,
}

fn customer() -> impl Strategy<Value = Customer> {
    let profile = (
        prop_oneof![
            9 => (18u32..90).prop_map(|age| age.to_string()),
            1 => Just("unknown".to_owned()),
        ],
        prop::sample::select(vec!["F", "M", ""]),
        prop::sample::select(vec!["100081", "100190", "310012", "610041"]),
        prop::sample::select(vec!["1987-03-05", "1999-12-31", ""]),
        prop::sample::select(vec!["gold", "silver", "bronze"]),
    );
    let purchase = (
        1u32..4,
        1u32..29,
        1u32..100_000,
        prop::sample::select(vec!["food", "toys", "books", ""]),
        prop::sample::select(vec!["web", "store"]),
    );
    (
        prop::option::weighted(0.85, profile),
        prop::collection::vec(purchase, 0..4),
    )
        .prop_map(|(profile, purchases)| Customer { profile, purchases })
}

/// Writes the two files of a table of (customer id, rows) and loads them with the shared key.
fn load(
    directory: &Path,
    name: &str,
    table: &[(String, Customer)],
    k: usize,
    l: Option<usize>,
) -> Result<PartnerData, TestCaseError> {
    let mut transactions = String::from("cust,ts,amount,category,channel\n");
    let mut profiles = String::from("id,age,gender,postcode,born,segment\n");
    // One purchase by a customer in every file, so no file is ever header-only.
    transactions.push_str("ANCHOR,2024-01-01,1.00,food,web\n");
    profiles.push_str("ANCHOR,40,F,100081,1984-01-01,gold\n");
    for (id, customer) in table {
        if let Some((age, gender, postcode, born, segment)) = &customer.profile {
            profiles.push_str(&format!(
                "{id},{age},{gender},{postcode},{born},{segment}\n"
            ));
        }
        for (month, day, cents, category, channel) in &customer.purchases {
            transactions.push_str(&format!(
                "{id},2024-{month:02}-{day:02},{}.{:02},{category},{channel}\n",
                cents / 100,
                cents % 100
            ));
        }
    }
    let fail = |error: std::io::Error| TestCaseError::fail(error.to_string());
    let transactions_path = directory.join(format!("{name}-tx.csv"));
    let profile_path = directory.join(format!("{name}-profile.csv"));
    std::fs::write(&transactions_path, transactions).map_err(fail)?;
    std::fs::write(&profile_path, profiles).map_err(fail)?;
    let mut transaction_source = source(
        csv(transactions_path),
        "cust",
        roles(vec![
            ("cust", ColumnRole::Identifier),
            ("ts", ColumnRole::Timestamp),
            ("amount", ColumnRole::Amount),
            ("category", ColumnRole::Feature),
            ("channel", ColumnRole::Feature),
        ]),
    );
    transaction_source.category = Some("category".to_owned());
    transaction_source.channel = Some("channel".to_owned());
    let mut profile_columns = vec![
        ("id", ColumnRole::Identifier),
        ("segment", ColumnRole::Sensitive),
    ];
    profile_columns.extend(
        profile_rules()
            .into_iter()
            .map(|(name, rule)| (name, ColumnRole::QuasiIdentifier(rule))),
    );
    let config = PartnerDataConfig {
        transactions: transaction_source,
        profile: Some(source(csv(profile_path), "id", roles(profile_columns))),
        deid: DeidSettings {
            // Neighbouring datasets are de-identified by the same partner under the same key.
            key_path: directory.join("pseudonym.key"),
            report_dir: directory.join(format!("{name}-report")),
            k,
            l,
        },
    };
    let data =
        load_partner_data(&config).map_err(|error| TestCaseError::fail(error.to_string()))?;
    check_report(&data, table)?;
    Ok(data)
}

/// The report measures the declared classes without suppressing anyone, and the join's counts
/// agree with each other and with the log.
fn check_report(data: &PartnerData, table: &[(String, Customer)]) -> Result<(), TestCaseError> {
    let profile = data
        .report
        .profile
        .as_ref()
        .ok_or_else(|| TestCaseError::fail("no profile report"))?;
    let k_report = profile
        .deid
        .as_ref()
        .and_then(|deid| deid.k_anonymity.as_ref())
        .ok_or_else(|| TestCaseError::fail("k-anonymity was not measured"))?;
    prop_assert_eq!(k_report.mode, KAnonymityMode::Measured);
    prop_assert_eq!(k_report.records_in, profile.rows_accepted);
    prop_assert_eq!(k_report.records_kept, profile.rows_accepted);
    prop_assert_eq!(k_report.records_suppressed, 0);
    prop_assert!(
        k_report
            .generalisation_levels
            .iter()
            .all(|level| level.level == 0)
    );
    // The classes are those of the declared generalisation of the accepted rows (the anchor
    // row and every row whose age reads).
    let mut classes: HashMap<Vec<String>, u64> = HashMap::new();
    let anchor = ("40".to_owned(), "F", "100081", "1984-01-01", "gold");
    let accepted = std::iter::once(&anchor).chain(
        table
            .iter()
            .filter_map(|(_, customer)| customer.profile.as_ref())
            .filter(|row| row.0 != "unknown"),
    );
    for (age, gender, postcode, born, _) in accepted {
        let raw = [age.as_str(), gender, postcode, born];
        let key = raw
            .iter()
            .zip(profile_rules())
            .map(|(raw, (_, rule))| generalise(raw, &rule))
            .collect();
        *classes.entry(key).or_default() += 1;
    }
    prop_assert_eq!(k_report.equivalence_classes, classes.len() as u64);
    prop_assert_eq!(k_report.k_achieved, classes.values().min().copied());

    let join = &data.report.join;
    prop_assert_eq!(join.customers_kept, join.customers_with_transactions);
    prop_assert_eq!(join.customers_kept as usize, data.log.n_customers());
    prop_assert_eq!(join.customers_with_profile as usize, data.log.n_profiles());
    prop_assert_eq!(
        join.customers_with_profile + join.customers_without_profile,
        join.customers_kept
    );
    prop_assert_eq!(
        join.customers_with_profile + join.profiles_without_transactions,
        profile.rows_accepted
    );
    Ok(())
}

/// What training reads of one customer: transaction times and amounts, the profile, and every
/// behaviour feature (category and channel codes themselves are load-local dictionary codes;
/// the features read only which purchases share one).
#[derive(Debug, PartialEq)]
struct CustomerView {
    purchases: Vec<(i64, f64)>,
    profile: Option<CustomerProfile>,
    features: Vec<f32>,
}

fn views(data: &PartnerData) -> BTreeMap<String, CustomerView> {
    let spec = FeatureSpec {
        features: FeatureName::ALL.to_vec(),
        recent_window_days: 30,
    };
    let cutoff = chrono::NaiveDate::from_ymd_opt(2024, 4, 1).unwrap_or_default();
    let mut features: HashMap<String, Vec<f32>> = build_scoring_rows(&data.log, cutoff, &spec)
        .into_iter()
        .map(|row| (row.customer_id, row.features))
        .collect();
    data.log
        .customers_with_profiles()
        .map(|(customer, transactions, profile)| {
            let view = CustomerView {
                purchases: transactions
                    .iter()
                    .map(|transaction| (transaction.unix_seconds, transaction.amount))
                    .collect(),
                profile: profile.copied(),
                features: features.remove(customer).unwrap_or_default(),
            };
            (customer.to_owned(), view)
        })
        .collect()
}

/// Every customer of the smaller dataset is in the larger one with the same view; the larger one
/// has at most the one extra customer (none if that customer has no purchase).
fn assert_neighbours_agree(
    smaller: &PartnerData,
    larger: &PartnerData,
) -> Result<(), TestCaseError> {
    let smaller = views(smaller);
    let larger = views(larger);
    prop_assert!(larger.len() == smaller.len() || larger.len() == smaller.len() + 1);
    for (customer, view) in &smaller {
        prop_assert_eq!(larger.get(customer), Some(view), "customer {}", customer);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn adding_or_removing_one_customer_changes_no_other_customers_training_data(
        customers in prop::collection::vec(customer(), 1..25),
        extra in customer(),
        position in any::<prop::sample::Index>(),
        removed in any::<prop::sample::Index>(),
        k in 1usize..6,
        l in prop::option::of(1usize..3),
    ) {
        let directory = tempfile::tempdir().map_err(|error| TestCaseError::fail(error.to_string()))?;
        let table: Vec<(String, Customer)> = customers
            .into_iter()
            .enumerate()
            .map(|(index, customer)| (format!("C{index}"), customer))
            .collect();
        let base = load(directory.path(), "base", &table, k, l)?;

        let mut added = table.clone();
        added.insert(position.index(table.len() + 1), ("NEW".to_owned(), extra));
        let with_one_more = load(directory.path(), "added", &added, k, l)?;
        assert_neighbours_agree(&base, &with_one_more)?;

        let mut fewer = table.clone();
        fewer.remove(removed.index(table.len()));
        let with_one_fewer = load(directory.path(), "removed", &fewer, k, l)?;
        assert_neighbours_agree(&with_one_fewer, &base)?;
    }
}
