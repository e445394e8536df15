//! The `coordinator` binary: serve, or act as the operator's client.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use coordinator::{CoordinatorConfig, logging, operator};
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
        /// Folder of the coordinator's durable state (privacy ledger).
        #[arg(long, default_value = "veil-coordinator-state")]
        state_dir: PathBuf,
    },
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
    /// Download a finished job's model to one file.
    FetchModel {
        job_id: String,
        /// Where to write the model file.
        #[arg(long)]
        out: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    logging::init(cli.log_json);
    match cli.command {
        Command::Serve { listen, state_dir } => {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            let shutdown = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            let config = CoordinatorConfig {
                state_dir: Some(state_dir),
                ..CoordinatorConfig::default()
            };
            coordinator::run(config, listener, shutdown).await
        }
        Command::Submit {
            job_file,
            start,
            watch,
        } => {
            let spec = operator::read_job_file(&job_file)?;
            let mut client = operator::connect(&cli.coordinator).await?;
            let job_id = operator::submit(&mut client, spec).await?;
            println!("{job_id}");
            if start || watch {
                operator::start(&mut client, &job_id).await?;
            }
            if watch {
                let status =
                    operator::watch(&mut client, &job_id, operator::print_progress).await?;
                eprintln!();
                report_end(&status)?;
            }
            Ok(())
        }
        Command::Start { job_id } => {
            let mut client = operator::connect(&cli.coordinator).await?;
            let status = operator::start(&mut client, &job_id).await?;
            println!("{}", operator::progress_line(&status));
            Ok(())
        }
        Command::Cancel { job_id } => {
            let mut client = operator::connect(&cli.coordinator).await?;
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
            let mut client = operator::connect(&cli.coordinator).await?;
            let status = client
                .get_job_status(v1::JobRef {
                    job_id: job_id.clone(),
                })
                .await
                .map_err(|s| anyhow::anyhow!("{job_id}: {}", s.message()))?
                .into_inner();
            println!("{status:#?}");
            Ok(())
        }
        Command::Watch { job_id } => {
            let mut client = operator::connect(&cli.coordinator).await?;
            let status = operator::watch(&mut client, &job_id, operator::print_progress).await?;
            eprintln!();
            report_end(&status)
        }
        Command::FetchModel { job_id, out } => {
            let mut client = operator::connect(&cli.coordinator).await?;
            let model = operator::fetch_model(&mut client, &job_id).await?;
            model.write(&out)?;
            println!("wrote {} (sha256 {})", out.display(), model.digest_hex());
            Ok(())
        }
    }
}

fn report_end(status: &v1::JobStatus) -> anyhow::Result<()> {
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
