//! The buy-till-you-die partners' files hold exactly the simulated purchase
//! process (so a fit to them is a fit to known parameters), and their baskets
//! hold the planted pairs far above chance.

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use veil_lifetime_value::simulate::simulate_partner;
use veil_lifetime_value::{CustomerSummary, Transaction, summarise_transactions};
use veil_synth_data::{BasketPlan, BuyTillYouDieConfig, write_buy_till_you_die_files};

const SEED: u64 = 40;

fn config() -> BuyTillYouDieConfig {
    BuyTillYouDieConfig {
        partners: 3,
        customers_per_partner: 2_000,
        cutoff: NaiveDate::from_ymd_opt(2024, 10, 2).unwrap_or_default(),
        holdout_days: 90,
        baskets: BasketPlan::small(),
        seed: SEED,
    }
}

/// One parsed row: customer, day from the start of the calibration year,
/// amount in cents, category.
type Row = (String, i64, u64, String);

fn read_rows(path: &std::path::Path, cutoff: NaiveDate) -> Vec<Row> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{e}"));
    let first_day = cutoff - chrono::Days::new(364);
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("customer_id,timestamp,amount,quantity,category,channel")
    );
    lines
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            let day = chrono::DateTime::parse_from_rfc3339(fields[1])
                .unwrap_or_else(|e| panic!("{line}: {e}"))
                .date_naive();
            let (units, cents) = fields[2].split_once('.').unwrap_or((fields[2], "0"));
            let cents = units.parse::<u64>().unwrap_or(0) * 100 + cents.parse::<u64>().unwrap_or(0);
            (
                fields[0].to_owned(),
                (day - first_day).num_days(),
                cents,
                fields[4].to_owned(),
            )
        })
        .collect()
}

fn summaries<K: Ord + Clone>(
    transactions: &[Transaction<K>],
    cutoff_day: i64,
) -> Vec<CustomerSummary> {
    summarise_transactions(transactions, cutoff_day)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|(_, summary)| summary)
        .collect()
}

#[test]
fn the_files_hold_the_simulated_purchase_process_and_the_planted_pairs() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = config();
    let written =
        write_buy_till_you_die_files(&config, dir.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(written.files.len(), 3);
    assert_eq!(written.categories.len(), 20);
    assert_eq!(written.planted_pairs.len(), 3);
    let mut pair_baskets = 0usize;
    let mut item_baskets: BTreeMap<String, usize> = BTreeMap::new();
    let mut together: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut all_baskets = 0usize;
    for (index, (path, simulation)) in written.files.iter().zip(&written.simulations).enumerate() {
        let rows = read_rows(path, config.cutoff);
        // The purchase process: the file's purchase days and per-day spend
        // give the same customer summaries as the simulation itself.
        let from_file: Vec<Transaction<String>> = rows
            .iter()
            .map(|(customer, day, cents, _)| Transaction {
                customer: customer.clone(),
                day: *day,
                amount: *cents as f64 / 100.0,
            })
            .collect();
        let simulated = simulate_partner(
            simulation,
            index as u64 * config.customers_per_partner,
            &mut ChaCha20Rng::seed_from_u64(SEED + index as u64),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let rounded: Vec<Transaction<String>> = simulated
            .iter()
            .map(|transaction| Transaction {
                customer: format!("Cust-{:07}", transaction.customer),
                day: transaction.day,
                amount: ((transaction.amount * 100.0).round().max(1.0)) / 100.0,
            })
            .collect();
        let (file, truth) = (summaries(&from_file, 364), summaries(&rounded, 364));
        assert_eq!(file.len(), truth.len());
        for (file, truth) in file.iter().zip(&truth) {
            assert_eq!(
                (file.frequency, file.recency_days, file.age_days),
                (truth.frequency, truth.recency_days, truth.age_days)
            );
            assert!((file.mean_spend - truth.mean_spend).abs() < 1e-6);
        }
        // Baskets: the categories of one customer's purchase day.
        let mut baskets: BTreeMap<(String, i64), BTreeSet<String>> = BTreeMap::new();
        for (customer, day, _, category) in rows {
            baskets.entry((customer, day)).or_default().insert(category);
        }
        for basket in baskets.values() {
            all_baskets += 1;
            for item in basket {
                *item_baskets.entry(item.clone()).or_default() += 1;
            }
            for pair in &written.planted_pairs {
                if basket.contains(&pair.0) && basket.contains(&pair.1) {
                    *together.entry(pair.clone()).or_default() += 1;
                    pair_baskets += 1;
                }
            }
        }
    }
    assert!(pair_baskets > 0);
    // Each planted pair's lift is far above the 1 of independent categories
    // (the lowest is 2.75 on this data: a popular category dilutes its pair's lift).
    for pair in &written.planted_pairs {
        let share = |count: usize| count as f64 / all_baskets as f64;
        let lift =
            share(together[pair]) / (share(item_baskets[&pair.0]) * share(item_baskets[&pair.1]));
        assert!(lift > 2.0, "{pair:?}: lift {lift:.2}");
    }
}

#[test]
fn a_basket_plan_it_cannot_draw_from_is_refused() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut config = config();
    config.baskets.planted_pairs = 11;
    let error = write_buy_till_you_die_files(&config, dir.path()).map(|_| ());
    assert!(
        error
            .as_ref()
            .is_err_and(|e| e.to_string().contains("two per planted pair")),
        "{error:?}"
    );
}
