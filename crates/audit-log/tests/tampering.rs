//! Verification names every kind of tampering by seq and line: modification,
//! deletion, insertion, reordering, duplication, splicing, forged signatures,
//! truncation and torn tails; and no single-byte edit of a log goes unnoticed.

mod common;

use common::{Fixture, pkcs8, sign_with_foreign_key};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngSeed};
use veil_audit_log::{
    AuditEntry, AuditEvent, AuditSigner, Head, TamperFinding, verify_entries, verify_log_bytes,
};

/// Entries in the tampering fixture: lines 1..=8 hold seqs 0..=7.
const ENTRIES: u64 = 8;

/// Applies `edit` to the fixture's lines and checks the findings exactly.
fn check(edit: impl FnOnce(&Fixture, &mut Vec<String>), expected: &[TamperFinding]) {
    let fixture = Fixture::new(ENTRIES);
    let mut lines = fixture.lines.clone();
    edit(&fixture, &mut lines);
    let contents = lines
        .iter()
        .map(|line| format!("{line}\n"))
        .collect::<String>();
    let evidence = verify_log_bytes(
        contents.as_bytes(),
        &fixture.public_key,
        Some(&fixture.head),
    )
    .expect_err("tampering must be detected");
    assert_eq!(evidence.findings, expected, "{evidence}");
}

/// An entry that claims `seq` after `previous`, hashed correctly but signed with another key.
fn forged_entry(seq: u64, previous: &AuditEntry) -> AuditEntry {
    let mut forged = AuditEntry {
        seq,
        at_unix_ms: previous.at_unix_ms + 1,
        actor: "coordinator".into(),
        event: AuditEvent::Note {
            text: "nothing happened here".into(),
        },
        prev_hash: previous.hash,
        hash: [0; 32],
        signature: Vec::new(),
    };
    forged.hash = forged.computed_hash();
    forged.signature = sign_with_foreign_key(&forged.hash);
    forged
}

#[test]
fn untouched_log_verifies_against_its_head() {
    let fixture = Fixture::new(ENTRIES);
    let contents = std::fs::read(&fixture.log_path).unwrap();
    let report = verify_log_bytes(&contents, &fixture.public_key, Some(&fixture.head)).unwrap();
    assert_eq!(report.entries.len() as u64, ENTRIES);
    assert_eq!(report.head_seq, Some(ENTRIES - 1));
    assert_eq!(report.entries_after_head, 0);
    let seqs: Vec<u64> = report.entries.iter().map(|entry| entry.seq).collect();
    assert_eq!(seqs, (0..ENTRIES).collect::<Vec<_>>());
}

#[test]
fn changing_one_byte_names_the_modified_entry() {
    check(
        |_, lines| {
            lines[3] =
                lines[3].replacen("\"actor\":\"coordinator\"", "\"actor\":\"coordinatoR\"", 1)
        },
        &[TamperFinding::EntryModified { seq: 3, line: 4 }],
    );
}

#[test]
fn changing_a_charged_epsilon_names_the_modified_entry() {
    // Line 3 holds the round commit (seq 2); lowering its ε is the edit an
    // operator hiding privacy spend would make.
    check(
        |_, lines| {
            assert!(lines[2].contains("\"epsilon\":0.5"), "{}", lines[2]);
            lines[2] = lines[2].replace("\"epsilon\":0.5", "\"epsilon\":0.1");
        },
        &[TamperFinding::EntryModified { seq: 2, line: 3 }],
    );
}

#[test]
fn deleting_an_entry_names_the_missing_seq() {
    check(
        |_, lines| {
            lines.remove(3);
        },
        &[TamperFinding::EntriesDeleted {
            first_seq: 3,
            last_seq: 3,
            next_line: Some(4),
        }],
    );
}

#[test]
fn deleting_a_run_of_entries_names_the_range() {
    check(
        |_, lines| {
            lines.drain(2..5);
        },
        &[TamperFinding::EntriesDeleted {
            first_seq: 2,
            last_seq: 4,
            next_line: Some(3),
        }],
    );
}

#[test]
fn swapping_two_adjacent_entries_names_the_reordering() {
    check(
        |_, lines| lines.swap(2, 3),
        &[TamperFinding::OutOfOrder {
            seq: 3,
            line: 3,
            follows_seq: Some(1),
        }],
    );
}

#[test]
fn swapping_two_distant_entries_names_both() {
    check(
        |_, lines| lines.swap(1, 5),
        &[
            TamperFinding::OutOfOrder {
                seq: 5,
                line: 2,
                follows_seq: Some(0),
            },
            TamperFinding::OutOfOrder {
                seq: 1,
                line: 6,
                follows_seq: Some(4),
            },
        ],
    );
}

#[test]
fn inserting_a_forged_entry_names_the_insertion() {
    check(
        |fixture, lines| lines.insert(3, forged_entry(3, &fixture.entries[2]).to_line()),
        &[TamperFinding::InsertedEntry {
            line: 4,
            claimed_seq: Some(3),
        }],
    );
}

#[test]
fn replacing_an_entry_with_one_signed_by_another_key_names_the_bad_signature() {
    check(
        |fixture, lines| lines[3] = forged_entry(3, &fixture.entries[2]).to_line(),
        &[TamperFinding::BadSignature { seq: 3, line: 4 }],
    );
}

#[test]
fn duplicating_an_authentic_entry_names_the_copy() {
    check(
        |_, lines| lines.insert(6, lines[2].clone()),
        &[TamperFinding::DuplicateEntry {
            seq: 2,
            line: 7,
            first_line: 3,
        }],
    );
}

#[test]
fn truncating_the_tail_is_named_against_the_head() {
    check(
        |_, lines| lines.truncate(6),
        &[TamperFinding::TailTruncated {
            head_seq: 7,
            last_seq: Some(5),
        }],
    );
}

#[test]
fn emptying_the_log_is_named_against_the_head() {
    check(
        |_, lines| lines.clear(),
        &[TamperFinding::TailTruncated {
            head_seq: 7,
            last_seq: None,
        }],
    );
}

#[test]
fn without_a_head_a_clean_truncation_is_not_detectable() {
    // The documented limit: a cut at an entry boundary leaves a valid shorter
    // chain, which is why heads are kept and receipts exist.
    let fixture = Fixture::new(ENTRIES);
    let contents: String = fixture.lines[..5]
        .iter()
        .map(|line| format!("{line}\n"))
        .collect();
    let report = verify_log_bytes(contents.as_bytes(), &fixture.public_key, None).unwrap();
    assert_eq!(report.entries.len(), 5);
}

#[test]
fn torn_last_line_is_named_with_the_truncation_it_causes() {
    let fixture = Fixture::new(ENTRIES);
    let mut contents = std::fs::read(&fixture.log_path).unwrap();
    contents.truncate(contents.len() - 40);
    let last_line_length = fixture.lines[7].len() + 1 - 40;
    let evidence =
        verify_log_bytes(&contents, &fixture.public_key, Some(&fixture.head)).unwrap_err();
    assert_eq!(
        evidence.findings,
        [
            TamperFinding::TornTail {
                line: 8,
                bytes: last_line_length,
            },
            TamperFinding::TailTruncated {
                head_seq: 7,
                last_seq: Some(6),
            },
        ]
    );
}

#[test]
fn splicing_an_entry_from_another_log_with_the_same_key_breaks_the_chain() {
    let key = pkcs8();
    let signer = || AuditSigner::from_pkcs8(&key).unwrap();
    let fixture = Fixture::with_signer(ENTRIES, signer(), "coordinator");
    // Same key, different actor: every entry of the other log is authentic but differs from ours.
    let mut other_log = Fixture::with_signer(ENTRIES, signer(), "operator");
    let mut lines = fixture.lines.clone();
    lines[3] = std::mem::take(&mut other_log.lines[3]);
    let contents: String = lines.iter().map(|line| format!("{line}\n")).collect();
    let evidence = verify_log_bytes(
        contents.as_bytes(),
        &fixture.public_key,
        Some(&fixture.head),
    )
    .unwrap_err();
    assert_eq!(
        evidence.findings,
        [
            TamperFinding::ChainBroken { seq: 3, line: 4 },
            TamperFinding::ChainBroken { seq: 4, line: 5 },
        ]
    );
}

#[test]
fn a_head_signed_by_another_key_is_named() {
    let fixture = Fixture::new(ENTRIES);
    let contents = std::fs::read(&fixture.log_path).unwrap();
    let forged_head = Head {
        signature: sign_with_foreign_key(b"anything"),
        ..fixture.head.clone()
    };
    let evidence =
        verify_log_bytes(&contents, &fixture.public_key, Some(&forged_head)).unwrap_err();
    assert_eq!(
        evidence.findings,
        [TamperFinding::HeadBadSignature { seq: 7 }]
    );
}

#[test]
fn verifying_with_another_key_names_every_entry() {
    let fixture = Fixture::new(3);
    let stranger = AuditSigner::generate_ephemeral().unwrap().public_key();
    let contents = std::fs::read(&fixture.log_path).unwrap();
    let evidence = verify_log_bytes(&contents, &stranger, None).unwrap_err();
    assert_eq!(
        evidence.findings,
        [
            TamperFinding::BadSignature { seq: 0, line: 1 },
            TamperFinding::BadSignature { seq: 1, line: 2 },
            TamperFinding::BadSignature { seq: 2, line: 3 },
        ]
    );
}

#[test]
fn in_memory_entries_are_checked_the_same_way() {
    let fixture = Fixture::new(ENTRIES);
    let mut entries = fixture.entries.clone();
    assert!(verify_entries(&entries, &fixture.public_key, Some(&fixture.head)).is_ok());
    entries.swap(4, 5);
    entries[1].actor = "operator".into();
    let evidence = verify_entries(&entries, &fixture.public_key, Some(&fixture.head)).unwrap_err();
    assert_eq!(
        evidence.findings,
        [
            TamperFinding::EntryModified { seq: 1, line: 2 },
            TamperFinding::OutOfOrder {
                seq: 5,
                line: 5,
                follows_seq: Some(3),
            },
        ]
    );
}

#[test]
fn every_finding_names_a_seq_or_a_line_in_its_message() {
    let fixture = Fixture::new(ENTRIES);
    let mut lines = fixture.lines.clone();
    lines.swap(1, 2);
    lines.remove(5);
    let contents: String = lines.iter().map(|line| format!("{line}\n")).collect();
    let evidence = verify_log_bytes(
        contents.as_bytes(),
        &fixture.public_key,
        Some(&fixture.head),
    )
    .unwrap_err();
    let message = evidence.to_string();
    assert!(
        message.contains("seq 2 at line 2 is out of order"),
        "{message}"
    );
    assert!(
        message.contains("entries seq 5..=5 were deleted"),
        "{message}"
    );
}

/// Flipping a bit of any byte anywhere in the file (JSON syntax, hex digits,
/// numbers, string contents, newlines) is detected. Two masks: 0x01 changes
/// digits and letters, 0x20 changes letter case (`e`/`E`, hex `a`/`A`).
/// Six entries cover hashes, floats, a map and lists while keeping the sweep
/// fast; the property test below covers every kind.
#[test]
fn every_single_bit_flip_of_the_file_is_detected() {
    let fixture = Fixture::new(6);
    let contents = std::fs::read(&fixture.log_path).unwrap();
    for position in 0..contents.len() {
        for mask in [0x01u8, 0x20] {
            let mut modified = contents.clone();
            modified[position] ^= mask;
            assert!(
                verify_log_bytes(&modified, &fixture.public_key, None).is_err(),
                "flipping {mask:#04x} at byte {position} went unnoticed"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        rng_seed: RngSeed::Fixed(0x5eed_a0d1),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Any single-byte replacement anywhere in a log covering every event kind
    /// is detected, even without a head.
    #[test]
    fn any_single_byte_modification_is_detected(
        position_fraction in 0.0f64..1.0,
        replacement in any::<u8>(),
    ) {
        thread_local! {
            static FIXTURE: (Vec<u8>, veil_audit_log::AuditPublicKey) = {
                let fixture = Fixture::new(12);
                (std::fs::read(&fixture.log_path).unwrap(), fixture.public_key)
            };
        }
        FIXTURE.with(|(contents, public_key)| {
            let position = ((contents.len() as f64 * position_fraction) as usize).min(contents.len() - 1);
            prop_assume!(contents[position] != replacement);
            let mut modified = contents.clone();
            modified[position] = replacement;
            prop_assert!(verify_log_bytes(&modified, public_key, None).is_err());
            Ok(())
        })?;
    }
}

#[test]
fn a_forged_line_claiming_an_enormous_seq_is_bounded_by_its_position() {
    check(
        |fixture, lines| lines.push(forged_entry(u64::MAX, &fixture.entries[7]).to_line()),
        &[TamperFinding::EntryModified { seq: 8, line: 9 }],
    );
}
