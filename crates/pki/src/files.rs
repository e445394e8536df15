//! The on-disk layout of a member's TLS material, so the coordinator, nodes,
//! operator commands and the demo all find the same files: the federation
//! root `ca.pem`, the member's `<name>.pem` certificate and its owner-only
//! `<name>-key.pem` identity key, side by side in one folder.

use std::path::{Path, PathBuf};

use crate::authority::{CertificateRequest, FederationCa, IssuedCertificate, PkiError};
use crate::identity::{FederationRoot, IdentityKey};
use crate::revocation::RevocationList;
use crate::tls::{ClientTls, ServerTls, TlsError};

/// File name of the federation root certificate in a member folder.
pub const ROOT_FILE: &str = "ca.pem";
/// File name of the revocation list next to the CA.
pub const REVOCATIONS_FILE: &str = "revoked.txt";

/// Where one member's root, certificate and key live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberFiles {
    /// The federation root certificate.
    pub root: PathBuf,
    /// The member's certificate.
    pub certificate: PathBuf,
    /// The member's identity key (secret, mode 0600).
    pub key: PathBuf,
}

/// Loading a member's files failed; names the file.
#[derive(Debug, thiserror::Error)]
pub enum MemberFilesError {
    /// A file could not be read or parsed.
    #[error("{path}: {source}")]
    Pki {
        /// The file.
        path: PathBuf,
        /// Why.
        source: PkiError,
    },
    /// A certificate file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The files do not make a valid TLS identity.
    #[error("TLS identity from {certificate}: {source}")]
    Tls {
        /// The certificate file.
        certificate: PathBuf,
        /// Why.
        source: TlsError,
    },
}

impl MemberFiles {
    /// The standard layout for member `name` in `folder`.
    pub fn in_folder(folder: &Path, name: &str) -> Self {
        Self {
            root: folder.join(ROOT_FILE),
            certificate: folder.join(format!("{name}.pem")),
            key: folder.join(format!("{name}-key.pem")),
        }
    }

    /// Reads the three files.
    pub fn load(&self) -> Result<(FederationRoot, String, IdentityKey), MemberFilesError> {
        let root = FederationRoot::load(&self.root).map_err(|source| MemberFilesError::Pki {
            path: self.root.clone(),
            source,
        })?;
        let certificate_pem =
            std::fs::read_to_string(&self.certificate).map_err(|source| MemberFilesError::Io {
                path: self.certificate.clone(),
                source,
            })?;
        let key = IdentityKey::load(&self.key).map_err(|source| MemberFilesError::Pki {
            path: self.key.clone(),
            source,
        })?;
        Ok((root, certificate_pem, key))
    }

    /// The client side of mTLS for a node, operator or auditor.
    pub fn client(&self) -> Result<ClientTls, MemberFilesError> {
        let (root, certificate_pem, key) = self.load()?;
        ClientTls::new(&root, &certificate_pem, &key).map_err(|source| MemberFilesError::Tls {
            certificate: self.certificate.clone(),
            source,
        })
    }

    /// The server side of mTLS for the coordinator, checking `revocations`.
    pub fn server(&self, revocations: RevocationList) -> Result<ServerTls, MemberFilesError> {
        let (root, certificate_pem, key) = self.load()?;
        ServerTls::new(&root, &certificate_pem, &key, revocations).map_err(|source| {
            MemberFilesError::Tls {
                certificate: self.certificate.clone(),
                source,
            }
        })
    }

    /// Issues a certificate with a new key for `request` and writes the
    /// member folder: the root, the certificate, and the key (0600).
    pub fn issue_into(
        ca: &FederationCa,
        request: &CertificateRequest,
        folder: &Path,
    ) -> Result<(Self, IssuedCertificate), MemberFilesError> {
        let files = Self::in_folder(folder, &request.name);
        let pki = |path: &Path| {
            let path = path.to_owned();
            move |source| MemberFilesError::Pki { path, source }
        };
        std::fs::create_dir_all(folder).map_err(|source| MemberFilesError::Io {
            path: folder.to_owned(),
            source,
        })?;
        let (issued, key) = ca.issue_with_new_key(request).map_err(pki(folder))?;
        key.save(&files.key).map_err(pki(&files.key))?;
        for (path, pem) in [
            (&files.certificate, issued.certificate_pem.as_str()),
            (&files.root, ca.root().certificate_pem()),
        ] {
            std::fs::write(path, pem).map_err(|source| MemberFilesError::Io {
                path: path.clone(),
                source,
            })?;
        }
        Ok((files, issued))
    }
}
