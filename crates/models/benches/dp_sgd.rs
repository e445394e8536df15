//! DP-SGD versus ordinary local training throughput (rows/s, criterion's "elem/s") for
//! MLP(64, 32) on 100k rows × 10 features: one epoch of batches of 256 rows, or of Poisson
//! batches of 256 rows in expectation (q = 256/N). `scripts/bench-dpsgd` runs it next to the
//! Opacus baseline.
//!
//! One iteration is a whole epoch (a second or so), so the sample count is criterion's minimum.

mod common;

use std::time::Duration;

use common::{N_FEATURES, N_ROWS, customers};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use veil_models::{
    DpSgdConfig, ModelKind, ModelSpec, OptimizerKind, OutputKind, TrainingConfig, train,
    train_dp_sgd,
};

const BATCH_SIZE: usize = 256;

fn training_throughput(criterion: &mut Criterion) {
    let data = customers();
    let spec = ModelSpec {
        kind: ModelKind::Mlp {
            hidden: vec![64, 32],
        },
        n_inputs: N_FEATURES,
        output: OutputKind::Binary,
    };
    let global = spec.initial_parameters(1);
    let config = TrainingConfig {
        epochs: 1,
        batch_size: BATCH_SIZE,
        learning_rate: 1e-3,
        optimizer: OptimizerKind::Adam,
        proximal_mu: 0.0,
        seed: 7,
    };
    let dp = DpSgdConfig {
        noise_multiplier: 1.0,
        clip_norm: 1.0,
        sampling_rate: BATCH_SIZE as f64 / N_ROWS as f64,
    };
    let mut rng = match veil_dp_noise::production_rng() {
        Ok(rng) => rng,
        Err(error) => panic!("no entropy for the benchmark's noise: {error}"),
    };

    let mut group = criterion.benchmark_group("mlp64x32_epoch_100k_rows");
    group.throughput(Throughput::Elements(N_ROWS as u64));
    group.sample_size(10);
    group.bench_function("non_private", |bencher| {
        bencher.iter(|| train(&spec, &global, &data, &config))
    });
    group.bench_function("dp_sgd", |bencher| {
        bencher.iter(|| train_dp_sgd(&spec, &global, &data, &config, &dp, &mut rng))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = training_throughput
}
criterion_main!(benches);
