//! Throughput of building churn examples from an already loaded log of about 1M transactions,
//! in rows per second (criterion's `elem/s`). Reading and de-identifying the file is the node's
//! ingestion, benchmarked by `scripts/bench-ingest`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use veil_behaviour_features::{
    FeatureSpec, LabelSpec, TaskKind, Transaction, TransactionLog, build_examples, parse_amount,
    parse_timestamp,
};
use veil_synth_data::{SynthConfig, write_partner_csv};

/// Rows in the benchmark log, approximately (whole customers are generated).
const TARGET_ROWS: usize = 1_000_000;

/// One generated partner of about [`TARGET_ROWS`] transactions, as a log. The generator's CSV
/// (`customer_id,timestamp,amount,...`, no quoting) is split by hand: the benchmark measures
/// feature building, not parsing.
fn benchmark_log() -> (SynthConfig, TransactionLog) {
    let mut config = SynthConfig::demo(1, 11);
    let calibration_customers = 4000;
    config.partners[0].n_customers = calibration_customers;
    let mut calibration = Vec::new();
    write_partner_csv(&config, 0, &mut calibration).expect("generate calibration data");
    let rows_per_customer =
        count_lines(&calibration).saturating_sub(1) as f64 / calibration_customers as f64;
    config.partners[0].n_customers = (TARGET_ROWS as f64 / rows_per_customer).ceil() as usize;
    let mut csv = Vec::new();
    write_partner_csv(&config, 0, &mut csv).expect("generate benchmark data");
    let text = String::from_utf8(csv).expect("the generator writes UTF-8");
    let transactions = text.lines().skip(1).map(|line| {
        let mut fields = line.split(',');
        let mut next = || fields.next().expect("generated rows have every field");
        let customer = next().to_owned();
        let unix_seconds = parse_timestamp(next()).expect("generated timestamp");
        let amount = parse_amount(next()).expect("generated amount");
        (customer, Transaction::new(unix_seconds, amount))
    });
    (config, TransactionLog::from_transactions(transactions))
}

fn count_lines(bytes: &[u8]) -> usize {
    bytes.iter().filter(|byte| **byte == b'\n').count()
}

fn features_benchmark(criterion: &mut Criterion) {
    let (config, log) = benchmark_log();
    eprintln!(
        "benchmark log: {} transactions, {} customers",
        log.n_transactions(),
        log.n_customers()
    );
    let label = LabelSpec {
        task: TaskKind::Churn,
        cutoff: config.suggested_cutoff(),
        horizon_days: config.suggested_horizon_days(),
    };
    let spec = FeatureSpec::standard();

    let mut group = criterion.benchmark_group("features");
    group.sample_size(10);
    group.throughput(Throughput::Elements(log.n_transactions() as u64));
    group.bench_function("build_examples_1m_rows", |bencher| {
        bencher.iter(|| black_box(build_examples(&log, &label, &spec)))
    });
    group.finish();
}

criterion_group!(benches, features_benchmark);
criterion_main!(benches);
