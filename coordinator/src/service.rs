//! The tonic services: convert the request, call the engine, map the result.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use veil_audit_log::AuditEvent;
use veil_federation::{EventKind, NodeCredential, Phase, SubmitOutcome};
use veil_job::{JobSpec, statistics};
use veil_wire::VALUES_PER_CHUNK;
use veil_wire::chunking;
use veil_wire::v1;
use veil_wire::v1::node_service_server::NodeService;
use veil_wire::v1::operator_service_server::OperatorService;

use crate::audit::{HeldReceipts, model_digest};
use crate::auth::{self, Gate};
use crate::convert::{
    describe_event, engine_error, job_status, partner_spend_to_wire, phase_to_wire,
    receipt_to_wire, reject_reason, round_metrics, secure_task_to_wire, stored_job_error,
};
use crate::intake::{self, IntakeError, ResultUpload};
use crate::state::{Shared, lock};
use crate::submission::{SubmitError, create_job};

/// Settings the services need at request time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServiceLimits {
    /// Longest a `FetchTask` call is held open.
    pub(crate) max_long_poll: Duration,
    /// Interval nodes are told to heartbeat at.
    pub(crate) heartbeat_interval: Duration,
}

/// Intake refusals are the sender's mistake.
fn intake_error(error: IntakeError) -> Status {
    Status::invalid_argument(error.to_string())
}

fn validate_node_id(node_id: &str) -> Result<(), Status> {
    intake::validate_node_id(node_id).map_err(intake_error)
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<v1::ModelChunk, Status>> + Send>>;

fn model_stream(values: Arc<Vec<f32>>) -> ChunkStream {
    let total = values.len() as u64;
    let chunks: Vec<Result<v1::ModelChunk, Status>> = chunking::chunks(&values, VALUES_PER_CHUNK)
        .map(|(offset, bytes)| {
            Ok(v1::ModelChunk {
                offset,
                total_parameters: total,
                values: bytes,
            })
        })
        .collect();
    // An empty model still sends one chunk so the client learns the total.
    let chunks = if chunks.is_empty() {
        vec![Ok(v1::ModelChunk {
            offset: 0,
            total_parameters: 0,
            values: Vec::new(),
        })]
    } else {
        chunks
    };
    Box::pin(tokio_stream::iter(chunks))
}

/// The node-facing service.
pub(crate) struct NodeApi {
    pub(crate) shared: Arc<Shared>,
    pub(crate) limits: ServiceLimits,
    pub(crate) gate: Gate,
}

#[tonic::async_trait]
impl NodeService for NodeApi {
    async fn register(
        &self,
        request: Request<v1::RegisterRequest>,
    ) -> Result<Response<v1::RegisterResponse>, Status> {
        let identity = self
            .gate
            .allow_node(&request, "Register", &request.get_ref().node_id)?;
        let request = request.into_inner();
        validate_node_id(&request.node_id)?;
        // The secure-aggregation signing key must be the key the CA bound to
        // this node's name, and the certificate it registers (which peers
        // verify themselves) must be the one its handshake presented.
        if let Some(identity) = &identity {
            if request.identity_public_key != identity.ed25519_public_key.0 {
                return Err(Status::permission_denied(format!(
                    "node '{}' advertised an identity key other than its certificate's",
                    request.node_id
                )));
            }
            let registered = veil_pki::certificate_identity_unverified(&request.certificate_der)
                .map_err(|error| {
                    Status::invalid_argument(format!(
                        "node '{}' registered an unreadable certificate: {error}",
                        request.node_id
                    ))
                })?;
            if registered.name != identity.name
                || registered.ed25519_public_key != identity.ed25519_public_key
                || registered.serial != identity.serial
            {
                return Err(Status::permission_denied(format!(
                    "node '{}' registered a certificate other than the one it connected with",
                    request.node_id
                )));
            }
        }
        let identity_key = match request.identity_public_key.len() {
            0 => None,
            32 => {
                let mut key = [0u8; 32];
                key.copy_from_slice(&request.identity_public_key);
                Some(key)
            }
            other => {
                return Err(Status::invalid_argument(format!(
                    "identity_public_key of node '{}' has {other} bytes; an Ed25519 key has 32",
                    request.node_id
                )));
            }
        };
        tracing::info!(
            node = %request.node_id,
            version = %request.software_version,
            secure_capable = identity_key.is_some(),
            "node registered"
        );
        let credential = identity_key.map(|identity_key| NodeCredential {
            identity_key,
            certificate_der: Arc::new(request.certificate_der.clone()),
        });
        self.shared
            .with_engine(|engine, now| engine.register_node(&request.node_id, credential, now));
        crate::console::note_software_version(
            &self.shared,
            &request.node_id,
            &request.software_version,
        );
        Ok(Response::new(v1::RegisterResponse {
            heartbeat_interval_ms: self.limits.heartbeat_interval.as_millis() as u32,
            max_message_bytes: veil_wire::MAX_MESSAGE_BYTES as u32,
            audit_public_key: lock(&self.shared.audit).public_key().to_string(),
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<v1::HeartbeatRequest>,
    ) -> Result<Response<v1::HeartbeatResponse>, Status> {
        self.gate
            .allow_node(&request, "Heartbeat", &request.get_ref().node_id)?;
        let node = request.into_inner().node_id;
        self.shared
            .with_engine(|engine, now| engine.heartbeat(&node, now))
            .map_err(engine_error)?;
        Ok(Response::new(v1::HeartbeatResponse {}))
    }

    async fn fetch_task(
        &self,
        request: Request<v1::FetchTaskRequest>,
    ) -> Result<Response<v1::FetchTaskResponse>, Status> {
        self.gate
            .allow_node(&request, "FetchTask", &request.get_ref().node_id)?;
        let request = request.into_inner();
        let wait = Duration::from_millis(u64::from(request.wait_ms)).min(self.limits.max_long_poll);
        let give_up = tokio::time::Instant::now() + wait;
        loop {
            // Register interest before looking, so a change between the look
            // and the wait is not missed.
            let notified = self.shared.changed.notified();
            let assignment = self
                .shared
                .with_engine(|engine, now| engine.next_task(&request.node_id, now))
                .map_err(engine_error)?;
            if let Some(assignment) = assignment {
                let task = self.shared.read(|engine| build_task(engine, &assignment))?;
                return Ok(Response::new(v1::FetchTaskResponse { task: Some(task) }));
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(give_up) => {
                    return Ok(Response::new(v1::FetchTaskResponse { task: None }));
                }
            }
        }
    }

    type DownloadModelStream = ChunkStream;

    async fn download_model(
        &self,
        request: Request<v1::DownloadModelRequest>,
    ) -> Result<Response<Self::DownloadModelStream>, Status> {
        self.gate
            .allow_node(&request, "DownloadModel", &request.get_ref().node_id)?;
        let request = request.into_inner();
        let values = self
            .shared
            .read(|engine| {
                engine.model_for_node(&request.job_id, &request.node_id, request.model_version)
            })
            .map_err(engine_error)?;
        Ok(Response::new(model_stream(values)))
    }

    async fn fetch_receipts(
        &self,
        request: Request<v1::FetchReceiptsRequest>,
    ) -> Result<Response<v1::FetchReceiptsResponse>, Status> {
        self.gate
            .allow_node(&request, "FetchReceipts", &request.get_ref().node_id)?;
        let request = request.into_inner();
        validate_node_id(&request.node_id)?;
        let held = lock(&self.shared.audit)
            .receipts_for(&request.node_id, request.after_seq)
            .map_err(|unavailable| Status::unavailable(unavailable.to_string()))?;
        let receipts = match held {
            HeldReceipts::Here(receipts) => receipts,
            // A node asking again for receipts it acknowledged (it lost them): the log is
            // read and verified again, off the engine's locks, one such read at a time.
            HeldReceipts::InLogOnly => {
                let _one_at_a_time = self.shared.receipt_reissues.lock().await;
                let verifier = lock(&self.shared.audit).verifier();
                let entries = tokio::task::spawn_blocking(move || verifier.verify())
                    .await
                    .map_err(|error| Status::internal(format!("reading the audit log: {error}")))?
                    .map_err(|reason| {
                        Status::unavailable(format!(
                            "the coordinator's audit log does not verify, so it issues no receipts: {reason}"
                        ))
                    })?;
                lock(&self.shared.audit).reissue_receipts(
                    &entries,
                    &request.node_id,
                    request.after_seq,
                )
            }
        };
        Ok(Response::new(v1::FetchReceiptsResponse {
            receipts: receipts.iter().map(receipt_to_wire).collect(),
        }))
    }

    async fn submit_result(
        &self,
        request: Request<Streaming<v1::ResultChunk>>,
    ) -> Result<Response<v1::SubmitResultResponse>, Status> {
        let identity = self.gate.allow(&request, "SubmitResult", auth::NODE)?;
        let mut stream = request.into_inner();
        let header = intake::result_header(stream.message().await?).map_err(intake_error)?;
        if let Some(identity) = &identity {
            identity
                .require_name(&header.node_id)
                .map_err(Status::from)?;
        }
        // Refuse an oversized upload before reading it: the job's model size
        // bounds what a node may send.
        let parameter_count = self
            .shared
            .read(|engine| {
                engine
                    .plan(&header.job_id)
                    .map(|plan| plan.parameter_count as u64)
            })
            .map_err(engine_error)?;
        let mut upload = ResultUpload::start(header, parameter_count).map_err(intake_error)?;
        while let Some(chunk) = stream.message().await? {
            upload.push(chunk).map_err(intake_error)?;
        }
        let submission = upload.finish().map_err(intake_error)?;
        let outcome = self
            .shared
            .with_engine(|engine, now| engine.submit(&submission, now))
            .map_err(reject_reason)?;
        Ok(Response::new(v1::SubmitResultResponse {
            duplicate: outcome == SubmitOutcome::Duplicate,
        }))
    }
}

fn build_task(
    engine: &veil_federation::Engine<JobSpec>,
    assignment: &veil_federation::TaskAssignment,
) -> Result<v1::Task, Status> {
    let spec = engine.descriptor(&assignment.job).map_err(engine_error)?;
    let scaling = match assignment.phase {
        // An analysis scales publicly, by the features' formulas.
        Phase::FeatureStats | Phase::Release => None,
        Phase::Train | Phase::Evaluate => {
            let sums = engine
                .feature_statistics(&assignment.job)
                .map_err(engine_error)?
                .ok_or_else(|| Status::internal("feature statistics missing after round 0"))?;
            let scaling = statistics::job_scaling(spec, &sums)
                .map_err(|e| Status::internal(e.to_string()))?;
            Some(v1::Scaling {
                mean: scaling.mean,
                std: scaling.std,
            })
        }
    };
    let parameter_count = engine
        .plan(&assignment.job)
        .map_err(engine_error)?
        .parameter_count as u64;
    let remaining = assignment
        .deadline
        .saturating_duration_since(Instant::now());
    Ok(v1::Task {
        job_id: assignment.job.clone(),
        round: assignment.round,
        phase: phase_to_wire(assignment.phase) as i32,
        spec: Some(spec.to_wire()),
        scaling,
        parameter_count,
        deadline_ms: remaining.as_millis().min(u128::from(u32::MAX)) as u32,
        model_version: assignment.model_version,
        secure: assignment.secure.as_ref().map(secure_task_to_wire),
        release_parameters: assignment
            .release_parameters
            .as_deref()
            .cloned()
            .unwrap_or_default(),
    })
}

/// The operator-facing service.
pub(crate) struct OperatorApi {
    pub(crate) shared: Arc<Shared>,
    pub(crate) gate: Gate,
}

impl OperatorApi {
    fn status(&self, job: &str) -> Result<v1::JobStatus, Status> {
        let status = self.shared.status(job).map_err(stored_job_error)?;
        let (mut wire, spec) = self.shared.read(|engine| {
            let spec = engine.descriptor(job).map_err(engine_error)?;
            Ok::<_, Status>((job_status(spec, &status), spec.clone()))
        })?;
        let spend = lock(&self.shared.privacy).job_spend(&spec, job);
        match spend {
            Ok(spend) => wire.privacy = spend.iter().map(partner_spend_to_wire).collect(),
            // The status is still worth having; the ledger's failure is logged
            // by name and the operator sees no spend rather than a wrong one.
            Err(error) => {
                tracing::warn!(job, %error, "cannot compose the job's spend for its status")
            }
        }
        Ok(wire)
    }
}

impl OperatorApi {
    /// [`auth::audit_job_access`] for a submitted job.
    fn check_job_access(
        &self,
        identity: Option<&veil_pki::PeerIdentity>,
        job: &str,
    ) -> Result<(), Status> {
        self.shared.read(|engine| {
            let spec = engine.descriptor(job).map_err(engine_error)?;
            auth::audit_job_access(identity, spec)
        })
    }

    /// Records a model export in the audit log before a byte of it leaves:
    /// an export the log does not hold must not happen.
    fn record_export(
        &self,
        identity: Option<&veil_pki::PeerIdentity>,
        job: &str,
        version: u32,
        values: &[f32],
    ) -> Result<(), Status> {
        let actor = auth::actor(identity);
        let recorded = lock(&self.shared.audit).record(
            &actor,
            AuditEvent::ModelExported {
                job_id: job.to_owned(),
                version: u64::from(version),
                model_sha256: model_digest(values),
                destination: actor.clone(),
            },
        );
        if recorded {
            Ok(())
        } else {
            Err(Status::unavailable(
                "the audit log could not record this export; try again later",
            ))
        }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<v1::JobEvent, Status>> + Send>>;

#[tonic::async_trait]
impl OperatorService for OperatorApi {
    async fn submit_job(
        &self,
        request: Request<v1::SubmitJobRequest>,
    ) -> Result<Response<v1::SubmitJobResponse>, Status> {
        let identity = self
            .gate
            .allow(&request, "SubmitJob", auth::OPERATOR_OR_AUDITOR)?;
        let wire = request
            .into_inner()
            .spec
            .ok_or_else(|| Status::invalid_argument("the request carries no job spec"))?;
        let spec =
            JobSpec::from_wire(&wire).map_err(|e| Status::invalid_argument(e.to_string()))?;
        auth::audit_job_access(identity.as_ref(), &spec)?;
        let job_id = create_job(&self.shared, &auth::actor(identity.as_ref()), &wire, spec)
            .map_err(|error| match error {
                SubmitError::OverBudget(reason) => Status::invalid_argument(reason),
                SubmitError::Engine(error) => engine_error(error),
            })?;
        Ok(Response::new(v1::SubmitJobResponse { job_id }))
    }

    async fn start_job(
        &self,
        request: Request<v1::JobRef>,
    ) -> Result<Response<v1::JobStatus>, Status> {
        let identity = self
            .gate
            .allow(&request, "StartJob", auth::OPERATOR_OR_AUDITOR)?;
        let job = request.into_inner().job_id;
        self.check_job_access(identity.as_ref(), &job)?;
        self.shared
            .with_engine(|engine, now| engine.start_job(&job, now))
            .map_err(engine_error)?;
        Ok(Response::new(self.status(&job)?))
    }

    async fn cancel_job(
        &self,
        request: Request<v1::JobRef>,
    ) -> Result<Response<v1::JobStatus>, Status> {
        self.gate.allow(&request, "CancelJob", auth::OPERATOR)?;
        let job = request.into_inner().job_id;
        self.shared
            .with_engine(|engine, now| engine.cancel_job(&job, now))
            .map_err(engine_error)?;
        Ok(Response::new(self.status(&job)?))
    }

    async fn get_job_status(
        &self,
        request: Request<v1::JobRef>,
    ) -> Result<Response<v1::JobStatus>, Status> {
        self.gate.allow(&request, "GetJobStatus", auth::READER)?;
        Ok(Response::new(self.status(&request.into_inner().job_id)?))
    }

    type WatchJobStream = EventStream;

    async fn watch_job(
        &self,
        request: Request<v1::JobRef>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        self.gate.allow(&request, "WatchJob", auth::READER)?;
        let job = request.into_inner().job_id;
        // Subscribe before reading the status, so no event falls in between.
        let mut events = self.shared.events.subscribe();
        let first = self.status(&job)?;
        let (sender, receiver) = mpsc::channel(64);
        let shared = Arc::clone(&self.shared);
        let gate = self.gate.clone();
        tokio::spawn(async move {
            let status_event = |status: v1::JobStatus| v1::JobEvent {
                job_id: status.job_id.clone(),
                kind: Some(v1::job_event::Kind::Status(status)),
            };
            let finished = |status: &v1::JobStatus| {
                !matches!(
                    v1::JobState::try_from(status.state),
                    Ok(v1::JobState::Pending | v1::JobState::Running)
                )
            };
            let done = finished(&first);
            if sender.send(Ok(status_event(first))).await.is_err() || done {
                return;
            }
            let api = OperatorApi { shared, gate };
            loop {
                // The stream ends with the job's terminal event, not when the
                // status first reads terminal: the engine runs ahead of this
                // watcher, and the events in between (a refused round, the
                // last round's results) must still reach the operator.
                let (message, terminal) = match events.recv().await {
                    Ok(event) if event.job == job => (
                        describe(&api, &event),
                        matches!(
                            event.kind,
                            EventKind::Succeeded | EventKind::Failed { .. } | EventKind::Cancelled
                        ),
                    ),
                    Ok(_) => continue,
                    // Skipped events are summarised by the status that follows,
                    // which also tells whether the end was among them.
                    Err(broadcast::error::RecvError::Lagged(_)) => (None, true),
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if let Some(message) = message {
                    let event = v1::JobEvent {
                        job_id: job.clone(),
                        kind: Some(v1::job_event::Kind::Message(message)),
                    };
                    if sender.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
                let Ok(status) = api.status(&job) else { return };
                let done = terminal && finished(&status);
                if sender.send(Ok(status_event(status))).await.is_err() || done {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    type FetchModelStream = ChunkStream;
    type FetchModelCheckpointStream = ChunkStream;

    async fn fetch_model(
        &self,
        request: Request<v1::JobRef>,
    ) -> Result<Response<Self::FetchModelStream>, Status> {
        let identity = self
            .gate
            .allow(&request, "FetchModel", auth::OPERATOR_OR_AUDITOR)?;
        let job = request.into_inner().job_id;
        self.check_job_access(identity.as_ref(), &job)?;
        let (values, version) = self.shared.final_model(&job).map_err(stored_job_error)?;
        self.record_export(identity.as_ref(), &job, version, &values)?;
        Ok(Response::new(model_stream(values)))
    }

    async fn fetch_model_checkpoint(
        &self,
        request: Request<v1::ModelCheckpointRef>,
    ) -> Result<Response<Self::FetchModelCheckpointStream>, Status> {
        let identity =
            self.gate
                .allow(&request, "FetchModelCheckpoint", auth::OPERATOR_OR_AUDITOR)?;
        let wanted = request.into_inner();
        let job = wanted.job_id;
        self.check_job_access(identity.as_ref(), &job)?;
        // Only a finished job's history: a running job's checkpoints are the
        // coordinator's working state, not a release.
        let final_version = self
            .shared
            .read(|engine| engine.final_model_version(&job))
            .map_err(engine_error)?;
        if wanted.model_version > final_version {
            return Err(Status::out_of_range(format!(
                "job {job} has model versions 0 to {final_version}, not {}",
                wanted.model_version
            )));
        }
        let values = self
            .shared
            .model_checkpoint(&job, wanted.model_version)
            .map_err(|error| Status::internal(error.to_string()))?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "the coordinator's store keeps no checkpoint {} of job {job}",
                    wanted.model_version
                ))
            })?;
        let values = Arc::new(values);
        self.record_export(identity.as_ref(), &job, wanted.model_version, &values)?;
        Ok(Response::new(model_stream(values)))
    }

    async fn fetch_model_info(
        &self,
        request: Request<v1::JobRef>,
    ) -> Result<Response<v1::ModelInfo>, Status> {
        let identity = self
            .gate
            .allow(&request, "FetchModelInfo", auth::OPERATOR_OR_AUDITOR)?;
        let job = request.into_inner().job_id;
        self.check_job_access(identity.as_ref(), &job)?;
        // The parameter count is the plan's; the model and the rounds may be in the store only.
        let status = self.shared.status(&job).map_err(stored_job_error)?;
        self.shared.read(|engine| {
            let model_version = engine.final_model_version(&job).map_err(engine_error)?;
            let parameter_count = engine.plan(&job).map_err(engine_error)?.parameter_count;
            let spec = engine.descriptor(&job).map_err(engine_error)?;
            let sums = engine.feature_statistics(&job).map_err(engine_error)?;
            let scaling = statistics::export_scaling(spec, sums.as_deref().map(Vec::as_slice))
                .map_err(|e| Status::internal(e.to_string()))?;
            Ok(Response::new(v1::ModelInfo {
                job_id: job.clone(),
                spec: Some(spec.to_wire()),
                scaling: Some(v1::Scaling {
                    mean: scaling.mean,
                    std: scaling.std,
                }),
                parameter_count: parameter_count as u64,
                final_metrics: status.history.last().map(|r| round_metrics(spec, r)),
                model_version,
            }))
        })
    }
    async fn record_privacy_audit(
        &self,
        request: Request<v1::PrivacyAuditResult>,
    ) -> Result<Response<v1::PrivacyAuditRecorded>, Status> {
        let identity = self
            .gate
            .allow(&request, "RecordPrivacyAudit", auth::AUDITOR)?;
        let result = request.into_inner();
        // The partner and commitment come from the job itself, not the caller.
        let audit = self.shared.read(|engine| {
            let spec = engine.descriptor(&result.job_id).map_err(engine_error)?;
            spec.privacy_audit.clone().ok_or_else(|| {
                Status::failed_precondition(format!("job {} is not a privacy test", result.job_id))
            })
        })?;
        let event = intake::privacy_audit_event(result, audit.partner, audit.commitment)
            .map_err(intake_error)?;
        let recorded = lock(&self.shared.audit).record(&auth::actor(identity.as_ref()), event);
        if !recorded {
            return Err(Status::unavailable(
                "the audit log could not record this result; try again later",
            ));
        }
        Ok(Response::new(v1::PrivacyAuditRecorded {}))
    }
}

/// A one-line description of an event for the operator's stream; completed
/// rounds carry their metrics.
fn describe(api: &OperatorApi, event: &veil_federation::EngineEvent) -> Option<String> {
    match &event.kind {
        EventKind::Submitted | EventKind::Started | EventKind::SecureStepOpened { .. } => None,
        EventKind::PhaseOpened { attempt: 1, .. } => None,
        EventKind::RoundCompleted(record) => {
            let metrics = api
                .shared
                .read(|engine| {
                    engine
                        .descriptor(&event.job)
                        .map(|spec| round_metrics(spec, record))
                })
                .ok()?;
            // A metric the nodes did not release (customer-level DP) is NaN.
            let shown = |value: f64| {
                if value.is_nan() {
                    "not released".to_owned()
                } else {
                    format!("{value:.4}")
                }
            };
            Some(format!(
                "round {} done: train loss {}, eval loss {}, AUC {}",
                record.round,
                shown(metrics.mean_training_loss),
                shown(metrics.eval_loss),
                shown(metrics.eval_auc)
            ))
        }
        kind => describe_event(kind),
    }
}
