//! Key agreement, key derivation, share encryption, signatures and commitments,
//! each bound to the round so nothing can be replayed across rounds or jobs.
//!
//! - X25519 keys are fresh per round. The scalar arithmetic comes from
//!   x25519-dalek because ring only offers single-use ephemeral keys whose
//!   secret cannot be exported, and SecAgg must both reuse a round key with
//!   every neighbour and Shamir-share the mask key's secret scalar.
//! - HKDF-SHA256, ChaCha20-Poly1305, Ed25519 and SHA-256 come from ring.

use curve25519_dalek::montgomery::MontgomeryPoint;
use rand_core::{CryptoRng, RngCore};
use ring::{aead, digest, hkdf, signature};
use x25519_dalek::PublicKey;
pub use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use crate::params::{IdentityVerifyingKey, NodeId, RoundBinding};
use crate::wire::Writer;

/// Why a cryptographic operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The peer's X25519 public key is a low-order point, so the shared secret
    /// would be predictable; an honest peer never sends one.
    #[error("peer public key gives a non-contributory shared secret")]
    NonContributoryKey,
    /// HKDF refused the requested output length (cannot happen for 32 bytes).
    #[error("key derivation failed")]
    KeyDerivation,
    /// A share ciphertext failed authentication: it was altered, or encrypted
    /// for another sender, recipient, round or job.
    #[error("share ciphertext failed authentication")]
    Authentication,
}

/// Domain separation labels, one per use, so that no derived value can stand
/// in for another.
const MASK_SALT: &[u8] = b"veil-secagg pairwise mask v1";
const SHARE_KEY_SALT: &[u8] = b"veil-secagg share encryption v1";
const ADVERTISEMENT_LABEL: &[u8] = b"veil-secagg key advertisement v1";
const CONSISTENCY_LABEL: &[u8] = b"veil-secagg consistency check v1";
const COMMITMENT_LABEL: &[u8] = b"veil-secagg self-mask commitment v1";
const CONTINUATION_SALT: &[u8] = b"veil-secagg continuation mask v1";

/// A fresh X25519 secret from a cryptographic generator.
pub fn generate_secret<R: RngCore + CryptoRng>(rng: &mut R) -> StaticSecret {
    let mut bytes = [0u8; 32];
    rng.fill_bytes(&mut bytes);
    StaticSecret::from(bytes)
}

/// The X25519 public key of a secret.
pub fn public_key_of(secret: &StaticSecret) -> [u8; 32] {
    PublicKey::from(secret).to_bytes()
}

/// A fresh 256-bit seed.
pub(crate) fn generate_seed<R: RngCore + CryptoRng>(rng: &mut R) -> [u8; 32] {
    let mut seed = [0u8; 32];
    rng.fill_bytes(&mut seed);
    seed
}

/// X25519 (RFC 7748) of our `secret` and a peer's public u-coordinate,
/// refusing a non-contributory (all-zero) result as x25519-dalek's
/// `was_contributory` does.
///
/// Where the peer's u lies on the curve (every honestly generated key), the
/// product is computed as `[clamp(secret)]·P` on the birationally equivalent
/// Edwards curve: curve25519-dalek runs variable-base Edwards multiplication
/// on its AVX2 backend where the CPU has it, while its Montgomery ladder has
/// only the serial one, and X25519 agreement is most of a client's CPU in a
/// secure phase. The u-coordinate of the product does not depend on which of
/// the two Edwards points with that u is taken, since `[s](−P) = −[s]P`, and
/// the unreduced clamped scalar keeps any small-order component of P
/// cleared exactly as the ladder does. A u on the quadratic twist (no
/// Edwards point; only a dishonest peer sends one) goes through the ladder,
/// so every input gives RFC 7748's answer (checked against x25519-dalek in
/// this module's tests). Both paths run in constant time in the secret.
fn agree(
    secret: &StaticSecret,
    peer_public: &[u8; 32],
) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
    agree_prepared(secret, &PreparedPublicKey::new(peer_public))
}

/// A peer's X25519 public key with its Edwards point computed once (a
/// field square root and an inversion, about a third of an agreement), for
/// a key many agreements use: the coordinator agrees with each surviving
/// client's mask key once per dropped neighbour it unmasks.
pub(crate) struct PreparedPublicKey {
    /// The u-coordinate as received.
    montgomery: [u8; 32],
    /// One of the two Edwards points with that u (`None` on the twist).
    edwards: Option<curve25519_dalek::EdwardsPoint>,
}

impl PreparedPublicKey {
    pub(crate) fn new(peer_public: &[u8; 32]) -> Self {
        PreparedPublicKey {
            montgomery: *peer_public,
            edwards: MontgomeryPoint(*peer_public).to_edwards(0),
        }
    }
}

/// [`agree`] with a prepared peer key.
fn agree_prepared(
    secret: &StaticSecret,
    peer: &PreparedPublicKey,
) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
    let shared = match &peer.edwards {
        Some(point) => {
            let scalar = Zeroizing::new(secret.to_bytes());
            Zeroizing::new(point.mul_clamped(*scalar).to_montgomery().to_bytes())
        }
        None => Zeroizing::new(
            secret
                .diffie_hellman(&PublicKey::from(peer.montgomery))
                .to_bytes(),
        ),
    };
    if *shared == [0u8; 32] {
        return Err(CryptoError::NonContributoryKey);
    }
    Ok(shared)
}

fn round_info(binding: &RoundBinding, first: &NodeId, second: &NodeId) -> Vec<u8> {
    let mut writer = Writer::new_raw();
    binding.write_into(&mut writer);
    writer.node_id(first);
    writer.node_id(second);
    writer.into_bytes()
}

/// The seed of the pairwise mask between two clients: HKDF over their mask-key
/// agreement, bound to the round and to the unordered pair (lower id first), so
/// both ends and the server (after reconstructing a dropped client's key) agree.
pub fn pairwise_mask_seed(
    own_mask_secret: &StaticSecret,
    peer_mask_public: &[u8; 32],
    binding: &RoundBinding,
    own_node: &NodeId,
    peer_node: &NodeId,
) -> Result<[u8; 32], CryptoError> {
    pairwise_mask_seed_prepared(
        own_mask_secret,
        &PreparedPublicKey::new(peer_mask_public),
        binding,
        own_node,
        peer_node,
    )
}

/// [`pairwise_mask_seed`] with a prepared peer key.
pub(crate) fn pairwise_mask_seed_prepared(
    own_mask_secret: &StaticSecret,
    peer_mask_public: &PreparedPublicKey,
    binding: &RoundBinding,
    own_node: &NodeId,
    peer_node: &NodeId,
) -> Result<[u8; 32], CryptoError> {
    let shared = agree_prepared(own_mask_secret, peer_mask_public)?;
    let (lower, higher) = if own_node < peer_node {
        (own_node, peer_node)
    } else {
        (peer_node, own_node)
    };
    hkdf_seed(
        MASK_SALT,
        shared.as_slice(),
        &round_info(binding, lower, higher),
    )
}

/// A 32-byte seed by HKDF-SHA256 from `salt`, `key_material` and `info`.
fn hkdf_seed(salt: &[u8], key_material: &[u8], info: &[u8]) -> Result<[u8; 32], CryptoError> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(key_material);
    let info_parts = [info];
    let okm = prk
        .expand(&info_parts, hkdf::HKDF_SHA256)
        .map_err(|_| CryptoError::KeyDerivation)?;
    let mut seed = [0u8; 32];
    okm.fill(&mut seed)
        .map_err(|_| CryptoError::KeyDerivation)?;
    Ok(seed)
}

/// The seed of a pair's mask in a continuation of their round (see
/// `client::Continuation`): HKDF keyed by the pair's pairwise mask seed of
/// the round, which is already bound to the round and the pair, with the
/// continuation's own protocol round, vector length and modulus in the
/// info, so a continuation's masks are independent of the round's and of
/// any other continuation's.
pub(crate) fn continuation_mask_seed(
    pairwise_seed: &[u8; 32],
    continuation_round: u32,
    vector_length: usize,
    modulus_bits: u32,
) -> Result<[u8; 32], CryptoError> {
    let mut info = Writer::new_raw();
    info.u32(continuation_round);
    info.u64(vector_length as u64);
    info.u32(modulus_bits);
    hkdf_seed(CONTINUATION_SALT, pairwise_seed, &info.into_bytes())
}

/// The X25519 agreement of two clients' share-encryption keys. It is the
/// same at both ends, so a client computes it once per neighbour and uses it
/// both to seal the shares it sends and to open the shares it receives
/// (each direction still gets its own AEAD key, below). Zeroised on drop.
pub(crate) struct EncryptionAgreement(Zeroizing<[u8; 32]>);

impl EncryptionAgreement {
    /// Agrees with a peer's advertised encryption key, refusing a
    /// non-contributory (low-order) peer key.
    pub(crate) fn new(
        own_encryption_secret: &StaticSecret,
        peer_encryption_public: &[u8; 32],
    ) -> Result<Self, CryptoError> {
        agree(own_encryption_secret, peer_encryption_public).map(EncryptionAgreement)
    }
}

/// The AEAD key for shares sent from `sender` to `recipient`. The direction is
/// part of the derivation, so each key encrypts exactly one message and a zero
/// nonce is safe; the round binding makes a ciphertext useless in any other round.
fn share_key(
    agreement: &EncryptionAgreement,
    binding: &RoundBinding,
    sender: &NodeId,
    recipient: &NodeId,
) -> Result<(aead::LessSafeKey, Vec<u8>), CryptoError> {
    let info = round_info(binding, sender, recipient);
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SHARE_KEY_SALT).extract(agreement.0.as_slice());
    let info_parts = [info.as_slice()];
    let okm = prk
        .expand(&info_parts, &aead::CHACHA20_POLY1305)
        .map_err(|_| CryptoError::KeyDerivation)?;
    let key = aead::LessSafeKey::new(aead::UnboundKey::from(okm));
    Ok((key, info))
}

/// Encrypts a share bundle for `recipient`, authenticating sender, recipient, round and job.
pub(crate) fn seal_shares(
    agreement: &EncryptionAgreement,
    binding: &RoundBinding,
    sender: &NodeId,
    recipient: &NodeId,
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let (key, associated_data) = share_key(agreement, binding, sender, recipient)?;
    let mut in_out = plaintext.to_vec();
    key.seal_in_place_append_tag(
        aead::Nonce::assume_unique_for_key([0u8; 12]),
        aead::Aad::from(&associated_data),
        &mut in_out,
    )
    .map_err(|_| CryptoError::Authentication)?;
    Ok(in_out)
}

/// Decrypts a share bundle from `sender`, failing if anything it is bound to differs.
pub(crate) fn open_shares(
    agreement: &EncryptionAgreement,
    binding: &RoundBinding,
    sender: &NodeId,
    recipient: &NodeId,
    ciphertext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let (key, associated_data) = share_key(agreement, binding, sender, recipient)?;
    let mut in_out = ciphertext.to_vec();
    let plaintext_length = key
        .open_in_place(
            aead::Nonce::assume_unique_for_key([0u8; 12]),
            aead::Aad::from(&associated_data),
            &mut in_out,
        )
        .map_err(|_| CryptoError::Authentication)?
        .len();
    in_out.truncate(plaintext_length);
    Ok(in_out)
}

/// The bytes a client signs to vouch for its round keys.
pub(crate) fn advertisement_transcript(
    binding: &RoundBinding,
    node: &NodeId,
    encryption_public_key: &[u8; 32],
    mask_public_key: &[u8; 32],
) -> Vec<u8> {
    let mut writer = Writer::new_raw();
    writer.fixed(ADVERTISEMENT_LABEL);
    binding.write_into(&mut writer);
    writer.node_id(node);
    writer.fixed(encryption_public_key);
    writer.fixed(mask_public_key);
    writer.into_bytes()
}

/// The bytes a client signs to vouch for the survivor list it was shown.
pub(crate) fn consistency_transcript(binding: &RoundBinding, survivors: &[NodeId]) -> Vec<u8> {
    let mut writer = Writer::new_raw();
    writer.fixed(CONSISTENCY_LABEL);
    binding.write_into(&mut writer);
    writer.node_ids(survivors);
    writer.into_bytes()
}

/// Checks an Ed25519 signature against an enrolled identity key.
pub(crate) fn verify_identity_signature(
    identity_key: &[u8; 32],
    message: &[u8],
    signature_bytes: &[u8],
) -> bool {
    signature::UnparsedPublicKey::new(&signature::ED25519, identity_key)
        .verify(message, signature_bytes)
        .is_ok()
}

/// One Ed25519 signature to check against an enrolled identity key.
#[derive(Clone, Copy)]
pub(crate) struct IdentitySignature<'a> {
    /// The signer's enrolled identity key.
    pub(crate) identity_key: &'a IdentityVerifyingKey,
    /// What it must have signed.
    pub(crate) message: &'a [u8],
    /// The signature as received.
    pub(crate) signature: &'a [u8],
}

/// Checks every signature in `items` and returns the position of the first
/// that ring's [`verify_identity_signature`] rejects, or `None` if all verify.
///
/// Why a batch: a client checks about 2k signatures per secure phase (its
/// neighbours' advertisements, then their consistency signatures), and ring
/// verifies one at a time, ~50 µs each on the benchmark machine, a fifth of
/// the client's CPU at k = 70. ed25519-dalek checks one random linear
/// combination of all the verification equations with a single
/// multi-scalar multiplication, about 2.2× cheaper per signature at 70 (key
/// decompression included). Its weights come from a transcript (merlin) of
/// every key, message hash and signature, so a party altering any of them
/// cannot predict the weights it would have to cancel.
///
/// Acceptance: a batch that verifies is accepted. Batch verification checks
/// the cofactored equation `[8]([s]B − R − [h]A) = 0`, which every signature
/// ring accepts (cofactorless, `[s]B − [h]A = R`) satisfies; it may also
/// accept a signature whose signer deliberately added a small-order
/// component, which forges nothing (only the key's holder can make one), so
/// for "did this node sign this" the two agree. A batch that fails is
/// re-checked one signature at a time with ring, which names the culprit and
/// stays the final word: if ring accepts them all, so does this function.
pub(crate) fn first_invalid_identity_signature(items: &[IdentitySignature<'_>]) -> Option<usize> {
    if items.is_empty() || batch_verifies(items) {
        return None;
    }
    items.iter().position(|item| {
        !verify_identity_signature(item.identity_key.as_bytes(), item.message, item.signature)
    })
}

/// Whether ed25519-dalek's batch verification accepts every item; any key
/// that is not a curve point or signature of the wrong length fails it.
fn batch_verifies(items: &[IdentitySignature<'_>]) -> bool {
    let mut keys = Vec::with_capacity(items.len());
    let mut signatures = Vec::with_capacity(items.len());
    let mut messages = Vec::with_capacity(items.len());
    for item in items {
        let Some(key) = item.identity_key.point() else {
            return false;
        };
        let Ok(signature) = ed25519_dalek::Signature::from_slice(item.signature) else {
            return false;
        };
        keys.push(*key);
        signatures.push(signature);
        messages.push(item.message);
    }
    ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok()
}

/// A hiding, binding commitment to a client's self-mask seed (the seed has 256
/// bits of entropy, so a hash hides it). The server checks the reconstructed
/// seed against it, so a corrupted share cannot silently corrupt the sum.
pub(crate) fn self_mask_commitment(
    binding: &RoundBinding,
    node: &NodeId,
    seed: &[u8; 32],
) -> [u8; 32] {
    let mut writer = Writer::new_raw();
    writer.fixed(COMMITMENT_LABEL);
    binding.write_into(&mut writer);
    writer.node_id(node);
    writer.fixed(seed);
    let hash = digest::digest(&digest::SHA256, &writer.into_bytes());
    let mut commitment = [0u8; 32];
    commitment.copy_from_slice(hash.as_ref());
    commitment
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::ProtocolParams;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn binding(round: u32) -> RoundBinding {
        let cohort = vec![NodeId::new("a").unwrap(), NodeId::new("b").unwrap()];
        let params = ProtocolParams::new(cohort, [0u8; 32], 1, 1, 32, 4).unwrap();
        RoundBinding::new("job", round, &params)
    }

    #[test]
    fn x25519_agrees_with_ring() {
        // ring computes the same X25519 shared secret from the other side, so
        // the dalek scalar arithmetic is interoperable with ring's `agreement`.
        let rng = ring::rand::SystemRandom::new();
        let ring_private =
            ring::agreement::EphemeralPrivateKey::generate(&ring::agreement::X25519, &rng).unwrap();
        let ring_public = ring_private.compute_public_key().unwrap();
        let mut seeded = ChaCha20Rng::seed_from_u64(3);
        let dalek_secret = generate_secret(&mut seeded);
        let dalek_public = public_key_of(&dalek_secret);
        let mut ring_public_bytes = [0u8; 32];
        ring_public_bytes.copy_from_slice(ring_public.as_ref());
        let dalek_side = *agree(&dalek_secret, &ring_public_bytes).unwrap();
        let ring_side = ring::agreement::agree_ephemeral(
            ring_private,
            &ring::agreement::UnparsedPublicKey::new(&ring::agreement::X25519, dalek_public),
            |shared| shared.to_vec(),
        )
        .unwrap();
        assert_eq!(dalek_side.to_vec(), ring_side);
    }

    /// RFC 7748's X25519 through x25519-dalek's Montgomery ladder: the
    /// reference the Edwards path of `agree` must equal.
    fn ladder(secret: &StaticSecret, peer_public: &[u8; 32]) -> [u8; 32] {
        secret
            .diffie_hellman(&PublicKey::from(*peer_public))
            .to_bytes()
    }

    fn check_agreement(secret: &StaticSecret, peer_public: &[u8; 32]) {
        let expected = ladder(secret, peer_public);
        match agree(secret, peer_public) {
            Ok(shared) => assert_eq!(*shared, expected, "u = {peer_public:02x?}"),
            Err(error) => {
                assert_eq!(error, CryptoError::NonContributoryKey);
                assert_eq!(expected, [0u8; 32], "u = {peer_public:02x?}");
            }
        }
    }

    #[test]
    fn agreement_equals_the_montgomery_ladder_on_curve_twist_and_edge_inputs() {
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        let mut on_curve = 0;
        for _ in 0..400 {
            let secret = generate_secret(&mut rng);
            // Honest public keys (on the curve, Edwards path).
            let peer = public_key_of(&generate_secret(&mut rng));
            check_agreement(&secret, &peer);
            // Arbitrary u, top bit and non-canonical values included: about
            // half lie on the twist and take the ladder.
            let mut arbitrary = [0u8; 32];
            rng.fill_bytes(&mut arbitrary);
            if MontgomeryPoint(arbitrary).to_edwards(0).is_some() {
                on_curve += 1;
            }
            check_agreement(&secret, &arbitrary);
        }
        assert!(
            (100..300).contains(&on_curve),
            "{on_curve} of 400 random u on the curve"
        );
        // Small-order points (RFC 7748 / libsodium's blocklist), u = p − 1
        // (no Edwards point), u = p and p + 1 (non-canonical 0 and 1).
        let mut edge: Vec<[u8; 32]> = Vec::new();
        let mut u = [0u8; 32];
        edge.push(u);
        u[0] = 1;
        edge.push(u);
        for hex in [
            "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
            "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
            "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "cdeb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b880",
            "4c9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f11d7",
        ] {
            let bytes: Vec<u8> = (0..32)
                .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
                .collect();
            edge.push(bytes.try_into().unwrap());
        }
        for point in &edge {
            check_agreement(&generate_secret(&mut rng), point);
        }
    }

    #[test]
    fn share_ciphertexts_are_bound_to_round_and_direction() {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let alice = generate_secret(&mut rng);
        let bob = generate_secret(&mut rng);
        let (a, b) = (NodeId::new("a").unwrap(), NodeId::new("b").unwrap());
        let at_alice = EncryptionAgreement::new(&alice, &public_key_of(&bob)).unwrap();
        let at_bob = EncryptionAgreement::new(&bob, &public_key_of(&alice)).unwrap();
        let sealed = seal_shares(&at_alice, &binding(1), &a, &b, b"shares").unwrap();
        assert_eq!(
            open_shares(&at_bob, &binding(1), &a, &b, &sealed).unwrap(),
            b"shares"
        );
        assert_eq!(
            open_shares(&at_bob, &binding(2), &a, &b, &sealed),
            Err(CryptoError::Authentication)
        );
        assert_eq!(
            open_shares(&at_bob, &binding(1), &b, &a, &sealed),
            Err(CryptoError::Authentication)
        );
        // The agreement the sender cached opens what the recipient sends back.
        let reply = seal_shares(&at_bob, &binding(1), &b, &a, b"reply").unwrap();
        assert_eq!(
            open_shares(&at_alice, &binding(1), &b, &a, &reply).unwrap(),
            b"reply"
        );
    }

    /// `count` distinct signers, each signing its own message.
    fn signed_messages(count: usize) -> Vec<([u8; 32], Vec<u8>, Vec<u8>)> {
        let rng = ring::rand::SystemRandom::new();
        (0..count)
            .map(|index| {
                let pkcs8 = signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
                let pair = signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
                let message = format!("advertisement {index}").into_bytes();
                let signature = pair.sign(&message).as_ref().to_vec();
                let mut key = [0u8; 32];
                key.copy_from_slice(signature::KeyPair::public_key(&pair).as_ref());
                (key, message, signature)
            })
            .collect()
    }

    /// Checks `signed` in one batch; the keys are decoded here, as a
    /// directory decodes them.
    fn first_invalid(signed: &[([u8; 32], Vec<u8>, Vec<u8>)]) -> Option<usize> {
        let keys: Vec<IdentityVerifyingKey> = signed
            .iter()
            .map(|(key, _, _)| IdentityVerifyingKey::new(*key))
            .collect();
        let items: Vec<IdentitySignature<'_>> = signed
            .iter()
            .zip(&keys)
            .map(
                |((_, message, signature), identity_key)| IdentitySignature {
                    identity_key,
                    message,
                    signature,
                },
            )
            .collect();
        first_invalid_identity_signature(&items)
    }

    #[test]
    fn a_batch_of_valid_signatures_verifies() {
        let signed = signed_messages(70);
        assert_eq!(first_invalid(&signed), None);
        assert_eq!(first_invalid_identity_signature(&[]), None);
    }

    #[test]
    fn the_batch_names_the_first_signature_ring_rejects() {
        let signed = signed_messages(40);
        // Each way of breaking one signature, at a different position, and
        // two broken at once (the first is named).
        let mut flipped = signed.clone();
        flipped[17].2[5] ^= 1;
        assert_eq!(first_invalid(&flipped), Some(17));
        let mut other_message = signed.clone();
        other_message[3].1 = b"another survivor list".to_vec();
        assert_eq!(first_invalid(&other_message), Some(3));
        let mut swapped_key = signed.clone();
        swapped_key[39].0 = signed[38].0;
        assert_eq!(first_invalid(&swapped_key), Some(39));
        let mut truncated = signed.clone();
        truncated[0].2.truncate(63);
        assert_eq!(first_invalid(&truncated), Some(0));
        let mut not_a_point = signed.clone();
        // y = 2 is not the y-coordinate of any point of edwards25519.
        not_a_point[8].0 = [0u8; 32];
        not_a_point[8].0[0] = 2;
        assert_eq!(first_invalid(&not_a_point), Some(8));
        let mut two = signed.clone();
        two[30].2[40] ^= 0x80;
        two[12].2[1] ^= 0x80;
        assert_eq!(first_invalid(&two), Some(12));
    }

    #[test]
    fn the_batch_agrees_with_ring_on_every_single_byte_change() {
        // Any one byte of any one signature changed: the batch must reject
        // exactly what ring rejects, at the same position.
        let signed = signed_messages(5);
        for position in 0..signed.len() {
            for byte in 0..64 {
                let mut changed = signed.clone();
                changed[position].2[byte] = changed[position].2[byte].wrapping_add(1 + byte as u8);
                let ring_rejects = !verify_identity_signature(
                    &changed[position].0,
                    &changed[position].1,
                    &changed[position].2,
                );
                assert_eq!(
                    first_invalid(&changed),
                    ring_rejects.then_some(position),
                    "signature {position}, byte {byte}"
                );
            }
        }
    }

    #[test]
    fn low_order_peer_keys_are_rejected() {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let secret = generate_secret(&mut rng);
        let (a, b) = (NodeId::new("a").unwrap(), NodeId::new("b").unwrap());
        assert_eq!(
            pairwise_mask_seed(&secret, &[0u8; 32], &binding(1), &a, &b),
            Err(CryptoError::NonContributoryKey)
        );
        assert!(matches!(
            EncryptionAgreement::new(&secret, &[0u8; 32]),
            Err(CryptoError::NonContributoryKey)
        ));
    }
}
