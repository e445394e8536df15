//! Coordinator recovery time after a crash: open the store, load every job
//! and restore the engine, for a job with 100 completed rounds (100 model
//! checkpoints kept) and 10^5 or 10^6 parameters; and the cost of one save.
//!
//! `cargo bench -p veil-job-store -- --warm-up-time 1 --measurement-time 3`

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::sync::Arc;

use common::{NameCodec, TestJob, engine_config, synthetic_snapshot};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use veil_federation::Engine;
use veil_federation::store::JobStore;
use veil_job_store::SqliteJobStore;

const COMPLETED_ROUNDS: u32 = 100;

fn open(path: &std::path::Path) -> SqliteJobStore<TestJob> {
    SqliteJobStore::open(path, NameCodec).unwrap_or_else(|error| panic!("open: {error}"))
}

fn recovery(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("recovery");
    group.sample_size(10);
    for parameters in [100_000, 1_000_000] {
        let directory = tempfile::tempdir().unwrap_or_else(|error| panic!("tempdir: {error}"));
        let path = directory.path().join("coordinator.sqlite");
        let mut store = open(&path);
        // One save per committed round, as the coordinator would have done,
        // so the file holds every round's checkpoint.
        for completed in 0..=COMPLETED_ROUNDS {
            store
                .save(&synthetic_snapshot("job-1", parameters, completed))
                .unwrap_or_else(|error| panic!("save: {error}"));
        }
        drop(store);
        group.bench_with_input(
            BenchmarkId::new("open_load_restore_100_rounds", parameters),
            &path,
            |bencher, path| {
                bencher.iter(|| {
                    let store = open(path);
                    let snapshots = store.load_all().unwrap_or_else(|error| panic!("{error}"));
                    black_box(Engine::restore(engine_config(), snapshots))
                });
            },
        );

        // A save that commits a new model (after a training phase), and one
        // whose model is unchanged (a phase opened, an evaluation committed).
        let mut store = open(&path);
        let next = synthetic_snapshot("job-1", parameters, COMPLETED_ROUNDS + 1);
        let mut other_model = next.clone();
        other_model.global = Arc::new(next.global.iter().map(|value| value + 1.0).collect());
        let mut toggle = false;
        group.bench_function(BenchmarkId::new("save_new_model", parameters), |bencher| {
            bencher.iter(|| {
                toggle = !toggle;
                let snapshot = if toggle { &next } else { &other_model };
                store
                    .save(snapshot)
                    .unwrap_or_else(|error| panic!("{error}"));
            });
        });
        group.bench_function(BenchmarkId::new("save_same_model", parameters), |bencher| {
            bencher.iter(|| store.save(&next).unwrap_or_else(|error| panic!("{error}")));
        });
        let size = std::fs::metadata(&path)
            .map(|metadata| metadata.len())
            .unwrap_or(0);
        println!(
            "store file with {parameters} parameters and {COMPLETED_ROUNDS} rounds: {} MB",
            size / 1_000_000
        );
    }
    group.finish();
}

criterion_group!(benches, recovery);
criterion_main!(benches);
