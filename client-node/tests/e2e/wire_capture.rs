//! Proof that nothing identifying leaves the node: a node runs a short federated job, then a
//! segmentation, an RFM and a basket-rules job, on data
//! seeded with known emails, phone numbers, resident ID numbers, names and raw customer ids,
//! talking to an in-process coordinator through a recording TCP proxy on 127.0.0.1 (plaintext,
//! for this test only). Every byte in both directions is checked for each raw value, its
//! lower- and upper-case forms, and its unkeyed SHA-256 and MD5 hex (either case).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use client_node::config::NodeConfig;
use coordinator::CoordinatorConfig;
use tokio::net::TcpListener;
use veil_job::file::{BasketRulesSection, JobFile, LifetimeValueSection, RfmSection};
use veil_wire::v1;

use crate::support;

use crate::support::recording_proxy::{Capture, recording_proxy};
use crate::support::seeded::{contains, forbidden_forms, seed_data};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_identifying_value_or_its_hash_crosses_the_wire() {
    let _machine = support::whole_machine().await;
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let (seeded, synth) = seed_data(dir.path());

    let coordinator_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let coordinator_address = coordinator_listener
        .local_addr()
        .unwrap_or_else(|error| panic!("{error}"));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let wait_for_stop = |mut receiver: tokio::sync::watch::Receiver<bool>| async move {
        let _ = receiver.wait_for(|stop| *stop).await;
    };
    let server = tokio::spawn(coordinator::run(
        CoordinatorConfig::insecure_development(),
        coordinator_listener,
        wait_for_stop(stopped.clone()),
    ));
    let proxy_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let proxy_address = proxy_listener
        .local_addr()
        .unwrap_or_else(|error| panic!("{error}"));
    let capture = Arc::new(Mutex::new(Capture::default()));
    let proxy = tokio::spawn(recording_proxy(
        proxy_listener,
        coordinator_address.to_string(),
        Arc::clone(&capture),
    ));

    let node_id = "partner-wire-test";
    let node = tokio::spawn(client_node::node::run(
        NodeConfig {
            node_id: node_id.to_owned(),
            tls_dir: None,
            insecure_dev: true,
            privacy_audit_kit: None,
            coordinator: format!("http://{proxy_address}"),
            data: seeded.config.clone(),
            state_dir: Some(dir.path().join("wire-node.state")),
            // Plain aggregation is the worst case for this test: the node's
            // own update and statistics travel unmasked, so anything it
            // derived from identifiers would be visible on the wire.
            // Four jobs in a row: the yearly cap is lifted so none is declined.
            policy: client_node::policy::NodePolicy {
                allow_plain_aggregation: true,
                customer_epsilon_per_year: 100.0,
                ..Default::default()
            },
        },
        wait_for_stop(stopped.clone()),
    ));

    let cutoff = synth.suggested_cutoff().format("%Y-%m-%d").to_string();
    let mut job = veil_job::standard_job(&cutoff, synth.suggested_horizon_days());
    job.rounds = 1;
    job.min_participants = 1;
    job.max_participants = 1;
    job.aggregation.mode = Some("plain".to_owned());
    job.features.names = [
        "recency_days",
        "frequency",
        "monetary",
        "category_concentration",
        "top_channel_share",
        "profile_age",
        "profile_age_known",
        "gender_female",
    ]
    .map(str::to_owned)
    .to_vec();
    let mut operator =
        coordinator::operator::connect(&format!("http://{coordinator_address}"), None)
            .await
            .unwrap_or_else(|error| panic!("{error}"));
    // Training, then the analysis job kinds: each kind's release phases
    // carry what the node derived from its customers (sums, counts,
    // histograms, itemset counts, holdout sums), so each must be as clean
    // as training.
    for job in [
        job,
        segment_job(&cutoff),
        rfm_job(&cutoff),
        lifetime_value_job(&cutoff),
        basket_rules_job(&cutoff),
    ] {
        let name = job.name.clone();
        let job_id = coordinator::operator::submit(&mut operator, job.to_wire())
            .await
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        coordinator::operator::start(&mut operator, &job_id)
            .await
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        let status = tokio::time::timeout(
            Duration::from_secs(120),
            coordinator::operator::watch(&mut operator, &job_id, |_| {}),
        )
        .await
        .unwrap_or_else(|_| panic!("{name} did not finish in time"))
        .unwrap_or_else(|error| panic!("{name}: {error}"));
        assert_eq!(
            v1::JobState::try_from(status.state),
            Ok(v1::JobState::Succeeded),
            "{name}: {}",
            status.failure_reason
        );
    }
    let _ = stop.send(true);
    let _ = node.await;
    let _ = server.await;
    proxy.abort();

    let capture = capture.lock().unwrap_or_else(|error| panic!("{error}"));
    // The capture works: the node's own id and its updates went through the proxy.
    assert!(
        contains(&capture.node_to_coordinator, node_id),
        "the proxy saw no node traffic"
    );
    assert!(capture.node_to_coordinator.len() > 10_000);
    assert!(!capture.coordinator_to_node.is_empty());
    // The profile was really joined and used (so its data was on the node's path).
    let report = std::fs::read_to_string(dir.path().join("state/report/deid-report.json"))
        .unwrap_or_default();
    assert!(report.contains("\"customers_with_profile\""), "{report}");

    let mut leaks = Vec::new();
    for secret in &seeded.secrets {
        for form in forbidden_forms(secret) {
            for (direction, bytes) in [
                ("node->coordinator", &capture.node_to_coordinator),
                ("coordinator->node", &capture.coordinator_to_node),
            ] {
                if contains(bytes, &form) {
                    leaks.push(format!(
                        "{direction}: a form of secret #{} ({} chars)",
                        secret.len(),
                        form.len()
                    ));
                }
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "identifying values crossed the wire: {leaks:?}"
    );
}

/// `job` for this test's single node over plain aggregation.
fn alone(mut job: JobFile, name: &str) -> JobFile {
    job.name = name.to_owned();
    job.min_participants = 1;
    job.max_participants = 1;
    job.aggregation.mode = Some("plain".to_owned());
    job
}

/// An analysis job on the standard job's task, without model or training.
fn analysis(cutoff: &str, name: &str) -> JobFile {
    let mut job = alone(veil_job::standard_job(cutoff, 60), name);
    job.model = None;
    job.training = None;
    job.privacy = Default::default();
    job.privacy.customer_epsilon = Some(1.0);
    job.privacy.delta = Some(1e-6);
    job
}

fn segment_job(cutoff: &str) -> JobFile {
    let text = veil_job::STANDARD_SEGMENT_JOB
        .replace("{cutoff}", cutoff)
        .replace("{horizon}", "60");
    alone(JobFile::parse(&text).unwrap(), "wire-segments")
}

fn rfm_job(cutoff: &str) -> JobFile {
    let mut job = analysis(cutoff, "wire-rfm");
    job.rfm = Some(RfmSection::default());
    job
}

/// Both lifetime-value releases: the summary histogram and, at the fitted
/// models, the holdout sums. A coarse binning, for 240 customers.
fn lifetime_value_job(cutoff: &str) -> JobFile {
    let mut job = analysis(cutoff, "wire-lifetime-value");
    job.lifetime_value = Some(LifetimeValueSection {
        min_spend: 1.0,
        max_spend: 1000.0,
        holdout_days: Some(60),
        window_days: Some(365),
        age_bins: Some(4),
        spend_bins: Some(4),
    });
    job
}

fn basket_rules_job(cutoff: &str) -> JobFile {
    let mut job = analysis(cutoff, "wire-basket-rules");
    job.basket_rules = Some(BasketRulesSection {
        // The generator's category names: a public vocabulary.
        items: veil_synth_data::CATEGORIES
            .iter()
            .map(|&name| name.to_owned())
            .collect(),
        min_support: 0.05,
        min_confidence: 0.2,
        max_itemset_size: Some(2),
        itemset_caps: vec![4],
        max_candidates: Some(28),
        baskets: None,
        max_days_per_customer: None,
        window_days: Some(365),
        top_n: Some(10),
    });
    job
}
