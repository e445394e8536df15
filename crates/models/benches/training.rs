//! Local-training throughput (rows per second) on the flex CPU backend, for comparison with
//! PyTorch via `scripts/bench-training`.
//!
//! A plain `harness = false` bench rather than criterion: one epoch over 100k rows takes
//! seconds, and the figure wanted is rows/second of a whole epoch, best of a few runs.
//! Prints one `RESULT` line per case for the script to parse.

mod common;

use std::time::Instant;

use common::{N_FEATURES, N_ROWS, customers};
use veil_models::{ModelKind, ModelSpec, OptimizerKind, OutputKind, TrainingConfig, train};

fn main() {
    let repeats: usize = std::env::var("VEIL_BENCH_REPEATS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(3);
    let data = customers();
    let cases = [
        ("logistic", ModelKind::LogisticRegression),
        (
            "mlp64x32",
            ModelKind::Mlp {
                hidden: vec![64, 32],
            },
        ),
    ];
    for (name, kind) in cases {
        let spec = ModelSpec {
            kind,
            n_inputs: N_FEATURES,
            output: OutputKind::Binary,
        };
        let global = spec.initial_parameters(1);
        for batch_size in [256usize, 1024] {
            let config = TrainingConfig {
                epochs: 1,
                batch_size,
                learning_rate: 1e-3,
                optimizer: OptimizerKind::Adam,
                proximal_mu: 0.0,
                seed: 7,
            };
            let mut best_seconds = f64::INFINITY;
            // One extra untimed run warms caches and the rayon pool.
            for run in 0..=repeats {
                let started = Instant::now();
                if let Err(error) = train(&spec, &global, &data, &config) {
                    panic!("benchmark training failed: {error}");
                }
                let seconds = started.elapsed().as_secs_f64();
                if run > 0 {
                    best_seconds = best_seconds.min(seconds);
                }
            }
            let rows_per_second = N_ROWS as f64 / best_seconds;
            println!(
                "RESULT framework=burn model={name} batch={batch_size} rows_per_second={rows_per_second:.0} seconds={best_seconds:.3}"
            );
        }
    }
}
