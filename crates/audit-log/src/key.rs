//! The coordinator's Ed25519 audit key: generation, owner-only PKCS#8 storage,
//! signing, and the public key auditors and nodes verify with.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

use crate::hex;

/// Permissions of a new key file: read and write for the owner only.
#[cfg(unix)]
const KEY_FILE_MODE: u32 = 0o600;

/// Why a key could not be created, loaded or parsed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing the key file failed.
    #[error("audit key file {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The key file is readable or writable by others than its owner.
    #[error(
        "audit key file {path} has mode {mode:o}; it must be accessible by its owner only (chmod 600)"
    )]
    TooPermissive {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The operating system's random generator failed.
    #[error("the system random generator failed while generating the audit key")]
    Generation,
    /// The file is not an Ed25519 PKCS#8 v2 document.
    #[error("audit key file {path} is not an Ed25519 PKCS#8 key")]
    Malformed {
        /// The key file.
        path: PathBuf,
    },
    /// A public key is not 64 lowercase hex characters.
    #[error("an audit public key must be 64 lowercase hex characters")]
    PublicKeyFormat,
}

/// The coordinator's signing key. Only the coordinator holds one.
pub struct AuditSigner {
    /// ring's key pair; the secret never leaves it.
    key_pair: Ed25519KeyPair,
}

impl fmt::Debug for AuditSigner {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Show only the public half so a debug print can never leak the secret.
        formatter
            .debug_struct("AuditSigner")
            .field("public_key", &self.public_key())
            .finish()
    }
}

impl AuditSigner {
    /// Builds a signer from a PKCS#8 document, for keys kept elsewhere than a file.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Option<Self> {
        Ed25519KeyPair::from_pkcs8(pkcs8)
            .ok()
            .map(|key_pair| AuditSigner { key_pair })
    }

    /// Generates a fresh key in memory (tests and benchmarks; production keys
    /// come from [`generate_signing_key`] so they survive restarts).
    pub fn generate_ephemeral() -> Result<Self, KeyError> {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| KeyError::Generation)?;
        Self::from_pkcs8(pkcs8.as_ref()).ok_or(KeyError::Generation)
    }

    /// The public key that verifies this signer's signatures.
    pub fn public_key(&self) -> AuditPublicKey {
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(self.key_pair.public_key().as_ref());
        AuditPublicKey(bytes)
    }

    /// Signs a message (Ed25519 is deterministic: no randomness needed).
    pub(crate) fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.key_pair.sign(message).as_ref().to_vec()
    }
}

/// An Ed25519 public key that verifies audit entries, heads and receipts.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AuditPublicKey(pub [u8; 32]);

impl fmt::Debug for AuditPublicKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "AuditPublicKey({})", hex::encode(&self.0))
    }
}

impl fmt::Display for AuditPublicKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&hex::encode(&self.0))
    }
}

impl AuditPublicKey {
    /// Parses the hex form written by `Display`, for example from a file given to an auditor.
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        hex::decode_digest(text.trim())
            .map(AuditPublicKey)
            .ok_or(KeyError::PublicKeyFormat)
    }

    /// Whether `signature` is this key's signature of `message`.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(message, signature)
            .is_ok()
    }
}

/// Generates a new signing key with the system's cryptographic generator and
/// stores it as PKCS#8 in a new file readable by its owner only.
///
/// Refuses to overwrite an existing file: replacing the key would orphan every
/// signature already in the log.
pub fn generate_signing_key(path: &Path) -> Result<AuditSigner, KeyError> {
    let io_error = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    let pkcs8 =
        Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| KeyError::Generation)?;
    let mut options = OpenOptions::new();
    // `create_new` refuses existing files and symlinks, and the mode applies at
    // creation, so the secret is never readable by others, not even briefly.
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(KEY_FILE_MODE);
    }
    let mut file = options.open(path).map_err(io_error)?;
    file.write_all(pkcs8.as_ref()).map_err(io_error)?;
    file.sync_all().map_err(io_error)?;
    AuditSigner::from_pkcs8(pkcs8.as_ref()).ok_or(KeyError::Generation)
}

/// Loads a signing key written by [`generate_signing_key`], refusing files
/// that others can read or write.
pub fn load_signing_key(path: &Path) -> Result<AuditSigner, KeyError> {
    let io_error = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    let metadata = fs::metadata(path).map_err(io_error)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::TooPermissive {
                path: path.to_owned(),
                mode,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = metadata;
    let pkcs8 = fs::read(path).map_err(io_error)?;
    AuditSigner::from_pkcs8(&pkcs8).ok_or_else(|| KeyError::Malformed {
        path: path.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_is_owner_only_and_reloads_to_the_same_public_key() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("audit.key");
        let signer = generate_signing_key(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let reloaded = load_signing_key(&path).unwrap();
        assert_eq!(signer.public_key(), reloaded.public_key());
        assert!(matches!(
            generate_signing_key(&path),
            Err(KeyError::Io { .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn world_readable_key_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("audit.key");
        generate_signing_key(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            load_signing_key(&path),
            Err(KeyError::TooPermissive { mode: 0o644, .. })
        ));
    }

    #[test]
    fn public_key_hex_round_trips_and_verifies() {
        let signer = AuditSigner::generate_ephemeral().unwrap();
        let public_key = AuditPublicKey::from_hex(&signer.public_key().to_string()).unwrap();
        let signature = signer.sign(b"message");
        assert!(public_key.verifies(b"message", &signature));
        assert!(!public_key.verifies(b"messagf", &signature));
        assert!(matches!(
            AuditPublicKey::from_hex("zz"),
            Err(KeyError::PublicKeyFormat)
        ));
    }
}
