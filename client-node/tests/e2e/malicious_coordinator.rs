//! A malicious coordinator over real gRPC and real mTLS: a scripted
//! `NodeService` (the coordinator's role, with a genuine coordinator
//! certificate from the federation CA) hands a real client node crafted
//! tasks, and the tests check what leaves the node byte for byte. The
//! protocol-level attacks (retries, split views, evaluations) are in
//! `crates/node-protocol/tests/adversarial.rs`, against the same state
//! machine this node runs.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use client_node::config::NodeConfig;
use client_node::memory_store::MemoryStore;
use client_node::policy::NodePolicy;
use ring::signature::KeyPair;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};
use veil_federation::secure::{GraphSeedInput, round_graph_seed, secure_round_parameters};
use veil_federation::{AggregationMode, DeclineCode, Phase, ReplyEncoding, SecureStep};
use veil_pki::LocalPki;
use veil_pki::{CertificateRequest, FederationCa, Role, Validity};
use veil_wire::v1::node_service_server::{NodeService, NodeServiceServer};
use veil_wire::v1::{self, result_chunk};

use crate::support;

/// How long any wait in these tests may take before it fails by name.
const PATIENCE: Duration = Duration::from_secs(120);

/// What the node sent: the header and the body's bytes.
#[derive(Debug, Clone, PartialEq)]
struct Sent {
    header: v1::ResultHeader,
    body: Vec<u8>,
}

/// The scripted coordinator: hands out queued tasks, records submissions.
struct Scripted {
    tasks: Mutex<VecDeque<v1::Task>>,
    sent: mpsc::UnboundedSender<Sent>,
    audit_key_hex: String,
    parameters: Vec<f32>,
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<v1::ModelChunk, Status>> + Send>>;

#[tonic::async_trait]
impl NodeService for Scripted {
    async fn register(
        &self,
        _request: Request<v1::RegisterRequest>,
    ) -> Result<Response<v1::RegisterResponse>, Status> {
        Ok(Response::new(v1::RegisterResponse {
            heartbeat_interval_ms: 1000,
            max_message_bytes: veil_wire::MAX_MESSAGE_BYTES as u32,
            audit_public_key: self.audit_key_hex.clone(),
        }))
    }

    async fn heartbeat(
        &self,
        _request: Request<v1::HeartbeatRequest>,
    ) -> Result<Response<v1::HeartbeatResponse>, Status> {
        Ok(Response::new(v1::HeartbeatResponse {}))
    }

    async fn fetch_task(
        &self,
        _request: Request<v1::FetchTaskRequest>,
    ) -> Result<Response<v1::FetchTaskResponse>, Status> {
        let task = self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front();
        if task.is_none() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Response::new(v1::FetchTaskResponse { task }))
    }

    type DownloadModelStream = ChunkStream;

    async fn download_model(
        &self,
        _request: Request<v1::DownloadModelRequest>,
    ) -> Result<Response<Self::DownloadModelStream>, Status> {
        let values: Vec<u8> = self
            .parameters
            .iter()
            .flat_map(|value| value.to_le_bytes())
            .collect();
        let chunk = v1::ModelChunk {
            offset: 0,
            total_parameters: self.parameters.len() as u64,
            values,
        };
        Ok(Response::new(Box::pin(tokio_stream::iter(vec![Ok(chunk)]))))
    }

    async fn submit_result(
        &self,
        request: Request<Streaming<v1::ResultChunk>>,
    ) -> Result<Response<v1::SubmitResultResponse>, Status> {
        let mut stream = request.into_inner();
        let mut header = None;
        let mut body = Vec::new();
        while let Some(chunk) = stream.message().await? {
            match chunk.body {
                Some(result_chunk::Body::Header(first)) => header = Some(first),
                Some(result_chunk::Body::Values(bytes)) => body.extend_from_slice(&bytes),
                None => {}
            }
        }
        let header = header.ok_or_else(|| Status::invalid_argument("no header"))?;
        let _ = self.sent.send(Sent { header, body });
        Ok(Response::new(v1::SubmitResultResponse { duplicate: false }))
    }

    async fn fetch_receipts(
        &self,
        _request: Request<v1::FetchReceiptsRequest>,
    ) -> Result<Response<v1::FetchReceiptsResponse>, Status> {
        Ok(Response::new(v1::FetchReceiptsResponse {
            receipts: Vec::new(),
        }))
    }
}

/// A federation folder: the CA, a genuine coordinator certificate, and the
/// victim's member folder.
struct Setup {
    _dir: tempfile::TempDir,
    root: PathBuf,
    pki: LocalPki,
    data: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    let pki = LocalPki::create(&root.join("pki")).unwrap();
    pki.member(Role::Node, "victim").unwrap();
    let synth = veil_synth_data::SynthConfig::demo(1, 11);
    let files = veil_synth_data::write_partner_files(&synth, &root.join("data")).unwrap();
    Setup {
        _dir: dir,
        root,
        pki,
        data: files[0].clone(),
    }
}

/// Serves `tasks` over mTLS with the federation's coordinator certificate.
async fn serve(
    setup: &Setup,
    tasks: Vec<v1::Task>,
    parameters: usize,
) -> (String, mpsc::UnboundedReceiver<Sent>, Arc<Scripted>) {
    let coordinator = setup.pki.coordinator().unwrap();
    let server_tls = coordinator
        .server(setup.pki.revocations().unwrap())
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    let (sender, receiver) = mpsc::unbounded_channel();
    let audit = ring::signature::Ed25519KeyPair::from_seed_unchecked(&[5; 32]).unwrap();
    let audit_key_hex: String = audit
        .public_key()
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let scripted = Arc::new(Scripted {
        tasks: Mutex::new(tasks.into()),
        sent: sender,
        audit_key_hex,
        parameters: vec![0.0; parameters],
    });
    let service = NodeServiceServer::from_arc(Arc::clone(&scripted));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(veil_pki::tls_incoming(listener, &server_tls)),
    );
    (address, receiver, scripted)
}

fn victim_config(setup: &Setup, address: &str) -> NodeConfig {
    NodeConfig {
        node_id: "victim".to_owned(),
        coordinator: address.to_owned(),
        data: veil_behaviour_features::CsvSource::new(setup.data.clone()).into(),
        state_dir: Some(setup.root.join("victim.state")),
        policy: NodePolicy {
            allow_plain_aggregation: true,
            ..Default::default()
        },
        tls_dir: Some(setup.pki.folder("victim")),
        insecure_dev: false,
        privacy_audit_kit: None,
    }
}

fn job(mode: &str, rounds: u32) -> v1::JobSpec {
    let mut job = veil_job::standard_job("2024-10-02", 90);
    job.rounds = rounds;
    job.model_mut().kind = "logistic_regression".to_owned();
    job.model_mut().hidden = Vec::new();
    job.aggregation.mode = Some(mode.to_owned());
    job.to_wire()
}

/// Waits for the next submission, failing by name after [`PATIENCE`].
async fn next_sent(receiver: &mut mpsc::UnboundedReceiver<Sent>, what: &str) -> Sent {
    tokio::time::timeout(PATIENCE, receiver.recv())
        .await
        .unwrap_or_else(|_| panic!("the node never sent {what}"))
        .unwrap_or_else(|| panic!("the scripted coordinator closed before {what}"))
}

fn start_victim(
    config: NodeConfig,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        let result = client_node::node::run(config, async {
            let _ = stopped.await;
        })
        .await;
        if let Err(error) = result {
            panic!("the node stopped: {error:#}");
        }
    });
    (stop, handle)
}

fn refusals(state: &Path) -> Vec<String> {
    MemoryStore::open(state)
        .unwrap()
        .refusals()
        .unwrap()
        .into_iter()
        .map(|refusal| refusal.code)
        .collect()
}

/// Checks that `answer` is a `peer-certificate-rejected` decline and
/// nothing else (no protocol message, no body), stops the victim, and checks
/// that its store holds that one refusal.
async fn refused_for_a_peer_certificate(
    answer: Sent,
    stop: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<()>,
    state: &Path,
) {
    assert_eq!(
        answer.header.decline_code,
        DeclineCode::PeerCertificateRejected.wire_value(),
        "{answer:?}"
    );
    assert_eq!(answer.header.secure_step, 0, "no protocol message");
    assert!(answer.body.is_empty(), "nothing but the code leaves");
    let _ = stop.send(());
    let _ = handle.await;
    assert_eq!(
        refusals(state),
        vec!["peer-certificate-rejected".to_owned()]
    );
}

/// The victim's own credential, as a coordinator relays it.
fn victim_identity(setup: &Setup) -> v1::NodeIdentity {
    member_identity(setup, "victim")
}

/// Credentials of two genuine peers, `peer-a` and `peer-b`, enrolled with the
/// federation's CA on first use.
fn genuine_peers(setup: &Setup) -> Vec<v1::NodeIdentity> {
    ["peer-a", "peer-b"]
        .into_iter()
        .map(|name| {
            if !setup.pki.folder(name).exists() {
                setup.pki.member(Role::Node, name).unwrap();
            }
            member_identity(setup, name)
        })
        .collect()
}

/// A member's genuine credential from its folder, as a coordinator relays it.
fn member_identity(setup: &Setup, name: &str) -> v1::NodeIdentity {
    let (_, pem, key) = veil_pki::MemberFiles::in_folder(&setup.pki.folder(name), name)
        .load()
        .unwrap();
    v1::NodeIdentity {
        node_id: name.to_owned(),
        public_key: key.public_key().0.to_vec(),
        certificate_der: veil_pki::certificate_der_from_pem(&pem).unwrap(),
    }
}

/// A secure feature-statistics task of a 3-node cohort (the victim and
/// `peers`), with every parameter an honest coordinator would send, then
/// edited by `tamper`.
fn feature_stats_task(
    setup: &Setup,
    peers: Vec<v1::NodeIdentity>,
    tamper: impl Fn(&mut v1::SecureParameters, &mut v1::SecureStepTask),
) -> v1::Task {
    feature_stats_task_at(setup, peers, 1, tamper)
}

/// [`feature_stats_task`] for phase attempt `attempt`.
fn feature_stats_task_at(
    setup: &Setup,
    peers: Vec<v1::NodeIdentity>,
    attempt: u32,
    tamper: impl Fn(&mut v1::SecureParameters, &mut v1::SecureStepTask),
) -> v1::Task {
    let wire = job("secure", 2);
    let spec = veil_job::JobSpec::from_wire(&wire).unwrap();
    let AggregationMode::Secure(settings) = &spec.aggregation else {
        panic!("secure job");
    };
    let mut identities = peers;
    identities.push(victim_identity(setup));
    identities.sort_by(|left, right| left.node_id.cmp(&right.node_id));
    let cohort: Vec<&str> = identities.iter().map(|id| id.node_id.as_str()).collect();
    let graph = secure_round_parameters(cohort.len(), settings).unwrap();
    let shape = spec.plan().reply_shape(0, Phase::FeatureStats);
    let encoding = ReplyEncoding::new(
        shape.vector_len,
        shape.statistics_len,
        cohort.len(),
        settings,
        &spec.privacy.partners,
    )
    .unwrap();
    let mut parameters = v1::SecureParameters {
        cohort: cohort.iter().map(|name| (*name).to_owned()).collect(),
        graph_seed: round_graph_seed(
            &settings.graph_seed,
            GraphSeedInput {
                job: "job-1",
                round: 0,
                phase: Phase::FeatureStats,
                attempt,
                cohort: &cohort,
            },
        )
        .to_vec(),
        neighbour_count: graph.neighbour_count as u32,
        reconstruction_threshold: graph.reconstruction_threshold as u32,
        modulus_bits: settings.modulus_bits,
        vector_length: encoding.encoded_len() as u64,
    };
    let mut secure = v1::SecureStepTask {
        step: v1::SecureStep::AdvertiseKeys as i32,
        attempt,
        parameters: None,
        identities: identities.clone(),
        payload: Vec::new(),
    };
    tamper(&mut parameters, &mut secure);
    secure.parameters = Some(parameters);
    v1::Task {
        job_id: "job-1".to_owned(),
        round: 0,
        phase: v1::Phase::FeatureStats as i32,
        spec: Some(wire),
        deadline_ms: 30_000,
        secure: Some(secure),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invented_peers_are_refused_and_no_key_material_leaves() {
    let _machine = support::share_of_machine().await;
    let setup = setup();
    // The coordinator invents two peers, certified by a CA it controls.
    let attacker = FederationCa::create(
        "attacker",
        Validity::starting_now(Duration::from_secs(86_400)),
    )
    .unwrap();
    let invent = |name: &str| {
        let (issued, key) = attacker
            .issue_with_new_key(&CertificateRequest::member(
                Role::Node,
                name,
                Validity::starting_now(Duration::from_secs(86_400)),
            ))
            .unwrap();
        v1::NodeIdentity {
            node_id: name.to_owned(),
            public_key: key.public_key().0.to_vec(),
            certificate_der: issued.certificate_der.to_vec(),
        }
    };
    let task = feature_stats_task(&setup, vec![invent("peer-a"), invent("peer-b")], |_, _| {});
    let (address, mut sent, _scripted) = serve(&setup, vec![task], 0).await;
    let config = victim_config(&setup, &address);
    let state = config.state_dir();
    let (stop, handle) = start_victim(config);
    let answer = next_sent(&mut sent, "its answer to the forged cohort").await;
    refused_for_a_peer_certificate(answer, stop, handle, &state).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_revoked_after_the_node_verified_it_is_refused_at_the_next_attempt() {
    // The node verifies each certificate once per job and remembers it; a
    // revocation on the node's own list must still reach the next task.
    let _machine = support::share_of_machine().await;
    let setup = setup();
    let peers = || genuine_peers(&setup);
    let first = feature_stats_task(&setup, peers(), |_, _| {});
    let (address, mut sent, scripted) = serve(&setup, vec![first], 0).await;
    let config = victim_config(&setup, &address);
    let state = config.state_dir();
    let (stop, handle) = start_victim(config);
    let answer = next_sent(&mut sent, "its keys for the genuine cohort").await;
    assert_eq!(answer.header.decline_code, 0, "{answer:?}");
    assert_eq!(
        answer.header.secure_step,
        v1::SecureStep::AdvertiseKeys as i32
    );

    // peer-b is revoked on the victim's copy of the list, and the
    // coordinator retries the phase with the same cohort.
    let peer_b = member_identity(&setup, "peer-b");
    let serial = veil_pki::certificate_identity_unverified(&peer_b.certificate_der)
        .unwrap()
        .serial;
    veil_pki::RevocationList::open(setup.pki.folder("victim").join(veil_pki::REVOCATIONS_FILE))
        .unwrap()
        .revoke(&serial, veil_pki::RevocationReason::KeyCompromise)
        .unwrap();
    let retry = feature_stats_task_at(&setup, peers(), 2, |_, _| {});
    scripted.tasks.lock().unwrap().push_back(retry);
    let answer = next_sent(&mut sent, "its answer to the retry").await;
    refused_for_a_peer_certificate(answer, stop, handle, &state).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_changed_mid_job_is_refused_and_a_restarted_node_resends_its_stored_reply() {
    let _machine = support::share_of_machine().await;
    let setup = setup();
    let wire = job("plain", 2);
    let spec = veil_job::JobSpec::from_wire(&wire).unwrap();
    let parameters = spec.model_spec().parameter_count();
    let n_features = spec.features.n_features();
    let train_task = |wire: v1::JobSpec, round: u32| v1::Task {
        job_id: "job-1".to_owned(),
        round,
        phase: v1::Phase::Train as i32,
        spec: Some(wire),
        scaling: Some(v1::Scaling {
            mean: vec![0.0; n_features],
            std: vec![1.0; n_features],
        }),
        parameter_count: parameters as u64,
        deadline_ms: 60_000,
        model_version: 1,
        ..Default::default()
    };
    // Round 1 under the spec the job started with; round 2 under a spec the
    // coordinator changed mid-job (ten times the rounds, the same job id).
    let changed = job("plain", 20);
    let tasks = vec![train_task(wire.clone(), 1), train_task(changed, 2)];
    let (address, mut sent, scripted) = serve(&setup, tasks, parameters).await;
    let config = victim_config(&setup, &address);
    let state = config.state_dir();
    let (stop, handle) = start_victim(config.clone());
    let first = next_sent(&mut sent, "its round 1 update").await;
    assert_eq!(first.header.decline_code, 0, "{:?}", first.header);
    assert_eq!(first.body.len(), parameters * 4);
    let refused = next_sent(&mut sent, "its answer to the changed spec").await;
    assert_eq!(
        refused.header.decline_code,
        DeclineCode::SpecChanged.wire_value()
    );
    assert!(refused.body.is_empty());
    let _ = stop.send(());
    let _ = handle.await;

    // The node restarts; the coordinator asks for round 1 again. The node
    // must not train again (fresh DP-SGD noise, averaged over retries, would
    // cancel out): it sends the identical stored reply.
    scripted
        .tasks
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push_back(train_task(wire, 1));
    let (stop, handle) = start_victim(config);
    let again = next_sent(&mut sent, "its answer after the restart").await;
    assert_eq!(again.header.decline_code, 0);
    assert_eq!(again.body, first.body, "the same update, bit for bit");
    assert_eq!(again.header.weight.to_bits(), first.header.weight.to_bits());
    let _ = stop.send(());
    let _ = handle.await;
    assert_eq!(refusals(&state), vec!["spec-changed".to_owned()]);
    // One charge for round 1, recorded once.
    let ledger = veil_privacy_ledger::SqliteLedger::open(&state.join("ledger.sqlite")).unwrap();
    let charges = ledger.charges_for_partner("victim").unwrap();
    assert_eq!(
        charges.iter().filter(|charge| charge.round == 1).count(),
        charges.len()
    );
    assert!(!charges.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_tls_refuses_to_start_unless_it_says_insecure_dev() {
    let _machine = support::share_of_machine().await;
    let setup = setup();
    let config = NodeConfig {
        tls_dir: None,
        insecure_dev: false,
        ..victim_config(&setup, "http://127.0.0.1:9")
    };
    let error = client_node::node::run(config, std::future::pending())
        .await
        .expect_err("no TLS and no insecure_dev");
    let message = format!("{error:#}");
    assert!(message.contains("no tls_dir configured"), "{message}");
    assert!(message.contains("insecure_dev = true"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downgraded_parameters_a_ground_seed_and_extra_attempts_are_refused_over_the_wire() {
    let _machine = support::share_of_machine().await;
    let setup = setup();
    // Genuine peers this time: only the parameters are the coordinator's doing.
    let peers = || genuine_peers(&setup);
    let tasks = vec![
        // t below what the job's collusion bound requires (a 2-of-3 graph
        // with t = 1 is not even a majority; ProtocolParams refuses it too).
        feature_stats_task(&setup, peers(), |parameters, _| {
            parameters.reconstruction_threshold = 1;
        }),
        feature_stats_task(&setup, peers(), |parameters, _| {
            parameters.graph_seed = vec![0xAB; 32];
        }),
        feature_stats_task(&setup, peers(), |_, secure| secure.attempt = 99),
    ];
    let (address, mut sent, _scripted) = serve(&setup, tasks, 0).await;
    let config = victim_config(&setup, &address);
    let state = config.state_dir();
    let (stop, handle) = start_victim(config);
    let mut codes = Vec::new();
    for what in ["a downgraded t", "a ground seed", "attempt 99"] {
        let answer = next_sent(&mut sent, what).await;
        assert_eq!(answer.header.secure_step, 0, "{what}: no protocol message");
        assert!(
            answer.body.is_empty(),
            "{what}: nothing but the code leaves"
        );
        codes.push(DeclineCode::from_wire_value(answer.header.decline_code));
    }
    let _ = stop.send(());
    let _ = handle.await;
    assert_eq!(
        codes,
        vec![
            Some(DeclineCode::ParametersMismatch),
            Some(DeclineCode::ParametersMismatch),
            Some(DeclineCode::AttemptLimit)
        ]
    );
    assert_eq!(
        refusals(&state),
        vec![
            "parameters-mismatch".to_owned(),
            "parameters-mismatch".to_owned(),
            "attempt-limit".to_owned()
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evaluation_from_a_node_whose_update_is_not_in_the_aggregate_is_refused() {
    let _machine = support::share_of_machine().await;
    let setup = setup();
    let wire = job("plain", 2);
    let spec = veil_job::JobSpec::from_wire(&wire).unwrap();
    let n_features = spec.features.n_features();
    // The node never trained round 1 (it was never asked): the coordinator
    // asks it to evaluate round 1's model anyway, then round 3 of a 2-round job.
    let evaluate = |round: u32| v1::Task {
        job_id: "job-1".to_owned(),
        round,
        phase: v1::Phase::Evaluate as i32,
        spec: Some(wire.clone()),
        scaling: Some(v1::Scaling {
            mean: vec![0.0; n_features],
            std: vec![1.0; n_features],
        }),
        parameter_count: spec.model_spec().parameter_count() as u64,
        deadline_ms: 60_000,
        model_version: 1,
        ..Default::default()
    };
    let (address, mut sent, _scripted) = serve(
        &setup,
        vec![evaluate(1), evaluate(3)],
        spec.model_spec().parameter_count(),
    )
    .await;
    let (stop, handle) = start_victim(victim_config(&setup, &address));
    let first = next_sent(&mut sent, "its answer to round 1's evaluation").await;
    assert_eq!(
        DeclineCode::from_wire_value(first.header.decline_code),
        Some(DeclineCode::EvaluationNotAllowed)
    );
    assert!(first.header.statistics.is_empty() && first.body.is_empty());
    let second = next_sent(&mut sent, "its answer to round 3's evaluation").await;
    assert_eq!(
        DeclineCode::from_wire_value(second.header.decline_code),
        Some(DeclineCode::InvalidTask)
    );
    let _ = stop.send(());
    let _ = handle.await;
}

/// A cohort member the test plays itself: a genuine partner of the
/// federation running the real node state machine (an honest node, or one
/// that colludes with the coordinator by answering whatever it is asked).
struct Peer {
    name: String,
    machine: veil_node_protocol::NodeMachine,
    ledger: Vec<veil_privacy_ledger::Charge>,
}

impl Peer {
    fn new(setup: &Setup, name: &str) -> Self {
        let (root, _, key) = veil_pki::MemberFiles::in_folder(&setup.pki.folder(name), name)
            .load()
            .unwrap();
        let machine = veil_node_protocol::NodeMachine::new(
            veil_node_protocol::MachineIdentity {
                node_id: name.to_owned(),
                signing_key: Arc::new(key.into_key_pair()),
            },
            NodePolicy::default(),
            veil_node_protocol::PeerTrust::Federation {
                root: Arc::new(root),
                revoked: Default::default(),
            },
            veil_node_protocol::NodeMemory::default(),
        );
        Peer {
            name: name.to_owned(),
            machine,
            ledger: Vec::new(),
        }
    }

    /// The peer's answer to `task`: a protocol message, or its refusal.
    fn answer(&mut self, task: &v1::Task) -> Result<(SecureStep, u32, Vec<u8>), DeclineCode> {
        use veil_node_protocol::{Decision, Outgoing, PhaseReply};
        let task = client_node::wire::task_from_wire(task).unwrap();
        let now = unix_now();
        let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::from_os_rng();
        let mut decision = self.machine.handle_task(&task, now, &self.ledger, &mut rng);
        if let Decision::Compute { commit } = decision {
            self.keep(commit);
            let shape = task.spec.plan().reply_shape(task.round, task.phase);
            let reply = PhaseReply {
                weight: task.spec.uniform_weight(),
                statistics: vec![0.0; shape.statistics_len],
                vector: vec![0.0; shape.vector_len],
            };
            decision = self
                .machine
                .reply_computed(&task, reply, now, &self.ledger, &mut rng);
        }
        match decision {
            Decision::Send {
                commit,
                message:
                    Outgoing::Secure {
                        step,
                        attempt,
                        payload,
                    },
            } => {
                self.keep(commit);
                Ok((step, attempt, payload))
            }
            Decision::Decline { code, commit, .. } => {
                self.keep(commit);
                Err(code)
            }
            other => panic!("{}: unexpected decision {other:?}", self.name),
        }
    }

    fn keep(&mut self, records: Vec<veil_node_protocol::Record>) {
        for record in records {
            if let veil_node_protocol::Record::Charge(charge) = record {
                self.ledger.push(charge);
            }
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A cohort member as the coordinator relays it, from the federation folder.
fn cohort_member(setup: &Setup, name: &str) -> veil_federation::secure::CohortMember {
    let (_, pem, key) = veil_pki::MemberFiles::in_folder(&setup.pki.folder(name), name)
        .load()
        .unwrap();
    veil_federation::secure::CohortMember {
        node: name.to_owned(),
        identity_key: key.public_key().0,
        certificate_der: Arc::new(veil_pki::certificate_der_from_pem(&pem).unwrap()),
    }
}

/// The scripted coordinator's side of one attempt of the secure
/// feature-statistics phase: the real SecAgg+ server, the victim over gRPC,
/// the peers in process. Returns how the attempt ended and who refused.
async fn run_attempt(
    setup: &Setup,
    scripted: &Scripted,
    sent: &mut mpsc::UnboundedReceiver<Sent>,
    peers: &mut [Peer],
    cohort: &[&str],
    attempt: u32,
) -> (
    Option<veil_federation::secure::StepOutcome>,
    Vec<(String, DeclineCode)>,
) {
    use veil_federation::secure::{SecureRound, SecureRoundPosition, StepOutcome};
    let wire = job("secure", 2);
    let spec = veil_job::JobSpec::from_wire(&wire).unwrap();
    let AggregationMode::Secure(settings) = &spec.aggregation else {
        panic!("secure job");
    };
    let members = cohort
        .iter()
        .map(|name| cohort_member(setup, name))
        .collect();
    let mut round = SecureRound::open(
        SecureRoundPosition {
            job: "job-1",
            round: 0,
            phase: Phase::FeatureStats,
            attempt,
        },
        members,
        spec.min_participants as usize,
        spec.plan().reply_shape(0, Phase::FeatureStats),
        settings,
        &spec.privacy.partners,
        std::time::Instant::now() + PATIENCE,
    )
    .unwrap_or_else(|error| panic!("attempt {attempt} does not open: {error}"));
    let mut declines = Vec::new();
    loop {
        for name in cohort {
            let Some(task) = round.task_for(name) else {
                continue;
            };
            let wire_task = v1::Task {
                job_id: "job-1".to_owned(),
                round: 0,
                phase: v1::Phase::FeatureStats as i32,
                spec: Some(wire.clone()),
                deadline_ms: 30_000,
                secure: Some(coordinator::convert::secure_task_to_wire(&task)),
                ..Default::default()
            };
            let answer = if *name == "victim" {
                scripted
                    .tasks
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_back(wire_task);
                let reply = next_sent(sent, "the victim's answer").await;
                match DeclineCode::from_wire_value(reply.header.decline_code) {
                    Some(code) => {
                        assert!(reply.body.is_empty(), "a refusal carries nothing");
                        Err(code)
                    }
                    None => Ok((
                        coordinator::convert::secure_step_from_wire(reply.header.secure_step)
                            .unwrap()
                            .expect("a protocol message"),
                        reply.header.secure_attempt,
                        reply.body,
                    )),
                }
            } else {
                peers
                    .iter_mut()
                    .find(|peer| peer.name == *name)
                    .unwrap()
                    .answer(&wire_task)
            };
            match answer {
                Ok((step, attempt, payload)) => {
                    round
                        .accept(name, attempt, step, &payload)
                        .unwrap_or_else(|error| panic!("{name}'s {step} refused: {error}"));
                }
                Err(code) => {
                    round.withdraw(name);
                    declines.push(((*name).to_owned(), code));
                }
            }
        }
        match round.advance(std::time::Instant::now()) {
            StepOutcome::Continue => continue,
            other => return (Some(other), declines),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_masked_input_that_left_is_never_sent_again_not_even_after_a_restart() {
    let _machine = support::share_of_machine().await;
    let setup = setup();
    for peer in ["peer-a", "peer-b"] {
        setup.pki.member(Role::Node, peer).unwrap();
    }
    let mut peers = vec![Peer::new(&setup, "peer-a"), Peer::new(&setup, "peer-b")];
    let cohort = ["peer-a", "peer-b", "victim"];
    let (address, mut sent, scripted) = serve(&setup, Vec::new(), 0).await;
    let config = victim_config(&setup, &address);
    let state = config.state_dir();
    let (stop, handle) = start_victim(config.clone());

    // Attempt 1 runs honestly to the end over real gRPC: the coordinator
    // decodes a sum that holds the victim's input.
    let (outcome, declines) =
        run_attempt(&setup, &scripted, &mut sent, &mut peers, &cohort, 1).await;
    assert!(declines.is_empty(), "{declines:?}");
    match outcome {
        Some(veil_federation::secure::StepOutcome::Finished { contributors, .. }) => {
            let names: Vec<&str> = contributors.iter().map(|node| node.as_str()).collect();
            assert!(names.contains(&"victim"), "{names:?}");
        }
        other => panic!("attempt 1 did not finish: {other:?}"),
    }
    // The victim is killed and restarted from its state folder.
    let _ = stop.send(());
    let _ = handle.await;
    let (stop, handle) = start_victim(config);

    // The coordinator now asks for a second sum of the same phase (to
    // average the noise away, or to drop one node and subtract). Every node
    // whose masked input left refuses: the victim over the wire, after its
    // restart, and the honest peers in process. No second sum exists.
    let (outcome, declines) =
        run_attempt(&setup, &scripted, &mut sent, &mut peers, &cohort, 2).await;
    assert!(
        !matches!(
            outcome,
            Some(veil_federation::secure::StepOutcome::Finished { .. })
        ),
        "{outcome:?}"
    );
    let mut refused: Vec<(String, DeclineCode)> = declines;
    refused.sort_by(|left, right| left.0.cmp(&right.0));
    assert_eq!(
        refused,
        cohort
            .iter()
            .map(|name| ((*name).to_owned(), DeclineCode::AlreadyReleased))
            .collect::<Vec<_>>()
    );
    let _ = stop.send(());
    let _ = handle.await;
    assert_eq!(refusals(&state), vec!["already-released".to_owned()]);
}

/// A plain segment job (so the statistics the node sends are visible), the
/// victim the only partner the scripted coordinator talks to.
fn segment_job() -> v1::JobSpec {
    let mut job = veil_job::standard_job("2024-10-02", 90);
    job.model = None;
    job.training = None;
    job.min_participants = 1;
    job.max_participants = 1;
    job.features.names = ["recency_days", "frequency", "monetary"]
        .map(str::to_owned)
        .to_vec();
    job.aggregation.mode = Some("plain".to_owned());
    job.privacy = Default::default();
    job.privacy.customer_epsilon = Some(1.0);
    job.segment = Some(veil_job::file::SegmentSection {
        k: vec![2],
        iterations: Some(2),
        radius: None,
        damping: None,
        seeding_cells: Some(64),
        seeding_radius: None,
        box_bound: None,
        cost_bound: None,
        with_label: false,
    });
    job.to_wire()
}

fn release_task(wire: &v1::JobSpec, round: u32, parameters: Vec<f64>) -> v1::Task {
    v1::Task {
        job_id: "job-1".to_owned(),
        round,
        phase: v1::Phase::Release as i32,
        spec: Some(wire.clone()),
        deadline_ms: 60_000,
        release_parameters: parameters,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_release_is_noised_charged_first_and_never_recomputed_at_other_centroids() {
    let _machine = support::share_of_machine().await;
    let setup = setup();
    let wire = segment_job();
    let spec = veil_job::JobSpec::from_wire(&wire).unwrap();
    let Some(veil_job::analysis::Analysis::Segment(segment)) = &spec.analysis else {
        panic!("a segment job");
    };
    let seeding = *segment.plan.release(0).unwrap();
    let d = segment.config.n_features;
    let centroids_a: Vec<f64> = vec![0.5; 2 * d];
    let centroids_b: Vec<f64> = vec![-1.0; 2 * d];
    let tasks = vec![
        release_task(&wire, 1, Vec::new()),
        release_task(&wire, 2, centroids_a),
        // The same release again at other centroids: the difference of two
        // answers would show how customers sit between them.
        release_task(&wire, 2, centroids_b),
        // A release the job's plan does not have.
        release_task(&wire, 99, Vec::new()),
        // Centroids the plan's release cannot take (3 for k = 2).
        release_task(&wire, 3, vec![0.0; 3 * d]),
    ];
    let (address, mut sent, _scripted) = serve(&setup, tasks, 0).await;
    let config = victim_config(&setup, &address);
    let state = config.state_dir();
    let (stop, handle) = start_victim(config.clone());

    // The seeding release carries noise: against the node's exact,
    // un-noised vector (computed here from the same de-identified rows), it
    // differs by about the plan's node sigma per value.
    let seeded = next_sent(&mut sent, "its seeding release").await;
    assert_eq!(seeded.header.decline_code, 0, "{:?}", seeded.header);
    assert_eq!(seeded.header.statistics.len(), seeding.dimension);
    let (log, _) = client_node::data::load_partner_data(&config.data).unwrap();
    let rows: Vec<Vec<f64>> =
        veil_behaviour_features::build_examples(&log, &spec.label, &spec.features)
            .into_iter()
            .map(|row| row.features.iter().map(|&v| f64::from(v)).collect())
            .collect();
    let points = veil_segmentation::Points::from_original(
        &rows,
        &spec.features.public_scaling(),
        segment.config.box_bound,
    )
    .unwrap();
    let exact = veil_segmentation::seeding::local_seeding_sums(
        &points,
        &veil_segmentation::seeding::candidate_centres(&segment.config),
        &segment.config,
        &seeding,
    );
    let noise: Vec<f64> = seeded
        .header
        .statistics
        .iter()
        .zip(seeding.to_statistics(&exact))
        .map(|(sent, exact)| (sent - exact) / seeding.granularity())
        .collect();
    let deviation = (noise.iter().map(|n| n * n).sum::<f64>() / noise.len() as f64).sqrt();
    assert!(
        deviation > 0.7 * seeding.node_sigma && deviation < 1.3 * seeding.node_sigma,
        "noise deviation {deviation:.1} against the plan's node sigma {:.1}",
        seeding.node_sigma
    );

    // Release 2 at centroids A, then again at centroids B: the node sends
    // its stored answer to A again, bit for bit.
    let first = next_sent(&mut sent, "its first Lloyd release").await;
    assert_eq!(first.header.decline_code, 0, "{:?}", first.header);
    let again = next_sent(&mut sent, "its answer to other centroids").await;
    assert_eq!(again.header.decline_code, 0, "{:?}", again.header);
    let bits = |values: &[f64]| values.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(
        bits(&again.header.statistics),
        bits(&first.header.statistics),
        "the stored release, not a second one at other centroids"
    );
    let outside = next_sent(&mut sent, "its answer to a release outside the plan").await;
    assert_eq!(
        outside.header.decline_code,
        DeclineCode::InvalidTask.wire_value()
    );
    let misshapen = next_sent(&mut sent, "its answer to misshapen centroids").await;
    assert_ne!(misshapen.header.decline_code, 0, "{:?}", misshapen.header);
    assert!(misshapen.header.statistics.is_empty());
    let _ = stop.send(());
    let _ = handle.await;

    // Charged once per release that left, before it left: rounds 1 and 2.
    let ledger = veil_privacy_ledger::SqliteLedger::open(&state.join("ledger.sqlite")).unwrap();
    let mut rounds: Vec<u64> = ledger
        .charges_for_partner("victim")
        .unwrap()
        .iter()
        .map(|charge| charge.round)
        .collect();
    rounds.sort_unstable();
    assert_eq!(rounds, vec![1, 2]);
}
