//! `veil-privacy`: prints ε for a training schedule, or the noise it needs, as JSON.

use std::process::ExitCode;

use clap::Parser;

/// Exit status when the answer is ε = ∞ (no guarantee): the JSON is still
/// printed, but a script checking only the status must not proceed.
const NO_FINITE_GUARANTEE: u8 = 3;

fn main() -> ExitCode {
    // clap prints its own message and exits with status 2 on bad syntax.
    let cli = veil_privacy_accounting::cli::Cli::parse();
    match veil_privacy_accounting::cli::run(&cli) {
        Ok(output) => {
            println!("{}", output.json);
            match output.no_finite_guarantee {
                Some(message) => {
                    eprintln!("veil-privacy: error: {message}");
                    ExitCode::from(NO_FINITE_GUARANTEE)
                }
                None => ExitCode::SUCCESS,
            }
        }
        Err(error) => {
            eprintln!("veil-privacy: error: {error}");
            ExitCode::from(2)
        }
    }
}
