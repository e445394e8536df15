//! `veil-ledger`: prints a privacy ledger's auditor report, or reconciles two ledgers.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // clap prints its own message and exits with status 2 on bad syntax.
    let cli = veil_ledger::cli::Cli::parse();
    match veil_ledger::cli::run(&cli) {
        Ok(output) => {
            println!("{}", output.trim_end());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("veil-ledger: error: {error}");
            ExitCode::from(2)
        }
    }
}
