//! A console visitor without a browser: HTTPS GETs with an operator's session cookie, over
//! TLS verified against the console's self-signed certificate, for end-to-end tests that read
//! what a console page says (the browser test covers the browser itself, log-in links, and
//! the JavaScript).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use veil_console::token::{ConsoleKey, ConsoleRole, TokenKind};

/// How long one page may take, connection included.
const PAGE_DEADLINE: Duration = Duration::from_secs(30);

/// An operator with a session on the console at `address`.
pub struct ConsoleVisitor {
    address: SocketAddr,
    cookie: String,
    /// Trusts the console's own self-signed certificate (`console-certificate.pem` in the
    /// state folder) and nothing else, as an operator who installed it would.
    tls: Arc<rustls::ClientConfig>,
}

impl ConsoleVisitor {
    /// A session for operator "olivia", signed with the console key in `state_dir` (what the
    /// log-in link's page would set), waiting until the console has written its key and its
    /// self-signed certificate there.
    pub async fn operator(state_dir: &Path, address: SocketAddr) -> Self {
        let key_path = state_dir.join(coordinator::console::CONSOLE_KEY_FILE);
        let certificate_path = state_dir.join("console-certificate.pem");
        let deadline = tokio::time::Instant::now() + PAGE_DEADLINE;
        let (key, certificate) = loop {
            if let Ok(bytes) = std::fs::read(&key_path)
                && let Ok(key) = ConsoleKey::from_bytes(&bytes)
                && let Ok(certificate) = CertificateDer::from_pem_file(&certificate_path)
            {
                break (key, certificate);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the console key {} or certificate {} never appeared",
                key_path.display(),
                certificate_path.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let mut roots = rustls::RootCertStore::empty();
        roots.add(certificate).unwrap();
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let session = key
            .issue(
                TokenKind::Session,
                ConsoleRole::Operator,
                "olivia",
                now,
                Duration::from_secs(3600),
                &ring::rand::SystemRandom::new(),
            )
            .unwrap();
        Self {
            address,
            cookie: format!("veil_session={session}"),
            tls: Arc::new(tls),
        }
    }

    /// The status code and body of `GET path`.
    pub async fn get(&self, path: &str) -> (u16, String) {
        tokio::time::timeout(PAGE_DEADLINE, self.exchange(path))
            .await
            .unwrap_or_else(|_| panic!("GET {path} took longer than {PAGE_DEADLINE:?}"))
    }

    async fn exchange(&self, path: &str) -> (u16, String) {
        let tcp = tokio::net::TcpStream::connect(self.address).await.unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(Arc::clone(&self.tls))
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
            .unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {}\r\nConnection: close\r\n\r\n",
            self.cookie
        );
        tls.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        // A TLS peer closing without close_notify is an error here; what was read counts.
        let _ = tls.read_to_end(&mut response).await;
        let response = String::from_utf8_lossy(&response).into_owned();
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("GET {path}: no status line in {response:?}"));
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default();
        (status, body)
    }
}
