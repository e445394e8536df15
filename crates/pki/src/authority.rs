//! The federation certificate authority: creating it, keeping it in a
//! directory, and issuing role certificates bound to members' Ed25519 keys.

use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::SecureRandom as _;
use rustls::pki_types::CertificateDer;

use crate::identity::{
    Ed25519PublicKey, FederationRoot, IdentityKey, Role, Serial, identity_uri, validate_name,
    verify_certificate,
};

/// How far `not_before` is backdated by [`Validity::starting_now`], so a
/// member whose clock runs slightly behind the CA's can use a fresh certificate.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(5 * 60);

/// Organisation name in every subject, so a Veil certificate is recognisable
/// in generic tools.
const ORGANISATION: &str = "Veil federation";

/// Serial length in bytes; 16 random bytes leave 126 bits of entropy after
/// the two fixed bits below.
const SERIAL_LEN: usize = 16;

/// File names inside a CA directory.
const CA_CERTIFICATE_FILE: &str = "ca.pem";
const CA_KEY_FILE: &str = "ca-key.pem";
const CA_NAME_FILE: &str = "federation-name";

/// Errors creating, storing or using the CA, and reading keys and certificates.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A member or federation name outside `[A-Za-z0-9._-]{1,64}`.
    #[error("invalid name {0:?}: use 1 to 64 of A-Z a-z 0-9 . _ - (not starting with a dot)")]
    InvalidName(String),
    /// A role name that is not coordinator, node, operator or auditor.
    #[error("unknown role {0:?}")]
    UnknownRole(String),
    /// A serial that is not 1 to 20 bytes of hex.
    #[error("invalid certificate serial {0:?}")]
    InvalidSerial(String),
    /// `not_after` is not after `not_before`.
    #[error("validity period is empty")]
    EmptyValidity,
    /// A coordinator certificate without host names, or a client role with some.
    #[error("{role} certificates {expectation}")]
    HostsForRole {
        /// The role requested.
        role: Role,
        /// What that role needs.
        expectation: &'static str,
    },
    /// A host name that is neither an IP address nor a valid DNS name.
    #[error("invalid host name {0:?}")]
    InvalidHost(String),
    /// The operating system's random generator failed.
    #[error("the system random generator failed")]
    KeyGeneration,
    /// A PEM file or key did not have the expected content.
    #[error("malformed PEM: {0}")]
    Pem(String),
    /// A certificate could not be parsed or used as a trust anchor.
    #[error("unusable certificate: {0}")]
    Certificate(webpki::Error),
    /// The CA directory's key, name and certificate do not belong together.
    #[error("CA in {0} is inconsistent: its key and name do not reproduce its certificate")]
    CaMismatch(PathBuf),
    /// rcgen refused to build a certificate.
    #[error("certificate generation failed: {0}")]
    Generation(#[from] rcgen::Error),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// When a certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// First instant the certificate is valid.
    pub not_before: SystemTime,
    /// Last instant the certificate is valid.
    pub not_after: SystemTime,
}

impl Validity {
    /// Valid from now (less [`CLOCK_SKEW_ALLOWANCE`]) for `lifetime`.
    pub fn starting_now(lifetime: Duration) -> Self {
        let now = SystemTime::now();
        Self {
            not_before: now.checked_sub(CLOCK_SKEW_ALLOWANCE).unwrap_or(now),
            not_after: now + lifetime,
        }
    }

    fn apply(self, params: &mut CertificateParams) -> Result<(), PkiError> {
        if self.not_after <= self.not_before {
            return Err(PkiError::EmptyValidity);
        }
        params.not_before = self.not_before.into();
        params.not_after = self.not_after.into();
        Ok(())
    }
}

/// What to certify: a role, a name, a validity period and, for the
/// coordinator only, the host names and addresses it serves on.
#[derive(Debug, Clone)]
pub struct CertificateRequest {
    /// The member's role.
    pub role: Role,
    /// The member's name within the role.
    pub name: String,
    /// When the certificate is valid.
    pub validity: Validity,
    /// DNS names and IP addresses of the coordinator; empty for other roles.
    pub hosts: Vec<String>,
}

impl CertificateRequest {
    /// A client certificate for a node, operator or auditor.
    pub fn member(role: Role, name: impl Into<String>, validity: Validity) -> Self {
        Self {
            role,
            name: name.into(),
            validity,
            hosts: Vec::new(),
        }
    }

    /// The coordinator's server certificate, valid for `hosts`
    /// (for example `localhost` and `127.0.0.1`).
    pub fn coordinator(name: impl Into<String>, hosts: Vec<String>, validity: Validity) -> Self {
        Self {
            role: Role::Coordinator,
            name: name.into(),
            validity,
            hosts,
        }
    }
}

/// A certificate the CA issued.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    /// The certificate as PEM, for files and tonic.
    pub certificate_pem: String,
    /// The certificate as DER, for relaying to peers.
    pub certificate_der: CertificateDer<'static>,
    /// Its serial, the handle for revocation.
    pub serial: Serial,
    /// The role it grants.
    pub role: Role,
    /// The member name it binds.
    pub name: String,
    /// The end of its validity, for the issuance journal (and the console's
    /// federation page, which shows when each certificate expires).
    pub not_after: SystemTime,
}

/// The federation's certificate authority. Its key signs every member
/// certificate; whoever holds the CA directory controls enrolment.
pub struct FederationCa {
    name: String,
    /// Parameters the issuer is rebuilt from; the subject must match the
    /// certificate's byte for byte, which is why it is derived only from `name`.
    params: CertificateParams,
    key: KeyPair,
    root: FederationRoot,
}

impl std::fmt::Debug for FederationCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FederationCa")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl FederationCa {
    /// Creates a new CA named `name` with a fresh Ed25519 key.
    pub fn create(name: &str, validity: Validity) -> Result<Self, PkiError> {
        validate_name(name)?;
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
        let mut params = ca_params(name);
        validity.apply(&mut params)?;
        params.serial_number = Some(random_serial()?);
        let certificate = params.self_signed(&key)?;
        let root = FederationRoot::from_pem(&certificate.pem())?;
        Ok(Self {
            name: name.to_owned(),
            params,
            key,
            root,
        })
    }

    /// Writes the CA to `directory` (created if missing): `ca.pem`, the key
    /// `ca-key.pem` readable by its owner only, and `federation-name`.
    pub fn save(&self, directory: &Path) -> Result<(), PkiError> {
        std::fs::create_dir_all(directory).map_err(|source| PkiError::Io {
            path: directory.to_owned(),
            source,
        })?;
        write_private_file(
            &directory.join(CA_KEY_FILE),
            self.key.serialize_pem().as_bytes(),
        )?;
        write_public_file(
            &directory.join(CA_CERTIFICATE_FILE),
            self.root.certificate_pem().as_bytes(),
        )?;
        write_public_file(&directory.join(CA_NAME_FILE), self.name.as_bytes())
    }

    /// Reads a CA written by [`FederationCa::save`] and checks that its key
    /// and name reproduce certificates that chain to its certificate.
    pub fn load(directory: &Path) -> Result<Self, PkiError> {
        let read = |file: &str| {
            let path = directory.join(file);
            std::fs::read_to_string(&path).map_err(|source| PkiError::Io { path, source })
        };
        let name = read(CA_NAME_FILE)?.trim().to_owned();
        validate_name(&name)?;
        let key = KeyPair::from_pem(&read(CA_KEY_FILE)?)?;
        let root = FederationRoot::from_pem(&read(CA_CERTIFICATE_FILE)?)?;
        let ca = Self {
            params: ca_params(&name),
            name,
            key,
            root,
        };
        if !ca.reproduces_root()? {
            return Err(PkiError::CaMismatch(directory.to_owned()));
        }
        Ok(ca)
    }

    /// Issues a throwaway certificate and verifies it against the stored root:
    /// a wrong key or a renamed federation would otherwise only show when
    /// members fail to connect.
    fn reproduces_root(&self) -> Result<bool, PkiError> {
        let probe_key = IdentityKey::generate()?;
        let request = CertificateRequest::member(
            Role::Node,
            "consistency-probe",
            Validity::starting_now(Duration::from_secs(3600)),
        );
        let probe = self.issue(&request, &probe_key.public_key())?;
        let now = unix_seconds(SystemTime::now());
        Ok(verify_certificate(&self.root, &probe.certificate_der, now, None, Role::Node).is_ok())
    }

    /// The federation's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The CA certificate every member trusts.
    pub fn root(&self) -> &FederationRoot {
        &self.root
    }

    /// Issues a certificate binding `request`'s role and name to `public_key`.
    /// The member keeps its private key; only the public key reaches the CA.
    pub fn issue(
        &self,
        request: &CertificateRequest,
        public_key: &Ed25519PublicKey,
    ) -> Result<IssuedCertificate, PkiError> {
        validate_name(&request.name)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = subject(&request.name, Some(request.role));
        request.validity.apply(&mut params)?;
        let serial = random_serial()?;
        params.serial_number = Some(serial.clone());
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        params.subject_alt_names = vec![SanType::URI(
            identity_uri(request.role, &request.name).try_into()?,
        )];
        match (request.role.is_server(), request.hosts.is_empty()) {
            (true, false) => {
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
                for host in &request.hosts {
                    params.subject_alt_names.push(host_name(host)?);
                }
            }
            (false, true) => {
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            }
            (true, true) => {
                return Err(PkiError::HostsForRole {
                    role: request.role,
                    expectation: "need at least one host name",
                });
            }
            (false, false) => {
                return Err(PkiError::HostsForRole {
                    role: request.role,
                    expectation: "take no host names",
                });
            }
        }
        let issuer = Issuer::from_params(&self.params, &self.key);
        let certificate = params.signed_by(public_key, &issuer)?;
        Ok(IssuedCertificate {
            certificate_pem: certificate.pem(),
            certificate_der: certificate.der().clone(),
            serial: Serial::from_bytes(&serial.to_bytes()),
            role: request.role,
            name: request.name.clone(),
            not_after: request.validity.not_after,
        })
    }

    /// Generates a key for the member and issues its certificate: for the
    /// demo and for members who let the CA operator generate their key.
    pub fn issue_with_new_key(
        &self,
        request: &CertificateRequest,
    ) -> Result<(IssuedCertificate, IdentityKey), PkiError> {
        let key = IdentityKey::generate()?;
        let certificate = self.issue(request, &key.public_key())?;
        Ok((certificate, key))
    }
}

/// The CA's parameters except validity and serial, which the issuer does not use.
fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = subject(name, None);
    // Path length 0: the CA signs members directly, never intermediate CAs.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn subject(name: &str, role: Option<Role>) -> DistinguishedName {
    let mut subject = DistinguishedName::new();
    subject.push(DnType::OrganizationName, ORGANISATION);
    if let Some(role) = role {
        subject.push(DnType::OrganizationalUnitName, role.as_str());
    }
    subject.push(DnType::CommonName, name);
    subject
}

fn host_name(host: &str) -> Result<SanType, PkiError> {
    if let Ok(address) = host.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(address));
    }
    rustls::pki_types::DnsName::try_from(host)
        .map_err(|_| PkiError::InvalidHost(host.to_owned()))?;
    Ok(SanType::DnsName(host.try_into()?))
}

/// A random positive serial with no leading zero byte, so its DER encoding
/// is exactly these bytes and its hex form is stable.
fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; SERIAL_LEN];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| PkiError::KeyGeneration)?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

pub(crate) fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// Writes a secret file: created with mode 0600 so it is never readable by
/// others, even for an instant, and flushed to disk before returning.
pub(crate) fn write_private_file(path: &Path, contents: &[u8]) -> Result<(), PkiError> {
    write_file(path, contents, 0o600)
}

fn write_public_file(path: &Path, contents: &[u8]) -> Result<(), PkiError> {
    write_file(path, contents, 0o644)
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    let io_error = |source| PkiError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(io_error)?;
    // `mode` applies only on creation; an existing file keeps its old mode.
    use std::os::unix::fs::PermissionsExt as _;
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io_error)?;
    file.write_all(contents).map_err(io_error)?;
    file.sync_all().map_err(io_error)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn year() -> Validity {
        Validity::starting_now(Duration::from_secs(365 * 24 * 3600))
    }

    #[test]
    fn saved_ca_reloads_and_keeps_issuing_verifiable_certificates() {
        let directory = tempfile::tempdir().expect("tempdir");
        let ca = FederationCa::create("test-federation", year()).expect("create");
        ca.save(directory.path()).expect("save");
        let key_mode = std::fs::metadata(directory.path().join(CA_KEY_FILE))
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(key_mode & 0o777, 0o600);

        let reloaded = FederationCa::load(directory.path()).expect("load");
        let (issued, key) = reloaded
            .issue_with_new_key(&CertificateRequest::member(Role::Node, "n1", year()))
            .expect("issue");
        let identity = verify_certificate(
            ca.root(),
            &issued.certificate_der,
            unix_seconds(SystemTime::now()),
            None,
            Role::Node,
        )
        .expect("verifies against the original root");
        assert_eq!(identity.name, "n1");
        assert_eq!(identity.serial, issued.serial);
        assert_eq!(identity.ed25519_public_key, key.public_key());
    }

    #[test]
    fn load_refuses_a_ca_directory_whose_key_was_swapped() {
        let directory = tempfile::tempdir().expect("tempdir");
        FederationCa::create("fed-a", year())
            .expect("create")
            .save(directory.path())
            .expect("save");
        let other = tempfile::tempdir().expect("tempdir");
        FederationCa::create("fed-a", year())
            .expect("create")
            .save(other.path())
            .expect("save");
        std::fs::copy(
            other.path().join(CA_KEY_FILE),
            directory.path().join(CA_KEY_FILE),
        )
        .expect("copy");
        assert!(matches!(
            FederationCa::load(directory.path()),
            Err(PkiError::CaMismatch(_))
        ));
    }

    #[test]
    fn requests_are_checked_before_signing() {
        let ca = FederationCa::create("fed", year()).expect("create");
        let key = IdentityKey::generate().expect("key").public_key();
        let check = |request: CertificateRequest| ca.issue(&request, &key).map(|_| ());
        assert!(matches!(
            check(CertificateRequest::member(Role::Node, "bad name", year())),
            Err(PkiError::InvalidName(_))
        ));
        assert!(matches!(
            check(CertificateRequest::coordinator("c", Vec::new(), year())),
            Err(PkiError::HostsForRole { .. })
        ));
        let mut with_hosts = CertificateRequest::member(Role::Operator, "op", year());
        with_hosts.hosts.push("localhost".into());
        assert!(matches!(
            check(with_hosts),
            Err(PkiError::HostsForRole { .. })
        ));
        let empty = Validity {
            not_before: SystemTime::now(),
            not_after: SystemTime::now() - Duration::from_secs(1),
        };
        assert!(matches!(
            check(CertificateRequest::member(Role::Node, "n", empty)),
            Err(PkiError::EmptyValidity)
        ));
        assert!(matches!(
            check(CertificateRequest::coordinator(
                "c",
                vec!["not a host!".into()],
                year()
            )),
            Err(PkiError::InvalidHost(_))
        ));
    }

    #[test]
    fn serials_are_random_and_canonical() {
        let first = random_serial().expect("serial").to_bytes();
        let second = random_serial().expect("serial").to_bytes();
        assert_ne!(first, second);
        assert_eq!(first.len(), SERIAL_LEN);
        assert_eq!(first[0] & 0xc0, 0x40);
    }
}
