//! The round-time cost of a flooding node (issue 18): a real `coordinator` process and N
//! honest `client-node` processes on 127.0.0.1 over mTLS run the same secure job again and
//! again, alternately on a quiet coordinator and while a flooder floods it. The flooder is its
//! own OS process (this bench's binary run again with `--flooder`) holding a valid node
//! certificate: on many connections at once it calls an operator RPC a node may not call,
//! heartbeats and task fetches in tight loops, opens upload streams it never feeds, and
//! uploads whose header declares a vector far larger than any model. It never registers, so
//! whatever it does to the honest job it does through load alone. Reports each job's round
//! times, quiet and under the flood, the ratio of the means, and what the flooder's calls came
//! back with.
//!
//! `scripts/bench-flood [--nodes N] [--passes P] [--rounds R] [--customers C]
//! [--connections K] [--loops L]` (defaults 3 honest nodes, 5 passes, 4 rounds, 2,000
//! customers each, 16 flooder connections, 16 loops per connection). A bench target, so `cargo
//! test` does not build it; `VEIL_BIN_DIR=DIR` runs the `coordinator` and `client-node` in DIR
//! instead of the build's. Run it on an otherwise idle machine: the flooder, the nodes and
//! the coordinator share its cores, as they would not in a federation.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tonic::Code;
use tonic::transport::Endpoint;
use veil_pki::{LocalPki, MemberFiles, Role};
use veil_wire::v1;
use veil_wire::v1::node_service_client::NodeServiceClient;
use veil_wire::v1::operator_service_client::OperatorServiceClient;

/// What a run is asked to do.
#[derive(Debug, Clone)]
struct FloodConfig {
    nodes: usize,
    passes: usize,
    rounds: u32,
    customers: usize,
    /// Connections the flooder opens.
    connections: usize,
    /// Concurrent call loops per flooder connection.
    loops: usize,
}

impl FloodConfig {
    fn from_args(args: &[String]) -> anyhow::Result<Self> {
        let mut config = Self {
            nodes: 3,
            passes: 5,
            rounds: 4,
            customers: 2000,
            connections: 16,
            loops: 16,
        };
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            // `cargo bench` passes `--bench` to every bench target.
            if flag == "--bench" {
                continue;
            }
            let value = args
                .next()
                .with_context(|| format!("{flag} needs a value"))?;
            let parse_error = || format!("{flag} {value}: not a number");
            match flag.as_str() {
                "--nodes" => config.nodes = value.parse().with_context(parse_error)?,
                "--passes" => config.passes = value.parse().with_context(parse_error)?,
                "--rounds" => config.rounds = value.parse().with_context(parse_error)?,
                "--customers" => config.customers = value.parse().with_context(parse_error)?,
                "--connections" => config.connections = value.parse().with_context(parse_error)?,
                "--loops" => config.loops = value.parse().with_context(parse_error)?,
                other => bail!("unknown flag {other}"),
            }
        }
        if config.nodes < 2 || config.passes == 0 || config.rounds == 0 || config.connections == 0 {
            bail!("need at least 2 nodes, 1 pass, 1 round and 1 flooder connection");
        }
        Ok(config)
    }
}

/// A process killed with SIGKILL and reaped on drop.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The flooder's name, as its certificate carries it.
const FLOODER: &str = "node-flood";
/// How long one job may take before the run fails by name.
const JOB_PATIENCE: Duration = Duration::from_secs(300);

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if args.first().map(String::as_str) == Some("--flooder") {
        let [_, address, tls_dir, tally, connections, loops] = &args[..] else {
            bail!("--flooder ADDRESS TLS_DIR TALLY_FILE CONNECTIONS LOOPS");
        };
        return runtime.block_on(flood(
            address,
            Path::new(tls_dir),
            Path::new(tally),
            connections.parse()?,
            loops.parse()?,
        ));
    }
    runtime.block_on(bench(FloodConfig::from_args(&args)?))
}

/// One job's timing: from its start to each round's commit, and to its end.
#[derive(Debug, Clone)]
struct JobTiming {
    rounds: Vec<f64>,
    total: f64,
}

async fn bench(config: FloodConfig) -> anyhow::Result<()> {
    println!("flood: {config:?}");
    let dir = tempfile::Builder::new().prefix("veil-flood-").tempdir()?;
    let root = dir.path();
    let pki = LocalPki::create(&root.join("pki"))?;
    pki.coordinator()?;
    let operator_tls = pki.member(Role::Operator, "operator")?.client()?;
    pki.member(Role::Node, FLOODER)?;
    // VEIL_BIN_DIR: binaries copied aside, so that a build in a shared target folder
    // cannot swap them during a run (or to compare two builds).
    let node_binary = std::env::var_os("VEIL_BIN_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_client-node")),
        |folder| PathBuf::from(folder).join("client-node"),
    );
    let coordinator_binary = node_binary.with_file_name("coordinator");
    if !coordinator_binary.exists() {
        bail!(
            "{} is missing: build the workspace's binaries first (cargo build --release --workspace --bins)",
            coordinator_binary.display()
        );
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let address = format!("https://127.0.0.1:{port}");
    let coordinator_log = File::create(root.join("coordinator.log"))?;
    let coordinator = KillOnDrop(
        Command::new(&coordinator_binary)
            .arg("--tls-dir")
            .arg(pki.folder("coordinator"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--state-dir")
            .arg(root.join("coordinator.state"))
            .arg("--revocations")
            .arg(root.join("pki/ca").join(veil_pki::REVOCATIONS_FILE))
            .stdin(Stdio::null())
            .stdout(coordinator_log.try_clone()?)
            .stderr(coordinator_log)
            .spawn()
            .context("starting the coordinator")?,
    );

    let mut synth = veil_synth_data::SynthConfig::demo(config.nodes, 31);
    for partner in &mut synth.partners {
        partner.n_customers = config.customers;
    }
    let files = veil_synth_data::write_partner_files(&synth, &root.join("data"))?;
    let mut nodes = Vec::new();
    for (index, file) in files.iter().enumerate() {
        let name = format!("node-{index}");
        pki.member(Role::Node, &name)?;
        let path = root.join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "node_id = \"{name}\"\ncoordinator = \"{address}\"\ntls_dir = \"{}\"\n\
                 state_dir = \"{}\"\n[policy]\ncustomer_epsilon_per_year = 1000000.0\n\
                 [data]\npath = \"{}\"\n",
                pki.folder(&name).display(),
                root.join(format!("{name}.state")).display(),
                file.display()
            ),
        )?;
        let log = File::create(path.with_extension("log"))?;
        nodes.push(KillOnDrop(
            Command::new(&node_binary)
                .args(["run", "--config"])
                .arg(&path)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting {name}"))?,
        ));
    }
    let mut operator = connect(&address, &operator_tls).await?;
    wait_for_registrations(root, config.nodes).await?;

    let flooder_binary = std::env::current_exe().context("this bench's own binary")?;
    let mut quiet = Vec::new();
    let mut flooded = Vec::new();
    let mut tallies = Vec::new();
    for pass in 0..config.passes {
        // Alternate which goes first, so a drift in the machine's load over the run
        // falls on both sides alike.
        for flood_now in if pass % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        } {
            let mut flooder = None;
            let tally_file = root.join(format!("flood-{pass}.tally"));
            if flood_now {
                let log = File::create(root.join(format!("flood-{pass}.log")))?;
                flooder = Some(KillOnDrop(
                    Command::new(&flooder_binary)
                        .arg("--flooder")
                        .arg(&address)
                        .arg(pki.folder(FLOODER))
                        .arg(&tally_file)
                        .arg(config.connections.to_string())
                        .arg(config.loops.to_string())
                        .stdin(Stdio::null())
                        .stdout(log.try_clone()?)
                        .stderr(log)
                        .spawn()
                        .context("starting the flooder")?,
                ));
                // The job starts once the flood is under way: refused calls counted.
                wait_for_flood(&tally_file).await?;
            }
            let name = format!("pass-{pass}-{}", if flood_now { "flood" } else { "quiet" });
            let timing = run_job(&mut operator, &config, &name).await?;
            println!(
                "pass {pass} {:<5}: job {:.2} s, rounds at {}",
                if flood_now { "flood" } else { "quiet" },
                timing.total,
                timing
                    .rounds
                    .iter()
                    .map(|seconds| format!("{seconds:.2} s"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            if let Some(flooder) = flooder {
                drop(flooder);
                let tally = std::fs::read_to_string(&tally_file).unwrap_or_default();
                println!("  flooder: {}", tally.trim());
                tallies.push(tally);
                flooded.push(timing);
            } else {
                quiet.push(timing);
            }
        }
    }
    drop(nodes);
    drop(coordinator);

    println!(
        "\n== flood: {} honest nodes, {} passes of a {}-round secure job; flooder: {} connections x {} loops ==",
        config.nodes, config.passes, config.rounds, config.connections, config.loops
    );
    let mean = |timings: &[JobTiming], pick: &dyn Fn(&JobTiming) -> f64| {
        timings.iter().map(pick).sum::<f64>() / timings.len() as f64
    };
    let round_time = |timing: &JobTiming| {
        // Seconds per round: from the first round's commit to the last's, over the rounds
        // between (the feature-statistics phase and the start are not rounds).
        match (timing.rounds.first(), timing.rounds.last()) {
            (Some(first), Some(last)) if timing.rounds.len() > 1 => {
                (last - first) / (timing.rounds.len() - 1) as f64
            }
            (Some(first), _) => *first,
            _ => timing.total,
        }
    };
    let quiet_job = mean(&quiet, &|timing| timing.total);
    let flood_job = mean(&flooded, &|timing| timing.total);
    let quiet_round = mean(&quiet, &round_time);
    let flood_round = mean(&flooded, &round_time);
    let ratios: Vec<f64> = quiet
        .iter()
        .zip(&flooded)
        .map(|(quiet, flooded)| flooded.total / quiet.total)
        .collect();
    println!(
        "job time:   quiet {quiet_job:.2} s, under the flood {flood_job:.2} s: {:+.1}%",
        (flood_job / quiet_job - 1.0) * 100.0
    );
    println!(
        "round time: quiet {quiet_round:.2} s, under the flood {flood_round:.2} s: {:+.1}%",
        (flood_round / quiet_round - 1.0) * 100.0
    );
    println!(
        "per pass (flood / quiet job time): {}",
        ratios
            .iter()
            .map(|ratio| format!("{:+.1}%", (ratio - 1.0) * 100.0))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        println!("load average at the end: {}", load.trim());
    }
    println!("state folder: {} (removed at exit)", root.display());
    Ok(())
}

/// Runs one secure job to its end: its round commits and end, in seconds from its start.
async fn run_job(
    operator: &mut coordinator::operator::OperatorClient,
    config: &FloodConfig,
    name: &str,
) -> anyhow::Result<JobTiming> {
    let mut job = veil_job::standard_job("2024-10-02", 90);
    job.name = name.to_owned();
    job.rounds = config.rounds;
    job.model_mut().kind = "logistic_regression".to_owned();
    job.model_mut().hidden = Vec::new();
    job.training_mut().local_epochs = 1;
    job.max_participants = config.nodes as u32;
    job.min_participants = config.nodes as u32;
    let job_id = coordinator::operator::submit(operator, job.to_wire()).await?;
    coordinator::operator::start(operator, &job_id).await?;
    let started = Instant::now();
    let mut rounds = Vec::new();
    loop {
        let status = operator
            .get_job_status(v1::JobRef {
                job_id: job_id.clone(),
            })
            .await
            .with_context(|| format!("status of {job_id}"))?
            .into_inner();
        while rounds.len() < status.history.len() {
            rounds.push(started.elapsed().as_secs_f64());
        }
        match v1::JobState::try_from(status.state) {
            Ok(v1::JobState::Running | v1::JobState::Pending) => {}
            Ok(v1::JobState::Succeeded) => {
                return Ok(JobTiming {
                    rounds,
                    total: started.elapsed().as_secs_f64(),
                });
            }
            other => bail!(
                "{job_id} ({name}) ended as {other:?}: {}",
                status.failure_reason
            ),
        }
        if started.elapsed() > JOB_PATIENCE {
            bail!("{job_id} ({name}) still running after {JOB_PATIENCE:?}: {status:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the flooder's calls came back with: by gRPC code, the limits' refusals apart.
#[derive(Default)]
struct Tally {
    calls: AtomicU64,
    rate: AtomicU64,
    in_flight: AtomicU64,
    /// Every other answer, by code (0 is OK).
    by_code: [AtomicU64; 17],
}

impl Tally {
    fn record<T>(&self, outcome: &Result<T, tonic::Status>) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let counter = match outcome {
            Err(status)
                if status.code() == Code::ResourceExhausted
                    && status.message().contains("request rate") =>
            {
                &self.rate
            }
            Err(status)
                if status.code() == Code::ResourceExhausted
                    && status.message().contains("in flight") =>
            {
                &self.in_flight
            }
            Ok(_) => &self.by_code[0],
            Err(status) => &self.by_code[(status.code() as usize).min(16)],
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn line(&self, seconds: f64) -> String {
        let calls = self.calls.load(Ordering::Relaxed);
        let others: Vec<String> = self
            .by_code
            .iter()
            .enumerate()
            .filter_map(|(code, count)| {
                let count = count.load(Ordering::Relaxed);
                (count > 0).then(|| format!("{count} {:?}", Code::from_i32(code as i32)))
            })
            .collect();
        format!(
            "{calls} calls in {seconds:.1} s ({:.0}/s): refused {} for rate, {} for requests in flight; {}",
            calls as f64 / seconds.max(1e-9),
            self.rate.load(Ordering::Relaxed),
            self.in_flight.load(Ordering::Relaxed),
            others.join(", ")
        )
    }
}

/// The flooder's process: floods until killed, writing its tally to `tally_file` every
/// 200 ms.
async fn flood(
    address: &str,
    tls_dir: &Path,
    tally_file: &Path,
    connections: usize,
    loops: usize,
) -> anyhow::Result<()> {
    let tls = MemberFiles::in_folder(tls_dir, FLOODER)
        .client()
        .context("the flooder's certificate")?;
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    for connection in 0..connections {
        // One HTTP/2 connection per endpoint; a refused or closed one is dialled again.
        let channel = Endpoint::from_shared(address.to_owned())?
            .tls_config(tls.tonic_config())?
            .connect_lazy();
        for index in 0..loops {
            let tally = Arc::clone(&tally);
            let mut nodes = NodeServiceClient::new(channel.clone());
            let mut operators = OperatorServiceClient::new(channel.clone());
            let behaviour = (connection * loops + index) % 5;
            tokio::spawn(async move {
                let node_id = FLOODER.to_owned();
                loop {
                    match behaviour {
                        // An operator RPC a node may not call.
                        0 => tally.record(
                            &operators
                                .get_job_status(v1::JobRef {
                                    job_id: "job-1".to_owned(),
                                })
                                .await,
                        ),
                        1 => tally.record(
                            &nodes
                                .heartbeat(v1::HeartbeatRequest {
                                    node_id: node_id.clone(),
                                })
                                .await,
                        ),
                        2 => tally.record(
                            &nodes
                                .fetch_task(v1::FetchTaskRequest {
                                    node_id: node_id.clone(),
                                    wait_ms: 0,
                                })
                                .await,
                        ),
                        // An upload stream opened and never fed: it holds a request slot.
                        3 => {
                            let (sender, receiver) = tokio::sync::mpsc::channel(1);
                            let call = nodes.submit_result(
                                tokio_stream::wrappers::ReceiverStream::new(receiver),
                            );
                            let outcome = tokio::time::timeout(Duration::from_secs(5), call).await;
                            drop(sender);
                            if let Ok(outcome) = outcome {
                                tally.record(&outcome);
                            }
                        }
                        // An upload whose header declares 2^40 values for the honest job.
                        _ => {
                            let header = v1::ResultChunk {
                                body: Some(v1::result_chunk::Body::Header(v1::ResultHeader {
                                    node_id: node_id.clone(),
                                    job_id: "job-1".to_owned(),
                                    round: 1,
                                    phase: v1::Phase::Train as i32,
                                    weight: 1.0,
                                    vector_length: 1 << 40,
                                    ..Default::default()
                                })),
                            };
                            tally.record(&nodes.submit_result(tokio_stream::iter([header])).await);
                        }
                    }
                }
            });
        }
    }
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let line = tally.line(started.elapsed().as_secs_f64());
        let temporary = tally_file.with_extension("tmp");
        let mut file = File::create(&temporary)?;
        writeln!(file, "{line}")?;
        drop(file);
        std::fs::rename(&temporary, tally_file)?;
    }
}

/// Waits until the flooder has been refused at least once (its tally counts calls).
async fn wait_for_flood(tally_file: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(tally_file).unwrap_or_default();
        if let Some(calls) = text.split_whitespace().next()
            && calls.parse::<u64>().is_ok_and(|calls| calls > 100)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the flooder made no calls within 60 s: {text}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn connect(
    address: &str,
    tls: &veil_pki::ClientTls,
) -> anyhow::Result<coordinator::operator::OperatorClient> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match coordinator::operator::connect(address, Some(tls)).await {
            Ok(client) => return Ok(client),
            Err(error) if Instant::now() < deadline => {
                tracing::debug!(%error, "coordinator not serving yet");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => return Err(error.context("the coordinator never served")),
        }
    }
}

/// Waits until every node's log says it registered (one minute).
async fn wait_for_registrations(root: &Path, nodes: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    for index in 0..nodes {
        let log = root.join(format!("node-{index}.log"));
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("registered with the coordinator") {
                break;
            }
            if Instant::now() > deadline {
                bail!("node-{index} never registered:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}
