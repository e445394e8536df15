//! Per-node request limits at the gRPC edge. A node certificate holder that floods the
//! coordinator (calls in a tight loop, many upload streams at once, over one connection or
//! many) is refused with `ResourceExhausted` before its requests reach the role gate, the
//! audit log or the engine, so other nodes' rounds go on. Each node has a token bucket (a
//! sustained rate with a burst) and a cap on requests in flight; both are keyed by the name
//! its certificate carries, not by connection, so opening more connections buys nothing.
//!
//! A refusal is cheap but not free (a TLS record, an HTTP/2 frame, a wake-up), and a loop that
//! is refused at once simply asks again: thousands of refusals a second still cost honest rounds
//! their CPU. So a refused answer is held for a moment (`refusal_hold`, a tarpit) before it is
//! sent: a loop that waits for its answer is slowed to a few calls a second per request slot,
//! and the slots are bounded (requests in flight per node, requests per connection, connections
//! per node). Connections past a node's cap are closed after the handshake, also after a hold.
//!
//! Operators and auditors are not limited: they are appointed by the coordinator's operator,
//! and their watch loops poll faster than any node needs to. Without mTLS (insecure
//! development) there is no identity to key on and nothing is limited.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;
use tonic::codegen::{Service, http};
use veil_metrics::{CoordinatorMetrics, LimitLabels};
use veil_pki::{MtlsConnectInfo, Role};

use crate::state::lock;

/// What one node may ask of the coordinator. The defaults are far above what an honest node
/// sends (a heartbeat every few seconds, one long poll at a time, a few downloads and
/// uploads per phase) and far below what a loop can send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemberLimits {
    /// Requests per second a node may sustain.
    pub requests_per_second: f64,
    /// Requests a node may send at once after a quiet spell, above the sustained rate.
    pub burst: u32,
    /// Requests of one node being served at the same time, over all its connections
    /// (long polls and upload streams included).
    pub concurrent_requests: u32,
    /// Connections one node may hold open at once. An honest node holds one (two for a
    /// moment after a reconnect); each connection may carry many requests at once, so
    /// without this cap a flooder multiplies what it can keep waiting.
    pub connections: u32,
    /// How long a refused answer to a node (a limit, its role, its certificate) is held
    /// before it is sent, and a refused connection before it is closed.
    pub refusal_hold: Duration,
}

impl Default for MemberLimits {
    fn default() -> Self {
        Self {
            requests_per_second: 100.0,
            burst: 200,
            concurrent_requests: 32,
            connections: 8,
            refusal_hold: Duration::from_secs(1),
        }
    }
}

/// Why a request was refused; the message names the limit, the wire status is
/// `ResourceExhausted`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum Refusal {
    /// The node's token bucket is empty.
    #[error(
        "node '{node}' exceeded its request rate ({per_second} requests per second, bursts of \
         {burst}); slow down and retry"
    )]
    Rate {
        /// The node's name.
        node: String,
        /// The sustained rate.
        per_second: f64,
        /// The burst.
        burst: u32,
    },
    /// The node already has the most requests in flight it may have.
    #[error(
        "node '{node}' has {limit} requests in flight, the most a node may have at once; \
         wait for one to finish"
    )]
    Concurrency {
        /// The node's name.
        node: String,
        /// The cap.
        limit: u32,
    },
    /// The node already holds the most connections it may hold.
    #[error("node '{node}' holds {limit} connections, the most a node may hold at once")]
    Connections {
        /// The node's name.
        node: String,
        /// The cap.
        limit: u32,
    },
}

impl Refusal {
    /// The metric label naming the limit.
    fn limit(&self) -> &'static str {
        match self {
            Self::Rate { .. } => "rate",
            Self::Concurrency { .. } => "concurrency",
            Self::Connections { .. } => "connections",
        }
    }
}

/// A token bucket with time passed in: `burst` tokens at most, refilled at `per_second`.
#[derive(Debug, Clone)]
struct TokenBucket {
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    fn full(limits: &MemberLimits, now: Instant) -> Self {
        Self {
            tokens: f64::from(limits.burst),
            updated: now,
        }
    }

    /// Takes one token if there is one.
    fn take(&mut self, limits: &MemberLimits, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens =
            (self.tokens + elapsed * limits.requests_per_second).min(f64::from(limits.burst));
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// One node's allowance.
struct Allowance {
    bucket: TokenBucket,
    /// Permits for requests in flight; a permit is held until the request's handler returns.
    in_flight: Arc<Semaphore>,
    /// Permits for open connections; a permit is held until the connection closes.
    connections: Arc<Semaphore>,
    /// Whether the last request was refused: a flood is logged when it starts, not once per
    /// refused request.
    refusing: bool,
}

impl Allowance {
    /// A node's allowance when it is first heard from: a full bucket, no permits taken.
    fn new(limits: &MemberLimits, now: Instant) -> Self {
        Self {
            bucket: TokenBucket::full(limits, now),
            in_flight: Arc::new(Semaphore::new(limits.concurrent_requests as usize)),
            connections: Arc::new(Semaphore::new(limits.connections as usize)),
            refusing: false,
        }
    }
}

/// Every node's allowance. The map holds one entry per node name the CA has issued and that
/// has called, so it is bounded by the federation's size.
pub(crate) struct Admission {
    limits: MemberLimits,
    /// A std mutex: held for a map lookup and a little arithmetic, never across an await.
    allowances: Mutex<HashMap<String, Allowance>>,
}

impl Admission {
    pub(crate) fn new(limits: MemberLimits) -> Self {
        Self {
            limits,
            allowances: Mutex::new(HashMap::new()),
        }
    }

    /// Admits one request of `node` at `now`, or says which limit it broke. The permit is
    /// to be held while the request is served. `newly_refusing` tells the caller to log.
    fn admit(&self, node: &str, now: Instant) -> Result<OwnedSemaphorePermit, (Refusal, bool)> {
        let mut allowances = lock(&self.allowances);
        let allowance = allowances
            .entry(node.to_owned())
            .or_insert_with(|| Allowance::new(&self.limits, now));
        // In-flight first: a request refused for concurrency costs no token.
        let outcome = match Arc::clone(&allowance.in_flight).try_acquire_owned() {
            Err(_) => Err(Refusal::Concurrency {
                node: node.to_owned(),
                limit: self.limits.concurrent_requests,
            }),
            Ok(permit) if allowance.bucket.take(&self.limits, now) => Ok(permit),
            Ok(_) => Err(Refusal::Rate {
                node: node.to_owned(),
                per_second: self.limits.requests_per_second,
                burst: self.limits.burst,
            }),
        };
        let was_refusing = std::mem::replace(&mut allowance.refusing, outcome.is_err());
        outcome.map_err(|refusal| (refusal, !was_refusing))
    }
}

impl Admission {
    /// Admits one more connection of `node`, or refuses it past the node's cap. The slot is
    /// to be held as long as the connection is open.
    pub(crate) fn admit_connection(&self, node: &str) -> Result<ConnectionSlot, Refusal> {
        let mut allowances = lock(&self.allowances);
        let now = Instant::now();
        let allowance = allowances
            .entry(node.to_owned())
            .or_insert_with(|| Allowance::new(&self.limits, now));
        Arc::clone(&allowance.connections)
            .try_acquire_owned()
            .map(|permit| ConnectionSlot { _permit: permit })
            .map_err(|_| Refusal::Connections {
                node: node.to_owned(),
                limit: self.limits.connections,
            })
    }

    /// How long refusals are held.
    pub(crate) fn refusal_hold(&self) -> Duration {
        self.limits.refusal_hold
    }
}

/// One of a node's connection slots, held by the connection ([`Admission::admit_connection`]).
pub(crate) struct ConnectionSlot {
    _permit: OwnedSemaphorePermit,
}

/// Refused connections held open (unserved) at once before they are closed; past this they
/// are closed at once, so the hold itself cannot pile up.
const MAX_HELD_CONNECTIONS: usize = 256;

/// What stands in front of the service for each new connection: nodes past their connection
/// cap are held for a moment unserved and closed.
#[derive(Clone)]
pub(crate) struct ConnectionGate {
    admission: Arc<Admission>,
    metrics: Arc<CoordinatorMetrics>,
    held: Arc<Semaphore>,
}

impl ConnectionGate {
    /// Admits a connection whose handshake named `identity`: operators and auditors always,
    /// a node while it has a free slot. A refused connection is given back to be held and
    /// dropped ([`Self::hold_and_close`]).
    pub(crate) fn admit(
        &self,
        identity: &veil_pki::PeerIdentity,
    ) -> Result<Option<ConnectionSlot>, Refusal> {
        if identity.role != Role::Node {
            return Ok(None);
        }
        match self.admission.admit_connection(&identity.name) {
            Ok(slot) => Ok(Some(slot)),
            Err(refusal) => {
                self.metrics
                    .requests_limited
                    .get_or_create(&LimitLabels::new(refusal.limit()))
                    .inc();
                tracing::debug!(node = %identity.name, "refusing a connection past the node's cap");
                Err(refusal)
            }
        }
    }

    /// Keeps a refused connection open, unserved, for the refusal hold, then closes it, so
    /// a flooder that dials again at once is slowed too.
    pub(crate) fn hold_and_close<T: Send + 'static>(&self, connection: T) {
        let Ok(permit) = Arc::clone(&self.held).try_acquire_owned() else {
            return;
        };
        let hold = self.admission.refusal_hold();
        tokio::spawn(async move {
            tokio::time::sleep(hold).await;
            drop(connection);
            drop(permit);
        });
    }
}

/// The tower layer that puts [`Admission`] in front of every service.
#[derive(Clone)]
pub(crate) struct MemberLimitLayer {
    admission: Arc<Admission>,
    metrics: Arc<CoordinatorMetrics>,
}

impl MemberLimitLayer {
    pub(crate) fn new(limits: MemberLimits, metrics: Arc<CoordinatorMetrics>) -> Self {
        Self {
            admission: Arc::new(Admission::new(limits)),
            metrics,
        }
    }

    /// The gate for new connections, sharing this layer's per-node allowances.
    pub(crate) fn connection_gate(&self) -> ConnectionGate {
        ConnectionGate {
            admission: Arc::clone(&self.admission),
            metrics: Arc::clone(&self.metrics),
            held: Arc::new(Semaphore::new(MAX_HELD_CONNECTIONS)),
        }
    }
}

impl<S> tower_layer::Layer<S> for MemberLimitLayer {
    type Service = MemberLimited<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MemberLimited {
            inner,
            layer: self.clone(),
        }
    }
}

/// A service whose node requests pass [`Admission`] first.
#[derive(Clone)]
pub(crate) struct MemberLimited<S> {
    inner: S,
    layer: MemberLimitLayer,
}

type ResponseFuture<E> =
    Pin<Box<dyn Future<Output = Result<http::Response<tonic::body::Body>, E>> + Send>>;

impl<S, B> Service<http::Request<B>> for MemberLimited<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Error>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The service that was polled ready serves this request; a fresh clone stays behind
        // for the next (tower's usual hand-over).
        let fresh = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, fresh);
        let node = request
            .extensions()
            .get::<MtlsConnectInfo>()
            .map(MtlsConnectInfo::identity)
            .filter(|identity| identity.role == Role::Node)
            .map(|identity| identity.name.clone());
        let Some(node) = node else {
            return Box::pin(ready.call(request));
        };
        let hold = self.layer.admission.refusal_hold();
        match self.layer.admission.admit(&node, Instant::now()) {
            Ok(permit) => {
                let served = ready.call(request);
                Box::pin(async move {
                    let response = served.await;
                    // A node refused by its role or certificate (an operator RPC in a loop)
                    // waits for its answer too, holding its request slot meanwhile.
                    if response.as_ref().is_ok_and(is_refusal) {
                        tokio::time::sleep(hold).await;
                    }
                    drop(permit);
                    response
                })
            }
            Err((refusal, newly_refusing)) => {
                self.layer
                    .metrics
                    .requests_limited
                    .get_or_create(&LimitLabels::new(refusal.limit()))
                    .inc();
                if newly_refusing {
                    tracing::warn!(%node, limit = refusal.limit(), "refusing a flooding node's requests");
                }
                let refused = Status::resource_exhausted(refusal.to_string())
                    .into_http::<tonic::body::Body>();
                Box::pin(async move {
                    tokio::time::sleep(hold).await;
                    Ok(refused)
                })
            }
        }
    }
}

/// Whether an answer refuses the caller outright (its role, its certificate, a limit): what an
/// honest node never receives, and so what is held before it is sent. Other errors (a closed
/// phase, a late reply) are answered at once.
fn is_refusal(response: &http::Response<tonic::body::Body>) -> bool {
    let refused = [
        tonic::Code::PermissionDenied,
        tonic::Code::Unauthenticated,
        tonic::Code::ResourceExhausted,
    ];
    response
        .headers()
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok())
        .is_some_and(|code| refused.iter().any(|refused| *refused as i32 == code))
}

/// Longest any request is served, long polls and uploads included: a stream that stalls
/// after its headers frees its slot instead of holding it for ever.
pub(crate) const REQUEST_DEADLINE: Duration = Duration::from_secs(300);

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> MemberLimits {
        MemberLimits {
            requests_per_second: 10.0,
            burst: 5,
            concurrent_requests: 3,
            connections: 2,
            refusal_hold: Duration::from_millis(10),
        }
    }

    #[test]
    fn a_burst_is_admitted_then_the_rate_refills_the_bucket() {
        let admission = Admission::new(limits());
        let start = Instant::now();
        for _ in 0..5 {
            drop(admission.admit("node-a", start).unwrap());
        }
        let (refusal, newly) = admission.admit("node-a", start).unwrap_err();
        assert!(newly);
        assert_eq!(refusal.limit(), "rate");
        assert!(
            refusal.to_string().contains("10 requests per second"),
            "{refusal}"
        );
        // Refused again: not newly, so it is not logged twice.
        assert!(!admission.admit("node-a", start).unwrap_err().1);
        // 10 per second: one token back after 100 ms, not before.
        let later = start + Duration::from_millis(99);
        assert!(admission.admit("node-a", later).is_err());
        let later = start + Duration::from_millis(201);
        drop(admission.admit("node-a", later).unwrap());
        // Another node has its own bucket.
        drop(admission.admit("node-b", start).unwrap());
    }

    #[test]
    fn requests_in_flight_are_capped_per_node_and_freed_when_served() {
        let admission = Admission::new(MemberLimits {
            burst: 100,
            ..limits()
        });
        let now = Instant::now();
        let held: Vec<_> = (0..3)
            .map(|_| admission.admit("node-a", now).unwrap())
            .collect();
        let (refusal, _) = admission.admit("node-a", now).unwrap_err();
        assert_eq!(
            refusal,
            Refusal::Concurrency {
                node: "node-a".to_owned(),
                limit: 3
            }
        );
        assert!(refusal.to_string().contains("3 requests in flight"));
        drop(admission.admit("node-b", now).unwrap());
        drop(held);
        drop(admission.admit("node-a", now).unwrap());
    }

    #[test]
    fn the_bucket_never_holds_more_than_the_burst() {
        let admission = Admission::new(limits());
        let start = Instant::now();
        drop(admission.admit("node-a", start).unwrap());
        let much_later = start + Duration::from_secs(3600);
        for _ in 0..5 {
            drop(admission.admit("node-a", much_later).unwrap());
        }
        assert!(admission.admit("node-a", much_later).is_err());
    }

    #[test]
    fn connections_are_capped_per_node_and_freed_when_closed() {
        let admission = Admission::new(limits());
        let first = admission.admit_connection("node-a").unwrap();
        let _second = admission.admit_connection("node-a").unwrap();
        let refusal = admission.admit_connection("node-a").err().unwrap();
        assert_eq!(
            refusal,
            Refusal::Connections {
                node: "node-a".to_owned(),
                limit: 2
            }
        );
        assert_eq!(refusal.limit(), "connections");
        assert!(refusal.to_string().contains("2 connections"), "{refusal}");
        // Another node has its own slots; a closed connection frees one.
        drop(admission.admit_connection("node-b").unwrap());
        drop(first);
        drop(admission.admit_connection("node-a").unwrap());
    }

    #[test]
    fn only_outright_refusals_are_held() {
        let answer = |status: Status| is_refusal(&status.into_http::<tonic::body::Body>());
        assert!(answer(Status::permission_denied(
            "a node may not call this"
        )));
        assert!(answer(Status::unauthenticated("revoked")));
        assert!(answer(Status::resource_exhausted("rate")));
        // What an honest node meets in a round is answered at once.
        assert!(!answer(Status::failed_precondition("the phase closed")));
        assert!(!answer(Status::invalid_argument("wrong shape")));
        assert!(!answer(Status::not_found("no such job")));
    }
}
