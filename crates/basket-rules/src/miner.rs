//! The coordinator's side of level-wise mining, as a sans-IO state machine.
//! It holds the public candidate list of the current level; the IO layer
//! sends it to the nodes, sums their noised [`crate::local_counts`] through
//! secure aggregation and calls [`Miner::handle_level_counts`] with the sum.
//! The miner keeps the itemsets whose noised support passes the threshold and
//! builds the next level's candidates from those noised supports only
//! (Apriori join and prune), so nothing but noised sums ever steers the
//! search.

use std::collections::HashSet;

use crate::counting::{Candidates, Itemset, Sensitivity, level_sensitivity};
use veil_privacy_accounting::normal_upper_quantile;

use crate::error::RulesError;
use crate::privacy::NoisePlan;

/// What every mining run must state; there is no default.
#[derive(Debug, Clone, PartialEq)]
pub struct MinerConfig {
    /// Keep an itemset when its noised count over the noised basket total is
    /// at least this (as `mlxtend`'s `min_support`), in `(0, 1]`.
    pub min_support: f64,
    /// Cap on incidences per customer at each level; its length is the
    /// largest itemset size mined.
    pub itemset_caps: Vec<u32>,
    /// `m`: the most baskets one customer contributes (1 for customer-window
    /// baskets).
    pub max_baskets_per_customer: u32,
    /// With noise, an itemset must also clear a margin of `σ·Φ⁻¹(1 − α/d)`
    /// above the support threshold, `σ` the level's noise deviation and `d`
    /// its number of candidates, with `α` this value: a candidate whose true
    /// support is below `min_support` then passes with probability at most
    /// `α/d`, so at most `α` such itemsets are expected per level. Smaller
    /// is more precise and recalls less near the threshold. Ignored without
    /// noise (the margin is 0).
    pub expected_false_itemsets_per_level: f64,
}

impl MinerConfig {
    /// The contribution bound of every level, in order: what a
    /// [`NoisePlan`] for this run is calibrated on.
    pub fn level_sensitivities(&self) -> Vec<Sensitivity> {
        self.itemset_caps
            .iter()
            .enumerate()
            .map(|(index, &cap)| level_sensitivity(index + 1, cap, self.max_baskets_per_customer))
            .collect()
    }
}

/// One level's aggregate as the secure sum revealed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LevelAggregate {
    /// The summed, noised counts, in candidate order (basket total last at
    /// level 1).
    pub counts: Vec<i64>,
    /// How many partners' noise the sum holds (the survivors whose inputs
    /// were unmasked); 0 without noise.
    pub noise_shares: u64,
}

/// An itemset the miner kept, with its noised count.
#[derive(Debug, Clone, PartialEq)]
pub struct FrequentItemset {
    /// Sorted item ids.
    pub itemset: Itemset,
    /// Noised count of baskets containing it (exact without noise).
    pub count: f64,
    /// Variance of the noise in `count` (0 without noise).
    pub noise_variance: f64,
}

/// The result of mining.
#[derive(Debug, Clone, PartialEq)]
pub struct FrequentItemsets {
    /// Noised number of baskets.
    pub basket_total: f64,
    /// Variance of the noise in `basket_total`.
    pub basket_total_variance: f64,
    /// Every kept itemset, by size then lexicographically.
    pub itemsets: Vec<FrequentItemset>,
}

impl FrequentItemsets {
    /// The kept itemset with these items, if any.
    pub fn find(&self, itemset: &[u32]) -> Option<&FrequentItemset> {
        self.itemsets
            .binary_search_by(|kept| {
                kept.itemset
                    .len()
                    .cmp(&itemset.len())
                    .then_with(|| kept.itemset.as_slice().cmp(itemset))
            })
            .ok()
            .and_then(|index| self.itemsets.get(index))
    }

    /// Support of a kept itemset: its count over the basket total.
    pub fn support(&self, itemset: &[u32]) -> Option<f64> {
        self.find(itemset)
            .map(|kept| kept.count / self.basket_total)
    }
}

/// What the IO layer does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Count these candidates (one more secure-aggregation phase).
    Candidates(Candidates),
    /// Mining is over.
    Done(FrequentItemsets),
}

/// Where the miner is.
#[derive(Debug, Clone, PartialEq)]
enum State {
    /// Waiting for the counts of these candidates.
    Counting(Candidates),
    /// Finished; the result was handed out.
    Finished,
}

/// The coordinator's level-wise miner.
#[derive(Debug, Clone, PartialEq)]
pub struct Miner {
    /// The run's settings, fixed at the start.
    config: MinerConfig,
    /// Noise of each level's sum, for the variances; `None` for exact counts
    /// (tests and references only: a real job always has a plan).
    noise: Option<NoisePlan>,
    /// What the miner waits for.
    state: State,
    /// Noised basket total, known after level 1.
    basket_total: f64,
    /// Its noise variance.
    basket_total_variance: f64,
    /// Itemsets kept so far.
    kept: Vec<FrequentItemset>,
}

impl Miner {
    /// A miner at level 1, whose candidates are every vocabulary item.
    pub fn new(
        config: MinerConfig,
        vocabulary_len: usize,
        noise: Option<NoisePlan>,
    ) -> Result<Self, RulesError> {
        if !(config.min_support > 0.0 && config.min_support <= 1.0) {
            return Err(RulesError::OutOfRange {
                what: "min_support",
                range: "(0, 1]",
                value: config.min_support,
            });
        }
        // NaN is refused too.
        if config.expected_false_itemsets_per_level.is_nan()
            || config.expected_false_itemsets_per_level <= 0.0
        {
            return Err(RulesError::OutOfRange {
                what: "expected_false_itemsets_per_level",
                range: "(0, inf)",
                value: config.expected_false_itemsets_per_level,
            });
        }
        if config.itemset_caps.is_empty() {
            return Err(RulesError::ZeroBound {
                what: "the number of levels (itemset_caps)",
            });
        }
        if config.itemset_caps.contains(&0) {
            return Err(RulesError::ZeroBound {
                what: "every itemset cap",
            });
        }
        if config.max_baskets_per_customer == 0 {
            return Err(RulesError::ZeroBound {
                what: "max_baskets_per_customer",
            });
        }
        if vocabulary_len == 0 {
            return Err(RulesError::EmptyVocabulary);
        }
        if let Some(plan) = &noise
            && plan.len() != config.itemset_caps.len()
        {
            return Err(RulesError::PlanLevels {
                planned: plan.len(),
                levels: config.itemset_caps.len(),
            });
        }
        Ok(Self {
            config,
            noise,
            state: State::Counting(Candidates::first_level(vocabulary_len)),
            basket_total: 0.0,
            basket_total_variance: 0.0,
            kept: Vec::new(),
        })
    }

    /// The candidates waiting to be counted, or `None` once finished.
    pub fn candidates(&self) -> Option<&Candidates> {
        match &self.state {
            State::Counting(candidates) => Some(candidates),
            State::Finished => None,
        }
    }

    /// The incidence cap of the level being counted.
    pub fn cap(&self) -> Option<u32> {
        self.candidates()
            .and_then(|candidates| self.config.itemset_caps.get(candidates.level() - 1))
            .copied()
    }

    /// Keeps at most `max` of the current level's candidates, so a release
    /// of fixed length can hold them: those whose weakest immediate subset
    /// has the highest noised count (ties by itemset order), in itemset
    /// order. Post-processing of noised counts only; level 1 (every item)
    /// is never limited.
    pub fn limit_candidates(&mut self, max: usize) {
        let State::Counting(candidates) = &self.state else {
            return;
        };
        let level = candidates.level();
        if level < 2 || candidates.itemsets().len() <= max {
            return;
        }
        let mut subset = Vec::with_capacity(level - 1);
        let mut scored: Vec<(f64, &Itemset)> = candidates
            .itemsets()
            .iter()
            .map(|itemset| {
                let weakest = (0..level)
                    .map(|skip| {
                        subset.clear();
                        subset.extend(
                            itemset
                                .iter()
                                .enumerate()
                                .filter(|&(position, _)| position != skip)
                                .map(|(_, &item)| item),
                        );
                        self.kept
                            .iter()
                            .find(|kept| kept.itemset == subset)
                            .map_or(f64::NEG_INFINITY, |kept| kept.count)
                    })
                    .fold(f64::INFINITY, f64::min);
                (weakest, itemset)
            })
            .collect();
        // A stable sort keeps itemset order among equal scores.
        scored.sort_by(|left, right| right.0.total_cmp(&left.0));
        let mut kept: Vec<Itemset> = scored
            .into_iter()
            .take(max)
            .map(|(_, itemset)| itemset.clone())
            .collect();
        kept.sort_unstable();
        self.state = State::Counting(Candidates::trusted(level, kept));
    }

    /// Takes the level's aggregate. A malformed aggregate is refused and
    /// leaves the miner unchanged.
    pub fn handle_level_counts(&mut self, aggregate: LevelAggregate) -> Result<Next, RulesError> {
        let State::Counting(candidates) = &self.state else {
            return Err(RulesError::MinerFinished);
        };
        let level = candidates.level();
        if aggregate.counts.len() != candidates.vector_len() {
            return Err(RulesError::CountLength {
                level,
                expected: candidates.vector_len(),
                got: aggregate.counts.len(),
            });
        }
        let variance = match &self.noise {
            None if aggregate.noise_shares == 0 => 0.0,
            None => {
                return Err(RulesError::NoiseShares {
                    level,
                    expected: 0,
                    got: aggregate.noise_shares,
                });
            }
            Some(plan) => {
                let needed = plan.target().min_survivors;
                if aggregate.noise_shares < needed {
                    return Err(RulesError::NoiseShares {
                        level,
                        expected: needed,
                        got: aggregate.noise_shares,
                    });
                }
                plan.release(level - 1).map_or(0.0, |release| {
                    release.aggregate_variance(aggregate.noise_shares)
                })
            }
        };
        if level == 1 {
            self.basket_total = aggregate.counts.last().copied().unwrap_or(0) as f64;
            self.basket_total_variance = variance;
        }
        let candidate_count = candidates.itemsets().len().max(1) as f64;
        let tail_mass = (self.config.expected_false_itemsets_per_level / candidate_count).min(0.5);
        let margin = variance.sqrt() * normal_upper_quantile(tail_mass);
        let mut frequent_now = Vec::new();
        if self.basket_total > 0.0 {
            for (itemset, &count) in candidates.itemsets().iter().zip(&aggregate.counts) {
                // Without noise, the same comparison as mlxtend: support =
                // count / n ≥ min_support.
                let passes = if margin > 0.0 {
                    count as f64 - margin >= self.config.min_support * self.basket_total
                } else {
                    count as f64 / self.basket_total >= self.config.min_support
                };
                if passes {
                    frequent_now.push(itemset.clone());
                    self.kept.push(FrequentItemset {
                        itemset: itemset.clone(),
                        count: count as f64,
                        noise_variance: variance,
                    });
                }
            }
        }
        let next = if level < self.config.itemset_caps.len() {
            apriori_candidates(&frequent_now)
        } else {
            Vec::new()
        };
        if next.is_empty() {
            self.state = State::Finished;
            return Ok(Next::Done(FrequentItemsets {
                basket_total: self.basket_total,
                basket_total_variance: self.basket_total_variance,
                itemsets: std::mem::take(&mut self.kept),
            }));
        }
        let candidates = Candidates::trusted(level + 1, next);
        self.state = State::Counting(candidates.clone());
        Ok(Next::Candidates(candidates))
    }
}

/// Apriori candidate generation: join two frequent `L`-itemsets that share
/// their first `L - 1` items, keep the union if every `L`-subset of it is
/// frequent. Input and output are sorted lexicographically.
fn apriori_candidates(frequent: &[Itemset]) -> Vec<Itemset> {
    let known: HashSet<&[u32]> = frequent.iter().map(Vec::as_slice).collect();
    let mut next = Vec::new();
    let mut subset = Vec::new();
    for (index, left) in frequent.iter().enumerate() {
        let prefix_len = left.len() - 1;
        for right in &frequent[index + 1..] {
            if right[..prefix_len] != left[..prefix_len] {
                // Sorted input: no later itemset shares this prefix.
                break;
            }
            let mut joined = left.clone();
            joined.push(right[prefix_len]);
            let all_subsets_frequent = (0..joined.len().saturating_sub(2)).all(|skip| {
                subset.clear();
                subset.extend(
                    joined
                        .iter()
                        .enumerate()
                        .filter(|&(position, _)| position != skip)
                        .map(|(_, &item)| item),
                );
                known.contains(subset.as_slice())
            });
            if all_subsets_frequent {
                next.push(joined);
            }
        }
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiting_keeps_the_candidates_of_strongest_subsets_in_order() {
        let config = MinerConfig {
            min_support: 0.1,
            itemset_caps: vec![4, 4],
            max_baskets_per_customer: 1,
            expected_false_itemsets_per_level: 0.1,
        };
        let Ok(mut miner) = Miner::new(config, 3, None) else {
            unreachable!("valid configuration");
        };
        // Items 0, 1, 2 frequent with counts 50, 20, 40 of 100 baskets.
        let aggregate = LevelAggregate {
            counts: vec![50, 20, 40, 100],
            noise_shares: 0,
        };
        assert!(matches!(
            miner.handle_level_counts(aggregate),
            Ok(Next::Candidates(_))
        ));
        miner.limit_candidates(2);
        let kept = miner
            .candidates()
            .map(|candidates| candidates.itemsets().to_vec());
        // {0,2} (weakest 40) and {0,1} / {1,2} (weakest 20, itemset order).
        assert_eq!(kept, Some(vec![vec![0, 1], vec![0, 2]]));
        miner.limit_candidates(5);
        assert_eq!(
            miner
                .candidates()
                .map(|candidates| candidates.itemsets().len()),
            Some(2)
        );
    }

    #[test]
    fn apriori_joins_and_prunes() {
        let frequent = vec![vec![1, 2], vec![1, 3], vec![1, 4], vec![2, 3], vec![3, 4]];
        // {1,2,3}: all of {1,2},{1,3},{2,3} frequent. {1,2,4}: {2,4} is not.
        // {1,3,4}: {1,3},{1,4},{3,4} frequent.
        assert_eq!(
            apriori_candidates(&frequent),
            vec![vec![1, 2, 3], vec![1, 3, 4]]
        );
        let singles = vec![vec![0], vec![2], vec![5]];
        assert_eq!(
            apriori_candidates(&singles),
            vec![vec![0, 2], vec![0, 5], vec![2, 5]]
        );
    }
}
