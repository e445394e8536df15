//! Load and soak (issue 18, part 3): a real `coordinator` process and N real `client-node`
//! processes on 127.0.0.1 over mTLS, each node with a small synthetic partner, running J
//! secure DP-SGD jobs back to back while a tenth of the nodes (by default) are killed with
//! SIGKILL and restarted at random. Reports jobs' outcomes, rounds per minute, p50/p99 phase
//! durations, and the coordinator's resident memory and open file descriptors over time
//! (from /proc), with the growth between the end of job 5 and the last job.
//!
//! `scripts/bench-soak [--nodes N] [--jobs J] [--rounds R] [--kill-fraction F]
//! [--kill-every-secs S] [--customers C] [--job training|segment|lifetime-value|basket-rules]
//! [--k K] [--iterations I] [--epsilon E] [--out DIR] [--caps C1,C2,C3] [--heap-probe]` (defaults 100 nodes, 20 jobs, 3
//! rounds, 0.1, 10 s, 200 customers, training, ε = 1). `--job segment` runs shared-segmentation jobs instead (one k, I Lloyd
//! steps; `--rounds` is then ignored): the issue-14 speed figure is
//! `scripts/bench-soak --job segment --nodes 10 --jobs 1 --customers 100000
//! --kill-fraction 0 --k 8 --iterations 20`. `--job lifetime-value` fits BG/NBD and
//! Gamma-Gamma on purchases drawn from them (`veil_synth_data`'s buy-till-you-die
//! partners: 10 non-IID partners' parameters, 200 categories with planted pairs) at
//! customer-level ε (`--epsilon`): the issue-15 CLV figure is the same with `--job
//! lifetime-value`. `--job basket-rules` mines cross-sell rules on the same partners (one
//! basket per customer over the year, 3 levels, caps 12/66/220 itemsets per customer
//! unless `--caps` says otherwise,
//! min support 0.01, min confidence 0.2, every rule kept); with `--out DIR` it writes the pooled baskets (`baskets.csv`,
//! `basket,item`) and each job's rules (`rules-<job>.csv`) for
//! `crates/basket-rules/reference/compare_mlxtend.py` (`scripts/bench-basket-rules
//! --job-level` runs it all). `--heap-probe` also reports, after each job, the bytes the
//! coordinator's allocator holds in use (glibc's `malloc_stats`, called through gdb, which
//! must be installed), to tell retained data from pages the allocator keeps. A bench target,
//! so `cargo test` does not build it. `VEIL_BIN_DIR=DIR` runs the `coordinator` and `client-node`
//! in DIR instead of the build's.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use veil_pki::{LocalPki, Role};
use veil_synth_data::{BasketPlan, BuyTillYouDieConfig, write_buy_till_you_die_files};
use veil_wire::v1;

/// What a run is asked to do.
#[derive(Debug, Clone)]
struct SoakConfig {
    nodes: usize,
    jobs: usize,
    rounds: u32,
    kill_fraction: f64,
    kill_every: Duration,
    customers: usize,
    kind: JobKind,
    /// Segments of a segmentation job.
    k: u32,
    /// Lloyd steps of a segmentation job.
    iterations: u32,
    /// Customer-level ε of a lifetime-value or basket-rules job.
    epsilon: f64,
    /// Where a basket-rules run writes the pooled baskets and the rules.
    out: Option<PathBuf>,
    /// Itemsets one customer adds per level in a basket-rules job.
    itemset_caps: Vec<u32>,
    /// After each job, ask the coordinator's allocator what it holds (gdb calls glibc's
    /// `malloc_stats`, which writes to the coordinator's log): heap in use, as opposed to
    /// RSS, which also counts freed pages the allocator keeps.
    heap_probe: bool,
}

/// Which job the run repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobKind {
    /// Secure DP-SGD training of a logistic regression.
    Training,
    /// Shared DP k-means segmentation.
    Segment,
    /// Federated BG/NBD and Gamma-Gamma on simulated purchases.
    LifetimeValue,
    /// Federated DP association rules on the same purchases' categories.
    BasketRules,
}

impl JobKind {
    /// Whether the partners are buy-till-you-die ones with planted baskets.
    fn buys_till_it_dies(self) -> bool {
        matches!(self, Self::LifetimeValue | Self::BasketRules)
    }
}

impl SoakConfig {
    fn from_args() -> anyhow::Result<Self> {
        let mut config = Self {
            nodes: 100,
            jobs: 20,
            rounds: 3,
            kill_fraction: 0.1,
            kill_every: Duration::from_secs(10),
            customers: 200,
            kind: JobKind::Training,
            k: 8,
            iterations: 20,
            epsilon: 1.0,
            out: None,
            itemset_caps: vec![12, 66, 220],
            heap_probe: false,
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            // `cargo bench` passes `--bench` to every bench target.
            if flag == "--bench" {
                continue;
            }
            if flag == "--heap-probe" {
                config.heap_probe = true;
                continue;
            }
            let value = args
                .next()
                .with_context(|| format!("{flag} needs a value"))?;
            let parse_error = || format!("{flag} {value}: not a number");
            match flag.as_str() {
                "--nodes" => config.nodes = value.parse().with_context(parse_error)?,
                "--jobs" => config.jobs = value.parse().with_context(parse_error)?,
                "--rounds" => config.rounds = value.parse().with_context(parse_error)?,
                "--kill-fraction" => {
                    config.kill_fraction = value.parse().with_context(parse_error)?;
                }
                "--kill-every-secs" => {
                    config.kill_every =
                        Duration::from_secs_f64(value.parse().with_context(parse_error)?);
                }
                "--customers" => config.customers = value.parse().with_context(parse_error)?,
                "--job" => {
                    config.kind = match value.as_str() {
                        "training" => JobKind::Training,
                        "segment" => JobKind::Segment,
                        "lifetime-value" => JobKind::LifetimeValue,
                        "basket-rules" => JobKind::BasketRules,
                        other => {
                            bail!(
                                "--job {other}: expected training, segment, lifetime-value or basket-rules"
                            )
                        }
                    };
                }
                "--k" => config.k = value.parse().with_context(parse_error)?,
                "--iterations" => config.iterations = value.parse().with_context(parse_error)?,
                "--epsilon" => config.epsilon = value.parse().with_context(parse_error)?,
                "--out" => config.out = Some(PathBuf::from(value)),
                "--caps" => {
                    config.itemset_caps = value
                        .split(',')
                        .map(str::parse)
                        .collect::<Result<_, _>>()
                        .with_context(parse_error)?;
                }
                other => bail!("unknown flag {other}"),
            }
        }
        if config.nodes < 3 || config.jobs == 0 || config.rounds == 0 {
            bail!("need at least 3 nodes, 1 job and 1 round");
        }
        if !(0.0..0.5).contains(&config.kill_fraction) {
            bail!("--kill-fraction must be in [0, 0.5)");
        }
        Ok(config)
    }

    /// Nodes killed at each kill: at least one when the fraction is positive.
    fn killed_per_turn(&self) -> usize {
        if self.kill_fraction == 0.0 {
            0
        } else {
            ((self.nodes as f64 * self.kill_fraction).round() as usize).max(1)
        }
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

/// The node processes, restartable by index.
struct Nodes {
    binary: PathBuf,
    configs: Vec<PathBuf>,
    processes: Vec<Option<KillOnDrop>>,
    restarts: usize,
}

impl Nodes {
    fn spawn(&mut self, index: usize) -> anyhow::Result<()> {
        let config = &self.configs[index];
        let log = File::options()
            .create(true)
            .append(true)
            .open(config.with_extension("log"))
            .with_context(|| format!("node {index}'s log"))?;
        let child = Command::new(&self.binary)
            .args(["run", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting node {index}"))?;
        self.processes[index] = Some(KillOnDrop(child));
        Ok(())
    }

    fn kill(&mut self, index: usize) {
        self.processes[index] = None;
    }
}

/// One sample of the coordinator process.
#[derive(Debug, Clone, Copy)]
struct Sample {
    seconds: f64,
    /// Jobs finished when the sample was taken.
    jobs_done: usize,
    rss_kib: u64,
    fds: usize,
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// The last day of history of every job.
const CUTOFF: &str = "2024-10-02";
/// The holdout window of lifetime-value jobs, after the cutoff.
const LIFETIME_HOLDOUT_DAYS: u32 = 90;
/// The baskets of buy-till-you-die partners: the 200 categories.
const BASKET_PLAN: BasketPlan = BasketPlan {
    categories: 200,
    planted_pairs: 10,
    pair_rate: 0.3,
    mean_basket_size: 2.0,
    max_basket_size: 8,
};
/// Basket-rules settings, as `scripts/bench-basket-rules` passes them to mlxtend.
const RULES_MIN_SUPPORT: f64 = 0.01;
const RULES_MIN_CONFIDENCE: f64 = 0.2;
const RULES_MAX_LEN: u32 = 3;

/// An analysis job at the run's customer-level ε, without model or training.
fn analysis_job(config: &SoakConfig) -> veil_job::file::JobFile {
    let mut job = veil_job::standard_job(CUTOFF, 90);
    job.model = None;
    job.training = None;
    job.privacy = Default::default();
    job.privacy.customer_epsilon = Some(config.epsilon);
    job.privacy.delta = Some(1e-6);
    job
}

fn job_spec(config: &SoakConfig, index: usize) -> anyhow::Result<v1::JobSpec> {
    let mut job = match config.kind {
        JobKind::Training => {
            let mut job = veil_job::standard_job(CUTOFF, 90);
            job.rounds = config.rounds;
            job.model_mut().kind = "logistic_regression".to_owned();
            job.model_mut().hidden = Vec::new();
            job.training_mut().local_epochs = 1;
            job
        }
        JobKind::Segment => {
            let text = veil_job::STANDARD_SEGMENT_JOB
                .replace("{cutoff}", CUTOFF)
                .replace("{horizon}", "90");
            let mut job =
                veil_job::file::JobFile::parse(&text).context("the standard segmentation job")?;
            let segment = job
                .segment
                .as_mut()
                .context("the standard segmentation job has no [segment]")?;
            segment.k = vec![config.k];
            segment.iterations = Some(config.iterations);
            job
        }
        JobKind::LifetimeValue => {
            let mut job = analysis_job(config);
            job.lifetime_value = Some(veil_job::file::LifetimeValueSection {
                min_spend: 1.0,
                max_spend: 1000.0,
                holdout_days: Some(LIFETIME_HOLDOUT_DAYS),
                window_days: Some(365),
                age_bins: None,
                spend_bins: None,
            });
            job
        }
        JobKind::BasketRules => {
            let mut job = analysis_job(config);
            job.basket_rules = Some(veil_job::file::BasketRulesSection {
                items: (0..BASKET_PLAN.categories)
                    .map(veil_basket_rules::simulate::category_name)
                    .collect(),
                min_support: RULES_MIN_SUPPORT,
                min_confidence: RULES_MIN_CONFIDENCE,
                max_itemset_size: Some(RULES_MAX_LEN),
                // By default caps that bind only for the largest baskets of the
                // library-level comparison (`--caps` to change), and room for every
                // pair of frequent categories: the job defaults (4 per level, 256
                // candidates) are for small federations.
                itemset_caps: config.itemset_caps.clone(),
                max_candidates: Some(20_000),
                baskets: None,
                max_days_per_customer: None,
                window_days: Some(365),
                top_n: Some(1_000_000),
            });
            job
        }
    };
    job.name = format!("soak-{index}");
    // Killed nodes drop out; a phase needs half the federation.
    job.max_participants = config.nodes as u32;
    job.min_participants = (config.nodes as u32).div_ceil(2).max(3);
    job.aggregation.step_timeout_secs = Some(20.0);
    job.timeouts.feature_stats_secs = Some(120.0);
    job.timeouts.train_secs = Some(120.0);
    job.timeouts.evaluate_secs = Some(120.0);
    Ok(job.to_wire())
}

fn phase_name(phase: i32) -> &'static str {
    match v1::Phase::try_from(phase) {
        Ok(v1::Phase::FeatureStats) => "feature-stats",
        Ok(v1::Phase::Train) => "train",
        Ok(v1::Phase::Evaluate) => "evaluate",
        Ok(v1::Phase::Release) => "release",
        _ => "none",
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let config = SoakConfig::from_args()?;
    println!("soak: {config:?}");
    let dir = tempfile::Builder::new().prefix("veil-soak-").tempdir()?;
    let root = dir.path();
    let pki = LocalPki::create(&root.join("pki"))?;
    pki.coordinator()?;
    let operator_tls = pki.member(Role::Operator, "operator")?.client()?;
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
    let coordinator_pid = coordinator.0.id();

    let data_started = Instant::now();
    let data = root.join("data");
    let files = if config.kind.buys_till_it_dies() {
        let written = write_buy_till_you_die_files(
            &BuyTillYouDieConfig {
                partners: config.nodes,
                customers_per_partner: config.customers as u64,
                cutoff: chrono::NaiveDate::parse_from_str(CUTOFF, "%Y-%m-%d")?,
                holdout_days: LIFETIME_HOLDOUT_DAYS,
                baskets: BASKET_PLAN,
                seed: 40,
            },
            &data,
        )?;
        println!("planted pairs: {:?}", written.planted_pairs);
        if let (JobKind::BasketRules, Some(out)) = (config.kind, &config.out) {
            let baskets = write_pooled_baskets(&written.files, &out.join("baskets.csv"))?;
            println!("pooled baskets: {baskets} (one per customer with a purchase in the year)");
        }
        written.files
    } else {
        let mut synth = veil_synth_data::SynthConfig::demo(config.nodes, 17);
        for partner in &mut synth.partners {
            partner.n_customers = config.customers;
        }
        veil_synth_data::write_partner_files(&synth, &data)?
    };
    println!(
        "partner data written in {:.1} s",
        data_started.elapsed().as_secs_f64()
    );
    let mut configs = Vec::new();
    for (index, file) in files.iter().enumerate() {
        let name = format!("node-{index}");
        pki.member(Role::Node, &name)?;
        let path = root.join(format!("{name}.toml"));
        // The yearly cap is lifted: twenty jobs back to back are a load test, not a budget.
        std::fs::write(
            &path,
            format!(
                "node_id = \"{name}\"\ncoordinator = \"{address}\"\ntls_dir = \"{}\"\n\
                 state_dir = \"{}\"\n[policy]\ncustomer_epsilon_per_year = 1000000.0\n\
                 [data]\npath = \"{}\"\n[data.columns]\ncategory = \"category\"\n",
                pki.folder(&name).display(),
                root.join(format!("{name}.state")).display(),
                file.display()
            ),
        )?;
        configs.push(path);
    }
    let mut operator = connect(&address, &operator_tls).await?;
    let nodes = Arc::new(Mutex::new(Nodes {
        binary: node_binary,
        processes: configs.iter().map(|_| None).collect(),
        configs,
        restarts: 0,
    }));
    {
        let mut nodes = nodes.lock().map_err(|_| anyhow::anyhow!("nodes lock"))?;
        for index in 0..config.nodes {
            nodes.spawn(index)?;
        }
    }
    wait_for_registrations(&root, config.nodes).await?;

    let started = Instant::now();
    let jobs_done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let sampler = {
        let samples = Arc::clone(&samples);
        let jobs_done = Arc::clone(&jobs_done);
        tokio::spawn(async move {
            loop {
                if let (Some(rss_kib), Some(fds)) =
                    (rss_kib(coordinator_pid), open_fds(coordinator_pid))
                {
                    if let Ok(mut samples) = samples.lock() {
                        samples.push(Sample {
                            seconds: started.elapsed().as_secs_f64(),
                            jobs_done: jobs_done.load(std::sync::atomic::Ordering::Relaxed),
                            rss_kib,
                            fds,
                        });
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    let killer = {
        let nodes = Arc::clone(&nodes);
        let config = config.clone();
        tokio::spawn(async move {
            let mut rng = ChaCha20Rng::seed_from_u64(18);
            loop {
                tokio::time::sleep(config.kill_every).await;
                let mut victims = Vec::new();
                while victims.len() < config.killed_per_turn() {
                    let index = (rng.next_u64() % config.nodes as u64) as usize;
                    if !victims.contains(&index) {
                        victims.push(index);
                    }
                }
                if let Ok(mut nodes) = nodes.lock() {
                    for &index in &victims {
                        nodes.kill(index);
                    }
                }
                // Down for a couple of seconds: long enough to miss a step.
                tokio::time::sleep(Duration::from_secs(2)).await;
                if let Ok(mut nodes) = nodes.lock() {
                    for &index in &victims {
                        if nodes.spawn(index).is_ok() {
                            nodes.restarts += 1;
                        }
                    }
                }
            }
        })
    };

    let mut phase_durations: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    let mut outcomes = Vec::new();
    let mut heaps: Vec<(usize, HeapStats)> = Vec::new();
    let mut rounds_committed = 0_u64;
    for index in 0..config.jobs {
        let job_id =
            coordinator::operator::submit(&mut operator, job_spec(&config, index)?).await?;
        coordinator::operator::start(&mut operator, &job_id).await?;
        let job_started = Instant::now();
        let mut position = (u32::MAX, -1);
        let mut position_since = Instant::now();
        let patience = Duration::from_secs(120) * (config.rounds * 2 + 1) * 2;
        let status = loop {
            let status = operator
                .get_job_status(v1::JobRef {
                    job_id: job_id.clone(),
                })
                .await
                .with_context(|| format!("status of {job_id}"))?
                .into_inner();
            let now_at = (status.completed_rounds, status.current_phase);
            if now_at != position {
                if position.1 > 0 {
                    phase_durations
                        .entry(phase_name(position.1))
                        .or_default()
                        .push(position_since.elapsed().as_secs_f64());
                }
                position = now_at;
                position_since = Instant::now();
            }
            let running = matches!(
                v1::JobState::try_from(status.state),
                Ok(v1::JobState::Running | v1::JobState::Pending)
            );
            if !running {
                break status;
            }
            if job_started.elapsed() > patience {
                bail!("{job_id} still running after {patience:?}: {status:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        jobs_done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        rounds_committed += status.history.len() as u64;
        let state = v1::JobState::try_from(status.state)
            .map_or_else(|_| "unknown".to_owned(), |state| format!("{state:?}"));
        println!(
            "job {index} ({job_id}): {state} in {:.1} s, {} rounds, participants {:?}{}",
            job_started.elapsed().as_secs_f64(),
            status.history.len(),
            status
                .history
                .iter()
                .map(|round| round.participants)
                .collect::<Vec<_>>(),
            if status.failure_reason.is_empty() {
                String::new()
            } else {
                format!(", failure: {}", status.failure_reason)
            }
        );
        outcomes.push(state);
        if config.heap_probe {
            match probe_heap(coordinator_pid, &root.join("coordinator.log")) {
                Ok(heap) => {
                    println!(
                        "  heap after job {index}: {:.2} MiB in use ({:.2} MiB by SQLite), {:.2} MiB held from the system; RSS {:.1} MiB",
                        heap.in_use as f64 / 1_048_576.0,
                        heap.sqlite as f64 / 1_048_576.0,
                        heap.system as f64 / 1_048_576.0,
                        rss_kib(coordinator_pid).unwrap_or(0) as f64 / 1024.0
                    );
                    heaps.push((index + 1, heap));
                }
                Err(error) => println!("  heap probe after job {index} failed: {error:#}"),
            }
        }
        if let (JobKind::BasketRules, Some(out)) = (config.kind, &config.out) {
            let rules = out.join(format!("rules-{index}.csv"));
            let written = Command::new(&coordinator_binary)
                .args(["rules", &job_id, "--state-dir"])
                .arg(root.join("coordinator.state"))
                .arg("--out")
                .arg(&rules)
                .status()
                .context("running coordinator rules")?;
            if !written.success() {
                bail!("coordinator rules {job_id} failed: {written}");
            }
            println!("rules of job {index}: {}", rules.display());
        }
    }
    let elapsed = started.elapsed();
    killer.abort();
    sampler.abort();
    let restarts = nodes.lock().map(|nodes| nodes.restarts).unwrap_or(0);
    drop(nodes);
    drop(coordinator);

    println!(
        "\n== soak: {} nodes, {} jobs of {} rounds ==",
        config.nodes, config.jobs, config.rounds
    );
    let succeeded = outcomes
        .iter()
        .filter(|state| *state == "Succeeded")
        .count();
    println!("jobs succeeded: {succeeded}/{}", config.jobs);
    println!(
        "rounds committed: {rounds_committed} in {:.1} min: {:.2} rounds per minute",
        elapsed.as_secs_f64() / 60.0,
        rounds_committed as f64 / (elapsed.as_secs_f64() / 60.0)
    );
    println!("node restarts after SIGKILL: {restarts}");
    for (phase, durations) in &mut phase_durations {
        durations.sort_by(f64::total_cmp);
        println!(
            "phase {phase:<13} n = {:>4}  p50 = {:>6.2} s  p99 = {:>6.2} s",
            durations.len(),
            percentile(durations, 0.5),
            percentile(durations, 0.99)
        );
    }
    let samples = samples
        .lock()
        .map(|samples| samples.clone())
        .unwrap_or_default();
    report_process(&samples, config.jobs);
    report_heap(&heaps);
    println!("state folder: {} (removed at exit)", root.display());
    Ok(())
}

/// Writes `basket,item` for each customer's categories bought in the year up
/// to the cutoff, over all partners' files (what the nodes' baskets hold,
/// pooled), and returns the number of baskets.
fn write_pooled_baskets(files: &[PathBuf], out: &Path) -> anyhow::Result<usize> {
    use std::io::{BufRead, Write};
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let cutoff = chrono::NaiveDate::parse_from_str(CUTOFF, "%Y-%m-%d")?;
    let window_start = cutoff - chrono::Days::new(364);
    let mut baskets: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for file in files {
        for line in std::io::BufReader::new(File::open(file)?).lines().skip(1) {
            let line = line?;
            let fields: Vec<&str> = line.split(',').collect();
            let [customer, timestamp, _, _, category, ..] = fields[..] else {
                bail!("{}: a short row: {line}", file.display());
            };
            let day = chrono::DateTime::parse_from_rfc3339(timestamp)
                .with_context(|| format!("{}: timestamp {timestamp}", file.display()))?
                .date_naive();
            if (window_start..=cutoff).contains(&day) {
                baskets
                    .entry(customer.to_owned())
                    .or_default()
                    .insert(category.to_owned());
            }
        }
    }
    let mut writer = std::io::BufWriter::new(File::create(out)?);
    writeln!(writer, "basket,item")?;
    for (basket, items) in baskets.values().enumerate() {
        for item in items {
            writeln!(writer, "{basket},{item}")?;
        }
    }
    writer.flush()?;
    Ok(baskets.len())
}

/// The coordinator's memory and descriptors: one line per finished job, and growth
/// between the end of job 5 (or the first job when there are fewer) and the last.
fn report_process(samples: &[Sample], jobs: usize) {
    let Some(last) = samples.last() else {
        println!("no /proc samples of the coordinator");
        return;
    };
    println!(
        "coordinator over time (sampled every second, {} samples):",
        samples.len()
    );
    for done in 0..=jobs {
        let during: Vec<&Sample> = samples.iter().filter(|s| s.jobs_done == done).collect();
        if let (Some(first), Some(end)) = (during.first(), during.last()) {
            let peak = during.iter().map(|s| s.rss_kib).max().unwrap_or(0);
            let fds = during.iter().map(|s| s.fds).max().unwrap_or(0);
            println!(
                "  after {done:>2} jobs ({:>6.0}-{:>6.0} s): RSS {:>7.1} MiB at the end, peak {:>7.1} MiB; fds peak {fds}",
                first.seconds,
                end.seconds,
                end.rss_kib as f64 / 1024.0,
                peak as f64 / 1024.0
            );
        }
    }
    let baseline_jobs = 5.min(jobs.saturating_sub(1)).max(1);
    let baseline = samples
        .iter()
        .filter(|s| s.jobs_done == baseline_jobs)
        .map(|s| s.rss_kib)
        .max();
    let end = samples
        .iter()
        .filter(|s| s.jobs_done == last.jobs_done)
        .map(|s| s.rss_kib)
        .max();
    if let (Some(baseline), Some(end)) = (baseline, end) {
        println!(
            "RSS peak after job {baseline_jobs}: {:.1} MiB; during the last job: {:.1} MiB ({:+.1}%)",
            baseline as f64 / 1024.0,
            end as f64 / 1024.0,
            (end as f64 / baseline as f64 - 1.0) * 100.0
        );
    }
    let fds: Vec<usize> = samples.iter().map(|s| s.fds).collect();
    println!(
        "open fds: min {}, max {}, last {}",
        fds.iter().min().unwrap_or(&0),
        fds.iter().max().unwrap_or(&0),
        last.fds
    );
}

/// What the coordinator's allocator holds, over all its arenas and mmapped blocks.
#[derive(Debug, Clone, Copy)]
struct HeapStats {
    /// Bytes allocated and not freed: the data the process retains.
    in_use: u64,
    /// Bytes the allocator holds from the system (in use or free for reuse).
    system: u64,
    /// Of the bytes in use, those SQLite holds (its page caches, bounded per connection),
    /// from `sqlite3_memory_used`.
    sqlite: u64,
}

/// Attaches gdb to the coordinator for a moment to call glibc's `malloc_stats`, which prints
/// to the coordinator's stderr (its log), and reads the totals it printed.
fn probe_heap(pid: u32, log: &Path) -> anyhow::Result<HeapStats> {
    let before = std::fs::metadata(log).map(|meta| meta.len()).unwrap_or(0);
    let output = Command::new("timeout")
        .args(["60", "gdb", "-p", &pid.to_string(), "-batch", "-ex"])
        .arg("call (void) malloc_stats()")
        .args(["-ex", "print (long long) sqlite3_memory_used()"])
        .stdin(Stdio::null())
        .output()
        .context("running gdb (install it: apt-get install gdb)")?;
    if !output.status.success() {
        bail!(
            "gdb -p {pid} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let printed = String::from_utf8_lossy(&output.stdout);
    let sqlite = printed
        .lines()
        .find_map(|line| line.strip_prefix("$1 = "))
        .and_then(|value| value.trim().parse().ok())
        .with_context(|| format!("gdb printed no sqlite3_memory_used: {printed}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read(log).with_context(|| format!("reading {}", log.display()))?;
        let new = String::from_utf8_lossy(text.get(before as usize..).unwrap_or_default());
        if let Some(total) = new.rsplit_once("Total (incl. mmap):").map(|(_, rest)| rest) {
            let field = |name: &str| {
                total
                    .lines()
                    .find_map(|line| line.trim().strip_prefix(name))
                    .and_then(|rest| rest.trim().trim_start_matches('=').trim().parse().ok())
            };
            if let (Some(system), Some(in_use)) = (field("system bytes"), field("in use bytes")) {
                return Ok(HeapStats {
                    in_use,
                    system,
                    sqlite,
                });
            }
        }
        if Instant::now() > deadline {
            bail!(
                "malloc_stats printed no totals to {} within 10 s",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Heap in use after job 5 (or the first) against after the last job.
fn report_heap(heaps: &[(usize, HeapStats)]) {
    let Some((last_jobs, last)) = heaps.last() else {
        return;
    };
    let baseline = heaps
        .iter()
        .find(|(jobs, _)| *jobs == 5)
        .or_else(|| heaps.first());
    if let Some((jobs, baseline)) = baseline {
        let outside = |heap: &HeapStats| heap.in_use.saturating_sub(heap.sqlite) as f64;
        println!(
            "heap in use outside SQLite after job {jobs}: {:.2} MiB; after job {last_jobs}: {:.2} MiB ({:+.1} KiB per job)",
            outside(baseline) / 1_048_576.0,
            outside(last) / 1_048_576.0,
            (outside(last) - outside(baseline))
                / 1024.0
                / (*last_jobs as f64 - *jobs as f64).max(1.0)
        );
        println!(
            "heap in use after job {jobs}: {:.2} MiB; after job {last_jobs}: {:.2} MiB ({:+.1}%, {:+.1} KiB per job)",
            baseline.in_use as f64 / 1_048_576.0,
            last.in_use as f64 / 1_048_576.0,
            (last.in_use as f64 / baseline.in_use as f64 - 1.0) * 100.0,
            (last.in_use as f64 - baseline.in_use as f64)
                / 1024.0
                / (*last_jobs as f64 - *jobs as f64).max(1.0)
        );
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

/// Waits until every node's log says it registered (one minute plus a second per node).
async fn wait_for_registrations(root: &Path, nodes: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60 + nodes as u64);
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
