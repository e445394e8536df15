//! Throughput of loading a generated 1M-row transaction CSV and building churn examples, in
//! rows per second (criterion's `elem/s`), and of building examples from an already loaded log.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use veil_features::{
    CsvSource, FeatureSpec, LabelSpec, TaskKind, build_examples, load_transactions,
};
use veil_synth::{SynthConfig, write_partner_csv};

/// Rows in the benchmark file, approximately (whole customers are generated).
const TARGET_ROWS: usize = 1_000_000;

/// Writes one partner file of about [`TARGET_ROWS`] rows and returns its data-row count.
fn write_benchmark_file(path: &Path) -> (SynthConfig, u64) {
    let mut config = SynthConfig::demo(1, 11);
    let calibration_customers = 4000;
    config.partners[0].n_customers = calibration_customers;
    let mut calibration = Vec::new();
    write_partner_csv(&config, 0, &mut calibration).expect("generate calibration data");
    let rows_per_customer =
        bytecount_lines(&calibration).saturating_sub(1) as f64 / calibration_customers as f64;
    config.partners[0].n_customers = (TARGET_ROWS as f64 / rows_per_customer).ceil() as usize;
    let file = std::fs::File::create(path).expect("create benchmark file");
    write_partner_csv(&config, 0, file).expect("generate benchmark data");
    let rows = bytecount_lines(&std::fs::read(path).expect("read back")).saturating_sub(1) as u64;
    (config, rows)
}

fn bytecount_lines(bytes: &[u8]) -> usize {
    bytes.iter().filter(|byte| **byte == b'\n').count()
}

fn features_benchmark(criterion: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bench.csv");
    let (config, rows) = write_benchmark_file(&path);
    eprintln!(
        "benchmark file: {rows} rows, {} customers",
        config.partners[0].n_customers
    );
    let source = CsvSource::new(&path);
    let label = LabelSpec {
        task: TaskKind::Churn,
        cutoff: config.suggested_cutoff(),
        horizon_days: config.suggested_horizon_days(),
    };
    let spec = FeatureSpec::standard();

    let mut group = criterion.benchmark_group("features");
    group.sample_size(10);
    group.throughput(Throughput::Elements(rows));
    group.bench_function("load_and_build_examples_1m_rows", |bencher| {
        bencher.iter(|| {
            let (log, _) = load_transactions(&source).expect("load");
            black_box(build_examples(&log, &label, &spec))
        })
    });
    let (log, _) = load_transactions(&source).expect("load");
    group.bench_function("build_examples_only_1m_rows", |bencher| {
        bencher.iter(|| black_box(build_examples(&log, &label, &spec)))
    });
    group.finish();
}

criterion_group!(benches, features_benchmark);
criterion_main!(benches);
