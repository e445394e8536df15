//! The protocol's messages as plain structs, with a documented binary encoding.
//!
//! Every message starts with the protocol version byte (`PROTOCOL_VERSION`, 2)
//! and a tag byte naming its type.
//! Then, field by field in declaration order: node ids as `u16` length + UTF-8,
//! fixed-size keys and digests raw, byte strings and lists as a `u32` count
//! followed by the elements, integers little-endian. Decoding checks every
//! length against the remaining input and rejects trailing bytes, so malformed
//! input becomes a `DecodeError`, never a panic or a huge allocation.
//! The coordinator carries these bytes inside protobuf `bytes` fields.

use crate::params::NodeId;
use crate::shamir::{SEED_LIMBS, Share};
use crate::wire::{DecodeError, Reader, Writer};

const TAG_KEY_ADVERTISEMENT: u8 = 1;
const TAG_KEY_DIRECTORY: u8 = 2;
const TAG_ENCRYPTED_SHARES: u8 = 3;
const TAG_FORWARDED_SHARES: u8 = 4;
const TAG_MASKED_INPUT: u8 = 5;
const TAG_SURVIVOR_LIST: u8 = 6;
const TAG_CONSISTENCY_SIGNATURE: u8 = 7;
const TAG_UNMASK_REQUEST: u8 = 8;
const TAG_UNMASK_RESPONSE: u8 = 9;

/// Phase 1, client to server: the client's two round public keys, signed with
/// its long-term identity key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyAdvertisement {
    /// The advertising node.
    pub node_id: NodeId,
    /// X25519 public key used to encrypt the shares sent to this node.
    pub encryption_public_key: [u8; 32],
    /// X25519 public key from which pairwise mask seeds are agreed.
    pub mask_public_key: [u8; 32],
    /// Ed25519 signature over the round binding, node id and both keys.
    pub signature: Vec<u8>,
}

/// Phase 1, server to clients: the advertisements the server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDirectory {
    /// One advertisement per node that advertised in time.
    pub advertisements: Vec<KeyAdvertisement>,
}

/// One encrypted share bundle addressed to one neighbour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressedCiphertext {
    /// The sender (in `ForwardedShares`) or the recipient (in `EncryptedShares`).
    pub peer: NodeId,
    /// ChaCha20-Poly1305 ciphertext of the sender's two shares for the recipient.
    pub ciphertext: Vec<u8>,
}

/// Phase 2, client to server: the client's shares, one ciphertext per neighbour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedShares {
    /// The sending node.
    pub sender: NodeId,
    /// SHA-256 commitment to the sender's self-mask seed, checked after reconstruction.
    pub self_mask_commitment: [u8; 32],
    /// Ciphertexts keyed by recipient.
    pub ciphertexts: Vec<AddressedCiphertext>,
}

/// Phase 2, server to one client: the ciphertexts addressed to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardedShares {
    /// The node these ciphertexts are for.
    pub recipient: NodeId,
    /// Ciphertexts keyed by sender.
    pub ciphertexts: Vec<AddressedCiphertext>,
}

/// Phase 3, client to server: the masked input, 4 bytes per element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskedInput {
    /// The sending node.
    pub sender: NodeId,
    /// x + self mask + pairwise masks, modulo 2^b.
    pub masked_vector: Vec<u32>,
}

/// Phase 4, server to clients: who the server says sent a masked input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SurvivorList {
    /// Sorted survivor ids.
    pub survivors: Vec<NodeId>,
}

/// Phase 4, client to server: a signature over the survivor list the client saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsistencySignature {
    /// The signing node.
    pub signer: NodeId,
    /// Ed25519 signature over the round binding and the survivor list.
    pub signature: Vec<u8>,
}

/// Phase 5, server to clients: the survivors' signatures and which share of
/// which peer the server asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnmaskRequest {
    /// Consistency signatures collected in phase 4.
    pub signatures: Vec<ConsistencySignature>,
    /// Peers whose self-mask seed shares are requested (should be the survivors).
    pub self_mask_share_peers: Vec<NodeId>,
    /// Peers whose mask-key shares are requested (should be the dropped ones).
    pub mask_key_share_peers: Vec<NodeId>,
}

/// A revealed Shamir share of one peer's secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevealedShare {
    /// The peer whose secret this is a share of.
    pub peer: NodeId,
    /// The share (x is the revealing client's x-coordinate).
    pub share: Share,
}

/// Phase 5, client to server: the requested shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnmaskResponse {
    /// The responding node.
    pub sender: NodeId,
    /// Shares of surviving peers' self-mask seeds.
    pub self_mask_shares: Vec<RevealedShare>,
    /// Shares of dropped peers' mask secret keys.
    pub mask_key_shares: Vec<RevealedShare>,
}

fn write_advertisement(writer: &mut Writer, advertisement: &KeyAdvertisement) {
    writer.node_id(&advertisement.node_id);
    writer.fixed(&advertisement.encryption_public_key);
    writer.fixed(&advertisement.mask_public_key);
    writer.byte_string(&advertisement.signature);
}

fn read_advertisement(reader: &mut Reader<'_>) -> Result<KeyAdvertisement, DecodeError> {
    Ok(KeyAdvertisement {
        node_id: reader.node_id("advertisement node id")?,
        encryption_public_key: reader.array("encryption public key")?,
        mask_public_key: reader.array("mask public key")?,
        signature: reader.byte_string("advertisement signature")?,
    })
}

fn write_ciphertexts(writer: &mut Writer, ciphertexts: &[AddressedCiphertext]) {
    writer.length(ciphertexts.len());
    for entry in ciphertexts {
        writer.node_id(&entry.peer);
        writer.byte_string(&entry.ciphertext);
    }
}

fn read_ciphertexts(reader: &mut Reader<'_>) -> Result<Vec<AddressedCiphertext>, DecodeError> {
    // Each entry is at least a 2-byte id length and a 4-byte ciphertext length.
    let count = reader.length("ciphertexts", 6)?;
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        entries.push(AddressedCiphertext {
            peer: reader.node_id("ciphertext peer")?,
            ciphertext: reader.byte_string("ciphertext")?,
        });
    }
    Ok(entries)
}

fn write_signature(writer: &mut Writer, signature: &ConsistencySignature) {
    writer.node_id(&signature.signer);
    writer.byte_string(&signature.signature);
}

fn read_signature(reader: &mut Reader<'_>) -> Result<ConsistencySignature, DecodeError> {
    Ok(ConsistencySignature {
        signer: reader.node_id("signer")?,
        signature: reader.byte_string("consistency signature")?,
    })
}

/// Writes share limbs without their count: a seed share always has `SEED_LIMBS`.
pub(crate) fn write_share_limbs(writer: &mut Writer, share: &Share) {
    for index in 0..SEED_LIMBS {
        writer.u64(share.y.get(index).copied().unwrap_or(0));
    }
}

pub(crate) fn read_share_limbs(reader: &mut Reader<'_>, x: u64) -> Result<Share, DecodeError> {
    let mut y = Vec::with_capacity(SEED_LIMBS);
    for _ in 0..SEED_LIMBS {
        y.push(reader.u64("share limb")?);
    }
    Ok(Share { x, y })
}

fn write_revealed(writer: &mut Writer, shares: &[RevealedShare]) {
    writer.length(shares.len());
    for revealed in shares {
        writer.node_id(&revealed.peer);
        writer.u64(revealed.share.x);
        write_share_limbs(writer, &revealed.share);
    }
}

fn read_revealed(reader: &mut Reader<'_>) -> Result<Vec<RevealedShare>, DecodeError> {
    // 2-byte id length, 8-byte x and the limbs.
    let count = reader.length("revealed shares", 2 + 8 + 8 * SEED_LIMBS)?;
    let mut shares = Vec::with_capacity(count);
    for _ in 0..count {
        let peer = reader.node_id("revealed share peer")?;
        let x = reader.u64("share x")?;
        shares.push(RevealedShare {
            peer,
            share: read_share_limbs(reader, x)?,
        });
    }
    Ok(shares)
}

/// Implements `to_bytes`/`from_bytes` from a tag and body writer/reader.
macro_rules! wire_message {
    ($message:ty, $tag:expr, |$writer:ident, $value:ident| $write:block, |$reader:ident| $read:block) => {
        impl $message {
            /// Encodes the message (see the module documentation for the layout).
            pub fn to_bytes(&self) -> Vec<u8> {
                let $value = self;
                let mut $writer = Writer::new_message($tag, 64);
                $write
                $writer.into_bytes()
            }

            /// Decodes a message, rejecting malformed, truncated or oversized input.
            pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
                let mut $reader = Reader::open_message(bytes, $tag)?;
                let message = $read;
                $reader.finish()?;
                Ok(message)
            }
        }
    };
}

wire_message!(
    KeyAdvertisement,
    TAG_KEY_ADVERTISEMENT,
    |writer, value| {
        write_advertisement(&mut writer, value);
    },
    |reader| { read_advertisement(&mut reader)? }
);

wire_message!(
    KeyDirectory,
    TAG_KEY_DIRECTORY,
    |writer, value| {
        writer.length(value.advertisements.len());
        for advertisement in &value.advertisements {
            write_advertisement(&mut writer, advertisement);
        }
    },
    |reader| {
        // Each advertisement holds at least two keys.
        let count = reader.length("advertisements", 64)?;
        let mut advertisements = Vec::with_capacity(count);
        for _ in 0..count {
            advertisements.push(read_advertisement(&mut reader)?);
        }
        KeyDirectory { advertisements }
    }
);

wire_message!(
    EncryptedShares,
    TAG_ENCRYPTED_SHARES,
    |writer, value| {
        writer.node_id(&value.sender);
        writer.fixed(&value.self_mask_commitment);
        write_ciphertexts(&mut writer, &value.ciphertexts);
    },
    |reader| {
        EncryptedShares {
            sender: reader.node_id("sender")?,
            self_mask_commitment: reader.array("self-mask commitment")?,
            ciphertexts: read_ciphertexts(&mut reader)?,
        }
    }
);

wire_message!(
    ForwardedShares,
    TAG_FORWARDED_SHARES,
    |writer, value| {
        writer.node_id(&value.recipient);
        write_ciphertexts(&mut writer, &value.ciphertexts);
    },
    |reader| {
        ForwardedShares {
            recipient: reader.node_id("recipient")?,
            ciphertexts: read_ciphertexts(&mut reader)?,
        }
    }
);

wire_message!(
    MaskedInput,
    TAG_MASKED_INPUT,
    |writer, value| {
        writer.node_id(&value.sender);
        writer.u32_vector(&value.masked_vector);
    },
    |reader| {
        MaskedInput {
            sender: reader.node_id("sender")?,
            masked_vector: reader.u32_vector("masked vector")?,
        }
    }
);

wire_message!(
    SurvivorList,
    TAG_SURVIVOR_LIST,
    |writer, value| {
        writer.node_ids(&value.survivors);
    },
    |reader| {
        SurvivorList {
            survivors: reader.node_ids("survivors")?,
        }
    }
);

wire_message!(
    ConsistencySignature,
    TAG_CONSISTENCY_SIGNATURE,
    |writer, value| {
        write_signature(&mut writer, value);
    },
    |reader| { read_signature(&mut reader)? }
);

wire_message!(
    UnmaskRequest,
    TAG_UNMASK_REQUEST,
    |writer, value| {
        writer.length(value.signatures.len());
        for signature in &value.signatures {
            write_signature(&mut writer, signature);
        }
        writer.node_ids(&value.self_mask_share_peers);
        writer.node_ids(&value.mask_key_share_peers);
    },
    |reader| {
        let count = reader.length("signatures", 6)?;
        let mut signatures = Vec::with_capacity(count);
        for _ in 0..count {
            signatures.push(read_signature(&mut reader)?);
        }
        UnmaskRequest {
            signatures,
            self_mask_share_peers: reader.node_ids("self-mask share peers")?,
            mask_key_share_peers: reader.node_ids("mask-key share peers")?,
        }
    }
);

wire_message!(
    UnmaskResponse,
    TAG_UNMASK_RESPONSE,
    |writer, value| {
        writer.node_id(&value.sender);
        write_revealed(&mut writer, &value.self_mask_shares);
        write_revealed(&mut writer, &value.mask_key_shares);
    },
    |reader| {
        UnmaskResponse {
            sender: reader.node_id("sender")?,
            self_mask_shares: read_revealed(&mut reader)?,
            mask_key_shares: read_revealed(&mut reader)?,
        }
    }
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::PROTOCOL_VERSION;
    use proptest::prelude::*;

    fn node(name: &str) -> NodeId {
        NodeId::new(name).unwrap()
    }

    #[test]
    fn every_message_round_trips() {
        let advertisement = KeyAdvertisement {
            node_id: node("bank-a"),
            encryption_public_key: [1; 32],
            mask_public_key: [2; 32],
            signature: vec![3; 64],
        };
        assert_eq!(
            KeyAdvertisement::from_bytes(&advertisement.to_bytes()),
            Ok(advertisement.clone())
        );
        let directory = KeyDirectory {
            advertisements: vec![advertisement.clone(), advertisement],
        };
        assert_eq!(
            KeyDirectory::from_bytes(&directory.to_bytes()),
            Ok(directory)
        );
        let shares = EncryptedShares {
            sender: node("a"),
            self_mask_commitment: [9; 32],
            ciphertexts: vec![AddressedCiphertext {
                peer: node("b"),
                ciphertext: vec![5; 96],
            }],
        };
        assert_eq!(EncryptedShares::from_bytes(&shares.to_bytes()), Ok(shares));
        let forwarded = ForwardedShares {
            recipient: node("b"),
            ciphertexts: vec![AddressedCiphertext {
                peer: node("a"),
                ciphertext: vec![5; 96],
            }],
        };
        assert_eq!(
            ForwardedShares::from_bytes(&forwarded.to_bytes()),
            Ok(forwarded)
        );
        let masked = MaskedInput {
            sender: node("a"),
            masked_vector: vec![1, 2, u32::MAX],
        };
        let masked_bytes = masked.to_bytes();
        // Version, tag, id length + "a", element count, then 4 bytes per element.
        assert_eq!(masked_bytes.len(), 2 + 3 + 4 + 3 * 4);
        assert_eq!(MaskedInput::from_bytes(&masked_bytes), Ok(masked));
        let survivors = SurvivorList {
            survivors: vec![node("a"), node("b")],
        };
        assert_eq!(
            SurvivorList::from_bytes(&survivors.to_bytes()),
            Ok(survivors)
        );
        let signature = ConsistencySignature {
            signer: node("a"),
            signature: vec![7; 64],
        };
        assert_eq!(
            ConsistencySignature::from_bytes(&signature.to_bytes()),
            Ok(signature.clone())
        );
        let request = UnmaskRequest {
            signatures: vec![signature],
            self_mask_share_peers: vec![node("a")],
            mask_key_share_peers: vec![node("c")],
        };
        assert_eq!(UnmaskRequest::from_bytes(&request.to_bytes()), Ok(request));
        let response = UnmaskResponse {
            sender: node("b"),
            self_mask_shares: vec![RevealedShare {
                peer: node("a"),
                share: Share {
                    x: 2,
                    y: vec![1, 2, 3, 4, 5],
                },
            }],
            mask_key_shares: vec![],
        };
        assert_eq!(
            UnmaskResponse::from_bytes(&response.to_bytes()),
            Ok(response)
        );
    }

    #[test]
    fn wrong_tag_and_trailing_bytes_are_rejected() {
        let survivors = SurvivorList {
            survivors: vec![node("a")],
        };
        let mut bytes = survivors.to_bytes();
        assert_eq!(
            MaskedInput::from_bytes(&bytes),
            Err(DecodeError::WrongMessageTag {
                expected: TAG_MASKED_INPUT,
                found: TAG_SURVIVOR_LIST
            })
        );
        bytes.push(0);
        assert_eq!(
            SurvivorList::from_bytes(&bytes),
            Err(DecodeError::TrailingBytes { count: 1 })
        );
        assert_eq!(
            MaskedInput::from_bytes(&[
                PROTOCOL_VERSION,
                TAG_MASKED_INPUT,
                1,
                0,
                b'a',
                255,
                255,
                255,
                255
            ]),
            Err(DecodeError::LengthTooLarge {
                field: "masked vector",
                length: u64::from(u32::MAX)
            })
        );
    }

    #[test]
    fn a_message_of_another_protocol_version_is_a_typed_error() {
        // Version 1 is the same encoding with ChaCha20 masks: a masked input
        // from such a node must not be summed with AES-CTR masked ones.
        let input = MaskedInput {
            sender: node("a"),
            masked_vector: vec![1, 2, 3],
        };
        let mut bytes = input.to_bytes();
        assert_eq!(bytes[0], PROTOCOL_VERSION);
        assert_eq!(MaskedInput::from_bytes(&bytes), Ok(input));
        for other_version in [1, PROTOCOL_VERSION + 1] {
            bytes[0] = other_version;
            let error = MaskedInput::from_bytes(&bytes);
            assert_eq!(
                error,
                Err(DecodeError::ProtocolVersionMismatch {
                    found: other_version,
                    expected: PROTOCOL_VERSION
                })
            );
        }
        assert_eq!(
            DecodeError::ProtocolVersionMismatch {
                found: 1,
                expected: 2
            }
            .to_string(),
            "message is secure-aggregation protocol version 1; this build speaks version 2"
        );
    }

    proptest! {
        // Arbitrary bytes never panic any decoder, and every truncation of a
        // valid message is an error.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = KeyAdvertisement::from_bytes(&bytes);
            let _ = KeyDirectory::from_bytes(&bytes);
            let _ = EncryptedShares::from_bytes(&bytes);
            let _ = ForwardedShares::from_bytes(&bytes);
            let _ = MaskedInput::from_bytes(&bytes);
            let _ = SurvivorList::from_bytes(&bytes);
            let _ = ConsistencySignature::from_bytes(&bytes);
            let _ = UnmaskRequest::from_bytes(&bytes);
            let _ = UnmaskResponse::from_bytes(&bytes);
        }

        #[test]
        fn truncations_are_errors(cut in 0usize..60) {
            let request = UnmaskRequest {
                signatures: vec![ConsistencySignature { signer: node("a"), signature: vec![7; 8] }],
                self_mask_share_peers: vec![node("a"), node("bb")],
                mask_key_share_peers: vec![node("c")],
            };
            let bytes = request.to_bytes();
            let cut = cut.min(bytes.len() - 1);
            prop_assert!(UnmaskRequest::from_bytes(&bytes[..cut]).is_err());
        }
    }
}
