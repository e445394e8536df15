//! The `coordinator` binary: serve, or act as the operator's client.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use std::time::Duration;

use clap::{Parser, Subcommand};
use coordinator::{CoordinatorConfig, operator};
use veil_audit::{
    AuditPublicKey, Head, ReceiptStore, export_report, head_path_for, reconcile, verify_log_file,
};
use veil_metrics::CoordinatorMetrics;
use veil_pki::{
    CertificateRequest, ClientTls, FederationCa, ISSUED_FILE, IssuanceJournal, MemberFiles,
    REVOCATIONS_FILE, RevocationList, RevocationReason, Role, Serial, Validity,
};
use veil_wire::v1;

#[derive(Parser)]
#[command(name = "coordinator", about = "Veil coordinator and operator commands")]
struct Cli {
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true)]
    log_json: bool,
    /// Coordinator address for operator commands.
    #[arg(
        long,
        global = true,
        env = "VEIL_COORDINATOR",
        default_value = "http://127.0.0.1:50051"
    )]
    coordinator: String,
    /// mTLS folder of the member running operator or auditor commands
    /// (`ca.pem`, `<name>.pem`, `<name>-key.pem`, as `ca issue` writes it).
    #[arg(long, global = true, env = "VEIL_TLS_DIR")]
    tls_dir: Option<PathBuf>,
    /// The member's name in its folder.
    #[arg(
        long = "as",
        global = true,
        env = "VEIL_MEMBER",
        default_value = "operator"
    )]
    member: String,
    /// Talk or serve plaintext, without identities or role checks: for local
    /// development only.
    #[arg(long, global = true)]
    insecure_dev: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the node and operator services.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:50051")]
        listen: SocketAddr,
        /// Folder of the coordinator's durable state (jobs, checkpoints,
        /// privacy ledger).
        #[arg(long, default_value = "veil-coordinator-state")]
        state_dir: PathBuf,
        /// The revocation list to check every connection against (default:
        /// `revoked.txt` in the TLS folder).
        #[arg(long)]
        revocations: Option<PathBuf>,
        /// Serve Prometheus metrics at `http://ADDR/metrics` (plain HTTP;
        /// off by default). See docs/metrics.md.
        #[arg(long, value_name = "ADDR")]
        metrics: Option<SocketAddr>,
    },
    /// The federation certificate authority.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Auditor commands over a copy of the coordinator's audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Submit a job file; optionally start it and watch it to the end.
    Submit {
        /// The job file (TOML).
        job_file: PathBuf,
        /// Start the job right away.
        #[arg(long)]
        start: bool,
        /// Watch progress until the job ends (implies --start).
        #[arg(long)]
        watch: bool,
    },
    /// Start a submitted job.
    Start { job_id: String },
    /// Cancel a job.
    Cancel { job_id: String },
    /// Print a job's status as JSON-like text.
    Status { job_id: String },
    /// Watch a job's progress until it ends.
    Watch { job_id: String },
    /// Write a job's report (spec, privacy spent, rounds, evaluation with
    /// intervals that include the DP noise) from the coordinator's state folder.
    Report {
        job_id: String,
        /// The folder `serve --state-dir` uses.
        #[arg(long, default_value = "veil-coordinator-state")]
        state_dir: PathBuf,
        /// Where to write the report.
        #[arg(long)]
        out: PathBuf,
        /// Write the report's content as JSON instead of HTML.
        #[arg(long)]
        json: bool,
    },
    /// Download a finished job's model to one file.
    FetchModel {
        job_id: String,
        /// Where to write the model file.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum CaCommand {
    /// Create the federation CA in a new folder.
    Init {
        #[arg(long)]
        ca_dir: PathBuf,
        /// The federation's name.
        #[arg(long)]
        name: String,
        /// Validity in days.
        #[arg(long, default_value_t = 3650)]
        days: u64,
    },
    /// Issue a certificate and a new key for a member, into its folder.
    Issue {
        #[arg(long)]
        ca_dir: PathBuf,
        /// coordinator, node, operator or auditor.
        #[arg(long)]
        role: Role,
        /// The member's name (a node's id).
        #[arg(long)]
        name: String,
        /// Host names the coordinator's certificate is valid for.
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: u64,
        /// The member folder to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Revoke a certificate by serial; the coordinator refuses it at once.
    Revoke {
        #[arg(long)]
        ca_dir: PathBuf,
        /// The serial, as `ca issue` printed it.
        #[arg(long)]
        serial: Serial,
        /// key-compromise, superseded, cessation-of-operation or unspecified.
        #[arg(long, default_value = "unspecified")]
        reason: RevocationReason,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify the hash chain, every signature and the head; name any
    /// modification, deletion, insertion, reordering or truncation.
    Verify {
        /// The audit log (`audit.log` in the coordinator's state folder).
        #[arg(long)]
        log: PathBuf,
        /// The coordinator's audit public key file (`audit-public.key`).
        #[arg(long)]
        public_key: PathBuf,
    },
    /// Verify the log, then check a node's receipts against it: each must be
    /// signed by the coordinator and match the entry it was issued for.
    Reconcile {
        #[arg(long)]
        log: PathBuf,
        #[arg(long)]
        public_key: PathBuf,
        /// The node's receipt file (`receipts.jsonl` in its state folder).
        #[arg(long)]
        receipts: PathBuf,
    },
    /// Verify, then print a report of the log (jobs, rounds, ε charged,
    /// refusals, vetoes, authentication failures).
    Report {
        #[arg(long)]
        log: PathBuf,
        #[arg(long)]
        public_key: PathBuf,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Empirical privacy test of a job (auditor role, docs/privacy-audit.md):
    /// the partner's node trains on canaries from the kit, and the exported
    /// model's fit to them gives a lower bound on ε beside the accountant's.
    PrivacyTest {
        /// The job file (TOML); it must be a binary task.
        job_file: PathBuf,
        /// The audited partner's node id.
        #[arg(long)]
        partner: String,
        /// The kit file: created (owner-only) when absent, for the auditor
        /// to hand to the partner out of band; reused when present.
        #[arg(long)]
        kit: PathBuf,
        /// Canaries in a new kit (must match an existing kit's if given).
        #[arg(long)]
        canaries: Option<u64>,
        /// Confidence of the lower bounds.
        #[arg(long, default_value_t = 0.95)]
        confidence: f64,
        /// Longest wait for the job to finish, in seconds.
        #[arg(long, default_value_t = 3600)]
        timeout_secs: u64,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn run_audit(command: AuditCommand) -> anyhow::Result<()> {
    let (log, public_key_path, json) = match &command {
        AuditCommand::Verify { log, public_key }
        | AuditCommand::Reconcile {
            log, public_key, ..
        } => (log, public_key, None),
        AuditCommand::Report {
            log,
            public_key,
            json,
        } => (log, public_key, Some(*json)),
        AuditCommand::PrivacyTest { .. } => {
            anyhow::bail!("privacy-test talks to the coordinator: it is run by main")
        }
    };
    let key_text = std::fs::read_to_string(public_key_path)
        .with_context(|| format!("cannot read {}", public_key_path.display()))?;
    let public_key = AuditPublicKey::from_hex(key_text.trim())
        .with_context(|| format!("{} is not an audit public key", public_key_path.display()))?;
    let head = Head::read(&head_path_for(log))?;
    let report = verify_log_file(log, &public_key, head.as_ref())
        .with_context(|| format!("audit log {} does NOT verify", log.display()))?;
    if let AuditCommand::Reconcile { receipts, .. } = &command {
        let receipts = ReceiptStore::read_all(receipts)?;
        let outcome = reconcile(&receipts, &report.entries, &public_key);
        for finding in &outcome.findings {
            println!("MISMATCH: {finding}");
        }
        println!(
            "{} of {} receipts match the log ({} entries verified)",
            outcome.matched,
            receipts.len(),
            report.entries.len()
        );
        anyhow::ensure!(
            outcome.is_consistent(),
            "{} receipts disagree with the log",
            outcome.findings.len()
        );
        return Ok(());
    }
    match json {
        None => println!(
            "{}: {} entries verified, chain intact, signed by {public_key}",
            log.display(),
            report.entries.len()
        ),
        Some(true) => println!("{}", export_report(&report.entries).to_json()),
        Some(false) => println!("{}", export_report(&report.entries).to_text()),
    }
    Ok(())
}

/// The operator's (or auditor's) TLS identity, unless plaintext was asked for.
fn member_tls(cli: &Cli) -> anyhow::Result<Option<ClientTls>> {
    match (&cli.tls_dir, cli.insecure_dev) {
        (Some(dir), _) => Ok(Some(MemberFiles::in_folder(dir, &cli.member).client()?)),
        (None, true) => Ok(None),
        (None, false) => anyhow::bail!(
            "no --tls-dir given: pass the member folder from `coordinator ca issue`, or --insecure-dev for a plaintext development coordinator"
        ),
    }
}

fn run_ca(command: CaCommand) -> anyhow::Result<()> {
    let days = |days: u64| Validity::starting_now(Duration::from_secs(days * 86_400));
    match command {
        CaCommand::Init {
            ca_dir,
            name,
            days: lifetime,
        } => {
            let ca = FederationCa::create(&name, days(lifetime))?;
            ca.save(&ca_dir)?;
            println!(
                "created the CA of federation '{name}' in {}",
                ca_dir.display()
            );
        }
        CaCommand::Issue {
            ca_dir,
            role,
            name,
            hosts,
            days: lifetime,
            out,
        } => {
            let ca = FederationCa::load(&ca_dir)?;
            let request = if role == Role::Coordinator {
                CertificateRequest::coordinator(name, hosts, days(lifetime))
            } else {
                CertificateRequest::member(role, name, days(lifetime))
            };
            let (files, issued) = MemberFiles::issue_into(&ca, &request, &out)?;
            // The coordinator records the issuance in its audit log from here.
            IssuanceJournal::at(ca_dir.join(ISSUED_FILE)).record(&issued)?;
            println!(
                "issued {role} '{}' serial {} -> {}",
                issued.name,
                issued.serial,
                files.certificate.display()
            );
        }
        CaCommand::Revoke {
            ca_dir,
            serial,
            reason,
        } => {
            let list = RevocationList::open(ca_dir.join(REVOCATIONS_FILE))?;
            list.revoke(&serial, reason)?;
            println!("revoked {serial} ({reason})");
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    veil_logging::init(cli.log_json);
    let tls = match &cli.command {
        Command::Audit(AuditCommand::PrivacyTest { .. }) => member_tls(&cli)?,
        Command::Serve { .. } | Command::Ca(_) | Command::Audit(_) | Command::Report { .. } => None,
        _ => member_tls(&cli)?,
    };
    let tls = tls.as_ref();
    match cli.command {
        Command::Ca(command) => run_ca(command),
        Command::Audit(AuditCommand::PrivacyTest {
            job_file,
            partner,
            kit,
            canaries,
            confidence,
            timeout_secs,
            json,
        }) => {
            let mut client = operator::connect(&cli.coordinator, tls).await?;
            let config = coordinator::privacy_test::PrivacyTestConfig {
                partner,
                kit_path: kit,
                canaries,
                confidence,
                deadline: Duration::from_secs(timeout_secs),
            };
            let report =
                coordinator::privacy_test::run_privacy_test(&mut client, &job_file, &config)
                    .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.to_text());
            }
            anyhow::ensure!(
                !report.bound_violated,
                "the lower bound exceeds the accountant's ε"
            );
            Ok(())
        }
        Command::Audit(command) => run_audit(command),
        Command::Serve {
            listen,
            state_dir,
            revocations,
            metrics,
        } => {
            let metrics = match metrics {
                Some(address) => {
                    let mut registry = veil_metrics::Registry::default();
                    let metrics = CoordinatorMetrics::register(&mut registry);
                    veil_metrics::spawn_endpoint(address, registry).await?;
                    Some(std::sync::Arc::new(metrics))
                }
                None => None,
            };
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            let shutdown = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            let base = match (&cli.tls_dir, cli.insecure_dev) {
                (Some(dir), _) => {
                    let revocations = RevocationList::open(
                        revocations.unwrap_or_else(|| dir.join(REVOCATIONS_FILE)),
                    )?;
                    let files = MemberFiles::in_folder(dir, "coordinator");
                    CoordinatorConfig::mtls(files.server(revocations)?)
                }
                (None, true) => CoordinatorConfig::insecure_development(),
                (None, false) => anyhow::bail!(
                    "no --tls-dir given: pass the coordinator's folder from `coordinator ca issue --role coordinator --name coordinator`, or --insecure-dev to serve plaintext for development"
                ),
            };
            let config = CoordinatorConfig {
                state_dir: Some(state_dir),
                metrics,
                ..base
            };
            coordinator::run(config, listener, shutdown).await
        }
        Command::Submit {
            job_file,
            start,
            watch,
        } => {
            let spec = operator::read_job_file(&job_file)?;
            let mut client = operator::connect(&cli.coordinator, tls).await?;
            let job_id = operator::submit(&mut client, spec.clone()).await?;
            println!("{job_id}");
            // Standard error: standard output stays the job id alone, for scripts.
            for line in operator::planned_epsilon_lines(&spec)? {
                eprintln!("{line}");
            }
            if start || watch {
                operator::start(&mut client, &job_id).await?;
            }
            if watch {
                let status =
                    operator::watch(&mut client, &job_id, operator::progress_printer()).await?;
                eprintln!();
                report_end(&status)?;
            }
            Ok(())
        }
        Command::Start { job_id } => {
            let mut client = operator::connect(&cli.coordinator, tls).await?;
            let status = operator::start(&mut client, &job_id).await?;
            println!("{}", operator::progress_line(&status));
            Ok(())
        }
        Command::Cancel { job_id } => {
            let mut client = operator::connect(&cli.coordinator, tls).await?;
            client
                .cancel_job(v1::JobRef {
                    job_id: job_id.clone(),
                })
                .await
                .map_err(|s| anyhow::anyhow!("cannot cancel {job_id}: {}", s.message()))?;
            println!("cancelled {job_id}");
            Ok(())
        }
        Command::Status { job_id } => {
            let mut client = operator::connect(&cli.coordinator, tls).await?;
            let status = client
                .get_job_status(v1::JobRef {
                    job_id: job_id.clone(),
                })
                .await
                .map_err(|s| anyhow::anyhow!("{job_id}: {}", s.message()))?
                .into_inner();
            let state = v1::JobState::try_from(status.state)
                .map_or("unknown".to_owned(), |state| {
                    state.as_str_name().to_lowercase()
                });
            println!(
                "{} ({}): {}  {}",
                status.job_id,
                status.job_name,
                state.trim_start_matches("job_state_"),
                operator::progress_line(&status)
            );
            if !status.failure_reason.is_empty() {
                println!("reason: {}", status.failure_reason);
            }
            for line in operator::spend_lines(&status) {
                println!("{line}");
            }
            Ok(())
        }
        Command::Watch { job_id } => {
            let mut client = operator::connect(&cli.coordinator, tls).await?;
            let status =
                operator::watch(&mut client, &job_id, operator::progress_printer()).await?;
            eprintln!();
            report_end(&status)
        }
        Command::Report {
            job_id,
            state_dir,
            out,
            json,
        } => {
            let now = chrono::Utc::now();
            let input = coordinator::report::load_report(
                &state_dir,
                &job_id,
                now.format("%Y-%m-%d %H:%M UTC").to_string(),
                now.timestamp(),
            )?;
            let text = if json {
                veil_report::render_json(&input)?
            } else {
                veil_report::render_html(&input)
            };
            std::fs::write(&out, text).with_context(|| format!("writing {}", out.display()))?;
            println!("wrote {}", out.display());
            Ok(())
        }
        Command::FetchModel { job_id, out } => {
            let mut client = operator::connect(&cli.coordinator, tls).await?;
            let model = operator::fetch_model(&mut client, &job_id).await?;
            model.write(&out)?;
            println!("wrote {} (sha256 {})", out.display(), model.digest_hex());
            Ok(())
        }
    }
}

fn report_end(status: &v1::JobStatus) -> anyhow::Result<()> {
    for line in operator::spend_lines(status) {
        eprintln!("{line}");
    }
    match v1::JobState::try_from(status.state) {
        Ok(v1::JobState::Succeeded) => {
            println!(
                "{} succeeded: {}",
                status.job_id,
                operator::progress_line(status)
            );
            Ok(())
        }
        _ => anyhow::bail!(
            "{} ended unsuccessfully: {}",
            status.job_id,
            status.failure_reason
        ),
    }
}
