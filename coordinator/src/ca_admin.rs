//! The federation CA's commands (`coordinator ca init|issue|revoke`): `veil-pki` operations on
//! the CA folder, each returning the line the command prints. Issuances are journalled next to
//! the CA so the serving coordinator records them in its audit log.

use std::path::Path;
use std::time::Duration;

use veil_pki::{
    CertificateRequest, FederationCa, ISSUED_FILE, IssuanceJournal, MemberFiles, REVOCATIONS_FILE,
    RevocationList, RevocationReason, Role, Serial, Validity,
};

const SECONDS_PER_DAY: u64 = 86_400;

fn validity_days(days: u64) -> Validity {
    Validity::starting_now(Duration::from_secs(days.saturating_mul(SECONDS_PER_DAY)))
}

/// Creates the federation CA in a new folder.
pub fn init_ca(ca_dir: &Path, federation: &str, days: u64) -> anyhow::Result<String> {
    let ca = FederationCa::create(federation, validity_days(days))?;
    ca.save(ca_dir)?;
    Ok(format!(
        "created the CA of federation '{federation}' in {}",
        ca_dir.display()
    ))
}

/// What `ca issue` is asked to issue.
#[derive(Debug, Clone)]
pub struct IssueRequest {
    /// The member's role.
    pub role: Role,
    /// The member's name (a node's id).
    pub name: String,
    /// Host names a coordinator certificate is valid for (ignored for other roles).
    pub hosts: Vec<String>,
    /// Validity in days from now.
    pub days: u64,
}

/// Issues a certificate and a new key into the member's folder `out`, and journals it.
pub fn issue_member(ca_dir: &Path, request: IssueRequest, out: &Path) -> anyhow::Result<String> {
    let ca = FederationCa::load(ca_dir)?;
    let role = request.role;
    let certificate_request = if role == Role::Coordinator {
        CertificateRequest::coordinator(request.name, request.hosts, validity_days(request.days))
    } else {
        CertificateRequest::member(role, request.name, validity_days(request.days))
    };
    let (files, issued) = MemberFiles::issue_into(&ca, &certificate_request, out)?;
    // The coordinator records the issuance in its audit log from here.
    IssuanceJournal::at(ca_dir.join(ISSUED_FILE)).record(&issued)?;
    Ok(format!(
        "issued {role} '{}' serial {} -> {}",
        issued.name,
        issued.serial,
        files.certificate.display()
    ))
}

/// Revokes a certificate by serial; a serving coordinator refuses it from its next handshake.
pub fn revoke_member(
    ca_dir: &Path,
    serial: &Serial,
    reason: RevocationReason,
) -> anyhow::Result<String> {
    let list = RevocationList::open(ca_dir.join(REVOCATIONS_FILE))?;
    list.revoke(serial, reason)?;
    Ok(format!("revoked {serial} ({reason})"))
}
