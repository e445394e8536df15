//! The node's gRPC client: registration, long polls, chunked downloads and
//! idempotent, retried submissions. Every call has a deadline: a coordinator that
//! accepts a request and never answers (a half-open connection, a stalled
//! proxy) costs the node one deadline, then a `DeadlineExceeded` naming the call,
//! which the node treats as transient. Nothing here knows about features or
//! training.

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use veil_pki::ClientTls;
use veil_wire::chunking::{self, VectorAssembler};
use veil_wire::v1::node_service_client::NodeServiceClient;
use veil_wire::v1::{self, result_chunk};
use veil_wire::{MAX_MESSAGE_BYTES, VALUES_PER_CHUNK};

/// How long each call may take before the node gives up on it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CallDeadlines {
    /// A unary call: register, heartbeat, receipts.
    pub unary: Duration,
    /// Added to a long poll's own wait: the coordinator answers a `FetchTask` when a task
    /// arrives or the wait ends, so only a silent coordinator exceeds wait + this.
    pub long_poll_margin: Duration,
    /// A whole model download, every chunk included.
    pub download: Duration,
    /// One attempt at a whole result upload, every chunk included.
    pub upload: Duration,
}

impl Default for CallDeadlines {
    /// Far above what a call takes on a slow cross-organisation link (a model is a few
    /// megabytes at most; `MAX_MESSAGE_BYTES` caps one message at 8 MiB).
    fn default() -> Self {
        Self {
            unary: Duration::from_secs(30),
            long_poll_margin: Duration::from_secs(30),
            download: Duration::from_secs(120),
            upload: Duration::from_secs(120),
        }
    }
}

/// Runs one call under its deadline; when the deadline passes, the call is dropped (which
/// resets its stream) and the failure names the call, the coordinator and the deadline.
async fn within<T, E: From<Status>>(
    rpc: &str,
    address: &str,
    deadline: Duration,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    match tokio::time::timeout(deadline, call).await {
        Ok(outcome) => outcome,
        Err(_) => Err(Status::deadline_exceeded(format!(
            "{rpc} to the coordinator at {address} got no answer within its deadline of {deadline:?}"
        ))
        .into()),
    }
}

/// A connection to the coordinator on behalf of one node.
#[derive(Clone)]
pub(crate) struct NodeClient {
    inner: NodeServiceClient<Channel>,
    pub(crate) node_id: String,
    /// The coordinator's address, for hints when the connection fails.
    pub(crate) address: String,
    /// How long each call may take.
    deadlines: CallDeadlines,
}

/// Whether a failed call may succeed if simply repeated.
pub(crate) fn is_transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::Unknown
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::ResourceExhausted
    )
}

impl NodeClient {
    /// A lazily connecting client: the coordinator may not be up yet, and a
    /// dropped connection is re-established on the next call.
    pub(crate) fn new(
        address: &str,
        node_id: &str,
        tls: Option<&ClientTls>,
    ) -> anyhow::Result<Self> {
        Self::with_deadlines(address, node_id, tls, CallDeadlines::default())
    }

    /// [`NodeClient::new`] with other deadlines.
    pub(crate) fn with_deadlines(
        address: &str,
        node_id: &str,
        tls: Option<&ClientTls>,
        deadlines: CallDeadlines,
    ) -> anyhow::Result<Self> {
        let mut endpoint = Endpoint::from_shared(address.to_owned())
            .with_context(|| format!("'{address}' is not a valid coordinator address"))?
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        if let Some(tls) = tls {
            endpoint = endpoint
                .tls_config(tls.tonic_config())
                .context("node TLS settings")?;
        }
        let inner = NodeServiceClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok(Self {
            inner,
            node_id: node_id.to_owned(),
            address: address.to_owned(),
            deadlines,
        })
    }

    pub(crate) async fn register(
        &mut self,
        identity_public_key: [u8; 32],
        certificate_der: &[u8],
    ) -> Result<v1::RegisterResponse, Status> {
        let request = v1::RegisterRequest {
            node_id: self.node_id.clone(),
            software_version: concat!("client-node ", env!("CARGO_PKG_VERSION")).to_owned(),
            identity_public_key: identity_public_key.to_vec(),
            certificate_der: certificate_der.to_vec(),
        };
        let call = self.inner.register(request);
        let response = within("Register", &self.address, self.deadlines.unary, call).await?;
        Ok(response.into_inner())
    }

    pub(crate) async fn heartbeat(&mut self) -> Result<(), Status> {
        let request = v1::HeartbeatRequest {
            node_id: self.node_id.clone(),
        };
        let call = self.inner.heartbeat(request);
        within("Heartbeat", &self.address, self.deadlines.unary, call)
            .await
            .map(|_| ())
    }

    pub(crate) async fn fetch_receipts(
        &mut self,
        after_seq: Option<u64>,
    ) -> Result<Vec<v1::Receipt>, Status> {
        let request = v1::FetchReceiptsRequest {
            node_id: self.node_id.clone(),
            after_seq,
        };
        let call = self.inner.fetch_receipts(request);
        let response = within("FetchReceipts", &self.address, self.deadlines.unary, call).await?;
        Ok(response.into_inner().receipts)
    }

    pub(crate) async fn fetch_task(&mut self, wait: Duration) -> Result<Option<v1::Task>, Status> {
        let request = v1::FetchTaskRequest {
            node_id: self.node_id.clone(),
            wait_ms: wait.as_millis().min(u128::from(u32::MAX)) as u32,
        };
        let deadline = wait + self.deadlines.long_poll_margin;
        let call = self.inner.fetch_task(request);
        let response = within("FetchTask", &self.address, deadline, call).await?;
        Ok(response.into_inner().task)
    }

    /// Downloads the global model a task names, refusing anything but
    /// exactly `expected_len` values.
    pub(crate) async fn download_model(
        &mut self,
        job_id: &str,
        model_version: u32,
        expected_len: u64,
    ) -> anyhow::Result<Vec<f32>> {
        let request = v1::DownloadModelRequest {
            node_id: self.node_id.clone(),
            job_id: job_id.to_owned(),
            model_version,
        };
        let mut inner = self.inner.clone();
        // Each chunk is checked as it arrives, so a coordinator cannot make the node buffer
        // more than the model it expects.
        let download = async move {
            let mut stream = inner
                .download_model(request)
                .await
                .with_context(|| format!("downloading model version {model_version} of {job_id}"))?
                .into_inner();
            let mut assembler = VectorAssembler::new(expected_len, expected_len)?;
            while let Some(chunk) = stream.message().await? {
                assembler
                    .push(chunk.offset, &chunk.values)
                    .with_context(|| format!("model version {model_version} of {job_id}"))?;
            }
            anyhow::Ok(assembler.finish()?)
        };
        within(
            "DownloadModel",
            &self.address,
            self.deadlines.download,
            download,
        )
        .await
    }

    /// Sends one result as a header and chunked body, retrying transient
    /// failures: submits are idempotent on the coordinator side.
    pub(crate) async fn submit(
        &mut self,
        header: v1::ResultHeader,
        body: ResultBody<'_>,
    ) -> Result<bool, Status> {
        let chunks: Vec<Vec<u8>> = match body {
            ResultBody::Values(vector) => chunking::chunks(vector, VALUES_PER_CHUNK)
                .map(|(_, bytes)| bytes)
                .collect(),
            ResultBody::Bytes(bytes) => bytes
                .chunks(VALUES_PER_CHUNK * 4)
                .map(<[u8]>::to_vec)
                .collect(),
            ResultBody::Empty => Vec::new(),
        };
        let mut delay = Duration::from_millis(200);
        let mut attempt = 1;
        loop {
            let mut messages = vec![v1::ResultChunk {
                body: Some(result_chunk::Body::Header(header.clone())),
            }];
            messages.extend(chunks.iter().map(|bytes| v1::ResultChunk {
                body: Some(result_chunk::Body::Values(bytes.clone())),
            }));
            let call = self.inner.submit_result(tokio_stream::iter(messages));
            match within("SubmitResult", &self.address, self.deadlines.upload, call).await {
                Ok(response) => return Ok(response.into_inner().duplicate),
                Err(status) if is_transient(&status) && attempt < 5 => {
                    tracing::warn!(attempt, code = ?status.code(), "submit failed, retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                    attempt += 1;
                }
                Err(status) => return Err(status),
            }
        }
    }
}

/// What follows a result header.
pub(crate) enum ResultBody<'a> {
    /// A plain model delta, as f32 chunks.
    Values(&'a [f32]),
    /// A secure-aggregation message.
    Bytes(&'a [u8]),
    /// Nothing (a decline).
    Empty,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Short deadlines: the coordinator below never answers, so only the outcome, not the
    /// time it takes, depends on them.
    const SHORT: Duration = Duration::from_millis(300);

    #[tokio::test]
    async fn every_call_to_a_silent_coordinator_fails_at_its_deadline_by_name() {
        // Accepts connections and never says a word: a half-open link or a stalled proxy.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let deadlines = CallDeadlines {
            unary: SHORT,
            long_poll_margin: SHORT,
            download: SHORT,
            upload: SHORT,
        };
        let mut client = NodeClient::with_deadlines(&address, "node-1", None, deadlines).unwrap();
        let check = |rpc: &str, status: Status| {
            assert_eq!(status.code(), Code::DeadlineExceeded, "{rpc}: {status}");
            assert!(
                status.message().contains(rpc) && status.message().contains(&address),
                "{status}"
            );
            assert!(
                is_transient(&status),
                "{rpc}: the node retries a missed deadline"
            );
        };
        check(
            "Register",
            client.register([7; 32], b"der").await.unwrap_err(),
        );
        check("Heartbeat", client.heartbeat().await.unwrap_err());
        check(
            "FetchReceipts",
            client.fetch_receipts(None).await.unwrap_err(),
        );
        check(
            "FetchTask",
            client
                .fetch_task(Duration::from_millis(100))
                .await
                .unwrap_err(),
        );
        let download = client.download_model("job-1", 1, 4).await.unwrap_err();
        let status = download
            .downcast::<Status>()
            .unwrap_or_else(|error| panic!("not a status: {error:#}"));
        check("DownloadModel", status);
        silent.abort();
    }
}
