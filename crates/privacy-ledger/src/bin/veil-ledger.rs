//! `veil-ledger`: prints a privacy ledger's auditor report, or reconciles two ledgers.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // clap prints its own message and exits with status 2 on bad syntax.
    let cli = veil_privacy_ledger::cli::Cli::parse();
    // The default `--as-of`: now. A clock before 1970 reads as 0.
    let now_unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64);
    match veil_privacy_ledger::cli::run(&cli, now_unix_s) {
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
