//! The `client-node` binary: run a node, or score customers locally.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use chrono::NaiveDate;
use clap::{Parser, Subcommand};
use client_node::config::NodeConfig;
use client_node::node::RunOptions;
use client_node::score::ScoringCutoff;
use veil_job::JobSpec;
use veil_job::file::JobFile;
use veil_metrics::NodeMetrics;

#[derive(Parser)]
#[command(
    name = "client-node",
    about = "Veil client node: federated training next to a partner's data"
)]
struct Cli {
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true)]
    log_json: bool,
    /// Export the job, round and phase spans to this OpenTelemetry collector over OTLP/gRPC
    /// (`http://host:4317`, plaintext: a collector on this host or a trusted network). Off
    /// unless given.
    #[arg(long, global = true, env = "VEIL_OTLP_ENDPOINT", value_name = "URL")]
    otlp_endpoint: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Connect to the coordinator and take part in jobs until stopped.
    Run {
        /// The node configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Serve Prometheus metrics at `http://ADDR/metrics` (plain HTTP;
        /// off by default). See docs/metrics.md.
        #[arg(long, value_name = "ADDR")]
        metrics: Option<SocketAddr>,
    },
    /// Score this partner's customers with an exported model, locally.
    Score {
        /// The node configuration file (for the data source).
        #[arg(long)]
        config: PathBuf,
        /// The exported model file.
        #[arg(long)]
        model: PathBuf,
        /// Score as of this date (YYYY-MM-DD, the last day of history).
        /// Default: the cutoff the model was trained with; another date is
        /// refused unless --different-cutoff is given.
        #[arg(long)]
        cutoff: Option<String>,
        /// Score as of a --cutoff different from the model's, on purpose.
        #[arg(long, requires = "cutoff")]
        different_cutoff: bool,
        /// Output CSV (`customer_id,score`).
        #[arg(long)]
        out: PathBuf,
    },
    /// Assign this partner's customers to the federation's shared segments,
    /// locally: `customer_id,segment,distance` for every customer.
    Segment {
        /// The node configuration file (for the data source).
        #[arg(long)]
        config: PathBuf,
        /// The segmentation result (`coordinator export` of a segment job).
        #[arg(long)]
        model: PathBuf,
        /// Which fitted number of segments to use; needed when the job
        /// fitted several.
        #[arg(long)]
        k: Option<usize>,
        /// Output CSV.
        #[arg(long)]
        out: PathBuf,
    },
    /// Score this partner's customers 1–5 on recency, frequency and
    /// monetary value against the federation's shared cut points, with the
    /// standard RFM segment names, locally.
    Rfm {
        /// The node configuration file (for the data source).
        #[arg(long)]
        config: PathBuf,
        /// The RFM result (`coordinator export` of an rfm job).
        #[arg(long)]
        model: PathBuf,
        /// A segment-naming table (TOML, `[[segments]]` with name, recency
        /// and frequency score ranges); default: the standard eleven.
        #[arg(long)]
        segments: Option<PathBuf>,
        /// Output CSV.
        #[arg(long)]
        out: PathBuf,
    },
    /// Expected purchases, probability alive, expected spend and discounted
    /// lifetime value of every customer of this partner, locally, from the
    /// federation's fitted BG/NBD and Gamma-Gamma models.
    Clv {
        /// The node configuration file (for the data source).
        #[arg(long)]
        config: PathBuf,
        /// The lifetime-value result (`coordinator export` of the job).
        #[arg(long)]
        model: PathBuf,
        /// Days ahead to predict and value.
        #[arg(long)]
        horizon_days: u32,
        /// Discount rate per 30-day period (0.01 is 1% a month).
        #[arg(long)]
        discount_rate: f64,
        /// Output CSV.
        #[arg(long)]
        out: PathBuf,
    },
    /// Train a job's model on this partner's own customers only, with no
    /// coordinator: the baseline the federation is measured against.
    TrainLocal {
        /// The node configuration file (for the data source).
        #[arg(long)]
        config: PathBuf,
        /// The job file (TOML), as an operator would submit it.
        #[arg(long)]
        job: PathBuf,
        /// Where to write the model file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Measure a model file (federated or local) on this partner's own
    /// held-out customers, split as its job splits them.
    Evaluate {
        /// The node configuration file (for the data source).
        #[arg(long)]
        config: PathBuf,
        /// The model file.
        #[arg(long)]
        model: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Kept until `main` returns: dropping it sends the last spans.
    let _logging = veil_logging::install(&veil_logging::LogSettings {
        json: cli.log_json,
        default_level: "info".to_owned(),
        otlp_endpoint: cli.otlp_endpoint.clone(),
        service_name: "veil-client-node".to_owned(),
    })?;
    match cli.command {
        Command::Run { config, metrics } => {
            let config = NodeConfig::read(&config)?;
            let shutdown = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            let mut options = RunOptions::default();
            if let Some(address) = metrics {
                let mut registry = veil_metrics::Registry::default();
                options.metrics = Some(Arc::new(NodeMetrics::register(&mut registry)));
                veil_metrics::spawn_endpoint(address, registry).await?;
            }
            client_node::node::run_with(config, options, shutdown).await
        }
        Command::Score {
            config,
            model,
            cutoff,
            different_cutoff,
            out,
        } => {
            let config = NodeConfig::read(&config)?;
            let cutoff = match cutoff {
                None => ScoringCutoff::AsTrained,
                Some(text) => {
                    let date = NaiveDate::parse_from_str(&text, "%Y-%m-%d").with_context(|| {
                        format!(
                            "--cutoff '{text}' is not a YYYY-MM-DD date (the last day of history)"
                        )
                    })?;
                    if different_cutoff {
                        ScoringCutoff::Different(date)
                    } else {
                        ScoringCutoff::MustMatchModel(date)
                    }
                }
            };
            let summary = client_node::score::score(&model, &config.data, cutoff, &out)?;
            println!(
                "scored {} customers as of {} into {} ({} rows rejected while reading)",
                summary.customers_scored,
                summary.cutoff,
                out.display(),
                summary.rows_rejected
            );
            Ok(())
        }
        Command::Segment {
            config,
            model,
            k,
            out,
        } => {
            let config = NodeConfig::read(&config)?;
            let assigned = client_node::analysis::segment_customers(&model, k, &config.data, &out)?;
            println!(
                "assigned {} customers into {} ({} rows rejected while reading)",
                assigned.customers,
                out.display(),
                assigned.rows_rejected
            );
            for (segment, customers) in &assigned.per_segment {
                println!("segment {segment:<4}{customers:>8} customers");
            }
            Ok(())
        }
        Command::Rfm {
            config,
            model,
            segments,
            out,
        } => {
            let config = NodeConfig::read(&config)?;
            let table = client_node::analysis::rfm_segment_table(segments.as_deref())?;
            let scored = client_node::analysis::rfm_customers(&model, &table, &config.data, &out)?;
            println!(
                "scored {} customers into {} ({} rows rejected while reading)",
                scored.customers,
                out.display(),
                scored.rows_rejected
            );
            for (segment, customers) in &scored.per_segment {
                println!("{segment:<22}{customers:>8} customers");
            }
            Ok(())
        }
        Command::Clv {
            config,
            model,
            horizon_days,
            discount_rate,
            out,
        } => {
            let config = NodeConfig::read(&config)?;
            let valued = client_node::lifetime::clv_customers(
                &model,
                horizon_days,
                discount_rate,
                &config.data,
                &out,
            )?;
            println!(
                "valued {} customers into {} (total discounted value {:.2} over {horizon_days} days; {} rows rejected while reading)",
                valued.customers,
                out.display(),
                valued.total_value,
                valued.rows_rejected
            );
            Ok(())
        }
        Command::TrainLocal { config, job, out } => {
            let config = NodeConfig::read(&config)?;
            let text = std::fs::read_to_string(&job)
                .with_context(|| format!("cannot read job file {}", job.display()))?;
            let wire = JobFile::parse(&text)
                .with_context(|| format!("job file {}", job.display()))?
                .to_wire();
            let spec =
                JobSpec::from_wire(&wire).with_context(|| format!("job file {}", job.display()))?;
            let model = client_node::local::train_local(&spec, &config.data)?;
            model.write(&out)?;
            println!(
                "trained '{}' on this partner's customers only ({} rounds x {} local epochs); model in {}",
                spec.name,
                spec.rounds,
                spec.training.local_epochs,
                out.display()
            );
            Ok(())
        }
        Command::Evaluate { config, model } => {
            let config = NodeConfig::read(&config)?;
            let evaluation = client_node::local::evaluate_local(&model, &config.data)?;
            println!("{} held-out customers", evaluation.customers);
            for (name, value) in [
                ("auc", evaluation.auc),
                ("mean loss", evaluation.mean_loss),
                ("rmse", evaluation.rmse),
            ] {
                if let Some(value) = value {
                    println!("{name:<10}{value:.4}");
                }
            }
            Ok(())
        }
    }
}
