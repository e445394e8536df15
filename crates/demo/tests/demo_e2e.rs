//! The README's first command, end to end: the real `veil-demo` binary runs
//! the demo federation over real gRPC and mTLS on 127.0.0.1; its accuracy is
//! checked against the baselines and its figures against the ranges the
//! README states (so the README cannot go stale without this test failing).
//! Running the binary, not the library, keeps this test's own build small and
//! tests exactly what a newcomer runs.

use std::process::Command;

use serde_json::Value;

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

fn figure(summary: &Value, name: &str) -> f64 {
    summary[name]
        .as_f64()
        .unwrap_or_else(|| panic!("the demo summary has no number {name:?}: {summary}"))
}

fn check_against_readme(summary: &Value) {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md at the workspace root");
    for (label, name) in [
        ("held-out customers", "holdout_customers"),
        ("federated", "federated_auc"),
        ("centralised", "centralised_auc"),
        ("mean of partners alone", "mean_partner_alone_auc"),
    ] {
        let value = figure(summary, name);
        let (low, high) = readme_range(&readme, label);
        assert!(
            (low..=high).contains(&value),
            "README row {label:?} states {low}–{high}, this run gave {value}"
        );
    }
}

#[test]
fn the_demo_matches_its_readme_and_federated_beats_partners_alone() {
    let output = tempfile::tempdir().unwrap();
    let summary_path = output.path().join("summary.json");
    let run = Command::new(env!("CARGO_BIN_EXE_veil-demo"))
        .arg("--output-dir")
        .arg(output.path().join("demo"))
        .arg("--summary-json")
        .arg(&summary_path)
        .output()
        .expect("veil-demo starts");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "veil-demo failed:\n{printed}");
    println!("{printed}");
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(&summary_path).unwrap()).unwrap();
    assert_eq!(summary["rounds"], 12, "{summary}");
    let federated = figure(&summary, "federated_auc");
    let centralised = figure(&summary, "centralised_auc");
    let alone = figure(&summary, "mean_partner_alone_auc");
    assert!(
        (federated - centralised).abs() <= 0.02,
        "federated {federated} vs centralised {centralised}"
    );
    assert!(
        federated > alone,
        "federated {federated} vs partner-alone mean {alone}"
    );
    check_against_readme(&summary);
    // Every customer of the first partner is scored locally.
    let scores_path = summary["scores_path"].as_str().expect("a scores path");
    let scores = std::fs::read_to_string(scores_path).unwrap();
    let mut lines = scores.lines();
    assert_eq!(lines.next(), Some("customer_id,score"));
    let scored: Vec<f64> = lines
        .map(|l| l.rsplit(',').next().unwrap().parse().unwrap())
        .collect();
    assert!(scored.len() > 1000);
    assert!(scored.iter().all(|s| (0.0..=1.0).contains(s)));
    // The shared segmentation: both k fitted, noised sizes that add up to
    // about the federation's customers, churn rates that tell the
    // segments apart, and every customer of the first partner assigned.
    let fits = summary["segments"].as_array().expect("segments");
    assert_eq!(fits.len(), 2, "{summary}");
    for fit in fits {
        let sizes: Vec<f64> = fit["sizes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_f64().unwrap())
            .collect();
        assert_eq!(sizes.len() as u64, fit["k"].as_u64().unwrap());
        let total: f64 = sizes.iter().sum();
        assert!((4000.0..7000.0).contains(&total), "{fit}");
    }
    let rates: Vec<f64> = fits[0]["label_rates"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    let spread = rates.iter().copied().fold(f64::MIN, f64::max)
        - rates.iter().copied().fold(f64::MAX, f64::min);
    assert!(spread > 0.2, "churn rates by segment {rates:?}");
    let segments = std::fs::read_to_string(summary["segments_path"].as_str().unwrap()).unwrap();
    assert_eq!(
        segments.lines().next(),
        Some("customer_id,segment,distance")
    );
    assert_eq!(segments.lines().count() - 1, scored.len());
    for report in ["report_path", "segments_report_path"] {
        let html = std::fs::read_to_string(summary[report].as_str().unwrap()).unwrap();
        assert!(html.starts_with("<!DOCTYPE html>"), "{report}");
    }
    let segments_report =
        std::fs::read_to_string(summary["segments_report_path"].as_str().unwrap()).unwrap();
    assert!(segments_report.contains(r#"data-chart="segments-elbow""#));
}
