//! Runs the real `veil-ledger` binary on ledger files written through the library.

use std::path::Path;
use std::process::Command;

use veil_privacy_ledger::{
    Charge, ChargeSpec, LedgerError, Mechanism, PrivacyUnit, Release, SqliteLedger, TrustModel,
};

fn run(arguments: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_veil-ledger"))
        .args(arguments)
        .output();
    let Ok(output) = output else {
        panic!("could not start veil-ledger: {output:?}");
    };
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn write_ledger(path: &Path, partners: &[&str], rounds: u64) -> Result<(), LedgerError> {
    let mut ledger = SqliteLedger::open(path)?;
    for partner in partners {
        for round in 1..=rounds {
            let spec = ChargeSpec {
                job_id: "job-1".to_owned(),
                round,
                partner_id: (*partner).to_owned(),
                dataset_id: "transactions".to_owned(),
                unit: PrivacyUnit::Customer,
                release: Release::Round,
                trust_model: TrustModel::LocalDpSgd,
                mechanism: Mechanism::PoissonSubsampledGaussian {
                    sampling_rate: 0.02,
                    noise_multiplier: 1.2,
                    steps: 50,
                    clip_norm: 1.0,
                },
                delta: 1e-5,
            };
            ledger.record(&Charge::new(spec, 1_767_225_600)?)?;
        }
    }
    Ok(())
}

#[test]
fn report_prints_text_json_and_svg() -> Result<(), LedgerError> {
    let directory = tempfile::tempdir().map_err(|source| LedgerError::Io {
        path: "tempdir".into(),
        source,
    })?;
    let ledger = directory.path().join("coordinator.sqlite");
    write_ledger(&ledger, &["bank-a", "bank-b"], 3)?;
    let budgets = directory.path().join("budgets.json");
    std::fs::write(
        &budgets,
        r#"[{"job_id":"job-1","customer":{"epsilon":3.0,"delta":1e-5},"partner":{"epsilon":8.0,"delta":1e-5}}]"#,
    )
    .map_err(|source| LedgerError::Io { path: budgets.clone(), source })?;
    let ledger_argument = ledger.to_string_lossy().into_owned();
    let budgets_argument = budgets.to_string_lossy().into_owned();
    let common = [
        "report",
        "--ledger",
        &ledger_argument,
        "--budgets",
        &budgets_argument,
        "--as-of",
        "1767225600",
    ];

    let (ok, text, stderr) = run(&common);
    assert!(ok, "{stderr}");
    // Without --as-of the report is for now: the same charges, this year's cap period.
    let (ok, now_text, stderr) = run(&common[..common.len() - 2]);
    assert!(ok, "{stderr}");
    assert_eq!(
        now_text
            .lines()
            .filter(|line| line.starts_with("bank-"))
            .count(),
        2,
        "{now_text}"
    );
    assert_eq!(
        text.lines()
            .filter(|line| line.starts_with("bank-"))
            .count(),
        2,
        "{text}"
    );

    let mut json_arguments = common.to_vec();
    json_arguments.extend(["--format", "json"]);
    let (ok, json, stderr) = run(&json_arguments);
    assert!(ok, "{stderr}");
    let report = veil_privacy_ledger::AuditorReport::from_json(&json)?;
    assert_eq!(report.jobs.len(), 2);
    assert!(report.jobs.iter().all(|row| row.epsilon_limit == Some(3.0)));

    let mut svg_arguments = common.to_vec();
    svg_arguments.extend(["--format", "svg", "--job", "job-1"]);
    let (ok, svg, stderr) = run(&svg_arguments);
    assert!(ok, "{stderr}");
    assert!(svg.starts_with("<svg"));
    assert_eq!(svg.matches("<polyline").count(), 2);

    // SVG without a job is refused with a message, not a panic.
    let mut no_job = common.to_vec();
    no_job.extend(["--format", "svg"]);
    let (ok, _, stderr) = run(&no_job);
    assert!(!ok);
    assert!(stderr.contains("--job is required"), "{stderr}");
    Ok(())
}

#[test]
fn reconcile_reports_the_rounds_a_node_is_missing() -> Result<(), LedgerError> {
    let directory = tempfile::tempdir().map_err(|source| LedgerError::Io {
        path: "tempdir".into(),
        source,
    })?;
    let coordinator = directory.path().join("coordinator.sqlite");
    let node = directory.path().join("node.sqlite");
    write_ledger(&coordinator, &["bank-a", "bank-b"], 3)?;
    write_ledger(&node, &["bank-a"], 2)?;
    let (ok, json, stderr) = run(&[
        "reconcile",
        "--coordinator",
        &coordinator.to_string_lossy(),
        "--node",
        &node.to_string_lossy(),
        "--partner",
        "bank-a",
    ]);
    assert!(ok, "{stderr}");
    let report: veil_privacy_ledger::ReconcileReport = serde_json::from_str(&json)?;
    assert_eq!(report.missing_on_node.len(), 1);
    assert_eq!(report.missing_on_node[0].round, 3);
    assert!(report.missing_on_coordinator.is_empty());
    assert!(report.mismatched.is_empty());
    Ok(())
}
