//! A coordinator that deviates from the protocol, against real node state
//! machines: real certificates from a real CA, the real SecAgg+ server
//! (`SecureRound`) driven by a scripted coordinator, and real SecAgg+ clients
//! inside every node's machine, with time passed in. Each test performs one
//! attack and checks that the victim refuses with the right code, that the
//! refusal is among its durable records, and that nothing decodable about a
//! single node comes out.

use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use ring::signature::{Ed25519KeyPair, KeyPair};
use veil_federation::secure::{
    CohortMember, FinishedInstance, GraphSeedInput, SecureRound, SecureRoundPosition, StepOutcome,
    round_graph_seed, secure_round_parameters,
};
use veil_federation::{AggregationMode, DeclineCode, Phase, SecureStep, SecureTask};
use veil_job::JobSpec;
use veil_node_protocol::{
    Decision, MachineIdentity, MemberCredential, NodeMachine, NodeMemory, NodePolicy, NodeTask,
    Outgoing, PeerTrust, PhaseReply, Record, SecureRequest,
};
use veil_pki::{CertificateRequest, FederationCa, IdentityKey, Role, Validity};
use veil_privacy_ledger::{Charge, Release, compose};

const NOW_UNIX: u64 = 1_900_000_000;

/// A job of `rounds` rounds over `min`..=`max` participants, secure, with
/// partner-level noise off so sums are exact.
fn job_spec(name: &str, rounds: u32, min: u32, max: u32, collusion: f64) -> JobSpec {
    let text = format!(
        r#"
name = "{name}"
rounds = {rounds}
min_participants = {min}
max_participants = {max}
seed = 7

[task]
kind = "churn"
cutoff = "2024-10-01"
horizon_days = 90

[model]
kind = "logistic_regression"

[training]
local_epochs = 1
batch_size = 32
learning_rate = 0.05
optimizer = "sgd"

[aggregation]
mode = "secure"
collusion_fraction = {collusion}

[privacy]
customers = "dp-sgd"
customer_noise_multiplier = 1.0
customer_sampling_rate = 0.5
partners = "off"
"#
    );
    let wire = veil_job::file::JobFile::parse(&text)
        .unwrap_or_else(|error| panic!("job file: {error}"))
        .to_wire();
    JobSpec::from_wire(&wire).unwrap_or_else(|error| panic!("job spec: {error}"))
}

fn digest_of(text: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(digest.as_ref());
    bytes
}

/// One enrolled member: its name, key and certificate.
struct Member {
    name: String,
    key: Arc<Ed25519KeyPair>,
    public_key: [u8; 32],
    certificate_der: Vec<u8>,
}

fn enrol(ca: &FederationCa, name: &str) -> Member {
    enrol_for(
        ca,
        name,
        Validity::starting_now(Duration::from_secs(100 * 365 * 86_400)),
    )
}

fn enrol_for(ca: &FederationCa, name: &str, validity: Validity) -> Member {
    let (issued, key): (_, IdentityKey) = ca
        .issue_with_new_key(&CertificateRequest::member(Role::Node, name, validity))
        .unwrap_or_else(|error| panic!("issue {name}: {error}"));
    let key = Arc::new(key.into_key_pair());
    let mut public_key = [0u8; 32];
    public_key.copy_from_slice(key.public_key().as_ref());
    Member {
        name: name.to_owned(),
        key,
        public_key,
        certificate_der: issued.certificate_der.to_vec(),
    }
}

fn federation_ca() -> FederationCa {
    FederationCa::create(
        "veil-test",
        Validity::starting_now(Duration::from_secs(100 * 365 * 86_400)),
    )
    .unwrap_or_else(|error| panic!("CA: {error}"))
}

/// A node: its machine, its durable records and its ledger.
struct Node {
    member: Member,
    machine: NodeMachine,
    records: Vec<Record>,
    ledger: Vec<Charge>,
    /// How many times the machine asked for the reply to be computed.
    computed: usize,
    policy: NodePolicy,
    trust: PeerTrust,
    /// The node's clock, passed to its machine with every task.
    now_unix: u64,
}

impl Node {
    fn new(member: Member, ca: &FederationCa, policy: NodePolicy) -> Self {
        let trust = PeerTrust::Federation {
            root: Arc::new(ca.root().clone()),
            revoked: Default::default(),
        };
        Self::with_trust(member, trust, policy)
    }

    fn with_trust(member: Member, trust: PeerTrust, policy: NodePolicy) -> Self {
        let machine = NodeMachine::new(
            MachineIdentity {
                node_id: member.name.clone(),
                signing_key: Arc::clone(&member.key),
            },
            policy.clone(),
            trust.clone(),
            NodeMemory::default(),
        );
        Node {
            member,
            machine,
            records: Vec::new(),
            ledger: Vec::new(),
            computed: 0,
            policy,
            trust,
            now_unix: NOW_UNIX,
        }
    }

    /// The node restarts: a new machine from its durable records only.
    fn restart(&mut self) {
        let mut memory = NodeMemory::default();
        for record in &self.records {
            memory.apply(record);
        }
        self.machine = NodeMachine::new(
            MachineIdentity {
                node_id: self.member.name.clone(),
                signing_key: Arc::clone(&self.member.key),
            },
            self.policy.clone(),
            self.trust.clone(),
            memory,
        );
    }

    fn commit(&mut self, records: Vec<Record>) {
        for record in records {
            if let Record::Charge(charge) = &record {
                self.ledger.push(charge.clone());
            }
            self.records.push(record);
        }
    }

    /// The node's own reply to a phase: a recognisable vector.
    fn reply(&self, spec: &JobSpec, phase: Phase, marker: f32) -> PhaseReply {
        // Training shapes do not depend on the round.
        let shape = spec.plan().reply_shape(1, phase);
        PhaseReply {
            weight: spec.uniform_weight(),
            statistics: vec![0.0; shape.statistics_len],
            vector: vec![marker; shape.vector_len],
        }
    }

    /// Hands a task to the machine; computes when asked; returns what the
    /// node would send, or its refusal code.
    fn answer(&mut self, task: &NodeTask, marker: f32) -> Result<Outgoing, DeclineCode> {
        let mut rng = ChaCha20Rng::seed_from_u64(marker.to_bits().into());
        let mut decision = self
            .machine
            .handle_task(task, self.now_unix, &self.ledger, &mut rng);
        if let Decision::Compute { commit } = decision {
            self.commit(commit);
            self.computed += 1;
            let reply = self.reply(&task.spec, task.phase, marker);
            decision =
                self.machine
                    .reply_computed(task, reply, self.now_unix, &self.ledger, &mut rng);
        }
        match decision {
            Decision::Send { commit, message } => {
                self.commit(commit);
                Ok(message)
            }
            Decision::Decline { code, commit, .. } => {
                assert!(
                    commit.iter().any(|record| matches!(
                        record,
                        Record::Refusal { code: recorded, .. } if *recorded == code
                    )),
                    "a refusal must be recorded"
                );
                self.commit(commit);
                Err(code)
            }
            Decision::Compute { .. } => panic!("asked to compute twice"),
        }
    }

    fn refusals(&self) -> Vec<DeclineCode> {
        self.records
            .iter()
            .filter_map(|record| match record {
                Record::Refusal { code, .. } => Some(*code),
                _ => None,
            })
            .collect()
    }
}

fn request_of(task: &SecureTask) -> SecureRequest {
    let params = &task.params;
    SecureRequest {
        step: task.step,
        attempt: task.attempt,
        cohort: params
            .cohort()
            .iter()
            .map(|node| node.as_str().to_owned())
            .collect(),
        graph_seed: *params.graph_seed(),
        neighbour_count: params.neighbour_count(),
        reconstruction_threshold: params.reconstruction_threshold(),
        modulus_bits: params.modulus_bits(),
        vector_length: params.vector_length(),
        members: task
            .members
            .iter()
            .map(|member| MemberCredential {
                node_id: member.node.clone(),
                certificate_der: member.certificate_der.as_ref().clone(),
                claimed_key: member.identity_key.to_vec(),
            })
            .collect(),
        payload: task.payload.as_ref().clone(),
    }
}

fn node_task(
    spec: &JobSpec,
    digest: [u8; 32],
    round: u32,
    phase: Phase,
    secure: Option<SecureRequest>,
) -> NodeTask {
    NodeTask {
        job_id: "job-1".to_owned(),
        round,
        phase,
        spec: spec.clone(),
        spec_digest: digest,
        secure,
        release_parameters: Vec::new(),
    }
}

fn cohort_of(nodes: &[Node]) -> Vec<CohortMember> {
    nodes
        .iter()
        .map(|node| CohortMember {
            node: node.member.name.clone(),
            identity_key: node.member.public_key,
            certificate_der: Arc::new(node.member.certificate_der.clone()),
        })
        .collect()
}

/// The scripted coordinator's view of one attempt.
struct Attempt {
    round: SecureRound,
    now: Instant,
}

impl Attempt {
    /// Hands `node` its task for the attempt's first step and returns its answer.
    fn first_answer(
        &self,
        node: &mut Node,
        name: &str,
        spec: &JobSpec,
        digest: [u8; 32],
        round: u32,
        phase: Phase,
    ) -> Result<Outgoing, DeclineCode> {
        let task = self
            .round
            .task_for(name)
            .unwrap_or_else(|| panic!("no task for {name}"));
        node.answer(
            &node_task(spec, digest, round, phase, Some(request_of(&task))),
            0.5,
        )
    }

    fn open(
        spec: &JobSpec,
        round: u32,
        phase: Phase,
        attempt: u32,
        cohort: Vec<CohortMember>,
    ) -> Self {
        let AggregationMode::Secure(settings) = &spec.aggregation else {
            panic!("secure job expected");
        };
        let now = Instant::now();
        let secure = SecureRound::open(
            SecureRoundPosition {
                job: "job-1",
                round,
                phase,
                attempt,
            },
            cohort,
            spec.min_participants as usize,
            spec.plan().reply_shape(round, phase),
            settings,
            &spec.privacy.partners,
            now + Duration::from_secs(60),
        )
        .unwrap_or_else(|error| panic!("open: {error}"));
        Attempt { round: secure, now }
    }

    /// A continuation of `finished` for `phase` of `round`, as the
    /// coordinator opens it (`finished` may be tampered with).
    fn continuation(
        spec: &JobSpec,
        round: u32,
        phase: Phase,
        attempt: u32,
        finished: &FinishedInstance,
    ) -> Self {
        let AggregationMode::Secure(settings) = &spec.aggregation else {
            panic!("secure job expected");
        };
        let now = Instant::now();
        let secure = SecureRound::continuation(
            SecureRoundPosition {
                job: "job-1",
                round,
                phase,
                attempt,
            },
            finished,
            spec.plan().reply_shape(round, phase),
            settings,
            &spec.privacy.partners,
            now + Duration::from_secs(60),
        )
        .unwrap_or_else(|error| panic!("continuation: {error}"));
        Attempt { round: secure, now }
    }

    /// Runs the attempt with `nodes` (indices into `all`) answering until
    /// `stop_after` (inclusive); returns the outcome of the last advance and
    /// every decline seen.
    fn run(
        &mut self,
        all: &mut [Node],
        spec: &JobSpec,
        digest: [u8; 32],
        round: u32,
        phase: Phase,
        stop_after: Option<(usize, SecureStep)>,
    ) -> (Option<StepOutcome>, Vec<(String, DeclineCode)>) {
        let mut declines = Vec::new();
        loop {
            let step = self.round.step();
            for (index, node) in all.iter_mut().enumerate() {
                if stop_after.is_some_and(|(stopper, last)| stopper == index && step > last) {
                    continue;
                }
                let Some(task) = self.round.task_for(&node.member.name) else {
                    continue;
                };
                let wire_task = node_task(spec, digest, round, phase, Some(request_of(&task)));
                match node.answer(&wire_task, 0.01 * (index as f32 + 1.0)) {
                    Ok(Outgoing::Secure {
                        step,
                        attempt,
                        payload,
                    }) => {
                        // The server refuses what does not verify (it
                        // withdraws the sender itself).
                        let _ = self
                            .round
                            .accept(&node.member.name, attempt, step, &payload);
                    }
                    Ok(Outgoing::Plain(_)) => panic!("a plain reply to a secure task"),
                    Err(code) => {
                        self.round.withdraw(&node.member.name);
                        declines.push((node.member.name.clone(), code));
                    }
                }
            }
            self.now += Duration::from_secs(61);
            let outcome = self.round.advance(self.now);
            match outcome {
                StepOutcome::Continue => continue,
                other => return (Some(other), declines),
            }
        }
    }
}

fn five_nodes(ca: &FederationCa) -> Vec<Node> {
    (0..5)
        .map(|index| {
            Node::new(
                enrol(ca, &format!("node-{index}")),
                ca,
                NodePolicy::default(),
            )
        })
        .collect()
}

#[test]
fn an_honest_round_completes_and_sums_every_node() {
    let ca = federation_ca();
    let mut nodes = five_nodes(&ca);
    let spec = job_spec("honest", 2, 3, 5, 0.2);
    let digest = digest_of("honest");
    let mut attempt = Attempt::open(&spec, 1, Phase::Train, 1, cohort_of(&nodes));
    let (outcome, declines) = attempt.run(&mut nodes, &spec, digest, 1, Phase::Train, None);
    assert!(declines.is_empty(), "{declines:?}");
    let Some(StepOutcome::Finished { sums, contributors }) = outcome else {
        panic!("the round must finish: {outcome:?}");
    };
    assert_eq!(contributors.len(), 5);
    let expected: f64 = (1..=5).map(|i| 0.01 * f64::from(i)).sum::<f64>() / 5.0;
    let mean = sums.weighted_mean().unwrap_or_else(|| panic!("weights"));
    assert!(
        (mean[0] - expected).abs() < 1e-4,
        "{} vs {expected}",
        mean[0]
    );
    for node in &nodes {
        assert!(
            node.machine
                .memory()
                .contributed
                .contains(&("job-1".to_owned(), 1))
        );
        assert_eq!(node.ledger.len(), 1, "one customer-level charge");
        // Five nodes, γ = 0.2: one colluder tolerated, k = 4, t = 3.
        assert!(node.records.iter().any(|record| matches!(
            record,
            Record::Guarantee { round: 1, guarantee, .. }
                if guarantee == "tolerates 1 colluder and 1 dropout"
        )));
    }
}

#[test]
fn invented_peers_certified_by_another_ca_are_refused_before_any_key_leaves() {
    let ca = federation_ca();
    let attacker_ca = federation_ca();
    let mut victim = Node::new(enrol(&ca, "victim"), &ca, NodePolicy::default());
    // The coordinator invents two peers whose keys it holds.
    let invented = [enrol(&attacker_ca, "peer-a"), enrol(&attacker_ca, "peer-b")];
    let mut cohort = vec![CohortMember {
        node: "victim".to_owned(),
        identity_key: victim.member.public_key,
        certificate_der: Arc::new(victim.member.certificate_der.clone()),
    }];
    cohort.extend(invented.iter().map(|member| CohortMember {
        node: member.name.clone(),
        identity_key: member.public_key,
        certificate_der: Arc::new(member.certificate_der.clone()),
    }));
    let spec = job_spec("substitution", 1, 3, 3, 0.2);
    let attempt = Attempt::open(&spec, 1, Phase::Train, 1, cohort);
    let outcome = attempt.first_answer(
        &mut victim,
        "victim",
        &spec,
        digest_of("s"),
        1,
        Phase::Train,
    );
    assert_eq!(outcome, Err(DeclineCode::PeerCertificateRejected));
    assert_eq!(victim.computed, 0, "nothing computed for a forged cohort");
    assert_eq!(
        victim.refusals(),
        vec![DeclineCode::PeerCertificateRejected]
    );
}

/// `node`'s answer to the first step of round 2's training attempt.
fn round_two_answer(
    attempt: &Attempt,
    node: &mut Node,
    spec: &JobSpec,
) -> Result<Outgoing, DeclineCode> {
    let name = node.member.name.clone();
    attempt.first_answer(node, &name, spec, digest_of("remembered"), 2, Phase::Train)
}

/// Five nodes of which node-2's certificate is valid until `NOW_UNIX + 100`;
/// all of them run round 1 at `NOW_UNIX`, so node-0 has verified (and
/// remembers) every certificate of the cohort.
fn five_nodes_after_one_round(ca: &FederationCa, spec: &JobSpec) -> Vec<Node> {
    let short = Validity {
        not_before: UNIX_EPOCH + Duration::from_secs(NOW_UNIX - 1_000),
        not_after: UNIX_EPOCH + Duration::from_secs(NOW_UNIX + 100),
    };
    let mut nodes: Vec<Node> = (0..5)
        .map(|index| {
            let name = format!("node-{index}");
            let member = if index == 2 {
                enrol_for(ca, &name, short)
            } else {
                enrol(ca, &name)
            };
            Node::new(member, ca, NodePolicy::default())
        })
        .collect();
    let mut attempt = Attempt::open(spec, 1, Phase::Train, 1, cohort_of(&nodes));
    let (outcome, declines) = attempt.run(
        &mut nodes,
        spec,
        digest_of("remembered"),
        1,
        Phase::Train,
        None,
    );
    assert!(declines.is_empty(), "{declines:?}");
    assert!(matches!(outcome, Some(StepOutcome::Finished { .. })));
    nodes
}

#[test]
fn a_remembered_certificate_still_expires() {
    // The node verifies each certificate once per job and remembers it; the
    // validity window must still hold at every later task.
    let ca = federation_ca();
    let spec = job_spec("remembered-expiry", 2, 3, 5, 0.2);
    let mut nodes = five_nodes_after_one_round(&ca, &spec);
    let attempt = Attempt::open(&spec, 2, Phase::Train, 1, cohort_of(&nodes));
    // Within node-2's window, round 2 goes ahead from memory.
    nodes[0].now_unix = NOW_UNIX + 100;
    let answer = round_two_answer(&attempt, &mut nodes[0], &spec);
    assert!(answer.is_ok(), "{answer:?}");
    // One second past it, node-1 (which remembers node-2's certificate as
    // well) refuses before any key leaves.
    nodes[1].now_unix = NOW_UNIX + 101;
    let outcome = round_two_answer(&attempt, &mut nodes[1], &spec);
    assert_eq!(outcome, Err(DeclineCode::PeerCertificateRejected));
    assert_eq!(
        nodes[1].refusals(),
        vec![DeclineCode::PeerCertificateRejected]
    );
}

#[test]
fn a_remembered_certificate_is_refused_once_revoked() {
    let ca = federation_ca();
    let spec = job_spec("remembered-revocation", 2, 3, 5, 0.2);
    let mut nodes = five_nodes_after_one_round(&ca, &spec);
    let serial = veil_pki::certificate_identity_unverified(&nodes[3].member.certificate_der)
        .unwrap_or_else(|error| panic!("identity: {error}"))
        .serial;
    nodes[0]
        .machine
        .update_revocations(std::iter::once(serial).collect());
    let attempt = Attempt::open(&spec, 2, Phase::Train, 1, cohort_of(&nodes));
    let outcome = round_two_answer(&attempt, &mut nodes[0], &spec);
    assert_eq!(outcome, Err(DeclineCode::PeerCertificateRejected));
    assert_eq!(
        nodes[0].refusals(),
        vec![DeclineCode::PeerCertificateRejected]
    );
    // A remembered certificate relayed under another member's name is
    // refused too: the name is checked on every sight.
    let mut renamed = cohort_of(&nodes);
    renamed[4].certificate_der = Arc::clone(&renamed[1].certificate_der);
    let attempt = Attempt::open(&spec, 2, Phase::Train, 1, renamed);
    let outcome = round_two_answer(&attempt, &mut nodes[1], &spec);
    assert_eq!(outcome, Err(DeclineCode::PeerCertificateRejected));
}

#[test]
fn a_genuine_certificate_relayed_under_another_name_or_with_another_key_is_refused() {
    let ca = federation_ca();
    let mut nodes = five_nodes(&ca);
    let spec = job_spec("renamed", 1, 3, 3, 0.2);
    // A genuine certificate of node-1 relayed as the credential of node-2.
    let mut cohort = cohort_of(&nodes[..3]);
    cohort[2].certificate_der = Arc::clone(&cohort[1].certificate_der);
    let attempt = Attempt::open(&spec, 1, Phase::Train, 1, cohort);
    let outcome = attempt.first_answer(
        &mut nodes[0],
        "node-0",
        &spec,
        digest_of("r"),
        1,
        Phase::Train,
    );
    assert_eq!(outcome, Err(DeclineCode::PeerCertificateRejected));

    // Genuine certificates, but the coordinator impersonates node-2: it
    // registers its own key under node-2's name and runs node-2's protocol
    // side itself. The victims take node-2's key from its certificate, so
    // the impostor's signed advertisement fails when they check it.
    let attacker =
        Arc::new(Ed25519KeyPair::from_seed_unchecked(&[42; 32]).unwrap_or_else(|_| panic!("key")));
    let mut attacker_key = [0u8; 32];
    attacker_key.copy_from_slice(attacker.public_key().as_ref());
    let impostor = Node::with_trust(
        Member {
            name: "node-2".to_owned(),
            key: Arc::clone(&attacker),
            public_key: attacker_key,
            certificate_der: nodes[2].member.certificate_der.clone(),
        },
        PeerTrust::InsecureDevelopment,
        NodePolicy::default(),
    );
    let mut group: Vec<Node> = nodes.drain(..2).collect();
    group.push(impostor);
    let mut cohort = cohort_of(&group);
    cohort[2].identity_key = attacker_key;
    let mut attempt = Attempt::open(&spec, 1, Phase::Train, 1, cohort);
    let (outcome, declines) = attempt.run(&mut group, &spec, digest_of("r"), 1, Phase::Train, None);
    assert!(!matches!(outcome, Some(StepOutcome::Finished { .. })));
    assert_eq!(
        declines,
        vec![
            ("node-0".to_owned(), DeclineCode::ProtocolRefused),
            ("node-1".to_owned(), DeclineCode::ProtocolRefused)
        ]
    );
    for node in &group[..2] {
        assert!(
            !node
                .records
                .iter()
                .any(|record| matches!(record, Record::Released { .. })),
            "no masked input may leave towards a forged key"
        );
    }
}

#[test]
fn a_spec_changed_mid_job_is_refused_and_recorded() {
    let ca = federation_ca();
    let mut nodes = five_nodes(&ca);
    let spec = job_spec("pinned", 2, 3, 5, 0.2);
    let mut attempt = Attempt::open(&spec, 1, Phase::Train, 1, cohort_of(&nodes));
    let (outcome, _) = attempt.run(&mut nodes, &spec, digest_of("v1"), 1, Phase::Train, None);
    assert!(matches!(outcome, Some(StepOutcome::Finished { .. })));
    // The coordinator now hands round 2 under a different spec (say, less noise).
    let changed = job_spec("pinned", 2, 3, 5, 0.2);
    let attempt = Attempt::open(&changed, 2, Phase::Train, 1, cohort_of(&nodes));
    let outcome = attempt.first_answer(
        &mut nodes[0],
        "node-0",
        &changed,
        digest_of("v2"),
        2,
        Phase::Train,
    );
    assert_eq!(outcome, Err(DeclineCode::SpecChanged));
    assert_eq!(nodes[0].refusals(), vec![DeclineCode::SpecChanged]);
}

#[test]
fn a_downgraded_threshold_a_ground_seed_and_too_many_attempts_are_refused() {
    let ca = federation_ca();
    let mut nodes = five_nodes(&ca);
    let spec = job_spec("downgrade", 1, 3, 5, 0.2);
    let AggregationMode::Secure(settings) = &spec.aggregation else {
        panic!("secure");
    };
    let attempt = Attempt::open(&spec, 1, Phase::Train, 1, cohort_of(&nodes));
    let honest = request_of(
        &attempt
            .round
            .task_for("node-0")
            .unwrap_or_else(|| panic!("task")),
    );
    let chosen = secure_round_parameters(5, settings).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(
        (honest.neighbour_count, honest.reconstruction_threshold),
        (chosen.neighbour_count, chosen.reconstruction_threshold)
    );
    // (k, t) = (2, 2) on five nodes: a valid SecAgg+ graph, far weaker.
    let downgraded = SecureRequest {
        neighbour_count: 2,
        reconstruction_threshold: 2,
        ..honest.clone()
    };
    let task = node_task(&spec, digest_of("d"), 1, Phase::Train, Some(downgraded));
    assert_eq!(
        nodes[0].answer(&task, 0.5),
        Err(DeclineCode::ParametersMismatch)
    );
    // A seed of the coordinator's choosing.
    let ground = SecureRequest {
        graph_seed: [0xAB; 32],
        ..honest.clone()
    };
    let task = node_task(&spec, digest_of("d"), 1, Phase::Train, Some(ground));
    assert_eq!(
        nodes[0].answer(&task, 0.5),
        Err(DeclineCode::ParametersMismatch)
    );
    // An attempt beyond the spec's bound, with the seed it would derive.
    let max = spec.plan().max_phase_attempts;
    let cohort: Vec<&str> = honest.cohort.iter().map(String::as_str).collect();
    let beyond = SecureRequest {
        attempt: max + 1,
        graph_seed: round_graph_seed(
            &settings.graph_seed,
            GraphSeedInput {
                job: "job-1",
                round: 1,
                phase: Phase::Train,
                attempt: max + 1,
                cohort: &cohort,
            },
        ),
        ..honest
    };
    let task = node_task(&spec, digest_of("d"), 1, Phase::Train, Some(beyond));
    assert_eq!(nodes[0].answer(&task, 0.5), Err(DeclineCode::AttemptLimit));
    assert_eq!(
        nodes[0].refusals(),
        vec![
            DeclineCode::ParametersMismatch,
            DeclineCode::ParametersMismatch,
            DeclineCode::AttemptLimit
        ]
    );
    assert_eq!(nodes[0].computed, 0);
}

#[test]
fn a_threshold_open_to_a_split_view_by_the_jobs_colluders_is_refused() {
    // The job tolerates 40% collusion: at n = 5 that is c = 2 colluders, and
    // a split view succeeds once c >= 2t - k. The chooser asks 2t - 4 > 2,
    // so t = 4; a coordinator offering t = 3 (2t - k = 2 = c) is refused.
    let ca = federation_ca();
    let mut nodes = five_nodes(&ca);
    let spec = job_spec("split-view", 1, 5, 5, 0.4);
    let attempt = Attempt::open(&spec, 1, Phase::Train, 1, cohort_of(&nodes));
    let honest = request_of(
        &attempt
            .round
            .task_for("node-0")
            .unwrap_or_else(|| panic!("task")),
    );
    assert_eq!(honest.neighbour_count, 4);
    assert_eq!(honest.reconstruction_threshold, 4);
    let weak = SecureRequest {
        reconstruction_threshold: 3,
        ..honest
    };
    let task = node_task(&spec, digest_of("sv"), 1, Phase::Train, Some(weak));
    assert_eq!(
        nodes[0].answer(&task, 0.5),
        Err(DeclineCode::ParametersMismatch)
    );
}

#[test]
fn a_node_whose_masked_input_left_refuses_every_later_attempt() {
    let ca = federation_ca();
    let mut nodes = five_nodes(&ca);
    let spec = job_spec("retry", 1, 3, 5, 0.2);
    let digest = digest_of("retry");
    // Attempt 1 completes: the coordinator decodes the sum of all five.
    let mut first = Attempt::open(&spec, 1, Phase::Train, 1, cohort_of(&nodes));
    let (outcome, _) = first.run(&mut nodes, &spec, digest, 1, Phase::Train, None);
    assert!(matches!(outcome, Some(StepOutcome::Finished { .. })));
    // It then declares node-4 dropped and retries with the other four, to
    // subtract the sums; or retries with all five, to average the noise.
    for cohort in [cohort_of(&nodes[..4]), cohort_of(&nodes)] {
        let mut second = Attempt::open(&spec, 1, Phase::Train, 2, cohort.clone());
        let (outcome, declines) = {
            let members = cohort.len();
            second.run(&mut nodes[..members], &spec, digest, 1, Phase::Train, None)
        };
        assert!(
            !matches!(outcome, Some(StepOutcome::Finished { .. })),
            "a second sum of round 1 came out"
        );
        assert_eq!(declines.len(), cohort.len());
        assert!(
            declines
                .iter()
                .all(|(_, code)| *code == DeclineCode::AlreadyReleased)
        );
    }
    for node in &nodes {
        assert_eq!(node.ledger.len(), 1, "charged exactly once");
    }
}

#[test]
fn a_restarted_node_reuses_its_stored_reply_and_never_draws_again() {
    let ca = federation_ca();
    let mut nodes = five_nodes(&ca);
    let spec = job_spec("restart", 1, 3, 5, 0.2);
    let digest = digest_of("restart");
    // Attempt 1: everyone computes and advertises, then node-0 is killed
    // before its masked input leaves.
    let mut first = Attempt::open(&spec, 1, Phase::Train, 1, cohort_of(&nodes));
    let (outcome, _) = first.run(
        &mut nodes,
        &spec,
        digest,
        1,
        Phase::Train,
        Some((0, SecureStep::ShareKeys)),
    );
    assert!(matches!(outcome, Some(StepOutcome::Finished { .. })));
    assert_eq!(nodes[0].computed, 1);
    nodes[0].restart();
    // Attempt 2 only for node-0 and the others would be refused (they
    // released); give node-0 a cohort of fresh nodes instead.
    let mut fresh: Vec<Node> = (5..7)
        .map(|index| {
            Node::new(
                enrol(&ca, &format!("node-{index}")),
                &ca,
                NodePolicy::default(),
            )
        })
        .collect();
    let mut group = vec![nodes.remove(0)];
    group.append(&mut fresh);
    let mut second = Attempt::open(&spec, 1, Phase::Train, 2, cohort_of(&group));
    let (outcome, declines) = second.run(&mut group, &spec, digest, 1, Phase::Train, None);
    assert!(declines.is_empty(), "{declines:?}");
    let Some(StepOutcome::Finished { sums, .. }) = outcome else {
        panic!("attempt 2 must finish");
    };
    assert_eq!(
        group[0].computed, 1,
        "the restarted node did not train again"
    );
    // Node-0's stored reply (0.01) is in the sum, not a fresh one: fresh
    // nodes answer with their own markers 0.02 and 0.03.
    let mean = sums.weighted_mean().unwrap_or_else(|| panic!("weights"));
    assert!((mean[0] - 0.02).abs() < 1e-4, "{}", mean[0]);
}

#[test]
fn evaluations_only_from_contributors_once_and_never_after_a_veto() {
    let ca = federation_ca();
    let mut nodes = five_nodes(&ca);
    // node-4's yearly cap is spent: it vetoes training.
    nodes[4] = Node::new(
        enrol(&ca, "node-4"),
        &ca,
        NodePolicy {
            customer_epsilon_per_year: 1e-9,
            ..NodePolicy::default()
        },
    );
    let spec = job_spec("evaluate", 1, 3, 5, 0.2);
    let digest = digest_of("evaluate");
    let mut train = Attempt::open(&spec, 1, Phase::Train, 1, cohort_of(&nodes));
    let (outcome, declines) = train.run(&mut nodes, &spec, digest, 1, Phase::Train, None);
    assert!(matches!(outcome, Some(StepOutcome::Finished { .. })));
    assert_eq!(
        declines,
        vec![("node-4".to_owned(), DeclineCode::PrivacyCapExceeded)]
    );
    // The coordinator asks the vetoing node to evaluate anyway.
    let mut evaluate = Attempt::open(&spec, 1, Phase::Evaluate, 1, cohort_of(&nodes));
    let (outcome, declines) = evaluate.run(&mut nodes, &spec, digest, 1, Phase::Evaluate, None);
    assert!(matches!(outcome, Some(StepOutcome::Finished { .. })));
    assert_eq!(
        declines,
        vec![("node-4".to_owned(), DeclineCode::EvaluationNotAllowed)]
    );
    // Each contributor charged the final evaluation under its own key, in
    // a record written before its masked evaluation left; the vetoing node
    // charged nothing.
    for node in &nodes[..4] {
        let evaluations: Vec<usize> = node
            .records
            .iter()
            .enumerate()
            .filter(|(_, record)| {
                matches!(record, Record::Charge(charge) if charge.release == Release::FinalEvaluation)
            })
            .map(|(index, _)| index)
            .collect();
        assert_eq!(evaluations.len(), 1, "{}", node.member.name);
        let released = node
            .records
            .iter()
            .position(|record| {
                matches!(record, Record::Released { key, .. } if key.phase == Phase::Evaluate)
            })
            .unwrap_or_else(|| panic!("{}: evaluation never left", node.member.name));
        assert!(evaluations[0] < released, "{}", node.member.name);
    }
    assert!(nodes[4].ledger.is_empty());
    // And asks the contributors a second time.
    let mut again = Attempt::open(&spec, 1, Phase::Evaluate, 2, cohort_of(&nodes[..4]));
    let (outcome, declines) = again.run(&mut nodes[..4], &spec, digest, 1, Phase::Evaluate, None);
    assert!(!matches!(outcome, Some(StepOutcome::Finished { .. })));
    assert!(
        declines
            .iter()
            .all(|(_, code)| *code == DeclineCode::AlreadyReleased)
    );
    // An evaluation of a round past the job's last is refused outright.
    let past = Attempt::open(&spec, 2, Phase::Evaluate, 1, cohort_of(&nodes[..4]));
    assert_eq!(
        past.first_answer(&mut nodes[0], "node-0", &spec, digest, 2, Phase::Evaluate),
        Err(DeclineCode::InvalidTask)
    );
}

#[test]
fn a_job_over_the_partners_cap_is_declined_up_front_and_a_late_evaluation_when_another_job_spent_it()
 {
    let ca = federation_ca();
    let spec = job_spec("evaluation-cap", 1, 3, 5, 0.2);
    let digest = digest_of("evaluation-cap");
    let party = veil_job::RoundParty {
        job_id: "job-1",
        round: 1,
        partner_id: "node-0",
        dataset_id: "node-0",
        cohort: 5,
    };
    let price = |charges: Vec<veil_privacy_ledger::ChargeSpec>| {
        let charges: Vec<Charge> = charges
            .into_iter()
            .map(|charge| Charge::new(charge, 0).expect("valid charge"))
            .collect();
        compose(charges.iter(), spec.privacy.delta)
            .expect("composes")
            .epsilon
    };
    let round_only = price(veil_job::round_charges(&spec, party).expect("priced"));
    let whole_job = price(veil_job::job_charges(&spec, party).expect("priced"));
    assert!(whole_job > round_only * 1.01, "{round_only} vs {whole_job}");
    let mut nodes = five_nodes(&ca);
    // node-0's yearly cap covers the round's DP-SGD but not the final
    // evaluation on top of it: it declines the job at its first task.
    nodes[0] = Node::new(
        enrol(&ca, "node-0"),
        &ca,
        NodePolicy {
            customer_epsilon_per_year: (round_only + whole_job) / 2.0,
            ..NodePolicy::default()
        },
    );
    // node-1's covers the whole job, just.
    nodes[1] = Node::new(
        enrol(&ca, "node-1"),
        &ca,
        NodePolicy {
            customer_epsilon_per_year: whole_job * 1.001,
            ..NodePolicy::default()
        },
    );
    let mut train = Attempt::open(&spec, 1, Phase::Train, 1, cohort_of(&nodes));
    let (outcome, declines) = train.run(&mut nodes, &spec, digest, 1, Phase::Train, None);
    assert!(matches!(outcome, Some(StepOutcome::Finished { .. })));
    assert_eq!(
        declines,
        vec![("node-0".to_owned(), DeclineCode::PrivacyCapExceeded)]
    );
    assert!(nodes[0].ledger.is_empty(), "declined before any charge");
    // Meanwhile another job spends part of node-1's cap.
    let other_job = Charge {
        job_id: "job-2".to_owned(),
        ..nodes[1].ledger[0].clone()
    };
    nodes[1].ledger.push(other_job);
    let mut evaluate = Attempt::open(&spec, 1, Phase::Evaluate, 1, cohort_of(&nodes[1..]));
    // (Four evaluators on the complete graph tolerate no dropout, so the
    // phase itself fails: nothing is decoded without node-1 either.)
    let (_, declines) = evaluate.run(&mut nodes[1..], &spec, digest, 1, Phase::Evaluate, None);
    assert_eq!(
        declines,
        vec![("node-1".to_owned(), DeclineCode::PrivacyCapExceeded)]
    );
    // Its ledger holds the round it paid for (and the other job's) and no
    // evaluation; nothing of the evaluation left it.
    assert!(
        nodes[1]
            .ledger
            .iter()
            .all(|charge| charge.release == Release::Round)
    );
    assert!(!nodes[1].records.iter().any(
        |record| matches!(record, Record::Released { key, .. } if key.phase == Phase::Evaluate)
    ));
}

#[test]
fn a_continuation_is_taken_only_as_the_training_instance_the_node_finished() {
    let ca = federation_ca();
    let mut nodes = five_nodes(&ca);
    let spec = job_spec("continuation", 2, 3, 5, 0.2);
    let digest = digest_of("continuation");
    let mut training = Attempt::open(&spec, 1, Phase::Train, 1, cohort_of(&nodes));
    let (outcome, _) = training.run(&mut nodes, &spec, digest, 1, Phase::Train, None);
    assert!(matches!(outcome, Some(StepOutcome::Finished { .. })));
    let finished = training
        .round
        .finished_instance()
        .expect("every survivor answered the last step");
    let charges_before: Vec<usize> = nodes.iter().map(|node| node.ledger.len()).collect();

    // Named parameters other than the instance's (here its graph seed):
    // every node refuses before anything is computed or charged.
    let mut reseeded = finished.clone();
    let trained = &finished.params;
    reseeded.params = Arc::new(
        veil_secure_aggregation::ProtocolParams::new(
            trained.cohort().to_vec(),
            [0x66; 32],
            trained.neighbour_count(),
            trained.reconstruction_threshold(),
            trained.modulus_bits(),
            trained.vector_length(),
        )
        .expect("params"),
    );
    let mut forged = Attempt::continuation(&spec, 1, Phase::Evaluate, 1, &reseeded);
    let (outcome, declines) = forged.run(&mut nodes, &spec, digest, 1, Phase::Evaluate, None);
    assert!(matches!(outcome, Some(StepOutcome::Failed(_))));
    assert_eq!(declines.len(), 5);
    assert!(
        declines
            .iter()
            .all(|(_, code)| *code == DeclineCode::ParametersMismatch)
    );
    let charges_now: Vec<usize> = nodes.iter().map(|node| node.ledger.len()).collect();
    assert_eq!(charges_now, charges_before);

    // A continuation over two survivors only, hoping node-0 masks with
    // node-1 alone: each node masks with its own signed survivors and
    // pairwise seeds, so the two uploads summed are not the two replies.
    let mut narrowed = finished.clone();
    narrowed.survivors.truncate(2);
    let mut isolating = Attempt::continuation(&spec, 1, Phase::Evaluate, 1, &narrowed);
    let (outcome, _) = isolating.run(&mut nodes, &spec, digest, 1, Phase::Evaluate, None);
    let decoded_the_pair = matches!(
        &outcome,
        Some(StepOutcome::Finished { sums, .. })
            if sums.statistics_sum().iter().all(|value| value.abs() < 1e3)
    );
    assert!(
        !decoded_the_pair,
        "the sum of two uploads decoded: {outcome:?}"
    );
    // Their inputs left (recorded as released before they left): no later
    // attempt or continuation of the evaluation takes them again.
    for node in &nodes[..2] {
        assert!(node.records.iter().any(|record| matches!(
            record,
            Record::Released { key, attempt: 1 } if key.round == 1 && key.phase == Phase::Evaluate
        )));
    }
    // And a node restarted since its training holds no seeds to continue
    // with: it declines, as lost state, before anything is computed.
    nodes[2].restart();
    let mut again = Attempt::continuation(&spec, 1, Phase::Evaluate, 2, &finished);
    let (outcome, declines) = again.run(&mut nodes, &spec, digest, 1, Phase::Evaluate, None);
    assert_eq!(
        declines,
        vec![
            ("node-0".to_owned(), DeclineCode::AlreadyReleased),
            ("node-1".to_owned(), DeclineCode::AlreadyReleased),
            ("node-2".to_owned(), DeclineCode::LostState),
        ]
    );
    assert!(matches!(outcome, Some(StepOutcome::Failed(_))));

    // A continuation of a round whose training the nodes never took part
    // in: refused (they evaluate only rounds they contributed to).
    let mut unknown = Attempt::continuation(&spec, 2, Phase::Evaluate, 1, &finished);
    let (_, declines) = unknown.run(&mut nodes[2..], &spec, digest, 2, Phase::Evaluate, None);
    assert_eq!(declines.len(), 3, "{declines:?}");
    assert!(
        declines
            .iter()
            .all(|(_, code)| *code == DeclineCode::EvaluationNotAllowed),
        "{declines:?}"
    );
}
