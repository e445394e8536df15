//! Whom a node believes its peers are: every cohort member's certificate is
//! verified against the node's own copy of the federation CA and revocation
//! list, must name the member, and supplies the member's identity key. The
//! coordinator relays certificates; it cannot vouch for a key.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use ring::digest;
use veil_federation::DeclineCode;
use veil_pki::{
    FederationRoot, PeerIdentity, Serial, ValidityWindow, certificate_validity_window,
    verify_node_certificate,
};
use veil_secure_aggregation::{IdentityDirectory, IdentityVerifyingKey, NodeId};

use crate::task::MemberCredential;

/// How the node authenticates its peers.
#[derive(Debug, Clone)]
pub enum PeerTrust {
    /// Certificates must chain to the federation root, be valid now, not be
    /// revoked, and name the cohort member they stand for.
    Federation {
        /// The node's own copy of the federation CA certificate.
        root: Arc<FederationRoot>,
        /// Serials on the node's copy of the revocation list, refreshed by
        /// the IO layer before each task.
        revoked: BTreeSet<Serial>,
    },
    /// Insecure development (no TLS, no CA): keys are taken as relayed.
    /// Only a node configured with `insecure_dev = true` runs like this.
    InsecureDevelopment,
}

/// What a node remembers of the credentials it has verified, so that a
/// cohort seen again (every secure phase of a job shows the same one) costs
/// only the checks that can change between tasks.
///
/// A certificate is remembered by the SHA-256 of its DER once its chain,
/// role and key have verified; on a later sight only its validity window is
/// checked against the task's time (read from the same DER, the window
/// webpki enforced), and the caller's checks follow as on first sight:
/// revocation, the name it must carry, duplicates, the node's own key. An
/// identity key is remembered with its decoded curve point. One memory
/// serves one [`PeerTrust`] (one federation root): the node keeps it beside
/// its trust and never shares it. It forgets everything when it reaches
/// [`RememberedCredentials::CAPACITY`] entries, so a coordinator relaying
/// ever new certificates cannot grow it without bound.
#[derive(Debug, Default)]
pub struct RememberedCredentials {
    certificates: HashMap<[u8; 32], VerifiedCertificate>,
    keys: HashMap<[u8; 32], IdentityVerifyingKey>,
}

/// A certificate whose chain, role and key verified.
#[derive(Debug, Clone)]
struct VerifiedCertificate {
    identity: PeerIdentity,
    window: ValidityWindow,
}

impl RememberedCredentials {
    /// Entries kept of each kind before the memory starts over.
    pub const CAPACITY: usize = 16_384;

    /// The certificate's identity at `now_unix_seconds`: remembered, or
    /// verified against `root` and remembered if it has a readable window.
    fn verify_certificate(
        &mut self,
        root: &FederationRoot,
        certificate_der: &[u8],
        now_unix_seconds: u64,
    ) -> Result<PeerIdentity, String> {
        let digest = sha256(certificate_der);
        if let Some(known) = self.certificates.get(&digest) {
            if known.window.contains(now_unix_seconds) {
                return Ok(known.identity.clone());
            }
            // Outside its window: webpki names the reason.
        }
        let identity = verify_node_certificate(root, certificate_der, now_unix_seconds, None)
            .map_err(|error| error.to_string())?;
        if let Some(window) = certificate_validity_window(certificate_der) {
            make_room(&mut self.certificates);
            self.certificates.insert(
                digest,
                VerifiedCertificate {
                    identity: identity.clone(),
                    window,
                },
            );
        }
        Ok(identity)
    }

    /// The key with its point decoded, decoding each key once.
    fn identity_key(&mut self, key: [u8; 32]) -> IdentityVerifyingKey {
        if let Some(known) = self.keys.get(&key) {
            return known.clone();
        }
        make_room(&mut self.keys);
        let decoded = IdentityVerifyingKey::new(key);
        self.keys.insert(key, decoded.clone());
        decoded
    }
}

fn make_room<V>(map: &mut HashMap<[u8; 32], V>) {
    if map.len() >= RememberedCredentials::CAPACITY {
        map.clear();
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, bytes).as_ref());
    out
}

/// Why a cohort was refused: the code that travels and the detail for the log.
#[derive(Debug, Clone, PartialEq)]
pub struct CohortRefusal {
    /// What the coordinator is told.
    pub code: DeclineCode,
    /// What the node logs (names and reasons, never secrets).
    pub detail: String,
}

fn refusal(code: DeclineCode, detail: String) -> CohortRefusal {
    CohortRefusal { code, detail }
}

impl PeerTrust {
    /// Verifies a cohort and returns the identity keys to trust for it.
    ///
    /// Refuses a cohort that lists a member twice, omits this node, has a
    /// credential for a name outside the cohort, lacks one for a member, or
    /// has two members sharing a key (one holder posing as several); and,
    /// under a federation, any certificate that does not verify or does not
    /// name its member. `own_key` must be the key this node's own entry
    /// carries, so a coordinator cannot show peers a substitute for it either.
    ///
    /// `remembered` spares the certificates' signatures and the keys'
    /// decoding when the same credentials come again; every refusal above
    /// is decided as on first sight (see [`RememberedCredentials`]).
    pub fn verify_cohort(
        &self,
        remembered: &mut RememberedCredentials,
        own_node: &str,
        own_key: &[u8; 32],
        cohort: &[String],
        members: &[MemberCredential],
        now_unix_seconds: u64,
    ) -> Result<IdentityDirectory, CohortRefusal> {
        let mut names = BTreeSet::new();
        for name in cohort {
            if !names.insert(name.as_str()) {
                return Err(refusal(
                    DeclineCode::CohortInvalid,
                    format!("the cohort lists '{name}' twice"),
                ));
            }
        }
        if !names.contains(own_node) {
            return Err(refusal(
                DeclineCode::CohortInvalid,
                "the cohort does not include this node".to_owned(),
            ));
        }
        let mut credentials: BTreeMap<&str, &MemberCredential> = BTreeMap::new();
        for member in members {
            if !names.contains(member.node_id.as_str()) {
                return Err(refusal(
                    DeclineCode::CohortInvalid,
                    format!(
                        "a credential is relayed for '{}', who is not in the cohort",
                        member.node_id
                    ),
                ));
            }
            if credentials.insert(&member.node_id, member).is_some() {
                return Err(refusal(
                    DeclineCode::CohortInvalid,
                    format!("two credentials are relayed for '{}'", member.node_id),
                ));
            }
        }
        let mut keys: BTreeMap<NodeId, [u8; 32]> = BTreeMap::new();
        for name in &names {
            let Some(member) = credentials.get(name) else {
                return Err(refusal(
                    DeclineCode::PeerCertificateRejected,
                    format!("no credential is relayed for cohort member '{name}'"),
                ));
            };
            let key = match self {
                PeerTrust::Federation { root, revoked } => {
                    let identity = remembered
                        .verify_certificate(root, &member.certificate_der, now_unix_seconds)
                        .map_err(|error| {
                            refusal(
                                DeclineCode::PeerCertificateRejected,
                                format!("the certificate relayed for '{name}' is refused: {error}"),
                            )
                        })?;
                    if revoked.contains(&identity.serial) {
                        return Err(refusal(
                            DeclineCode::PeerCertificateRejected,
                            format!(
                                "the certificate relayed for '{name}' (serial {}) is revoked",
                                identity.serial
                            ),
                        ));
                    }
                    if identity.name != *name {
                        return Err(refusal(
                            DeclineCode::PeerCertificateRejected,
                            format!(
                                "the certificate relayed for '{name}' names '{}'",
                                identity.name
                            ),
                        ));
                    }
                    identity.ed25519_public_key.0
                }
                PeerTrust::InsecureDevelopment => {
                    member.claimed_key.as_slice().try_into().map_err(|_| {
                        refusal(
                            DeclineCode::InvalidTask,
                            format!("the identity key relayed for '{name}' is not 32 bytes"),
                        )
                    })?
                }
            };
            let node = NodeId::new(*name).map_err(|error| {
                refusal(
                    DeclineCode::InvalidTask,
                    format!("cohort member '{name}': {error}"),
                )
            })?;
            keys.insert(node, key);
        }
        if let Some(own) = NodeId::new(own_node).ok().and_then(|node| keys.get(&node)) {
            if own != own_key {
                return Err(refusal(
                    DeclineCode::PeerCertificateRejected,
                    "this node's own entry carries a key other than its own".to_owned(),
                ));
            }
        }
        let distinct: BTreeSet<&[u8; 32]> = keys.values().collect();
        if distinct.len() != keys.len() {
            return Err(refusal(
                DeclineCode::CohortInvalid,
                format!(
                    "{} cohort members share {} distinct keys: one holder poses as several",
                    keys.len(),
                    distinct.len()
                ),
            ));
        }
        Ok(IdentityDirectory::from_keys(
            keys.into_iter()
                .map(|(node, key)| (node, remembered.identity_key(key))),
        ))
    }
}
