//! Receipts reconcile with the log they came from and name every receipt the
//! log contradicts; the auditor's report counts what the log recorded.

mod common;

use common::{Fixture, open_log, pkcs8, round_committed, sample_event, write_lines};
use veil_audit_log::{
    AuditEntry, AuditEvent, AuditSigner, EpsilonCharge, Head, ReceiptError, ReceiptFinding,
    ReceiptStore, SyncPolicy, export_report, head_path_for, issue_receipts, reconcile,
    verify_log_file,
};

/// A log with a round commit at seq 2 and its three receipts, made by one key.
struct CommittedRound {
    key: Vec<u8>,
    fixture: Fixture,
    commit: AuditEntry,
    receipts: Vec<veil_audit_log::Receipt>,
}

fn committed_round() -> CommittedRound {
    let key = pkcs8();
    let fixture = Fixture::with_signer(6, AuditSigner::from_pkcs8(&key).unwrap(), "coordinator");
    let commit = fixture.entries[2].clone();
    assert_eq!(commit.event.kind(), "round_committed");
    let receipts = issue_receipts(&AuditSigner::from_pkcs8(&key).unwrap(), &commit).unwrap();
    CommittedRound {
        key,
        fixture,
        commit,
        receipts,
    }
}

#[test]
fn each_participant_gets_a_receipt_with_its_own_charges() {
    let round = committed_round();
    let nodes: Vec<&str> = round
        .receipts
        .iter()
        .map(|receipt| receipt.node_id.as_str())
        .collect();
    assert_eq!(nodes, ["node-a", "node-b", "node-c"]);
    for receipt in &round.receipts {
        assert_eq!(receipt.entry_seq, 2);
        assert_eq!(receipt.entry_hash, round.commit.hash);
        assert_eq!(receipt.charges.len(), 1);
        assert_eq!(receipt.charges[0].partner, receipt.node_id);
        receipt.verify_signature(&round.fixture.public_key).unwrap();
    }
}

#[test]
fn receipts_stored_by_a_node_reconcile_with_the_log() {
    let round = committed_round();
    let directory = tempfile::tempdir().unwrap();
    let receipt_path = directory.path().join("receipts.jsonl");
    let mut store = ReceiptStore::open(&receipt_path).unwrap();
    store
        .append(&round.receipts[1], &round.fixture.public_key)
        .unwrap();
    drop(store);
    let mut store = ReceiptStore::open(&receipt_path).unwrap();
    store
        .append(&round.receipts[2], &round.fixture.public_key)
        .unwrap();
    let stored = ReceiptStore::read_all(&receipt_path).unwrap();
    assert_eq!(stored, round.receipts[1..]);

    let report = reconcile(&stored, &round.fixture.entries, &round.fixture.public_key);
    assert!(report.is_consistent(), "{report:?}");
    assert_eq!(report.matched, 2);
}

#[test]
fn a_node_refuses_to_store_a_receipt_not_signed_by_the_coordinator() {
    let round = committed_round();
    let directory = tempfile::tempdir().unwrap();
    let receipt_path = directory.path().join("receipts.jsonl");
    let mut store = ReceiptStore::open(&receipt_path).unwrap();
    let mut altered = round.receipts[0].clone();
    altered.charges[0].epsilon = 0.0;
    assert!(matches!(
        store.append(&altered, &round.fixture.public_key),
        Err(ReceiptError::BadSignature { round: 2, .. })
    ));
    assert!(ReceiptStore::read_all(&receipt_path).unwrap().is_empty());
}

#[test]
fn a_torn_receipt_file_is_reported_and_repaired_on_request() {
    let round = committed_round();
    let directory = tempfile::tempdir().unwrap();
    let receipt_path = directory.path().join("receipts.jsonl");
    let mut store = ReceiptStore::open(&receipt_path).unwrap();
    store
        .append(&round.receipts[0], &round.fixture.public_key)
        .unwrap();
    drop(store);
    let mut contents = std::fs::read(&receipt_path).unwrap();
    contents.extend_from_slice(b"{\"job_id\":\"jo");
    std::fs::write(&receipt_path, &contents).unwrap();
    assert!(matches!(
        ReceiptStore::read_all(&receipt_path),
        Err(ReceiptError::TornTail { bytes: 13, .. })
    ));
    assert_eq!(ReceiptStore::repair_torn_tail(&receipt_path).unwrap(), 13);
    assert_eq!(
        ReceiptStore::read_all(&receipt_path).unwrap(),
        round.receipts[..1]
    );
}

#[test]
fn a_receipt_for_a_truncated_entry_is_named_missing() {
    let round = committed_round();
    // Cut the log before the commit; the head is gone too, so only the
    // receipts can tell.
    write_lines(&round.fixture.log_path, &round.fixture.lines[..2]);
    std::fs::remove_file(head_path_for(&round.fixture.log_path)).unwrap();
    let verified =
        verify_log_file(&round.fixture.log_path, &round.fixture.public_key, None).unwrap();
    let report = reconcile(
        &round.receipts,
        &verified.entries,
        &round.fixture.public_key,
    );
    assert_eq!(report.matched, 0);
    assert_eq!(
        report.findings[0],
        ReceiptFinding::EntryMissing {
            index: 0,
            job_id: "job-0".into(),
            round: 2,
            seq: 2,
        }
    );
    assert_eq!(report.findings.len(), 3);
}

#[test]
fn a_log_rewritten_with_the_coordinator_key_contradicts_the_receipts() {
    let round = committed_round();
    // The operator holds the key and rebuilds the log with a smaller charge.
    let directory = tempfile::tempdir().unwrap();
    let rewritten_path = directory.path().join("rewritten.jsonl");
    let mut rewritten = open_log(
        &rewritten_path,
        AuditSigner::from_pkcs8(&round.key).unwrap(),
        SyncPolicy::OsBuffered,
    );
    for index in 0..6u64 {
        let event = if index == 2 {
            round_committed("job-0", 2, 0.001)
        } else {
            sample_event(index)
        };
        rewritten
            .append(1_700_000_000_000 + index as i64, "coordinator", event)
            .unwrap();
    }
    drop(rewritten);
    // The rewritten log verifies on its own…
    let head = Head::read(&head_path_for(&rewritten_path))
        .unwrap()
        .unwrap();
    let verified =
        verify_log_file(&rewritten_path, &round.fixture.public_key, Some(&head)).unwrap();
    // …but every receipt the nodes kept contradicts it.
    let report = reconcile(
        &round.receipts,
        &verified.entries,
        &round.fixture.public_key,
    );
    assert_eq!(
        report.findings,
        (0..3)
            .map(|index| ReceiptFinding::EntryDiffers { index, seq: 2 })
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_receipt_promising_other_charges_than_the_log_records_is_named() {
    let round = committed_round();
    // A coordinator telling node-b a smaller charge than it logged.
    let mut misreported = round.commit.clone();
    if let AuditEvent::RoundCommitted {
        epsilon_charged, ..
    } = &mut misreported.event
    {
        epsilon_charged[1].epsilon = 0.001;
    }
    let receipts =
        issue_receipts(&AuditSigner::from_pkcs8(&round.key).unwrap(), &misreported).unwrap();
    let report = reconcile(&receipts, &round.fixture.entries, &round.fixture.public_key);
    assert_eq!(report.matched, 2);
    assert_eq!(
        report.findings,
        [ReceiptFinding::EpsilonDiffers {
            index: 1,
            seq: 2,
            node_id: "node-b".into(),
            receipt_charges: vec![EpsilonCharge {
                partner: "node-b".into(),
                unit: "customer".into(),
                epsilon: 0.001,
            }],
            logged_charges: vec![EpsilonCharge {
                partner: "node-b".into(),
                unit: "customer".into(),
                epsilon: 0.5,
            }],
        }]
    );
}

#[test]
fn a_receipt_for_a_node_the_entry_does_not_list_is_named() {
    let round = committed_round();
    let mut padded = round.commit.clone();
    if let AuditEvent::RoundCommitted { participants, .. } = &mut padded.event {
        participants.push("node-z".into());
    }
    let receipts = issue_receipts(&AuditSigner::from_pkcs8(&round.key).unwrap(), &padded).unwrap();
    let report = reconcile(&receipts, &round.fixture.entries, &round.fixture.public_key);
    assert_eq!(
        report.findings,
        [ReceiptFinding::NotRecorded {
            index: 3,
            seq: 2,
            job_id: "job-0".into(),
            round: 2,
            node_id: "node-z".into(),
        }]
    );
}

#[test]
fn receipts_are_issued_for_round_commits_only() {
    let round = committed_round();
    let signer = AuditSigner::from_pkcs8(&round.key).unwrap();
    assert!(matches!(
        issue_receipts(&signer, &round.fixture.entries[0]),
        Err(ReceiptError::NotARoundCommit {
            seq: 0,
            kind: "job_created"
        })
    ));
}

#[test]
fn the_report_counts_what_the_log_recorded() {
    let fixture = Fixture::new(14);
    let report = export_report(&fixture.entries);
    assert_eq!(report.entries, 14);
    let head = report.chain_head.as_ref().unwrap();
    assert_eq!(head.seq, 13);
    assert_eq!(head.hash.len(), 64);
    // Events 0..=11 are one of each kind, then 12 and 13 start the next cycle.
    for (kind, count) in &report.events_by_kind {
        // The sample cycle predates privacy-audit results (their encoding
        // and report lines are tested in `veil_audit_log`'s unit tests): the
        // report lists that kind with a zero count.
        let expected = if ["job_created", "round_started"].contains(kind) {
            2
        } else if *kind == "privacy_audit_recorded" {
            0
        } else {
            1
        };
        assert_eq!(*count, expected, "{kind}");
    }
    assert_eq!(report.jobs.len(), 2);
    let job = &report.jobs["job-0"];
    assert_eq!(job.created_by.as_deref(), Some("coordinator"));
    assert_eq!(
        (
            job.rounds_started,
            job.rounds_committed,
            job.evaluations_released,
            job.budget_refusals,
            job.node_vetoes
        ),
        (1, 1, 1, 1, 1)
    );
    // The round commit's 0.5 and the evaluation release's 0.125.
    assert_eq!(job.epsilon_recorded_sum["node-a"]["customer"], 0.625);
    assert_eq!(report.auth_failures_by_rpc["StartJob"], 1);
    assert_eq!(report.first_at_unix_ms, Some(1_700_000_000_000));

    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["events_by_kind"]["budget_refused"], 1);
    assert_eq!(json["chain_head"]["seq"], 13);
    let text = report.to_text();
    assert!(text.contains("Audit log: 14 entries"), "{text}");
    assert!(text.contains("Chain head: seq 13"), "{text}");
    assert!(
        text.contains(
            "job-0: created by coordinator, rounds started 1 committed 1, evaluations released 1"
        ),
        "{text}"
    );
    assert!(text.contains("Authentication failures: 1"), "{text}");
}

#[test]
fn the_report_of_an_empty_log_says_so() {
    let report = export_report(&[]);
    assert_eq!(report.entries, 0);
    assert!(report.chain_head.is_none());
    assert!(report.to_text().contains("(empty log)"));
}
