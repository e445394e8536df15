//! Veil's miner and rules against mlxtend 0.23.4 (`apriori` +
//! `association_rules`) on the checked-in basket data set, split over three
//! partners: the same itemsets and rules, and the same support, confidence
//! and lift (`reference/generate_reference.py` made the tables).

use std::collections::BTreeMap;
use std::path::Path;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use veil_basket_rules::simulate::mine_federated;
use veil_basket_rules::{
    BasketConfig, BasketGrouping, Baskets, MinerConfig, PurchaseRow, RuleConfig, Vocabulary,
    association_rules,
};

fn reference(name: &str) -> Vec<Vec<String>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("reference")
        .join(name);
    let mut reader = csv::Reader::from_path(&path).expect("reference table");
    reader
        .records()
        .map(|record| record.expect("row").iter().map(str::to_owned).collect())
        .collect()
}

fn number(text: &str) -> f64 {
    text.parse().expect("a number")
}

/// 1e-12 relative: both sides divide the same integer counts, but mlxtend
/// divides supports (already rounded) where Veil divides counts, so the last
/// few bits may differ.
fn close(veil: f64, mlxtend: f64) -> bool {
    (veil - mlxtend).abs() <= 1e-12 * mlxtend.abs()
}

#[test]
fn itemsets_and_rules_match_mlxtend() {
    let rows = reference("baskets.csv");
    let mut names: Vec<String> = rows.iter().map(|row| row[1].clone()).collect();
    names.sort();
    names.dedup();
    let vocabulary = Vocabulary::declared(names).expect("vocabulary");
    let config = BasketConfig {
        grouping: BasketGrouping::CustomerWindow,
        first_day: 0,
        last_day: 0,
    };
    // Basket b goes to partner b mod 3; each basket is its own customer.
    let partners: Vec<Baskets> = (0..3)
        .map(|partner| {
            let purchases = rows
                .iter()
                .filter(|row| number(&row[0]) as usize % 3 == partner)
                .map(|row| PurchaseRow {
                    customer: &row[0],
                    day: 0,
                    item: &row[1],
                });
            Baskets::build(purchases.collect::<Vec<_>>(), &vocabulary, &config).expect("baskets")
        })
        .collect();
    let miner_config = MinerConfig {
        min_support: 0.05,
        // Baskets hold at most 6 items: 6 singles, 15 pairs, 20 triples.
        itemset_caps: vec![100, 100, 100],
        max_baskets_per_customer: 1,
        expected_false_itemsets_per_level: 1.0,
    };
    let mut rng = ChaCha20Rng::seed_from_u64(0);
    let frequent = mine_federated(&partners, miner_config, None, &mut rng).expect("mines");
    assert_eq!(frequent.basket_total, 90.0);
    let labels = |itemset: &[u32]| {
        itemset
            .iter()
            .map(|&item| vocabulary.label(item).expect("known item"))
            .collect::<Vec<_>>()
            .join("|")
    };

    let expected_itemsets = reference("mlxtend_itemsets.csv");
    let veil_itemsets: BTreeMap<String, f64> = frequent
        .itemsets
        .iter()
        .map(|kept| (labels(&kept.itemset), kept.count / frequent.basket_total))
        .collect();
    assert_eq!(veil_itemsets.len(), expected_itemsets.len());
    for row in &expected_itemsets {
        let support = veil_itemsets.get(&row[0]).copied();
        assert!(
            support.is_some_and(|support| close(support, number(&row[1]))),
            "itemset {}: Veil {support:?}, mlxtend {}",
            row[0],
            row[1]
        );
    }

    let rules = association_rules(
        &frequent,
        &RuleConfig {
            min_confidence: 0.3,
            interval_level: 0.95,
            top_n: usize::MAX,
        },
    )
    .expect("rules");
    let veil_rules: BTreeMap<(String, String), [f64; 3]> = rules
        .iter()
        .map(|rule| {
            (
                (labels(&rule.antecedent), labels(&rule.consequent)),
                [rule.support.value, rule.confidence.value, rule.lift.value],
            )
        })
        .collect();
    let expected_rules = reference("mlxtend_rules.csv");
    assert_eq!(veil_rules.len(), expected_rules.len());
    for row in &expected_rules {
        let key = (row[0].clone(), row[1].clone());
        let metrics = veil_rules.get(&key).copied();
        let expected = [number(&row[2]), number(&row[3]), number(&row[4])];
        assert!(
            metrics.is_some_and(|metrics| metrics
                .iter()
                .zip(expected)
                .all(|(&veil, mlxtend)| close(veil, mlxtend))),
            "rule {key:?}: Veil {metrics:?}, mlxtend {expected:?}"
        );
    }
    // Without noise every interval is the point itself.
    assert!(rules.iter().all(|rule| {
        [rule.support, rule.confidence, rule.lift]
            .iter()
            .all(|estimate| estimate.low == estimate.value && estimate.high == estimate.value)
    }));
    // Sorted by lift, highest first.
    assert!(
        rules
            .windows(2)
            .all(|pair| pair[0].lift.value >= pair[1].lift.value)
    );
}
