//! A real node process killed (SIGKILL) mid-job under secure aggregation: the
//! round completes with the others, and the restarted process rejoins for the following rounds.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use coordinator::CoordinatorConfig;
use veil_wire::v1;

use crate::support;

/// Starts a node process logging to `config` with the extension `log`.
fn spawn_node(config: &std::path::Path) -> Child {
    let log = std::fs::File::create(config.with_extension("log")).expect("node log file");
    Command::new(env!("CARGO_BIN_EXE_client-node"))
        .args(["run", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("node log file"))
        .stderr(log)
        .spawn()
        .expect("client-node starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_is_dropped_and_rejoins_after_restart() {
    let _machine = support::whole_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let coordinator_state = dir.path().join("coordinator.state");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(coordinator::run(
        CoordinatorConfig {
            state_dir: Some(coordinator_state.clone()),
            ..CoordinatorConfig::insecure_development()
        },
        listener,
        std::future::pending(),
    ));

    let synth = veil_synth_data::SynthConfig::demo(4, 5);
    let files = veil_synth_data::write_partner_files(&synth, dir.path()).unwrap();
    let mut configs = Vec::new();
    for (index, file) in files.iter().enumerate() {
        let path = dir.path().join(format!("node-{index}.toml"));
        std::fs::write(
            &path,
            format!(
                "node_id = \"node-{index}\"\ncoordinator = \"{address}\"\ninsecure_dev = true\n[data]\npath = \"{}\"\n",
                file.display()
            ),
        )
        .unwrap();
        configs.push(path);
    }
    let mut nodes: Vec<Child> = configs.iter().map(|c| spawn_node(c)).collect();
    // Wait for every node to register so round 0 invites all of them. Every wait has a
    // deadline and names what it waited for.
    let patience = std::time::Instant::now() + Duration::from_secs(300);
    for config in &configs {
        support::wait_until_registered(&config.with_extension("log"), patience).await;
    }

    let mut job = veil_job::standard_job("2024-10-02", 90);
    job.rounds = 5;
    job.max_participants = 4;
    job.aggregation.step_timeout_secs = Some(3.0);
    job.timeouts.train_secs = Some(4.0);
    job.timeouts.evaluate_secs = Some(4.0);
    let spec = job.to_wire();
    let mut operator = coordinator::operator::connect(&address, None)
        .await
        .unwrap();
    let job_id = coordinator::operator::submit(&mut operator, spec)
        .await
        .unwrap();
    coordinator::operator::start(&mut operator, &job_id)
        .await
        .unwrap();

    let status_of = |mut operator: coordinator::operator::OperatorClient, job_id: String| async move {
        operator
            .get_job_status(v1::JobRef { job_id })
            .await
            .unwrap()
            .into_inner()
    };
    // Kill node-2 as soon as round 1 is done, while round 2 is under way.
    loop {
        let status = status_of(operator.clone(), job_id.clone()).await;
        if status.completed_rounds >= 1 {
            break;
        }
        assert!(
            status.state == v1::JobState::Running as i32 && std::time::Instant::now() < patience,
            "round 1 never completed: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    nodes[2].kill().unwrap();
    nodes[2].wait().unwrap();
    // Restart it once the next round has completed without it.
    loop {
        let status = status_of(operator.clone(), job_id.clone()).await;
        if status.completed_rounds >= 2 {
            break;
        }
        assert!(
            status.state == v1::JobState::Running as i32 && std::time::Instant::now() < patience,
            "round 2 never completed without node-2: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    nodes[2] = spawn_node(&configs[2]);

    let status = coordinator::operator::watch(&mut operator, &job_id, |_| {})
        .await
        .unwrap();
    for node in &mut nodes {
        let _ = node.kill();
        let _ = node.wait();
    }
    assert_eq!(
        status.state,
        v1::JobState::Succeeded as i32,
        "{}",
        status.failure_reason
    );
    let history = status.history;
    assert_eq!(history.len(), 5);
    assert_eq!(history[0].participants, 4);
    // Some round after the kill ran without node-2. (Under the job's
    // customer-level DP only the final evaluation is released, so training
    // participants are the evidence.)
    assert!(
        history[1..].iter().any(|round| round.participants == 3),
        "a round should have lost node-2: {history:?}"
    );
    // After the restart node-2 takes part again, and the final model's
    // (noised) evaluation is released.
    let last = history.last().unwrap();
    assert_eq!(last.participants, 4, "{last:?}");
    assert!(last.eval_examples > 0, "{last:?}");

    // The restarted node's ledger (it survived the kill in its state folder)
    // and the coordinator's agree: the rounds it missed are in neither.
    let coordinator_ledger =
        veil_privacy_ledger::SqliteLedger::open(&coordinator_state.join("ledger.sqlite")).unwrap();
    let coordinator_charges = coordinator_ledger.charges_for_job(&job_id).unwrap();
    let audit_key = veil_audit_log::AuditPublicKey::from_hex(
        std::fs::read_to_string(coordinator_state.join(coordinator::audit::AUDIT_PUBLIC_KEY_FILE))
            .unwrap()
            .trim(),
    )
    .unwrap();
    let audit = veil_audit_log::verify_log_file(
        &coordinator_state.join(coordinator::audit::AUDIT_LOG_FILE),
        &audit_key,
        None,
    )
    .unwrap();
    for index in 0..4 {
        let partner = format!("node-{index}");
        let node_ledger = veil_privacy_ledger::SqliteLedger::open(
            &dir.path().join(format!("node-{index}.state/ledger.sqlite")),
        )
        .unwrap();
        let node_charges: Vec<_> = node_ledger
            .charges_for_partner(&partner)
            .unwrap()
            .into_iter()
            .filter(|charge| charge.job_id == job_id)
            .collect();
        let coordinator_view: Vec<_> = coordinator_charges
            .iter()
            .filter(|charge| charge.partner_id == partner)
            .cloned()
            .collect();
        let report = veil_privacy_ledger::reconcile(&coordinator_view, &node_charges);
        assert!(report.is_consistent(), "{partner}: {report:?}");
        assert!(!node_charges.is_empty(), "{partner} was never charged");

        // Its receipts (kept across its own crash) match the coordinator's
        // verified audit log: one per round it was charged for.
        let receipts = veil_audit_log::ReceiptStore::read_all(
            &dir.path()
                .join(format!("node-{index}.state"))
                .join(client_node::receipts::RECEIPTS_FILE),
        )
        .unwrap();
        let reconciled = veil_audit_log::reconcile(&receipts, &audit.entries, &audit_key);
        assert!(reconciled.is_consistent(), "{partner}: {reconciled:?}");
        let charged_rounds: std::collections::BTreeSet<u64> = node_charges
            .iter()
            .map(|charge| u64::from(charge.round))
            .collect();
        let receipt_rounds: std::collections::BTreeSet<u64> =
            receipts.iter().map(|receipt| receipt.round).collect();
        assert_eq!(receipt_rounds, charged_rounds, "{partner}");
        assert_eq!(
            receipts.len(),
            charged_rounds.len(),
            "{partner}: duplicate receipts"
        );
    }
}
