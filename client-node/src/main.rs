//! The `client-node` binary: run a node, or score customers locally.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use chrono::NaiveDate;
use clap::{Parser, Subcommand};
use client_node::config::NodeConfig;
use client_node::node::RunOptions;
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
        /// Score as of this date (YYYY-MM-DD).
        #[arg(long)]
        cutoff: String,
        /// Output CSV (`customer_id,score`).
        #[arg(long)]
        out: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    coordinator::logging::init(cli.log_json);
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
            out,
        } => {
            let config = NodeConfig::read(&config)?;
            let cutoff = NaiveDate::parse_from_str(&cutoff, "%Y-%m-%d")
                .with_context(|| format!("--cutoff '{cutoff}' is not a YYYY-MM-DD date"))?;
            let summary = client_node::score::score(&model, &config.data, cutoff, &out)?;
            println!(
                "scored {} customers into {} ({} rows rejected while reading)",
                summary.customers_scored,
                out.display(),
                summary.rows_rejected
            );
            Ok(())
        }
    }
}
