//! Deterministic train/holdout split keyed by customer id, so a customer lands on the same side
//! in every round and on every run for a given salt, and the split leaks nothing about the id.

use ring::hmac;

use crate::features::CustomerRow;

/// Deterministic train/holdout split keyed by customer id (so a customer is always on the same side for a given salt).
///
/// A row goes to the holdout when the first 8 bytes of HMAC-SHA256(salt, customer id), read as a
/// fraction of 2^64, fall below `holdout_fraction`. The fraction is clamped to `[0, 1]` (NaN
/// counts as 0). Returns `(train, holdout)`, each in input order.
pub fn split_holdout(
    rows: Vec<CustomerRow>,
    holdout_fraction: f64,
    salt: &[u8],
) -> (Vec<CustomerRow>, Vec<CustomerRow>) {
    let holdout_fraction = if holdout_fraction.is_nan() {
        0.0
    } else {
        holdout_fraction.clamp(0.0, 1.0)
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, salt);
    rows.into_iter()
        .partition(|row| position_in_unit_interval(&key, &row.customer_id) >= holdout_fraction)
}

/// Maps a customer id to a pseudo-random point in `[0, 1)` fixed by the key.
fn position_in_unit_interval(key: &hmac::Key, customer_id: &str) -> f64 {
    let tag = hmac::sign(key, customer_id.as_bytes());
    let mut leading_bytes = [0u8; 8];
    for (target, source) in leading_bytes.iter_mut().zip(tag.as_ref()) {
        *target = *source;
    }
    // 2^64 as f64 is exact; the quotient is in [0, 1].
    u64::from_be_bytes(leading_bytes) as f64 / 18_446_744_073_709_551_616.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n_rows: usize) -> Vec<CustomerRow> {
        (0..n_rows)
            .map(|index| CustomerRow {
                customer_id: format!("C-{index:06}"),
                features: vec![],
                label: None,
            })
            .collect()
    }

    fn ids(rows: &[CustomerRow]) -> Vec<&str> {
        rows.iter().map(|row| row.customer_id.as_str()).collect()
    }

    #[test]
    fn split_is_deterministic_and_depends_on_the_salt() {
        let (train_once, holdout_once) = split_holdout(rows(2000), 0.2, b"salt-1");
        let (train_again, holdout_again) = split_holdout(rows(2000), 0.2, b"salt-1");
        assert_eq!(ids(&train_once), ids(&train_again));
        assert_eq!(ids(&holdout_once), ids(&holdout_again));
        let (_, holdout_other_salt) = split_holdout(rows(2000), 0.2, b"salt-2");
        assert_ne!(ids(&holdout_once), ids(&holdout_other_salt));
        // A customer's side does not depend on which other customers are present.
        let (_, holdout_subset) = split_holdout(rows(1000), 0.2, b"salt-1");
        let expected_subset: Vec<&str> = ids(&holdout_once)
            .into_iter()
            .filter(|id| ids(&rows(1000)).contains(id))
            .collect();
        assert_eq!(ids(&holdout_subset), expected_subset);
    }

    #[test]
    fn split_fraction_is_approximately_right() {
        for fraction in [0.1, 0.25, 0.5] {
            let (train, holdout) = split_holdout(rows(10_000), fraction, b"veil");
            assert_eq!(train.len() + holdout.len(), 10_000);
            // Binomial(10000, p) has standard deviation at most 50; 4 sigma is 200 rows, and the
            // split is deterministic, so this cannot flake.
            let expected = fraction * 10_000.0;
            assert!(
                (holdout.len() as f64 - expected).abs() < 200.0,
                "{fraction}: {}",
                holdout.len()
            );
        }
    }

    #[test]
    fn degenerate_fractions() {
        assert_eq!(split_holdout(rows(100), 0.0, b"s").1.len(), 0);
        assert_eq!(split_holdout(rows(100), 1.0, b"s").0.len(), 0);
        assert_eq!(split_holdout(rows(100), f64::NAN, b"s").1.len(), 0);
        assert_eq!(split_holdout(rows(100), 7.0, b"s").0.len(), 0);
    }
}
