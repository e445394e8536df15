//! Vocabulary discovery by a DP heavy-hitters release over hashed items: the
//! popular items are revealed, buckets no customer touched almost never are,
//! the released vector carries the calibrated noise, and item names stay on
//! the node.

use std::collections::HashMap;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use veil_basket_rules::heavy_hitters::{
    HashSpace, bucket_sensitivity, discovered_buckets, false_discovery_threshold,
    local_bucket_counts, local_bucket_names,
};
use veil_basket_rules::simulate::{SimulationConfig, simulate};
use veil_basket_rules::{
    BasketConfig, BasketGrouping, Baskets, NoisePlan, PrivacyTarget, RulesError, Vocabulary,
};

const PARTNERS: u32 = 4;
const ITEMS_PER_CUSTOMER: u32 = 3;

#[test]
fn popular_items_are_discovered_through_noise_and_names_stay_local() {
    let simulation = simulate(&SimulationConfig {
        seed: 9,
        categories: 120,
        partners: PARTNERS,
        customers_per_partner: 3_000,
        days: 28,
        max_visits_per_customer: 2,
        mean_basket_size: 2.5,
        max_basket_size: 6,
        planted_pairs: 2,
        pair_rate: 0.2,
    })
    .expect("valid");
    let space = HashSpace::new(16).expect("valid bits");
    let plan = NoisePlan::calibrate(
        PrivacyTarget {
            epsilon: 0.5,
            delta: 1e-6,
            min_survivors: u64::from(PARTNERS),
        },
        &[bucket_sensitivity(ITEMS_PER_CUSTOMER)],
    )
    .expect("calibrates");
    let release = plan.release(0).expect("one release");
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let mut noised_sum = vec![0i64; space.buckets() as usize];
    let mut exact_sum = vec![0i64; space.buckets() as usize];
    for rows in &simulation.partners {
        let purchases = rows
            .iter()
            .map(|row| (row.customer.as_str(), row.item.as_str()));
        let mut counts =
            local_bucket_counts(purchases, space, ITEMS_PER_CUSTOMER, &mut rng).expect("counts");
        for (total, &count) in exact_sum.iter_mut().zip(&counts) {
            *total += count;
        }
        release
            .add_node_noise(&mut counts, &mut rng)
            .expect("noise");
        for (total, count) in noised_sum.iter_mut().zip(counts) {
            *total += count;
        }
    }
    let variance = release.aggregate_variance(u64::from(PARTNERS));
    // The released vector is the exact one plus noise of the planned
    // variance: 65 536 residuals, so the sample variance is within a few
    // percent; 10% fails a missing or a one-node noise.
    let residual_variance = noised_sum
        .iter()
        .zip(&exact_sum)
        .map(|(&noised, &exact)| ((noised - exact) as f64).powi(2))
        .sum::<f64>()
        / f64::from(space.buckets());
    assert!(
        (residual_variance / variance - 1.0).abs() < 0.1,
        "{residual_variance} vs {variance}"
    );

    let threshold = false_discovery_threshold(variance, space, 1.0).expect("threshold");
    let revealed = discovered_buckets(&noised_sum, threshold);
    let sigma = variance.sqrt();
    for (bucket, &exact) in exact_sum.iter().enumerate() {
        let found = revealed.contains(&(bucket as u32));
        if exact as f64 >= threshold + 5.0 * sigma {
            assert!(
                found,
                "bucket {bucket} with {exact} customers was not revealed"
            );
        }
    }
    let false_discoveries = revealed
        .iter()
        .filter(|&&bucket| exact_sum[bucket as usize] == 0)
        .count();
    // Expected at most 1 (the threshold's target); 5 is a Poisson(1) tail of 4e-4.
    assert!(
        false_discoveries <= 5,
        "{false_discoveries} empty buckets revealed"
    );
    assert!(
        revealed.len() > 20,
        "only {} buckets revealed",
        revealed.len()
    );

    // The public vocabulary is bucket labels; names come back only locally.
    let vocabulary = Vocabulary::from_buckets(&revealed, space).expect("vocabulary");
    assert!((0..vocabulary.len() as u32).all(|id| {
        vocabulary
            .label(id)
            .is_some_and(|label| label.starts_with('#'))
    }));
    let local_items: Vec<&str> = simulation.partners[0]
        .iter()
        .map(|row| row.item.as_str())
        .collect();
    let names = local_bucket_names(&vocabulary, local_items.iter().copied());
    let popular = names.values().flatten().count();
    assert!(popular > 20, "{popular}");
    for (id, item_names) in &names {
        for name in item_names {
            assert_eq!(vocabulary.lookup(name), Some(*id));
        }
    }
    // Baskets over the discovered vocabulary reject the undiscovered items.
    let baskets = Baskets::build(
        simulation.partners[0].iter().map(|row| row.as_row()),
        &vocabulary,
        &BasketConfig {
            grouping: BasketGrouping::CustomerWindow,
            first_day: 0,
            last_day: 27,
        },
    )
    .expect("baskets");
    let known: HashMap<&str, bool> = local_items
        .iter()
        .map(|&item| (item, vocabulary.lookup(item).is_some()))
        .collect();
    let unknown_rows = local_items.iter().filter(|item| !known[*item]).count() as u64;
    assert_eq!(baskets.report().rejected_unknown_item, unknown_rows);
}

#[test]
fn bad_heavy_hitter_settings_are_refused() {
    assert_eq!(HashSpace::new(0), Err(RulesError::InvalidHashBits(0)));
    assert_eq!(HashSpace::new(25), Err(RulesError::InvalidHashBits(25)));
    let space = HashSpace::new(4).expect("valid");
    assert_eq!(
        Vocabulary::from_buckets(&[3, 16], space),
        Err(RulesError::BucketOutOfRange {
            bucket: 16,
            bits: 4
        })
    );
    assert_eq!(
        Vocabulary::from_buckets(&[], space),
        Err(RulesError::EmptyVocabulary)
    );
    assert_eq!(
        false_discovery_threshold(4.0, space, 0.0),
        Err(RulesError::OutOfRange {
            what: "expected_false_buckets",
            range: "(0, buckets / 2]",
            value: 0.0
        })
    );
    assert!(matches!(
        false_discovery_threshold(f64::NAN, space, 1.0),
        Err(RulesError::OutOfRange {
            what: "aggregate_variance",
            ..
        })
    ));
    let mut rng = ChaCha20Rng::seed_from_u64(0);
    assert_eq!(
        local_bucket_counts([("c", "milk")], space, 0, &mut rng),
        Err(RulesError::ZeroBound {
            what: "max_items_per_customer"
        })
    );
    // A customer contributes at most k distinct buckets, however much they buy.
    let purchases: Vec<(&str, String)> = (0..50).map(|item| ("c", format!("sku-{item}"))).collect();
    let counts = local_bucket_counts(
        purchases
            .iter()
            .map(|(customer, item)| (*customer, item.as_str())),
        HashSpace::new(12).expect("valid"),
        3,
        &mut rng,
    )
    .expect("counts");
    assert_eq!(counts.iter().sum::<i64>(), 3);
    assert!(counts.iter().all(|&count| count <= 1));
}
