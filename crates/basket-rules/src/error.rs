//! The one error type of the basket-rules library.

use veil_dp_noise::NoiseError;
use veil_privacy_accounting::AccountingError;

/// Why a vocabulary, a basket set, a count vector or a rule set was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RulesError {
    /// A declared vocabulary with no items.
    #[error("the item vocabulary is empty")]
    EmptyVocabulary,
    /// A declared item name that is empty (after nothing: names are exact).
    #[error("vocabulary item {position} has an empty name")]
    EmptyItemName {
        /// Zero-based position in the declared list.
        position: usize,
    },
    /// The same item declared twice.
    #[error("vocabulary item {second} repeats item {first} ({name:?})")]
    DuplicateItem {
        /// The public item name.
        name: String,
        /// Position of its first declaration.
        first: usize,
        /// Position of the repeat.
        second: usize,
    },
    /// More items than an item id can number.
    #[error("the vocabulary has {0} items, more than the 2^31 supported")]
    VocabularyTooLarge(usize),
    /// A hash space outside the supported number of bits.
    #[error("hash space bits must be in 1..=24, got {0}")]
    InvalidHashBits(u32),
    /// A discovered bucket that does not exist in the hash space.
    #[error("bucket {bucket} is outside a hash space of 2^{bits} buckets")]
    BucketOutOfRange {
        /// The bucket index.
        bucket: u32,
        /// Bits of the hash space.
        bits: u32,
    },
    /// A basket window whose first day is after its last.
    #[error("basket window starts on day {first_day}, after its last day {last_day}")]
    InvalidWindow {
        /// First day (days since 1970-01-01), inclusive.
        first_day: i64,
        /// Last day, inclusive.
        last_day: i64,
    },
    /// A bound that must be at least 1 was 0.
    #[error("{what} must be at least 1")]
    ZeroBound {
        /// Which bound.
        what: &'static str,
    },
    /// A candidate list that is not a valid level of itemsets.
    #[error("candidate {index} of level {level} is invalid: {reason}")]
    InvalidCandidate {
        /// The level (itemset size).
        level: usize,
        /// Zero-based position in the candidate list.
        index: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A level of 0 (levels count itemset sizes from 1).
    #[error("a candidate level must be at least 1")]
    ZeroLevel,
    /// An aggregate whose length is not the candidate vector's.
    #[error("level {level} counts have {got} entries, expected {expected}")]
    CountLength {
        /// The level being counted.
        level: usize,
        /// Entries expected (candidates, plus the basket total at level 1).
        expected: usize,
        /// Entries received.
        got: usize,
    },
    /// An aggregate that claims fewer noise shares than the privacy plan needs,
    /// or noise shares when the miner runs without noise.
    #[error("level {level} aggregate holds {got} noise shares, expected {expected}")]
    NoiseShares {
        /// The level being counted.
        level: usize,
        /// What the plan requires (at least this many; exactly 0 without noise).
        expected: u64,
        /// What the aggregate claims.
        got: u64,
    },
    /// Counts handed to a miner that has already finished.
    #[error("the miner has finished; no level is waiting for counts")]
    MinerFinished,
    /// A noise plan with a different number of releases than mining levels.
    #[error("the noise plan covers {planned} releases but mining has {levels} levels")]
    PlanLevels {
        /// Releases in the noise plan.
        planned: usize,
        /// Levels in the miner's configuration.
        levels: usize,
    },
    /// A probability-like setting outside its range.
    #[error("{what} must be in {range}, got {value}")]
    OutOfRange {
        /// Which setting.
        what: &'static str,
        /// The allowed range, as text.
        range: &'static str,
        /// The value given.
        value: f64,
    },
    /// A local count overflowed `i64` (impossible below 2^63 baskets).
    #[error("a count overflowed at candidate {0}")]
    CountOverflow(usize),
    /// A rule refers to an item the vocabulary does not have.
    #[error("item id {0} is not in the vocabulary")]
    UnknownItemId(u32),
    /// Noise could not be calibrated for the target.
    #[error("noise calibration failed: {0}")]
    Accounting(#[from] AccountingError),
    /// Noise could not be sampled or added.
    #[error("noise could not be added: {0}")]
    Noise(#[from] NoiseError),
    /// Writing CSV failed.
    #[error("could not write CSV: {0}")]
    Csv(String),
}
