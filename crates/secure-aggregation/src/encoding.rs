//! Fixed-point encoding of model updates into integers with stochastic rounding,
//! and decoding of their sum.
//!
//! A value x clipped to [-c, c] is mapped to (x + c) / (2c) * L with
//! L = 2^value_bits - 1, then rounded up with probability equal to its
//! fractional part, so the encoding is unbiased: E[decode] = clip(x). Each
//! encoded value lies in [0, L], so the sum of n of them is at most n * L and
//! fits in Z_{2^b} without wrapping when value_bits + ceil(log2 n) <= b.

use rand_core::{CryptoRng, RngCore};

/// Why values could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EncodingError {
    /// A value is NaN or infinite; clipping cannot give it a meaning.
    #[error("value at index {index} is not finite")]
    NonFiniteValue {
        /// Position of the offending value.
        index: usize,
    },
    /// The clipping range must be a positive finite number.
    #[error("clip range {clip_range} must be positive and finite")]
    InvalidClipRange {
        /// The rejected clip range.
        clip_range: f32,
    },
    /// The per-value bit width must be between 1 and 31.
    #[error("value bits {bits} outside 1..=31")]
    InvalidValueBits {
        /// The rejected bit width.
        bits: u32,
    },
    /// No bit width leaves at least one bit per value once the sum's growth is reserved.
    #[error("a {modulus_bits}-bit modulus cannot hold the sum of {n_clients} clients")]
    ModulusTooSmall {
        /// The modulus bit width b.
        modulus_bits: u32,
        /// The number of clients whose sum must fit.
        n_clients: usize,
    },
    /// The sum was declared over zero clients.
    #[error("decode_sum needs at least one summed client")]
    NoClientsSummed,
}

/// Bits needed to hold a count of `n_clients`: ceil(log2(n_clients)).
fn growth_bits(n_clients: usize) -> u32 {
    if n_clients <= 1 {
        0
    } else {
        usize::BITS - (n_clients - 1).leading_zeros()
    }
}

/// The largest per-value bit width whose sum over `n_clients` cannot exceed
/// 2^modulus_bits - 1, so the modular sum equals the integer sum.
pub fn value_bits_for_sum(n_clients: usize, modulus_bits: u32) -> Result<u32, EncodingError> {
    let growth = growth_bits(n_clients);
    let available = modulus_bits.min(32).saturating_sub(growth).min(31);
    if n_clients == 0 || available == 0 {
        return Err(EncodingError::ModulusTooSmall {
            modulus_bits,
            n_clients,
        });
    }
    Ok(available)
}

/// The smallest modulus bit width that holds the sum of `n_clients` values of
/// `value_bits` bits each.
pub fn modulus_bits_for_sum(n_clients: usize, value_bits: u32) -> Result<u32, EncodingError> {
    let bits = value_bits + growth_bits(n_clients);
    if bits > 32 {
        return Err(EncodingError::ModulusTooSmall {
            modulus_bits: 32,
            n_clients,
        });
    }
    Ok(bits)
}

fn check_parameters(clip_range: f32, value_bits: u32) -> Result<f64, EncodingError> {
    if !(clip_range.is_finite() && clip_range > 0.0) {
        return Err(EncodingError::InvalidClipRange { clip_range });
    }
    if !(1..=31).contains(&value_bits) {
        return Err(EncodingError::InvalidValueBits { bits: value_bits });
    }
    Ok(f64::from((1u32 << value_bits) - 1))
}

/// Encodes `values`, clipped to [-clip_range, clip_range], into [0, 2^value_bits - 1]
/// with unbiased stochastic rounding drawn from a cryptographic generator.
pub fn encode<R: RngCore + CryptoRng>(
    values: &[f32],
    clip_range: f32,
    value_bits: u32,
    rng: &mut R,
) -> Result<Vec<u32>, EncodingError> {
    let levels = check_parameters(clip_range, value_bits)?;
    let clip = f64::from(clip_range);
    let scale = levels / (2.0 * clip);
    // `levels` is 2^value_bits - 1 with value_bits <= 31.
    let top = levels as u32;
    let mut encoded = Vec::with_capacity(values.len());
    for (index, &value) in values.iter().enumerate() {
        if !value.is_finite() {
            return Err(EncodingError::NonFiniteValue { index });
        }
        let scaled = ((f64::from(value).clamp(-clip, clip) + clip) * scale).clamp(0.0, levels);
        // `scaled` lies in [0, 2^31 - 1], so truncation is its floor; and it
        // is an instruction, where `f64::floor` is a libm call on baseline
        // x86-64 (a fifth of a 10^5-parameter encoding).
        let floor = scaled as u32;
        // A 32-bit uniform in [0, 1) is finer than any f32 update's fractional part matters.
        let uniform = f64::from(rng.next_u32()) / 4_294_967_296.0;
        let rounded = if uniform < scaled - f64::from(floor) {
            floor + 1
        } else {
            floor
        };
        encoded.push(rounded.min(top));
    }
    Ok(encoded)
}

/// Decodes the sum of `n_summed` encodings back to the sum of the clipped values.
pub fn decode_sum(
    sum: &[u32],
    n_summed: usize,
    clip_range: f32,
    value_bits: u32,
) -> Result<Vec<f32>, EncodingError> {
    let levels = check_parameters(clip_range, value_bits)?;
    if n_summed == 0 {
        return Err(EncodingError::NoClientsSummed);
    }
    let clip = f64::from(clip_range);
    let step = 2.0 * clip / levels;
    let offset = n_summed as f64 * clip;
    Ok(sum
        .iter()
        .map(|&total| (f64::from(total) * step - offset) as f32)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    proptest! {
        // Each encoded value rounds to one of its two neighbouring levels, so a
        // decoded sum of n values is within n quantisation steps of the true sum
        // (plus f32 rounding of the result, allowed for by the 1e-4 relative slack).
        #[test]
        fn decoded_sum_is_within_one_step_per_client(
            rows in prop::collection::vec(prop::collection::vec(-2.0f32..2.0, 5), 1..6),
            value_bits in 4u32..20,
            seed in any::<u64>(),
        ) {
            let clip = 1.5f32;
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let mut sum = vec![0u32; 5];
            for row in &rows {
                for (total, value) in sum.iter_mut().zip(encode(row, clip, value_bits, &mut rng).unwrap()) {
                    *total += value;
                }
            }
            let decoded = decode_sum(&sum, rows.len(), clip, value_bits).unwrap();
            let step = 2.0 * f64::from(clip) / f64::from((1u32 << value_bits) - 1);
            for (index, &decoded_value) in decoded.iter().enumerate() {
                let expected: f64 = rows.iter().map(|row| f64::from(row[index].clamp(-clip, clip))).sum();
                let tolerance = step * rows.len() as f64 + 1e-4 * (1.0 + expected.abs());
                prop_assert!((f64::from(decoded_value) - expected).abs() <= tolerance);
            }
        }

        #[test]
        fn chosen_bits_never_overflow(n_clients in 1usize..100_000, modulus_bits in 18u32..=32) {
            let value_bits = value_bits_for_sum(n_clients, modulus_bits).unwrap();
            let max_sum = n_clients as u128 * ((1u128 << value_bits) - 1);
            prop_assert!(max_sum < (1u128 << modulus_bits));
            prop_assert!(modulus_bits_for_sum(n_clients, value_bits).unwrap() <= modulus_bits);
        }
    }

    #[test]
    fn stochastic_rounding_is_unbiased() {
        // 0.3 of a step above a level: the mean over 20_000 draws must be within
        // 0.02 steps of it; the standard error is sqrt(0.21 / 20000) ~ 0.0032 steps,
        // so this bound is over six standard errors.
        let value_bits = 4;
        let clip = 1.0f32;
        let step = 2.0 / 15.0;
        let value = -1.0 + 0.3 * step;
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let draws = 20_000;
        let encoded = encode(&vec![value as f32; draws], clip, value_bits, &mut rng).unwrap();
        let mean = encoded.iter().map(|&v| f64::from(v)).sum::<f64>() / draws as f64;
        assert!((mean - 0.3).abs() < 0.02, "mean level {mean}");
    }

    #[test]
    fn non_finite_values_are_rejected() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        assert_eq!(
            encode(&[0.0, f32::NAN], 1.0, 8, &mut rng),
            Err(EncodingError::NonFiniteValue { index: 1 })
        );
        assert_eq!(
            value_bits_for_sum(1 << 20, 16),
            Err(EncodingError::ModulusTooSmall {
                modulus_bits: 16,
                n_clients: 1 << 20
            })
        );
    }
}
