//! Veil's federation public-key infrastructure: one certificate authority per
//! federation, role certificates for the coordinator, nodes, operators and
//! auditors, a revocation list that takes effect at once, and the mTLS
//! plumbing that puts them in front of tonic.
//!
//! A member's TLS key *is* its long-term Ed25519 identity key: the same key
//! that authenticates a node to the coordinator signs its secure-aggregation
//! key advertisements, and [`verify_node_certificate`] lets a peer check that
//! binding without a TLS connection.
//!
//! This crate does not decide which RPC needs which role (the coordinator's
//! service layer calls [`authorize`]), does not keep an audit log of issuance
//! and revocation (the coordinator's audit log records them, from the
//! [`IssuanceJournal`] and the [`RevocationList`]), and does not persist
//! anything but certificate, key, journal and revocation files.

mod authority;
mod files;
mod identity;
mod journal;
mod local;
mod revocation;
mod tls;
mod validity_window;

pub use authority::{
    CLOCK_SKEW_ALLOWANCE, CertificateRequest, FederationCa, IssuedCertificate, PkiError, Validity,
};
pub use files::{MemberFiles, MemberFilesError, REVOCATIONS_FILE, ROOT_FILE};
pub use identity::{
    AuthError, Ed25519PublicKey, FederationRoot, IdentityKey, PeerIdentity, Role, Serial,
    authorize, certificate_der_from_pem, certificate_identity_unverified, verify_certificate,
    verify_node_certificate,
};
pub use journal::{ISSUED_FILE, Issuance, IssuanceJournal};
pub use local::{LocalPki, LocalPkiError};
pub use revocation::{Revocation, RevocationError, RevocationList, RevocationReason};
pub use tls::{
    ClientTls, HANDSHAKE_TIMEOUT, MAX_CONCURRENT_HANDSHAKES, MtlsConnectInfo, MtlsStream,
    ServerTls, TlsError, peer_address, peer_identity, scheme_mismatch_hint, tls_incoming,
};
pub use validity_window::{ValidityWindow, certificate_validity_window};
