//! Writes every fuzz target's seeds and past crashes into `DIR/<target>/`, the corpus folders
//! `scripts/fuzz` hands to libFuzzer: `write_seeds DIR`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::args().nth(1).ok_or("usage: write_seeds DIR")?);
    let regressions = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
    for target in veil_fuzz_targets::TARGETS {
        let folder = root.join(target.name);
        std::fs::create_dir_all(&folder)?;
        for (index, seed) in veil_fuzz_targets::seeds::seeds(target.name)
            .iter()
            .enumerate()
        {
            std::fs::write(folder.join(format!("seed-{index}")), seed)?;
        }
        if let Ok(entries) = std::fs::read_dir(regressions.join(target.name)) {
            for entry in entries {
                let entry = entry?;
                std::fs::copy(entry.path(), folder.join(entry.file_name()))?;
            }
        }
    }
    Ok(())
}
