//! Coordinator recovery time after a crash: open the store, load every job
//! and restore the engine, for a job with 100 completed rounds (100 model
//! checkpoints kept) and 10^5 or 10^6 parameters; and the cost of one save.
//!
//! `cargo bench -p veil-job-store -- --warm-up-time 1 --measurement-time 3`

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::sync::Arc;

use common::{FEDADAM, Federation, NameCodec, TestJob, engine_config, plan, synthetic_snapshot};
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

    // FedAdam keeps two f64 moments of model size in the optimiser state,
    // which is CBOR: take two real states from an engine, after rounds 1 and 2.
    let parameters = 1_000_000;
    let mut federation = Federation::new(Engine::new(engine_config()), 3);
    let mut ignore = |_| {};
    let job = federation.start(plan(parameters, 3, 3, FEDADAM), "fedadam", &mut ignore);
    let mut after_round = Vec::new();
    for _ in 0..40 {
        let completed = federation
            .engine
            .status(&job)
            .map(|status| status.completed_rounds)
            .unwrap_or(0);
        if completed as usize > after_round.len() {
            after_round.push(
                federation
                    .engine
                    .snapshot(&job)
                    .unwrap_or_else(|error| panic!("{error}")),
            );
        }
        if after_round.len() == 2 {
            break;
        }
        federation.tick(&mut ignore);
    }
    let [first, mut second] =
        <[_; 2]>::try_from(after_round).unwrap_or_else(|_| panic!("two rounds"));
    // Same version, so toggling between them rewrites rather than rewinds.
    second.model_version = first.model_version;
    let directory = tempfile::tempdir().unwrap_or_else(|error| panic!("tempdir: {error}"));
    let path = directory.path().join("coordinator.sqlite");
    let mut store = open(&path);
    store
        .save(&first)
        .unwrap_or_else(|error| panic!("save: {error}"));
    group.bench_function(
        BenchmarkId::new("open_load_restore_fedadam", parameters),
        |bencher| {
            bencher.iter(|| {
                let store = open(&path);
                let snapshots = store.load_all().unwrap_or_else(|error| panic!("{error}"));
                black_box(Engine::restore(engine_config(), snapshots))
            });
        },
    );
    let mut toggle = false;
    group.bench_function(
        BenchmarkId::new("save_new_model_and_moments_fedadam", parameters),
        |bencher| {
            bencher.iter(|| {
                toggle = !toggle;
                let snapshot = if toggle { &second } else { &first };
                store
                    .save(snapshot)
                    .unwrap_or_else(|error| panic!("{error}"));
            });
        },
    );
    group.bench_function(
        BenchmarkId::new("save_same_model_fedadam", parameters),
        |bencher| {
            bencher.iter(|| store.save(&first).unwrap_or_else(|error| panic!("{error}")));
        },
    );
    group.finish();
}

criterion_group!(benches, recovery);
criterion_main!(benches);
