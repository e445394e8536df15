//! Differential privacy end to end over real gRPC on 127.0.0.1: DP-SGD at
//! every node, the coordinator refusing at submission a job whose plan
//! exceeds its budget, a node declining a job whose plan exceeds its own
//! yearly cap (an event the operator sees), and the coordinator's and
//! nodes' SQLite ledgers agreeing after everything stopped and was
//! reopened.

use std::path::{Path, PathBuf};
use std::time::Duration;

use client_node::config::NodeConfig;
use client_node::policy::NodePolicy;
use veil_privacy_ledger::{PrivacyUnit, Release, SqliteLedger, compose, reconcile};
use veil_wire::v1;

use crate::support;

const NODES: usize = 4;
/// The node whose policy caps customer-level ε below one round's cost.
const STRICT: usize = 3;
const ROUNDS: u32 = 6;
/// Enough for the job's six rounds and its final evaluation.
const JOB_CUSTOMER_EPSILON: f64 = 3.5;
/// Not enough: a job asking for this is refused at submission.
const TOO_SMALL_CUSTOMER_EPSILON: f64 = 1.2;

fn job(customer_epsilon: f64) -> v1::JobSpec {
    let mut job = veil_job::standard_job("2024-10-02", 90);
    job.rounds = ROUNDS;
    job.max_participants = 4;
    job.privacy.customer_epsilon = Some(customer_epsilon);
    job.aggregation.step_timeout_secs = Some(3.0);
    job.timeouts.train_secs = Some(20.0);
    job.timeouts.evaluate_secs = Some(10.0);
    job.to_wire()
}

fn node_config(index: usize, address: &str, file: &Path, state: &Path) -> NodeConfig {
    let mut policy = NodePolicy::default();
    if index == STRICT {
        policy.customer_epsilon_per_year = 0.05;
    }
    NodeConfig {
        node_id: format!("node-{index}"),
        tls_dir: None,
        insecure_dev: true,
        privacy_audit_kit: None,
        coordinator: address.to_owned(),
        data: veil_behaviour_features::CsvSource::new(file.to_owned()).into(),
        state_dir: Some(state.join(format!("node-{index}.state"))),
        policy,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_and_vetoes_are_events_and_the_ledgers_reconcile_after_restart() {
    let _machine = support::whole_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let synth = veil_synth_data::SynthConfig::demo(NODES, 41);
    let files: Vec<PathBuf> = veil_synth_data::write_partner_files(&synth, dir.path()).unwrap();
    let coordinator_state = dir.path().join("coordinator.state");

    let (coordinator, console_address) =
        support::Coordinator::start_with_console(coordinator_state.clone()).await;
    let configs = files
        .iter()
        .enumerate()
        .map(|(index, file)| node_config(index, &coordinator.address, file, dir.path()))
        .collect();
    let nodes = support::start_nodes(configs).await;
    let mut operator = coordinator.operator().await;
    // The plan of every round and the final evaluation does not fit 1.2:
    // refused now, with the numbers, not stopped in round 3.
    let refused = coordinator::operator::submit(&mut operator, job(TOO_SMALL_CUSTOMER_EPSILON))
        .await
        .expect_err("a job over its own budget");
    let refused = format!("{refused:#}");
    assert!(
        refused.contains("the job would spend customer-level ε =")
            && refused.contains(&format!("above its budget of {TOO_SMALL_CUSTOMER_EPSILON}")),
        "{refused}"
    );
    let (job_id, status, transcript) = support::run_job_to_end(
        &mut operator,
        job(JOB_CUSTOMER_EPSILON),
        Duration::from_secs(300),
    )
    .await;

    // The job ran to its end within its budget, without the strict node.
    assert_eq!(
        v1::JobState::try_from(status.state),
        Ok(v1::JobState::Succeeded),
        "{status:?}\n{transcript}"
    );
    assert_eq!(status.completed_rounds, ROUNDS, "{transcript}");
    // The strict node declined the job, by name: its cap cannot afford the
    // whole plan, so it declined at its first task rather than in round 3.
    assert!(
        transcript.contains(&format!("'node-{STRICT}' declined: privacy-cap-exceeded")),
        "{transcript}"
    );

    // `status` shows each partner's spend against the plan: every node that
    // took part in every round and the final evaluation spent exactly the
    // planned ε, and the node that declined spent nothing.
    let shown = operator
        .get_job_status(v1::JobRef {
            job_id: job_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    for index in 0..NODES {
        let partner = format!("node-{index}");
        let spends: Vec<_> = shown
            .privacy
            .iter()
            .filter(|spend| spend.partner == partner)
            .collect();
        if index == STRICT {
            assert!(spends.is_empty(), "{partner}: {spends:?}");
            continue;
        }
        assert_eq!(spends.len(), 1, "{partner}: {spends:?}");
        let spend = spends[0];
        assert_eq!(spend.unit, "customer");
        // The same mechanisms composed by the same accountant: equal up to
        // floating-point summation order.
        assert!(
            (spend.epsilon_spent - spend.epsilon_planned).abs() <= 1e-9 * spend.epsilon_planned,
            "{partner}: {spend:?}"
        );
        assert!(spend.epsilon_planned <= spend.epsilon_budget, "{spend:?}");
        assert_eq!(spend.epsilon_budget, JOB_CUSTOMER_EPSILON);
    }

    // The console's round table shows the veto, with its code, in every round the strict
    // node was invited to (each one, from round 0's feature statistics on: its cap cannot
    // afford the plan), read from the audit log, so it would survive a restart too.
    let visitor =
        support::console_visitor::ConsoleVisitor::operator(&coordinator_state, console_address)
            .await;
    let (code, page) = visitor.get(&format!("/jobs/{job_id}")).await;
    assert_eq!(code, 200, "{page}");
    let table = page
        .split_once("id=\"round-table\"")
        .and_then(|(_, rest)| rest.split_once("</table>"))
        .map(|(table, _)| table)
        .unwrap_or_else(|| panic!("no round table in {page}"));
    let veto = format!("node-{STRICT} (privacy-cap-exceeded)");
    let rows: Vec<&str> = table.split("<tr class=\"round\"").skip(1).collect();
    assert!(
        rows.len() > ROUNDS as usize,
        "a row per round and round 0: {table}"
    );
    assert!(
        rows.iter().all(|row| row.contains(&veto)),
        "every round shows the veto: {table}"
    );
    for index in (0..NODES).filter(|index| *index != STRICT) {
        assert!(
            !table.contains(&format!("node-{index} (")),
            "only the strict node declined: {table}"
        );
    }

    coordinator.stop().await;
    for node in nodes {
        node.abort();
    }

    // The audit log verifies under the coordinator's public key and records
    // the refusal, the vetoes and every committed round with its ε.
    let public_key = veil_audit_log::AuditPublicKey::from_hex(
        std::fs::read_to_string(coordinator_state.join("audit-public.key"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    let log_path = coordinator_state.join("audit.log");
    let head = veil_audit_log::Head::read(&veil_audit_log::head_path_for(&log_path)).unwrap();
    let audit = veil_audit_log::verify_log_file(&log_path, &public_key, head.as_ref()).unwrap();
    let kinds: Vec<&str> = audit
        .entries
        .iter()
        .map(|entry| entry.event.kind())
        .collect();
    for expected in [
        "job_created",
        "round_started",
        "round_committed",
        "evaluation_released",
        "node_veto",
        "model_released",
    ] {
        assert!(
            kinds.contains(&expected),
            "no {expected} entry in {kinds:?}"
        );
    }
    let committed = kinds
        .iter()
        .filter(|kind| **kind == "round_committed")
        .count();
    assert_eq!(committed as u32, status.completed_rounds);

    // Reopened from disk, as after a restart of every process.
    let coordinator_ledger = SqliteLedger::open(&coordinator_state.join("ledger.sqlite")).unwrap();
    let coordinator_charges = coordinator_ledger.charges_for_job(&job_id).unwrap();
    assert!(!coordinator_charges.is_empty());
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
        if index == STRICT {
            assert!(node_charges.is_empty(), "the vetoing node was charged");
            continue;
        }
        // One customer-level DP-SGD charge per completed round, and the
        // final model's evaluation under its own key in the last round,
        // within budget; beside them the secure-aggregation guarantee each
        // round had, the same in the node's ledger as in the coordinator's.
        let (evaluations, rounds): (Vec<_>, Vec<_>) = node_charges
            .iter()
            .partition(|charge| charge.release == Release::FinalEvaluation);
        assert_eq!(rounds.len() as u32, status.completed_rounds);
        assert_eq!(evaluations.len(), 1, "{partner}: {evaluations:?}");
        assert_eq!(evaluations[0].round, u64::from(ROUNDS));
        // The audit log records that release, with this partner's ε.
        assert!(
            audit.entries.iter().any(|entry| matches!(
                &entry.event,
                veil_audit_log::AuditEvent::EvaluationReleased { participants, epsilon_charged, .. }
                    if participants.contains(&partner)
                        && epsilon_charged.iter().any(|charge| charge.partner == partner)
            )),
            "{partner}: no evaluation release in the audit log"
        );
        let coordinator_guarantees = coordinator_ledger.guarantees_for_job(&job_id).unwrap();
        assert_eq!(coordinator_guarantees.len() as u32, status.completed_rounds);
        assert_eq!(
            node_ledger.guarantees_for_job(&job_id).unwrap(),
            coordinator_guarantees,
            "{partner}"
        );
        assert!(
            coordinator_guarantees
                .iter()
                .all(|(_, guarantee)| guarantee.starts_with("tolerates")),
            "{coordinator_guarantees:?}"
        );
        assert!(node_charges.iter().all(|c| c.unit == PrivacyUnit::Customer));
        let spent = compose(node_charges.iter(), 1e-5).unwrap();
        assert!(
            spent.epsilon <= JOB_CUSTOMER_EPSILON,
            "{partner} spent ε = {}",
            spent.epsilon
        );
    }
}
