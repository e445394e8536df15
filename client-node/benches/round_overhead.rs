//! Whole-round cost over real gRPC on 127.0.0.1: a coordinator and N nodes
//! (in one process, each node its own task) train an MLP for a few rounds
//! with plain and with secure aggregation. DP is off so that only
//! aggregation and transport differ.
//!
//! Two modes:
//!
//! - `cargo bench -p client-node --bench round_overhead -- [NODES] [ROUNDS]`
//!   (defaults 10 nodes, 2 rounds, hidden layers 1024 and 960: 1.0e6
//!   parameters): plain in plaintext, secure in plaintext and secure over
//!   mTLS, one job each; wall and process CPU seconds per round (round 0,
//!   the feature statistics, included) and the ratios.
//! - `cargo bench -p client-node --bench round_overhead -- whole NODES PASSES
//!   [HIDDEN1 HIDDEN2] [DROPOUT]` (defaults 320 320, the graph's design
//!   dropout rate 0.1): PASSES passes, each a plain job then a secure job
//!   (plaintext gRPC, three rounds). A round is timed in steady state, from
//!   the moment the job's first training round completes to the moment its
//!   third does (two whole rounds: training and evaluation, model download
//!   and upload included), and the wall and process CPU per round are
//!   printed for each pass, then the range and the secure/plain ratio. For
//!   the secure job it also prints each client's CPU per secure phase (the
//!   sum over the phase's five steps of the node's own protocol work:
//!   decoding, checks, keys, shares, masks, the durable commit; training
//!   and the upload excluded), mean and max over clients, and per step.
//!   Plaintext gRPC by default; with `VEIL_BENCH_MTLS=1` both jobs run over
//!   mTLS with a real PKI, so each node also authenticates its cohort's
//!   certificates as a deployment does.
//!
//! The design dropout rate only sizes the neighbour graph (k, t); no node
//! drops out, since a real dropout makes a step wait for its deadline, which
//! measures the deadline rather than the protocol.
//!
//! A bench target rather than an example so that `cargo test` does not build
//! it: it links the coordinator, the node and burn, about a minute of the
//! test build.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use client_node::config::NodeConfig;
use client_node::node::{NodeProgress, RunOptions, run_with};
use client_node::policy::NodePolicy;
use coordinator::CoordinatorConfig;
use coordinator::operator::WatchUpdate;
use tokio::sync::mpsc;
use veil_federation::{Phase, SecureStep};
use veil_job::standard_job;
use veil_pki::LocalPki;
use veil_pki::Role;
use veil_secure_aggregation::GraphRequirements;
use veil_wire::v1;

fn process_cpu_seconds() -> f64 {
    // utime + stime of this process, in clock ticks (100 Hz on Linux).
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            let after_name = stat.rsplit_once(')')?.1.to_owned();
            let fields: Vec<&str> = after_name.split_whitespace().collect();
            let user: f64 = fields.get(11)?.parse().ok()?;
            let system: f64 = fields.get(12)?.parse().ok()?;
            Some((user + system) / 100.0)
        })
        .unwrap_or(f64::NAN)
}

/// One job of the benchmark.
#[derive(Debug, Clone)]
struct RunSettings {
    nodes: usize,
    rounds: u32,
    mode: &'static str,
    mtls: bool,
    hidden: Vec<u32>,
    dropout_rate: f64,
    /// Where this run's PKI, data and node state live (fresh per run).
    label: String,
}

/// What one job cost.
struct RunResult {
    /// Wall seconds per round (steady state in whole mode, else whole job / rounds).
    wall: f64,
    /// Process CPU seconds per round, likewise.
    cpu: f64,
    parameters: usize,
    /// (node, round, phase, step) → the node's CPU for that step.
    steps: BTreeMap<(usize, u32, Phase, SecureStep), Duration>,
    /// The secure guarantee of the last round, if any.
    guarantee: String,
}

fn job(settings: &RunSettings) -> anyhow::Result<v1::JobSpec> {
    let mut job = standard_job("2024-10-02", 90);
    job.rounds = settings.rounds;
    job.min_participants = u32::try_from(settings.nodes)?;
    job.max_participants = u32::try_from(settings.nodes)?;
    job.model_mut().hidden = settings.hidden.clone();
    job.training_mut().local_epochs = 1;
    job.training_mut().batch_size = 512;
    job.aggregation.mode = Some(settings.mode.to_owned());
    job.aggregation.dropout_rate = Some(settings.dropout_rate);
    // Generous deadlines: on a loaded 2-core machine no node may miss a
    // step, or the run would measure a deadline.
    job.aggregation.step_timeout_secs = Some(300.0);
    job.privacy.customers = Some("off".to_owned());
    job.timeouts.train_secs = Some(600.0);
    job.timeouts.evaluate_secs = Some(600.0);
    job.timeouts.feature_stats_secs = Some(600.0);
    Ok(job.to_wire())
}

async fn run_once(dir: &Path, settings: &RunSettings, steady: bool) -> anyhow::Result<RunResult> {
    let RunSettings {
        nodes,
        rounds,
        mode,
        mtls,
        ..
    } = settings.clone();
    let dir = dir.join(&settings.label);
    let pki = LocalPki::create(&dir.join("pki"))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let (config, address, operator_tls) = if mtls {
        let server = pki.coordinator()?.server(pki.revocations()?)?;
        let operator = pki.member(Role::Operator, "operator")?.client()?;
        (
            CoordinatorConfig::mtls(server),
            format!("https://127.0.0.1:{port}"),
            Some(operator),
        )
    } else {
        (
            CoordinatorConfig::insecure_development(),
            format!("http://127.0.0.1:{port}"),
            None,
        )
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let wait = |mut receiver: tokio::sync::watch::Receiver<bool>| async move {
        let _ = receiver.wait_for(|stop| *stop).await;
    };
    let server = tokio::spawn(coordinator::run(config, listener, wait(stopped.clone())));
    let synth = veil_synth_data::SynthConfig::demo(nodes, 77);
    let files = veil_synth_data::write_partner_files(&synth, &dir.join("data"))?;
    let (progress, mut reports) = mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for (index, file) in files.iter().enumerate() {
        let name = format!("node-{index}");
        let tls_dir = if mtls {
            pki.member(Role::Node, &name)?;
            Some(pki.folder(&name))
        } else {
            None
        };
        let config = NodeConfig {
            node_id: name.clone(),
            coordinator: address.clone(),
            data: veil_behaviour_features::CsvSource::new(file.clone()).into(),
            state_dir: Some(dir.join(format!("{name}.state"))),
            policy: NodePolicy {
                allow_plain_aggregation: true,
                ..NodePolicy::default()
            },
            insecure_dev: tls_dir.is_none(),
            privacy_audit_kit: None,
            tls_dir,
        };
        // Each node's reports carry its index.
        let (node_progress, mut node_reports) = mpsc::unbounded_channel();
        let forward = progress.clone();
        tokio::spawn(async move {
            while let Some(report) = node_reports.recv().await {
                if forward.send((index, report)).is_err() {
                    break;
                }
            }
        });
        let options = RunOptions {
            progress: Some(node_progress),
            ..RunOptions::default()
        };
        tasks.push(tokio::spawn(run_with(
            config,
            options,
            wait(stopped.clone()),
        )));
    }
    drop(progress);
    let mut ready = 0;
    while ready < nodes {
        match reports.recv().await {
            Some((_, NodeProgress::Registered)) => ready += 1,
            Some(_) => {}
            None => anyhow::bail!("the nodes stopped before registering"),
        }
    }
    let mut operator = coordinator::operator::connect(&address, operator_tls.as_ref()).await?;
    let spec = job(settings)?;
    let job_id = coordinator::operator::submit(&mut operator, spec).await?;
    let cpu_before = process_cpu_seconds();
    let started = Instant::now();
    coordinator::operator::start(&mut operator, &job_id).await?;
    // (completed rounds, when, process CPU) at each change.
    let mut marks: Vec<(u32, Instant, f64)> = Vec::new();
    let status = coordinator::operator::watch(&mut operator, &job_id, |update| {
        if let WatchUpdate::Status(status) = update {
            if marks.last().map(|mark| mark.0) != Some(status.completed_rounds) {
                marks.push((
                    status.completed_rounds,
                    Instant::now(),
                    process_cpu_seconds(),
                ));
            }
        }
    })
    .await?;
    let wall = started.elapsed().as_secs_f64();
    let cpu = process_cpu_seconds() - cpu_before;
    anyhow::ensure!(
        status.state == v1::JobState::Succeeded as i32,
        "{mode} run failed: {}",
        status.failure_reason
    );
    let guarantee = status
        .history
        .last()
        .map(|round| round.secure_guarantee.clone())
        .unwrap_or_default();
    let parameters = coordinator::operator::fetch_model(&mut operator, &job_id)
        .await?
        .parameters
        .len();
    let _ = stop.send(true);
    for task in tasks {
        let _ = task.await;
    }
    let _ = server.await;
    let mut steps = BTreeMap::new();
    while let Ok((index, report)) = reports.try_recv() {
        if let NodeProgress::Submitted {
            round,
            phase,
            step: Some(step),
            cpu: Some(cpu),
            ..
        } = report
        {
            *steps
                .entry((index, round, phase, step))
                .or_insert(Duration::ZERO) += cpu;
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (wall, cpu) = if steady {
        let mark = |round: u32| marks.iter().find(|mark| mark.0 == round);
        let (Some(first), Some(last)) = (mark(1), mark(rounds)) else {
            anyhow::bail!("the job's rounds were not all seen: {marks:?}");
        };
        let measured = f64::from(rounds - 1);
        (
            last.1.duration_since(first.1).as_secs_f64() / measured,
            (last.2 - first.2) / measured,
        )
    } else {
        // Round 0 (feature statistics) is included: it is the same in every mode.
        (wall / f64::from(rounds), cpu / f64::from(rounds))
    };
    Ok(RunResult {
        wall,
        cpu,
        parameters,
        steps,
        guarantee,
    })
}

fn range(values: &[f64]) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{min:.3}–{max:.3}")
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// Per-client CPU per secure phase of the measured rounds (2..=rounds):
/// mean and max over (client, round) of the sum over the phase's steps, and
/// the mean of each step.
fn print_client_cpu(steps: &BTreeMap<(usize, u32, Phase, SecureStep), Duration>, rounds: u32) {
    for phase in [Phase::Train, Phase::Evaluate] {
        let mut per_client: BTreeMap<(usize, u32), f64> = BTreeMap::new();
        let mut per_step: BTreeMap<SecureStep, (f64, usize)> = BTreeMap::new();
        for (&(node, round, step_phase, step), cpu) in steps {
            if step_phase != phase || round < 2 || round > rounds {
                continue;
            }
            *per_client.entry((node, round)).or_default() += cpu.as_secs_f64();
            let entry = per_step.entry(step).or_default();
            entry.0 += cpu.as_secs_f64();
            entry.1 += 1;
        }
        if per_client.is_empty() {
            continue;
        }
        let values: Vec<f64> = per_client.values().copied().collect();
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let max = values.iter().copied().fold(0.0, f64::max);
        let by_step: Vec<String> = per_step
            .iter()
            .map(|(step, (sum, count))| format!("{step} {:.2}", 1e3 * sum / *count as f64))
            .collect();
        println!(
            "  client CPU per secure {phase} phase: mean {:.2} ms, max {:.2} ms (steps, mean ms: {})",
            1e3 * mean,
            1e3 * max,
            by_step.join(", ")
        );
    }
}

async fn whole_rounds(
    dir: &Path,
    nodes: usize,
    passes: usize,
    hidden: Vec<u32>,
    dropout_rate: f64,
    mtls: bool,
) -> anyhow::Result<()> {
    let rounds = 3;
    let mut walls: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut cpus: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut parameters = 0;
    // The job's defaults: 20% collusion, 40 security bits.
    let graph = veil_secure_aggregation::choose_neighbour_parameters(&GraphRequirements {
        n_clients: nodes,
        dropout_rate,
        corrupt_fraction: veil_federation::secure::DEFAULT_COLLUSION_FRACTION,
        security_bits: veil_federation::secure::DEFAULT_SECURITY_BITS,
        correctness_bits: 20,
    })?;
    println!(
        "whole rounds over gRPC ({}): n={nodes}, hidden {hidden:?}, design dropout {dropout_rate}, k={} t={}, {passes} passes, load average at start {}",
        if mtls { "mTLS" } else { "plaintext" },
        graph.neighbour_count,
        graph.reconstruction_threshold,
        load_average()
    );
    for pass in 0..passes {
        for mode in ["plain", "secure"] {
            let settings = RunSettings {
                nodes,
                rounds,
                mode,
                mtls,
                hidden: hidden.clone(),
                dropout_rate,
                label: format!("{mode}-{pass}"),
            };
            let result = run_once(dir, &settings, true).await?;
            parameters = result.parameters;
            println!(
                "pass {} {mode:>6}: {:.3} s wall, {:.2} s CPU per round (d={}{}{}; load {})",
                pass + 1,
                result.wall,
                result.cpu,
                result.parameters,
                if result.guarantee.is_empty() {
                    ""
                } else {
                    ", "
                },
                result.guarantee,
                load_average()
            );
            if mode == "secure" {
                print_client_cpu(&result.steps, rounds);
            }
            walls.entry(mode).or_default().push(result.wall);
            cpus.entry(mode).or_default().push(result.cpu);
        }
    }
    let ratio = |values: &BTreeMap<&str, Vec<f64>>| {
        let mean = |mode: &str| {
            let list = &values[mode];
            list.iter().sum::<f64>() / list.len() as f64
        };
        mean("secure") / mean("plain")
    };
    println!(
        "n={nodes} d={parameters}: secure {} s, plain {} s per round (wall); secure/plain {:.2}x wall, {:.2}x CPU ({} / {} CPU s); load average at end {}",
        range(&walls["secure"]),
        range(&walls["plain"]),
        ratio(&walls),
        ratio(&cpus),
        range(&cpus["secure"]),
        range(&cpus["plain"]),
        load_average()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    veil_logging::init_with_default(false, "error");
    // `cargo bench` appends `--bench`; only the positional arguments count.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|argument| !argument.starts_with("--"))
        .collect();
    let dir = tempfile::tempdir()?;
    if args.first().map(String::as_str) == Some("whole") {
        let number = |index: usize, default: usize| -> anyhow::Result<usize> {
            Ok(args.get(index).map_or(Ok(default), |value| value.parse())?)
        };
        let nodes = number(1, 100)?;
        let passes = number(2, 3)?;
        let hidden = vec![
            u32::try_from(number(3, 320)?)?,
            u32::try_from(number(4, 320)?)?,
        ];
        let dropout_rate: f64 = args.get(5).map_or(Ok(0.1), |value| value.parse())?;
        let mtls = std::env::var("VEIL_BENCH_MTLS").is_ok_and(|value| value == "1");
        return whole_rounds(dir.path(), nodes, passes, hidden, dropout_rate, mtls).await;
    }
    let nodes: usize = args.first().map_or(Ok(10), |value| value.parse())?;
    let rounds: u32 = args.get(1).map_or(Ok(2), |value| value.parse())?;
    let mut results = Vec::new();
    for (mode, mtls) in [("plain", false), ("secure", false), ("secure", true)] {
        let settings = RunSettings {
            nodes,
            rounds,
            mode,
            mtls,
            hidden: vec![1024, 960],
            dropout_rate: 0.0,
            label: format!("{mode}-{mtls}"),
        };
        let result = run_once(dir.path(), &settings, false).await?;
        println!(
            "{mode:>6} {:<9} n={nodes} d={}: {:.2} s wall, {:.2} s CPU per round",
            if mtls { "mTLS" } else { "plaintext" },
            result.parameters,
            result.wall,
            result.cpu,
        );
        results.push((result.wall, result.cpu));
    }
    let (plain, secure, secure_tls) = (results[0], results[1], results[2]);
    println!(
        "secure / plain (plaintext): {:.2}x wall, {:.2}x CPU",
        secure.0 / plain.0,
        secure.1 / plain.1
    );
    println!(
        "mTLS / plaintext (secure): {:.2}x wall, {:.2}x CPU",
        secure_tls.0 / secure.0,
        secure_tls.1 / secure.1
    );
    Ok(())
}
