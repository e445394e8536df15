//! The Prometheus endpoints end to end: a real coordinator and a node on data seeded with known
//! personal values run a two-round job over gRPC on 127.0.0.1 while both serve `/metrics`. Each
//! scrape must parse strictly; the counters must match the job's rounds, the ε gauge must match
//! the coordinator's ledger, and no label value (nor any byte of the exposition) may carry a
//! seeded personal value, its case-folded forms or its hashes.

use std::sync::Arc;
use std::time::Duration;

use client_node::config::NodeConfig;
use tokio::net::TcpListener;
use veil_metrics::{CoordinatorMetrics, NodeMetrics, Registry};
use veil_privacy_ledger::{PrivacyUnit, SqliteLedger, compose_rdp};
use veil_wire::v1;

use crate::support;

use crate::support::prometheus::{Exposition, parse, scrape};
use crate::support::seeded::{contains, forbidden_forms, seed_data, single_node_job};

const ROUNDS: u32 = 2;
const NODE_ID: &str = "partner-metrics-test";

/// Serves `registry` on a fresh port until `stop` fires; returns the address.
async fn endpoint(
    registry: Registry,
    stop: tokio::sync::watch::Receiver<bool>,
) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(veil_metrics::serve(
        listener,
        Arc::new(registry),
        async move {
            let mut stop = stop;
            let _ = stop.wait_for(|stop| *stop).await;
        },
    ));
    address
}

fn parsed(text: &str) -> Exposition {
    parse(text).unwrap_or_else(|error| panic!("{error}\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_the_rounds_and_carry_no_personal_value() {
    let _machine = support::whole_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let (seeded, synth) = seed_data(dir.path());
    let (stop, stopped) = tokio::sync::watch::channel(false);

    let mut coordinator_registry = Registry::default();
    let coordinator_metrics = Arc::new(CoordinatorMetrics::register(&mut coordinator_registry));
    let coordinator_endpoint = endpoint(coordinator_registry, stopped.clone()).await;
    let mut node_registry = Registry::default();
    let node_metrics = Arc::new(NodeMetrics::register(&mut node_registry));
    let node_endpoint = endpoint(node_registry, stopped.clone()).await;

    let coordinator_state = dir.path().join("coordinator.state");
    let coordinator =
        support::Coordinator::start_counted(coordinator_state.clone(), Some(coordinator_metrics))
            .await;
    let config = NodeConfig {
        node_id: NODE_ID.to_owned(),
        tls_dir: None,
        insecure_dev: true,
        coordinator: coordinator.address.clone(),
        data: seeded.config.clone(),
        state_dir: Some(dir.path().join("metrics-node.state")),
        policy: client_node::policy::NodePolicy {
            allow_plain_aggregation: true,
            ..Default::default()
        },
        privacy_audit_kit: None,
    };
    let nodes = support::start_counted_nodes(vec![(config, Some(node_metrics))]).await;

    let job_file = single_node_job(&synth, ROUNDS);
    let job = job_file.to_wire();
    let spec = veil_job::JobSpec::from_wire(&job).unwrap();

    let mut operator = coordinator.operator().await;
    let job_id = coordinator::operator::submit(&mut operator, job)
        .await
        .unwrap();
    coordinator::operator::start(&mut operator, &job_id)
        .await
        .unwrap();
    // While the job runs: the endpoint answers and parses, and counts no
    // more rounds than the job has.
    let during = parsed(&scrape(coordinator_endpoint).await);
    let started_during = during
        .value("veil_coordinator_rounds_started_total", &[("job", &job_id)])
        .unwrap_or(0.0);
    assert!(started_during <= f64::from(ROUNDS), "{started_during}");

    let (status, transcript) =
        support::watch_to_end(&mut operator, &job_id, Duration::from_secs(180)).await;
    assert_eq!(
        v1::JobState::try_from(status.state),
        Ok(v1::JobState::Succeeded),
        "{status:?}\n{transcript}"
    );
    assert_eq!(status.completed_rounds, ROUNDS);

    let coordinator_text = scrape(coordinator_endpoint).await;
    let node_text = scrape(node_endpoint).await;
    let _ = stop.send(true);
    coordinator.stop().await;
    for node in nodes {
        node.abort();
    }
    let after = parsed(&coordinator_text);
    let node = parsed(&node_text);

    // The coordinator's counters are the job's rounds.
    let job_label = [("job", job_id.as_str())];
    let count = |name: &str| after.value(name, &job_label).unwrap_or(0.0);
    assert_eq!(
        count("veil_coordinator_rounds_started_total"),
        f64::from(ROUNDS)
    );
    assert_eq!(
        count("veil_coordinator_rounds_committed_total"),
        f64::from(ROUNDS)
    );
    assert_eq!(count("veil_coordinator_rounds_failed_total"), 0.0);
    assert_eq!(count("veil_coordinator_rounds_refused_total"), 0.0);
    assert_eq!(
        after.value(
            "veil_coordinator_phase_duration_seconds_count",
            &[("phase", "train")]
        ),
        Some(f64::from(ROUNDS)),
        "{coordinator_text}"
    );
    assert_eq!(
        after.value("veil_coordinator_registered_nodes", &[]),
        Some(1.0)
    );
    assert!(after.value("veil_coordinator_received_bytes_total", &[]) > Some(10_000.0));
    assert!(after.value("veil_coordinator_sent_bytes_total", &[]) > Some(1_000.0));
    assert!(
        after.value("veil_coordinator_ledger_write_seconds_count", &[]) >= Some(f64::from(ROUNDS))
    );
    assert!(
        after.value("veil_coordinator_audit_write_seconds_count", &[]) >= Some(f64::from(ROUNDS))
    );

    // The ε gauge is the ledger's RDP bound for the partner, at the job's δ.
    let ledger = SqliteLedger::open(&coordinator_state.join("ledger.sqlite")).unwrap();
    let charges = ledger.charges_for_job(&job_id).unwrap();
    let budget = spec.privacy.job_budget(&job_id);
    for (unit, unit_name) in [
        (PrivacyUnit::Customer, "customer"),
        (PrivacyUnit::Partner, "partner"),
    ] {
        let ours: Vec<_> = charges
            .iter()
            .filter(|charge| charge.partner_id == NODE_ID && charge.unit == unit)
            .collect();
        let gauge = after.value(
            "veil_coordinator_epsilon_spent",
            &[("job", &job_id), ("partner", NODE_ID), ("unit", unit_name)],
        );
        if ours.is_empty() {
            assert_eq!(gauge, None, "{unit_name}");
            continue;
        }
        let expected = compose_rdp(ours, budget.for_unit(unit).delta).unwrap();
        let gauge = gauge.unwrap_or_else(|| panic!("no {unit_name} ε gauge\n{coordinator_text}"));
        // The same composition of the same charges: equal up to float printing.
        assert!(
            (gauge - expected).abs() <= 1e-9 * expected.max(1.0),
            "{unit_name}: gauge {gauge}, ledger {expected}"
        );
        assert_eq!(
            after.value(
                "veil_coordinator_epsilon_budget",
                &[("job", &job_id), ("partner", ""), ("unit", unit_name)],
            ),
            Some(budget.for_unit(unit).epsilon)
        );
    }

    // The node's counters: it joined every round and sent one training
    // release per round; its load counts are the seeded files'.
    assert_eq!(
        node.value("veil_node_rounds_joined_total", &job_label),
        Some(f64::from(ROUNDS))
    );
    assert_eq!(
        node.value("veil_node_releases_sent_total", &[("phase", "train")]),
        Some(f64::from(ROUNDS))
    );
    assert!(
        node.value(
            "veil_node_rows_accepted_total",
            &[("source", "transactions")]
        ) > Some(1_000.0)
    );
    // Emails are hidden in the profile's notes and in a transaction category.
    assert!(
        node.value(
            "veil_node_pii_redacted_total",
            &[("source", "profile"), ("kind", "email")]
        ) > Some(0.0),
        "{node_text}"
    );

    // Every label value is a job id, the partner's name, or a word from a
    // fixed list: so none can be a customer value or a pseudonym.
    let fixed_words = [
        "",
        "train",
        "evaluate",
        "feature-stats",
        "customer",
        "partner",
        "transactions",
        "profile",
        "email",
        "phone",
        "resident_id",
        "bank_card",
        "ipv4",
        "ipv6",
    ];
    let allowed = |value: &str| {
        value == job_id
            || value == NODE_ID
            || fixed_words.contains(&value)
            || veil_federation::DeclineCode::ALL
                .iter()
                .any(|code| code.as_str() == value)
    };
    for (which, exposition) in [("coordinator", &after), ("node", &node)] {
        for value in exposition.label_values() {
            assert!(allowed(&value), "{which}: unexpected label value {value:?}");
        }
    }
    // And no form of any seeded personal value is anywhere in either text
    // but the samples' numbers: a six-digit postcode is a substring of some
    // byte count by chance, and a count or duration carries no text.
    let without_values = |text: &str| -> String {
        text.lines()
            .map(|line| match line.starts_with('#') {
                true => line,
                // The series is the name and its labels; the value (and
                // any timestamp) follows the labels' closing brace, or the
                // name's first space when there are no labels.
                false => match line.rfind('}') {
                    Some(end) => &line[..=end],
                    None => line.split(' ').next().unwrap_or(line),
                },
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let (coordinator_series, node_series) = (
        without_values(&coordinator_text),
        without_values(&node_text),
    );
    let mut leaks = Vec::new();
    for secret in &seeded.secrets {
        for form in forbidden_forms(secret) {
            for (which, text) in [("coordinator", &coordinator_series), ("node", &node_series)] {
                if contains(text.as_bytes(), &form) {
                    leaks.push(format!("{which}: a form of a {}-char secret", secret.len()));
                }
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "personal values in the metrics: {leaks:?}"
    );
}

/// The parser the test relies on refuses what Prometheus would refuse.
#[test]
fn the_parser_is_strict() {
    let good = "# TYPE a counter\na_total{x=\"1\\\"2\"} 3\n# EOF\n";
    let exposition = parse(good).unwrap();
    assert_eq!(exposition.value("a_total", &[("x", "1\"2")]), Some(3.0));
    for (bad, reason) in [
        ("# TYPE a counter\na_total 3\n", "no # EOF at the end"),
        ("b_total 3\n# EOF\n", "sample of no declared family"),
        (
            "# TYPE a counter\na_total{x=1} 3\n# EOF\n",
            "a label value must be quoted",
        ),
        (
            "# TYPE a counter\na_total{x=\"1\"} three\n# EOF\n",
            "invalid value",
        ),
        ("# TYPE a counter\na_total -1\n# EOF\n", "negative counter"),
        (
            "# TYPE a counter\n# EOF\na_total 1\n",
            "content after # EOF",
        ),
        (
            "# TYPE a counter\na_total{x=\"1\",x=\"2\"} 1\n# EOF\n",
            "repeated",
        ),
    ] {
        let error = parse(bad).expect_err(bad);
        assert!(error.contains(reason), "{bad:?}: {error}");
    }
}
