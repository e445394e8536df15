//! Cross-sell rules end to end over real gRPC on 127.0.0.1: four nodes, each
//! loading its own purchases (with its own category codes) through the real
//! loader, run a basket-rules job through secure aggregation at ε = 1; the
//! planted co-purchase pairs come out as rules in `coordinator rules`' CSV,
//! and every level was charged once per partner in both ledgers, which
//! reconcile.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use client_node::config::NodeConfig;
use client_node::policy::NodePolicy;
use veil_basket_rules::simulate::{SimulationConfig, category_name, simulate};
use veil_job::file::{BasketRulesSection, JobFile};
use veil_wire::v1;

use crate::support;

const NODES: usize = 4;
const CATEGORIES: u32 = 20;
const CUTOFF: &str = "2024-06-30";
const EPSILON: f64 = 1.0;
const DELTA: f64 = 1e-6;
/// Simulated days end on the cutoff.
const DAYS: u32 = 28;

fn rules_job() -> JobFile {
    let mut job = veil_job::standard_job(CUTOFF, 90);
    job.name = "cross-sell".to_owned();
    job.max_participants = NODES as u32;
    job.model = None;
    job.training = None;
    job.privacy = Default::default();
    job.privacy.customer_epsilon = Some(EPSILON);
    job.privacy.delta = Some(DELTA);
    // Each node builds its baskets from its whole log inside a step; a
    // loaded machine (or a debug build) needs more than a few seconds.
    job.aggregation.step_timeout_secs = Some(30.0);
    job.basket_rules = Some(BasketRulesSection {
        // Declared in reverse: ids are the job's, not any partner's codes.
        items: (0..CATEGORIES).rev().map(category_name).collect(),
        min_support: 0.03,
        min_confidence: 0.2,
        max_itemset_size: Some(2),
        itemset_caps: vec![4],
        max_candidates: Some(64),
        baskets: None,
        max_days_per_customer: None,
        window_days: Some(DAYS),
        top_n: Some(20),
    });
    job
}

/// Writes each simulated partner's rows as a transaction CSV whose days end
/// on the cutoff; returns the paths.
fn write_partner_files(dir: &Path) -> (Vec<PathBuf>, Vec<(String, String)>) {
    let simulation = simulate(&SimulationConfig {
        seed: 8,
        categories: CATEGORIES,
        partners: NODES as u32,
        customers_per_partner: 1_500,
        days: DAYS,
        max_visits_per_customer: 1,
        mean_basket_size: 2.5,
        max_basket_size: 6,
        planted_pairs: 2,
        pair_rate: 0.3,
    })
    .unwrap();
    let cutoff = chrono::NaiveDate::parse_from_str(CUTOFF, "%Y-%m-%d").unwrap();
    let first_day = i64::from(cutoff.to_epoch_days()) - i64::from(DAYS) + 1;
    let mut paths = Vec::new();
    for (index, rows) in simulation.partners.iter().enumerate() {
        let path = dir.join(format!("partner-{index}.csv"));
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        writeln!(file, "customer_id,timestamp,amount,category").unwrap();
        for row in rows {
            let seconds = (first_day + row.day) * 86_400 + 12 * 3_600;
            let time = chrono::DateTime::from_timestamp(seconds, 0).unwrap();
            writeln!(
                file,
                "{},{},12.50,{}",
                row.customer,
                time.format("%Y-%m-%dT%H:%M:%SZ"),
                row.item
            )
            .unwrap();
        }
        file.flush().unwrap();
        paths.push(path);
    }
    let planted = simulation
        .planted_pairs
        .iter()
        .map(|&(left, right)| (category_name(left), category_name(right)))
        .collect();
    (paths, planted)
}

fn node_config(index: usize, address: &str, file: &Path, state: &Path) -> NodeConfig {
    let mut source = veil_behaviour_features::CsvSource::new(file.to_owned());
    source.columns.category = Some("category".to_owned());
    NodeConfig {
        node_id: format!("node-{index}"),
        tls_dir: None,
        insecure_dev: true,
        privacy_audit_kit: None,
        coordinator: address.to_owned(),
        data: source.into(),
        state_dir: Some(state.join(format!("node-{index}.state"))),
        policy: NodePolicy::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rules_job_finds_the_planted_pairs_from_charged_noised_counts() {
    let _machine = support::whole_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let (files, planted) = write_partner_files(dir.path());
    let coordinator_state = dir.path().join("coordinator.state");
    let coordinator = support::Coordinator::start(coordinator_state.clone()).await;
    let configs: Vec<NodeConfig> = files
        .iter()
        .enumerate()
        .map(|(index, file)| node_config(index, &coordinator.address, file, dir.path()))
        .collect();
    let nodes = support::start_nodes(configs).await;
    let mut operator = coordinator.operator().await;

    let wire = rules_job().to_wire();
    let spec = veil_job::JobSpec::from_wire(&wire).unwrap();
    let releases = spec.rounds;
    assert_eq!(releases, 2, "one release per level");
    let (job_id, status, transcript) =
        support::run_job_to_end(&mut operator, wire, Duration::from_secs(120)).await;
    assert_eq!(
        v1::JobState::try_from(status.state),
        Ok(v1::JobState::Succeeded),
        "{status:?}\n{transcript}"
    );
    assert_eq!(status.completed_rounds, releases, "{transcript}");
    coordinator.stop().await;
    for node in nodes {
        node.abort();
    }

    // The rules CSV, replayed from the job store.
    let out = dir.path().join("rules.csv");
    let written = coordinator::rules::write_rules(&coordinator_state, &job_id, &out).unwrap();
    let text = std::fs::read_to_string(&out).unwrap();
    println!("{written} rules:\n{text}");
    for (left, right) in &planted {
        assert!(
            text.lines()
                .any(|line| line.starts_with(&format!("{left},{right},"))),
            "no rule {left} -> {right}"
        );
    }

    // Every level was charged once per partner, in both ledgers, and they
    // agree; the composed spend is within the job's ε.
    support::assert_each_release_charged_once(
        &coordinator_state,
        dir.path(),
        NODES,
        &job_id,
        releases,
        (EPSILON, DELTA),
    );
}
