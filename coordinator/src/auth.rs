//! Who may call which RPC: every request's mTLS identity is checked against
//! the roles its RPC allows, and a node may act only under its own name.
//! Refusals are returned as `Unauthenticated` / `PermissionDenied` and
//! logged with the caller's role, name and serial (never a key or a value).
//!
//! Without mTLS (the explicit insecure-development mode) there is no
//! identity to check and every call is let through; the server warns at
//! start-up.
//!
//! Refusals are audited in batches: the first refusal of a kind (the same
//! member, RPC and reason) is recorded at once, repeats within
//! [`REFUSAL_AUDIT_WINDOW`] are counted and recorded as one entry when the
//! window closes. A member repeating a forbidden call in a loop then costs
//! one synced append per window, not one per call, under the audit lock the
//! engine also takes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// How long repeats of one refusal are counted before they are recorded.
pub(crate) const REFUSAL_AUDIT_WINDOW: Duration = Duration::from_secs(10);

/// Which refusals are repeats of each other: the actor, the RPC and the reason.
type RefusalKind = (String, &'static str, String);

/// Repeats of one refusal since it was recorded.
struct RefusalBatch {
    recorded_at: Instant,
    repeats: u64,
    /// The latest peer address, for the batch's entry.
    peer: String,
}

/// The per-request check, shared by both services.
#[derive(Clone)]
pub(crate) struct Gate {
    /// Whether connections carry mTLS identities.
    mtls: bool,
    /// Where refusals are recorded.
    audit: Arc<Mutex<AuditTrail>>,
    /// Refusals recorded within the window, with their uncounted repeats. A std mutex held
    /// for a map update only; entries leave when their window closes, so the map holds at
    /// most a window's worth of refusal kinds (and the per-node rate limit bounds those).
    batches: Arc<Mutex<HashMap<RefusalKind, RefusalBatch>>>,
}

impl Gate {
    /// A gate for a server with (`true`) or without mTLS.
    pub(crate) fn new(mtls: bool, audit: Arc<Mutex<AuditTrail>>) -> Self {
        Self {
            mtls,
            audit,
            batches: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Records the repeats of every refusal whose window has closed by `now`, one entry per
    /// refusal kind; called every second by the server.
    pub(crate) fn record_closed_refusal_batches(&self, now: Instant) {
        let mut closed = Vec::new();
        lock(&self.batches).retain(|kind, batch| {
            let open = now.saturating_duration_since(batch.recorded_at) < REFUSAL_AUDIT_WINDOW;
            if !open && batch.repeats > 0 {
                closed.push((kind.clone(), batch.repeats, std::mem::take(&mut batch.peer)));
            }
            open
        });
        for ((identity, rpc, reason), repeats, peer) in closed {
            tracing::warn!(rpc, %peer, %identity, repeats, %reason, "requests refused again");
            self.record_refusal(
                &identity,
                peer,
                rpc,
                format!(
                    "{reason} (refused {repeats} more times within {} s of the entry before)",
                    REFUSAL_AUDIT_WINDOW.as_secs()
                ),
            );
        }
    }

    fn record_refusal(&self, identity: &str, peer: String, rpc: &str, reason: String) {
        lock(&self.audit).record(
            identity,
            AuditEvent::AuthFailure {
                peer,
                rpc: rpc.to_owned(),
                reason,
            },
        );
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
        let kind = (identity, rpc, reason.to_owned());
        let now = Instant::now();
        {
            let mut batches = lock(&self.batches);
            if let Some(batch) = batches.get_mut(&kind) {
                if now.saturating_duration_since(batch.recorded_at) < REFUSAL_AUDIT_WINDOW {
                    batch.repeats += 1;
                    batch.peer = peer;
                    return;
                }
            }
        }
        // A new kind, or the window closed: record its repeats first, then this refusal.
        self.record_closed_refusal_batches(now);
        let (identity, rpc, reason) = kind;
        tracing::warn!(rpc, %peer, %identity, %reason, "request refused");
        self.record_refusal(&identity, peer.clone(), rpc, reason.clone());
        lock(&self.batches).insert(
            (identity, rpc, reason),
            RefusalBatch {
                recorded_at: now,
                repeats: 0,
                peer,
            },
        );
    }
}
