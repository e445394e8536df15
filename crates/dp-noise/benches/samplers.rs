//! Throughput of the noise samplers on a 10^4-coordinate update.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use veil_dp_noise::{DiscreteGaussian, Gaussian, Rational, clip_l2};

const COORDINATES: usize = 10_000;

fn sampler_benchmarks(criterion: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let mut group = criterion.benchmark_group("noise_10k_coordinates");
    group.throughput(Throughput::Elements(COORDINATES as u64));
    group.sample_size(20);
    if let Ok(discrete) = DiscreteGaussian::new(Rational {
        numerator: 100,
        denominator: 1,
    }) {
        let mut values = vec![0u32; COORDINATES];
        group.bench_function("discrete_gaussian_sigma10_add_to_wrapping", |bencher| {
            bencher.iter(|| discrete.add_to_wrapping(&mut values, &mut rng))
        });
    }
    if let Ok(discrete) = DiscreteGaussian::from_sigma(1000.0) {
        let mut values = vec![0u32; COORDINATES];
        group.bench_function("discrete_gaussian_sigma1000_add_to_wrapping", |bencher| {
            bencher.iter(|| discrete.add_to_wrapping(&mut values, &mut rng))
        });
    }
    if let Ok(gaussian) = Gaussian::new(1.0) {
        let mut values = vec![0f32; COORDINATES];
        group.bench_function("gaussian_add_to", |bencher| {
            bencher.iter(|| gaussian.add_to(&mut values, &mut rng))
        });
    }
    let mut update: Vec<f32> = (0..COORDINATES).map(|i| (i % 7) as f32).collect();
    group.bench_function("clip_l2", |bencher| {
        bencher.iter(|| clip_l2(&mut update, 1.0))
    });
    group.finish();
}

criterion_group!(benches, sampler_benchmarks);
criterion_main!(benches);
