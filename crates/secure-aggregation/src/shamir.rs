//! Shamir t-of-k secret sharing over a prime field, and its use for 256-bit seeds.
//!
//! Production sharing uses the Mersenne prime 2^61 - 1: a 32-byte seed is cut
//! into five 7-byte limbs, each shared with the same x-coordinates. The field is
//! a runtime value so that tests can check the information-theoretic claim on a
//! field small enough to enumerate.

use rand_core::{CryptoRng, RngCore};

/// Why sharing or reconstruction failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShamirError {
    /// The threshold is zero or larger than the number of shares requested.
    #[error("threshold {threshold} invalid for {share_count} shares")]
    InvalidThreshold {
        /// The threshold t.
        threshold: usize,
        /// The number of shares k.
        share_count: usize,
    },
    /// Fewer shares than the threshold were supplied to reconstruct.
    #[error("{supplied} shares supplied, {threshold} needed")]
    NotEnoughShares {
        /// How many shares were supplied.
        supplied: usize,
        /// The threshold t.
        threshold: usize,
    },
    /// An x-coordinate is zero (it would reveal the secret), repeated, or not in the field.
    #[error("invalid or repeated x-coordinate {x}")]
    InvalidXCoordinate {
        /// The offending x-coordinate.
        x: u64,
    },
    /// Shares carry different numbers of limbs, or a limb lies outside the field.
    #[error("shares are malformed or inconsistent")]
    MalformedShares,
    /// A secret limb lies outside the field.
    #[error("secret element outside the field")]
    SecretOutOfField,
    /// The reconstructed value is not a valid encoding of a 32-byte seed, so at
    /// least one share was wrong.
    #[error("reconstructed value is not a valid seed")]
    InvalidReconstruction,
}

/// A prime field Z_p with p < 2^63, so that sums of two elements fit in a `u64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrimeField {
    /// The prime p. Primality is the caller's promise; only `SEED_FIELD` is used in production.
    modulus: u64,
}

/// The field used for seeds: the Mersenne prime 2^61 - 1.
pub const SEED_FIELD: PrimeField = PrimeField {
    modulus: (1u64 << 61) - 1,
};

/// Bytes per limb when a seed is cut for `SEED_FIELD`: 7 bytes = 56 bits < 61.
const SEED_LIMB_BYTES: usize = 7;

/// Limbs per 32-byte seed: ceil(32 / 7).
pub const SEED_LIMBS: usize = 5;

impl PrimeField {
    /// A field with the given prime modulus, which must be at least 2 and below 2^63.
    pub fn new(modulus: u64) -> Option<Self> {
        (2..(1u64 << 63))
            .contains(&modulus)
            .then_some(PrimeField { modulus })
    }

    /// The modulus p.
    pub fn modulus(&self) -> u64 {
        self.modulus
    }

    fn add(&self, left: u64, right: u64) -> u64 {
        let sum = left + right;
        if sum >= self.modulus {
            sum - self.modulus
        } else {
            sum
        }
    }

    fn sub(&self, left: u64, right: u64) -> u64 {
        if left >= right {
            left - right
        } else {
            left + self.modulus - right
        }
    }

    fn mul(&self, left: u64, right: u64) -> u64 {
        ((u128::from(left) * u128::from(right)) % u128::from(self.modulus)) as u64
    }

    /// The multiplicative inverse by Fermat's little theorem; `value` must be nonzero.
    fn inverse(&self, value: u64) -> u64 {
        let mut result = 1u64;
        let mut base = value % self.modulus;
        let mut exponent = self.modulus - 2;
        while exponent > 0 {
            if exponent & 1 == 1 {
                result = self.mul(result, base);
            }
            base = self.mul(base, base);
            exponent >>= 1;
        }
        result
    }

    /// A uniform field element by rejection sampling, so no residue is favoured.
    fn random_element<R: RngCore + CryptoRng>(&self, rng: &mut R) -> u64 {
        let zone = u64::MAX - (u64::MAX % self.modulus);
        loop {
            let candidate = rng.next_u64();
            if candidate < zone {
                return candidate % self.modulus;
            }
        }
    }
}

/// One party's share: the evaluation point and one field element per secret limb.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// The x-coordinate, never zero.
    pub x: u64,
    /// f_j(x) for each limb j.
    pub y: Vec<u64>,
}

/// Splits each limb of `secret` into shares at `x_coordinates`, any `threshold`
/// of which reconstruct it.
pub fn split<R: RngCore + CryptoRng>(
    field: PrimeField,
    secret: &[u64],
    threshold: usize,
    x_coordinates: &[u64],
    rng: &mut R,
) -> Result<Vec<Share>, ShamirError> {
    let mut coefficients = Vec::with_capacity(secret.len());
    for _ in secret {
        let limb_coefficients: Vec<u64> =
            (1..threshold).map(|_| field.random_element(rng)).collect();
        coefficients.push(limb_coefficients);
    }
    split_with_coefficients(field, secret, &coefficients, threshold, x_coordinates)
}

/// Evaluates the polynomials `secret[j] + sum_i coefficients[j][i] x^(i+1)`.
/// Split out from `split` so that tests can enumerate every polynomial.
pub(crate) fn split_with_coefficients(
    field: PrimeField,
    secret: &[u64],
    coefficients: &[Vec<u64>],
    threshold: usize,
    x_coordinates: &[u64],
) -> Result<Vec<Share>, ShamirError> {
    if threshold == 0 || threshold > x_coordinates.len() {
        return Err(ShamirError::InvalidThreshold {
            threshold,
            share_count: x_coordinates.len(),
        });
    }
    if secret.iter().any(|&limb| limb >= field.modulus) {
        return Err(ShamirError::SecretOutOfField);
    }
    check_x_coordinates(field, x_coordinates.iter().copied())?;
    let shares = x_coordinates
        .iter()
        .map(|&x| {
            let y = secret
                .iter()
                .zip(coefficients)
                .map(|(&constant, limb_coefficients)| {
                    // Horner's rule from the highest coefficient down to the secret.
                    let higher =
                        limb_coefficients
                            .iter()
                            .rev()
                            .fold(0u64, |accumulator, &coefficient| {
                                field.add(field.mul(accumulator, x), coefficient)
                            });
                    field.add(field.mul(higher, x), constant)
                })
                .collect();
            Share { x, y }
        })
        .collect();
    Ok(shares)
}

fn check_x_coordinates(
    field: PrimeField,
    xs: impl Iterator<Item = u64>,
) -> Result<(), ShamirError> {
    let mut seen = std::collections::BTreeSet::new();
    for x in xs {
        if x == 0 || x >= field.modulus || !seen.insert(x) {
            return Err(ShamirError::InvalidXCoordinate { x });
        }
    }
    Ok(())
}

/// Reconstructs the secret limbs by Lagrange interpolation at zero from the
/// first `threshold` shares.
pub fn reconstruct(
    field: PrimeField,
    shares: &[Share],
    threshold: usize,
) -> Result<Vec<u64>, ShamirError> {
    if threshold == 0 {
        return Err(ShamirError::InvalidThreshold {
            threshold,
            share_count: shares.len(),
        });
    }
    let used = shares
        .get(..threshold)
        .ok_or(ShamirError::NotEnoughShares {
            supplied: shares.len(),
            threshold,
        })?;
    check_x_coordinates(field, used.iter().map(|share| share.x))?;
    let limb_count = used.first().map_or(0, |share| share.y.len());
    if used.iter().any(|share| {
        share.y.len() != limb_count || share.y.iter().any(|&value| value >= field.modulus)
    }) {
        return Err(ShamirError::MalformedShares);
    }
    // Lagrange basis at zero: l_i(0) = prod_{j != i} x_j / (x_j - x_i).
    let basis: Vec<u64> = used
        .iter()
        .enumerate()
        .map(|(i, share_i)| {
            let (numerator, denominator) = used.iter().enumerate().filter(|(j, _)| *j != i).fold(
                (1u64, 1u64),
                |(numerator, denominator), (_, share_j)| {
                    (
                        field.mul(numerator, share_j.x),
                        field.mul(denominator, field.sub(share_j.x, share_i.x)),
                    )
                },
            );
            field.mul(numerator, field.inverse(denominator))
        })
        .collect();
    let secret = (0..limb_count)
        .map(|limb| {
            used.iter()
                .zip(&basis)
                .fold(0u64, |accumulator, (share, &weight)| {
                    let value = share.y.get(limb).copied().unwrap_or(0);
                    field.add(accumulator, field.mul(value, weight))
                })
        })
        .collect();
    Ok(secret)
}

/// Cuts a 32-byte seed into `SEED_LIMBS` little-endian limbs below 2^56.
fn seed_to_limbs(seed: &[u8; 32]) -> [u64; SEED_LIMBS] {
    let mut limbs = [0u64; SEED_LIMBS];
    for (limb, chunk) in limbs.iter_mut().zip(seed.chunks(SEED_LIMB_BYTES)) {
        let mut bytes = [0u8; 8];
        if let Some(prefix) = bytes.get_mut(..chunk.len()) {
            prefix.copy_from_slice(chunk);
        }
        *limb = u64::from_le_bytes(bytes);
    }
    limbs
}

/// Reassembles a seed, rejecting limbs that could not have come from `seed_to_limbs`.
fn limbs_to_seed(limbs: &[u64]) -> Result<[u8; 32], ShamirError> {
    if limbs.len() != SEED_LIMBS {
        return Err(ShamirError::InvalidReconstruction);
    }
    let mut seed = [0u8; 32];
    for (chunk, &limb) in seed.chunks_mut(SEED_LIMB_BYTES).zip(limbs) {
        let bytes = limb.to_le_bytes();
        // Limbs cover 7 bytes, the last one 4; anything above that is a corrupted share.
        if bytes
            .get(chunk.len()..)
            .is_some_and(|high| high.iter().any(|&byte| byte != 0))
        {
            return Err(ShamirError::InvalidReconstruction);
        }
        chunk.copy_from_slice(
            bytes
                .get(..chunk.len())
                .ok_or(ShamirError::InvalidReconstruction)?,
        );
    }
    Ok(seed)
}

/// Shares a 32-byte seed over `SEED_FIELD`.
pub fn split_seed<R: RngCore + CryptoRng>(
    seed: &[u8; 32],
    threshold: usize,
    x_coordinates: &[u64],
    rng: &mut R,
) -> Result<Vec<Share>, ShamirError> {
    split(
        SEED_FIELD,
        &seed_to_limbs(seed),
        threshold,
        x_coordinates,
        rng,
    )
}

/// Reconstructs a 32-byte seed from at least `threshold` shares.
pub fn reconstruct_seed(shares: &[Share], threshold: usize) -> Result<[u8; 32], ShamirError> {
    limbs_to_seed(&reconstruct(SEED_FIELD, shares, threshold)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::{RngCore, SeedableRng};

    proptest! {
        // Any t of the k shares, in any order, give back the seed.
        #[test]
        fn any_threshold_subset_reconstructs_the_seed(
            seed in any::<[u8; 32]>(),
            share_count in 1usize..12,
            threshold_fraction in 0.0f64..1.0,
            rng_seed in any::<u64>(),
            subset_seed in any::<u64>(),
        ) {
            let threshold = 1 + ((share_count - 1) as f64 * threshold_fraction) as usize;
            let mut rng = ChaCha20Rng::seed_from_u64(rng_seed);
            let xs: Vec<u64> = (1..=share_count as u64).map(|x| x * 7 + 3).collect();
            let shares = split_seed(&seed, threshold, &xs, &mut rng).expect("valid parameters");
            let mut shuffled = shares.clone();
            let mut subset_rng = ChaCha20Rng::seed_from_u64(subset_seed);
            for i in (1..shuffled.len()).rev() {
                let j = (subset_rng.next_u64() % (i as u64 + 1)) as usize;
                shuffled.swap(i, j);
            }
            prop_assert_eq!(reconstruct_seed(&shuffled[..threshold], threshold), Ok(seed));
        }

        // On a small field, for every fixed set of t-1 x-coordinates, the
        // distribution of the t-1 shares over all polynomials is the same for
        // every secret: exactly uniform, so t-1 shares carry no information.
        #[test]
        fn fewer_than_threshold_shares_reveal_nothing(
            modulus in prop::sample::select(vec![5u64, 7, 11]),
            threshold in 2usize..4,
        ) {
            let field = PrimeField::new(modulus).expect("small prime");
            let xs: Vec<u64> = (1..threshold as u64).collect();
            let coefficient_count = threshold - 1;
            let polynomial_count = modulus.pow(coefficient_count as u32);
            let mut reference: Option<std::collections::BTreeMap<Vec<u64>, u64>> = None;
            for secret in 0..modulus {
                let mut histogram = std::collections::BTreeMap::new();
                for index in 0..polynomial_count {
                    let coefficients: Vec<u64> =
                        (0..coefficient_count).map(|i| (index / modulus.pow(i as u32)) % modulus).collect();
                    let shares = split_with_coefficients(field, &[secret], &[coefficients], threshold - 1, &xs)
                        .expect("valid parameters");
                    let view: Vec<u64> = shares.iter().map(|share| share.y[0]).collect();
                    *histogram.entry(view).or_insert(0u64) += 1;
                }
                // Uniform: every one of p^(t-1) views occurs exactly once.
                prop_assert_eq!(histogram.len() as u64, polynomial_count);
                match &reference {
                    None => reference = Some(histogram),
                    Some(expected) => prop_assert_eq!(expected, &histogram),
                }
            }
        }
    }

    #[test]
    fn too_few_shares_is_an_error() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let shares = split_seed(&[9u8; 32], 3, &[1, 2, 3], &mut rng).expect("valid parameters");
        assert_eq!(
            reconstruct_seed(&shares[..2], 3),
            Err(ShamirError::NotEnoughShares {
                supplied: 2,
                threshold: 3
            })
        );
    }

    #[test]
    fn zero_and_repeated_x_coordinates_are_rejected() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        assert_eq!(
            split_seed(&[1u8; 32], 2, &[0, 1], &mut rng),
            Err(ShamirError::InvalidXCoordinate { x: 0 })
        );
        assert_eq!(
            split_seed(&[1u8; 32], 2, &[4, 4], &mut rng),
            Err(ShamirError::InvalidXCoordinate { x: 4 })
        );
    }
}
