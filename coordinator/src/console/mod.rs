//! The web console (`serve --console ADDR`): a thin HTTPS/1.1 server over
//! `veil-console`'s pages and tokens. It verifies log-in links and session
//! cookies, checks the CSRF token and the role on every write, records
//! log-ins, failed log-ins and writes in the audit log, gathers the page
//! structs from the coordinator's state ([`gather`]) and streams a job's
//! progress as server-sent events from the same event fan-out `watch` reads.
//!
//! Browsers cannot use the federation's Ed25519 certificates (Chromium
//! offers no Ed25519 signature in TLS), so the console serves a web
//! certificate: the operator's own (`--console-certificate/--console-key`,
//! from a PKI the browsers trust) or one it creates in the state folder.

mod gather;
mod http;
mod keys;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use veil_audit_log::AuditEvent;
use veil_console::pages::{self, Viewer};
use veil_console::token::{Claims, ConsoleKey, LoginRedemptions, TokenKind};
use veil_pki::{IssuanceJournal, RevocationList};

use self::http::{Body, Form, header_value, reply, see_other};
use crate::state::{Shared, lock};

pub use keys::{CONSOLE_KEY_FILE, login_link, parse_validity};

/// Characters of a node's announced software version kept for the
/// federation page: the field is free text from the node.
const MAX_SOFTWARE_VERSION_CHARS: usize = 64;

/// Records the software version a node announced at registration, for the
/// federation page (at most [`MAX_SOFTWARE_VERSION_CHARS`] characters).
pub(crate) fn note_software_version(shared: &Shared, node: &str, version: &str) {
    let version: String = version.chars().take(MAX_SOFTWARE_VERSION_CHARS).collect();
    lock(&shared.node_versions).insert(node.to_owned(), version);
}

/// The session cookie's name.
const SESSION_COOKIE: &str = "veil_session";
/// Consoles (and their event streams) served at once; more wait in the backlog.
const MAX_CONNECTIONS: usize = 256;
/// A request's headers must arrive within this long.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A TLS handshake must finish within this long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the console's web certificate comes from.
#[derive(Debug, Clone)]
pub enum ConsoleIdentity {
    /// PEM files: the certificate chain and its private key (ECDSA or RSA).
    Files {
        /// The certificate chain.
        certificate: PathBuf,
        /// The private key.
        key: PathBuf,
    },
    /// A self-signed ECDSA P-256 certificate for `hosts`, created once in the
    /// state folder (`console-certificate.pem`, owner-only `console-key.pem`).
    SelfSigned {
        /// Host names and addresses the certificate names.
        hosts: Vec<String>,
    },
}

/// Serving the console: where, and with which web certificate.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// Bound before the coordinator starts, so the address is known (port 0
    /// in tests) and a taken port fails at start-up.
    listener: Arc<std::net::TcpListener>,
    /// The web certificate.
    identity: ConsoleIdentity,
}

impl ConsoleConfig {
    /// Binds `address` for the console.
    pub fn bind(address: SocketAddr, identity: ConsoleIdentity) -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind(address)
            .with_context(|| format!("console: cannot listen on {address}"))?;
        listener.set_nonblocking(true)?;
        Ok(Self {
            listener: Arc::new(listener),
            identity,
        })
    }

    /// The address bound.
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }
}

/// What every request needs.
struct Console {
    shared: Arc<Shared>,
    key: ConsoleKey,
    /// Log-in links already used. A std mutex: held for a map look-up only.
    redemptions: Mutex<LoginRedemptions>,
    /// Each mechanism's RDP curve, kept between privacy pages: a curve
    /// never changes, and evaluating it is most of a cold page's cost. A
    /// std mutex: held while one page is composed, never across an await.
    rdp_curves: Mutex<veil_privacy_accounting::RdpCurves>,
    /// The coordinator's state folder (reports, the audit log).
    state_dir: PathBuf,
    /// The CA's issuance journal and revocation list, for the federation
    /// page; `None` without mTLS.
    certificate_files: Option<(IssuanceJournal, RevocationList)>,
}

/// Starts the console in a background task; returns it, to be aborted at
/// shutdown (which drops every open connection with it).
pub(crate) fn spawn(
    config: &ConsoleConfig,
    shared: Arc<Shared>,
    state_dir: &Path,
    certificate_files: Option<(IssuanceJournal, RevocationList)>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let tls = keys::server_tls(&config.identity, state_dir)?;
    let key = keys::load_or_create_key(state_dir)?;
    let listener = tokio::net::TcpListener::from_std(
        config
            .listener
            .try_clone()
            .context("console: duplicating the listener")?,
    )?;
    let address = listener.local_addr()?;
    tracing::info!(%address, "console listening (HTTPS)");
    let console = Arc::new(Console {
        shared,
        key,
        redemptions: Mutex::new(LoginRedemptions::default()),
        rdp_curves: Mutex::new(veil_privacy_accounting::RdpCurves::default()),
        state_dir: state_dir.to_owned(),
        certificate_files,
    });
    Ok(tokio::spawn(serve(
        listener,
        TlsAcceptor::from(tls),
        console,
    )))
}

async fn serve(listener: tokio::net::TcpListener, acceptor: TlsAcceptor, console: Arc<Console>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // Connections live in this set, so aborting the server aborts them too.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::debug!(%error, "console: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let console = Arc::clone(&console);
        connections.spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "console: TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let service = hyper::service::service_fn(move |request| {
                let console = Arc::clone(&console);
                async move { Ok::<_, std::convert::Infallible>(console.handle(peer, request).await) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(tls), service)
                .await;
            if let Err(error) = served {
                tracing::debug!(%peer, %error, "console connection ended with an error");
            }
            drop(permit);
        });
    }
}

fn now_unix_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64)
}

/// The audit log's actor for a console user.
fn actor(claims: &Claims) -> String {
    format!("console/{}/{}", claims.role.as_str(), claims.name)
}

impl Console {
    async fn handle(&self, peer: SocketAddr, request: Request<Incoming>) -> Response<Body> {
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or("").to_owned();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let method = request.method().clone();
        if segments == ["login"] && method == Method::GET {
            return self.login(peer, &query);
        }
        let session = match self.session(&request) {
            Ok(session) => session,
            Err(response) => return response,
        };
        let viewer = Viewer {
            name: session.name.clone(),
            role: session.role,
            csrf_token: if session.role.may_write() {
                self.key.csrf_token(&session)
            } else {
                String::new()
            },
        };
        let shared = &self.shared;
        match (&method, segments.as_slice()) {
            (&Method::GET, [""]) => see_other("/jobs"),
            (&Method::GET, ["federation"]) => {
                let members = gather::members(shared, self.certificate_files.as_ref());
                reply::html(StatusCode::OK, pages::federation(&viewer, &members))
            }
            (&Method::GET, ["jobs"]) => {
                reply::html(StatusCode::OK, pages::jobs(&viewer, &gather::jobs(shared)))
            }
            (&Method::GET, ["jobs", job]) => match gather::job_page(shared, job) {
                Some(page) => reply::html(StatusCode::OK, pages::job(&viewer, &page)),
                None => reply::not_found(),
            },
            (&Method::GET, ["jobs", job, "events"]) => {
                // The completed rounds the page already shows; a missing or
                // malformed count sends them all (the page replaces rows by round).
                let after = Form::parse(&query)
                    .get("after")
                    .and_then(|after| after.parse::<usize>().ok())
                    .unwrap_or(0);
                http::job_events(shared, job, after)
            }
            (&Method::GET, ["jobs", job, "report"]) => self.report(job).await,
            (&Method::GET, ["jobs", job, "model"]) => self.model(&session, job),
            (&Method::POST, ["jobs"]) => self.start(peer, &session, request).await,
            (&Method::POST, ["jobs", job, "cancel"]) => {
                self.cancel(peer, &session, job, request).await
            }
            (&Method::GET, ["privacy"]) => {
                let entries = self.audit_entries().await;
                let page = gather::privacy_page(
                    shared,
                    entries.as_deref().unwrap_or(&[]),
                    &mut lock(&self.rdp_curves),
                );
                reply::html(StatusCode::OK, pages::privacy(&viewer, &page))
            }
            (&Method::GET, ["audit"]) => {
                let form = Form::parse(&query);
                let entries = self.audit_entries().await;
                let page = gather::audit_page(entries, &form);
                reply::html(StatusCode::OK, pages::audit(&viewer, &page))
            }
            (_, _) if method != Method::GET && method != Method::POST => reply::text(
                StatusCode::METHOD_NOT_ALLOWED,
                "the console takes GET, and POST for actions",
            ),
            _ => reply::not_found(),
        }
    }

    /// The audit log's entries, verified off the async threads.
    async fn audit_entries(&self) -> Result<Vec<veil_audit_log::AuditEntry>, String> {
        let verifier = lock(&self.shared.audit).verifier();
        tokio::task::spawn_blocking(move || gather::audit_entries(&verifier))
            .await
            .unwrap_or_else(|error| Err(error.to_string()))
    }

    /// Redeems a log-in link for a session cookie; every attempt is audited.
    fn login(&self, peer: SocketAddr, query: &str) -> Response<Body> {
        let form = Form::parse(query);
        let now = now_unix_s();
        let redeemed = self
            .key
            .verify(form.get("token").unwrap_or(""), TokenKind::Login, now)
            .and_then(|login| {
                lock(&self.redemptions).redeem(&login, now)?;
                Ok(login)
            });
        let login = match redeemed {
            Ok(login) => login,
            Err(error) => {
                tracing::warn!(%peer, %error, "console log-in refused");
                lock(&self.shared.audit).record(
                    "console",
                    AuditEvent::AuthFailure {
                        peer: peer.to_string(),
                        rpc: "console log-in".to_owned(),
                        reason: error.to_string(),
                    },
                );
                return reply::html(
                    StatusCode::UNAUTHORIZED,
                    pages::notice(
                        "Log-in refused",
                        &format!("{error}. Ask for a new link (`coordinator console-login`)."),
                        None,
                    ),
                );
            }
        };
        // The session lasts as long as the link would have.
        let valid_for = Duration::from_secs(login.expires_unix_s.saturating_sub(now).max(1) as u64);
        let session = match self.key.issue(
            TokenKind::Session,
            login.role,
            &login.name,
            now,
            valid_for,
            &ring::rand::SystemRandom::new(),
        ) {
            Ok(session) => session,
            Err(error) => {
                tracing::error!(%error, "console: cannot issue a session");
                return reply::text(StatusCode::INTERNAL_SERVER_ERROR, "cannot issue a session");
            }
        };
        lock(&self.shared.audit).record(
            &actor(&login),
            AuditEvent::Note {
                text: format!(
                    "console log-in: {} {} from {peer}",
                    login.role.as_str(),
                    login.name
                ),
            },
        );
        tracing::info!(role = login.role.as_str(), name = %login.name, "console log-in");
        let mut response = reply::html(
            StatusCode::OK,
            pages::notice(
                "Logged in",
                &format!("Logged in as {} ({}).", login.name, login.role.as_str()),
                Some("/jobs"),
            ),
        );
        let cookie = format!(
            "{SESSION_COOKIE}={session}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={}",
            valid_for.as_secs()
        );
        if let Some(value) = header_value(&cookie) {
            response
                .headers_mut()
                .insert(hyper::header::SET_COOKIE, value);
        }
        response
    }

    /// The request's verified session, or the refusal to send.
    fn session<T>(&self, request: &Request<T>) -> Result<Claims, Response<Body>> {
        let token = request
            .headers()
            .get_all(hyper::header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|cookies| cookies.split(';'))
            .filter_map(|cookie| cookie.trim().split_once('='))
            .find(|(name, _)| *name == SESSION_COOKIE)
            .map(|(_, value)| value.to_owned());
        let refused = |text: String| {
            reply::html(
                StatusCode::UNAUTHORIZED,
                pages::notice("Not logged in", &text, None),
            )
        };
        let Some(token) = token else {
            return Err(refused(
                "Open the one-time link `coordinator console-login` prints to log in.".to_owned(),
            ));
        };
        self.key
            .verify(&token, TokenKind::Session, now_unix_s())
            .map_err(|error| {
                refused(format!(
                    "Your session is not valid ({error}); log in again."
                ))
            })
    }

    /// The form of a write (`rpc`, for the audit log; at most `limit`
    /// bytes), or the refusal to send: an auditor's (`auditor_refusal`), one
    /// from another origin, or one without the session's CSRF token. Every
    /// refusal is audited.
    async fn write_form(
        &self,
        peer: SocketAddr,
        session: &Claims,
        request: Request<Incoming>,
        limit: usize,
        (rpc, auditor_refusal): (&str, &str),
    ) -> Result<Form, Response<Body>> {
        let same_origin = http::same_origin(&request);
        let form = http::read_form(request, limit).await?;
        let reason = if !session.role.may_write() {
            auditor_refusal.to_owned()
        } else if !same_origin {
            "a cross-site request was refused".to_owned()
        } else if let Err(error) = self.key.check_csrf(session, form.get("csrf").unwrap_or("")) {
            error.to_string()
        } else {
            return Ok(form);
        };
        tracing::warn!(%peer, name = %session.name, %reason, "console write refused");
        lock(&self.shared.audit).record(
            &actor(session),
            AuditEvent::AuthFailure {
                peer: peer.to_string(),
                rpc: format!("console {rpc}"),
                reason: reason.clone(),
            },
        );
        Err(reply::html(
            StatusCode::FORBIDDEN,
            pages::notice("Refused", &reason, None),
        ))
    }

    /// Cancels a job: operators only, with the session's CSRF token, from
    /// this origin; refusals and the cancellation are audited.
    async fn cancel(
        &self,
        peer: SocketAddr,
        session: &Claims,
        job: &str,
        request: Request<Incoming>,
    ) -> Response<Body> {
        let rpc = format!("cancel {job}");
        let refusal = (rpc.as_str(), "an auditor may not cancel jobs");
        if let Err(refused) = self
            .write_form(peer, session, request, http::MAX_FORM_BYTES, refusal)
            .await
        {
            return refused;
        }
        let cancelled = self
            .shared
            .with_engine(|engine, now| engine.cancel_job(job, now));
        match cancelled {
            Ok(_) => {
                lock(&self.shared.audit).record(
                    &actor(session),
                    AuditEvent::Note {
                        text: format!("console: cancelled job {job}"),
                    },
                );
                tracing::info!(job, name = %session.name, "job cancelled from the console");
                see_other(&format!("/jobs/{job}"))
            }
            Err(error) => reply::html(
                StatusCode::CONFLICT,
                pages::notice("Not cancelled", &error.to_string(), None),
            ),
        }
    }

    /// Submits and starts a job from a job file's text (the form's `job`):
    /// operators only, with the session's CSRF token, from this origin. The
    /// file is read as `coordinator submit` reads it and the job created by
    /// the same code as gRPC `SubmitJob`; refusals, the creation and the
    /// start are audited.
    async fn start(
        &self,
        peer: SocketAddr,
        session: &Claims,
        request: Request<Incoming>,
    ) -> Response<Body> {
        let refusal = ("start", "an auditor may not start jobs");
        let body = match self
            .write_form(peer, session, request, http::MAX_JOB_FORM_BYTES, refusal)
            .await
        {
            Ok(form) => form,
            Err(refused) => return refused,
        };
        let not_started = |status: StatusCode, reason: String| {
            reply::html(status, pages::notice("Job not started", &reason, None))
        };
        let text = body.get("job").unwrap_or("");
        let file = match veil_job::file::JobFile::parse(text) {
            Ok(file) => file,
            Err(error) => {
                return not_started(
                    StatusCode::BAD_REQUEST,
                    format!("the job file does not parse: {error}"),
                );
            }
        };
        let wire = file.to_wire();
        let spec = match veil_job::JobSpec::from_wire(&wire) {
            Ok(spec) => spec,
            Err(error) => {
                return not_started(
                    StatusCode::BAD_REQUEST,
                    format!("the job is not valid: {error}"),
                );
            }
        };
        // The console's roles are the certificates' roles; only operators get
        // here, and operators do not run privacy tests.
        if let Some(reason) = crate::auth::job_access_refusal(veil_pki::Role::Operator, &spec) {
            return not_started(StatusCode::FORBIDDEN, reason.to_owned());
        }
        let job = match crate::submission::create_job(&self.shared, &actor(session), &wire, spec) {
            Ok(job) => job,
            Err(error) => return not_started(StatusCode::BAD_REQUEST, error.to_string()),
        };
        let started = self
            .shared
            .with_engine(|engine, now| engine.start_job(&job, now));
        lock(&self.shared.audit).record(
            &actor(session),
            AuditEvent::Note {
                text: match &started {
                    Ok(_) => format!("console: started job {job}"),
                    Err(error) => format!("console: job {job} created, not started: {error}"),
                },
            },
        );
        match started {
            Ok(_) => {
                tracing::info!(job, name = %session.name, "job started from the console");
                see_other(&format!("/jobs/{job}"))
            }
            Err(error) => not_started(
                StatusCode::CONFLICT,
                format!("job {job} was created but did not start: {error}"),
            ),
        }
    }

    /// The job's report, as `coordinator report` writes it.
    async fn report(&self, job: &str) -> Response<Body> {
        if gather::job_page(&self.shared, job).is_none() {
            return reply::not_found();
        }
        let state_dir = self.state_dir.clone();
        let job = job.to_owned();
        let rendered = tokio::task::spawn_blocking(move || {
            let now = chrono::Utc::now();
            crate::report::load_report(
                &state_dir,
                &job,
                now.format("%Y-%m-%d %H:%M UTC").to_string(),
                now.timestamp(),
            )
            .map(|input| veil_report::render_html(&input))
        })
        .await;
        match rendered {
            Ok(Ok(html)) => reply::html(StatusCode::OK, html),
            Ok(Err(error)) => {
                reply::text(StatusCode::CONFLICT, &format!("no report yet: {error:#}"))
            }
            Err(_) => reply::text(StatusCode::INTERNAL_SERVER_ERROR, "the report failed"),
        }
    }

    /// A finished job's model file, as `coordinator fetch-model` writes it;
    /// the export is audited first, and refused if it cannot be.
    fn model(&self, session: &Claims, job: &str) -> Response<Body> {
        let model = match gather::exported_model(&self.shared, job) {
            Ok(model) => model,
            Err(error) => return reply::text(StatusCode::CONFLICT, &format!("{error:#}")),
        };
        let recorded = lock(&self.shared.audit).record(
            &actor(session),
            AuditEvent::ModelExported {
                job_id: job.to_owned(),
                version: model.1,
                model_sha256: crate::audit::model_digest(&model.0.parameters),
                destination: format!("console download by {}", actor(session)),
            },
        );
        if !recorded {
            return reply::text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the audit log could not record this export; try again later",
            );
        }
        reply::download(
            Bytes::from(model.0.to_bytes()),
            &format!(
                "{}.veilmodel",
                job.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_")
            ),
        )
    }
}

/// Reads a whole small body.
async fn collect_limited(body: Incoming, limit: usize) -> Option<Bytes> {
    let limited = http_body_util::Limited::new(body, limit);
    match tokio::time::timeout(HEADER_READ_TIMEOUT, limited.collect()).await {
        Ok(Ok(collected)) => Some(collected.to_bytes()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use veil_console::token::ConsoleRole;

    use super::*;
    use crate::CoordinatorConfig;

    /// The test trusts the console's self-signed certificate blindly: what
    /// is under test is HTTP, not certificate checking.
    #[derive(Debug)]
    struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

    impl ServerCertVerifier for AnyCertificate {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            certificate: &CertificateDer<'_>,
            signature: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                certificate,
                signature,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            certificate: &CertificateDer<'_>,
            signature: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                certificate,
                signature,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    /// Sends `request` as raw bytes over TLS; returns the response's status line.
    async fn exchange(address: SocketAddr, request: &[u8]) -> String {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
            .unwrap();
        tls.write_all(request).await.unwrap();
        let mut response = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut response)).await;
        let response = String::from_utf8_lossy(&response).into_owned();
        response.lines().next().unwrap_or_default().to_owned()
    }

    fn get(path: &str, cookie: &str) -> Vec<u8> {
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n")
            .into_bytes()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn malformed_and_unknown_requests_get_a_4xx_and_the_console_keeps_serving() {
        let dir = tempfile::tempdir().unwrap();
        let console = ConsoleConfig::bind(
            "127.0.0.1:0".parse().unwrap(),
            ConsoleIdentity::SelfSigned {
                hosts: vec!["127.0.0.1".to_owned()],
            },
        )
        .unwrap();
        let address = console.local_addr().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(crate::run(
            CoordinatorConfig {
                state_dir: Some(dir.path().to_owned()),
                console: Some(console),
                ..CoordinatorConfig::insecure_development()
            },
            listener,
            async {
                let _ = stopped.await;
            },
        ));
        // The key exists once the server is up: wait for the console to answer.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while exchange(address, &get("/jobs", "")).await != "HTTP/1.1 401 Unauthorized" {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the console never answered"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let key = keys::load_or_create_key(dir.path()).unwrap();
        let now = now_unix_s();
        let random = ring::rand::SystemRandom::new();
        let session = key
            .issue(
                TokenKind::Session,
                ConsoleRole::Operator,
                "olivia",
                now,
                Duration::from_secs(3600),
                &random,
            )
            .unwrap();
        let claims = key.verify(&session, TokenKind::Session, now).unwrap();
        let csrf = key.csrf_token(&claims);
        let cookie = format!("{SESSION_COOKIE}={session}");
        let post = |path: &str, body: &str| {
            format!(
                "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\n\
                 Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        };
        // The README demo's job file, as `coordinator submit` would read it.
        let demo_job = veil_job::STANDARD_JOB
            .replace("{cutoff}", "2024-10-02")
            .replace("{horizon}", "90");
        let form_value = |text: &str| -> String {
            text.bytes()
                .map(|byte| match byte {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => (byte as char).to_string(),
                    _ => format!("%{byte:02X}"),
                })
                .collect()
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"NONSENSE\r\n\r\n".to_vec(), "HTTP/1.1 400 Bad Request"),
            (get("/jobs", "veil_session=zz.zz"), "HTTP/1.1 401 Unauthorized"),
            (get("/login?token=%ZZ", ""), "HTTP/1.1 401 Unauthorized"),
            (get("/nowhere", &cookie), "HTTP/1.1 404 Not Found"),
            (get("/jobs/job-404", &cookie), "HTTP/1.1 404 Not Found"),
            (get("/jobs/job-404/events", &cookie), "HTTP/1.1 404 Not Found"),
            (get("/jobs/job-404/model", &cookie), "HTTP/1.1 409 Conflict"),
            (
                format!("DELETE /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n")
                    .into_bytes(),
                "HTTP/1.1 405 Method Not Allowed",
            ),
            (post("/jobs/job-404/cancel", &"x".repeat(10_000)), "HTTP/1.1 413 Payload Too Large"),
            (post("/jobs/job-404/cancel", "csrf=00"), "HTTP/1.1 403 Forbidden"),
            (post("/jobs/job-404/cancel", &format!("csrf={csrf}")), "HTTP/1.1 409 Conflict"),
            (post("/jobs", "csrf=00&job=x"), "HTTP/1.1 403 Forbidden"),
            (post("/jobs", &format!("csrf={csrf}&job=not+a+job+file")), "HTTP/1.1 400 Bad Request"),
            (post("/jobs", &format!("csrf={csrf}&job={}", form_value(&demo_job))), "HTTP/1.1 303 See Other"),
            (get("/audit?kind=%E2%82&job=%", &cookie), "HTTP/1.1 200 OK"),
            (get("/jobs", &cookie), "HTTP/1.1 200 OK"),
        ];
        for (request, expected) in cases {
            assert_eq!(
                exchange(address, &request).await,
                expected,
                "{}",
                String::from_utf8_lossy(&request[..request.len().min(120)])
            );
        }
        // The started job exists, created by this person.
        let log = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
        assert!(log.contains("console: started job"), "{log}");
        assert!(log.contains("console/operator/olivia"), "{log}");
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }
}
