//! The coordinator's log file: appends continue the chain across reopenings,
//! the file is locked, torn tails are reported and repaired only on request,
//! truncation and foreign keys are refused on open, and a lagging head is
//! brought forward.

mod common;

use std::io::Write;

use common::{Fixture, open_log, pkcs8, read_lines, sample_event, write_lines};
use veil_audit_log::{
    AuditEvent, AuditLog, AuditLogConfig, AuditLogError, AuditSigner, EpsilonCharge, EventError,
    Head, SyncPolicy, TamperFinding, generate_signing_key, head_path_for, load_signing_key,
    verify_log_file,
};

fn config(path: &std::path::Path) -> AuditLogConfig {
    AuditLogConfig {
        log_path: path.to_owned(),
        sync: SyncPolicy::EveryAppend,
    }
}

#[test]
fn reopening_continues_the_chain_with_a_key_loaded_from_disk() {
    let directory = tempfile::tempdir().unwrap();
    let key_path = directory.path().join("audit.key");
    let log_path = directory.path().join("audit.jsonl");
    let public_key = generate_signing_key(&key_path).unwrap().public_key();

    let mut log = AuditLog::open(config(&log_path), load_signing_key(&key_path).unwrap()).unwrap();
    for index in 0..3 {
        let entry = log
            .append(index, "coordinator", sample_event(index as u64))
            .unwrap();
        assert_eq!(entry.seq, index as u64);
    }
    let third_hash = verify_log_file(&log_path, &public_key, None)
        .unwrap()
        .entries[2]
        .hash;
    drop(log);

    let mut log = AuditLog::open(config(&log_path), load_signing_key(&key_path).unwrap()).unwrap();
    assert_eq!(log.last_seq(), Some(2));
    let fourth = log.append(3, "operator", sample_event(3)).unwrap();
    assert_eq!(fourth.seq, 3);
    assert_eq!(fourth.prev_hash, third_hash);
    log.append(4, "coordinator", sample_event(4)).unwrap();
    drop(log);

    let head = Head::read(&head_path_for(&log_path)).unwrap().unwrap();
    assert_eq!(head.seq, 4);
    let report = verify_log_file(&log_path, &public_key, Some(&head)).unwrap();
    assert_eq!(report.entries.len(), 5);
    assert_eq!(report.entries[3].actor, "operator");
    assert_eq!(report.entries_after_head, 0);
}

#[test]
fn a_second_open_is_refused_while_the_log_is_open() {
    let directory = tempfile::tempdir().unwrap();
    let log_path = directory.path().join("audit.jsonl");
    let _log = open_log(
        &log_path,
        AuditSigner::generate_ephemeral().unwrap(),
        SyncPolicy::OsBuffered,
    );
    let second = AuditLog::open(
        config(&log_path),
        AuditSigner::generate_ephemeral().unwrap(),
    );
    assert!(
        matches!(second, Err(AuditLogError::Locked { .. })),
        "{second:?}"
    );
}

#[test]
fn a_torn_tail_is_reported_and_dropped_only_by_the_explicit_repair() {
    let key = pkcs8();
    let signer = || AuditSigner::from_pkcs8(&key).unwrap();
    let fixture = Fixture::with_signer(4, signer(), "coordinator");
    // A crash part-way through the fifth append.
    let fragment = &fixture.lines[3][..25];
    std::fs::OpenOptions::new()
        .append(true)
        .open(&fixture.log_path)
        .unwrap()
        .write_all(fragment.as_bytes())
        .unwrap();
    let clean_length = std::fs::metadata(&fixture.log_path).unwrap().len() - 25;

    let opened = AuditLog::open(config(&fixture.log_path), signer());
    match opened {
        Err(AuditLogError::TornTail { offset, bytes, .. }) => {
            assert_eq!((offset, bytes), (clean_length, 25));
        }
        other => panic!("expected a torn tail, got {other:?}"),
    }
    // Still there: opening did not repair anything.
    assert_eq!(
        std::fs::metadata(&fixture.log_path).unwrap().len(),
        clean_length + 25
    );

    assert_eq!(AuditLog::repair_torn_tail(&fixture.log_path).unwrap(), 25);
    assert_eq!(AuditLog::repair_torn_tail(&fixture.log_path).unwrap(), 0);
    let mut log = AuditLog::open(config(&fixture.log_path), signer()).unwrap();
    assert_eq!(
        log.append(99, "coordinator", sample_event(4)).unwrap().seq,
        4
    );
    drop(log);
    let head = Head::read(&head_path_for(&fixture.log_path))
        .unwrap()
        .unwrap();
    verify_log_file(&fixture.log_path, &fixture.public_key, Some(&head)).unwrap();
}

#[test]
fn opening_a_truncated_log_is_refused() {
    let key = pkcs8();
    let fixture = Fixture::with_signer(5, AuditSigner::from_pkcs8(&key).unwrap(), "coordinator");
    write_lines(&fixture.log_path, &fixture.lines[..3]);
    let opened = AuditLog::open(
        config(&fixture.log_path),
        AuditSigner::from_pkcs8(&key).unwrap(),
    );
    assert!(
        matches!(
            opened,
            Err(AuditLogError::TailTruncated {
                head_seq: 4,
                last_seq: Some(2),
                ..
            })
        ),
        "{opened:?}"
    );
}

#[test]
fn opening_with_another_key_is_refused() {
    let fixture = Fixture::new(2);
    let opened = AuditLog::open(
        config(&fixture.log_path),
        AuditSigner::generate_ephemeral().unwrap(),
    );
    assert!(
        matches!(opened, Err(AuditLogError::TailInvalid { .. })),
        "{opened:?}"
    );
}

#[test]
fn a_head_left_behind_by_a_crash_is_brought_forward_on_open() {
    let key = pkcs8();
    let signer = || AuditSigner::from_pkcs8(&key).unwrap();
    let fixture = Fixture::with_signer(3, signer(), "coordinator");
    let head_path = head_path_for(&fixture.log_path);
    let old_head = std::fs::read(&head_path).unwrap();
    let mut log = open_log(&fixture.log_path, signer(), SyncPolicy::EveryAppend);
    log.append(10, "coordinator", sample_event(3)).unwrap();
    drop(log);
    // The crash: the entry reached the file, the head update did not.
    std::fs::write(&head_path, &old_head).unwrap();
    let stale_head = Head::read(&head_path).unwrap().unwrap();
    let report =
        verify_log_file(&fixture.log_path, &fixture.public_key, Some(&stale_head)).unwrap();
    assert_eq!(report.entries_after_head, 1);

    let log = open_log(&fixture.log_path, signer(), SyncPolicy::EveryAppend);
    drop(log);
    let head = Head::read(&head_path).unwrap().unwrap();
    assert_eq!(head.seq, 3);
    let report = verify_log_file(&fixture.log_path, &fixture.public_key, Some(&head)).unwrap();
    assert_eq!(report.entries_after_head, 0);
}

#[test]
fn a_head_not_matching_the_last_entry_is_refused_on_open_and_named_by_verify() {
    let key = pkcs8();
    let signer = || AuditSigner::from_pkcs8(&key).unwrap();
    let fixture = Fixture::with_signer(3, signer(), "coordinator");
    let other = Fixture::with_signer(3, signer(), "operator");
    // A genuinely signed head, but of another log: its seq 2 hash is not ours.
    std::fs::copy(
        head_path_for(&other.log_path),
        head_path_for(&fixture.log_path),
    )
    .unwrap();
    let opened = AuditLog::open(config(&fixture.log_path), signer());
    assert!(
        matches!(opened, Err(AuditLogError::HeadMismatch { seq: 2, .. })),
        "{opened:?}"
    );
    let evidence = verify_log_file(&fixture.log_path, &fixture.public_key, Some(&other.head))
        .unwrap_err()
        .to_string();
    assert!(
        evidence.contains(&TamperFinding::HeadMismatch { seq: 2, line: 3 }.to_string()),
        "{evidence}"
    );
}

#[test]
fn events_that_cannot_be_stored_faithfully_are_refused_before_writing() {
    let directory = tempfile::tempdir().unwrap();
    let log_path = directory.path().join("audit.jsonl");
    let mut log = open_log(
        &log_path,
        AuditSigner::generate_ephemeral().unwrap(),
        SyncPolicy::OsBuffered,
    );
    let event = AuditEvent::RoundCommitted {
        job_id: "job".into(),
        round: 1,
        participants: vec!["node-a".into()],
        epsilon_charged: vec![EpsilonCharge {
            partner: "node-a".into(),
            unit: "customer".into(),
            epsilon: f64::NAN,
        }],
        model_sha256: [0; 32],
    };
    let refused = log.append(0, "coordinator", event);
    assert!(
        matches!(
            refused,
            Err(AuditLogError::InvalidEvent(EventError::InvalidEpsilon {
                field: "epsilon_charged.epsilon",
                ..
            }))
        ),
        "{refused:?}"
    );
    assert_eq!(log.last_seq(), None);
    assert!(read_lines(&log_path).is_empty());
}

#[test]
fn a_batch_is_chained_like_single_appends_and_all_or_nothing() {
    use veil_audit_log::PendingEntry;
    let directory = tempfile::tempdir().unwrap();
    let log_path = directory.path().join("audit.jsonl");
    let signer = AuditSigner::generate_ephemeral().unwrap();
    let public_key = signer.public_key();
    let mut log = open_log(&log_path, signer, SyncPolicy::EveryAppend);
    log.append(0, "coordinator", sample_event(0)).unwrap();
    let pending = |events: Vec<AuditEvent>| {
        events
            .into_iter()
            .enumerate()
            .map(|(offset, event)| PendingEntry {
                at_unix_ms: 10 + offset as i64,
                actor: "coordinator".into(),
                event,
            })
            .collect::<Vec<_>>()
    };
    let batch = log
        .append_all(pending((1..4).map(sample_event).collect()))
        .unwrap();
    assert_eq!(
        batch.iter().map(|entry| entry.seq).collect::<Vec<_>>(),
        [1, 2, 3]
    );

    let mut invalid = sample_event(5);
    if let AuditEvent::BudgetRefused {
        remaining_epsilon, ..
    } = &mut invalid
    {
        *remaining_epsilon = -1.0;
    }
    let refused = log.append_all(pending(vec![sample_event(4), invalid]));
    assert!(
        matches!(refused, Err(AuditLogError::InvalidEvent(_))),
        "{refused:?}"
    );
    assert!(log.append_all(Vec::new()).unwrap().is_empty());
    assert_eq!(log.last_seq(), Some(3));
    drop(log);

    let head = Head::read(&head_path_for(&log_path)).unwrap().unwrap();
    let report = verify_log_file(&log_path, &public_key, Some(&head)).unwrap();
    assert_eq!(report.entries.len(), 4);
    assert_eq!(report.entries[1..], batch);
}
