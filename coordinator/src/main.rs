//! The `coordinator` binary: serve, or act as the operator's client.
//! Argument parsing only: every command is a call into the `coordinator` library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use coordinator::audit_admin::{self, ReportFormat};
use coordinator::ca_admin::{self, IssueRequest};
use coordinator::console::{ConsoleConfig, ConsoleIdentity};
use coordinator::privacy_test::{PrivacyTestConfig, run_privacy_test};
use coordinator::{CoordinatorConfig, operator};
use veil_console::token::ConsoleRole;
use veil_pki::{ClientTls, MemberFiles, RevocationReason, Role, Serial};

#[derive(Parser)]
#[command(name = "coordinator", about = "Veil coordinator and operator commands")]
struct Cli {
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true)]
    log_json: bool,
    /// Export the job, round and phase spans to this OpenTelemetry collector over OTLP/gRPC
    /// (`http://host:4317`, plaintext: a collector on this host or a trusted network). Off
    /// unless given.
    #[arg(long, global = true, env = "VEIL_OTLP_ENDPOINT", value_name = "URL")]
    otlp_endpoint: Option<String>,
    #[command(flatten)]
    connection: Connection,
    #[command(subcommand)]
    command: Command,
}

/// Where the coordinator is and who is talking to it (or, for `serve`, who it is).
#[derive(clap::Args)]
struct Connection {
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
        /// Serve the web console at `https://ADDR/` (off by default). See
        /// docs/console.md.
        #[arg(long, value_name = "ADDR")]
        console: Option<SocketAddr>,
        #[command(flatten)]
        console_tls: ConsoleTls,
    },
    /// Print a one-time log-in link to the web console, signed with the
    /// console key in the state folder.
    ConsoleLogin {
        /// operator (may cancel jobs) or auditor (reads everything, changes nothing).
        #[arg(long)]
        role: ConsoleRole,
        /// The person's name, as the audit log will show it.
        #[arg(long)]
        name: String,
        /// How long the link (and the session it opens) lasts: 8h, 30m, 1d.
        #[arg(long, default_value = "8h")]
        valid: String,
        /// The console's address as the person's browser reaches it.
        #[arg(long, default_value = "https://127.0.0.1:8443")]
        url: String,
        /// The folder `serve --state-dir` uses.
        #[arg(long, default_value = "veil-coordinator-state")]
        state_dir: PathBuf,
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
    /// Write a finished basket-rules job's rules as CSV (support,
    /// confidence and lift with intervals for the DP noise), from the
    /// coordinator's state folder.
    Rules {
        job_id: String,
        /// The folder `serve --state-dir` uses.
        #[arg(long, default_value = "veil-coordinator-state")]
        state_dir: PathBuf,
        /// Where to write the CSV.
        #[arg(long)]
        out: PathBuf,
    },
    /// Download a finished job's model to one file.
    FetchModel {
        job_id: String,
        /// Where to write the model file.
        #[arg(long)]
        out: PathBuf,
    },
}

/// The console's web certificate.
#[derive(clap::Args)]
struct ConsoleTls {
    /// PEM certificate chain for the console (ECDSA or RSA, from a PKI the
    /// browsers trust). Without it the console creates a self-signed one.
    #[arg(long, requires = "console_key")]
    console_certificate: Option<PathBuf>,
    /// The PEM private key of `--console-certificate`.
    #[arg(long, requires = "console_certificate")]
    console_key: Option<PathBuf>,
    /// Host names a self-signed console certificate names (besides
    /// localhost and the listening address).
    #[arg(long = "console-host")]
    console_hosts: Vec<String>,
}

impl ConsoleTls {
    fn identity(self, address: SocketAddr) -> ConsoleIdentity {
        match (self.console_certificate, self.console_key) {
            (Some(certificate), Some(key)) => ConsoleIdentity::Files { certificate, key },
            _ => {
                let mut hosts = self.console_hosts;
                hosts.extend(["localhost".to_owned(), address.ip().to_string()]);
                ConsoleIdentity::SelfSigned { hosts }
            }
        }
    }
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

impl Connection {
    /// The operator's (or auditor's) TLS identity, unless plaintext was asked for.
    fn member_tls(&self) -> anyhow::Result<Option<ClientTls>> {
        match (&self.tls_dir, self.insecure_dev) {
            (Some(dir), _) => Ok(Some(MemberFiles::in_folder(dir, &self.member).client()?)),
            (None, true) => Ok(None),
            (None, false) => anyhow::bail!(
                "no --tls-dir given: pass the member folder from `coordinator ca issue`, or --insecure-dev for a plaintext development coordinator"
            ),
        }
    }

    /// A client of the coordinator's operator service, as this member.
    async fn operator_client(&self) -> anyhow::Result<operator::OperatorClient> {
        let tls = self.member_tls()?;
        operator::connect(&self.coordinator, tls.as_ref()).await
    }

    /// The coordinator's own serving configuration.
    fn server_config(&self, revocations: Option<PathBuf>) -> anyhow::Result<CoordinatorConfig> {
        match (&self.tls_dir, self.insecure_dev) {
            (Some(dir), _) => CoordinatorConfig::mtls_from_folder(dir, revocations),
            (None, true) => Ok(CoordinatorConfig::insecure_development()),
            (None, false) => anyhow::bail!(
                "no --tls-dir given: pass the coordinator's folder from `coordinator ca issue --role coordinator --name coordinator`, or --insecure-dev to serve plaintext for development"
            ),
        }
    }
}

fn run_ca(command: CaCommand) -> anyhow::Result<String> {
    match command {
        CaCommand::Init { ca_dir, name, days } => ca_admin::init_ca(&ca_dir, &name, days),
        CaCommand::Issue {
            ca_dir,
            role,
            name,
            hosts,
            days,
            out,
        } => ca_admin::issue_member(
            &ca_dir,
            IssueRequest {
                role,
                name,
                hosts,
                days,
            },
            &out,
        ),
        CaCommand::Revoke {
            ca_dir,
            serial,
            reason,
        } => ca_admin::revoke_member(&ca_dir, &serial, reason),
    }
}

async fn run_audit(command: AuditCommand, connection: &Connection) -> anyhow::Result<String> {
    match command {
        AuditCommand::Verify { log, public_key } => audit_admin::verify(&log, &public_key),
        AuditCommand::Reconcile {
            log,
            public_key,
            receipts,
        } => audit_admin::reconcile_receipts(&log, &public_key, &receipts),
        AuditCommand::Report {
            log,
            public_key,
            json,
        } => {
            let format = if json {
                ReportFormat::Json
            } else {
                ReportFormat::Text
            };
            audit_admin::report(&log, &public_key, format)
        }
        AuditCommand::PrivacyTest {
            job_file,
            partner,
            kit,
            canaries,
            confidence,
            timeout_secs,
            json,
        } => {
            let mut client = connection.operator_client().await?;
            let config = PrivacyTestConfig {
                partner,
                kit_path: kit,
                canaries,
                confidence,
                deadline: Duration::from_secs(timeout_secs),
            };
            let outcome = run_privacy_test(&mut client, &job_file, &config).await?;
            let text = if json {
                serde_json::to_string_pretty(&outcome)?
            } else {
                outcome.to_text()
            };
            anyhow::ensure!(
                !outcome.bound_violated(),
                "{text}\nthe lower bound exceeds the accountant's ε"
            );
            Ok(text)
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Cli {
        log_json,
        otlp_endpoint,
        connection,
        command,
    } = Cli::parse();
    // Kept until `main` returns: dropping it sends the last spans.
    let _logging = veil_logging::install(&veil_logging::LogSettings {
        json: log_json,
        default_level: "info".to_owned(),
        otlp_endpoint,
        service_name: "veil-coordinator".to_owned(),
    })?;
    match command {
        Command::Ca(command) => println!("{}", run_ca(command)?),
        Command::Audit(command) => println!("{}", run_audit(command, &connection).await?),
        Command::Serve {
            listen,
            state_dir,
            revocations,
            metrics,
            console,
            console_tls,
        } => {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            let mut config = connection.server_config(revocations)?;
            if let Some(address) = metrics {
                config = config.with_metrics_endpoint(address).await?;
            }
            if let Some(address) = console {
                config.console = Some(ConsoleConfig::bind(address, console_tls.identity(address))?);
            }
            config.state_dir = Some(state_dir);
            let shutdown = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            coordinator::run(config, listener, shutdown).await?;
        }
        Command::ConsoleLogin {
            role,
            name,
            valid,
            url,
            state_dir,
        } => {
            let valid = coordinator::console::parse_validity(&valid)?;
            println!(
                "{}",
                coordinator::console::login_link(&state_dir, &url, role, &name, valid)?
            );
        }
        Command::Submit {
            job_file,
            start,
            watch,
        } => {
            let spec = operator::read_job_file(&job_file)?;
            let mut client = connection.operator_client().await?;
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
                operator::report_end(&status)?;
            }
        }
        Command::Start { job_id } => {
            let mut client = connection.operator_client().await?;
            let status = operator::start(&mut client, &job_id).await?;
            println!("{}", operator::progress_line(&status));
        }
        Command::Cancel { job_id } => {
            let mut client = connection.operator_client().await?;
            operator::cancel(&mut client, &job_id).await?;
            println!("cancelled {job_id}");
        }
        Command::Status { job_id } => {
            let mut client = connection.operator_client().await?;
            let status = operator::status(&mut client, &job_id).await?;
            println!("{}", operator::status_text(&status));
        }
        Command::Watch { job_id } => {
            let mut client = connection.operator_client().await?;
            let status =
                operator::watch(&mut client, &job_id, operator::progress_printer()).await?;
            eprintln!();
            operator::report_end(&status)?;
        }
        Command::Report {
            job_id,
            state_dir,
            out,
            json,
        } => {
            coordinator::report::write_report(&state_dir, &job_id, &out, json)?;
            println!("wrote {}", out.display());
        }
        Command::Rules {
            job_id,
            state_dir,
            out,
        } => {
            let written = coordinator::rules::write_rules(&state_dir, &job_id, &out)?;
            println!("wrote {written} rules to {}", out.display());
        }
        Command::FetchModel { job_id, out } => {
            let mut client = connection.operator_client().await?;
            let model = operator::fetch_model(&mut client, &job_id).await?;
            model.write(&out)?;
            println!("wrote {} (sha256 {})", out.display(), model.digest_hex());
        }
    }
    Ok(())
}
