//! The node's side of one mining level: candidate itemsets in, an additive
//! count vector out, with each customer's contribution bounded so the
//! sensitivity is known before any data is read.
//!
//! **The cap.** A customer's *incidences* at level `L` are the pairs
//! (basket, candidate contained in it). At most `cap` of them count; a
//! customer with more keeps a uniform random subset of `cap`, drawn from the
//! caller's generator. So the customer's contribution `c` to the count
//! vector has `‖c‖₁ ≤ cap` and `‖c‖∞ ≤ m` (one per basket, at most `m`
//! baskets), hence `‖c‖₂ ≤ √(m·cap)`. Level 1 also carries the number of
//! baskets (at most `m` per customer), which adds `m` to the ℓ1 and `m²` to
//! the squared ℓ2 bound ([`level_sensitivity`]).
//!
//! **Why sample and not take the first `cap` canonically.** Both bound the
//! sensitivity equally (any selection that depends only on the customer's own
//! data does). A canonical choice (the first `cap` in candidate order) always
//! drops the same itemsets, those with the largest item ids, from heavy
//! customers: their supports are biased down more than the others', and the
//! bias changes which itemsets pass the threshold and every ratio built on
//! them, by an accident of the vocabulary's order. A uniform sample spreads
//! the loss evenly, so every itemset of a capped customer is kept with the
//! same probability. The draw comes from the node's cryptographic generator;
//! since a reply is computed once and stored before it leaves, the draw is
//! never repeated for the same phase.

use std::collections::HashMap;

use rand_core::CryptoRng;

use crate::baskets::Baskets;
use crate::error::RulesError;
use crate::vocabulary::ItemId;

/// A sorted set of distinct item ids.
pub type Itemset = Vec<ItemId>;

/// One level's public candidate list: itemsets of size `level`, sorted
/// lexicographically, distinct, each sorted and within the vocabulary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidates {
    /// Itemset size, from 1.
    level: usize,
    /// The itemsets, in the order of the count vector.
    itemsets: Vec<Itemset>,
}

/// The ℓ1 and ℓ2 norm bounds of one customer's contribution to a release.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sensitivity {
    /// Bound on `‖c‖₁`.
    pub l1: f64,
    /// Bound on `‖c‖₂`.
    pub l2: f64,
}

/// The sensitivity of a level's count vector for a customer with at most
/// `max_baskets` baskets and `cap` incidences: `‖c‖₁ ≤ cap (+ m at level
/// 1)`, `‖c‖₂² ≤ m·cap (+ m² at level 1)`.
pub fn level_sensitivity(level: usize, cap: u32, max_baskets: u32) -> Sensitivity {
    let cap = f64::from(cap);
    let baskets = f64::from(max_baskets);
    let (l1, l2_squared) = if level == 1 {
        (cap + baskets, baskets * cap + baskets * baskets)
    } else {
        (cap, baskets * cap)
    };
    Sensitivity {
        l1,
        l2: l2_squared.sqrt(),
    }
}

impl Candidates {
    /// A candidate list, validated: a node checks the list the coordinator
    /// sends before counting anything. Privacy does not depend on the list
    /// (the cap bounds every customer whatever is asked), but a malformed
    /// one would make counts meaningless.
    pub fn new(
        level: usize,
        itemsets: Vec<Itemset>,
        vocabulary_len: usize,
    ) -> Result<Self, RulesError> {
        if level == 0 {
            return Err(RulesError::ZeroLevel);
        }
        let invalid = |index, reason| RulesError::InvalidCandidate {
            level,
            index,
            reason,
        };
        for (index, itemset) in itemsets.iter().enumerate() {
            if itemset.len() != level {
                return Err(invalid(index, "its size is not the level"));
            }
            if itemset.windows(2).any(|pair| pair[0] >= pair[1]) {
                return Err(invalid(index, "items are not strictly increasing"));
            }
            if itemset
                .last()
                .is_some_and(|&item| item as usize >= vocabulary_len)
            {
                return Err(invalid(index, "an item is outside the vocabulary"));
            }
            if index > 0 && itemsets[index - 1] >= *itemset {
                return Err(invalid(index, "itemsets are not strictly increasing"));
            }
        }
        Ok(Self { level, itemsets })
    }

    /// Every single item of a vocabulary: the first level.
    pub fn first_level(vocabulary_len: usize) -> Self {
        Self {
            level: 1,
            itemsets: (0..vocabulary_len)
                .map(|item| vec![item as ItemId])
                .collect(),
        }
    }

    /// Candidates already known valid (built by the miner's Apriori join).
    pub(crate) fn trusted(level: usize, itemsets: Vec<Itemset>) -> Self {
        Self { level, itemsets }
    }

    /// Itemset size.
    pub fn level(&self) -> usize {
        self.level
    }

    /// The itemsets, in count-vector order.
    pub fn itemsets(&self) -> &[Itemset] {
        &self.itemsets
    }

    /// Length of the count vector: one entry per candidate, plus the basket
    /// total at the end at level 1.
    pub fn vector_len(&self) -> usize {
        self.itemsets.len() + usize::from(self.level == 1)
    }
}

/// Uniform integer in `[0, bound)` for `bound ≥ 1`, by rejection, so exact.
fn uniform_below<R: CryptoRng>(bound: usize, rng: &mut R) -> usize {
    let bound = bound as u64;
    let zone = u64::MAX - u64::MAX % bound;
    loop {
        let draw = rng.next_u64();
        if draw < zone {
            return (draw % bound) as usize;
        }
    }
}

/// Reorders `items` so its first `keep` entries are a uniform sample without
/// replacement (partial Fisher–Yates), and returns that prefix.
pub(crate) fn uniform_sample<'a, T, R: CryptoRng>(
    items: &'a mut [T],
    keep: usize,
    rng: &mut R,
) -> &'a [T] {
    let keep = keep.min(items.len());
    if keep < items.len() {
        for position in 0..keep {
            let chosen = position + uniform_below(items.len() - position, rng);
            items.swap(position, chosen);
        }
    }
    &items[..keep]
}

/// Bits per item when itemsets are packed into a `u64` lookup key.
const PACK_BITS: u32 = 16;

/// Largest level packed: four 16-bit items fill a `u64`.
const MAX_PACKED_LEVEL: usize = 4;

/// An itemset of at most four items below 2^16, as one integer.
fn pack(itemset: &[ItemId]) -> u64 {
    itemset
        .iter()
        .fold(0u64, |key, &item| (key << PACK_BITS) | u64::from(item))
}

/// Whether `C(n, k) ≤ limit`, without overflow.
fn subsets_at_most(n: usize, k: usize, limit: usize) -> bool {
    if k > n {
        return true;
    }
    let mut binomial: usize = 1;
    for step in 0..k.min(n - k) {
        binomial = binomial * (n - step) / (step + 1);
        if binomial > limit {
            return false;
        }
    }
    true
}

/// Calls `visit` with every `k`-subset of `items` (sorted, as `items` is).
fn for_each_subset<F: FnMut(&[ItemId])>(
    items: &[ItemId],
    k: usize,
    subset: &mut Vec<ItemId>,
    mut visit: F,
) {
    let n = items.len();
    if k == 0 || k > n {
        return;
    }
    let mut positions: Vec<usize> = (0..k).collect();
    loop {
        subset.clear();
        subset.extend(positions.iter().map(|&position| items[position]));
        visit(subset);
        // Advance the rightmost position that can still move.
        let Some(slot) = (0..k).rev().find(|&slot| positions[slot] < n - k + slot) else {
            return;
        };
        positions[slot] += 1;
        for next in slot + 1..k {
            positions[next] = positions[next - 1] + 1;
        }
    }
}

/// Bit set of one basket's items, for constant-time membership.
struct ItemBits(Vec<u64>);

impl ItemBits {
    fn new(vocabulary_len: usize) -> Self {
        Self(vec![0; vocabulary_len.div_ceil(64)])
    }

    fn fill(&mut self, items: &[ItemId]) {
        for &item in items {
            if let Some(word) = self.0.get_mut(item as usize / 64) {
                *word |= 1 << (item % 64);
            }
        }
    }

    fn clear(&mut self, items: &[ItemId]) {
        for &item in items {
            if let Some(word) = self.0.get_mut(item as usize / 64) {
                *word = 0;
            }
        }
    }

    fn contains(&self, item: ItemId) -> bool {
        self.0
            .get(item as usize / 64)
            .is_some_and(|word| word & (1 << (item % 64)) != 0)
    }
}

/// A partner's additive counts for one level: entry `i` counts the (capped)
/// incidences of candidate `i`; at level 1 the last entry is the number of
/// baskets. Sum these over partners (through secure aggregation, each with
/// its noise added) and hand the sum to the miner.
pub fn local_counts<R: CryptoRng>(
    baskets: &Baskets,
    candidates: &Candidates,
    cap: u32,
    rng: &mut R,
) -> Result<Vec<i64>, RulesError> {
    if cap == 0 {
        return Err(RulesError::ZeroBound {
            what: "the itemset cap",
        });
    }
    let vocabulary_len = baskets.vocabulary_len();
    if let Some(index) = candidates
        .itemsets
        .iter()
        .position(|itemset| itemset.iter().any(|&item| item as usize >= vocabulary_len))
    {
        return Err(RulesError::InvalidCandidate {
            level: candidates.level,
            index,
            reason: "an item is outside the vocabulary",
        });
    }
    // Candidates grouped by first item: a basket only visits the groups of
    // the items it holds. They are sorted, so each group is one range.
    let mut first_item_ranges = vec![(0usize, 0usize); vocabulary_len];
    let mut start = 0;
    while start < candidates.itemsets.len() {
        let first = candidates.itemsets[start][0];
        let mut end = start + 1;
        while end < candidates.itemsets.len() && candidates.itemsets[end][0] == first {
            end += 1;
        }
        first_item_ranges[first as usize] = (start, end);
        start = end;
    }
    // Two ways to find a basket's candidates: walk the candidate ranges of
    // its items, or enumerate its `level`-subsets and look each up. Each
    // basket takes the cheaper; the lookup needs itemsets packed into a u64.
    let lookup: Option<HashMap<u64, usize>> =
        (vocabulary_len <= 1 << PACK_BITS && candidates.level <= MAX_PACKED_LEVEL).then(|| {
            candidates
                .itemsets
                .iter()
                .enumerate()
                .map(|(index, itemset)| (pack(itemset), index))
                .collect()
        });
    let mut in_some_candidate = vec![false; vocabulary_len];
    for itemset in &candidates.itemsets {
        for &item in itemset {
            in_some_candidate[item as usize] = true;
        }
    }
    let mut counts = vec![0i64; candidates.vector_len()];
    let mut bits = ItemBits::new(vocabulary_len);
    let mut incidences: Vec<usize> = Vec::new();
    let mut relevant: Vec<ItemId> = Vec::new();
    let mut subset: Vec<ItemId> = Vec::new();
    let mut basket_total: i64 = 0;
    for customer in baskets.customers() {
        incidences.clear();
        for basket in customer {
            relevant.clear();
            relevant.extend(
                basket
                    .iter()
                    .copied()
                    .filter(|&item| in_some_candidate[item as usize]),
            );
            let walk_cost: usize = relevant
                .iter()
                .map(|&item| {
                    let (from, to) = first_item_ranges[item as usize];
                    to - from
                })
                .sum();
            if let Some(lookup) = &lookup
                && subsets_at_most(relevant.len(), candidates.level, walk_cost)
            {
                for_each_subset(&relevant, candidates.level, &mut subset, |itemset| {
                    if let Some(&index) = lookup.get(&pack(itemset)) {
                        incidences.push(index);
                    }
                });
                continue;
            }
            bits.fill(&relevant);
            for &item in &relevant {
                let (from, to) = first_item_ranges[item as usize];
                for index in from..to {
                    if candidates.itemsets[index][1..]
                        .iter()
                        .all(|&other| bits.contains(other))
                    {
                        incidences.push(index);
                    }
                }
            }
            bits.clear(&relevant);
        }
        for &index in uniform_sample(&mut incidences, cap as usize, rng) {
            counts[index] += 1;
        }
        basket_total += customer.len() as i64;
    }
    if candidates.level == 1
        && let Some(last) = counts.last_mut()
    {
        *last = basket_total;
    }
    Ok(counts)
}
