//! The auditor's privacy test end to end over real gRPC on 127.0.0.1
//! (docs/privacy-audit.md): a consenting node trains on the canaries of the
//! auditor's kit, the auditor's tool attacks the exported model and turns
//! its guesses into a lower bound on ε, recorded in the audit log.
//!
//! - Without DP the bound detects the leakage (ε_lower ≥ 1).
//! - With DP-SGD the bound stays below the accountant's ε.
//! - A node whose policy does not consent refuses the audit job by code.
//! - In every run, neither the seed nor any canary's features cross the wire.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use client_node::config::NodeConfig;
use client_node::node::{InjectedFault, RunOptions};
use client_node::policy::NodePolicy;
use coordinator::privacy_test::{PrivacyTestConfig, PrivacyTestOutcome, run_privacy_test_of};
use veil_privacy_audit::canary::{AuditKit, generate_canaries};
use veil_wire::v1;

use crate::support;
use crate::support::recording_proxy::{Capture, recording_proxy};

const NODES: usize = 3;
const AUDITED: &str = "node-0";

/// The audited job: the standard demo job's data and model, shortened.
fn job(privacy: veil_job::file::PrivacySection, rounds: u32, local_epochs: u32) -> v1::JobSpec {
    let mut file = veil_job::standard_job("2024-10-02", 90);
    file.name = "privacy-test".to_owned();
    file.rounds = rounds;
    file.training_mut().local_epochs = local_epochs;
    file.privacy = privacy;
    file.aggregation.step_timeout_secs = Some(5.0);
    file.timeouts.train_secs = Some(60.0);
    file.timeouts.evaluate_secs = Some(20.0);
    file.to_wire()
}

fn no_dp() -> veil_job::file::PrivacySection {
    veil_job::file::PrivacySection {
        customers: Some("off".to_owned()),
        partners: Some("off".to_owned()),
        ..Default::default()
    }
}

fn node_config(
    index: usize,
    address: &str,
    file: &Path,
    state: &Path,
    kit: Option<&Path>,
    consent: bool,
) -> NodeConfig {
    NodeConfig {
        node_id: format!("node-{index}"),
        tls_dir: None,
        insecure_dev: true,
        privacy_audit_kit: kit.map(Path::to_path_buf),
        coordinator: address.to_owned(),
        data: veil_behaviour_features::CsvSource::new(file.to_owned()).into(),
        state_dir: Some(state.join(format!("node-{index}.state"))),
        policy: NodePolicy {
            allow_privacy_audits: consent,
            ..NodePolicy::default()
        },
    }
}

/// Runs one privacy test of `job` against three fresh nodes and returns the
/// report and the coordinator's state folder.
async fn privacy_test(job: v1::JobSpec, canaries: u64, folder: &Path) -> PrivacyTestOutcome {
    privacy_test_with(job, canaries, folder, Federation::Honest)
        .await
        .outcome
}

/// One privacy test's outcome and the seconds the auditor's tool took, from
/// submitting the job to recording both attacks' bounds.
struct AuditRun {
    outcome: PrivacyTestOutcome,
    seconds: f64,
}

/// Who the audited partner federates with, and what its own node runs.
#[derive(Debug, Clone, Copy)]
enum Federation {
    /// Honest partners; the audited node as shipped.
    Honest,
    /// An n − 1 attack: the other partners collude with the coordinator and
    /// send zero updates, so every aggregate is the audited partner's
    /// update alone. Its own node carries `audited_fault`, if any.
    Isolated {
        audited_fault: Option<InjectedFault>,
    },
}

/// [`privacy_test`] in the given federation.
async fn privacy_test_with(
    job: v1::JobSpec,
    canaries: u64,
    folder: &Path,
    federation: Federation,
) -> AuditRun {
    let synth = veil_synth_data::SynthConfig::demo(NODES, 41);
    let files: Vec<PathBuf> = veil_synth_data::write_partner_files(&synth, folder).unwrap();
    let coordinator_state = folder.join("coordinator.state");
    let coordinator = support::Coordinator::start(coordinator_state.clone()).await;
    // The audited node talks to the coordinator through a recording proxy,
    // so the test can show that nothing about its canaries crosses the wire.
    let proxy_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_address = format!("http://{}", proxy_listener.local_addr().unwrap());
    let capture = Arc::new(Mutex::new(Capture::default()));
    let proxy = tokio::spawn(recording_proxy(
        proxy_listener,
        coordinator.address.trim_start_matches("http://").to_owned(),
        Arc::clone(&capture),
    ));
    let kit = folder.join("auditor/kit.toml");
    let configs = files
        .iter()
        .enumerate()
        .map(|(index, file)| {
            let audited = index == 0;
            let config = node_config(
                index,
                if audited {
                    &proxy_address
                } else {
                    &coordinator.address
                },
                file,
                folder,
                audited.then_some(kit.as_path()),
                audited,
            );
            let options = RunOptions {
                injected_fault: match federation {
                    Federation::Honest => None,
                    Federation::Isolated { audited_fault } if audited => audited_fault,
                    Federation::Isolated { .. } => Some(InjectedFault::ColludingZeroUpdate),
                },
                ..RunOptions::default()
            };
            (config, options)
        })
        .collect();
    let nodes = support::start_nodes_with_options(configs).await;
    let mut auditor = coordinator.operator().await;
    let config = PrivacyTestConfig {
        partner: AUDITED.to_owned(),
        kit_path: kit.clone(),
        canaries: Some(canaries),
        confidence: 0.95,
        deadline: Duration::from_secs(600),
    };
    let started = std::time::Instant::now();
    let outcome = run_privacy_test_of(&mut auditor, job, &config)
        .await
        .unwrap_or_else(|error| panic!("{error:#}"));
    let seconds = started.elapsed().as_secs_f64();
    // Nodes first: the coordinator's graceful stop waits for their open
    // streams, which would otherwise run until the nodes' own poll deadlines.
    for node in nodes {
        node.abort();
    }
    proxy.abort();
    coordinator.stop().await;
    let kit: AuditKit = toml::from_str(&std::fs::read_to_string(&kit).unwrap()).unwrap();
    assert_no_canary_on_the_wire(&capture.lock().unwrap(), &kit);
    // The result is in the signed audit log, with the job's partner.
    let public_key = veil_audit_log::AuditPublicKey::from_hex(
        std::fs::read_to_string(coordinator_state.join("audit-public.key"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    let log_path = coordinator_state.join("audit.log");
    let head = veil_audit_log::Head::read(&veil_audit_log::head_path_for(&log_path)).unwrap();
    let audit = veil_audit_log::verify_log_file(&log_path, &public_key, head.as_ref()).unwrap();
    for report in outcome.reports() {
        assert!(
            audit.entries.iter().any(|entry| matches!(
                &entry.event,
                veil_audit_log::AuditEvent::PrivacyAuditRecorded { job_id, partner, attack, epsilon_lower, .. }
                    if *job_id == report.job_id && partner == AUDITED && *attack == report.attack && *epsilon_lower == report.epsilon_lower
            )),
            "no privacy_audit_recorded entry for {} by {}",
            report.job_id,
            report.attack
        );
    }
    eprintln!("{}", outcome.to_text());
    AuditRun { outcome, seconds }
}

/// Neither the kit's seed (hex or raw) nor any canary's scaled features (as
/// the f32 bytes a model or a row would carry them) crossed the wire in
/// either direction, although the audited node's traffic went through the
/// proxy.
fn assert_no_canary_on_the_wire(capture: &Capture, kit: &AuditKit) {
    assert!(
        capture.node_to_coordinator.len() > 10_000,
        "the proxy saw no traffic from the audited node"
    );
    let seed = kit.audit_seed().unwrap();
    let forbidden: Vec<(String, Vec<u8>)> = vec![
        ("the seed (hex)".to_owned(), seed.to_hex().into_bytes()),
        ("the seed".to_owned(), hex_bytes(&seed.to_hex())),
    ];
    let standard = veil_job::standard_job("2024-10-02", 90).to_wire();
    let n_features = veil_job::JobSpec::from_wire(&standard)
        .unwrap()
        .features
        .n_features();
    let canaries = generate_canaries(&seed, kit.canaries as usize, n_features).unwrap();
    // Three consecutive features: 12 bytes no honest message repeats by
    // chance. Looked up by hash in one pass over each direction, so the
    // check costs the same for 1000 canaries as for one.
    let canary_bytes: std::collections::HashMap<[u8; 12], usize> = canaries
        .iter()
        .enumerate()
        .map(|(index, canary)| {
            let mut bytes = [0u8; 12];
            for (chunk, value) in bytes.chunks_exact_mut(4).zip(&canary.features[..3]) {
                chunk.copy_from_slice(&value.to_le_bytes());
            }
            (bytes, index)
        })
        .collect();
    for (direction, bytes) in [
        ("node->coordinator", &capture.node_to_coordinator),
        ("coordinator->node", &capture.coordinator_to_node),
    ] {
        for (what, needle) in &forbidden {
            assert!(
                !bytes
                    .windows(needle.len())
                    .any(|window| window == needle.as_slice()),
                "{what} crossed the wire {direction}"
            );
        }
        if let Some(index) = bytes
            .windows(12)
            .find_map(|window| canary_bytes.get(window).copied())
        {
            panic!("canary {index}'s features crossed the wire {direction}");
        }
    }
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|index| u8::from_str_radix(&hex[index..index + 2], 16).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_dp_the_audit_detects_the_leakage() {
    let _machine = support::whole_machine().await;
    let folder = tempfile::tempdir().unwrap();
    // Eight rounds of twenty local epochs: long enough for the MLP to fit
    // the canaries it trains on, against 1.87, the most 100 all-correct
    // guesses can show at 95% confidence. The canaries' fit is diluted by
    // the other partners' updates at every round, so rounds count for more
    // than epochs. Measured ε_lower, 16 runs, 10 of them with two busy loops
    // on the 2 cores: 1.63 to 1.98. At four rounds, 6 runs gave 1.24 to
    // 1.90 and one CI run 0.93, which is why this test runs eight.
    let outcome = privacy_test(job(no_dp(), 8, 20), 1000, folder.path()).await;
    for report in outcome.reports() {
        assert_eq!(report.canaries, 1000);
        assert_eq!(report.epsilon_upper, None);
    }
    assert!(
        outcome.black_box.epsilon_lower >= 1.0,
        "black-box ε_lower = {} without DP",
        outcome.black_box.epsilon_lower
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_dp_sgd_the_lower_bound_stays_below_the_accountants_epsilon() {
    let _machine = support::whole_machine().await;
    let folder = tempfile::tempdir().unwrap();
    // The standard job's DP-SGD (σ = 8.7, clip 5, full batches), four rounds:
    // the accountant's customer-level ε is about 2.
    let privacy = veil_job::standard_job("2024-10-02", 90).privacy;
    let outcome = privacy_test(job(privacy, 4, 3), 1000, folder.path()).await;
    for report in outcome.reports() {
        let upper = report.epsilon_upper.expect("DP-SGD has an accountant's ε");
        assert!((1.0..=3.5).contains(&upper), "ε_upper = {upper}");
    }
    assert_no_bound_above_the_accountants(&outcome);
}

/// The standard job's DP-SGD for `rounds` rounds of `local_epochs` epochs at
/// Poisson `sampling_rate`, with the noise multiplier set so that the whole
/// job (its final noised evaluation included) spends `epsilon` per partner,
/// as the ledgers will charge it.
fn dp_sgd_job(epsilon: f64, rounds: u32, local_epochs: u32, sampling_rate: f64) -> v1::JobSpec {
    let mut file = veil_job::standard_job("2024-10-02", 90);
    file.name = "privacy-test".to_owned();
    file.rounds = rounds;
    file.training_mut().local_epochs = local_epochs;
    file.aggregation.step_timeout_secs = Some(5.0);
    file.timeouts.train_secs = Some(120.0);
    file.timeouts.evaluate_secs = Some(20.0);
    file.privacy.customer_sampling_rate = Some(sampling_rate);
    let spent = |file: &veil_job::file::JobFile, sigma: f64| {
        let mut file = file.clone();
        file.privacy.customer_noise_multiplier = Some(sigma);
        file.privacy.customer_epsilon = Some(1e6);
        let spec = veil_job::JobSpec::from_wire(&file.to_wire()).unwrap();
        veil_job::planned_spend(&spec).unwrap()[0].epsilon
    };
    // Bisection in log σ: spend falls as σ grows.
    let (mut low, mut high) = (0.3_f64, 300.0_f64);
    assert!(spent(&file, high) < epsilon && spent(&file, low) > epsilon);
    for _ in 0..30 {
        let middle = (low * high).sqrt();
        if spent(&file, middle) > epsilon {
            low = middle;
        } else {
            high = middle;
        }
    }
    file.privacy.customer_noise_multiplier = Some(high);
    file.privacy.customer_epsilon = Some(epsilon * 1.01);
    file.to_wire()
}

/// Neither attack's bound, one-run or Gaussian, exceeds the accountant's ε.
fn assert_no_bound_above_the_accountants(outcome: &PrivacyTestOutcome) {
    for report in outcome.reports() {
        let upper = report.epsilon_upper.expect("DP-SGD has an accountant's ε");
        assert!(
            report.epsilon_lower <= upper && report.epsilon_lower_gaussian <= upper,
            "{}: ε_lower = {} (Gaussian {}) above ε_upper = {upper}",
            report.attack,
            report.epsilon_lower,
            report.epsilon_lower_gaussian
        );
    }
    assert!(!outcome.bound_violated());
}

/// The job of the n − 1 tests: the standard model under DP-SGD at Poisson
/// rate 0.02 for four rounds of thirty local epochs, calibrated so that the
/// ledgers charge ε = 1 per partner. Long local training, so that without
/// noise the audited partner's model fits its canaries.
fn isolated_job() -> v1::JobSpec {
    dp_sgd_job(1.0, 4, 30, 0.02)
}

// Why the n − 1 attack: in an honest three-partner federation under
// customer-level DP every partner's update weighs the same, so the audited
// partner's canaries reach the model at a third of their strength, and even
// with DP off entirely 1000 canaries then certify only ε_lower ≈ 0.17
// (measured with three copies of one partner's data). The coordinator
// colluding with the other partners removes that dilution — and customer-level
// DP at each partner is exactly what must hold against it, so the same
// setting is both the strongest attack and the fairest test of the fault.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_catches_dp_sgd_without_its_noise() {
    let _machine = support::whole_machine().await;
    let folder = tempfile::tempdir().unwrap();
    // Measured black-box ε_lower against the claimed 1.0: 1.33, 1.55 and
    // 1.71 at this setting; 1.22 to 1.63 in five runs at 20 local epochs.
    let outcome = privacy_test_with(
        isolated_job(),
        1000,
        folder.path(),
        Federation::Isolated {
            audited_fault: Some(InjectedFault::DpSgdNoiseRemoved),
        },
    )
    .await
    .outcome;
    let upper = outcome
        .black_box
        .epsilon_upper
        .expect("DP-SGD has an accountant's ε");
    assert!((0.99..=1.01).contains(&upper), "ε_upper = {upper}");
    assert!(
        outcome.epsilon_lower() > upper && outcome.bound_violated(),
        "ε_lower = {} not above the claimed ε_upper = {upper}",
        outcome.epsilon_lower()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_an_n_minus_one_attack_dp_sgd_still_bounds_what_the_audit_finds() {
    let _machine = support::whole_machine().await;
    // The same job and attack as the fault test, with the node as shipped:
    // the bound stays below ε = 1. (`scripts/bench-privacy-audit` repeats
    // this over ε and canary counts: 16 runs under this attack, none above.)
    let folder = tempfile::tempdir().unwrap();
    let outcome = privacy_test_with(
        isolated_job(),
        1000,
        folder.path(),
        Federation::Isolated {
            audited_fault: None,
        },
    )
    .await
    .outcome;
    assert_no_bound_above_the_accountants(&outcome);
}

/// The seconds the job takes on three fresh honest nodes with no audit
/// kit, from submission to its end: the baseline an audit run's wall time
/// (the same, plus fetching the models, both attacks and their audit-log
/// records) is set against.
async fn plain_job_seconds(job: v1::JobSpec, folder: &Path) -> f64 {
    let synth = veil_synth_data::SynthConfig::demo(NODES, 41);
    let files: Vec<PathBuf> = veil_synth_data::write_partner_files(&synth, folder).unwrap();
    let coordinator = support::Coordinator::start(folder.join("coordinator.state")).await;
    let configs = files
        .iter()
        .enumerate()
        .map(|(index, file)| node_config(index, &coordinator.address, file, folder, None, false))
        .collect();
    let nodes = support::start_nodes(configs).await;
    let mut operator = coordinator.operator().await;
    let started = std::time::Instant::now();
    let job_id = coordinator::operator::submit(&mut operator, job)
        .await
        .unwrap();
    coordinator::operator::start(&mut operator, &job_id)
        .await
        .unwrap();
    let status = coordinator::operator::watch(&mut operator, &job_id, |_| {})
        .await
        .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(
        v1::JobState::try_from(status.state),
        Ok(v1::JobState::Succeeded),
        "{}",
        status.failure_reason
    );
    for node in nodes {
        node.abort();
    }
    coordinator.stop().await;
    seconds
}

/// The issue-17 benchmark grid (`scripts/bench-privacy-audit`): ε_lower of
/// both attacks against ε_upper for DP-SGD (the n − 1 tests' job, σ
/// calibrated to ε ∈ {1, 2, 4, 8}) with M ∈ {1000, 5000} canaries, in an
/// honest federation and under the n − 1 attack, and each audit run's wall
/// time against the same job without canaries. Prints a table; asserts only
/// what every audit must satisfy (no bound above the accountant's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark of many audit runs: scripts/bench-privacy-audit"]
async fn privacy_audit_grid() {
    let _machine = support::whole_machine().await;
    let grid_epsilons: Vec<f64> = std::env::var("VEIL_AUDIT_GRID_EPSILONS")
        .map(|text| text.split(',').map(|e| e.trim().parse().unwrap()).collect())
        .unwrap_or_else(|_| vec![1.0, 2.0, 4.0, 8.0]);
    let grid_canaries: Vec<u64> = std::env::var("VEIL_AUDIT_GRID_CANARIES")
        .map(|text| text.split(',').map(|m| m.trim().parse().unwrap()).collect())
        .unwrap_or_else(|_| vec![1000, 5000]);
    let mut rows = vec![
        "federation,epsilon_upper,canaries,attack,guesses,correct,epsilon_lower,epsilon_lower_gaussian,audit_seconds,plain_seconds"
            .to_owned(),
    ];
    for &epsilon in &grid_epsilons {
        let job = dp_sgd_job(epsilon, 4, 30, 0.02);
        let plain = {
            let folder = tempfile::tempdir().unwrap();
            plain_job_seconds(job.clone(), folder.path()).await
        };
        for (name, federation) in [
            ("honest", Federation::Honest),
            (
                "n-1",
                Federation::Isolated {
                    audited_fault: None,
                },
            ),
        ] {
            for &canaries in &grid_canaries {
                let folder = tempfile::tempdir().unwrap();
                let AuditRun {
                    outcome,
                    seconds: audit,
                } = privacy_test_with(job.clone(), canaries, folder.path(), federation).await;
                for report in outcome.reports() {
                    let upper = report.epsilon_upper.expect("DP-SGD has an accountant's ε");
                    rows.push(format!(
                        "{name},{upper:.3},{canaries},{},{},{},{:.3},{:.3},{audit:.1},{plain:.1}",
                        report.attack,
                        report.guesses,
                        report.correct,
                        report.epsilon_lower,
                        report.epsilon_lower_gaussian
                    ));
                    println!("{}", rows.last().unwrap());
                }
                assert!(!outcome.bound_violated(), "{}", outcome.to_text());
            }
        }
    }
    println!("\n{}", rows.join("\n"));
}
