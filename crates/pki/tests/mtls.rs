//! End-to-end mTLS over real loopback sockets: a tonic server behind
//! `tls_incoming`, members of each role calling it, and every kind of
//! certificate the federation must refuse; plus peer-certificate checks
//! outside TLS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tempfile::TempDir;
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Server};
use tonic::{Code, Request, Response, Status};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use veil_pki::{
    AuthError, CertificateRequest, ClientTls, FederationCa, FederationRoot, IdentityKey,
    IssuedCertificate, PeerIdentity, RevocationList, RevocationReason, Role, ServerTls, Validity,
    authorize, peer_address, peer_identity, tls_incoming, verify_certificate,
    verify_node_certificate,
};

const DAY: Duration = Duration::from_secs(24 * 3600);

fn a_year() -> Validity {
    Validity::starting_now(365 * DAY)
}

fn expired() -> Validity {
    let now = SystemTime::now();
    Validity {
        not_before: now - 2 * DAY,
        not_after: now - DAY,
    }
}

fn not_yet_valid() -> Validity {
    let now = SystemTime::now();
    Validity {
        not_before: now + DAY,
        not_after: now + 2 * DAY,
    }
}

fn now_unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A member's certificate and key, as files would hold them.
struct Member {
    certificate: IssuedCertificate,
    key: IdentityKey,
}

impl Member {
    fn key_pem(&self) -> String {
        self.key.to_pem().expect("key pem")
    }

    fn pem_pair(&self) -> PemPair {
        PemPair {
            certificate_pem: self.certificate.certificate_pem.clone(),
            key_pem: self.key_pem(),
        }
    }
}

/// A certificate and its key as PEM text, whether or not the CA would issue it.
struct PemPair {
    certificate_pem: String,
    key_pem: String,
}

/// A CA directory with a revocation list and a coordinator certificate.
struct Federation {
    directory: TempDir,
    ca: FederationCa,
    revocations_path: std::path::PathBuf,
    server: ServerTls,
}

impl Federation {
    fn new() -> Self {
        let directory = tempfile::tempdir().expect("tempdir");
        let ca = FederationCa::create("test-federation", a_year()).expect("create CA");
        ca.save(directory.path()).expect("save CA");
        let revocations_path = directory.path().join("revoked.txt");
        let revocations = RevocationList::open(&revocations_path).expect("open revocations");
        let coordinator = issue(
            &ca,
            CertificateRequest::coordinator(
                "coordinator",
                vec!["localhost".into(), "127.0.0.1".into()],
                a_year(),
            ),
        );
        let server = ServerTls::new(
            ca.root(),
            &coordinator.certificate.certificate_pem,
            &coordinator.key,
            revocations,
        )
        .expect("server TLS");
        Self {
            directory,
            ca,
            revocations_path,
            server,
        }
    }

    fn member(&self, role: Role, name: &str, validity: Validity) -> Member {
        issue(&self.ca, CertificateRequest::member(role, name, validity))
    }

    fn client(&self, member: &Member) -> ClientTls {
        ClientTls::new(
            self.ca.root(),
            &member.certificate.certificate_pem,
            &member.key,
        )
        .expect("client TLS")
    }

    /// A separate handle on the same file, as the CA operator's tool would have.
    fn revoke(&self, serial: &veil_pki::Serial) {
        RevocationList::open(&self.revocations_path)
            .expect("open")
            .revoke(serial, RevocationReason::KeyCompromise)
            .expect("revoke");
    }
}

fn issue(ca: &FederationCa, request: CertificateRequest) -> Member {
    let (certificate, key) = ca.issue_with_new_key(&request).expect("issue");
    Member { certificate, key }
}

/// Test service: answers `Check` with the caller's identity in response
/// metadata, after authorising the roles listed (comma-separated) in the
/// request's `service` field.
struct WhoAmI;

#[tonic::async_trait]
impl Health for WhoAmI {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let identity = peer_identity(&request)?;
        let address = peer_address(&request).ok_or_else(|| Status::internal("no peer address"))?;
        if !address.ip().is_loopback() {
            return Err(Status::internal("peer address is not loopback"));
        }
        let allowed = request
            .get_ref()
            .service
            .split(',')
            .map(|role| role.parse::<Role>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| Status::invalid_argument(error.to_string()))?;
        authorize(&identity, &allowed)?;
        let mut response = Response::new(HealthCheckResponse { status: 1 });
        let metadata = response.metadata_mut();
        for (key, value) in [
            ("veil-role", identity.role.to_string()),
            ("veil-name", identity.name.clone()),
            ("veil-serial", identity.serial.to_string()),
            ("veil-key", hex(&identity.ed25519_public_key.0)),
        ] {
            let value = value.parse().map_err(|_| Status::internal("metadata"))?;
            metadata.insert(key, value);
        }
        Ok(response)
    }

    type WatchStream = tokio_stream::Empty<Result<HealthCheckResponse, Status>>;

    async fn watch(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("the test service answers Check only"))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A running test server; dropping it shuts the server down.
struct Running {
    address: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn serve(server: &ServerTls) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let incoming = tls_incoming(listener, server);
    tokio::spawn(
        Server::builder()
            .add_service(HealthServer::new(WhoAmI))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            }),
    );
    Running {
        address,
        _stop: stop,
    }
}

async fn connect(address: SocketAddr, tls: ClientTlsConfig) -> Result<Channel, String> {
    Endpoint::from_shared(format!("https://127.0.0.1:{}", address.port()))
        .map_err(|error| error.to_string())?
        .tls_config(tls)
        .map_err(|error| error.to_string())?
        .connect()
        .await
        .map_err(|error| format!("{error:?}"))
}

async fn check(channel: Channel, allowed: &str) -> Result<Response<HealthCheckResponse>, Status> {
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: allowed.to_owned(),
        })
        .await
}

/// Connects and calls once; `Err` describes whichever step refused.
async fn call_as(
    address: SocketAddr,
    tls: ClientTlsConfig,
    allowed: &str,
) -> Result<Response<HealthCheckResponse>, String> {
    let channel = connect(address, tls).await?;
    check(channel, allowed)
        .await
        .map_err(|status| format!("{status:?}"))
}

/// tonic settings that present any certificate, bypassing `ClientTls`'s
/// own sanity checks, as an attacker or a misconfigured member would.
fn raw_tonic_config(
    root: &FederationRoot,
    certificate_pem: &str,
    key_pem: &str,
) -> ClientTlsConfig {
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(root.certificate_pem()))
        .identity(Identity::from_pem(certificate_pem, key_pem))
}

fn metadata(response: &Response<HealthCheckResponse>, key: &str) -> String {
    response
        .metadata()
        .get(key)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn each_role_is_seen_by_the_handler_with_its_identity() {
    let federation = Federation::new();
    let running = serve(&federation.server).await;
    for (role, name) in [
        (Role::Node, "hospital-a"),
        (Role::Operator, "ops"),
        (Role::Auditor, "regulator"),
    ] {
        let member = federation.member(role, name, a_year());
        let response = call_as(
            running.address,
            federation.client(&member).tonic_config(),
            "node,operator,auditor",
        )
        .await
        .unwrap_or_else(|error| panic!("{role} refused: {error}"));
        assert_eq!(metadata(&response, "veil-role"), role.as_str());
        assert_eq!(metadata(&response, "veil-name"), name);
        assert_eq!(
            metadata(&response, "veil-serial"),
            member.certificate.serial.to_string()
        );
        assert_eq!(
            metadata(&response, "veil-key"),
            hex(&member.key.public_key().0)
        );
    }
}

#[tokio::test]
async fn roles_are_authorised_per_rpc() {
    let federation = Federation::new();
    let running = serve(&federation.server).await;
    let node = federation.member(Role::Node, "n1", a_year());
    let auditor = federation.member(Role::Auditor, "a1", a_year());

    let node_channel = connect(running.address, federation.client(&node).tonic_config())
        .await
        .expect("node connects");
    let denied = check(node_channel.clone(), "operator")
        .await
        .expect_err("a node may not call an operator RPC");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(denied.message().contains("role node"), "{denied:?}");
    check(node_channel, "node")
        .await
        .expect("node RPCs allowed");

    let auditor_channel = connect(running.address, federation.client(&auditor).tonic_config())
        .await
        .expect("auditor connects");
    let denied = check(auditor_channel, "operator")
        .await
        .expect_err("an auditor may not start a job");
    assert_eq!(denied.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn refused_certificates_never_reach_the_handler() {
    let federation = Federation::new();
    let running = serve(&federation.server).await;
    let root = federation.ca.root();
    let foreign_ca = FederationCa::create("foreign", a_year()).expect("foreign CA");
    let foreign = issue(
        &foreign_ca,
        CertificateRequest::member(Role::Node, "n1", a_year()),
    );
    let expired = federation.member(Role::Node, "n1", expired());
    let early = federation.member(Role::Node, "n1", not_yet_valid());
    let coordinator_as_client = issue(
        &federation.ca,
        CertificateRequest::coordinator("evil", vec!["localhost".into()], a_year()),
    );
    let cases = [
        ("foreign CA", &foreign),
        ("expired", &expired),
        ("not yet valid", &early),
        ("server certificate as client", &coordinator_as_client),
    ];
    for (case, member) in cases {
        let tls = raw_tonic_config(root, &member.certificate.certificate_pem, &member.key_pem());
        let refused = call_as(running.address, tls, "node").await;
        assert!(refused.is_err(), "{case}: accepted");
    }
    let anonymous =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(root.certificate_pem()));
    assert!(
        call_as(running.address, anonymous, "node").await.is_err(),
        "a client without certificate was accepted"
    );

    // The same server still serves a good member, so the refusals above are
    // about the certificates and not a broken server.
    let good = federation.member(Role::Node, "n1", a_year());
    call_as(
        running.address,
        federation.client(&good).tonic_config(),
        "node",
    )
    .await
    .expect("good node accepted");
}

#[tokio::test]
async fn a_certificate_revoked_while_serving_is_refused_at_once() {
    let federation = Federation::new();
    let running = serve(&federation.server).await;
    let node = federation.member(Role::Node, "n1", a_year());
    let client = federation.client(&node);
    let channel = connect(running.address, client.tonic_config())
        .await
        .expect("connects before revocation");
    check(channel.clone(), "node")
        .await
        .expect("served before revocation");

    federation.revoke(&node.certificate.serial);

    // The open connection's next RPC is refused...
    let refused = check(channel, "node")
        .await
        .expect_err("revoked certificate served on its open connection");
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(refused.message().contains("revoked"), "{refused:?}");
    // ...and so is a new connection.
    assert!(
        call_as(running.address, client.tonic_config(), "node")
            .await
            .is_err(),
        "revoked certificate accepted on a new connection"
    );
    // Other members are unaffected.
    let other = federation.member(Role::Node, "n2", a_year());
    call_as(
        running.address,
        federation.client(&other).tonic_config(),
        "node",
    )
    .await
    .expect("unrevoked node still served");
}

/// Runs one raw rustls handshake against the server's configuration and
/// returns the server's verdict, which names the reason for a refusal.
async fn server_verdict(
    server: &ServerTls,
    root: &FederationRoot,
    client_auth: Option<&PemPair>,
) -> Result<(), String> {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.certificate_der().clone()).expect("root");
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots);
    let config = match client_auth {
        Some(pair) => builder
            .with_client_auth_cert(
                vec![
                    CertificateDer::from_pem_slice(pair.certificate_pem.as_bytes()).expect("cert"),
                ],
                PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes()).expect("key"),
            )
            .expect("client auth"),
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let client = tokio::spawn(async move {
        let tcp = TcpStream::connect(address).await.expect("connect");
        let server_name = ServerName::try_from("localhost").expect("name");
        // The client's result is not the point: TLS 1.3 clients finish before
        // the server has judged their certificate.
        if let Ok(mut tls) = connector.connect(server_name, tcp).await {
            use tokio::io::AsyncReadExt as _;
            let mut byte = [0u8; 1];
            let _ = tls.read(&mut byte).await;
        }
    });
    let (tcp, _) = listener.accept().await.expect("accept");
    let verdict = tokio_rustls::TlsAcceptor::from(server.rustls_config())
        .accept(tcp)
        .await
        .map(|_| ())
        .map_err(|error| error.to_string());
    client.abort();
    verdict
}

#[tokio::test]
async fn the_server_names_why_it_refused_a_certificate() {
    let federation = Federation::new();
    let root = federation.ca.root();
    let foreign_ca = FederationCa::create("foreign", a_year()).expect("foreign CA");
    let foreign = issue(
        &foreign_ca,
        CertificateRequest::member(Role::Node, "n1", a_year()),
    );
    let expired = federation.member(Role::Node, "n1", expired());
    let revoked = federation.member(Role::Node, "n1", a_year());
    federation.revoke(&revoked.certificate.serial);
    let without_identity = sign_without_veil_uri(&federation);
    let good = federation.member(Role::Operator, "ops", a_year());

    let cases = [
        ("foreign CA", Some(foreign.pem_pair()), "UnknownIssuer"),
        ("expired", Some(expired.pem_pair()), "certificate expired"),
        ("revoked", Some(revoked.pem_pair()), "Revoked"),
        ("no Veil URI", Some(without_identity), "BadSan"),
        ("no certificate", None, "peer sent no certificates"),
    ];
    for (case, client_auth, expected) in cases {
        let error = server_verdict(&federation.server, root, client_auth.as_ref())
            .await
            .expect_err(case);
        assert!(error.contains(expected), "{case}: {error}");
    }
    server_verdict(&federation.server, root, Some(&good.pem_pair()))
        .await
        .expect("good operator accepted");
}

/// A client certificate signed by the federation's own CA key but carrying
/// only a DNS name, built with rcgen directly since `FederationCa` never
/// issues one. The issuer name mirrors `FederationCa`'s subject layout.
fn sign_without_veil_uri(federation: &Federation) -> PemPair {
    let directory = federation.directory.path();
    let ca_key = rcgen::KeyPair::from_pem(
        &std::fs::read_to_string(directory.join("ca-key.pem")).expect("CA key"),
    )
    .expect("parse CA key");
    let mut ca_params = rcgen::CertificateParams::default();
    ca_params.distinguished_name = rcgen::DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "Veil federation");
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, federation.ca.name());
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);

    let leaf_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("leaf key");
    let mut params = rcgen::CertificateParams::new(vec!["n1.example".to_owned()]).expect("params");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let certificate = params.signed_by(&leaf_key, &issuer).expect("sign");
    PemPair {
        certificate_pem: certificate.pem(),
        key_pem: leaf_key.serialize_pem(),
    }
}

#[test]
fn a_node_verifies_a_peer_node_certificate_and_its_signature() {
    let federation = Federation::new();
    let root = federation.ca.root();
    let peer = federation.member(Role::Node, "hospital-b", a_year());
    let now = now_unix_seconds();

    let identity: PeerIdentity =
        verify_node_certificate(root, &peer.certificate.certificate_der, now, None)
            .expect("good node certificate");
    assert_eq!(identity.name, "hospital-b");
    assert_eq!(identity.ed25519_public_key, peer.key.public_key());
    let advertisement = b"round 7: x25519 keys ...";
    let signature = peer.key.sign(advertisement);
    assert!(
        identity
            .ed25519_public_key
            .verify(advertisement, &signature)
    );
    assert!(!identity.ed25519_public_key.verify(b"round 8", &signature));

    // A node cannot pass off its certificate as another member's name.
    assert!(matches!(
        identity.require_name("hospital-a"),
        Err(AuthError::NotSelf { .. })
    ));
}

#[test]
fn peer_certificates_that_are_not_good_node_certificates_are_rejected() {
    let federation = Federation::new();
    let root = federation.ca.root();
    let now = now_unix_seconds();
    let node = federation.member(Role::Node, "n1", a_year());
    let operator = federation.member(Role::Operator, "ops", a_year());
    let foreign_ca = FederationCa::create("foreign", a_year()).expect("foreign CA");
    let foreign = issue(
        &foreign_ca,
        CertificateRequest::member(Role::Node, "n1", a_year()),
    );

    assert!(matches!(
        verify_node_certificate(root, &operator.certificate.certificate_der, now, None),
        Err(AuthError::WrongRole {
            actual: Role::Operator,
            ..
        })
    ));
    assert!(matches!(
        verify_node_certificate(root, &foreign.certificate.certificate_der, now, None),
        Err(AuthError::BadCertificate(webpki::Error::UnknownIssuer))
    ));
    let a_year_later = now + 400 * 24 * 3600;
    assert!(matches!(
        verify_node_certificate(root, &node.certificate.certificate_der, a_year_later, None),
        Err(AuthError::BadCertificate(webpki::Error::CertExpired { .. }))
    ));

    // Flipping any byte of the signed part breaks the CA's signature (or the encoding).
    let mut tampered = node.certificate.certificate_der.to_vec();
    let name_at = tampered
        .windows(2)
        .rposition(|window| window == b"n1")
        .expect("name in certificate");
    tampered[name_at + 1] = b'2';
    assert!(matches!(
        verify_node_certificate(root, &tampered, now, None),
        Err(AuthError::BadCertificate(_))
    ));
    assert!(matches!(
        verify_node_certificate(root, b"not a certificate", now, None),
        Err(AuthError::BadCertificate(_))
    ));

    let revocations = RevocationList::open(&federation.revocations_path).expect("open");
    revocations
        .revoke(&node.certificate.serial, RevocationReason::KeyCompromise)
        .expect("revoke");
    assert!(matches!(
        verify_node_certificate(
            root,
            &node.certificate.certificate_der,
            now,
            Some(&revocations)
        ),
        Err(AuthError::Revoked { .. })
    ));
    // The coordinator's certificate verifies for its own role only.
    let coordinator = issue(
        &federation.ca,
        CertificateRequest::coordinator("c", vec!["localhost".into()], a_year()),
    );
    verify_certificate(
        root,
        &coordinator.certificate.certificate_der,
        now,
        None,
        Role::Coordinator,
    )
    .expect("coordinator certificate");
}

#[test]
fn client_and_server_configurations_refuse_mismatched_files() {
    let federation = Federation::new();
    let root = federation.ca.root();
    let node = federation.member(Role::Node, "n1", a_year());
    let other_key = IdentityKey::generate().expect("key");
    assert!(matches!(
        ClientTls::new(root, &node.certificate.certificate_pem, &other_key),
        Err(veil_pki::TlsError::KeyMismatch)
    ));
    let revocations = RevocationList::open(&federation.revocations_path).expect("open");
    assert!(matches!(
        ServerTls::new(
            root,
            &node.certificate.certificate_pem,
            &node.key,
            revocations
        ),
        Err(veil_pki::TlsError::OwnRole(Role::Node))
    ));
}
