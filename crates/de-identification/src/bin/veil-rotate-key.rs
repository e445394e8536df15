//! `veil-rotate-key <key file>`: the operator's command for rotating a node's pseudonymisation
//! key (docs/de-identification.md, "Key management and rotation"). Stop the node first; the
//! previous key is kept beside the new one as `<key file>.retired-YYYY-MM-DD`, owner-only.

use std::path::PathBuf;
use std::process::ExitCode;

use veil_de_identification::PseudonymKey;

const USAGE: &str = "usage: veil-rotate-key <key file>\n\
    Moves the key to <key file>.retired-<today> and writes a new key at <key file> (mode 0600).\n\
    Stop the node first: pseudonyms after rotation do not match earlier ones.";

fn main() -> ExitCode {
    let arguments: Vec<_> = std::env::args_os().skip(1).collect();
    let [path] = arguments.as_slice() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    if path == "-h" || path == "--help" {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let path = PathBuf::from(path);
    // The retired key is named after the UTC date so names sort and never depend on the
    // operator's time zone.
    let today = chrono::Utc::now().date_naive();
    match PseudonymKey::rotate(&path, today) {
        Ok(rotated) => {
            match rotated.retired_key_path {
                Some(retired) => println!(
                    "new key written to {}; previous key moved to {}",
                    path.display(),
                    retired.display()
                ),
                None => println!(
                    "no key existed at {}; a new key was written",
                    path.display()
                ),
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("cannot rotate the key at {}: {error}", path.display());
            ExitCode::FAILURE
        }
    }
}
