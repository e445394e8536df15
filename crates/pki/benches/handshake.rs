//! Cost of one mTLS connection to the coordinator over loopback: TCP connect
//! plus a full TLS 1.3 handshake with Ed25519 certificates on both sides,
//! including the server's webpki chain check, Veil identity parse and
//! revocation-list check; a plain TCP connect is measured as the baseline.

use std::net::SocketAddr;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use veil_pki::{
    CertificateRequest, ClientTls, FederationCa, RevocationList, RevocationReason, Role, ServerTls,
    Validity,
};

const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

struct Setup {
    _directory: tempfile::TempDir,
    server: ServerTls,
    client: ClientTls,
}

fn setup() -> Setup {
    let directory = tempfile::tempdir().expect("tempdir");
    let ca = FederationCa::create("bench", Validity::starting_now(YEAR)).expect("CA");
    let revocations = RevocationList::open(directory.path().join("revoked.txt")).expect("list");
    // A non-empty list, so each check parses nothing but does stat a real file.
    for _ in 0..100 {
        let (other, _) = ca
            .issue_with_new_key(&CertificateRequest::member(
                Role::Node,
                "revoked",
                Validity::starting_now(YEAR),
            ))
            .expect("issue");
        revocations
            .revoke(&other.serial, RevocationReason::Superseded)
            .expect("revoke");
    }
    let (coordinator_certificate, coordinator_key) = ca
        .issue_with_new_key(&CertificateRequest::coordinator(
            "coordinator",
            vec!["localhost".into()],
            Validity::starting_now(YEAR),
        ))
        .expect("coordinator");
    let server = ServerTls::new(
        ca.root(),
        &coordinator_certificate.certificate_pem,
        &coordinator_key,
        revocations,
    )
    .expect("server");
    let (node_certificate, node_key) = ca
        .issue_with_new_key(&CertificateRequest::member(
            Role::Node,
            "n1",
            Validity::starting_now(YEAR),
        ))
        .expect("node");
    let client =
        ClientTls::new(ca.root(), &node_certificate.certificate_pem, &node_key).expect("client");
    Setup {
        _directory: directory,
        server,
        client,
    }
}

/// Serves handshakes forever: after each completes (client certificate
/// verified), the server writes one byte so the client knows.
async fn spawn_tls_server(server: &ServerTls) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let acceptor = tokio_rustls::TlsAcceptor::from(server.rustls_config());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let _ = tls.write_all(&[1]).await;
                    let _ = tls.flush().await;
                }
            });
        }
    });
    address
}

async fn spawn_plain_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = tcp.write_all(&[1]).await;
            });
        }
    });
    address
}

fn handshake(criterion: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let setup = setup();
    let tls_address = runtime.block_on(spawn_tls_server(&setup.server));
    let plain_address = runtime.block_on(spawn_plain_server());
    let connector = tokio_rustls::TlsConnector::from(setup.client.rustls_config());
    let server_name = ServerName::try_from("localhost").expect("name");

    let mut group = criterion.benchmark_group("mtls_connection");
    group.bench_function("full_mtls_handshake", |bencher| {
        bencher.to_async(&runtime).iter(|| {
            let connector = connector.clone();
            let server_name = server_name.clone();
            async move {
                let tcp = TcpStream::connect(tls_address).await.expect("connect");
                tcp.set_nodelay(true).expect("nodelay");
                let mut tls = connector
                    .connect(server_name, tcp)
                    .await
                    .expect("handshake");
                let mut byte = [0u8; 1];
                tls.read_exact(&mut byte).await.expect("server accepted");
            }
        });
    });
    group.bench_function("plain_tcp_connect", |bencher| {
        bencher.to_async(&runtime).iter(|| async move {
            let mut tcp = TcpStream::connect(plain_address).await.expect("connect");
            let mut byte = [0u8; 1];
            tcp.read_exact(&mut byte).await.expect("server answered");
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = handshake
}
criterion_main!(benches);
