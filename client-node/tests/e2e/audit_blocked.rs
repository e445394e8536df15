//! A release the audit log cannot record does not happen: over real gRPC,
//! with real nodes and a real audit log on disk, the coordinator's audit
//! appends start failing after the job was created (its signed head can no
//! longer be replaced), and the first round commit, which must be recorded
//! before its model can be read, stops the job instead. Nobody can fetch a
//! model, and the round's charges (the nodes' inputs did leave) are in both
//! ledgers all the same.

use std::path::{Path, PathBuf};
use std::time::Duration;

use client_node::config::NodeConfig;
use client_node::policy::NodePolicy;
use veil_privacy_ledger::{SqliteLedger, reconcile};
use veil_wire::v1;

use crate::support;

const NODES: usize = 3;

fn job() -> v1::JobSpec {
    let mut job = veil_job::standard_job("2024-10-02", 90);
    job.rounds = 2;
    job.model_mut().kind = "logistic_regression".to_owned();
    job.model_mut().hidden = Vec::new();
    job.aggregation.step_timeout_secs = Some(5.0);
    job.to_wire()
}

fn node_config(index: usize, address: &str, file: &Path, state: &Path) -> NodeConfig {
    NodeConfig {
        node_id: format!("node-{index}"),
        tls_dir: None,
        insecure_dev: true,
        privacy_audit_kit: None,
        coordinator: address.to_owned(),
        data: veil_behaviour_features::CsvSource::new(file.to_owned()).into(),
        state_dir: Some(state.join(format!("node-{index}.state"))),
        policy: NodePolicy::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_commit_the_audit_log_cannot_record_stops_the_job_before_its_model_is_read() {
    let _machine = support::whole_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let synth = veil_synth_data::SynthConfig::demo(NODES, 43);
    let files: Vec<PathBuf> = veil_synth_data::write_partner_files(&synth, dir.path()).unwrap();
    let coordinator_state = dir.path().join("coordinator.state");

    let coordinator = support::Coordinator::start(coordinator_state.clone()).await;
    let configs = files
        .iter()
        .enumerate()
        .map(|(index, file)| node_config(index, &coordinator.address, file, dir.path()))
        .collect();
    let nodes = support::start_nodes(configs).await;
    let mut operator = coordinator.operator().await;
    let job_id = coordinator::operator::submit(&mut operator, job())
        .await
        .unwrap();

    // From now on every append fails: the signed head is replaced by
    // rename after each entry, and a directory in its place cannot be
    // replaced by a file, whoever the process runs as (root included).
    let log_path = coordinator_state.join(coordinator::audit::AUDIT_LOG_FILE);
    let head_path = veil_audit_log::head_path_for(&log_path);
    std::fs::remove_file(&head_path).unwrap();
    std::fs::create_dir(&head_path).unwrap();
    std::fs::write(head_path.join("keep"), b"not a head").unwrap();

    coordinator::operator::start(&mut operator, &job_id)
        .await
        .unwrap();
    let (status, transcript) =
        support::watch_to_end(&mut operator, &job_id, Duration::from_secs(300)).await;

    assert_eq!(
        v1::JobState::try_from(status.state),
        Ok(v1::JobState::Failed),
        "{status:?}\n{transcript}"
    );
    assert!(
        status
            .failure_reason
            .contains("the audit log could not record round 1 commit; the release is blocked"),
        "{}",
        status.failure_reason
    );
    assert_eq!(status.completed_rounds, 0, "{status:?}");
    // No operator can read a model the log does not account for.
    let error = coordinator::operator::fetch_model(&mut operator, &job_id)
        .await
        .expect_err("a failed job's model stays inside");
    assert!(format!("{error:#}").contains("cannot fetch"), "{error:#}");

    coordinator.stop().await;
    for node in nodes {
        node.abort();
    }

    // The nodes' masked inputs left, so round 1 is charged on both sides
    // and the ledgers agree.
    let coordinator_ledger = SqliteLedger::open(&coordinator_state.join("ledger.sqlite")).unwrap();
    let coordinator_charges = coordinator_ledger.charges_for_job(&job_id).unwrap();
    assert!(!coordinator_charges.is_empty());
    assert!(coordinator_charges.iter().all(|charge| charge.round == 1));
    for index in 0..NODES {
        let partner = format!("node-{index}");
        let node_ledger =
            SqliteLedger::open(&dir.path().join(format!("node-{index}.state/ledger.sqlite")))
                .unwrap();
        let node_charges = node_ledger.charges_for_partner(&partner).unwrap();
        let coordinator_view: Vec<_> = coordinator_charges
            .iter()
            .filter(|charge| charge.partner_id == partner)
            .cloned()
            .collect();
        let report = reconcile(&coordinator_view, &node_charges);
        assert!(report.is_consistent(), "{partner}: {report:?}");
    }
}
