//! Five jobs at once on the same three nodes (issue 18, part 3), over mTLS with secure
//! aggregation and DP-SGD: every job completes with every node in every round, each
//! spends within its own budget, no key is charged twice, and for every job every node's
//! ledger agrees with the coordinator's key for key.

use std::time::Duration;

use client_node::config::NodeConfig;
use client_node::policy::NodePolicy;
use coordinator::CoordinatorConfig;
use veil_pki::{LocalPki, Role};
use veil_privacy_ledger::{Charge, SqliteLedger, compose};
use veil_wire::v1;

use crate::support;

const NODES: usize = 3;
const ROUNDS: u32 = 2;
/// Each job's customer-level ε budget per partner: five different budgets, so a job charged
/// against another's would show.
const BUDGETS: [f64; 5] = [2.0, 2.25, 2.5, 2.75, 3.0];
const DELTA: f64 = 1e-5;
/// Longest a job may take; far above what five jobs on three nodes need.
const PATIENCE: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_jobs_sharing_three_nodes_at_once_all_complete_and_reconcile() {
    let _machine = support::whole_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let pki = LocalPki::create(&root.join("pki")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let coordinator_state = root.join("coordinator.state");
    let server = tokio::spawn(coordinator::run(
        CoordinatorConfig {
            state_dir: Some(coordinator_state.clone()),
            ..CoordinatorConfig::mtls(
                pki.coordinator()
                    .unwrap()
                    .server(pki.revocations().unwrap())
                    .unwrap(),
            )
        },
        listener,
        async {
            let _ = stopped.await;
        },
    ));

    let mut synth = veil_synth_data::SynthConfig::demo(NODES, 29);
    for partner in &mut synth.partners {
        partner.n_customers = 400;
    }
    let files = veil_synth_data::write_partner_files(&synth, &root.join("data")).unwrap();
    let mut configs = Vec::new();
    for (index, file) in files.iter().enumerate() {
        let name = format!("node-{index}");
        pki.member(Role::Node, &name).unwrap();
        configs.push(NodeConfig {
            node_id: name.clone(),
            coordinator: address.clone(),
            data: veil_behaviour_features::CsvSource::new(file.clone()).into(),
            state_dir: Some(root.join(format!("{name}.state"))),
            // A yearly cap above the five jobs together: each job's own budget is what binds.
            policy: NodePolicy {
                customer_epsilon_per_year: 50.0,
                ..NodePolicy::default()
            },
            tls_dir: Some(pki.folder(&name)),
            insecure_dev: false,
            privacy_audit_kit: None,
        });
    }
    let nodes = support::start_nodes(configs).await;
    let operator_tls = pki
        .member(Role::Operator, "operator")
        .unwrap()
        .client()
        .unwrap();
    let mut operator = coordinator::operator::connect(&address, Some(&operator_tls))
        .await
        .unwrap();

    // Every job is submitted and started before any is watched: they run side by side.
    let mut jobs = Vec::new();
    for (index, budget) in BUDGETS.iter().enumerate() {
        let mut job = veil_job::standard_job("2024-10-02", 90);
        job.name = format!("concurrent-{index}");
        job.rounds = ROUNDS;
        job.model_mut().kind = "logistic_regression".to_owned();
        job.model_mut().hidden = Vec::new();
        job.training_mut().local_epochs = 1;
        job.privacy.customer_epsilon = Some(*budget);
        let job_id = coordinator::operator::submit(&mut operator, job.to_wire())
            .await
            .unwrap_or_else(|error| panic!("submitting job {index}: {error:#}"));
        coordinator::operator::start(&mut operator, &job_id)
            .await
            .unwrap_or_else(|error| panic!("starting {job_id}: {error:#}"));
        jobs.push((job_id, *budget));
    }
    // Side by side, not one after another: when the first job ends, every job has
    // committed a round.
    let deadline = std::time::Instant::now() + PATIENCE;
    let at_first_end = loop {
        let mut statuses = Vec::new();
        for (job_id, _) in &jobs {
            statuses.push(
                operator
                    .get_job_status(v1::JobRef {
                        job_id: job_id.clone(),
                    })
                    .await
                    .unwrap()
                    .into_inner(),
            );
        }
        if statuses
            .iter()
            .any(|status| status.state != v1::JobState::Running as i32)
        {
            break statuses;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no job ended within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let rounds_at_first_end: Vec<u32> = at_first_end
        .iter()
        .map(|status| status.completed_rounds)
        .collect();
    // How evenly the jobs advanced depends on the machine's load, so it is
    // printed, not asserted; the engine's earliest-deadline order is tested
    // without timing in `simulated_nodes`.
    println!("rounds completed by each job when the first ended: {rounds_at_first_end:?}");
    let mut watches = tokio::task::JoinSet::new();
    for (job_id, _) in &jobs {
        let mut operator = operator.clone();
        let job_id = job_id.clone();
        watches.spawn(async move {
            let (status, _) = support::watch_to_end(&mut operator, &job_id, PATIENCE).await;
            (job_id, status)
        });
    }
    let mut statuses = std::collections::BTreeMap::new();
    while let Some(finished) = watches.join_next().await {
        let (job_id, status) = finished.unwrap();
        statuses.insert(job_id, status);
    }
    for node in nodes {
        node.abort();
    }
    let _ = stop.send(());
    let _ = server.await;

    let coordinator_ledger = SqliteLedger::open(&coordinator_state.join("ledger.sqlite")).unwrap();
    for (job_id, budget) in &jobs {
        let status = &statuses[job_id];
        assert_eq!(
            v1::JobState::try_from(status.state),
            Ok(v1::JobState::Succeeded),
            "{job_id}: {}",
            status.failure_reason
        );
        assert_eq!(status.history.len() as u32, ROUNDS, "{job_id}");
        for round in &status.history {
            assert_eq!(round.participants as usize, NODES, "{job_id}: {round:?}");
        }
        let coordinator_charges = coordinator_ledger.charges_for_job(job_id).unwrap();
        let keys: std::collections::HashSet<_> =
            coordinator_charges.iter().map(Charge::key).collect();
        assert_eq!(
            keys.len(),
            coordinator_charges.len(),
            "{job_id}: a key charged twice"
        );
        for index in 0..NODES {
            let partner = format!("node-{index}");
            let (node_charges, report) = support::reconcile_partner(
                &coordinator_charges,
                &root.join(format!("{partner}.state")),
                &partner,
                job_id,
            );
            assert!(report.is_consistent(), "{job_id} {partner}: {report:?}");
            // Every round and the final evaluation, under this job's key only.
            assert_eq!(
                node_charges.len() as u32,
                ROUNDS + 1,
                "{job_id} {partner}: {node_charges:?}"
            );
            let spent = compose(node_charges.iter(), DELTA).unwrap();
            assert!(
                spent.epsilon <= *budget,
                "{job_id} {partner} spent ε = {} over its budget {budget}",
                spent.epsilon
            );
        }
    }
}
