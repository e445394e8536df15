//! The job's seed fixes everything that is not privacy-relevant: with
//! differential privacy off, the same job run twice by the same federation
//! (real coordinator, real nodes, secure aggregation over gRPC), with the same
//! partners in every round, gives the same model, up to the rounding of
//! summing partners' replies in arrival order. With DP on, the noise is drawn
//! fresh from the operating system every time (docs/differential-privacy.md
//! says why), so only this non-private case can be reproducible. Who takes
//! part in a round is the network's choice, not the seed's: a partner that
//! drops out changes the model, so the test checks that every round had all
//! of them before it compares.

use std::time::Duration;

use client_node::config::NodeConfig;
use veil_wire::v1;

use crate::support;

const NODES: usize = 3;

fn non_private_job(cutoff: &str, horizon_days: u32) -> v1::JobSpec {
    let mut job = veil_job::standard_job(cutoff, horizon_days);
    job.rounds = 2;
    job.privacy.customers = Some("off".to_owned());
    job.privacy.partners = Some("off".to_owned());
    // Plain SGD rather than the demo's Adam: Adam divides by the root of
    // the squared gradient, so a weight whose gradient is almost zero takes
    // a full learning-rate step in the direction of its rounding error, and
    // the parallel kernels' summation order (the machine's load) would then
    // decide the model. Under SGD rounding stays rounding.
    job.training_mut().optimizer = Some("sgd".to_owned());
    job.training_mut().learning_rate = 0.1;
    // Deadlines far above a loaded machine's phase times, so that no partner
    // drops out of a round and both runs aggregate the same partners.
    job.aggregation.step_timeout_secs = Some(60.0);
    job.timeouts.feature_stats_secs = Some(120.0);
    job.timeouts.train_secs = Some(300.0);
    job.timeouts.evaluate_secs = Some(120.0);
    job.to_wire()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_non_private_job_twice_gives_the_same_model() {
    let _machine = support::whole_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let synth = veil_synth_data::SynthConfig::demo(NODES, 23);
    let files = veil_synth_data::write_partner_files(&synth, dir.path()).unwrap();
    let coordinator = support::Coordinator::start(dir.path().join("coordinator.state")).await;
    let configs = files
        .iter()
        .enumerate()
        .map(|(index, file)| NodeConfig {
            node_id: format!("node-{index}"),
            tls_dir: None,
            insecure_dev: true,
            coordinator: coordinator.address.clone(),
            data: veil_behaviour_features::CsvSource::new(file.clone()).into(),
            state_dir: Some(dir.path().join(format!("node-{index}.state"))),
            policy: Default::default(),
            privacy_audit_kit: None,
        })
        .collect();
    let nodes = support::start_nodes(configs).await;
    let mut operator = coordinator.operator().await;
    let spec = non_private_job(
        &synth.suggested_cutoff().format("%Y-%m-%d").to_string(),
        synth.suggested_horizon_days(),
    );

    let mut models = Vec::new();
    for _ in 0..2 {
        let (job_id, status, transcript) =
            support::run_job_to_end(&mut operator, spec.clone(), Duration::from_secs(900)).await;
        assert_eq!(
            v1::JobState::try_from(status.state),
            Ok(v1::JobState::Succeeded),
            "{status:?}\n{transcript}"
        );
        let participants: Vec<u32> = status
            .history
            .iter()
            .map(|round| round.participants)
            .collect();
        assert_eq!(
            participants,
            vec![NODES as u32; status.total_rounds as usize],
            "every round must aggregate every partner for the runs to be comparable:\n{transcript}"
        );
        models.push(
            coordinator::operator::fetch_model(&mut operator, &job_id)
                .await
                .unwrap(),
        );
    }
    assert_ne!(models[0].job_id, models[1].job_id);
    // Equal up to the order in which the partners' replies were summed:
    // floating-point addition is not associative, and arrival order is the
    // network's. Everything the seed fixes is the same, so what is left is
    // rounding, many orders of magnitude below what training changes.
    let largest_difference = |left: &[f64], right: &[f64]| {
        left.iter()
            .zip(right)
            .map(|(a, b)| (a - b).abs() / a.abs().max(1.0))
            .fold(0.0, f64::max)
    };
    assert!(largest_difference(&models[0].scaling.mean, &models[1].scaling.mean) < 1e-8);
    assert!(largest_difference(&models[0].scaling.std, &models[1].scaling.std) < 1e-8);
    let as_f64 = |values: &[f32]| values.iter().map(|&v| f64::from(v)).collect::<Vec<_>>();
    let parameters = largest_difference(
        &as_f64(&models[0].parameters),
        &as_f64(&models[1].parameters),
    );
    assert!(parameters < 1e-3, "parameters differ by up to {parameters}");

    coordinator.stop().await;
    for node in nodes {
        node.abort();
    }
}
