//! The byte-level reader and writer behind every message's `to_bytes`/`from_bytes`.
//!
//! The encoding is deliberately small so that a reviewer can check it by eye:
//! every message starts with the protocol version byte and a message tag;
//! integers are little-endian and fixed width, byte strings and lists carry a
//! `u32` length prefix, and node identifiers carry a `u16` length prefix and
//! must be UTF-8. Every length is checked against the bytes that remain before
//! anything is allocated, so a hostile length cannot make the decoder reserve
//! gigabytes.

use crate::params::{NodeId, PROTOCOL_VERSION};

/// Why a byte string could not be decoded into a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended before the field named here was complete.
    #[error("message truncated while reading {field}")]
    Truncated {
        /// The field being read when the bytes ran out.
        field: &'static str,
    },
    /// Bytes were left over after the last field of the message.
    #[error("{count} trailing bytes after the end of the message")]
    TrailingBytes {
        /// How many bytes were left over.
        count: usize,
    },
    /// The leading version byte is another protocol version than this
    /// build's. The version covers the mask PRG as well as the encoding, so a
    /// message from a peer on another version is refused here rather than
    /// masked or unmasked with a keystream the other side does not use.
    #[error(
        "message is secure-aggregation protocol version {found}; this build speaks version {expected}"
    )]
    ProtocolVersionMismatch {
        /// The version byte that was found.
        found: u8,
        /// This build's version, `PROTOCOL_VERSION`.
        expected: u8,
    },
    /// The message tag says the bytes hold a different message type.
    #[error("expected message tag {expected}, found {found}")]
    WrongMessageTag {
        /// The tag of the message type being decoded.
        expected: u8,
        /// The tag found in the bytes.
        found: u8,
    },
    /// A length prefix promises more elements than the remaining bytes can hold.
    #[error("length {length} of {field} exceeds the remaining input")]
    LengthTooLarge {
        /// The field whose length prefix is impossible.
        field: &'static str,
        /// The declared length.
        length: u64,
    },
    /// A node identifier is not valid UTF-8.
    #[error("node identifier is not valid UTF-8")]
    InvalidNodeId,
}

/// Appends fields to a growing byte vector.
pub(crate) struct Writer {
    /// The bytes written so far.
    bytes: Vec<u8>,
}

impl Writer {
    /// Starts a message with the version byte and the message's tag.
    pub(crate) fn new_message(tag: u8, capacity_hint: usize) -> Self {
        let mut bytes = Vec::with_capacity(capacity_hint.saturating_add(2));
        bytes.push(PROTOCOL_VERSION);
        bytes.push(tag);
        Writer { bytes }
    }

    /// Starts an untagged buffer, used for signed transcripts and AEAD plaintexts.
    pub(crate) fn new_raw() -> Self {
        Writer { bytes: Vec::new() }
    }

    pub(crate) fn u32(&mut self, value: u32) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    pub(crate) fn u64(&mut self, value: u64) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    /// Writes a list or byte-string length. Lengths above `u32::MAX` cannot
    /// occur for the message sizes this protocol handles, so they saturate and
    /// the decoder then rejects the message as truncated.
    pub(crate) fn length(&mut self, length: usize) {
        self.u32(u32::try_from(length).unwrap_or(u32::MAX));
    }

    pub(crate) fn fixed(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }

    pub(crate) fn byte_string(&mut self, bytes: &[u8]) {
        self.length(bytes.len());
        self.bytes.extend_from_slice(bytes);
    }

    pub(crate) fn node_id(&mut self, node: &NodeId) {
        let bytes = node.as_str().as_bytes();
        // NodeId construction caps the length at u16::MAX, so this never truncates.
        self.bytes
            .extend_from_slice(&u16::try_from(bytes.len()).unwrap_or(u16::MAX).to_le_bytes());
        self.bytes.extend_from_slice(bytes);
    }

    pub(crate) fn node_ids(&mut self, nodes: &[NodeId]) {
        self.length(nodes.len());
        for node in nodes {
            self.node_id(node);
        }
    }

    pub(crate) fn u32_vector(&mut self, values: &[u32]) {
        self.length(values.len());
        self.bytes.reserve(values.len() * 4);
        for value in values {
            self.bytes.extend_from_slice(&value.to_le_bytes());
        }
    }

    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// Reads fields from the front of a byte slice, never panicking.
pub(crate) struct Reader<'a> {
    /// The bytes not yet consumed.
    remaining: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Checks the version byte and message tag, and positions after them.
    pub(crate) fn open_message(bytes: &'a [u8], tag: u8) -> Result<Self, DecodeError> {
        let mut reader = Reader { remaining: bytes };
        let version = reader.u8("version")?;
        if version != PROTOCOL_VERSION {
            return Err(DecodeError::ProtocolVersionMismatch {
                found: version,
                expected: PROTOCOL_VERSION,
            });
        }
        let found = reader.u8("message tag")?;
        if found != tag {
            return Err(DecodeError::WrongMessageTag {
                expected: tag,
                found,
            });
        }
        Ok(reader)
    }

    /// Reads an untagged buffer such as an AEAD plaintext.
    pub(crate) fn raw(bytes: &'a [u8]) -> Self {
        Reader { remaining: bytes }
    }

    pub(crate) fn take(
        &mut self,
        count: usize,
        field: &'static str,
    ) -> Result<&'a [u8], DecodeError> {
        let (head, tail) = self
            .remaining
            .split_at_checked(count)
            .ok_or(DecodeError::Truncated { field })?;
        self.remaining = tail;
        Ok(head)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        let [byte] = self.array::<1>(field)?;
        Ok(byte)
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array::<4>(field)?))
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array::<8>(field)?))
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N, field)?;
        let mut array = [0u8; N];
        array.copy_from_slice(bytes);
        Ok(array)
    }

    /// Reads a list length and checks that `minimum_element_size` bytes per
    /// element remain, so that callers can allocate for it safely.
    pub(crate) fn length(
        &mut self,
        field: &'static str,
        minimum_element_size: usize,
    ) -> Result<usize, DecodeError> {
        let length = self.u32(field)?;
        let length_usize = usize::try_from(length).map_err(|_| DecodeError::LengthTooLarge {
            field,
            length: u64::from(length),
        })?;
        if length_usize.saturating_mul(minimum_element_size.max(1)) > self.remaining.len() {
            return Err(DecodeError::LengthTooLarge {
                field,
                length: u64::from(length),
            });
        }
        Ok(length_usize)
    }

    pub(crate) fn byte_string(&mut self, field: &'static str) -> Result<Vec<u8>, DecodeError> {
        let length = self.length(field, 1)?;
        Ok(self.take(length, field)?.to_vec())
    }

    pub(crate) fn node_id(&mut self, field: &'static str) -> Result<NodeId, DecodeError> {
        let length = u16::from_le_bytes(self.array::<2>(field)?);
        let bytes = self.take(usize::from(length), field)?;
        let text = std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidNodeId)?;
        Ok(NodeId::from_decoded(text))
    }

    pub(crate) fn node_ids(&mut self, field: &'static str) -> Result<Vec<NodeId>, DecodeError> {
        // Each node identifier takes at least its two-byte length prefix.
        let count = self.length(field, 2)?;
        let mut nodes = Vec::with_capacity(count);
        for _ in 0..count {
            nodes.push(self.node_id(field)?);
        }
        Ok(nodes)
    }

    pub(crate) fn u32_vector(&mut self, field: &'static str) -> Result<Vec<u32>, DecodeError> {
        let count = self.length(field, 4)?;
        let bytes = self.take(count * 4, field)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|chunk| {
                let mut word = [0u8; 4];
                word.copy_from_slice(chunk);
                u32::from_le_bytes(word)
            })
            .collect())
    }

    /// Fails if any bytes remain: a message with trailing data is malformed.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.remaining.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                count: self.remaining.len(),
            })
        }
    }
}
