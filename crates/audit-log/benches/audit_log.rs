//! Criterion benchmarks of the audit log: append throughput with and without
//! an fsync per entry, full verification throughput, and the cost of opening
//! (tail check) a 10k-entry log. Entries are round commits with ten
//! participants (about 1.4 KB each), the largest entry the coordinator writes
//! routinely.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ring::rand::SystemRandom;
use ring::signature::Ed25519KeyPair;
use veil_audit_log::{
    AuditEvent, AuditLog, AuditLogConfig, AuditSigner, EpsilonCharge, Head, PendingEntry,
    SyncPolicy, head_path_for, verify_log_bytes,
};

const VERIFY_ENTRIES: u64 = 10_000;
/// Without fsync the head's create-and-rename still costs about 2 ms on a
/// loaded ext4, so 2,000 entries keep a sample to a few seconds.
const OS_BUFFERED_ENTRIES: u64 = 2_000;
/// Fewer entries with fsync: each costs a few milliseconds of disk latency.
const SYNCED_ENTRIES: u64 = 200;

fn round_commit(round: u64) -> AuditEvent {
    let participants: Vec<String> = (0..10).map(|node| format!("node-{node:02}")).collect();
    AuditEvent::RoundCommitted {
        job_id: "job-bench".into(),
        round,
        epsilon_charged: participants
            .iter()
            .map(|partner| EpsilonCharge {
                partner: partner.clone(),
                unit: "customer".into(),
                epsilon: 0.0123,
            })
            .collect(),
        participants,
        model_sha256: [7; 32],
    }
}

fn round_start(round: u64) -> AuditEvent {
    AuditEvent::RoundStarted {
        job_id: "job-bench".into(),
        round,
        participants: (0..10).map(|node| format!("node-{node:02}")).collect(),
        mechanism: BTreeMap::from([("noise_multiplier".to_owned(), "1.1".to_owned())]),
    }
}

fn fresh_log(directory: &tempfile::TempDir, sync: SyncPolicy) -> AuditLog {
    AuditLog::open(
        AuditLogConfig {
            log_path: directory.path().join("audit.jsonl"),
            sync,
        },
        AuditSigner::generate_ephemeral().unwrap(),
    )
    .unwrap()
}

fn append(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("append");
    group.sample_size(10);
    for (name, sync, entries) in [
        ("os_buffered", SyncPolicy::OsBuffered, OS_BUFFERED_ENTRIES),
        (
            "fsync_every_append",
            SyncPolicy::EveryAppend,
            SYNCED_ENTRIES,
        ),
    ] {
        group.throughput(Throughput::Elements(entries));
        group.bench_function(format!("{name}_{entries}_entries"), |bench| {
            bench.iter_batched(
                || {
                    let directory = tempfile::tempdir().unwrap();
                    let log = fresh_log(&directory, sync);
                    (directory, log)
                },
                |(directory, mut log)| {
                    for round in 0..entries {
                        log.append(round as i64, "coordinator", round_commit(round))
                            .unwrap();
                    }
                    (directory, log)
                },
                BatchSize::PerIteration,
            )
        });
    }
    // The same fsync'd log, 200 entries in batches of 20: one write, one
    // sync and one head update per batch.
    group.throughput(Throughput::Elements(SYNCED_ENTRIES));
    group.bench_function(
        format!("fsync_batches_of_20_{SYNCED_ENTRIES}_entries"),
        |bench| {
            bench.iter_batched(
                || {
                    let directory = tempfile::tempdir().unwrap();
                    let log = fresh_log(&directory, SyncPolicy::EveryAppend);
                    (directory, log)
                },
                |(directory, mut log)| {
                    for batch in 0..SYNCED_ENTRIES / 20 {
                        let pending = (batch * 20..(batch + 1) * 20)
                            .map(|round| PendingEntry {
                                at_unix_ms: round as i64,
                                actor: "coordinator".into(),
                                event: round_commit(round),
                            })
                            .collect();
                        log.append_all(pending).unwrap();
                    }
                    (directory, log)
                },
                BatchSize::PerIteration,
            )
        },
    );
    group.finish();
}

fn verify_and_open(criterion: &mut Criterion) {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    let signer = || AuditSigner::from_pkcs8(pkcs8.as_ref()).unwrap();
    let directory = tempfile::tempdir().unwrap();
    let config = AuditLogConfig {
        log_path: directory.path().join("audit.jsonl"),
        sync: SyncPolicy::OsBuffered,
    };
    let mut log = AuditLog::open(config.clone(), signer()).unwrap();
    for round in 0..VERIFY_ENTRIES {
        let event = if round % 2 == 0 {
            round_start(round)
        } else {
            round_commit(round)
        };
        log.append(round as i64, "coordinator", event).unwrap();
    }
    let public_key = log.public_key();
    drop(log);
    let contents = std::fs::read(&config.log_path).unwrap();
    let head = Head::read(&head_path_for(&config.log_path))
        .unwrap()
        .unwrap();
    eprintln!(
        "verify fixture: {VERIFY_ENTRIES} entries, {} bytes ({} bytes per entry)",
        contents.len(),
        contents.len() as u64 / VERIFY_ENTRIES
    );

    let mut group = criterion.benchmark_group("verify");
    group.sample_size(10);
    group.throughput(Throughput::Elements(VERIFY_ENTRIES));
    group.bench_function(format!("verify_{VERIFY_ENTRIES}_entries"), |bench| {
        bench.iter(|| {
            let report = verify_log_bytes(black_box(&contents), &public_key, Some(&head)).unwrap();
            assert_eq!(report.entries.len() as u64, VERIFY_ENTRIES);
        })
    });
    group.finish();

    // Opening checks only the tail, so it should not grow with the log.
    criterion.bench_function(&format!("open_{VERIFY_ENTRIES}_entry_log"), |bench| {
        bench.iter(|| AuditLog::open(config.clone(), signer()).unwrap())
    });
}

criterion_group!(benches, append, verify_and_open);
criterion_main!(benches);
