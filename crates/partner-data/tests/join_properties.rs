//! Properties of the profile join under k-anonymity, for random profile tables: every released
//! class has at least k rows (and l distinct segments when l is required), and the report's
//! counts agree with each other and with the loaded log.

use std::collections::BTreeMap;
use std::path::PathBuf;

use proptest::prelude::*;
use veil_deid::{ColumnRole, GeneralisationPolicy};
use veil_partner_data::{
    DeidSettings, Input, PartnerDataConfig, PartnerDataError, SourceConfig, TextEncoding,
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
        max_reject_fraction: 0.0,
    }
}

/// One profile row: age, gender, postcode, segment, and whether the customer has transactions.
type ProfileRow = (u32, &'static str, &'static str, &'static str, bool);

fn profile_row() -> impl Strategy<Value = ProfileRow> {
    (
        18u32..80,
        prop::sample::select(vec!["F", "M"]),
        prop::sample::select(vec!["100081", "100190", "310012", "610041"]),
        prop::sample::select(vec!["gold", "silver", "bronze"]),
        prop::bool::weighted(0.8),
    )
}

/// Transactions each customer with transactions has, so suppressed transactions can be checked.
const TRANSACTIONS_PER_CUSTOMER: u64 = 2;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn released_profile_classes_meet_k_and_the_join_counts_add_up(
        profiles in prop::collection::vec(profile_row(), 1..40),
        k in 1usize..5,
        l in prop::option::of(1usize..3),
        max_suppression_fraction in 0.0f64..0.5,
    ) {
        let directory = tempfile::tempdir().map_err(|error| TestCaseError::fail(error.to_string()))?;
        let mut transactions = String::from("cust,ts,amount\n");
        let mut profile_table = String::from("id,age,gender,postcode,segment\n");
        let mut customers_with_transactions = 0u64;
        for (index, (age, gender, postcode, segment, has_transactions)) in profiles.iter().enumerate() {
            profile_table.push_str(&format!("P{index},{age},{gender},{postcode},{segment}\n"));
            // Customer 0 always buys, so the transaction file is never header-only.
            if *has_transactions || index == 0 {
                customers_with_transactions += 1;
                for day in 1..=TRANSACTIONS_PER_CUSTOMER {
                    transactions.push_str(&format!("P{index},2024-01-0{day},9.50\n"));
                }
            }
        }
        let transactions_path = directory.path().join("tx.csv");
        let profile_path = directory.path().join("profile.csv");
        std::fs::write(&transactions_path, transactions).map_err(|error| TestCaseError::fail(error.to_string()))?;
        std::fs::write(&profile_path, profile_table).map_err(|error| TestCaseError::fail(error.to_string()))?;
        let config = PartnerDataConfig {
            transactions: source(csv(transactions_path), "cust", roles(vec![
                ("cust", ColumnRole::Identifier),
                ("ts", ColumnRole::Timestamp),
                ("amount", ColumnRole::Amount),
            ])),
            profile: Some(source(csv(profile_path), "id", roles(vec![
                ("id", ColumnRole::Identifier),
                ("age", ColumnRole::QuasiIdentifier(GeneralisationPolicy::AgeBand { width: 10 })),
                ("gender", ColumnRole::QuasiIdentifier(GeneralisationPolicy::Gender { suppress: false })),
                ("postcode", ColumnRole::QuasiIdentifier(GeneralisationPolicy::PostcodePrefix { length: 3 })),
                ("segment", ColumnRole::Sensitive),
            ]))),
            deid: DeidSettings {
                key_path: directory.path().join("pseudonym.key"),
                report_dir: directory.path().join("report"),
                k,
                l,
                max_suppression_fraction,
            },
        };

        let data = match load_partner_data(&config) {
            Ok(data) => data,
            Err(PartnerDataError::Deid { error: veil_deid::DeidError::SuppressionAboveLimit { total, .. }, .. }) => {
                // Only when even one fully generalised class fails k or l.
                let segments: std::collections::BTreeSet<_> = profiles.iter().map(|row| row.3).collect();
                prop_assert_eq!(total, profiles.len() as u64);
                prop_assert!(profiles.len() < k || l.is_some_and(|l| segments.len() < l));
                return Ok(());
            }
            Err(other) => return Err(TestCaseError::fail(other.to_string())),
        };
        let profile_report = data.report.profile.as_ref().ok_or_else(|| TestCaseError::fail("no profile report"))?;
        let k_report = profile_report
            .deid
            .as_ref()
            .and_then(|deid| deid.k_anonymity.as_ref())
            .ok_or_else(|| TestCaseError::fail("k-anonymity did not run"))?;

        // Every released class has at least k rows, and the histogram accounts for every row.
        prop_assert_eq!(k_report.records_in, profiles.len() as u64);
        prop_assert_eq!(k_report.records_kept + k_report.records_suppressed, k_report.records_in);
        prop_assert!(k_report.class_size_histogram.keys().all(|size| *size >= k as u64));
        prop_assert_eq!(
            k_report.class_size_histogram.iter().map(|(size, count)| size * count).sum::<u64>(),
            k_report.records_kept
        );
        prop_assert_eq!(k_report.class_size_histogram.values().sum::<u64>(), k_report.equivalence_classes);
        prop_assert_eq!(k_report.k_achieved, k_report.class_size_histogram.keys().next().copied());
        if let Some(l) = l {
            prop_assert!(k_report.l_achieved.is_some_and(|achieved| achieved >= l as u64));
        }
        let limit = (max_suppression_fraction * profiles.len() as f64).floor() as u64;
        prop_assert!(k_report.records_suppressed <= limit);

        // The join's counts agree with the input and with the loaded log.
        let join = &data.report.join;
        prop_assert_eq!(join.customers_with_transactions, customers_with_transactions);
        prop_assert_eq!(join.customers_kept as usize, data.log.n_customers());
        prop_assert_eq!(join.customers_with_profile as usize, data.log.n_profiles());
        prop_assert_eq!(join.customers_kept + join.customers_suppressed, customers_with_transactions);
        prop_assert_eq!(join.customers_without_profile, 0, "every customer has a profile row");
        prop_assert_eq!(
            join.customers_with_profile + join.customers_suppressed + join.profiles_without_transactions,
            k_report.records_in
        );
        prop_assert_eq!(join.transactions_suppressed, TRANSACTIONS_PER_CUSTOMER * join.customers_suppressed);
        prop_assert_eq!(
            data.log.n_transactions() as u64,
            TRANSACTIONS_PER_CUSTOMER * join.customers_kept
        );
    }
}
