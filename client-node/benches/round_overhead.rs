//! Whole-round cost over real gRPC on 127.0.0.1: a coordinator and N nodes
//! (in one process) train an MLP of about D parameters for R rounds, once
//! with plain aggregation in plaintext, once with secure aggregation in
//! plaintext, and once with secure aggregation over mTLS. Prints wall and
//! process CPU seconds per round and the ratios (secure/plain, mTLS/plain
//! text). DP is off so that only aggregation and transport differ.
//!
//! `cargo bench -p client-node --bench round_overhead -- [NODES] [ROUNDS]`
//! (defaults 10 nodes, 2 rounds, hidden layers 1024 and 960: 1.0e6 parameters).
//! A bench target rather than an example so that `cargo test` does not build
//! it: it links the coordinator, the node and burn, about a minute of the
//! test build.

use std::path::Path;
use std::time::{Duration, Instant};

use client_node::config::NodeConfig;
use client_node::node::{NodeProgress, RunOptions, run_with};
use client_node::policy::NodePolicy;
use coordinator::CoordinatorConfig;
use tokio::sync::mpsc;
use veil_job::standard_job;
use veil_pki::LocalPki;
use veil_pki::Role;
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

fn job(mode: &str, rounds: u32, nodes: usize) -> anyhow::Result<v1::JobSpec> {
    let mut job = standard_job("2024-10-02", 90);
    job.rounds = rounds;
    job.min_participants = u32::try_from(nodes)?;
    job.max_participants = u32::try_from(nodes)?;
    job.model_mut().hidden = vec![1024, 960];
    job.training_mut().local_epochs = 1;
    job.training_mut().batch_size = 512;
    job.aggregation.mode = Some(mode.to_owned());
    job.privacy.customers = Some("off".to_owned());
    job.timeouts.train_secs = Some(600.0);
    Ok(job.to_wire())
}

async fn run_once(
    dir: &Path,
    nodes: usize,
    rounds: u32,
    mode: &str,
    mtls: bool,
) -> anyhow::Result<(f64, f64, usize)> {
    let pki = LocalPki::create(&dir.join(format!("pki-{mode}-{mtls}")))?;
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
    let (progress, mut registered) = mpsc::unbounded_channel();
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
            state_dir: Some(dir.join(format!("{mode}-{mtls}-{name}.state"))),
            policy: NodePolicy {
                allow_plain_aggregation: true,
                ..NodePolicy::default()
            },
            insecure_dev: tls_dir.is_none(),
            privacy_audit_kit: None,
            tls_dir,
        };
        let options = RunOptions {
            progress: Some(progress.clone()),
            ..RunOptions::default()
        };
        tasks.push(tokio::spawn(run_with(
            config,
            options,
            wait(stopped.clone()),
        )));
    }
    let mut ready = 0;
    while ready < nodes {
        if registered.recv().await == Some(NodeProgress::Registered) {
            ready += 1;
        }
    }
    let mut operator = coordinator::operator::connect(&address, operator_tls.as_ref()).await?;
    let spec = job(mode, rounds, nodes)?;
    let job_id = coordinator::operator::submit(&mut operator, spec).await?;
    let cpu_before = process_cpu_seconds();
    let started = Instant::now();
    coordinator::operator::start(&mut operator, &job_id).await?;
    let status = coordinator::operator::watch(&mut operator, &job_id, |_| {}).await?;
    let wall = started.elapsed().as_secs_f64();
    let cpu = process_cpu_seconds() - cpu_before;
    anyhow::ensure!(
        status.state == v1::JobState::Succeeded as i32,
        "{mode} run failed: {}",
        status.failure_reason
    );
    let parameters = coordinator::operator::fetch_model(&mut operator, &job_id)
        .await?
        .parameters
        .len();
    let _ = stop.send(true);
    for task in tasks {
        let _ = task.await;
    }
    let _ = server.await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Round 0 (feature statistics) is included: it is the same in every mode.
    Ok((
        wall / f64::from(rounds),
        cpu / f64::from(rounds),
        parameters,
    ))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    veil_logging::init_with_default(false, "error");
    // `cargo bench` appends `--bench`; only the positional arguments count.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|argument| !argument.starts_with("--"))
        .collect();
    let nodes: usize = args.first().map_or(Ok(10), |value| value.parse())?;
    let rounds: u32 = args.get(1).map_or(Ok(2), |value| value.parse())?;
    let dir = tempfile::tempdir()?;
    let mut results = Vec::new();
    for (mode, mtls) in [("plain", false), ("secure", false), ("secure", true)] {
        let (wall, cpu, parameters) = run_once(dir.path(), nodes, rounds, mode, mtls).await?;
        println!(
            "{mode:>6} {:<9} n={nodes} d={parameters}: {wall:.2} s wall, {cpu:.2} s CPU per round",
            if mtls { "mTLS" } else { "plaintext" }
        );
        results.push((wall, cpu));
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
