//! `veil-demo`: a complete local federation on generated data, in one command.

use std::path::PathBuf;

use clap::Parser;
use veil_demo::{DemoConfig, run_demo};

#[derive(Parser)]
#[command(
    name = "veil-demo",
    about = "Run a local Veil federation: a coordinator and 3 nodes on 127.0.0.1"
)]
struct Cli {
    /// Where data, configs, the model and scores are written.
    #[arg(long, default_value = "demo-output")]
    output_dir: PathBuf,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
    /// Also write the figures of the closing table to this file as JSON.
    #[arg(long, value_name = "FILE")]
    summary_json: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    veil_logging::init_with_default(cli.log_json, "warn");
    let config = DemoConfig::standard(cli.output_dir);
    let summary_json = cli.summary_json;
    eprintln!(
        "Veil demo: {} partners, output in {}",
        config.partners,
        config.output_dir.display()
    );
    let report = run_demo(&config, coordinator::operator::progress_printer()).await?;
    eprintln!();
    println!(
        "federated job finished in {:.1} s",
        report.federation_seconds
    );
    println!("{}", report.table());
    println!(
        "segmentation job finished in {:.1} s",
        report.segmentation_seconds
    );
    println!("{}", report.segment_table());
    println!("model:    {}", report.model_path.display());
    println!("scores:   {}", report.scores_path.display());
    println!("segments: {}", report.segments_path.display());
    println!(
        "reports:  {} and {}",
        report.report_path.display(),
        report.segments_report_path.display()
    );
    if let Some(path) = summary_json {
        std::fs::write(&path, report.summary_json())
            .map_err(|error| anyhow::anyhow!("cannot write {}: {error}", path.display()))?;
    }
    Ok(())
}
