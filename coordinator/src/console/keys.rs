//! The console's secrets and its web certificate: the HMAC key log-in links
//! and sessions are signed with (random from the operating system, kept
//! owner-only in the state folder like the audit signing key), the link
//! `console-login` prints, and the TLS configuration.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use ring::rand::SystemRandom;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use veil_console::token::{ConsoleKey, ConsoleRole, TokenKind};

use super::ConsoleIdentity;

/// The console's HMAC key in the state folder (secret, mode 0600).
pub const CONSOLE_KEY_FILE: &str = "console-signing.key";
/// The self-signed web certificate the console creates when given none.
const SELF_SIGNED_CERTIFICATE_FILE: &str = "console-certificate.pem";
/// Its private key (secret, mode 0600).
const SELF_SIGNED_KEY_FILE: &str = "console-key.pem";

/// Writes `bytes` to a new owner-only file; `false` if it already existed.
fn create_owner_only(path: &Path, bytes: &[u8]) -> anyhow::Result<bool> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match file {
        Ok(mut file) => {
            file.write_all(bytes)
                .and_then(|()| file.sync_all())
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(true)
        }
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(error) => Err(error).with_context(|| format!("creating {}", path.display())),
    }
}

/// The console key of `state_dir`, created on first use. `serve` and
/// `console-login` may both create it; whichever comes second reads it.
pub(super) fn load_or_create_key(state_dir: &Path) -> anyhow::Result<ConsoleKey> {
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("creating the state folder {}", state_dir.display()))?;
    let path = state_dir.join(CONSOLE_KEY_FILE);
    let fresh = ConsoleKey::generate_bytes(&SystemRandom::new())?;
    create_owner_only(&path, &fresh)?;
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    ConsoleKey::from_bytes(&bytes).with_context(|| format!("console key {}", path.display()))
}

/// `8h`, `30m`, `90s`, `1d` or plain seconds.
pub fn parse_validity(text: &str) -> anyhow::Result<Duration> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let number: u64 = number
        .parse()
        .with_context(|| format!("'{text}' is not a duration like 8h, 30m or 90s"))?;
    let seconds_per = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => bail!("unknown unit '{other}' in '{text}': use s, m, h or d"),
    };
    Ok(Duration::from_secs(number.saturating_mul(seconds_per)))
}

/// A one-time log-in link to the console at `console_url` for `name` in
/// `role`, valid for `valid`, signed with `state_dir`'s console key.
pub fn login_link(
    state_dir: &Path,
    console_url: &str,
    role: ConsoleRole,
    name: &str,
    valid: Duration,
) -> anyhow::Result<String> {
    let key = load_or_create_key(state_dir)?;
    let now = super::now_unix_s();
    let token = key.issue(
        TokenKind::Login,
        role,
        name,
        now,
        valid,
        &SystemRandom::new(),
    )?;
    Ok(format!(
        "{}/login?token={token}",
        console_url.trim_end_matches('/')
    ))
}

/// The console's TLS configuration: TLS 1.3, HTTP/1.1, no client
/// certificates (people log in with links, not certificates).
pub(super) fn server_tls(
    identity: &ConsoleIdentity,
    state_dir: &Path,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let (certificate_path, key_path) = match identity {
        ConsoleIdentity::Files { certificate, key } => (certificate.clone(), key.clone()),
        ConsoleIdentity::SelfSigned { hosts } => {
            let certificate = state_dir.join(SELF_SIGNED_CERTIFICATE_FILE);
            let key = state_dir.join(SELF_SIGNED_KEY_FILE);
            if !key.exists() {
                create_self_signed(hosts, &certificate, &key)?;
            }
            (certificate, key)
        }
    };
    let chain = CertificateDer::pem_file_iter(&certificate_path)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .map_err(|error| anyhow::anyhow!("{}: {error}", certificate_path.display()))?;
    if chain.is_empty() {
        bail!("{} holds no certificate", certificate_path.display());
    }
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|error| anyhow::anyhow!("{}: {error}", key_path.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .with_context(|| format!("console certificate {}", certificate_path.display()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A self-signed ECDSA P-256 certificate for `hosts`, valid for a year.
fn create_self_signed(hosts: &[String], certificate: &Path, key: &Path) -> anyhow::Result<()> {
    let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .context("generating the console's certificate key")?;
    let mut params = rcgen::CertificateParams::new(hosts.to_vec())
        .context("the console certificate's host names")?;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(365);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Veil console");
    let issued = params
        .self_signed(&key_pair)
        .context("signing the console's certificate")?;
    create_owner_only(key, key_pair.serialize_pem().as_bytes())?;
    std::fs::write(certificate, issued.pem())
        .with_context(|| format!("writing {}", certificate.display()))?;
    tracing::info!(
        certificate = %certificate.display(),
        "created a self-signed console certificate; browsers will ask to trust it"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validities_take_a_unit() {
        assert_eq!(parse_validity("8h").unwrap(), Duration::from_secs(8 * 3600));
        assert_eq!(parse_validity("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_validity("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_validity("1d").unwrap(), Duration::from_secs(86_400));
        assert!(parse_validity("8 hours").is_err());
        assert!(parse_validity("h").is_err());
        assert!(parse_validity("").is_err());
    }

    #[test]
    fn the_key_is_created_once_owner_only_and_signs_links_the_server_accepts() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let link = login_link(
            dir.path(),
            "https://console.example:8443/",
            ConsoleRole::Auditor,
            "ada",
            Duration::from_secs(3600),
        )
        .unwrap();
        let token = link
            .strip_prefix("https://console.example:8443/login?token=")
            .unwrap();
        let mode = std::fs::metadata(dir.path().join(CONSOLE_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // The server, loading the same file later, accepts the link.
        let key = load_or_create_key(dir.path()).unwrap();
        let claims = key
            .verify(token, TokenKind::Login, super::super::now_unix_s())
            .unwrap();
        assert_eq!(claims.role, ConsoleRole::Auditor);
        assert_eq!(claims.name, "ada");
    }

    #[test]
    fn a_self_signed_certificate_makes_a_tls_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let identity = ConsoleIdentity::SelfSigned {
            hosts: vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
        };
        server_tls(&identity, dir.path()).unwrap();
        // Again, from the files now present.
        server_tls(&identity, dir.path()).unwrap();
    }
}
