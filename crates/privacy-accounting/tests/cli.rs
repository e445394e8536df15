//! Runs the real `veil-privacy` binary and checks its JSON and its errors.

use std::process::Command;

fn run(arguments: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_veil-privacy"))
        .args(arguments)
        .output();
    assert!(output.is_ok(), "could not start veil-privacy: {output:?}");
    let Ok(output) = output else {
        return (false, String::new(), String::new());
    };
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn number(json: &serde_json::Value, key: &str) -> f64 {
    json.get(key)
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(f64::NAN)
}

#[test]
fn epsilon_prints_all_three_numbers() {
    let (ok, stdout, stderr) = run(&[
        "epsilon",
        "--sampling-rate",
        "0.01",
        "--noise-multiplier",
        "1.1",
        "--steps",
        "10000",
        "--delta",
        "1e-5",
    ]);
    assert!(ok, "{stderr}");
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_default();
    let (pld, rdp, reported) = (
        number(&json, "epsilon_pld"),
        number(&json, "epsilon_rdp"),
        number(&json, "epsilon"),
    );
    // dp-accounting 0.6.0 reports 5.19262 here; 1e-3 absolute is well inside 1%.
    assert!((pld - 5.19262).abs() < 1e-3, "{stdout}");
    assert!(rdp >= pld, "{stdout}");
    assert_eq!(reported, pld.min(rdp));
}

#[test]
fn calibrate_prints_a_noise_multiplier() {
    let (ok, stdout, stderr) = run(&[
        "calibrate",
        "--sampling-rate",
        "1",
        "--steps",
        "1",
        "--epsilon",
        "1",
        "--delta",
        "1e-5",
    ]);
    assert!(ok, "{stderr}");
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_default();
    let sigma = number(&json, "noise_multiplier");
    // The analytic Gaussian needs σ ≈ 3.73 for (1, 1e-5); calibration is
    // within 0.02% above the optimum and the PLD within 1e-4 of exact.
    assert!((sigma - 3.73).abs() < 0.01, "{stdout}");
}

#[test]
fn bad_arguments_fail_with_a_message_and_no_panic() {
    let cases: [&[&str]; 4] = [
        &[
            "epsilon",
            "--sampling-rate",
            "1.5",
            "--noise-multiplier",
            "1",
            "--steps",
            "10",
            "--delta",
            "1e-5",
        ],
        &[
            "epsilon",
            "--sampling-rate",
            "0.1",
            "--noise-multiplier",
            "abc",
            "--steps",
            "10",
            "--delta",
            "1e-5",
        ],
        &[
            "calibrate",
            "--sampling-rate",
            "0.1",
            "--steps",
            "10",
            "--epsilon",
            "1",
            "--delta",
            "0",
        ],
        &["epsilon", "--sampling-rate", "0.1"],
    ];
    for arguments in cases {
        let (ok, stdout, stderr) = run(arguments);
        assert!(!ok, "{arguments:?} succeeded: {stdout}");
        assert!(stderr.contains("error"), "{arguments:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{arguments:?}: {stderr}");
    }
}

const DISTRIBUTED: [&str; 12] = [
    "--clip-norm",
    "1",
    "--granularity",
    "0.01",
    "--dimension",
    "16",
    "--rounding-beta",
    "0",
    "--min-survivors",
    "1",
    "--rounds",
    "1",
];

#[test]
fn distributed_epsilon_shows_its_working() {
    let mut arguments = vec!["distributed-epsilon"];
    arguments.extend(DISTRIBUTED);
    arguments.extend(["--node-sigma", "208", "--delta", "1e-5"]);
    let (ok, stdout, stderr) = run(&arguments);
    assert!(ok, "{stderr}");
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_default();
    // c/γ = 100, d = 16, plain rounding: Δ₂ = 104, Δ₁ = 4·104; one node: τ = 0;
    // z = 208/104 = 2 exactly.
    assert_eq!(number(&json, "l2_sensitivity"), 104.0, "{stdout}");
    assert_eq!(number(&json, "l1_sensitivity"), 416.0, "{stdout}");
    assert_eq!(number(&json, "tau"), 0.0, "{stdout}");
    assert_eq!(number(&json, "effective_noise_multiplier"), 2.0, "{stdout}");
    // RDP of a Gaussian with z = 2 at δ = 1e-5 is about 2.3 (analytic: 2.07).
    let epsilon = number(&json, "epsilon");
    assert!(epsilon > 2.0 && epsilon < 2.6, "{stdout}");
}

#[test]
fn distributed_calibrate_meets_its_own_target() {
    let mut arguments = vec!["distributed-calibrate"];
    arguments.extend(DISTRIBUTED);
    arguments.extend(["--epsilon", "3", "--delta", "1e-5"]);
    let (ok, stdout, stderr) = run(&arguments);
    assert!(ok, "{stderr}");
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_default();
    let epsilon = number(&json, "epsilon");
    assert!(epsilon <= 3.0 && epsilon > 2.99, "{stdout}");
    assert!(number(&json, "node_sigma") > 100.0, "{stdout}");
}

#[test]
fn underflowing_noise_is_no_guarantee_never_epsilon_zero() {
    // Regression: σ = 1e-160 printed {"epsilon":0.0,...} with exit 0, because
    // a NaN inside the RDP sum went through `f64::max(0.0)`.
    for sampling_rate in ["0.5", "1"] {
        let (ok, stdout, stderr) = run(&[
            "epsilon",
            "--sampling-rate",
            sampling_rate,
            "--noise-multiplier",
            "1e-160",
            "--steps",
            "1",
            "--delta",
            "1e-5",
        ]);
        assert!(!ok, "q = {sampling_rate} succeeded: {stdout}");
        assert!(
            stderr.contains("noise multiplier 1e-160") && !stderr.contains("panicked"),
            "{stderr}"
        );
        let json: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_default();
        for key in ["epsilon", "epsilon_rdp", "epsilon_pld"] {
            assert_eq!(
                json.get(key),
                Some(&serde_json::Value::Null),
                "{key}: {stdout}"
            );
        }
        let reason = json.get("reason").and_then(serde_json::Value::as_str);
        assert!(
            reason.is_some_and(|reason| reason.contains("noise multiplier 1e-160")
                && reason.contains("no finite guarantee")),
            "{stdout}"
        );
    }
}

#[test]
fn a_null_pld_epsilon_carries_its_reason() {
    // σ = 1e-10: RDP gives a finite (astronomical) ε, the PLD does not fit.
    let (ok, stdout, stderr) = run(&[
        "epsilon",
        "--sampling-rate",
        "0.5",
        "--noise-multiplier",
        "1e-10",
        "--steps",
        "1",
        "--delta",
        "1e-5",
    ]);
    assert!(ok, "{stderr}");
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_default();
    assert_eq!(
        json.get("epsilon_pld"),
        Some(&serde_json::Value::Null),
        "{stdout}"
    );
    assert!(number(&json, "epsilon") > 1e19, "{stdout}");
    let reason = json.get("reason").and_then(serde_json::Value::as_str);
    assert!(
        reason.is_some_and(|reason| reason.starts_with("epsilon_pld: ")),
        "{stdout}"
    );
}

#[test]
fn finite_answers_carry_no_reason() {
    let (ok, stdout, stderr) = run(&[
        "epsilon",
        "--sampling-rate",
        "0.01",
        "--noise-multiplier",
        "1.1",
        "--steps",
        "100",
        "--delta",
        "1e-5",
    ]);
    assert!(ok, "{stderr}");
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_default();
    assert_eq!(json.get("reason"), None, "{stdout}");
}

#[test]
fn distributed_epsilon_without_a_finite_guarantee_fails_with_the_reason() {
    // c/γ = 1e300: the sensitivity squared overflows, so the RDP is infinite.
    let arguments = [
        "distributed-epsilon",
        "--clip-norm",
        "1e200",
        "--granularity",
        "1e-100",
        "--dimension",
        "16",
        "--rounding-beta",
        "0",
        "--min-survivors",
        "1",
        "--rounds",
        "1",
        "--node-sigma",
        "1",
        "--delta",
        "1e-5",
    ];
    let (ok, stdout, stderr) = run(&arguments);
    assert!(!ok, "{stdout}");
    assert!(stderr.contains("node sigma 1.0"), "{stderr}");
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_default();
    assert_eq!(
        json.get("epsilon"),
        Some(&serde_json::Value::Null),
        "{stdout}"
    );
    let reason = json.get("reason").and_then(serde_json::Value::as_str);
    assert!(
        reason.is_some_and(|reason| reason.contains("no finite guarantee")),
        "{stdout}"
    );
}
