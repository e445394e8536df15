//! Grouping accepted transactions by pseudonymised customer as the log streams past. Rows are
//! appended in file order with their customer's slot and dealt into one exactly sized history
//! per customer at the end, because appending to tens of thousands of growing histories row by
//! row spent much of its time reallocating them and missing the processor caches.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use veil_behaviour_features::Transaction;

/// Length of the HMAC-SHA256 tag a pseudonym spells in hex.
const TAG_BYTES: usize = 32;

/// Accepted transactions and the customers they belong to.
#[derive(Default)]
pub(crate) struct TransactionGroups {
    /// Each customer's slot, by the HMAC tag its pseudonym spells. The 32 bytes sit in the
    /// table itself, so a lookup touches one small entry instead of following a pointer to a
    /// 64-character string; that lookup misses the processor caches once the table outgrows
    /// them and was the costliest step per row. Tags are outputs of a keyed HMAC, so the cheap
    /// hash cannot be steered into collisions by anyone without the partner's key.
    slots_by_tag: HashMap<[u8; TAG_BYTES], usize, BuildHasherDefault<TagHasher>>,
    /// Slots of customer ids not in the engine's pseudonym form, which the engine does not
    /// produce; they are grouped all the same so the result never depends on the form.
    slots_by_text: HashMap<String, usize>,
    /// Each slot's pseudonym, in order of first appearance.
    customers: Vec<String>,
    /// Accepted transactions in file order, with their customer's slot. Once the vector is
    /// large it grows by remapping pages, so it costs no copies; it is freed as soon as the
    /// histories are built.
    transactions: Vec<(usize, Transaction)>,
}

impl TransactionGroups {
    /// Appends an accepted transaction of `customer`; returns whether it is the customer's first.
    pub(crate) fn push(&mut self, customer: &str, transaction: Transaction) -> bool {
        let next_slot = self.customers.len();
        let known = match tag_of(customer) {
            Some(tag) => *self.slots_by_tag.entry(tag).or_insert(next_slot),
            None => match self.slots_by_text.get(customer) {
                Some(slot) => *slot,
                None => {
                    self.slots_by_text.insert(customer.to_owned(), next_slot);
                    next_slot
                }
            },
        };
        let first = known == next_slot;
        if first {
            self.customers.push(customer.to_owned());
        }
        self.transactions.push((known, transaction));
        first
    }

    /// Each customer's transactions in file order, by pseudonym.
    pub(crate) fn into_histories(self) -> HashMap<String, Vec<Transaction>> {
        let TransactionGroups {
            customers,
            transactions,
            ..
        } = self;
        let mut counts = vec![0usize; customers.len()];
        for (slot, _) in &transactions {
            if let Some(count) = counts.get_mut(*slot) {
                *count += 1;
            }
        }
        // Exact capacities: the histories are kept for the whole job.
        let mut histories: Vec<Vec<Transaction>> =
            counts.into_iter().map(Vec::with_capacity).collect();
        for (slot, transaction) in transactions {
            if let Some(history) = histories.get_mut(slot) {
                history.push(transaction);
            }
        }
        customers.into_iter().zip(histories).collect()
    }
}

/// The tag a pseudonym spells if it has the engine's form (64 lower-case hex digits, see
/// `veil_de_identification::PseudonymKey::pseudonymise`); only that form maps to a tag, so equal tags mean
/// equal pseudonyms.
fn tag_of(pseudonym: &str) -> Option<[u8; TAG_BYTES]> {
    let hex = pseudonym.as_bytes();
    if hex.len() != TAG_BYTES * 2 {
        return None;
    }
    let mut tag = [0u8; TAG_BYTES];
    // Branch-free over the digits, since it runs on every row; one check at the end.
    let mut invalid = 0u8;
    for (byte, pair) in tag.iter_mut().zip(hex.chunks_exact(2)) {
        let [high, low] = pair else { return None };
        let (high, low) = (
            HEX_VALUES[usize::from(*high)],
            HEX_VALUES[usize::from(*low)],
        );
        invalid |= high | low;
        *byte = (high << 4) | (low & 0x0f);
    }
    (invalid & NOT_HEX == 0).then_some(tag)
}

/// Marks a byte that is not a lower-case hex digit in [`HEX_VALUES`].
const NOT_HEX: u8 = 0x80;

/// The value of each lower-case hex digit, [`NOT_HEX`] for every other byte.
static HEX_VALUES: [u8; 256] = {
    let mut values = [NOT_HEX; 256];
    let mut digit = 0;
    while digit < 16 {
        values[b"0123456789abcdef"[digit] as usize] = digit as u8;
        digit += 1;
    }
    values
};

/// Multiply-rotate hashing of eight bytes at a time, with a final avalanche so that both the
/// low bits (the table index) and the high bits (the probe tag) depend on every input byte.
#[derive(Default)]
struct TagHasher {
    state: u64,
}

impl Hasher for TagHasher {
    fn write(&mut self, bytes: &[u8]) {
        const MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.state =
                (self.state.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(MULTIPLIER);
        }
        for byte in chunks.remainder() {
            self.state = (self.state.rotate_left(5) ^ u64::from(*byte)).wrapping_mul(MULTIPLIER);
        }
    }

    fn finish(&self) -> u64 {
        // The SplitMix64 finaliser.
        let mut mixed = self.state;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        mixed ^ (mixed >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histories_keep_file_order_and_first_rows_are_flagged() {
        let pseudonym = "0123456789abcdef".repeat(4);
        // Not the engine's form, so grouped by its text, apart from the lower-case spelling.
        let upper_case = pseudonym.to_uppercase();
        let long = "p".repeat(300);
        let rows = [
            ("a", 1),
            (long.as_str(), 2),
            ("a", 3),
            (pseudonym.as_str(), 4),
            (long.as_str(), 5),
            ("", 6),
            ("a", 7),
            (upper_case.as_str(), 8),
            (pseudonym.as_str(), 9),
        ];
        let mut groups = TransactionGroups::default();
        let firsts: Vec<bool> = rows
            .iter()
            .map(|(customer, second)| groups.push(customer, Transaction::new(*second, 1.0)))
            .collect();
        assert_eq!(
            firsts,
            [true, true, false, true, false, true, false, true, false]
        );
        let histories = groups.into_histories();
        let seconds = |customer: &str| -> Vec<i64> {
            histories[customer]
                .iter()
                .map(|transaction| transaction.unix_seconds)
                .collect()
        };
        assert_eq!(histories.len(), 5);
        assert_eq!(seconds("a"), [1, 3, 7]);
        assert_eq!(seconds(&long), [2, 5]);
        assert_eq!(seconds(&pseudonym), [4, 9]);
        assert_eq!(seconds(&upper_case), [8]);
        assert_eq!(seconds(""), [6]);
        assert!(
            histories
                .values()
                .all(|history| history.capacity() == history.len())
        );
    }

    #[test]
    fn only_the_engine_form_is_read_as_a_tag() {
        let pseudonym = "00ff".repeat(16);
        let tag = tag_of(&pseudonym).map(|tag| tag.to_vec());
        assert_eq!(tag, Some([0x00, 0xff].repeat(16)));
        for other in [
            "00FF".repeat(16),
            "00ff".repeat(15),
            format!("{}0", "00ff".repeat(16)),
            format!("{}0g", "00ff".repeat(15)),
        ] {
            assert_eq!(tag_of(&other), None, "{other}");
        }
    }
}
