//! Secure aggregation inside the engine: simulated nodes run the real SecAgg+
//! client through every step, drop out after any step, decline, or send
//! plain replies, with passed-in time. The sums must equal plain FedAvg over
//! the nodes whose inputs entered the protocol, or the phase must fail by name.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use ring::signature::{Ed25519KeyPair, KeyPair};
use veil_federation::secure::protocol_round_of;
use veil_federation::{
    AggregationMode, DeclineCode, Engine, EngineConfig, EventKind, JobPlan, JobState,
    NodeCredential, PartnerPrivacy, Phase, PhaseTimeouts, RejectReason, ReplyEncoding, ResultKey,
    SecureParticipant, SecureSettings, SecureStep, Strategy, Submission, SubmissionBody,
    TaskAssignment,
};
use veil_secure_aggregation::{Continuation, IdentityDirectory, PartnerPolicy};

const PARAMETERS: usize = 6;
const TIMEOUT: Duration = Duration::from_secs(10);
/// How long a job may wait for enough nodes before it fails.
const WAIT_FOR_NODES: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Behaviour {
    /// Answers every step.
    Honest,
    /// Stops answering from this step on (in round 1's training phase only).
    DropAt(SecureStep),
    /// Declines every phase, as a node whose policy refuses the job.
    Declines,
    /// Loses its continuations, as a node restarted between a round's
    /// training and its evaluation.
    ForgetsContinuations,
}

struct SimNode {
    name: String,
    key: Arc<Ed25519KeyPair>,
    behaviour: Behaviour,
    delta: f32,
    weight: f64,
    participants: BTreeMap<(String, u32, Phase, u32), SecureParticipant>,
    /// The continuation of each (job, round)'s finished training instance.
    continuations: BTreeMap<(String, u32), Continuation>,
}

fn settings() -> SecureSettings {
    SecureSettings {
        clip_range: 1.0,
        modulus_bits: 32,
        max_weight: 10_000.0,
        dropout_rate: 0.1,
        step_timeout: Duration::from_secs(2),
        graph_seed: [3; 32],
        collusion_fraction: 0.2,
        security_bits: 40,
    }
}

fn plan(min: u32, rounds: u32, aggregation: AggregationMode) -> JobPlan {
    JobPlan {
        rounds,
        min_participants: min,
        max_participants: 100,
        timeouts: PhaseTimeouts {
            feature_stats: TIMEOUT,
            train: TIMEOUT,
            evaluate: TIMEOUT,
            wait_for_nodes: WAIT_FOR_NODES,
        },
        strategy: Strategy::FedAvg,
        parameter_count: PARAMETERS,
        feature_statistics_len: 3,
        train_statistics_len: 2,
        evaluate_statistics_len: 2,
        max_phase_attempts: 2,
        aggregation,
        partner_privacy: Default::default(),
        releases: Vec::new(),
    }
}

struct Federation {
    engine: Engine<()>,
    now: Instant,
    nodes: Vec<SimNode>,
    rng: ChaCha20Rng,
    rejected: Vec<RejectReason>,
}

impl Federation {
    fn new(behaviours: &[Behaviour]) -> Self {
        let now = Instant::now();
        let mut engine = Engine::new(EngineConfig {
            node_liveness: Duration::from_secs(600),
        });
        let nodes: Vec<SimNode> = behaviours
            .iter()
            .enumerate()
            .map(|(index, &behaviour)| {
                let key = Ed25519KeyPair::from_seed_unchecked(&[index as u8 + 1; 32])
                    .expect("32-byte seed");
                SimNode {
                    name: format!("node-{index}"),
                    key: Arc::new(key),
                    behaviour,
                    delta: 0.05 * (index as f32 + 1.0) - 0.12,
                    weight: 100.0 * (index as f64 + 1.0),
                    participants: BTreeMap::new(),
                    continuations: BTreeMap::new(),
                }
            })
            .collect();
        for node in &nodes {
            let mut public = [0u8; 32];
            public.copy_from_slice(node.key.public_key().as_ref());
            engine.register_node(
                &node.name,
                Some(NodeCredential {
                    identity_key: public,
                    certificate_der: Arc::new(Vec::new()),
                }),
                now,
            );
        }
        Federation {
            engine,
            now,
            nodes,
            rng: ChaCha20Rng::seed_from_u64(99),
            rejected: Vec::new(),
        }
    }

    fn start(&mut self, plan: JobPlan) -> String {
        let job = self
            .engine
            .submit_job(plan, (), vec![0.0; PARAMETERS], self.now)
            .expect("valid job");
        self.engine.start_job(&job, self.now).expect("starts");
        job
    }

    /// The reply a node computes for a phase.
    fn reply_of(node: &SimNode, phase: Phase) -> (f64, Vec<f64>, Vec<f32>) {
        match phase {
            Phase::FeatureStats => (0.0, vec![node.weight, node.weight * 2.0, 1.0], Vec::new()),
            Phase::Train => (
                node.weight,
                vec![node.weight * 0.5, node.weight],
                vec![node.delta; PARAMETERS],
            ),
            Phase::Evaluate => (0.0, vec![1.0, node.weight], Vec::new()),
            Phase::Release => unreachable!("training jobs have no release phases"),
        }
    }

    fn answer(&mut self, index: usize, task: &TaskAssignment) -> Option<SubmissionBody> {
        let node = &mut self.nodes[index];
        let Some(secure) = task.secure.as_ref() else {
            let (weight, statistics, vector) = Self::reply_of(node, task.phase);
            return Some(SubmissionBody::Plain {
                weight,
                statistics,
                vector,
            });
        };
        // Credentials travel with a protocol instance's first step only.
        assert_eq!(
            secure.members.is_empty(),
            secure.step != SecureStep::AdvertiseKeys,
            "members relayed with {:?}",
            secure.step
        );
        let key = (task.job.clone(), task.round, task.phase, secure.attempt);
        let dropping = matches!(node.behaviour, Behaviour::DropAt(step)
            if task.round == 1 && task.phase == Phase::Train && step <= secure.step);
        if dropping {
            return None;
        }
        if node.behaviour == Behaviour::Declines {
            return Some(SubmissionBody::Declined {
                code: DeclineCode::PolicyPlainAggregation,
            });
        }
        let plan = self.engine.plan(&task.job).expect("job");
        let AggregationMode::Secure(settings) = &plan.aggregation else {
            panic!("secure task for a plain job");
        };
        let shape = match task.phase {
            Phase::FeatureStats => (0, plan.feature_statistics_len),
            Phase::Train => (plan.parameter_count, plan.train_statistics_len),
            Phase::Evaluate => (0, plan.evaluate_statistics_len),
            Phase::Release => unreachable!("training jobs have no release phases"),
        };
        let (weight, statistics, vector) = Self::reply_of(node, task.phase);
        let encode = |cohort: usize, rng: &mut ChaCha20Rng| {
            let encoding =
                ReplyEncoding::new(shape.0, shape.1, cohort, settings, &plan.partner_privacy)
                    .expect("encoding");
            encoding
                .encode(weight, &statistics, &vector, rng)
                .expect("encodes")
        };
        let payload = if secure.step == SecureStep::ContinuationInput {
            let Some(continuation) = node.continuations.remove(&(task.job.clone(), task.round))
            else {
                // As a node that lost its protocol state says.
                return Some(SubmissionBody::Declined {
                    code: DeclineCode::LostState,
                });
            };
            let encoded = encode(continuation.survivors().len(), &mut self.rng);
            continuation
                .masked_input(
                    protocol_round_of(task.round, task.phase),
                    settings.modulus_bits,
                    &encoded,
                )
                .expect("masks")
                .to_bytes()
        } else if secure.step == SecureStep::AdvertiseKeys {
            let encoded = encode(secure.params.cohort().len(), &mut self.rng);
            let (participant, message) = SecureParticipant::start(
                &task.job,
                protocol_round_of(task.round, task.phase),
                &node.name,
                secure,
                PartnerPolicy {
                    minimum_threshold: 2,
                },
                Arc::new(
                    IdentityDirectory::from_entries(secure.members.iter().map(|member| {
                        (
                            veil_secure_aggregation::NodeId::new(member.node.clone())
                                .expect("node id"),
                            member.identity_key.to_vec(),
                        )
                    }))
                    .expect("directory"),
                ),
                Arc::clone(&node.key),
                encoded,
                &mut self.rng,
            )
            .expect("starts");
            node.participants.insert(key, participant);
            message
        } else {
            let participant = node.participants.get_mut(&key).expect("state kept");
            let message = participant
                .respond(secure, &mut self.rng)
                .expect("responds");
            if let Some(continuation) = participant.take_continuation()
                && node.behaviour != Behaviour::ForgetsContinuations
            {
                node.continuations
                    .insert((task.job.clone(), task.round), continuation);
            }
            message
        };
        Some(SubmissionBody::Secure {
            attempt: secure.attempt,
            step: secure.step,
            payload,
        })
    }

    /// Runs until the job ends, jumping to the next deadline when idle.
    fn run(&mut self, job: &str) -> JobState {
        for _ in 0..10_000 {
            let state = self.engine.status(job).expect("job").state;
            if state != JobState::Running {
                return state;
            }
            let mut acted = false;
            for index in 0..self.nodes.len() {
                let name = self.nodes[index].name.clone();
                let Some(task) = self.engine.next_task(&name, self.now).expect("node") else {
                    continue;
                };
                let Some(body) = self.answer(index, &task) else {
                    continue;
                };
                let submission = Submission {
                    node: name,
                    key: ResultKey {
                        job: task.job.clone(),
                        round: task.round,
                        phase: task.phase,
                    },
                    body,
                };
                match self.engine.submit(&submission, self.now) {
                    Ok(_) => acted = true,
                    Err(reason) => self.rejected.push(reason),
                }
            }
            if !acted {
                match self.engine.poll_timeout() {
                    Some(deadline) => self.now = self.now.max(deadline),
                    None => self.now += Duration::from_secs(1),
                }
                self.engine.handle_timeout(self.now);
            }
        }
        panic!("job did not finish");
    }

    fn events(&mut self) -> Vec<EventKind> {
        std::iter::from_fn(|| self.engine.poll_event())
            .map(|event| event.kind)
            .collect()
    }

    /// Plain FedAvg of the given nodes' training deltas.
    fn fedavg(&self, contributors: &[usize]) -> f64 {
        let weight: f64 = contributors.iter().map(|&i| self.nodes[i].weight).sum();
        contributors
            .iter()
            .map(|&i| self.nodes[i].weight * f64::from(self.nodes[i].delta))
            .sum::<f64>()
            / weight
    }
}

fn secure_plan(min: u32, rounds: u32) -> JobPlan {
    plan(min, rounds, AggregationMode::Secure(settings()))
}

#[test]
fn secure_job_matches_plain_fedavg_and_sums_statistics() {
    let mut federation = Federation::new(&[Behaviour::Honest; 5]);
    let job = federation.start(secure_plan(3, 2));
    assert_eq!(federation.run(&job), JobState::Succeeded);
    let model = federation.engine.final_model(&job).expect("model");
    // Two rounds of FedAvg from zero, every node sending the same delta each round.
    let expected = 2.0 * federation.fedavg(&[0, 1, 2, 3, 4]);
    for value in model.iter() {
        assert!(
            (f64::from(*value) - expected).abs() < 1e-4,
            "{value} vs {expected}"
        );
    }
    let statistics = federation
        .engine
        .feature_statistics(&job)
        .expect("job")
        .expect("computed");
    let total_weight: f64 = federation.nodes.iter().map(|node| node.weight).sum();
    assert!((statistics[0] - total_weight).abs() < 1e-3);
    assert!((statistics[1] - 2.0 * total_weight).abs() < 1e-3);
    assert!((statistics[2] - 5.0).abs() < 1e-3);
    let status = federation.engine.status(&job).expect("job");
    let record = &status.history[0];
    assert_eq!(record.train_participants, 5);
    assert!((record.train_weight - total_weight).abs() < 1e-2);
    assert!((record.train_statistics[0] - total_weight * 0.5).abs() < 1e-3);
    let steps: Vec<SecureStep> = federation
        .events()
        .into_iter()
        .filter_map(|event| match event {
            EventKind::SecureStepOpened { step, .. } => Some(step),
            _ => None,
        })
        .take(4)
        .collect();
    assert_eq!(
        steps,
        vec![
            SecureStep::ShareKeys,
            SecureStep::MaskedInput,
            SecureStep::ConsistencyCheck,
            SecureStep::Unmask
        ]
    );
}

#[test]
fn a_node_dropping_after_any_step_leaves_the_exact_sum_of_the_others() {
    for drop_step in [
        SecureStep::AdvertiseKeys,
        SecureStep::ShareKeys,
        SecureStep::MaskedInput,
        SecureStep::ConsistencyCheck,
        SecureStep::Unmask,
    ] {
        let mut behaviours = [Behaviour::Honest; 5];
        behaviours[2] = Behaviour::DropAt(drop_step);
        let mut federation = Federation::new(&behaviours);
        let job = federation.start(secure_plan(3, 1));
        assert_eq!(
            federation.run(&job),
            JobState::Succeeded,
            "drop at {drop_step}"
        );
        // Its input is in the sum exactly when it uploaded a masked input.
        let uploaded = drop_step > SecureStep::MaskedInput;
        let contributors: Vec<usize> = if uploaded {
            vec![0, 1, 2, 3, 4]
        } else {
            vec![0, 1, 3, 4]
        };
        let expected = federation.fedavg(&contributors);
        let model = federation.engine.final_model(&job).expect("model");
        for value in model.iter() {
            assert!(
                (f64::from(*value) - expected).abs() < 1e-4,
                "drop at {drop_step}: {value} vs {expected}"
            );
        }
        let record = &federation.engine.status(&job).expect("job").history[0];
        assert_eq!(record.train_participants as usize, contributors.len());
    }
}

#[test]
fn too_few_survivors_fail_the_phase_by_name_after_retrying() {
    let behaviours = [
        Behaviour::Honest,
        Behaviour::Honest,
        Behaviour::DropAt(SecureStep::ShareKeys),
        Behaviour::DropAt(SecureStep::ShareKeys),
        Behaviour::DropAt(SecureStep::ShareKeys),
    ];
    let mut federation = Federation::new(&behaviours);
    let job = federation.start(secure_plan(3, 1));
    let JobState::Failed { reason } = federation.run(&job) else {
        panic!("the job must fail");
    };
    assert!(
        reason.contains("secure aggregation failed 2 times"),
        "{reason}"
    );
    let failures = federation
        .events()
        .into_iter()
        .filter(|event| matches!(event, EventKind::SecureRoundFailed { .. }))
        .count();
    assert_eq!(failures, 2);
}

#[test]
fn inputs_that_left_in_a_failed_attempt_are_never_summed_again() {
    // Three of five nodes vanish after uploading their masked inputs: the
    // attempt cannot unmask. Every input left, so no retry may include any
    // of them (a second sum over a set differing by one node would reveal
    // that node's input): the round is abandoned and charged, never re-run.
    let behaviours = [
        Behaviour::Honest,
        Behaviour::Honest,
        Behaviour::DropAt(SecureStep::ConsistencyCheck),
        Behaviour::DropAt(SecureStep::ConsistencyCheck),
        Behaviour::DropAt(SecureStep::ConsistencyCheck),
    ];
    let mut federation = Federation::new(&behaviours);
    let job = federation.start(secure_plan(3, 2));
    assert_eq!(federation.run(&job), JobState::Succeeded);
    let events = federation.events();
    let round_one_train_openings = events
        .iter()
        .filter(|event| {
            matches!(
                event,
                EventKind::PhaseOpened {
                    round: 1,
                    phase: Phase::Train,
                    ..
                }
            )
        })
        .count();
    assert_eq!(round_one_train_openings, 1, "no second attempt of round 1");
    let abandoned: Vec<&Vec<String>> = events
        .iter()
        .filter_map(|event| match event {
            EventKind::PhaseAbandoned {
                round: 1,
                phase: Phase::Train,
                released,
                ..
            } => Some(released),
            _ => None,
        })
        .collect();
    assert_eq!(abandoned.len(), 1);
    assert_eq!(abandoned[0].len(), 5, "every node's input left");
    let status = federation.engine.status(&job).expect("job");
    assert!(status.history[0].abandoned.is_some());
    assert_eq!(status.history[0].train_participants, 5);
    // Round 2 ran normally; the model holds only its update.
    assert!(status.history[1].abandoned.is_none());
    let expected = federation.fedavg(&[0, 1, 2, 3, 4]);
    let model = federation.engine.final_model(&job).expect("model");
    assert!((f64::from(model[0]) - expected).abs() < 1e-4);
}

#[test]
fn a_sum_with_too_few_inputs_is_never_unmasked() {
    // Two of five nodes never upload: three masked inputs arrive, but the
    // job needs four. The coordinator must not ask anyone to unmask.
    let behaviours = [
        Behaviour::Honest,
        Behaviour::Honest,
        Behaviour::Honest,
        Behaviour::DropAt(SecureStep::MaskedInput),
        Behaviour::DropAt(SecureStep::MaskedInput),
    ];
    let mut federation = Federation::new(&behaviours);
    let job = federation.start(secure_plan(4, 1));
    let _ = federation.run(&job);
    let events = federation.events();
    let unmask_opened = events.iter().any(|event| {
        matches!(
            event,
            EventKind::SecureStepOpened {
                round: 1,
                phase: Phase::Train,
                step: SecureStep::Unmask,
                ..
            }
        )
    });
    assert!(!unmask_opened, "an unmask step opened for a short sum");
    assert!(events.iter().any(|event| matches!(
        event,
        EventKind::SecureRoundFailed { reason, .. } if reason.contains("only 3 masked inputs arrived; a released sum needs 4")
    )));
}

#[test]
fn declining_nodes_are_recorded_and_the_round_goes_on() {
    let behaviours = [
        Behaviour::Honest,
        Behaviour::Honest,
        Behaviour::Honest,
        Behaviour::Declines,
    ];
    let mut federation = Federation::new(&behaviours);
    let job = federation.start(secure_plan(3, 1));
    assert_eq!(federation.run(&job), JobState::Succeeded);
    let declines = federation
        .events()
        .into_iter()
        .filter(|event| matches!(event, EventKind::NodeDeclined { node, .. } if node == "node-3"))
        .count();
    // Feature statistics and training: each declined, then retried without
    // node-3. It is not asked to evaluate a model it did not train.
    assert_eq!(declines, 2, "one per phase it was invited to");
    let expected = federation.fedavg(&[0, 1, 2]);
    let model = federation.engine.final_model(&job).expect("model");
    assert!((f64::from(model[0]) - expected).abs() < 1e-4);
}

#[test]
fn plain_replies_to_a_secure_job_are_refused() {
    let mut federation = Federation::new(&[Behaviour::Honest; 3]);
    let job = federation.start(secure_plan(3, 1));
    let task = federation
        .engine
        .next_task("node-0", federation.now)
        .expect("node")
        .expect("task");
    let outcome = federation.engine.submit(
        &Submission {
            node: "node-0".to_owned(),
            key: ResultKey {
                job: job.clone(),
                round: task.round,
                phase: task.phase,
            },
            body: SubmissionBody::Plain {
                weight: 0.0,
                statistics: vec![0.0; 3],
                vector: Vec::new(),
            },
        },
        federation.now,
    );
    assert!(matches!(outcome, Err(RejectReason::WrongMode { .. })));
}

#[test]
fn secure_plans_need_three_participants() {
    let mut engine: Engine<()> = Engine::new(EngineConfig {
        node_liveness: Duration::from_secs(60),
    });
    let error = engine
        .submit_job(secure_plan(2, 1), (), vec![0.0; PARAMETERS], Instant::now())
        .expect_err("two is too few");
    assert!(error.to_string().contains("min_participants"), "{error}");
}

/// Runs `runs` one-round jobs of `plan` and returns, for every coordinate of
/// every final model, its difference from `expected`: the noise released.
fn released_noise(
    federation: &mut Federation,
    plan: &JobPlan,
    runs: usize,
    expected: f64,
) -> Vec<f64> {
    let mut samples = Vec::new();
    for _ in 0..runs {
        let job = federation.start(plan.clone());
        assert_eq!(federation.run(&job), JobState::Succeeded);
        let model = federation.engine.final_model(&job).expect("model");
        samples.extend(model.iter().map(|value| f64::from(*value) - expected));
    }
    samples
}

fn standard_deviation(samples: &[f64]) -> (f64, f64) {
    let mean = samples.iter().sum::<f64>() / samples.len() as f64;
    let variance =
        samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (samples.len() - 1) as f64;
    (mean, variance.sqrt())
}

#[test]
fn distributed_noise_is_in_the_released_model_with_the_calibrated_deviation() {
    let privacy = PartnerPrivacy::Distributed {
        noise_multiplier: 0.5,
        clip_norm: 1.0,
    };
    let mut job_plan = secure_plan(3, 1);
    job_plan.partner_privacy = privacy;
    let mut federation = Federation::new(&[Behaviour::Honest; 5]);
    let noiseless = federation.fedavg(&[0, 1, 2, 3, 4]);
    let samples = released_noise(&mut federation, &job_plan, 40, noiseless);
    // Every node adds σ_node integer units; five nodes' noise is summed,
    // scaled back by the granularity and the weight cap, and averaged over
    // the total (uncapped here) weight.
    let encoding = ReplyEncoding::new(PARAMETERS, 2, 5, &settings(), &privacy).expect("encoding");
    let mechanism = encoding.distributed.expect("distributed noise configured");
    let granularity = mechanism.encoding.granularity;
    let total_weight: f64 = federation.nodes.iter().map(|node| node.weight).sum();
    let expected_sigma =
        5f64.sqrt() * mechanism.node_sigma * granularity * settings().max_weight / total_weight;
    let (mean, sigma) = standard_deviation(&samples);
    // 240 samples: the sample deviation is within 15% with overwhelming
    // probability, and the mean within 5 standard errors.
    assert!(
        (sigma / expected_sigma - 1.0).abs() < 0.15,
        "released noise σ {sigma} vs calibrated {expected_sigma}"
    );
    assert!(
        mean.abs() < 5.0 * expected_sigma / (240f64).sqrt(),
        "bias {mean}"
    );
    // The calibration is for t survivors: their noise alone reaches z·Δ.
    let threshold = mechanism.min_survivors as f64;
    assert!(
        threshold.sqrt() * mechanism.node_sigma * granularity >= 0.5 * 1.0,
        "t = {threshold} nodes' noise must reach z·C"
    );
}

#[test]
fn central_noise_is_added_by_the_coordinator_and_fails_closed_without_a_source() {
    let max_weight = 300.0;
    let privacy = PartnerPrivacy::Central {
        noise_multiplier: 0.2,
        clip_norm: 1.0,
        max_weight,
    };
    let mut job_plan = plan(3, 1, AggregationMode::Plain);
    job_plan.partner_privacy = privacy;

    let mut without_source = Federation::new(&[Behaviour::Honest; 5]);
    let job = without_source.start(job_plan.clone());
    match without_source.run(&job) {
        JobState::Failed { reason } => assert!(reason.contains("noise source"), "{reason}"),
        other => panic!("a central-noise job without a noise source must fail, got {other:?}"),
    }

    let mut federation = Federation::new(&[Behaviour::Honest; 5]);
    federation
        .engine
        .set_noise_source(ChaCha20Rng::seed_from_u64(5));
    // Weights are capped at 300: nodes weigh 100, 200, 300, 300, 300.
    let capped: Vec<f64> = federation
        .nodes
        .iter()
        .map(|node| node.weight.min(max_weight))
        .collect();
    let capped_total: f64 = capped.iter().sum();
    let capped_mean: f64 = federation
        .nodes
        .iter()
        .zip(&capped)
        .map(|(node, weight)| weight * f64::from(node.delta))
        .sum::<f64>()
        / capped_total;
    let noise = released_noise(&mut federation, &job_plan, 40, capped_mean);
    let expected_sigma = 0.2 * 1.0 * max_weight / capped_total;
    let (mean, sigma) = standard_deviation(&noise);
    assert!(
        (sigma / expected_sigma - 1.0).abs() < 0.15,
        "central noise σ {sigma} vs {expected_sigma}"
    );
    assert!(
        mean.abs() < 5.0 * expected_sigma / (240f64).sqrt(),
        "bias {mean}"
    );
}

#[test]
fn a_refused_round_ends_the_job_with_the_rounds_already_released() {
    let mut federation = Federation::new(&[Behaviour::Honest; 5]);
    let job = federation.start(secure_plan(3, 3));
    // Run until round 2's training phase opens, then refuse it.
    let mut refused = false;
    for _ in 0..10_000 {
        let opened_round_two = federation.events().into_iter().any(|event| {
            matches!(
                event,
                EventKind::PhaseOpened {
                    round: 2,
                    phase: Phase::Train,
                    ..
                }
            )
        });
        if opened_round_two {
            federation
                .engine
                .refuse_round(
                    &job,
                    2,
                    "partner node-1 would exceed ε = 1".into(),
                    federation.now,
                )
                .expect("refusal accepted");
            refused = true;
            break;
        }
        let name = federation.nodes[0].name.clone();
        // Drive one step of the protocol for every node.
        for index in 0..federation.nodes.len() {
            let name = federation.nodes[index].name.clone();
            if let Some(task) = federation
                .engine
                .next_task(&name, federation.now)
                .expect("node")
            {
                if let Some(body) = federation.answer(index, &task) {
                    let submission = Submission {
                        node: name,
                        key: ResultKey {
                            job: task.job.clone(),
                            round: task.round,
                            phase: task.phase,
                        },
                        body,
                    };
                    let _ = federation.engine.submit(&submission, federation.now);
                }
            }
        }
        let _ = name;
        federation.now += Duration::from_millis(10);
        federation.engine.handle_timeout(federation.now);
    }
    assert!(refused, "round 2 never opened");
    let status = federation.engine.status(&job).expect("job");
    assert_eq!(status.state, JobState::Succeeded);
    assert_eq!(status.completed_rounds, 1);
    let events = federation.events();
    assert!(events.iter().any(|event| matches!(
        event,
        EventKind::RoundRefused { round: 2, reason } if reason.contains("node-1")
    )));
    // Nothing of round 2 is handed out afterwards.
    for node in &federation.nodes {
        assert!(
            federation
                .engine
                .next_task(&node.name, federation.now)
                .expect("node")
                .is_none()
        );
    }
    assert!(federation.engine.global_model(&job, 2).is_err());
}

#[test]
fn an_evaluation_continues_its_training_instance_in_one_step() {
    let mut federation = Federation::new(&[Behaviour::Honest; 5]);
    let job = federation.start(secure_plan(3, 2));
    assert_eq!(federation.run(&job), JobState::Succeeded);
    let total_weight: f64 = federation.nodes.iter().map(|node| node.weight).sum();
    for record in &federation.engine.status(&job).expect("job").history {
        assert_eq!(record.evaluate_participants, 5, "round {}", record.round);
        assert!((record.evaluate_statistics[0] - 5.0).abs() < 1e-3);
        assert!((record.evaluate_statistics[1] - total_weight).abs() < 1e-2);
    }
    // Each round: four steps after training's first, none after the
    // evaluation's first (its only) step.
    let events = federation.events();
    let evaluation_steps = events
        .iter()
        .filter(|event| {
            matches!(
                event,
                EventKind::SecureStepOpened {
                    phase: Phase::Evaluate,
                    ..
                }
            )
        })
        .count();
    assert_eq!(evaluation_steps, 0);
    let training_steps = events
        .iter()
        .filter(|event| {
            matches!(
                event,
                EventKind::SecureStepOpened {
                    phase: Phase::Train,
                    ..
                }
            )
        })
        .count();
    assert_eq!(training_steps, 2 * 4);
}

#[test]
fn a_continuation_a_survivor_cannot_send_releases_nothing_and_is_never_retried_with_those_who_sent()
{
    // Node 4 lost its continuation: the four that sent are released for the
    // evaluation, so no retry may sum them again; with one node left the
    // evaluation is abandoned and the job goes on with its model.
    let mut behaviours = [Behaviour::Honest; 5];
    behaviours[4] = Behaviour::ForgetsContinuations;
    let mut federation = Federation::new(&behaviours);
    let job = federation.start(secure_plan(3, 1));
    assert_eq!(federation.run(&job), JobState::Succeeded);
    let expected = federation.fedavg(&[0, 1, 2, 3, 4]);
    let model = federation.engine.final_model(&job).expect("model");
    assert!(
        model
            .iter()
            .all(|value| (f64::from(*value) - expected).abs() < 1e-4)
    );
    let record = &federation.engine.status(&job).expect("job").history[0];
    assert_eq!(record.train_participants, 5);
    assert_eq!(record.evaluate_participants, 0);
    let events = federation.events();
    let released: Vec<&Vec<String>> = events
        .iter()
        .filter_map(|event| match event {
            EventKind::PhaseAbandoned {
                phase: Phase::Evaluate,
                released,
                ..
            } => Some(released),
            _ => None,
        })
        .collect();
    assert_eq!(released.len(), 1, "the evaluation is abandoned once");
    assert_eq!(released[0].len(), 4);
    assert!(!released[0].contains(&"node-4".to_owned()));
}
