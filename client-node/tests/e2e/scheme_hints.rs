//! The wrong URL scheme gets a hint, not only a protocol error: over real
//! sockets, `http://` against a coordinator serving mTLS says to use
//! `https://`, and `https://` against a plaintext (`--insecure-dev`)
//! coordinator says to use `http://`.

use coordinator::CoordinatorConfig;
use veil_pki::LocalPki;
use veil_pki::Role;

use crate::support;

async fn serve(config: CoordinatorConfig) -> (u16, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(coordinator::run(config, listener, async {
        let _ = stopped.await;
    }));
    (port, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_against_mtls_and_https_against_plaintext_get_the_right_hint() {
    let _machine = support::share_of_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let pki = LocalPki::create(&dir.path().join("pki")).unwrap();
    let operator_tls = pki
        .member(Role::Operator, "operator")
        .unwrap()
        .client()
        .unwrap();
    let server_tls = pki
        .coordinator()
        .unwrap()
        .server(pki.revocations().unwrap())
        .unwrap();

    let (mtls_port, stop_mtls) = serve(CoordinatorConfig {
        state_dir: Some(dir.path().join("mtls.state")),
        ..CoordinatorConfig::mtls(server_tls)
    })
    .await;
    let error = coordinator::operator::connect(&format!("http://127.0.0.1:{mtls_port}"), None)
        .await
        .expect_err("plaintext against TLS");
    let message = format!("{error:#}");
    assert!(message.contains("use an https:// address"), "{message}");

    let (plain_port, stop_plain) = serve(CoordinatorConfig {
        state_dir: Some(dir.path().join("plain.state")),
        ..CoordinatorConfig::insecure_development()
    })
    .await;
    let error = coordinator::operator::connect(
        &format!("https://127.0.0.1:{plain_port}"),
        Some(&operator_tls),
    )
    .await
    .expect_err("TLS against plaintext");
    let message = format!("{error:#}");
    assert!(message.contains("use an http:// address"), "{message}");

    let _ = stop_mtls.send(());
    let _ = stop_plain.send(());
}
