//! The node's long-term Ed25519 identity key: created on first run with a
//! cryptographic generator, kept owner-only in the node's state folder, and
//! used to sign secure-aggregation key advertisements so the coordinator
//! cannot substitute keys.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};

/// File name of the PKCS#8 identity key inside the state folder.
const IDENTITY_FILE: &str = "identity.ed25519.pk8";

/// The node's identity key pair.
#[derive(Clone)]
pub struct NodeIdentity {
    key: Arc<Ed25519KeyPair>,
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The public half only: the secret never reaches a log.
        f.debug_struct("NodeIdentity")
            .field("public_key", &hex(self.public_key().as_slice()))
            .finish()
    }
}

impl NodeIdentity {
    /// An identity from a key held elsewhere (the node's TLS key).
    pub fn from_key_pair(key: Ed25519KeyPair) -> Self {
        Self { key: Arc::new(key) }
    }

    /// Loads the key from `state_dir`, creating it (and the folder) on first run.
    pub fn load_or_create(state_dir: &Path) -> anyhow::Result<Self> {
        let path = state_dir.join(IDENTITY_FILE);
        let pkcs8 = if path.exists() {
            std::fs::read(&path)
                .with_context(|| format!("cannot read identity key {}", path.display()))?
        } else {
            create_state_dir(state_dir)?;
            let document = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
            write_owner_only(&path, document.as_ref())?;
            document.as_ref().to_vec()
        };
        let key = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|error| {
            anyhow::anyhow!(
                "identity key {} is not an Ed25519 PKCS#8 key: {error}",
                path.display()
            )
        })?;
        Ok(Self { key: Arc::new(key) })
    }

    /// The key pair, for signing.
    pub fn key_pair(&self) -> Arc<Ed25519KeyPair> {
        Arc::clone(&self.key)
    }

    /// The 32-byte public key the coordinator relays to peers.
    pub fn public_key(&self) -> [u8; 32] {
        let mut public = [0u8; 32];
        public.copy_from_slice(self.key.public_key().as_ref());
        public
    }
}

/// The default state folder of a node whose config does not name one.
pub fn default_state_dir(config_dir: &Path, node_id: &str) -> PathBuf {
    config_dir.join(format!("{node_id}.state"))
}

pub(crate) fn create_state_dir(state_dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("cannot create node state folder {}", state_dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(state_dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict {}", state_dir.display()))?;
    }
    Ok(())
}

/// Writes a secret file readable by its owner only, atomically (temp + rename)
/// so a crash never leaves half a key.
fn write_owner_only(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let temporary = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(&temporary)
        .with_context(|| format!("cannot create {}", temporary.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
        .with_context(|| format!("cannot move the identity key into {}", path.display()))?;
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_survives_a_restart_and_is_owner_only() {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = dir.path().join("node-a.state");
        let first = NodeIdentity::load_or_create(&state).expect("created");
        let second = NodeIdentity::load_or_create(&state).expect("loaded");
        assert_eq!(first.public_key(), second.public_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(state.join(IDENTITY_FILE))
                .expect("key file")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let other = NodeIdentity::load_or_create(&dir.path().join("node-b.state")).expect("b");
        assert_ne!(first.public_key(), other.public_key());
    }
}
