//! Mask expansion: a ChaCha20 (RFC 8439) keystream keyed by a 256-bit seed, added to or
//! subtracted from an accumulator in place.
//!
//! This is the hot path of the protocol (every client expands k + 1 masks of d
//! words, the server one per survivor plus one per dropped neighbour pair), so
//! the keystream is produced a block batch at a time into a stack buffer and
//! folded into the accumulator with wrapping arithmetic: no allocation per
//! element and no modular reduction inside the loop. Working modulo 2^32 is
//! exact for every b <= 32 because 2^b divides 2^32; callers reduce to Z_{2^b}
//! once at the end.

use chacha20::ChaCha20;
use chacha20::cipher::{KeyIvInit, StreamCipher};

/// Words of keystream produced per refill. 1024 words = 4 KiB = 64 ChaCha
/// blocks: full batches for the AVX2 backend, and still inside L1 cache.
const BUFFER_WORDS: usize = 1024;

/// Adds the keystream of `seed` to `accumulator`, word by word, modulo 2^32.
pub fn add_mask(seed: &[u8; 32], accumulator: &mut [u32]) {
    expand_into(seed, accumulator, u32::wrapping_add);
}

/// Subtracts the keystream of `seed` from `accumulator`, word by word, modulo 2^32.
pub fn subtract_mask(seed: &[u8; 32], accumulator: &mut [u32]) {
    expand_into(seed, accumulator, u32::wrapping_sub);
}

#[inline(always)]
fn expand_into(seed: &[u8; 32], accumulator: &mut [u32], combine: fn(u32, u32) -> u32) {
    // Each seed keys exactly one stream, so the all-zero nonce is never reused.
    // The RFC 8439 block counter covers 2^32 blocks = 2^36 words per stream,
    // far beyond any vector that fits in memory, so the cipher never runs out.
    let mut stream = ChaCha20::new(seed.into(), &[0u8; 12].into());
    let mut buffer = [0u8; BUFFER_WORDS * 4];
    for chunk in accumulator.chunks_mut(BUFFER_WORDS) {
        let bytes = buffer.get_mut(..chunk.len() * 4).unwrap_or_default();
        // XOR onto zeros yields the raw keystream.
        bytes.fill(0);
        stream.apply_keystream(bytes);
        for (word, key_bytes) in chunk.iter_mut().zip(bytes.chunks_exact(4)) {
            let key_word =
                u32::from_le_bytes([key_bytes[0], key_bytes[1], key_bytes[2], key_bytes[3]]);
            *word = combine(*word, key_word);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_then_subtract_restores_the_input() {
        let original: Vec<u32> = (0..1000u32)
            .map(|i| i.wrapping_mul(2_654_435_761))
            .collect();
        let mut values = original.clone();
        add_mask(&[7u8; 32], &mut values);
        assert_ne!(values, original);
        subtract_mask(&[7u8; 32], &mut values);
        assert_eq!(values, original);
    }

    #[test]
    fn keystream_is_a_prefix_whatever_the_length() {
        // A shorter vector must see the same words as the start of a longer one,
        // or a client and the server would disagree on masks for partial chunks.
        let mut short = vec![0u32; 300];
        let mut long = vec![0u32; 1000];
        add_mask(&[3u8; 32], &mut short);
        add_mask(&[3u8; 32], &mut long);
        assert_eq!(short[..], long[..300]);
    }

    #[test]
    fn keystream_matches_the_chacha20_test_vector() {
        // The all-zero key, zero nonce, block 0 output (RFC 8439 A.1 test vector #1).
        let mut words = vec![0u32; 4];
        add_mask(&[0u8; 32], &mut words);
        assert_eq!(words, vec![0xade0b876, 0x903df1a0, 0xe56a5d40, 0x28bd8653]);
    }
}
