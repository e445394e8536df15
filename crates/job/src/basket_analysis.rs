//! The `basket-rules` job kind (docs/basket-rules.md): federated DP frequent
//! itemsets over a declared item vocabulary and the association rules they
//! imply, with `veil-basket-rules` doing the mining. This module fixes the
//! plan from the spec alone (one release per level, each of a fixed length),
//! derives each level's candidates by replaying the coordinator's miner over
//! the noised sums before it, and turns the last sums into rules.
//!
//! **Release layout.** Level 1: one noised count per item, the noised number
//! of baskets, then a noiseless `1` per node (the sum counts the noise
//! shares, which sets the variance the thresholds and intervals use). Level
//! `L ≥ 2`: `max_candidates` noised counts, the level's candidates in the
//! first slots and zeros (noise only) after them, then the node's `1`. The
//! node count carries no customer data, so the sensitivity is the library's.

use veil_basket_rules::{
    BasketGrouping, FrequentItemsets, LevelAggregate, Miner, MinerConfig, Next, NoisePlan,
    PrivacyTarget, Rule, RuleConfig, Vocabulary, association_rules,
};
use veil_privacy_ledger::Mechanism;
use veil_wire::v1;

use crate::spec::{JobSpecError, invalid};

/// Default largest itemset: pairs, what cross-sell acts on.
pub const DEFAULT_MAX_ITEMSET_SIZE: usize = 2;
/// Default itemsets one customer adds to a level's counts.
pub const DEFAULT_ITEMSET_CAP: u32 = 4;
/// Default candidate slots of a level after the first.
pub const DEFAULT_MAX_CANDIDATES: usize = 256;
/// Default purchase days a customer contributes with per-day baskets.
pub const DEFAULT_MAX_DAYS_PER_CUSTOMER: u32 = 4;
/// Default basket window, in days up to the cutoff.
pub const DEFAULT_WINDOW_DAYS: u32 = 365;
/// Default rules kept.
pub const DEFAULT_TOP_N: usize = 20;
/// Two-sided coverage of every rule metric's interval.
pub const INTERVAL_LEVEL: f64 = 0.95;
/// Noise-only itemsets expected to pass a level's threshold: the margin
/// the miner adds to the support threshold is set from it.
pub const EXPECTED_FALSE_ITEMSETS_PER_LEVEL: f64 = 0.05;
/// Values per rule in the exported result, besides its items: support,
/// confidence and lift, each with its interval.
const RULE_METRICS: usize = 9;

/// A basket-rules job's settings and the noise plan they imply.
#[derive(Debug, Clone, PartialEq)]
pub struct BasketRules {
    /// The public vocabulary, in id order.
    pub vocabulary: Vocabulary,
    /// Levels, caps and support threshold of the miner.
    pub miner: MinerConfig,
    /// Confidence threshold, interval level and top N of the rules.
    pub rules: RuleConfig,
    /// One basket per customer in the window, or one per purchase day.
    pub grouping: BasketGrouping,
    /// Baskets hold the purchases of this many days up to the cutoff.
    pub window_days: u32,
    /// Candidate slots of each level after the first.
    pub max_candidates: usize,
    /// The per-level σ, calibrated to the job's budget and `t`.
    pub noise: NoisePlan,
}

/// What a basket-rules job found, from its noised sums only.
#[derive(Debug, Clone, PartialEq)]
pub struct BasketOutcome {
    /// Every frequent itemset with its noised count.
    pub itemsets: FrequentItemsets,
    /// The top rules by lift, with intervals for the noise.
    pub rules: Vec<Rule>,
    /// Levels mined (item slots per side of an exported rule).
    pub levels: usize,
    /// Rule slots of the exported result.
    pub top_n: usize,
}

impl BasketRules {
    /// Validates the wire form and calibrates the noise to `target`.
    pub(crate) fn from_wire(
        wire: &v1::BasketRules,
        target: PrivacyTarget,
    ) -> Result<Self, JobSpecError> {
        let vocabulary = Vocabulary::declared(wire.items.iter().cloned())
            .map_err(|error| invalid("basket_rules.items", error.to_string()))?;
        let levels = match wire.max_itemset_size {
            0 => DEFAULT_MAX_ITEMSET_SIZE,
            levels => levels as usize,
        };
        if levels < 2 {
            return Err(invalid(
                "basket_rules.max_itemset_size",
                "rules need itemsets of at least 2 items",
            ));
        }
        let itemset_caps = match wire.itemset_caps.as_slice() {
            [] => vec![DEFAULT_ITEMSET_CAP; levels],
            [cap] => vec![*cap; levels],
            caps if caps.len() == levels => caps.to_vec(),
            caps => {
                return Err(invalid(
                    "basket_rules.itemset_caps",
                    format!(
                        "give one cap for every level or one per level ({levels}), not {}",
                        caps.len()
                    ),
                ));
            }
        };
        let grouping = if wire.per_purchase_day {
            BasketGrouping::PurchaseDay {
                max_days_per_customer: match wire.max_days_per_customer {
                    0 => DEFAULT_MAX_DAYS_PER_CUSTOMER,
                    days => days,
                },
            }
        } else {
            BasketGrouping::CustomerWindow
        };
        let miner = MinerConfig {
            min_support: wire.min_support,
            itemset_caps,
            max_baskets_per_customer: grouping.max_baskets_per_customer(),
            expected_false_itemsets_per_level: EXPECTED_FALSE_ITEMSETS_PER_LEVEL,
        };
        // The miner validates the support threshold and the caps.
        Miner::new(miner.clone(), vocabulary.len(), None)
            .map_err(|error| invalid("basket_rules", error.to_string()))?;
        let rules = RuleConfig {
            min_confidence: wire.min_confidence,
            interval_level: INTERVAL_LEVEL,
            top_n: match wire.top_n {
                0 => DEFAULT_TOP_N,
                top_n => top_n as usize,
            },
        };
        if !(0.0..=1.0).contains(&rules.min_confidence) {
            return Err(invalid(
                "basket_rules.min_confidence",
                format!("must be in [0, 1], got {}", rules.min_confidence),
            ));
        }
        let max_candidates = match wire.max_candidates {
            0 => DEFAULT_MAX_CANDIDATES,
            max => max as usize,
        };
        let noise = NoisePlan::calibrate(target, &miner.level_sensitivities())
            .map_err(|error| invalid("basket_rules", error.to_string()))?;
        Ok(Self {
            vocabulary,
            miner,
            rules,
            grouping,
            window_days: match wire.window_days {
                0 => DEFAULT_WINDOW_DAYS,
                days => days,
            },
            max_candidates,
            noise,
        })
    }

    /// The wire form.
    pub(crate) fn to_wire(&self) -> v1::BasketRules {
        let (per_purchase_day, max_days_per_customer) = match self.grouping {
            BasketGrouping::CustomerWindow => (false, 0),
            BasketGrouping::PurchaseDay {
                max_days_per_customer,
            } => (true, max_days_per_customer),
        };
        v1::BasketRules {
            items: self.item_names(),
            max_itemset_size: self.levels() as u32,
            min_support: self.miner.min_support,
            min_confidence: self.rules.min_confidence,
            itemset_caps: self.miner.itemset_caps.clone(),
            max_candidates: self.max_candidates as u32,
            per_purchase_day,
            max_days_per_customer,
            window_days: self.window_days,
            top_n: self.rules.top_n as u32,
        }
    }

    /// The vocabulary's names, in id order.
    pub fn item_names(&self) -> Vec<String> {
        (0..self.vocabulary.len() as u32)
            .filter_map(|id| self.vocabulary.label(id).map(str::to_owned))
            .collect()
    }

    /// Levels mined, one release each.
    pub fn levels(&self) -> usize {
        self.miner.itemset_caps.len()
    }

    /// Noised counts of release `index` (the node's `1` follows them).
    pub fn count_len(&self, index: usize) -> usize {
        if index == 0 {
            self.vocabulary.len() + 1
        } else {
            self.max_candidates
        }
    }

    /// The statistics length of each release.
    pub fn release_lengths(&self) -> Vec<usize> {
        (0..self.levels())
            .map(|index| self.count_len(index) + 1)
            .collect()
    }

    /// Customer-level ε of the whole plan at the job's δ.
    pub fn planned_epsilon(&self) -> f64 {
        self.noise
            .epsilon_spent(self.levels())
            .unwrap_or(f64::INFINITY)
    }

    /// What both ledgers charge for release `index`: the sum of `t` nodes'
    /// discrete Gaussians on integer counts, accounted as one Gaussian of
    /// multiplier `√t·σ/Δ₂` (the library's `SummedDiscreteNoise`; counts
    /// are not rounded, so the rounded-update mechanism's `+√d` does not
    /// apply), and the `t` it is calibrated for.
    pub fn release_mechanism(&self, index: usize) -> Option<(Mechanism, u64)> {
        let release = self.noise.release(index)?;
        let min_survivors = self.noise.target().min_survivors;
        let summed_sigma = (min_survivors as f64).sqrt() * release.node_sigma();
        Some((
            Mechanism::Gaussian {
                noise_multiplier: summed_sigma / release.sensitivity.l2,
                clip_norm: release.sensitivity.l2,
            },
            min_survivors,
        ))
    }

    /// The candidates of release `index` as item ids, flattened (`level`
    /// ids each): nothing for level 1 (every item) or once the mining has
    /// ended (the release then holds noise only).
    pub fn release_parameters(
        &self,
        index: usize,
        released: &[&[f64]],
    ) -> Result<Vec<f64>, String> {
        if index >= self.levels() {
            return Err(format!(
                "a basket-rules job has {} releases, not {}",
                self.levels(),
                index + 1
            ));
        }
        if released.len() != index {
            return Err(format!(
                "release {index} follows {index} sums, {} were given",
                released.len()
            ));
        }
        Ok(match self.replay(released)? {
            Replay::Counting(miner) if index > 0 => miner
                .candidates()
                .map(|candidates| {
                    candidates
                        .itemsets()
                        .iter()
                        .flatten()
                        .map(|&item| f64::from(item))
                        .collect()
                })
                .unwrap_or_default(),
            Replay::Counting(_) | Replay::Done(_) => Vec::new(),
        })
    }

    /// The frequent itemsets and rules from every release's sum.
    pub fn outcome(&self, released: &[&[f64]]) -> Result<BasketOutcome, String> {
        if released.len() != self.levels() {
            return Err(format!(
                "{} of {} releases: the mining is not complete",
                released.len(),
                self.levels()
            ));
        }
        let Replay::Done(itemsets) = self.replay(released)? else {
            return Err("the miner did not finish at its last level".to_owned());
        };
        let rules = association_rules(&itemsets, &self.rules).map_err(|error| error.to_string())?;
        Ok(BasketOutcome {
            itemsets,
            rules,
            levels: self.levels(),
            top_n: self.rules.top_n,
        })
    }

    /// Length of the exported result: `top_n` rule slots, each the
    /// antecedent's and the consequent's ids (plus one, zero-padded to the
    /// largest itemset) and the nine metric values.
    pub fn result_len(&self) -> usize {
        result_len(self.rules.top_n, self.levels())
    }

    /// The miner after `released`, replayed from the start: the thresholds
    /// and the candidates are post-processing of the noised sums, so a
    /// restarted coordinator derives exactly the same.
    fn replay(&self, released: &[&[f64]]) -> Result<Replay, String> {
        let mut miner = Miner::new(
            self.miner.clone(),
            self.vocabulary.len(),
            Some(self.noise.clone()),
        )
        .map_err(|error| error.to_string())?;
        for (index, sum) in released.iter().enumerate() {
            let expected = self.count_len(index) + 1;
            if sum.len() != expected {
                return Err(format!(
                    "release {index}: {} values, the plan has {expected}",
                    sum.len()
                ));
            }
            let integers = whole_numbers(index, sum)?;
            let (counts, noise_shares) = integers.split_at(integers.len() - 1);
            let Some(candidates) = miner.candidates() else {
                // The mining ended early: later releases hold noise only.
                continue;
            };
            let used = candidates.vector_len();
            let aggregate = LevelAggregate {
                counts: counts[..used.min(counts.len())].to_vec(),
                noise_shares: u64::try_from(noise_shares[0])
                    .map_err(|_| format!("release {index}: a negative node count"))?,
            };
            match miner
                .handle_level_counts(aggregate)
                .map_err(|error| format!("release {index}: {error}"))?
            {
                Next::Done(itemsets) => return Ok(Replay::Done(itemsets)),
                Next::Candidates(_) => miner.limit_candidates(self.max_candidates),
            }
        }
        Ok(Replay::Counting(miner))
    }
}

impl BasketOutcome {
    /// The exported result ([`BasketRules::result_len`] values).
    pub fn result_parameters(&self) -> Vec<f32> {
        let levels = self.levels;
        let len = result_len(self.top_n, levels);
        let mut result = Vec::with_capacity(len);
        for rule in self.rules.iter().take(self.top_n) {
            for itemset in [&rule.antecedent, &rule.consequent] {
                let ids = itemset.iter().map(|&item| (item + 1) as f32);
                result.extend(ids.chain(std::iter::repeat(0.0)).take(levels));
            }
            for estimate in [rule.support, rule.confidence, rule.lift] {
                result.extend([estimate.value, estimate.low, estimate.high].map(|v| v as f32));
            }
        }
        result.resize(len, 0.0);
        result
    }
}

/// Values of an exported result with `top_n` rule slots over `levels`.
fn result_len(top_n: usize, levels: usize) -> usize {
    top_n * (2 * levels + RULE_METRICS)
}

/// Where a replay stopped.
enum Replay {
    /// Waiting for the next level's sum.
    Counting(Miner),
    /// Mining finished.
    Done(FrequentItemsets),
}

/// The integers of a summed release; refuses values that are not whole (a
/// decoding mistake must not pass as data).
fn whole_numbers(index: usize, sum: &[f64]) -> Result<Vec<i64>, String> {
    sum.iter()
        .enumerate()
        .map(|(position, &value)| {
            let rounded = value.round();
            if !value.is_finite() || (value - rounded).abs() > 1e-6 || rounded.abs() > 9e15 {
                return Err(format!(
                    "release {index}: value {position} is not a whole count"
                ));
            }
            Ok(rounded as i64)
        })
        .collect()
}

/// The candidates a node reads from a release's parameters: `level` item
/// ids each, whole and inside the vocabulary (the library checks order).
pub fn candidates_from_parameters(
    job: &BasketRules,
    index: usize,
    parameters: &[f64],
) -> Result<veil_basket_rules::Candidates, String> {
    let level = index + 1;
    if level == 1 {
        if !parameters.is_empty() {
            return Err(format!(
                "level 1 counts every item and takes no parameters, got {}",
                parameters.len()
            ));
        }
        return Ok(veil_basket_rules::Candidates::first_level(
            job.vocabulary.len(),
        ));
    }
    if level > job.levels() {
        return Err(format!(
            "the job mines {} levels, not {level}",
            job.levels()
        ));
    }
    if parameters.len() % level != 0 || parameters.len() / level > job.max_candidates {
        return Err(format!(
            "level {level}: {} ids are not at most {} itemsets of {level}",
            parameters.len(),
            job.max_candidates
        ));
    }
    let mut ids = Vec::with_capacity(parameters.len());
    for (position, &value) in parameters.iter().enumerate() {
        if !(value.fract() == 0.0 && value >= 0.0 && value < job.vocabulary.len() as f64) {
            return Err(format!(
                "level {level}: parameter {position} ({value}) is not an item id of the vocabulary"
            ));
        }
        ids.push(value as u32);
    }
    let itemsets = ids.chunks_exact(level).map(<[u32]>::to_vec).collect();
    veil_basket_rules::Candidates::new(level, itemsets, job.vocabulary.len())
        .map_err(|error| error.to_string())
}
