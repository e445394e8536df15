//! Discovering the item vocabulary with a DP heavy-hitters release over
//! hashed items, for jobs that declare no taxonomy.
//!
//! 1. Every partner hashes each raw item name into a public hash space of
//!    `2^bits` buckets ([`HashSpace::bucket_of`]: SHA-256 of a fixed domain
//!    tag and the name, first 32 bits, top `bits` kept). The hash is public
//!    and unkeyed, so every partner puts the same name in the same bucket.
//! 2. Each customer contributes at most `max_items_per_customer` (`k`)
//!    *distinct* buckets, a uniform sample from the node's generator when
//!    they bought more, each adding 1: `‖c‖₁ ≤ k`, `‖c‖₂ ≤ √k`
//!    ([`bucket_sensitivity`]).
//! 3. The count vector over all `2^bits` buckets is noised like a mining
//!    level ([`crate::NoisePlan`] with that one sensitivity, charged as its
//!    own release) and summed by secure aggregation.
//! 4. Buckets whose noised count reaches the threshold are revealed
//!    ([`discovered_buckets`]); they become the public vocabulary
//!    ([`crate::Vocabulary::from_buckets`]). [`false_discovery_threshold`]
//!    picks a threshold so that the expected number of revealed buckets with
//!    no customer at all is at most a chosen number.
//!
//! The revealed set is post-processing of the noised vector, so it costs
//! nothing beyond the release. The item names behind a bucket stay on each
//! node ([`local_bucket_names`]): the coordinator and the rules it publishes
//! see bucket labels like `#4711`. That is a convenience, not a secret: the
//! hash is public, so anyone can test a guessed name against a revealed
//! bucket. What protects customers is the DP release, which already allows
//! publishing that a bucket is popular. Distinct names in one bucket merge
//! into one item; with `2^bits` well above the number of distinct names
//! (e.g. 2^20 for ten thousand products) that is rare.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rand_core::CryptoRng;
use ring::digest::{SHA256, digest};
use veil_privacy_accounting::normal_upper_quantile;

use crate::counting::{Sensitivity, uniform_sample};
use crate::error::RulesError;
use crate::vocabulary::{ItemId, Vocabulary};

/// Domain separation of the item hash from every other SHA-256 use.
const HASH_DOMAIN: &[u8] = b"veil basket-rules item bucket v1\0";

/// Largest hash space: 2^24 buckets (a 128 MiB count vector) is already far
/// more than any taxonomy needs.
const MAX_HASH_BITS: u32 = 24;

/// A public hash space of `2^bits` buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HashSpace {
    /// `bits` in `1..=24`.
    bits: u32,
}

impl HashSpace {
    /// A space of `2^bits` buckets.
    pub fn new(bits: u32) -> Result<Self, RulesError> {
        if (1..=MAX_HASH_BITS).contains(&bits) {
            Ok(Self { bits })
        } else {
            Err(RulesError::InvalidHashBits(bits))
        }
    }

    /// The number of bits.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// The number of buckets, `2^bits`.
    pub fn buckets(&self) -> u32 {
        1 << self.bits
    }

    /// The bucket of a raw item name.
    pub fn bucket_of(&self, raw_item: &str) -> u32 {
        let mut input = Vec::with_capacity(HASH_DOMAIN.len() + raw_item.len());
        input.extend_from_slice(HASH_DOMAIN);
        input.extend_from_slice(raw_item.as_bytes());
        let hash = digest(&SHA256, &input);
        let mut prefix = [0u8; 4];
        prefix.copy_from_slice(&hash.as_ref()[..4]);
        u32::from_be_bytes(prefix) >> (32 - self.bits)
    }
}

/// The contribution bound of the bucket counts for `k` buckets per customer.
pub fn bucket_sensitivity(max_items_per_customer: u32) -> Sensitivity {
    let k = f64::from(max_items_per_customer);
    Sensitivity {
        l1: k,
        l2: k.sqrt(),
    }
}

/// A partner's bucket counts (length `2^bits`) from (customer key, raw item)
/// pairs: each customer adds 1 to at most `max_items_per_customer` distinct
/// buckets, sampled uniformly from the caller's generator when there are more.
/// Add the release's noise ([`crate::ReleaseNoise::add_node_noise`]) before
/// it leaves.
pub fn local_bucket_counts<'a, I, R>(
    purchases: I,
    space: HashSpace,
    max_items_per_customer: u32,
    rng: &mut R,
) -> Result<Vec<i64>, RulesError>
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
    R: CryptoRng,
{
    if max_items_per_customer == 0 {
        return Err(RulesError::ZeroBound {
            what: "max_items_per_customer",
        });
    }
    let mut by_customer: HashMap<&str, BTreeSet<u32>> = HashMap::new();
    for (customer, item) in purchases {
        if customer.is_empty() {
            continue;
        }
        by_customer
            .entry(customer)
            .or_default()
            .insert(space.bucket_of(item));
    }
    // Key order, so the result depends only on the data and the generator.
    let mut customers: Vec<(&str, BTreeSet<u32>)> = by_customer.into_iter().collect();
    customers.sort_unstable_by(|left, right| left.0.cmp(right.0));
    let mut counts = vec![0i64; space.buckets() as usize];
    for (_, buckets) in customers {
        let mut buckets: Vec<u32> = buckets.into_iter().collect();
        for &bucket in uniform_sample(&mut buckets, max_items_per_customer as usize, rng) {
            counts[bucket as usize] += 1;
        }
    }
    Ok(counts)
}

/// The count a bucket must reach to be revealed so that, among buckets no
/// customer touched, the expected number revealed by noise alone is at most
/// `expected_false_buckets`: `σ_sum·Φ⁻¹(1 − expected_false_buckets/2^bits)`.
pub fn false_discovery_threshold(
    aggregate_variance: f64,
    space: HashSpace,
    expected_false_buckets: f64,
) -> Result<f64, RulesError> {
    let buckets = f64::from(space.buckets());
    if !(expected_false_buckets > 0.0 && expected_false_buckets <= buckets / 2.0) {
        return Err(RulesError::OutOfRange {
            what: "expected_false_buckets",
            range: "(0, buckets / 2]",
            value: expected_false_buckets,
        });
    }
    if !(aggregate_variance.is_finite() && aggregate_variance >= 0.0) {
        return Err(RulesError::OutOfRange {
            what: "aggregate_variance",
            range: "[0, inf)",
            value: aggregate_variance,
        });
    }
    Ok(aggregate_variance.sqrt() * normal_upper_quantile(expected_false_buckets / buckets))
}

/// The buckets whose noised aggregate count reaches `threshold` (and is at
/// least 1), in increasing order.
pub fn discovered_buckets(aggregate: &[i64], threshold: f64) -> Vec<u32> {
    aggregate
        .iter()
        .enumerate()
        .filter(|&(_, &count)| count >= 1 && count as f64 >= threshold)
        .map(|(bucket, _)| bucket as u32)
        .collect()
}

/// On a node only: the partner's own raw item names behind each item of a
/// hashed vocabulary, for labelling rules locally. Never sent anywhere.
pub fn local_bucket_names<'a, I>(
    vocabulary: &Vocabulary,
    raw_items: I,
) -> BTreeMap<ItemId, BTreeSet<String>>
where
    I: IntoIterator<Item = &'a str>,
{
    let mut names: BTreeMap<ItemId, BTreeSet<String>> = BTreeMap::new();
    for raw_item in raw_items {
        if let Some(id) = vocabulary.lookup(raw_item) {
            names.entry(id).or_default().insert(raw_item.to_owned());
        }
    }
    names
}
