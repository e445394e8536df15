//! Who may call which RPC: every request's mTLS identity is checked against
//! the roles its RPC allows, and a node may act only under its own name.
//! Refusals are returned as `Unauthenticated` / `PermissionDenied` and
//! logged with the caller's role, name and serial (never a key or a value).
//!
//! Without mTLS (the explicit insecure-development mode) there is no
//! identity to check and every call is let through; the server warns at
//! start-up.

use std::sync::{Arc, Mutex};

use tonic::{Request, Status};
use veil_audit_log::AuditEvent;
use veil_pki::{PeerIdentity, Role, authorize, peer_address, peer_identity};

use crate::audit::AuditTrail;
use crate::state::lock;

/// The roles of each kind of RPC.
pub(crate) const NODE: &[Role] = &[Role::Node];
/// Creating, starting and cancelling jobs, and fetching models.
pub(crate) const OPERATOR: &[Role] = &[Role::Operator];
/// Submitting, starting and fetching the model of a job: operators for
/// ordinary jobs, auditors for their privacy tests ([`audit_job_access`]).
pub(crate) const OPERATOR_OR_AUDITOR: &[Role] = &[Role::Operator, Role::Auditor];
/// Recording a privacy test's outcome.
pub(crate) const AUDITOR: &[Role] = &[Role::Auditor];
/// Reading job status and progress: operators and auditors.
pub(crate) const READER: &[Role] = &[Role::Operator, Role::Auditor];

/// The per-request check, shared by both services.
#[derive(Clone)]
pub(crate) struct Gate {
    /// Whether connections carry mTLS identities.
    mtls: bool,
    /// Where refusals are recorded.
    audit: Arc<Mutex<AuditTrail>>,
}

impl Gate {
    /// A gate for a server with (`true`) or without mTLS.
    pub(crate) fn new(mtls: bool, audit: Arc<Mutex<AuditTrail>>) -> Self {
        Self { mtls, audit }
    }

    /// The caller's identity, if its role may call `rpc`. `None` in
    /// insecure-development mode.
    pub(crate) fn allow<T>(
        &self,
        request: &Request<T>,
        rpc: &'static str,
        roles: &[Role],
    ) -> Result<Option<PeerIdentity>, Status> {
        if !self.mtls {
            return Ok(None);
        }
        let checked = peer_identity(request).and_then(|identity| {
            authorize(&identity, roles)?;
            Ok(identity)
        });
        match checked {
            Ok(identity) => Ok(Some(identity)),
            Err(error) => {
                self.refused(request, rpc, &error.to_string());
                Err(error.into())
            }
        }
    }

    /// Like [`Gate::allow`] for node RPCs, and the node must be `node_id`.
    pub(crate) fn allow_node<T>(
        &self,
        request: &Request<T>,
        rpc: &'static str,
        node_id: &str,
    ) -> Result<Option<PeerIdentity>, Status> {
        let Some(identity) = self.allow(request, rpc, NODE)? else {
            return Ok(None);
        };
        if let Err(error) = identity.require_name(node_id) {
            self.refused(request, rpc, &error.to_string());
            return Err(error.into());
        }
        Ok(Some(identity))
    }
}

/// Who an audit entry names as the actor: `role/name`, or
/// `insecure-dev` without mTLS.
/// Operators run ordinary jobs and auditors run privacy tests, never the
/// other way round: an auditor cannot train (or export) a production model,
/// and an operator cannot name canaries. Insecure development has no roles.
pub(crate) fn audit_job_access(
    identity: Option<&PeerIdentity>,
    spec: &veil_job::JobSpec,
) -> Result<(), Status> {
    let Some(identity) = identity else {
        return Ok(());
    };
    match job_access_refusal(identity.role, spec) {
        Some(reason) => Err(Status::permission_denied(reason)),
        None => Ok(()),
    }
}

/// Why `role` may not submit or start `spec`, if it may not: the rule of
/// [`audit_job_access`], for the console's people as for certificates.
pub(crate) fn job_access_refusal(role: Role, spec: &veil_job::JobSpec) -> Option<&'static str> {
    match (role, spec.privacy_audit.is_some()) {
        (Role::Auditor, false) => {
            Some("an auditor may act only on privacy tests (jobs with a privacy_audit)")
        }
        (Role::Operator, true) => {
            Some("privacy tests are run by auditors (`coordinator audit privacy-test`)")
        }
        _ => None,
    }
}

pub(crate) fn actor(identity: Option<&PeerIdentity>) -> String {
    identity.map_or_else(
        || "insecure-dev".to_owned(),
        |identity| format!("{}/{}", identity.role.as_str(), identity.name),
    )
}

impl Gate {
    /// An authentication or authorisation failure, for the operator's log
    /// and the audit trail.
    fn refused<T>(&self, request: &Request<T>, rpc: &'static str, reason: &str) {
        let peer = peer_address(request).map_or_else(|| "unknown".to_owned(), |a| a.to_string());
        let identity = peer_identity(request)
            .ok()
            .map_or_else(|| "none".to_owned(), |identity| actor(Some(&identity)));
        let identity = identity.as_str();
        tracing::warn!(rpc, %peer, identity, %reason, "request refused");
        lock(&self.audit).record(
            identity,
            AuditEvent::AuthFailure {
                peer,
                rpc: rpc.to_owned(),
                reason: reason.to_owned(),
            },
        );
    }
}
