//! Time to generate the three-partner demo (about 6,100 customers) into memory.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use veil_synth_data::{SynthConfig, write_partner_csv};

fn generate_benchmark(criterion: &mut Criterion) {
    let config = SynthConfig::demo(3, 42);
    let mut group = criterion.benchmark_group("synth");
    group.sample_size(10);
    group.bench_function("demo_3_partners", |bencher| {
        bencher.iter(|| {
            for partner_index in 0..config.partners.len() {
                let mut bytes = Vec::new();
                write_partner_csv(&config, partner_index, &mut bytes).expect("generate");
                black_box(bytes);
            }
        })
    });
    group.finish();
}

criterion_group!(benches, generate_benchmark);
criterion_main!(benches);
