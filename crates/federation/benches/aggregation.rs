//! Coordinator aggregation throughput: 100 updates of 1M parameters folded
//! into one phase, reported as bytes of update data per second.

use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use veil_federation::aggregate::{Accumulator, ExpectedShape};

const PARAMETERS: usize = 1_000_000;
const UPDATES: usize = 100;

fn aggregation(c: &mut Criterion) {
    let shape = ExpectedShape {
        vector_len: PARAMETERS,
        statistics_len: 2,
        positive_weight: true,
    };
    let updates: Vec<Vec<f32>> = (0..UPDATES)
        .map(|u| {
            (0..PARAMETERS)
                .map(|i| ((i * 31 + u * 7) % 1000) as f32 * 1e-3 - 0.5)
                .collect()
        })
        .collect();
    let mut group = c.benchmark_group("aggregation");
    group.sample_size(10);
    group.throughput(Throughput::Bytes((UPDATES * PARAMETERS * 4) as u64));
    group.bench_function("validate_and_fold_100x1M", |b| {
        b.iter(|| {
            let mut accumulator = Accumulator::new(shape);
            for update in &updates {
                Accumulator::validate(shape, 10.0, &[1.0, 2.0], update).unwrap();
                accumulator.add(10.0, &[1.0, 2.0], update);
            }
            accumulator.weighted_mean()
        })
    });
    group.finish();

    // A plain figure for the issue note, independent of criterion's output format.
    let started = Instant::now();
    let mut accumulator = Accumulator::new(shape);
    for update in &updates {
        Accumulator::validate(shape, 10.0, &[1.0, 2.0], update).unwrap();
        accumulator.add(10.0, &[1.0, 2.0], update);
    }
    let seconds = started.elapsed().as_secs_f64();
    let gigabytes = (UPDATES * PARAMETERS * 4) as f64 / 1e9;
    println!(
        "aggregation: {UPDATES} updates x {PARAMETERS} params = {gigabytes:.2} GB in {seconds:.3} s = {:.2} GB/s",
        gigabytes / seconds
    );
}

criterion_group!(benches, aggregation);
criterion_main!(benches);
