//! End-to-end over real gRPC on 127.0.0.1: a rogue node's malformed updates,
//! and a job naming an unknown task. The demo's own end-to-end test is in
//! `crates/demo/tests`.

use std::time::Duration;

use coordinator::CoordinatorConfig;
use tonic::Code;
use veil_wire::v1::node_service_client::NodeServiceClient;
use veil_wire::v1::{self, result_chunk};

use crate::support;

async fn start_coordinator() -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(coordinator::run(
        CoordinatorConfig::insecure_development(),
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    (address, stop)
}

fn demo_job(task: &str) -> v1::JobSpec {
    let mut job = veil_job::standard_job("2024-10-02", 90);
    job.task.kind = task.to_owned();
    job.rounds = 2;
    job.min_participants = 1;
    // Short deadlines: the rogue node never completes a phase.
    job.timeouts.feature_stats_secs = Some(3.0);
    job.timeouts.train_secs = Some(3.0);
    job.timeouts.evaluate_secs = Some(3.0);
    job.to_wire()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_with_an_unknown_task_or_feature_is_refused_by_name() {
    let _machine = support::whole_machine().await;
    let (address, _stop) = start_coordinator().await;
    let mut operator = coordinator::operator::connect(&address, None)
        .await
        .unwrap();
    let status = operator
        .submit_job(v1::SubmitJobRequest {
            spec: Some(demo_job("fraud")),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("fraud"), "{}", status.message());
    let mut spec = demo_job("churn");
    spec.features = vec!["recency_days".into(), "shoe_size".into()];
    let status = operator
        .submit_job(v1::SubmitJobRequest { spec: Some(spec) })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("shoe_size"),
        "{}",
        status.message()
    );
    let status = operator
        .get_job_status(v1::JobRef {
            job_id: "job-404".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("job-404"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_updates_are_rejected_and_the_round_completes() {
    let _machine = support::whole_machine().await;
    let (address, _stop) = start_coordinator().await;
    let data = tempfile::tempdir().unwrap();
    let synth = veil_synth_data::SynthConfig::demo(1, 11);
    let files = veil_synth_data::write_partner_files(&synth, data.path()).unwrap();
    // One honest node on real data.
    let honest = client_node::config::NodeConfig {
        node_id: "honest".into(),
        tls_dir: None,
        insecure_dev: true,
        privacy_audit_kit: None,
        coordinator: address.clone(),
        data: veil_behaviour_features::CsvSource::new(files[0].clone()).into(),
        state_dir: Some(data.path().join("honest.state")),
        policy: client_node::policy::NodePolicy {
            allow_plain_aggregation: true,
            ..Default::default()
        },
    };
    tokio::spawn(client_node::node::run(honest, std::future::pending::<()>()));

    // A rogue node that answers every training task with a wrong-shaped or NaN update.
    let mut rogue = NodeServiceClient::connect(address.clone()).await.unwrap();
    rogue
        .register(v1::RegisterRequest {
            node_id: "rogue".into(),
            software_version: "test".into(),
            identity_public_key: Vec::new(),
            certificate_der: Vec::new(),
        })
        .await
        .unwrap();

    let mut operator = coordinator::operator::connect(&address, None)
        .await
        .unwrap();
    // Plain mode, chosen explicitly: the test inspects individual updates.
    let mut job = demo_job("churn");
    job.aggregation = Some(v1::Aggregation {
        mode: "plain".into(),
        ..Default::default()
    });
    // The rogue never completes a training phase, so each one lasts its
    // deadline; that deadline must leave the rogue's malformed submission
    // time to arrive while the phase is open even on a loaded machine
    // (3 s did not: the submission was sometimes refused as too late).
    if let Some(timeouts) = job.timeouts.as_mut() {
        timeouts.train_ms = 10_000;
    }
    // Rounds to spare for late submissions (see below).
    job.rounds = 4;
    let job_id = coordinator::operator::submit(&mut operator, job)
        .await
        .unwrap();
    coordinator::operator::start(&mut operator, &job_id)
        .await
        .unwrap();

    let mut rejections = Vec::new();
    loop {
        let task = rogue
            .fetch_task(v1::FetchTaskRequest {
                node_id: "rogue".into(),
                wait_ms: 2000,
            })
            .await
            .unwrap()
            .into_inner()
            .task;
        let status = operator
            .get_job_status(v1::JobRef {
                job_id: job_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        if status.state != v1::JobState::Running as i32 {
            assert_eq!(
                status.state,
                v1::JobState::Succeeded as i32,
                "{}",
                status.failure_reason
            );
            assert_eq!(status.completed_rounds, 4);
            break;
        }
        let Some(task) = task else { continue };
        if task.phase != v1::Phase::Train as i32 {
            continue;
        }
        let (length, poison) = if rejections.is_empty() {
            (task.parameter_count + 3, false)
        } else {
            (task.parameter_count, true)
        };
        let mut values = vec![0.0f32; length as usize];
        if poison {
            values[5] = f32::NAN;
        }
        let header = v1::ResultHeader {
            node_id: "rogue".into(),
            job_id: task.job_id.clone(),
            round: task.round,
            phase: task.phase,
            weight: 10.0,
            statistics: vec![1.0, 10.0],
            vector_length: length,
            ..Default::default()
        };
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let messages = vec![
            v1::ResultChunk {
                body: Some(result_chunk::Body::Header(header)),
            },
            v1::ResultChunk {
                body: Some(result_chunk::Body::Values(bytes)),
            },
        ];
        let status = rogue
            .submit_result(tokio_stream::iter(messages))
            .await
            .unwrap_err();
        // A submission that arrives after its phase closed (the machine is
        // loaded and the honest node was quick) is refused as late; the
        // rogue tries again in the next round.
        if status.code() == Code::FailedPrecondition && status.message().contains("is not open") {
            continue;
        }
        assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
        rejections.push(status.message().to_owned());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(rejections.len() >= 2, "{rejections:?}");
    assert!(
        rejections[0].contains("above the limit"),
        "{}",
        rejections[0]
    );
    assert!(
        rejections[1].contains("value 5 is not finite"),
        "{}",
        rejections[1]
    );
}
