//! Throughput of de-identification on one core: `process_record` over a million transaction-like
//! rows, and the k-anonymity measurement and export pass over a million quasi-identifier tuples.
//!
//! Each benchmark runs twice: with wall-clock time, and with the benchmark thread's own CPU time
//! (`/proc/thread-self/schedstat`, Linux only). The build machine is shared, so the CPU-time
//! figures are the honest "rows per second per core"; wall-clock figures include time the thread
//! spent waiting for a core.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use veil_de_identification::{
    ColumnPolicy, ColumnRole, DeidPolicy, Deidentifier, GeneralisationPolicy, PseudonymKey,
    QuasiIdentifierTuple,
};

const ROWS: usize = 1_000_000;

fn column(name: &str, role: ColumnRole) -> ColumnPolicy {
    ColumnPolicy {
        name: name.to_owned(),
        role,
    }
}

/// A cheap deterministic generator (SplitMix64): benchmark data needs variety, not secrecy.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut mixed = self.0;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        mixed ^ (mixed >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

const MERCHANTS: [&str; 6] = [
    "supermarket",
    "coffee",
    "fuel",
    "online-retail",
    "pharmacy",
    "travel",
];
const NOTES: [&str; 6] = [
    "monthly groceries, paid with loyalty points",
    "客户来电咨询积分兑换，已处理",
    "refund requested for damaged item, order 2024-000123",
    "门店 0042 收银台 3 号",
    "customer prefers email contact",
    "paid 58.00 CNY incl. 6% VAT",
];

/// Transaction-like rows: customer id, merchant, amount, timestamp, free-text note. One note in
/// ten carries a phone number or an email address, as real notes sometimes do.
fn transaction_rows() -> Vec<[String; 5]> {
    let mut random = SplitMix(7);
    (0..ROWS)
        .map(|index| {
            let note_base = NOTES[random.below(NOTES.len() as u64) as usize];
            let note = match random.below(20) {
                0 => format!(
                    "{note_base}; 回电 1{}{:09}",
                    3 + random.below(7),
                    random.below(1_000_000_000)
                ),
                1 => format!(
                    "{note_base}; contact user{}@example.com",
                    random.below(100_000)
                ),
                _ => note_base.to_owned(),
            };
            [
                format!("CUST-{:08}", random.below(200_000)),
                MERCHANTS[index % MERCHANTS.len()].to_owned(),
                format!("{}.{:02}", random.below(5_000), random.below(100)),
                format!(
                    "2024-{:02}-{:02}T{:02}:{:02}:00",
                    1 + random.below(12),
                    1 + random.below(28),
                    random.below(24),
                    random.below(60)
                ),
                note,
            ]
        })
        .collect()
}

fn transaction_policy() -> DeidPolicy {
    DeidPolicy {
        columns: vec![
            column("customer_id", ColumnRole::Identifier),
            column("merchant", ColumnRole::Feature),
            column("amount", ColumnRole::Amount),
            column("spent_at", ColumnRole::Timestamp),
            column("note", ColumnRole::Text),
        ],
        k: 5,
        l: None,
    }
}

/// Largest fraction of records the export pass may suppress in the benchmark.
const EXPORT_SUPPRESSION: f64 = 0.02;

fn quasi_identifier_policy() -> DeidPolicy {
    let region_map: BTreeMap<String, String> = (0..300)
        .map(|city| (format!("city-{city}"), format!("region-{}", city % 7)))
        .collect();
    DeidPolicy {
        columns: vec![
            column(
                "age",
                ColumnRole::QuasiIdentifier(GeneralisationPolicy::AgeBand { width: 5 }),
            ),
            column(
                "gender",
                ColumnRole::QuasiIdentifier(GeneralisationPolicy::Gender { suppress: false }),
            ),
            column(
                "postcode",
                ColumnRole::QuasiIdentifier(GeneralisationPolicy::PostcodePrefix { length: 4 }),
            ),
            column(
                "city",
                ColumnRole::QuasiIdentifier(GeneralisationPolicy::City {
                    to_region: false,
                    region_map,
                }),
            ),
            column("churned", ColumnRole::Sensitive),
        ],
        k: 10,
        l: Some(2),
    }
}

fn quasi_identifier_tuples(engine: &mut Deidentifier) -> Vec<QuasiIdentifierTuple> {
    let mut random = SplitMix(11);
    (0..ROWS)
        .map(|_| {
            let age = (18 + random.below(70)).to_string();
            let gender = ["F", "M"][random.below(2) as usize];
            let postcode = format!("{:06}", 100_000 + random.below(5_000) * 37);
            let city = format!("city-{}", random.below(300));
            let churned = ["yes", "no"][random.below(2) as usize];
            let record = [
                Some(age.as_str()),
                Some(gender),
                Some(postcode.as_str()),
                Some(city.as_str()),
                Some(churned),
            ];
            engine
                .process_record(&record)
                .map(|record| record.quasi_identifiers)
        })
        .collect::<Result<_, _>>()
        .unwrap_or_default()
}

/// CPU time consumed by the calling thread, from the first field of
/// `/proc/thread-self/schedstat` (nanoseconds on the CPU).
struct ThreadCpuTime {
    /// Used only for its duration formatter, so reports read in the usual units.
    wall_time: WallTime,
}

fn thread_cpu_nanoseconds() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|line| line.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

impl Measurement for ThreadCpuTime {
    type Intermediate = u64;
    type Value = Duration;

    fn start(&self) -> u64 {
        thread_cpu_nanoseconds()
    }
    fn end(&self, started: u64) -> Duration {
        Duration::from_nanos(thread_cpu_nanoseconds().saturating_sub(started))
    }
    fn add(&self, left: &Duration, right: &Duration) -> Duration {
        *left + *right
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        self.wall_time.formatter()
    }
}

fn wall_clock(criterion: &mut Criterion) {
    benchmarks(criterion, "deid_wall_clock");
}

fn cpu_time(criterion: &mut Criterion<ThreadCpuTime>) {
    benchmarks(criterion, "deid_thread_cpu_time");
}

fn benchmarks<M: Measurement<Value = Duration>>(criterion: &mut Criterion<M>, group_name: &str) {
    let rows = transaction_rows();
    let mut group = criterion.benchmark_group(group_name);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(15));
    group.throughput(Throughput::Elements(ROWS as u64));

    group.bench_function("process_record_1m_transactions", |bencher| {
        bencher.iter_batched(
            || Deidentifier::new(transaction_policy(), PseudonymKey::from_bytes([1; 32])),
            |engine| {
                let Ok(mut engine) = engine else { return };
                for row in &rows {
                    let record = [
                        Some(row[0].as_str()),
                        Some(row[1].as_str()),
                        Some(row[2].as_str()),
                        Some(row[3].as_str()),
                        Some(row[4].as_str()),
                    ];
                    let _ = black_box(engine.process_record(&record));
                }
            },
            BatchSize::PerIteration,
        );
    });

    let Ok(mut engine) =
        Deidentifier::new(quasi_identifier_policy(), PseudonymKey::from_bytes([2; 32]))
    else {
        return;
    };
    let tuples = quasi_identifier_tuples(&mut engine);
    group.bench_function("measure_k_anonymity_1m_tuples", |bencher| {
        bencher.iter(|| {
            black_box(engine.measure_k_anonymity(&tuples)).map(|report| report.equivalence_classes)
        });
    });
    if let Ok(report) = engine.measure_k_anonymity(&tuples) {
        eprintln!(
            "k-anonymity of the declared generalisation on the benchmark data: k {:?}, l {:?}, {} classes",
            report.k_achieved, report.l_achieved, report.equivalence_classes
        );
    }
    group.bench_function("enforce_k_anonymity_for_export_1m_tuples", |bencher| {
        bencher.iter_batched(
            || tuples.clone(),
            |tuples| {
                black_box(engine.enforce_k_anonymity_for_export(tuples, EXPORT_SUPPRESSION))
                    .map(|(kept, _)| kept.len())
            },
            BatchSize::PerIteration,
        );
    });
    if let Ok((_, report)) = engine.enforce_k_anonymity_for_export(tuples, EXPORT_SUPPRESSION) {
        eprintln!(
            "k-anonymity pass on the benchmark data:\n{}",
            engine.report()
        );
        eprintln!("levels: {:?}", report.generalisation_levels);
    }
    group.finish();
}

criterion_group!(wall, wall_clock);
criterion_group! {
    name = cpu;
    config = Criterion::default().with_measurement(ThreadCpuTime { wall_time: WallTime });
    targets = cpu_time
}
criterion_main!(wall, cpu);
