//! The README's first command, end to end: the demo federation over real
//! gRPC and mTLS on 127.0.0.1, its accuracy against the baselines, and its
//! figures against the ranges the README states (so the README cannot go
//! stale without this test failing).

use veil_demo::{DemoConfig, DemoReport, run_demo};

/// A README table row's checked range, by the row's leading label.
fn readme_range(readme: &str, label: &str) -> (f64, f64) {
    let row = readme
        .lines()
        .find(|line| line.starts_with(&format!("| {label}")))
        .unwrap_or_else(|| panic!("README has no table row starting with {label:?}"));
    let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
    let checked = cells
        .last()
        .unwrap_or_else(|| panic!("README row {label:?} has no cells"));
    let (low, high) = checked.split_once('–').unwrap_or_else(|| {
        panic!("README row {label:?}: checked range {checked:?} is not LOW–HIGH")
    });
    (
        low.parse()
            .unwrap_or_else(|_| panic!("README row {label:?}: {low:?}")),
        high.parse()
            .unwrap_or_else(|_| panic!("README row {label:?}: {high:?}")),
    )
}

fn check_against_readme(report: &DemoReport) {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md at the workspace root");
    for (label, value) in [
        ("held-out customers", report.holdout_customers as f64),
        ("federated", report.federated_auc),
        ("centralised", report.centralised_auc),
        ("mean of partners alone", report.mean_partner_alone_auc()),
    ] {
        let (low, high) = readme_range(&readme, label);
        assert!(
            (low..=high).contains(&value),
            "README row {label:?} states {low}–{high}, this run gave {value}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_matches_its_readme_and_federated_beats_partners_alone() {
    let output = tempfile::tempdir().unwrap();
    let report = run_demo(&DemoConfig::standard(output.path().to_owned()), |_| {})
        .await
        .unwrap();
    println!("{}", report.table());
    assert_eq!(report.rounds.len(), 12);
    assert!(
        (report.federated_auc - report.centralised_auc).abs() <= 0.02,
        "federated {} vs centralised {}",
        report.federated_auc,
        report.centralised_auc
    );
    assert!(
        report.federated_auc > report.mean_partner_alone_auc(),
        "federated {} vs partner-alone mean {}",
        report.federated_auc,
        report.mean_partner_alone_auc()
    );
    check_against_readme(&report);
    // Every customer of the first partner is scored locally.
    let scores = std::fs::read_to_string(&report.scores_path).unwrap();
    let mut lines = scores.lines();
    assert_eq!(lines.next(), Some("customer_id,score"));
    let scored: Vec<f64> = lines
        .map(|l| l.rsplit(',').next().unwrap().parse().unwrap())
        .collect();
    assert!(scored.len() > 1000);
    assert!(scored.iter().all(|s| (0.0..=1.0).contains(s)));
}
