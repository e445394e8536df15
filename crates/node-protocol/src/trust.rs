//! Whom a node believes its peers are: every cohort member's certificate is
//! verified against the node's own copy of the federation CA and revocation
//! list, must name the member, and supplies the member's identity key. The
//! coordinator relays certificates; it cannot vouch for a key.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use veil_federation::DeclineCode;
use veil_pki::{FederationRoot, Serial, verify_node_certificate};
use veil_secure_aggregation::{IdentityDirectory, NodeId};

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
    pub fn verify_cohort(
        &self,
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
                    let identity = verify_node_certificate(
                        root,
                        &member.certificate_der,
                        now_unix_seconds,
                        None,
                    )
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
        IdentityDirectory::from_entries(keys.into_iter().map(|(node, key)| (node, key.to_vec())))
            .map_err(|error| refusal(DeclineCode::InvalidTask, error.to_string()))
    }
}
