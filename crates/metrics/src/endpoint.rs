//! The `/metrics` endpoint: HTTP/1.1 over plain TCP, one GET route, a cap on
//! open connections and a deadline on reading each request, so a scraper
//! (or anything else that connects) can neither hang nor exhaust it.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// The content type of the OpenMetrics text format `prometheus-client`
/// writes; Prometheus negotiates and parses it natively.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Scrapers served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 16;

/// A request's headers must arrive within this long.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the endpoint stopped.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The endpoint's address could not be bound.
    #[error("metrics endpoint: cannot listen on {address}: {source}")]
    Bind {
        /// The address asked for.
        address: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Accepting a connection failed in a way that is not the peer's fault.
    #[error("metrics endpoint: accepting a connection failed: {0}")]
    Accept(#[source] std::io::Error),
    /// The registry could not be written as text.
    #[error("metrics endpoint: encoding the registry failed: {0}")]
    Encode(#[from] std::fmt::Error),
}

/// The registry in the text exposition format.
pub fn encode(registry: &Registry) -> Result<String, MetricsError> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)?;
    Ok(text)
}

/// Serves `registry` at `GET /metrics` on `listener` until `shutdown`
/// resolves. Connections open then are dropped with the task.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), MetricsError> {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(permit) => permit,
                // The semaphore is never closed.
                Err(_) => return Ok(()),
            },
            () = &mut shutdown => return Ok(()),
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) if is_per_connection(&error) => continue,
                Err(error) => return Err(MetricsError::Accept(error)),
            },
            () = &mut shutdown => return Ok(()),
        };
        let registry = Arc::clone(&registry);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let registry = Arc::clone(&registry);
                async move { Ok::<_, Infallible>(respond(&request, &registry)) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(error) = served {
                tracing::debug!(%peer, %error, "metrics connection ended with an error");
            }
            drop(permit);
        });
    }
}

/// Errors of one connection (reset before accept, and the like): the
/// listener itself is fine.
fn is_per_connection(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::Interrupted
    )
}

fn respond(request: &Request<Incoming>, registry: &Registry) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
            response
                .headers_mut()
                .insert(hyper::header::CONTENT_TYPE, value);
        }
        response
    };
    if request.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: the metrics are at /metrics\n".to_owned(),
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "method not allowed: GET /metrics\n".to_owned(),
        );
    }
    match encode(registry) {
        Ok(text) => reply(StatusCode::OK, OPENMETRICS_CONTENT_TYPE, text),
        Err(error) => {
            tracing::error!(%error, "metrics not served");
            reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain; charset=utf-8",
                format!("{error}\n"),
            )
        }
    }
}

/// Binds `address` and serves `registry` there in a background task for the
/// rest of the process; returns the address bound (useful with port 0).
/// For binaries: a library or test that must stop the endpoint calls
/// [`serve`] with its own shutdown future.
pub async fn spawn_endpoint(
    address: SocketAddr,
    registry: Registry,
) -> Result<SocketAddr, MetricsError> {
    let listener = TcpListener::bind(address)
        .await
        .map_err(|source| MetricsError::Bind { address, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| MetricsError::Bind { address, source })?;
    tracing::info!(address = %bound, "serving Prometheus metrics at /metrics");
    tokio::spawn(async move {
        if let Err(error) = serve(listener, Arc::new(registry), std::future::pending()).await {
            tracing::error!(%error, "metrics endpoint stopped");
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CoordinatorMetrics;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn request(address: SocketAddr, method: &str, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream
            .write_all(
                format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn serves_the_registry_at_metrics_and_nothing_else() {
        let mut registry = Registry::default();
        let metrics = CoordinatorMetrics::register(&mut registry);
        metrics.registered_nodes.set(3);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, Arc::new(registry), async {
            let _ = stopped.await;
        }));

        let ok = request(address, "GET", "/metrics").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains(OPENMETRICS_CONTENT_TYPE), "{ok}");
        assert!(
            ok.contains("\nveil_coordinator_registered_nodes 3\n"),
            "{ok}"
        );
        assert!(ok.trim_end().ends_with("# EOF"), "{ok}");
        let missing = request(address, "GET", "/").await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        let posted = request(address, "POST", "/metrics").await;
        assert!(posted.starts_with("HTTP/1.1 405"), "{posted}");

        let _ = stop.send(());
        assert!(server.await.unwrap().is_ok());
    }
}
