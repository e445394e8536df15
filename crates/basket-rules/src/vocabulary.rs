//! The public item vocabulary: the only items a basket may hold. Either a
//! declared list (a category taxonomy named in the job) or the buckets of a
//! public hash space that a DP heavy-hitters release revealed
//! ([`crate::heavy_hitters`]). Item names a partner holds that are not in it
//! are rejected when baskets are built, never learned.

use std::collections::HashMap;

use crate::error::RulesError;
use crate::heavy_hitters::HashSpace;

/// An item's index in its [`Vocabulary`]: what baskets, candidates and
/// counts carry instead of names.
pub type ItemId = u32;

/// Largest vocabulary: item ids stay well inside `u32`.
const MAX_ITEMS: usize = 1 << 31;

/// How raw item names map to ids.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Keying {
    /// Exact name → id, for a declared list.
    Declared(HashMap<String, ItemId>),
    /// Name → public hash bucket → id, for discovered buckets.
    Hashed {
        /// The hash space the buckets live in.
        space: HashSpace,
        /// Revealed bucket → id.
        bucket_ids: HashMap<u32, ItemId>,
    },
}

/// The public list of items, in id order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vocabulary {
    /// Public label of each id: the declared name, or `#<bucket>` for a hash
    /// bucket (whose local names only the node knows).
    labels: Vec<String>,
    /// How a partner's raw item name finds its id.
    keying: Keying,
}

impl Vocabulary {
    /// A declared vocabulary: ids follow the order given. Names match
    /// exactly (no trimming or case folding: taxonomy codes are exact).
    pub fn declared<I, S>(names: I) -> Result<Self, RulesError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let labels: Vec<String> = names.into_iter().map(Into::into).collect();
        if labels.is_empty() {
            return Err(RulesError::EmptyVocabulary);
        }
        if labels.len() > MAX_ITEMS {
            return Err(RulesError::VocabularyTooLarge(labels.len()));
        }
        let mut ids = HashMap::with_capacity(labels.len());
        for (position, name) in labels.iter().enumerate() {
            if name.is_empty() {
                return Err(RulesError::EmptyItemName { position });
            }
            if let Some(first) = ids.insert(name.clone(), position as ItemId) {
                return Err(RulesError::DuplicateItem {
                    name: name.clone(),
                    first: first as usize,
                    second: position,
                });
            }
        }
        Ok(Self {
            labels,
            keying: Keying::Declared(ids),
        })
    }

    /// A vocabulary of revealed hash buckets (sorted and deduplicated, so
    /// every node derives the same ids from the same public release).
    pub fn from_buckets(buckets: &[u32], space: HashSpace) -> Result<Self, RulesError> {
        let mut sorted = buckets.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.is_empty() {
            return Err(RulesError::EmptyVocabulary);
        }
        if let Some(&bucket) = sorted.iter().find(|&&bucket| bucket >= space.buckets()) {
            return Err(RulesError::BucketOutOfRange {
                bucket,
                bits: space.bits(),
            });
        }
        let labels = sorted.iter().map(|bucket| format!("#{bucket}")).collect();
        let bucket_ids = sorted
            .iter()
            .enumerate()
            .map(|(id, &bucket)| (bucket, id as ItemId))
            .collect();
        Ok(Self {
            labels,
            keying: Keying::Hashed { space, bucket_ids },
        })
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no items (never true for a built vocabulary).
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The public label of an id.
    pub fn label(&self, id: ItemId) -> Option<&str> {
        self.labels.get(id as usize).map(String::as_str)
    }

    /// The id of a partner's raw item name, if the vocabulary has it.
    pub fn lookup(&self, raw_item: &str) -> Option<ItemId> {
        match &self.keying {
            Keying::Declared(ids) => ids.get(raw_item).copied(),
            Keying::Hashed { space, bucket_ids } => {
                bucket_ids.get(&space.bucket_of(raw_item)).copied()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_vocabularies_refuse_bad_lists_naming_the_position() {
        assert_eq!(
            Vocabulary::declared(Vec::<String>::new()),
            Err(RulesError::EmptyVocabulary)
        );
        assert_eq!(
            Vocabulary::declared(["milk", ""]),
            Err(RulesError::EmptyItemName { position: 1 })
        );
        assert_eq!(
            Vocabulary::declared(["milk", "bread", "milk"]),
            Err(RulesError::DuplicateItem {
                name: "milk".into(),
                first: 0,
                second: 2
            })
        );
        let vocabulary = Vocabulary::declared(["milk", "bread"]);
        assert!(
            vocabulary.is_ok_and(|vocabulary| vocabulary.lookup("bread") == Some(1)
                && vocabulary.lookup("Bread").is_none()
                && vocabulary.label(0) == Some("milk")
                && vocabulary.label(2).is_none())
        );
    }
}
