//! `veil-privacy`: prints ε for a training schedule, or the noise it needs, as JSON.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // clap prints its own message and exits with status 2 on bad syntax.
    let cli = veil_accounting::cli::Cli::parse();
    match veil_accounting::cli::run(&cli) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("veil-privacy: error: {error}");
            ExitCode::from(2)
        }
    }
}
