//! Wall time of federated rule mining at the scale: 200 categories,
//! 1M customer-window baskets over 10 non-IID partners (100k each), levels
//! up to 3, exactly and with distributed DP at ε = 1 per partner. Building
//! the baskets from 4M purchase rows is timed separately. Secure
//! aggregation is not included (the sums are plain here; `veil-secure-aggregation` has
//! its own benches). `scripts/bench-basket-rules --compare-mlxtend` adds
//! mlxtend on the pooled data and the precision/recall of Veil's DP rules.

use criterion::{Criterion, criterion_group, criterion_main};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use veil_basket_rules::simulate::{SimulationConfig, mine_federated, simulate};
use veil_basket_rules::{
    BasketGrouping, MinerConfig, NoisePlan, PrivacyTarget, RuleConfig, association_rules,
};

const PARTNERS: u32 = 10;

fn simulation_config() -> SimulationConfig {
    SimulationConfig {
        seed: 7,
        categories: 200,
        partners: PARTNERS,
        customers_per_partner: 100_000,
        days: 28,
        max_visits_per_customer: 1,
        mean_basket_size: 4.0,
        max_basket_size: 12,
        planted_pairs: 10,
        pair_rate: 0.3,
    }
}

fn miner_config() -> MinerConfig {
    MinerConfig {
        min_support: 0.01,
        // Never binding: baskets hold at most 12 items (66 pairs, 220 triples).
        itemset_caps: vec![12, 66, 220],
        max_baskets_per_customer: 1,
        expected_false_itemsets_per_level: 1.0,
    }
}

fn mine(criterion: &mut Criterion) {
    let simulation = simulate(&simulation_config()).unwrap_or_else(|error| panic!("{error}"));
    let build = || {
        simulation
            .baskets(BasketGrouping::CustomerWindow)
            .unwrap_or_else(|error| panic!("{error}"))
    };
    let partners = build();
    let plan = NoisePlan::calibrate(
        PrivacyTarget {
            epsilon: 1.0,
            delta: 1e-6,
            min_survivors: u64::from(PARTNERS),
        },
        &miner_config().level_sensitivities(),
    )
    .unwrap_or_else(|error| panic!("{error}"));
    let rule_config = RuleConfig {
        min_confidence: 0.2,
        interval_level: 0.95,
        top_n: 100,
    };
    let mut group = criterion.benchmark_group("basket_rules_1m_baskets_200_categories_10_partners");
    group.sample_size(10);
    group.bench_function("build_baskets", |bencher| bencher.iter(build));
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    group.bench_function("mine_exact", |bencher| {
        bencher.iter(|| {
            let frequent = mine_federated(&partners, miner_config(), None, &mut rng)
                .unwrap_or_else(|error| panic!("{error}"));
            association_rules(&frequent, &rule_config).unwrap_or_else(|error| panic!("{error}"))
        });
    });
    group.bench_function("mine_dp_epsilon_1", |bencher| {
        bencher.iter(|| {
            let frequent = mine_federated(&partners, miner_config(), Some(&plan), &mut rng)
                .unwrap_or_else(|error| panic!("{error}"));
            association_rules(&frequent, &rule_config).unwrap_or_else(|error| panic!("{error}"))
        });
    });
    group.finish();
}

criterion_group!(benches, mine);
criterion_main!(benches);
