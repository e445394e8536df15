//! Who a certificate says its holder is: roles, the `spiffe://veil/<role>/<name>`
//! identity URI, serial numbers, Ed25519 identity keys, and verification of a
//! peer's certificate against the federation root outside TLS.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use ring::signature::{Ed25519KeyPair, KeyPair as _};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, TrustAnchor, UnixTime};
use webpki::{EndEntityCert, KeyUsage};

use crate::authority::{PkiError, write_private_file};
use crate::revocation::{RevocationError, RevocationList};

/// Scheme and trust domain of every Veil identity URI.
const IDENTITY_URI_PREFIX: &str = "spiffe://veil/";

/// Longest member name; keeps URIs, log lines and file names short.
const MAX_NAME_LEN: usize = 64;

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): the algorithm
/// identifier 1.3.101.112 and a 33-byte BIT STRING header.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// What a certificate holder may do in the federation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The coordinator: the only role that gets a TLS server certificate.
    Coordinator,
    /// A partner's node: trains locally and calls node RPCs as itself.
    Node,
    /// Creates, starts and cancels jobs and fetches models.
    Operator,
    /// Reads the ledger, the audit log and reports, and nothing else.
    Auditor,
}

impl Role {
    /// Every role, in a fixed order.
    pub const ALL: [Role; 4] = [Role::Coordinator, Role::Node, Role::Operator, Role::Auditor];

    /// The path segment of the identity URI.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Coordinator => "coordinator",
            Role::Node => "node",
            Role::Operator => "operator",
            Role::Auditor => "auditor",
        }
    }

    /// Whether certificates of this role authenticate TLS servers (rather than clients).
    pub fn is_server(self) -> bool {
        self == Role::Coordinator
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = PkiError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == text)
            .ok_or_else(|| PkiError::UnknownRole(text.to_owned()))
    }
}

/// Checks that `name` is usable as a member name: 1 to 64 characters from
/// `[A-Za-z0-9._-]`, not starting with a dot, so the identity URI needs no
/// escaping and the name is safe in file names and log lines.
pub(crate) fn validate_name(name: &str) -> Result<(), PkiError> {
    let well_formed = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'));
    if well_formed {
        Ok(())
    } else {
        Err(PkiError::InvalidName(name.to_owned()))
    }
}

/// The identity URI bound into a certificate's subject alternative names.
pub(crate) fn identity_uri(role: Role, name: &str) -> String {
    format!("{IDENTITY_URI_PREFIX}{role}/{name}")
}

/// Parses `spiffe://veil/<role>/<name>`; `None` for any other URI.
fn parse_identity_uri(uri: &str) -> Option<(Role, &str)> {
    let (role, name) = uri.strip_prefix(IDENTITY_URI_PREFIX)?.split_once('/')?;
    let role = role.parse().ok()?;
    validate_name(name).ok()?;
    Some((role, name))
}

/// A certificate serial number: the big-endian bytes of a positive integer.
/// Displayed and stored as lowercase hex without separators.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serial(Vec<u8>);

impl Serial {
    /// Wraps raw serial bytes as they appear in the certificate.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self(bytes.to_vec())
    }

    /// The raw serial bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

impl FromStr for Serial {
    type Err = PkiError;

    /// Parses the hex form written by `Display`; RFC 5280 caps serials at 20 bytes.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || PkiError::InvalidSerial(text.to_owned());
        if text.is_empty() || !text.len().is_multiple_of(2) || text.len() > 40 {
            return Err(invalid());
        }
        (0..text.len())
            .step_by(2)
            .map(|at| {
                text.get(at..at + 2)
                    .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                    .ok_or_else(invalid)
            })
            .collect::<Result<Vec<u8>, _>>()
            .map(Serial)
    }
}

/// A raw 32-byte Ed25519 public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ed25519PublicKey(pub [u8; 32]);

impl Ed25519PublicKey {
    /// The key as the certificate's SubjectPublicKeyInfo would carry it.
    pub(crate) fn from_spki(spki: &[u8]) -> Option<Self> {
        let key = spki.strip_prefix(&ED25519_SPKI_PREFIX[..])?;
        key.try_into().ok().map(Self)
    }

    /// Verifies an Ed25519 `signature` over `message` made with this key.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, self.0)
            .verify(message, signature)
            .is_ok()
    }
}

impl rcgen::PublicKeyData for Ed25519PublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ED25519
    }
}

/// A member's long-term Ed25519 key: its TLS client (or server) key and the
/// key it signs protocol messages with. `Debug` shows only the public half.
pub struct IdentityKey {
    /// Kept to write the key back out; ring's key pair cannot export itself.
    pkcs8_der: Vec<u8>,
    key_pair: Ed25519KeyPair,
}

impl IdentityKey {
    /// Generates a fresh key from the operating system's secure generator.
    pub fn generate() -> Result<Self, PkiError> {
        let random = ring::rand::SystemRandom::new();
        let document =
            Ed25519KeyPair::generate_pkcs8(&random).map_err(|_| PkiError::KeyGeneration)?;
        Self::from_pkcs8_der(document.as_ref())
    }

    /// Reads a PKCS#8 `PRIVATE KEY` PEM holding an Ed25519 key.
    pub fn from_pem(key_pem: &str) -> Result<Self, PkiError> {
        let der = PrivatePkcs8KeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|error| PkiError::Pem(format!("identity key: {error}")))?;
        Self::from_pkcs8_der(der.secret_pkcs8_der())
    }

    /// Reads the key file written by [`IdentityKey::save`].
    pub fn load(path: &Path) -> Result<Self, PkiError> {
        let pem = std::fs::read_to_string(path).map_err(|source| PkiError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_pem(&pem)
    }

    fn from_pkcs8_der(pkcs8_der: &[u8]) -> Result<Self, PkiError> {
        // `maybe_unchecked` accepts PKCS#8 v1 documents (without the public
        // key) as written by other tools, as well as ring's own v2.
        let key_pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8_der)
            .map_err(|error| PkiError::Pem(format!("not an Ed25519 PKCS#8 key: {error}")))?;
        Ok(Self {
            pkcs8_der: pkcs8_der.to_vec(),
            key_pair,
        })
    }

    /// The key as a PKCS#8 `PRIVATE KEY` PEM. This is the secret: write it
    /// only to a file readable by its owner (see [`IdentityKey::save`]).
    pub fn to_pem(&self) -> Result<String, PkiError> {
        Ok(rcgen::KeyPair::try_from(self.pkcs8_der.as_slice())?.serialize_pem())
    }

    /// Writes the key PEM to `path`, readable by its owner only (0600).
    pub fn save(&self, path: &Path) -> Result<(), PkiError> {
        write_private_file(path, self.to_pem()?.as_bytes())
    }

    /// The key in the form rustls loads.
    pub(crate) fn private_key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.pkcs8_der.clone()))
    }

    /// The public half, as bound into the member's certificate.
    pub fn public_key(&self) -> Ed25519PublicKey {
        let mut key = [0u8; 32];
        key.copy_from_slice(self.key_pair.public_key().as_ref());
        Ed25519PublicKey(key)
    }

    /// The ring key pair, for signing protocol messages.
    pub fn key_pair(&self) -> &Ed25519KeyPair {
        &self.key_pair
    }

    /// The ring key pair, owned, for signers that keep it (a node's
    /// secure-aggregation participant signs with its certificate's key).
    pub fn into_key_pair(self) -> Ed25519KeyPair {
        self.key_pair
    }

    /// Signs `message`; the signature verifies under [`IdentityKey::public_key`].
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let mut signature = [0u8; 64];
        signature.copy_from_slice(self.key_pair.sign(message).as_ref());
        signature
    }
}

impl fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityKey")
            .field("public_key", &self.public_key())
            .finish_non_exhaustive()
    }
}

/// The federation's trust anchor: the CA certificate every member holds.
#[derive(Debug, Clone)]
pub struct FederationRoot {
    certificate_pem: String,
    certificate_der: CertificateDer<'static>,
    /// Parsed once, so verifying a peer does not re-parse the root.
    anchor: TrustAnchor<'static>,
}

impl FederationRoot {
    /// Reads the CA certificate PEM.
    pub fn from_pem(certificate_pem: &str) -> Result<Self, PkiError> {
        let certificate_der = CertificateDer::from_pem_slice(certificate_pem.as_bytes())
            .map_err(|error| PkiError::Pem(format!("CA certificate: {error}")))?;
        let anchor = webpki::anchor_from_trusted_cert(&certificate_der)
            .map_err(PkiError::Certificate)?
            .to_owned();
        Ok(Self {
            certificate_pem: certificate_pem.to_owned(),
            certificate_der,
            anchor,
        })
    }

    /// Reads the CA certificate file (`ca.pem` in a CA directory).
    pub fn load(path: &Path) -> Result<Self, PkiError> {
        let pem = std::fs::read_to_string(path).map_err(|source| PkiError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_pem(&pem)
    }

    /// The CA certificate as PEM.
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// The CA certificate as DER.
    pub fn certificate_der(&self) -> &CertificateDer<'static> {
        &self.certificate_der
    }

    pub(crate) fn trust_anchors(&self) -> &[TrustAnchor<'static>] {
        std::slice::from_ref(&self.anchor)
    }
}

/// The DER of the (first) certificate in a PEM text, as a member sends its
/// own certificate for the coordinator to relay to its peers.
pub fn certificate_der_from_pem(certificate_pem: &str) -> Result<Vec<u8>, PkiError> {
    let der = CertificateDer::from_pem_slice(certificate_pem.as_bytes())
        .map_err(|error| PkiError::Pem(format!("certificate: {error}")))?;
    Ok(der.to_vec())
}

/// The identity a certificate names, *without* verifying its chain: for a
/// coordinator comparing the certificate a node registers with the one its
/// TLS handshake already verified. Peers must use [`verify_node_certificate`].
pub fn certificate_identity_unverified(certificate_der: &[u8]) -> Result<PeerIdentity, AuthError> {
    identity_of_der(certificate_der)
}

/// An authenticated member, as its certificate names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// What the member may do.
    pub role: Role,
    /// The member's name within its role, for example a node id.
    pub name: String,
    /// The certificate's serial, the handle for revocation and audit records.
    pub serial: Serial,
    /// The member's Ed25519 identity key, bound by the CA's signature.
    pub ed25519_public_key: Ed25519PublicKey,
}

impl PeerIdentity {
    /// Refuses a member acting under a name other than its own, for example
    /// a node submitting an update for another node.
    pub fn require_name(&self, claimed: &str) -> Result<(), AuthError> {
        if self.name == claimed {
            Ok(())
        } else {
            Err(AuthError::NotSelf {
                claimed: claimed.to_owned(),
                actual: self.name.clone(),
            })
        }
    }
}

/// Why a peer was not accepted. Each variant names what was wrong, for the
/// caller's log and audit record; none carries secret material.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The connection carried no client certificate (plaintext or anonymous).
    #[error("no client certificate was presented")]
    NoCertificate,
    /// The certificate is malformed, does not chain to the federation CA,
    /// is outside its validity period, or is not valid for this usage.
    #[error("certificate refused: {0}")]
    BadCertificate(webpki::Error),
    /// The certificate does not carry exactly one well-formed Veil identity URI.
    #[error("certificate has no valid Veil identity: {0}")]
    BadSan(&'static str),
    /// The certificate's key is not Ed25519, so it cannot be a Veil identity key.
    #[error("certificate key is not Ed25519")]
    NotEd25519,
    /// The certificate's serial is on the federation's revocation list.
    #[error("certificate {serial} is revoked")]
    Revoked {
        /// Serial of the revoked certificate.
        serial: Serial,
    },
    /// The revocation list could not be read, so revocation status is
    /// unknown; Veil fails closed.
    #[error("revocation status unknown: {0}")]
    RevocationUnavailable(#[source] RevocationError),
    /// The member's role may not perform this action.
    #[error("role {actual} may not do this (allowed: {})", display_roles(allowed))]
    WrongRole {
        /// The member's role.
        actual: Role,
        /// Roles that may.
        allowed: Vec<Role>,
    },
    /// The member acted under a name that is not its own.
    #[error("{actual} may not act as {claimed}")]
    NotSelf {
        /// The name in the request.
        claimed: String,
        /// The name in the certificate.
        actual: String,
    },
}

fn display_roles(roles: &[Role]) -> String {
    roles
        .iter()
        .map(|role| role.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Refuses `identity` unless its role is one of `allowed`.
pub fn authorize(identity: &PeerIdentity, allowed: &[Role]) -> Result<(), AuthError> {
    if allowed.contains(&identity.role) {
        Ok(())
    } else {
        Err(AuthError::WrongRole {
            actual: identity.role,
            allowed: allowed.to_vec(),
        })
    }
}

/// Reads the identity from a certificate whose chain was already verified.
pub(crate) fn identity_of(certificate: &EndEntityCert<'_>) -> Result<PeerIdentity, AuthError> {
    let mut identities = certificate
        .valid_uri_names()
        .filter(|uri| uri.starts_with(IDENTITY_URI_PREFIX));
    let uri = identities
        .next()
        .ok_or(AuthError::BadSan("no spiffe://veil/ URI"))?;
    if identities.next().is_some() {
        return Err(AuthError::BadSan("more than one spiffe://veil/ URI"));
    }
    let (role, name) = parse_identity_uri(uri).ok_or(AuthError::BadSan(
        "malformed spiffe://veil/<role>/<name> URI",
    ))?;
    let spki = certificate.subject_public_key_info();
    let ed25519_public_key =
        Ed25519PublicKey::from_spki(spki.as_ref()).ok_or(AuthError::NotEd25519)?;
    Ok(PeerIdentity {
        role,
        name: name.to_owned(),
        serial: Serial::from_bytes(certificate.serial()),
        ed25519_public_key,
    })
}

/// Reads the identity from the DER of a certificate already verified by TLS.
pub(crate) fn identity_of_der(certificate_der: &[u8]) -> Result<PeerIdentity, AuthError> {
    let der = CertificateDer::from(certificate_der);
    let certificate = EndEntityCert::try_from(&der).map_err(AuthError::BadCertificate)?;
    identity_of(&certificate)
}

/// Refuses `identity` if `revocations` lists its serial, or cannot be read.
pub(crate) fn ensure_not_revoked(
    revocations: &RevocationList,
    identity: &PeerIdentity,
) -> Result<(), AuthError> {
    match revocations.is_revoked(&identity.serial) {
        Ok(false) => Ok(()),
        Ok(true) => Err(AuthError::Revoked {
            serial: identity.serial.clone(),
        }),
        Err(error) => Err(AuthError::RevocationUnavailable(error)),
    }
}

/// Verifies a member's certificate without TLS: it must chain to `root`, be
/// valid at `now_unix_seconds`, carry a Veil identity with the `required`
/// role and an Ed25519 key, and (given a list) not be revoked.
///
/// This is how a node checks a *peer* node's key advertisement relayed by
/// the coordinator: the advertisement's signature must verify under the
/// returned `ed25519_public_key`.
pub fn verify_certificate(
    root: &FederationRoot,
    certificate_der: &[u8],
    now_unix_seconds: u64,
    revocations: Option<&RevocationList>,
    required: Role,
) -> Result<PeerIdentity, AuthError> {
    let der = CertificateDer::from(certificate_der);
    let certificate = EndEntityCert::try_from(&der).map_err(AuthError::BadCertificate)?;
    let usage = if required.is_server() {
        KeyUsage::server_auth()
    } else {
        KeyUsage::client_auth()
    };
    certificate
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            root.trust_anchors(),
            &[],
            UnixTime::since_unix_epoch(Duration::from_secs(now_unix_seconds)),
            usage,
            None,
            None,
        )
        .map_err(AuthError::BadCertificate)?;
    let identity = identity_of(&certificate)?;
    authorize(&identity, &[required])?;
    if let Some(revocations) = revocations {
        ensure_not_revoked(revocations, &identity)?;
    }
    Ok(identity)
}

/// [`verify_certificate`] for [`Role::Node`]: the check a node makes on a
/// peer node's certificate before trusting its signed key advertisement.
pub fn verify_node_certificate(
    root: &FederationRoot,
    certificate_der: &[u8],
    now_unix_seconds: u64,
    revocations: Option<&RevocationList>,
) -> Result<PeerIdentity, AuthError> {
    verify_certificate(
        root,
        certificate_der,
        now_unix_seconds,
        revocations,
        Role::Node,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_hex_round_trips_and_rejects_garbage() {
        let serial = Serial::from_bytes(&[0x4a, 0x00, 0xff]);
        assert_eq!(serial.to_string(), "4a00ff");
        assert_eq!("4a00ff".parse::<Serial>().ok(), Some(serial));
        for bad in ["", "4", "zz", "4a0", &"ab".repeat(21)] {
            assert!(bad.parse::<Serial>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn identity_uris_parse_only_in_the_veil_form() {
        assert_eq!(
            parse_identity_uri("spiffe://veil/node/hospital-a"),
            Some((Role::Node, "hospital-a"))
        );
        assert_eq!(
            parse_identity_uri(&identity_uri(Role::Auditor, "audit.1")),
            Some((Role::Auditor, "audit.1"))
        );
        for bad in [
            "spiffe://veil/node/",
            "spiffe://veil/admin/x",
            "spiffe://veil/node/a/b",
            "spiffe://other/node/a",
            "spiffe://veil/node/.hidden",
        ] {
            assert_eq!(parse_identity_uri(bad), None, "{bad} parsed");
        }
    }

    #[test]
    fn identity_key_round_trips_through_pem_and_signs() {
        let key = IdentityKey::generate().expect("generate");
        let reloaded = IdentityKey::from_pem(&key.to_pem().expect("pem")).expect("reload");
        assert_eq!(key.public_key(), reloaded.public_key());
        let signature = reloaded.sign(b"advertisement");
        assert!(key.public_key().verify(b"advertisement", &signature));
        assert!(!key.public_key().verify(b"advertisement!", &signature));
        assert!(!format!("{key:?}").contains("pkcs8"));
    }
}
