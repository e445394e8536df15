//! The node's gRPC client: registration, long polls, chunked downloads and
//! idempotent, retried submissions. Nothing here knows about features or
//! training.

use std::time::Duration;

use anyhow::Context;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use veil_pki::ClientTls;
use veil_wire::chunking::{self, VectorAssembler};
use veil_wire::v1::node_service_client::NodeServiceClient;
use veil_wire::v1::{self, result_chunk};
use veil_wire::{MAX_MESSAGE_BYTES, VALUES_PER_CHUNK};

/// A connection to the coordinator on behalf of one node.
#[derive(Clone)]
pub(crate) struct NodeClient {
    inner: NodeServiceClient<Channel>,
    pub(crate) node_id: String,
    /// The coordinator's address, for hints when the connection fails.
    pub(crate) address: String,
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
        Ok(self.inner.register(request).await?.into_inner())
    }

    pub(crate) async fn heartbeat(&mut self) -> Result<(), Status> {
        let request = v1::HeartbeatRequest {
            node_id: self.node_id.clone(),
        };
        self.inner.heartbeat(request).await.map(|_| ())
    }

    pub(crate) async fn fetch_receipts(
        &mut self,
        after_seq: Option<u64>,
    ) -> Result<Vec<v1::Receipt>, Status> {
        let request = v1::FetchReceiptsRequest {
            node_id: self.node_id.clone(),
            after_seq,
        };
        Ok(self
            .inner
            .fetch_receipts(request)
            .await?
            .into_inner()
            .receipts)
    }

    pub(crate) async fn fetch_task(&mut self, wait: Duration) -> Result<Option<v1::Task>, Status> {
        let request = v1::FetchTaskRequest {
            node_id: self.node_id.clone(),
            wait_ms: wait.as_millis().min(u128::from(u32::MAX)) as u32,
        };
        Ok(self.inner.fetch_task(request).await?.into_inner().task)
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
        let mut stream = self
            .inner
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
        Ok(assembler.finish()?)
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
            match self.inner.submit_result(tokio_stream::iter(messages)).await {
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
