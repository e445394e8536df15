//! Every malformed input is refused with an error that names what is wrong,
//! and a refused aggregate leaves the miner where it was.

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use veil_basket_rules::{
    BasketConfig, BasketGrouping, Baskets, Candidates, LevelAggregate, Miner, MinerConfig, Next,
    NoisePlan, PrivacyTarget, PurchaseRow, RuleConfig, RulesError, Vocabulary, association_rules,
    local_counts,
};

fn config() -> MinerConfig {
    MinerConfig {
        min_support: 0.1,
        itemset_caps: vec![4, 6],
        max_baskets_per_customer: 1,
        expected_false_itemsets_per_level: 1.0,
    }
}

fn check_miner_config(config: MinerConfig, vocabulary_len: usize, expected: RulesError) {
    assert_eq!(Miner::new(config, vocabulary_len, None), Err(expected));
}

#[test]
fn bad_miner_configurations_are_refused() {
    check_miner_config(
        MinerConfig {
            min_support: 0.0,
            ..config()
        },
        3,
        RulesError::OutOfRange {
            what: "min_support",
            range: "(0, 1]",
            value: 0.0,
        },
    );
    check_miner_config(
        MinerConfig {
            itemset_caps: vec![],
            ..config()
        },
        3,
        RulesError::ZeroBound {
            what: "the number of levels (itemset_caps)",
        },
    );
    check_miner_config(
        MinerConfig {
            itemset_caps: vec![3, 0],
            ..config()
        },
        3,
        RulesError::ZeroBound {
            what: "every itemset cap",
        },
    );
    check_miner_config(
        MinerConfig {
            max_baskets_per_customer: 0,
            expected_false_itemsets_per_level: 1.0,
            ..config()
        },
        3,
        RulesError::ZeroBound {
            what: "max_baskets_per_customer",
        },
    );
    check_miner_config(config(), 0, RulesError::EmptyVocabulary);
    check_miner_config(
        MinerConfig {
            expected_false_itemsets_per_level: -1.0,
            ..config()
        },
        3,
        RulesError::OutOfRange {
            what: "expected_false_itemsets_per_level",
            range: "(0, inf)",
            value: -1.0,
        },
    );
    let plan = NoisePlan::calibrate(
        PrivacyTarget {
            epsilon: 1.0,
            delta: 1e-6,
            min_survivors: 3,
        },
        &config().level_sensitivities()[..1],
    )
    .expect("calibrates");
    assert_eq!(
        Miner::new(config(), 3, Some(plan)),
        Err(RulesError::PlanLevels {
            planned: 1,
            levels: 2
        })
    );
}

#[test]
fn bad_aggregates_are_refused_and_leave_the_miner_unchanged() {
    let mut miner = Miner::new(config(), 3, None).expect("valid");
    let before = miner.clone();
    assert_eq!(
        miner.handle_level_counts(LevelAggregate {
            counts: vec![1, 2, 3],
            noise_shares: 0
        }),
        Err(RulesError::CountLength {
            level: 1,
            expected: 4,
            got: 3
        })
    );
    assert_eq!(
        miner.handle_level_counts(LevelAggregate {
            counts: vec![1, 2, 3, 10],
            noise_shares: 2
        }),
        Err(RulesError::NoiseShares {
            level: 1,
            expected: 0,
            got: 2
        })
    );
    assert_eq!(miner, before);
    // A noised miner refuses a sum with fewer noise shares than t.
    let plan = NoisePlan::calibrate(
        PrivacyTarget {
            epsilon: 1.0,
            delta: 1e-6,
            min_survivors: 3,
        },
        &config().level_sensitivities(),
    )
    .expect("calibrates");
    let mut noised = Miner::new(config(), 3, Some(plan)).expect("valid");
    assert_eq!(
        noised.handle_level_counts(LevelAggregate {
            counts: vec![5, 5, 5, 10],
            noise_shares: 2
        }),
        Err(RulesError::NoiseShares {
            level: 1,
            expected: 3,
            got: 2
        })
    );
    // Items 0 and 2 pass (support 0.5 ≥ 0.1), item 1 does not (0.0).
    let next = miner.handle_level_counts(LevelAggregate {
        counts: vec![5, 0, 5, 10],
        noise_shares: 0,
    });
    let Ok(Next::Candidates(candidates)) = next else {
        panic!("expected level 2 candidates, got {next:?}");
    };
    assert_eq!(candidates.itemsets(), &[vec![0, 2]]);
    assert_eq!(miner.cap(), Some(6));
    let done = miner.handle_level_counts(LevelAggregate {
        counts: vec![4],
        noise_shares: 0,
    });
    assert!(matches!(done, Ok(Next::Done(ref frequent)) if frequent.itemsets.len() == 3));
    assert_eq!(
        miner.handle_level_counts(LevelAggregate {
            counts: vec![4],
            noise_shares: 0
        }),
        Err(RulesError::MinerFinished)
    );
    assert_eq!(miner.candidates(), None);
}

#[test]
fn a_non_positive_basket_total_ends_mining_with_nothing() {
    let mut miner = Miner::new(config(), 2, None).expect("valid");
    let done = miner.handle_level_counts(LevelAggregate {
        counts: vec![3, 3, 0],
        noise_shares: 0,
    });
    assert!(matches!(done, Ok(Next::Done(ref frequent)) if frequent.itemsets.is_empty()));
}

#[test]
fn malformed_candidate_lists_are_refused_naming_the_candidate() {
    let check = |level, itemsets: Vec<Vec<u32>>, index, reason| {
        assert_eq!(
            Candidates::new(level, itemsets, 5),
            Err(RulesError::InvalidCandidate {
                level,
                index,
                reason
            })
        );
    };
    check(2, vec![vec![0, 1], vec![2]], 1, "its size is not the level");
    check(2, vec![vec![1, 1]], 0, "items are not strictly increasing");
    check(2, vec![vec![3, 1]], 0, "items are not strictly increasing");
    check(2, vec![vec![1, 5]], 0, "an item is outside the vocabulary");
    check(
        2,
        vec![vec![1, 2], vec![0, 3]],
        1,
        "itemsets are not strictly increasing",
    );
    check(
        2,
        vec![vec![1, 2], vec![1, 2]],
        1,
        "itemsets are not strictly increasing",
    );
    assert_eq!(Candidates::new(0, vec![], 5), Err(RulesError::ZeroLevel));
    // Valid candidates over a larger vocabulary than the baskets know.
    let vocabulary = Vocabulary::declared(["a", "b"]).expect("valid");
    let baskets = Baskets::build(
        [PurchaseRow {
            customer: "c",
            day: 0,
            item: "a",
        }],
        &vocabulary,
        &BasketConfig {
            grouping: BasketGrouping::CustomerWindow,
            first_day: 0,
            last_day: 0,
        },
    )
    .expect("valid");
    let wide = Candidates::new(2, vec![vec![0, 1], vec![0, 4]], 5).expect("valid for 5 items");
    let mut rng = ChaCha20Rng::seed_from_u64(0);
    assert_eq!(
        local_counts(&baskets, &wide, 3, &mut rng),
        Err(RulesError::InvalidCandidate {
            level: 2,
            index: 1,
            reason: "an item is outside the vocabulary"
        })
    );
    let fine = Candidates::new(2, vec![vec![0, 1]], 2).expect("valid");
    assert_eq!(
        local_counts(&baskets, &fine, 0, &mut rng),
        Err(RulesError::ZeroBound {
            what: "the itemset cap"
        })
    );
}

#[test]
fn bad_rule_configurations_are_refused() {
    let mut miner = Miner::new(config(), 2, None).expect("valid");
    let Ok(Next::Candidates(_)) = miner.handle_level_counts(LevelAggregate {
        counts: vec![5, 5, 10],
        noise_shares: 0,
    }) else {
        panic!("expected level 2");
    };
    let Ok(Next::Done(frequent)) = miner.handle_level_counts(LevelAggregate {
        counts: vec![5],
        noise_shares: 0,
    }) else {
        panic!("expected the end");
    };
    let valid = RuleConfig {
        min_confidence: 0.5,
        interval_level: 0.95,
        top_n: 10,
    };
    assert_eq!(
        association_rules(&frequent, &valid).map(|rules| rules.len()),
        Ok(2)
    );
    assert_eq!(
        association_rules(
            &frequent,
            &RuleConfig {
                min_confidence: 1.5,
                ..valid
            }
        ),
        Err(RulesError::OutOfRange {
            what: "min_confidence",
            range: "[0, 1]",
            value: 1.5
        })
    );
    assert_eq!(
        association_rules(
            &frequent,
            &RuleConfig {
                interval_level: 1.0,
                ..valid
            }
        ),
        Err(RulesError::OutOfRange {
            what: "interval_level",
            range: "(0, 1)",
            value: 1.0
        })
    );
    let vocabulary = Vocabulary::declared(["only"]).expect("valid");
    let rules = association_rules(&frequent, &valid).expect("rules");
    assert_eq!(
        veil_basket_rules::write_rules_csv(Vec::new(), &rules, &vocabulary),
        Err(RulesError::UnknownItemId(1))
    );
}

#[test]
fn rules_csv_has_the_documented_columns() {
    let mut miner = Miner::new(config(), 2, None).expect("valid");
    let _ = miner.handle_level_counts(LevelAggregate {
        counts: vec![5, 4, 10],
        noise_shares: 0,
    });
    let Ok(Next::Done(frequent)) = miner.handle_level_counts(LevelAggregate {
        counts: vec![2],
        noise_shares: 0,
    }) else {
        panic!("expected the end");
    };
    let rules = association_rules(
        &frequent,
        &RuleConfig {
            min_confidence: 0.0,
            interval_level: 0.95,
            top_n: 1,
        },
    )
    .expect("rules");
    let vocabulary = Vocabulary::declared(["tea", "cake"]).expect("valid");
    let mut written = Vec::new();
    veil_basket_rules::write_rules_csv(&mut written, &rules, &vocabulary).expect("writes");
    // Both rules have lift 0.2/(0.5·0.4) = 1 and support 0.2; the tie goes
    // to the smaller antecedent: tea → cake.
    assert_eq!(
        String::from_utf8(written).expect("utf-8"),
        "antecedent,consequent,support,support_low,support_high,confidence,confidence_low,\
         confidence_high,lift,lift_low,lift_high\n\
         tea,cake,0.2,0.2,0.2,0.4,0.4,0.4,1,1,1\n"
    );
}
