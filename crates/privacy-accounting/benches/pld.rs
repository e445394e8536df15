//! Benchmark of the headline accounting query: ε for q = 0.01, σ = 1.1,
//! 10^4 steps, δ = 1e-5 (PLD, RDP, and the full report).

use criterion::{Criterion, criterion_group, criterion_main};
use veil_privacy_accounting::{Accountant, DpEvent};

fn accountant() -> Accountant {
    let mut accountant = Accountant::new();
    let event = DpEvent::PoissonSampledGaussian {
        sampling_rate: 0.01,
        noise_multiplier: 1.1,
        steps: 10_000,
    };
    if let Err(error) = accountant.compose(event) {
        eprintln!("benchmark event refused: {error}");
    }
    accountant
}

fn epsilon_benchmarks(criterion: &mut Criterion) {
    let accountant = accountant();
    let mut group = criterion.benchmark_group("q0.01_sigma1.1_steps1e4_delta1e-5");
    group.sample_size(20);
    group.bench_function("epsilon_pld", |bencher| {
        bencher.iter(|| accountant.epsilon_pld(std::hint::black_box(1e-5)))
    });
    group.bench_function("epsilon_rdp", |bencher| {
        bencher.iter(|| accountant.epsilon_rdp(std::hint::black_box(1e-5)))
    });
    group.bench_function("epsilon_report", |bencher| {
        bencher.iter(|| accountant.epsilon(std::hint::black_box(1e-5)))
    });
    group.finish();
}

criterion_group!(benches, epsilon_benchmarks);
criterion_main!(benches);
