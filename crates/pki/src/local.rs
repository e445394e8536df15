//! A throwaway federation CA in one folder, for local federations on one
//! machine: the demo, the end-to-end tests and the benchmarks. Production CAs
//! are made with `coordinator ca`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{
    CertificateRequest, FederationCa, ISSUED_FILE, IssuanceJournal, MemberFiles, MemberFilesError,
    PkiError, REVOCATIONS_FILE, RevocationError, RevocationList, Role, Validity,
};

/// How long a local federation's certificates stay valid: long enough for a
/// soak run, short enough that a forgotten folder is useless soon.
const LOCAL_VALIDITY: Duration = Duration::from_secs(7 * 86_400);

/// Why a local federation's CA or a member folder could not be made.
#[derive(Debug, thiserror::Error)]
pub enum LocalPkiError {
    /// The CA could not be created or saved.
    #[error(transparent)]
    Ca(#[from] PkiError),
    /// A member's folder could not be written.
    #[error(transparent)]
    Member(#[from] MemberFilesError),
    /// The issuance journal or the revocation list could not be used.
    #[error(transparent)]
    Journal(#[from] RevocationError),
}

/// A CA in `<dir>/ca`, with every member's folder beside it (`<dir>/<name>`).
pub struct LocalPki {
    /// The CA's key stays in memory too, so issuing needs no file reads.
    ca: FederationCa,
    dir: PathBuf,
    validity: Validity,
}

impl LocalPki {
    /// A new CA in `dir/ca`, and certificates valid for a week.
    pub fn create(dir: &Path) -> Result<Self, LocalPkiError> {
        let validity = Validity::starting_now(LOCAL_VALIDITY);
        let ca = FederationCa::create("veil-local", validity)?;
        ca.save(&dir.join("ca"))?;
        Ok(Self {
            ca,
            dir: dir.to_owned(),
            validity,
        })
    }

    /// The coordinator's folder, valid for 127.0.0.1 and localhost.
    pub fn coordinator(&self) -> Result<MemberFiles, LocalPkiError> {
        self.issue(CertificateRequest::coordinator(
            "coordinator",
            vec!["127.0.0.1".to_owned(), "localhost".to_owned()],
            self.validity,
        ))
    }

    /// A node's, operator's or auditor's folder.
    pub fn member(&self, role: Role, name: &str) -> Result<MemberFiles, LocalPkiError> {
        self.issue(CertificateRequest::member(role, name, self.validity))
    }

    /// The member folder of `name` (for a node's `tls_dir`).
    pub fn folder(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The CA's revocation list, for the coordinator to check.
    pub fn revocations(&self) -> Result<RevocationList, LocalPkiError> {
        Ok(RevocationList::open(
            self.dir.join("ca").join(REVOCATIONS_FILE),
        )?)
    }

    fn issue(&self, request: CertificateRequest) -> Result<MemberFiles, LocalPkiError> {
        let folder = self.dir.join(&request.name);
        let (files, issued) = MemberFiles::issue_into(&self.ca, &request, &folder)?;
        // As `coordinator ca issue` does: the coordinator audits it from the journal.
        IssuanceJournal::at(self.dir.join("ca").join(ISSUED_FILE)).record(&issued)?;
        Ok(files)
    }
}
