//! mTLS for tonic: rustls server and client configurations over the
//! federation root, a client-certificate verifier that also honours the
//! revocation list and the Veil identity URI, an incoming-connection stream
//! for `Server::serve_with_incoming_shutdown`, and per-RPC identity lookup.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError,
    RootCertStore, ServerConfig, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::authority::{PkiError, unix_seconds};
use crate::identity::{
    AuthError, FederationRoot, IdentityKey, PeerIdentity, Role, authorize, ensure_not_revoked,
    identity_of_der, verify_certificate,
};
use crate::revocation::RevocationList;

/// Longest a client may take to complete its handshake; bounds how long a
/// silent connection holds one of the handshake slots.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at once; further connections wait in the
/// listener's backlog, so a flood of half-open connections cannot exhaust
/// memory or the runtime.
pub const MAX_CONCURRENT_HANDSHAKES: usize = 256;

/// Pause after a failed `accept` (for example out of file descriptors), so
/// the loop does not spin while the condition lasts.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Roles that connect to the coordinator as TLS clients.
const CLIENT_ROLES: [Role; 3] = [Role::Node, Role::Operator, Role::Auditor];

/// HTTP/2 is the only protocol gRPC speaks.
const ALPN_H2: &[u8] = b"h2";

/// Errors building TLS configurations.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// Our own certificate is not one the federation root vouches for.
    #[error("own certificate unusable: {0}")]
    OwnCertificate(#[source] AuthError),
    /// Our own certificate's role cannot be used on this side of TLS.
    #[error("a {0} certificate cannot be used here")]
    OwnRole(Role),
    /// The private key is not the one the certificate was issued for.
    #[error("the private key does not match the certificate")]
    KeyMismatch,
    /// rustls refused the configuration.
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built.
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The coordinator's side of mTLS: its server configuration and the
/// revocation list every connection and RPC is checked against.
#[derive(Debug, Clone)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
    revocations: RevocationList,
}

impl ServerTls {
    /// Builds the server configuration: TLS 1.3 only, HTTP/2, a coordinator
    /// certificate, and client certificates required, chained to `root`,
    /// not revoked and carrying a node, operator or auditor identity.
    pub fn new(
        root: &FederationRoot,
        certificate_pem: &str,
        key: &IdentityKey,
        revocations: RevocationList,
    ) -> Result<Self, TlsError> {
        let (certificate, identity) = own_certificate(root, certificate_pem, key)?;
        if !identity.role.is_server() {
            return Err(TlsError::OwnRole(identity.role));
        }
        let provider = ring_provider();
        let webpki =
            WebPkiClientVerifier::builder_with_provider(root_store(root)?, Arc::clone(&provider))
                .build()?;
        let verifier = Arc::new(VeilClientVerifier {
            webpki,
            revocations: revocations.clone(),
        });
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![certificate], key.private_key_der())?;
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(Self {
            config: Arc::new(config),
            revocations,
        })
    }

    /// The rustls configuration, for serving something other than tonic.
    pub fn rustls_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.config)
    }

    /// The revocation list this server checks.
    pub fn revocations(&self) -> &RevocationList {
        &self.revocations
    }
}

/// A member's side of mTLS: the federation root it trusts and the identity
/// it presents.
#[derive(Debug, Clone)]
pub struct ClientTls {
    root_pem: String,
    certificate_pem: String,
    /// The identity key PEM; tonic's `Identity` takes the key as PEM text.
    key_pem: String,
    config: Arc<ClientConfig>,
}

impl ClientTls {
    /// Builds the client configuration for a node, operator or auditor.
    pub fn new(
        root: &FederationRoot,
        certificate_pem: &str,
        key: &IdentityKey,
    ) -> Result<Self, TlsError> {
        let (certificate, identity) = own_certificate(root, certificate_pem, key)?;
        if identity.role.is_server() {
            return Err(TlsError::OwnRole(identity.role));
        }
        let mut config = ClientConfig::builder_with_provider(ring_provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(root_store(root)?)
            .with_client_auth_cert(vec![certificate], key.private_key_der())?;
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(Self {
            root_pem: root.certificate_pem().to_owned(),
            certificate_pem: certificate_pem.to_owned(),
            key_pem: key.to_pem()?,
            config: Arc::new(config),
        })
    }

    /// tonic's client TLS settings: trust only the federation root and
    /// present this member's certificate. Use with `Endpoint::tls_config`;
    /// the endpoint's host (or `domain_name`) must be one of the
    /// coordinator certificate's host names.
    pub fn tonic_config(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.root_pem))
            .identity(Identity::from_pem(&self.certificate_pem, &self.key_pem))
    }

    /// The rustls configuration (TLS 1.3, HTTP/2), for clients that do not
    /// go through tonic, such as the handshake benchmark.
    pub fn rustls_config(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.config)
    }
}

fn ring_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn root_store(root: &FederationRoot) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    store.add(root.certificate_der().clone())?;
    Ok(Arc::new(store))
}

/// Checks our own certificate before serving with it, so a wrong file shows
/// up at start-up rather than as peers' handshake failures.
fn own_certificate(
    root: &FederationRoot,
    certificate_pem: &str,
    key: &IdentityKey,
) -> Result<(CertificateDer<'static>, PeerIdentity), TlsError> {
    let certificate = CertificateDer::from_pem_slice(certificate_pem.as_bytes())
        .map_err(|error| PkiError::Pem(format!("certificate: {error}")))?;
    let claimed = identity_of_der(&certificate).map_err(TlsError::OwnCertificate)?;
    let identity = verify_certificate(
        root,
        &certificate,
        unix_seconds(SystemTime::now()),
        None,
        claimed.role,
    )
    .map_err(TlsError::OwnCertificate)?;
    if identity.ed25519_public_key != key.public_key() {
        return Err(TlsError::KeyMismatch);
    }
    Ok((certificate, identity))
}

/// webpki's client verification (chain to the root, validity period,
/// clientAuth usage) plus Veil's own: a well-formed identity URI of a client
/// role, an Ed25519 key, and a serial that is not revoked.
#[derive(Debug)]
struct VeilClientVerifier {
    webpki: Arc<dyn ClientCertVerifier>,
    revocations: RevocationList,
}

impl ClientCertVerifier for VeilClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.webpki.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.webpki
            .verify_client_cert(end_entity, intermediates, now)?;
        let identity = identity_of_der(end_entity).map_err(refusal)?;
        authorize(&identity, &CLIENT_ROLES).map_err(refusal)?;
        ensure_not_revoked(&self.revocations, &identity).map_err(refusal)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki
            .verify_tls12_signature(message, certificate, signature)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki
            .verify_tls13_signature(message, certificate, signature)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// Maps a Veil refusal onto the TLS alert the client will see.
fn refusal(error: AuthError) -> rustls::Error {
    match error {
        AuthError::Revoked { .. } => rustls::Error::InvalidCertificate(CertificateError::Revoked),
        other => {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(other))))
        }
    }
}

/// What the coordinator knows about an mTLS connection; tonic puts it in
/// every request's extensions, where [`peer_identity`] finds it.
#[derive(Debug, Clone)]
pub struct MtlsConnectInfo {
    remote_addr: Option<SocketAddr>,
    /// The identity verified at handshake; re-checked against the
    /// revocation list on every RPC before it is handed out.
    identity: PeerIdentity,
    revocations: RevocationList,
}

impl MtlsConnectInfo {
    /// The peer's address, for logs.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.remote_addr
    }

    /// The identity verified at the handshake, not re-checked against the revocation list:
    /// for keying per-member limits, never for authorising ([`peer_identity`] does that).
    pub fn identity(&self) -> &PeerIdentity {
        &self.identity
    }
}

/// A server-side TLS connection whose client certificate passed
/// verification, with the identity it carries.
#[derive(Debug)]
pub struct MtlsStream {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    info: MtlsConnectInfo,
}

impl MtlsStream {
    fn new(
        inner: tokio_rustls::server::TlsStream<TcpStream>,
        revocations: RevocationList,
    ) -> Result<Self, AuthError> {
        let (tcp, session) = inner.get_ref();
        let leaf = session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .ok_or(AuthError::NoCertificate)?;
        let identity = identity_of_der(leaf)?;
        let info = MtlsConnectInfo {
            remote_addr: tcp.peer_addr().ok(),
            identity,
            revocations,
        };
        Ok(Self { inner, info })
    }

    /// The verified peer's identity as of the handshake.
    pub fn handshake_identity(&self) -> &PeerIdentity {
        &self.info.identity
    }
}

impl Connected for MtlsStream {
    type ConnectInfo = MtlsConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for MtlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(context, buffer)
    }
}

impl AsyncWrite for MtlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(context, buffer)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(context, buffers)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(context)
    }
}

/// A hint for the most common transport mistake, given the address dialled
/// and the connection error (its `Debug` form, which carries the causes):
/// an `http://` address against a coordinator that speaks TLS fails as an
/// HTTP/2 protocol error or a closed connection, and an `https://` address
/// against a plaintext coordinator as a TLS record it cannot read.
pub fn scheme_mismatch_hint(address: &str, error: &str) -> Option<&'static str> {
    let error = error.to_ascii_lowercase();
    let mentions = |needles: &[&str]| needles.iter().any(|needle| error.contains(needle));
    if address.starts_with("http://")
        && mentions(&[
            "h2 protocol error",
            "connection reset",
            "broken pipe",
            "connection closed",
            "unexpected eof",
            "frame",
        ])
    {
        return Some(
            "the coordinator may require TLS: use an https:// address with the federation's TLS folder",
        );
    }
    if address.starts_with("https://")
        && mentions(&[
            "invalidcontenttype",
            "corrupt message",
            "wrong version number",
            "invalid content type",
        ])
    {
        return Some(
            "the coordinator may be running without TLS (--insecure-dev): use an http:// address",
        );
    }
    None
}

/// Accepts connections on `listener` and yields those whose mTLS handshake
/// succeeds, for `tonic::transport::Server::serve_with_incoming_shutdown`.
///
/// Handshakes run concurrently (at most [`MAX_CONCURRENT_HANDSHAKES`], each
/// within [`HANDSHAKE_TIMEOUT`]); a failed one is logged with the peer's
/// address and the reason, and skipped. Accepting stops when the server
/// drops the stream. Must be called inside a Tokio runtime: the accept loop
/// runs as a spawned task.
pub fn tls_incoming(
    listener: TcpListener,
    server: &ServerTls,
) -> impl Stream<Item = Result<MtlsStream, io::Error>> + Send + 'static {
    let (sender, receiver) = mpsc::channel(MAX_CONCURRENT_HANDSHAKES);
    tokio::spawn(accept_loop(
        listener,
        TlsAcceptor::from(server.rustls_config()),
        server.revocations.clone(),
        sender,
    ));
    ReceiverStream::new(receiver)
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    revocations: RevocationList,
    sender: mpsc::Sender<Result<MtlsStream, io::Error>>,
) {
    let handshake_slots = Arc::new(Semaphore::new(MAX_CONCURRENT_HANDSHAKES));
    loop {
        let slot = tokio::select! {
            () = sender.closed() => return,
            slot = Arc::clone(&handshake_slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                // The semaphore is never closed; stop rather than spin if it were.
                Err(_) => return,
            },
        };
        let (tcp, peer) = tokio::select! {
            () = sender.closed() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
                    continue;
                }
            },
        };
        // gRPC messages are small and latency-bound; Nagle would delay them.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, %error, "could not disable Nagle's algorithm");
        }
        let acceptor = acceptor.clone();
        let revocations = revocations.clone();
        let sender = sender.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => MtlsStream::new(tls, revocations),
                Ok(Err(error)) => {
                    tracing::warn!(%peer, %error, "TLS handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::warn!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            match stream {
                Ok(stream) => {
                    let identity = stream.handshake_identity();
                    tracing::debug!(%peer, role = %identity.role, name = %identity.name, "mTLS peer connected");
                    // A send error means the server is shutting down.
                    let _ = sender.send(Ok(stream)).await;
                }
                Err(error) => tracing::warn!(%peer, %error, "TLS peer refused"),
            }
        });
    }
}

/// The authenticated identity behind a request, re-checked against the
/// revocation list so a certificate revoked mid-connection is refused on
/// its next RPC.
pub fn peer_identity<T>(request: &tonic::Request<T>) -> Result<PeerIdentity, AuthError> {
    let info = request
        .extensions()
        .get::<MtlsConnectInfo>()
        .ok_or(AuthError::NoCertificate)?;
    ensure_not_revoked(&info.revocations, &info.identity)?;
    Ok(info.identity.clone())
}

/// The address of the peer behind a request on an mTLS connection, for the
/// audit record of an authentication or authorisation failure. (tonic's own
/// `Request::remote_addr` does not know Veil's connection type.)
pub fn peer_address<T>(request: &tonic::Request<T>) -> Option<SocketAddr> {
    request
        .extensions()
        .get::<MtlsConnectInfo>()
        .and_then(MtlsConnectInfo::remote_addr)
}

impl From<AuthError> for tonic::Status {
    /// Failed authentication is `Unauthenticated`; an authenticated member
    /// acting beyond its role or name is `PermissionDenied`; an unreadable
    /// revocation list is `Unavailable` (fail closed, retry later).
    fn from(error: AuthError) -> Self {
        let message = error.to_string();
        match error {
            AuthError::WrongRole { .. } | AuthError::NotSelf { .. } => {
                tonic::Status::permission_denied(message)
            }
            AuthError::RevocationUnavailable(_) => tonic::Status::unavailable(message),
            AuthError::NoCertificate
            | AuthError::BadCertificate(_)
            | AuthError::BadSan(_)
            | AuthError::NotEd25519
            | AuthError::Revoked { .. } => tonic::Status::unauthenticated(message),
        }
    }
}
