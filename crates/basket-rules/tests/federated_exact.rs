//! Without noise and with caps that never bind, the federated miner (the sum
//! of every partner's counts) finds exactly the itemsets, with exactly the
//! counts, that a brute-force count over the pooled baskets finds; and one
//! customer's counts never exceed the stated sensitivity.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use veil_basket_rules::simulate::mine_federated;
use veil_basket_rules::{
    BasketConfig, BasketGrouping, Baskets, Candidates, MinerConfig, PurchaseRow, Vocabulary,
    level_sensitivity, local_counts,
};

/// A customer's purchases: (day, item) pairs.
type Customer = Vec<(i64, u32)>;

fn vocabulary(items: u32) -> Vocabulary {
    Vocabulary::declared((0..items).map(|item| format!("item-{item}"))).expect("valid")
}

fn build(
    partner: &[Customer],
    partner_index: usize,
    vocabulary: &Vocabulary,
    grouping: BasketGrouping,
) -> Baskets {
    let keys: Vec<String> = (0..partner.len())
        .map(|c| format!("p{partner_index}-c{c}"))
        .collect();
    let names: Vec<String> = (0..vocabulary.len())
        .map(|item| format!("item-{item}"))
        .collect();
    let rows = partner.iter().zip(&keys).flat_map(|(purchases, key)| {
        purchases.iter().map(|&(day, item)| PurchaseRow {
            customer: key,
            day,
            item: &names[item as usize],
        })
    });
    let config = BasketConfig {
        grouping,
        first_day: 0,
        last_day: 10,
    };
    Baskets::build(rows.collect::<Vec<_>>(), vocabulary, &config).expect("valid configuration")
}

/// Every itemset of up to `max_level` items in any pooled basket, counted.
fn brute_force(partners: &[Baskets], max_level: usize) -> (u64, BTreeMap<Vec<u32>, u64>) {
    let mut counts = BTreeMap::new();
    let mut total = 0;
    for baskets in partners {
        for basket in baskets.iter_baskets() {
            total += 1;
            for mask in 1u32..(1 << basket.len()) {
                if mask.count_ones() as usize > max_level {
                    continue;
                }
                let itemset: Vec<u32> = (0..basket.len())
                    .filter(|&position| mask & (1 << position) != 0)
                    .map(|position| basket[position])
                    .collect();
                *counts.entry(itemset).or_insert(0) += 1;
            }
        }
    }
    (total, counts)
}

fn data() -> impl Strategy<Value = (u32, Vec<Vec<Customer>>)> {
    (2u32..8).prop_flat_map(|items| {
        let purchase = (0i64..4, 0..items);
        let customer = proptest::collection::vec(purchase, 1..10);
        let partner = proptest::collection::vec(customer, 0..12);
        (Just(items), proptest::collection::vec(partner, 1..4))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn federated_miner_finds_exactly_the_brute_force_itemsets(
        (items, partners) in data(),
        min_support in 0.01f64..0.6,
        max_level in 1usize..5,
        by_day in any::<bool>(),
    ) {
        let vocabulary = vocabulary(items);
        let grouping = if by_day {
            BasketGrouping::PurchaseDay { max_days_per_customer: 4 }
        } else {
            BasketGrouping::CustomerWindow
        };
        let baskets: Vec<Baskets> = partners
            .iter()
            .enumerate()
            .map(|(index, partner)| build(partner, index, &vocabulary, grouping))
            .collect();
        // 4 baskets × 2^7 subsets per customer: a cap of 10_000 never binds.
        let config = MinerConfig {
            min_support,
            itemset_caps: vec![10_000; max_level],
            max_baskets_per_customer: grouping.max_baskets_per_customer(),
            expected_false_itemsets_per_level: 1.0,
        };
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let mined = mine_federated(&baskets, config, None, &mut rng).expect("mines");
        let (total, counts) = brute_force(&baskets, max_level);
        let expected: Vec<(Vec<u32>, f64)> = if total == 0 {
            Vec::new()
        } else {
            let mut frequent: Vec<(Vec<u32>, f64)> = counts
                .into_iter()
                .filter(|&(_, count)| count as f64 / total as f64 >= min_support)
                .map(|(itemset, count)| (itemset, count as f64))
                .collect();
            frequent.sort_by(|left, right| left.0.len().cmp(&right.0.len()).then(left.0.cmp(&right.0)));
            frequent
        };
        let got: Vec<(Vec<u32>, f64)> = mined
            .itemsets
            .iter()
            .map(|kept| (kept.itemset.clone(), kept.count))
            .collect();
        prop_assert_eq!(mined.basket_total, total as f64);
        prop_assert_eq!(got, expected);
        prop_assert!(mined.itemsets.iter().all(|kept| kept.noise_variance == 0.0));
    }

    #[test]
    fn one_customers_counts_stay_within_the_level_sensitivity(
        purchases in proptest::collection::vec((0i64..6, 0u32..10), 1..40),
        cap in 1u32..12,
        max_days in 1u32..5,
        level in 1usize..4,
        seed in any::<u64>(),
    ) {
        let vocabulary = vocabulary(10);
        let grouping = BasketGrouping::PurchaseDay { max_days_per_customer: max_days };
        let baskets = build(&[purchases], 0, &vocabulary, grouping);
        // Every itemset of the level over the whole vocabulary: the worst a
        // coordinator could ask for.
        let itemsets: Vec<Vec<u32>> = (0u32..1 << 10)
            .filter(|mask| mask.count_ones() as usize == level)
            .map(|mask| (0..10).filter(|item| mask & (1 << item) != 0).collect())
            .collect::<Vec<_>>();
        let mut itemsets = itemsets;
        itemsets.sort();
        let candidates = Candidates::new(level, itemsets, 10).expect("valid candidates");
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let counts = local_counts(&baskets, &candidates, cap, &mut rng).expect("counts");
        let sensitivity = level_sensitivity(level, cap, max_days);
        let l1: i64 = counts.iter().map(|count| count.abs()).sum();
        let l2 = (counts.iter().map(|&count| (count * count) as f64).sum::<f64>()).sqrt();
        prop_assert!(l1 as f64 <= sensitivity.l1, "ℓ1 {} > {}", l1, sensitivity.l1);
        // 1e-9: the bound is a square root of an exact integer.
        prop_assert!(l2 <= sensitivity.l2 + 1e-9, "ℓ2 {} > {}", l2, sensitivity.l2);
        let incidences: i64 = counts[..candidates.itemsets().len()].iter().sum();
        prop_assert!(incidences <= i64::from(cap));
    }
}

#[test]
fn a_binding_cap_keeps_exactly_cap_incidences_spread_over_the_itemsets() {
    // One customer who bought all 6 items: 15 pairs, capped at 5.
    let vocabulary = vocabulary(6);
    let purchases: Customer = (0..6).map(|item| (0, item)).collect();
    let baskets = build(&[purchases], 0, &vocabulary, BasketGrouping::CustomerWindow);
    let mut pairs = Vec::new();
    for first in 0..6u32 {
        for second in first + 1..6 {
            pairs.push(vec![first, second]);
        }
    }
    let candidates = Candidates::new(2, pairs, 6).expect("valid");
    let mut kept_per_pair: HashMap<usize, u32> = HashMap::new();
    let draws = 3000;
    for seed in 0..draws {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let counts = local_counts(&baskets, &candidates, 5, &mut rng).expect("counts");
        assert_eq!(counts.iter().sum::<i64>(), 5);
        for (index, &count) in counts.iter().enumerate() {
            *kept_per_pair.entry(index).or_insert(0) += count as u32;
        }
    }
    // Each pair is kept with probability 5/15; over 3000 draws the count is
    // Binomial(3000, 1/3): mean 1000, sd ≈ 25.8. Five sd either side.
    for (pair, kept) in kept_per_pair {
        assert!(
            (871..=1129).contains(&kept),
            "pair {pair} kept {kept} times"
        );
    }
}
