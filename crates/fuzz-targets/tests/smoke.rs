//! The fuzz targets' smoke run, part of `scripts/test`: every target over its seeds, a fixed
//! number of seeded mutations of them (bit flips, truncations, splices, repeated and random
//! bytes) and every input a fuzzer once crashed (`regressions/<target>/`). Any panic fails the
//! test and names the target and input. Coverage-guided runs are `scripts/fuzz`.

use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use veil_fuzz_targets::{TARGETS, Target, seeds::seeds};

/// Mutated inputs per target: enough to pass every early check of every parser a few hundred
/// times, small enough to take seconds.
const MUTATIONS: usize = 400;

fn mutate(rng: &mut ChaCha8Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut input = if seeds.is_empty() {
        Vec::new()
    } else {
        seeds[rng.random_range(0..seeds.len())].clone()
    };
    for _ in 0..rng.random_range(1..4) {
        match rng.random_range(0..6) {
            0 if !input.is_empty() => {
                let at = rng.random_range(0..input.len());
                input[at] ^= 1 << rng.random_range(0..8);
            }
            1 if !input.is_empty() => {
                input.truncate(rng.random_range(0..input.len()));
            }
            2 if !input.is_empty() => {
                let at = rng.random_range(0..input.len());
                input[at] = [0, 1, 0x7f, 0x80, 0xff][rng.random_range(0..5)];
            }
            3 if !seeds.is_empty() => {
                let other = &seeds[rng.random_range(0..seeds.len())];
                let at = rng.random_range(0..=input.len());
                let from = rng.random_range(0..=other.len());
                input.splice(at..at, other[from..].iter().copied());
            }
            4 if !input.is_empty() => {
                let from = rng.random_range(0..input.len());
                let to = rng.random_range(from..=input.len());
                let copy = input[from..to].to_vec();
                input.extend(copy);
            }
            _ => {
                let extra = rng.random_range(0..32);
                input.extend((0..extra).map(|_| rng.random::<u8>()));
            }
        }
    }
    input
}

/// Runs one input; a panic fails the test, naming the target and the input, which is also
/// written out whole so it can become a regression input.
fn run(target: Target, input: &[u8], what: &str) {
    let outcome = std::panic::catch_unwind(|| (target.run)(input));
    if outcome.is_err() {
        let kept = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "{}-{}.bin",
            target.name,
            what.replace(' ', "-")
        ));
        let written = std::fs::write(&kept, input).is_ok();
        panic!(
            "target {} panicked on {what} ({} bytes{}): {:02x?}",
            target.name,
            input.len(),
            if written {
                format!(", written to {}", kept.display())
            } else {
                String::new()
            },
            &input[..input.len().min(64)]
        );
    }
}

fn regressions(target: &str) -> Vec<(String, Vec<u8>)> {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("regressions")
        .join(target);
    let Ok(entries) = std::fs::read_dir(&folder) else {
        return Vec::new();
    };
    let mut inputs: Vec<(String, Vec<u8>)> = entries
        .filter_map(Result::ok)
        .map(|entry| {
            let bytes = std::fs::read(entry.path()).unwrap();
            (entry.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    inputs.sort();
    inputs
}

#[test]
fn every_target_survives_its_seeds_mutations_and_past_crashes() {
    for (index, target) in TARGETS.iter().enumerate() {
        let seeds = seeds(target.name);
        assert!(!seeds.is_empty(), "{} has no seeds", target.name);
        for seed in &seeds {
            run(*target, seed, "a seed");
        }
        for (name, input) in regressions(target.name) {
            run(*target, &input, &format!("regression {name}"));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(index as u64);
        for round in 0..MUTATIONS {
            let input = mutate(&mut rng, &seeds);
            run(*target, &input, &format!("mutation {round}"));
        }
    }
}

#[test]
fn the_seeds_are_accepted_inputs_not_just_bytes() {
    // A seed that its own parser rejects would start every mutation at the first check.
    let job = String::from_utf8(seeds("job_toml").remove(0)).unwrap();
    assert!(veil_job::file::JobFile::parse(&job).is_ok());
    let model = seeds("model_file").remove(0);
    assert!(veil_job::export::ExportedModel::from_bytes(&model, "seed").is_ok());
    let log = seeds("audit_log").remove(0);
    let (key, contents) = log.split_at(32);
    let key = veil_audit_log::AuditPublicKey(key.try_into().unwrap());
    let report = veil_audit_log::verify_log_bytes(contents, &key, None).unwrap();
    assert_eq!(report.entries.len(), 2);
    let parquet_seeds = seeds("parquet_ingestion");
    assert_eq!(parquet_seeds.len(), 2);
    let folder = tempfile::tempdir().unwrap();
    for (index, seed) in parquet_seeds.iter().enumerate() {
        let path = folder.path().join(format!("seed-{index}.parquet"));
        std::fs::write(&path, seed).unwrap();
        let mut config = veil_partner_data::PartnerDataConfig::from(
            veil_behaviour_features::CsvSource::new(folder.path().join("unused.csv")),
        );
        config.transactions.input = veil_partner_data::Input::Parquet { path };
        let loaded = veil_partner_data::load_partner_data(&config)
            .unwrap_or_else(|error| panic!("Parquet seed {index}: {error}"));
        assert!(loaded.log.n_transactions() > 0, "Parquet seed {index}");
    }
}
