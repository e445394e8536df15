//! What open consoles cost a running job: the README demo's job (three
//! nodes, secure aggregation, customer-level DP-SGD, 12 rounds) on a real
//! coordinator with its console, run with no console open and with C
//! consoles open on the job's page, alternately, R times each. Prints the
//! round time of every run, the means and the overhead.
//!
//! A console does what the job page does in a browser: it loads the page
//! (`GET /jobs/JOB`), opens the job's event stream and reads its live
//! updates (progress and new round rows, applied in place) until one says
//! the job has ended, then loads the page once more. Each load and stream is
//! a new TLS connection (a browser would reuse one, so this is the dearer
//! case).
//!
//! `cargo bench -p client-node --bench console_fanout -- [CONSOLES] [REPEATS]`
//! (defaults 50 consoles, 3 repeats). A bench target, so `cargo test` does
//! not build it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use client_node::config::NodeConfig;
use client_node::node::{NodeProgress, RunOptions, run_with};
use client_node::policy::NodePolicy;
use coordinator::CoordinatorConfig;
use coordinator::console::{CONSOLE_KEY_FILE, ConsoleConfig, ConsoleIdentity};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, watch};
use veil_console::token::{ConsoleKey, ConsoleRole, TokenKind};
use veil_wire::v1;

const NODES: usize = 3;
/// Every read of a console has this deadline: a bench never hangs.
const READ_DEADLINE: Duration = Duration::from_secs(60);

/// One console in a browser, following one job's page.
#[derive(Clone)]
struct Console {
    connector: tokio_rustls::TlsConnector,
    address: SocketAddr,
    cookie: String,
    job: String,
}

impl Console {
    async fn connect(
        &self,
    ) -> anyhow::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let tcp = tokio::net::TcpStream::connect(self.address).await?;
        Ok(self
            .connector
            .connect(ServerName::try_from("127.0.0.1")?, tcp)
            .await?)
    }

    fn request(&self, path: &str) -> String {
        format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nCookie: {}\r\nConnection: close\r\n\r\n",
            self.address, self.cookie
        )
    }

    /// Loads the job page; returns its size.
    async fn load_page(&self) -> anyhow::Result<usize> {
        let mut tls = self.connect().await?;
        tls.write_all(self.request(&format!("/jobs/{}", self.job)).as_bytes())
            .await?;
        let mut page = Vec::new();
        tokio::time::timeout(READ_DEADLINE, tls.read_to_end(&mut page)).await??;
        anyhow::ensure!(page.starts_with(b"HTTP/1.1 200"), "the job page failed");
        Ok(page.len())
    }

    /// Follows the event stream as the page's script does, applying each
    /// update in place, until an update says the job has ended (`true`) or
    /// the stream ends without one (`false`: the browser reconnects).
    /// Counts the updates in `updates`.
    async fn until_the_job_ends(&self, updates: &mut usize) -> anyhow::Result<bool> {
        let mut tls = self.connect().await?;
        tls.write_all(
            self.request(&format!("/jobs/{}/events?after=0", self.job))
                .as_bytes(),
        )
        .await?;
        let mut lines = BufReader::new(tls).lines();
        loop {
            let Some(line) = tokio::time::timeout(READ_DEADLINE, lines.next_line()).await?? else {
                return Ok(false);
            };
            let Some(update) = line.strip_prefix("data: ") else {
                continue;
            };
            *updates += 1;
            let update: serde_json::Value = serde_json::from_str(update)?;
            if update["finished"] == serde_json::Value::Bool(true) {
                return Ok(true);
            }
        }
    }

    /// Follows the job from its loaded page to its end: follows its
    /// updates, and loads the page again when the job ends. Returns the
    /// page loads and the updates received.
    async fn follow(self) -> (usize, usize) {
        let mut loads = 0;
        let mut updates = 0;
        loop {
            match self.until_the_job_ends(&mut updates).await {
                Ok(true) => break,
                Ok(false) => {}
                Err(error) => {
                    eprintln!("console: {error:#}");
                    return (loads, updates);
                }
            }
        }
        match self.load_page().await {
            Ok(_) => loads += 1,
            Err(error) => eprintln!("console: {error:#}"),
        }
        (loads, updates)
    }
}

/// One run of the job with `consoles` consoles open; returns the seconds
/// per round, the page loads and the live updates the consoles received.
async fn run_once(dir: &Path, consoles: usize, run: usize) -> anyhow::Result<(f64, usize, usize)> {
    let dir = dir.join(format!("run-{run}"));
    let state_dir = dir.join("coordinator.state");
    let console = ConsoleConfig::bind(
        "127.0.0.1:0".parse()?,
        ConsoleIdentity::SelfSigned {
            hosts: vec!["127.0.0.1".to_owned()],
        },
    )?;
    let console_address = console.local_addr()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = format!("http://127.0.0.1:{}", listener.local_addr()?.port());
    let (stop, stopped) = watch::channel(false);
    let wait = |mut receiver: watch::Receiver<bool>| async move {
        let _ = receiver.wait_for(|stop| *stop).await;
    };
    let server = tokio::spawn(coordinator::run(
        CoordinatorConfig {
            state_dir: Some(state_dir.clone()),
            console: Some(console),
            ..CoordinatorConfig::insecure_development()
        },
        listener,
        wait(stopped.clone()),
    ));
    let synth = veil_synth_data::SynthConfig::demo(NODES, 77);
    let files = veil_synth_data::write_partner_files(&synth, &dir.join("data"))?;
    let (progress, mut registered) = mpsc::unbounded_channel();
    let mut nodes = Vec::new();
    for (index, file) in files.iter().enumerate() {
        let name = format!("node-{index}");
        let config = NodeConfig {
            node_id: name.clone(),
            coordinator: address.clone(),
            data: veil_behaviour_features::CsvSource::new(file.clone()).into(),
            state_dir: Some(dir.join(format!("{name}.state"))),
            policy: NodePolicy::default(),
            insecure_dev: true,
            privacy_audit_kit: None,
            tls_dir: None,
        };
        let options = RunOptions {
            progress: Some(progress.clone()),
            ..RunOptions::default()
        };
        nodes.push(tokio::spawn(run_with(
            config,
            options,
            wait(stopped.clone()),
        )));
    }
    let mut ready = 0;
    while ready < NODES {
        if registered.recv().await == Some(NodeProgress::Registered) {
            ready += 1;
        }
    }
    let mut operator = coordinator::operator::connect(&address, None).await?;
    let job = veil_job::standard_job(
        &synth.suggested_cutoff().format("%Y-%m-%d").to_string(),
        synth.suggested_horizon_days(),
    );
    let rounds = job.rounds;
    let job_id = coordinator::operator::submit(&mut operator, job.to_wire()).await?;

    // The consoles open the job's page before it starts, as a person would.
    let key_path = state_dir.join(CONSOLE_KEY_FILE);
    let key = ConsoleKey::from_bytes(&std::fs::read(&key_path).context("the console key")?)?;
    let now = chrono::Utc::now().timestamp();
    let session = key.issue(
        TokenKind::Session,
        ConsoleRole::Auditor,
        "bench",
        now,
        Duration::from_secs(3600),
        &ring::rand::SystemRandom::new(),
    )?;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(state_dir.join("console-certificate.pem"))? {
        roots.add(certificate?)?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let template = Console {
        connector: tokio_rustls::TlsConnector::from(Arc::new(tls)),
        address: console_address,
        cookie: format!("veil_session={session}"),
        job: job_id.clone(),
    };
    let mut following = Vec::new();
    for _ in 0..consoles {
        let console = template.clone();
        console.load_page().await?;
        following.push(tokio::spawn(console.follow()));
    }
    let mut loads = consoles;
    let mut updates = 0;

    let started = Instant::now();
    coordinator::operator::start(&mut operator, &job_id).await?;
    let status = coordinator::operator::watch(&mut operator, &job_id, |_| {}).await?;
    let wall = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        status.state == v1::JobState::Succeeded as i32,
        "the job failed: {}",
        status.failure_reason
    );
    for console in following {
        let (reloads, received) = tokio::time::timeout(READ_DEADLINE, console).await??;
        loads += reloads;
        updates += received;
    }
    let _ = stop.send(true);
    for node in nodes {
        let _ = node.await;
    }
    let _ = server.await;
    Ok((wall / f64::from(rounds), loads, updates))
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    veil_logging::init_with_default(false, "error");
    // `cargo bench` appends `--bench`; only the positional arguments count.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|argument| !argument.starts_with("--"))
        .collect();
    let consoles: usize = args.first().map_or(Ok(50), |value| value.parse())?;
    let repeats: usize = args.get(1).map_or(Ok(3), |value| value.parse())?;
    let dir = tempfile::tempdir()?;
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for repeat in 0..repeats {
        // Alternating, so a change in the machine's load hits both alike.
        for open in [0, consoles] {
            let (per_round, loads, updates) =
                run_once(dir.path(), open, repeat * 2 + usize::from(open > 0)).await?;
            println!(
                "{open:>3} consoles: {per_round:.3} s per round ({loads} page loads, {updates} live updates)"
            );
            if open == 0 {
                without.push(per_round);
            } else {
                with.push(per_round);
            }
        }
    }
    let (without, with) = (mean(&without), mean(&with));
    println!(
        "mean: {without:.3} s per round without consoles, {with:.3} s with {consoles}: {:+.1}%",
        (with / without - 1.0) * 100.0
    );
    Ok(())
}
