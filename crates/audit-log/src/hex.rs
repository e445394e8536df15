//! Strict lowercase hexadecimal for digests and signatures in the JSON forms.
//!
//! Decoding accepts only lowercase digits: if `A` and `a` both decoded to the
//! same byte, a one-byte edit of a stored hash would go unnoticed, and the
//! "every byte of the file is covered" property would not hold.

use serde::{Deserialize, Deserializer, Serializer};

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Encodes bytes as lowercase hexadecimal.
pub fn encode(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

/// Decodes lowercase hexadecimal; `None` for odd lengths or any other character.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    let digit = |character: u8| match character {
        b'0'..=b'9' => Some(character - b'0'),
        b'a'..=b'f' => Some(character - b'a' + 10),
        _ => None,
    };
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes
        .chunks_exact(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// Decodes exactly 32 bytes of lowercase hexadecimal.
pub fn decode_digest(text: &str) -> Option<[u8; 32]> {
    decode(text)?.try_into().ok()
}

/// Serde adapter for `[u8; 32]` digests as 64 lowercase hex characters.
pub mod digest {
    use super::*;

    /// Serialises a digest as hex.
    pub fn serialize<S: Serializer>(digest: &[u8; 32], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&encode(digest))
    }

    /// Deserialises a digest from exactly 64 lowercase hex characters.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(deserializer)?;
        decode_digest(&text)
            .ok_or_else(|| serde::de::Error::custom("expected 64 lowercase hex characters"))
    }
}

/// Serde adapter for variable-length byte strings (signatures) as lowercase hex.
pub mod bytes {
    use super::*;

    /// Serialises bytes as hex.
    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&encode(bytes))
    }

    /// Deserialises bytes from lowercase hex.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        decode(&text).ok_or_else(|| serde::de::Error::custom("expected lowercase hex"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_uppercase() {
        let bytes = [0x00, 0x7f, 0xab, 0xff];
        assert_eq!(encode(&bytes), "007fabff");
        assert_eq!(decode("007fabff"), Some(bytes.to_vec()));
        assert_eq!(decode("007fABff"), None);
        assert_eq!(decode("007"), None);
        assert_eq!(decode_digest("00"), None);
    }
}
