//! Verification of a log: every entry's hash and signature, the chain between
//! them, their order, and the signed head, with each departure named by seq
//! and line.
//!
//! The analysis first separates *authentic* entries (right hash, right
//! signature, canonical spelling) from the rest, because only authentic
//! entries can be trusted to say where they belong. An authentic entry in the
//! wrong place was moved (reordered or duplicated); a seq no line accounts for
//! was deleted; a bad line sitting in a hole replaced the entry that belonged
//! there (modified), while a bad line where nothing is missing was inserted.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::canonical::GENESIS_PREV_HASH;
use crate::entry::{AuditEntry, LineFault};
use crate::head::Head;
use crate::key::AuditPublicKey;
use crate::lines::split_lines;

/// One piece of evidence that the log is not what the coordinator wrote.
/// Lines are 1-based line numbers in the file (or positions in the entry list).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum TamperFinding {
    /// A line is not an entry at all (bad JSON, missing or unknown field, bad hex).
    #[error("line {line} (where seq {expected_seq} belongs) is not a valid entry: {reason}")]
    MalformedLine {
        /// The line.
        line: usize,
        /// The seq whose entry this line replaced.
        expected_seq: u64,
        /// The parser's complaint.
        reason: String,
    },
    /// The file ends in a line without its newline: a crash during an append,
    /// or a cut in the middle of an entry.
    #[error("line {line} is torn: {bytes} bytes without a final newline")]
    TornTail {
        /// The torn line.
        line: usize,
        /// Its length in bytes.
        bytes: usize,
    },
    /// An entry's content no longer matches its hash.
    #[error("entry seq {seq} at line {line} was modified: its content does not match its hash")]
    EntryModified {
        /// The entry's seq.
        seq: u64,
        /// The line.
        line: usize,
    },
    /// An entry's hash is consistent but not signed by the coordinator's key.
    #[error("entry seq {seq} at line {line} has a signature that is not the coordinator's")]
    BadSignature {
        /// The entry's seq.
        seq: u64,
        /// The line.
        line: usize,
    },
    /// A line that is not an authentic entry sits where no entry is missing.
    #[error(
        "line {line} was inserted: it is not an authentic entry and no entry is missing there (it claims seq {claimed_seq:?})"
    )]
    InsertedEntry {
        /// The line.
        line: usize,
        /// The seq the line claims, if it parses at all.
        claimed_seq: Option<u64>,
    },
    /// An authentic entry appears a second time.
    #[error("entry seq {seq} at line {line} duplicates line {first_line}")]
    DuplicateEntry {
        /// The entry's seq.
        seq: u64,
        /// The line of the copy.
        line: usize,
        /// The line where it appeared first.
        first_line: usize,
    },
    /// Entries are missing from the middle or the end of the log.
    #[error(
        "entries seq {first_seq}..={last_seq} were deleted (the gap ends before line {next_line:?})"
    )]
    EntriesDeleted {
        /// First missing seq.
        first_seq: u64,
        /// Last missing seq.
        last_seq: u64,
        /// The line of the entry that follows the gap, if any.
        next_line: Option<usize>,
    },
    /// An authentic entry is out of place: entries were swapped or moved.
    #[error("entry seq {seq} at line {line} is out of order (it follows seq {follows_seq:?})")]
    OutOfOrder {
        /// The entry's seq.
        seq: u64,
        /// The line.
        line: usize,
        /// The seq of the authentic entry on the line before it.
        follows_seq: Option<u64>,
    },
    /// An authentic entry does not link to its authentic predecessor: entries
    /// from another log signed with the same key were spliced in.
    #[error("entry seq {seq} at line {line} does not chain to the hash of seq {seq}-1")]
    ChainBroken {
        /// The entry's seq.
        seq: u64,
        /// The line.
        line: usize,
    },
    /// The head says the log went further than the file does.
    #[error(
        "the tail was truncated: the signed head is at seq {head_seq}, the log ends at {last_seq:?}"
    )]
    TailTruncated {
        /// The head's seq.
        head_seq: u64,
        /// The log's last seq, `None` if it is empty.
        last_seq: Option<u64>,
    },
    /// The entry at the head's seq is not the one the head signed.
    #[error("entry seq {seq} at line {line} differs from the signed head's hash")]
    HeadMismatch {
        /// The head's seq.
        seq: u64,
        /// The line of the entry.
        line: usize,
    },
    /// The head is not signed by the coordinator's key.
    #[error("the head checkpoint (seq {seq}) is not signed by the coordinator's key")]
    HeadBadSignature {
        /// The seq the head claims.
        seq: u64,
    },
}

impl TamperFinding {
    /// The line the finding is about, for ordering and for readers.
    pub fn line(&self) -> Option<usize> {
        match self {
            TamperFinding::MalformedLine { line, .. }
            | TamperFinding::TornTail { line, .. }
            | TamperFinding::EntryModified { line, .. }
            | TamperFinding::BadSignature { line, .. }
            | TamperFinding::InsertedEntry { line, .. }
            | TamperFinding::DuplicateEntry { line, .. }
            | TamperFinding::OutOfOrder { line, .. }
            | TamperFinding::ChainBroken { line, .. }
            | TamperFinding::HeadMismatch { line, .. } => Some(*line),
            TamperFinding::EntriesDeleted { next_line, .. } => *next_line,
            TamperFinding::TailTruncated { .. } | TamperFinding::HeadBadSignature { .. } => None,
        }
    }
}

/// Everything found wrong with a log, in line order. Never empty.
#[derive(Clone, Debug, PartialEq)]
pub struct TamperEvidence {
    /// The findings.
    pub findings: Vec<TamperFinding>,
}

impl fmt::Display for TamperEvidence {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "the audit log fails verification:")?;
        for finding in &self.findings {
            write!(formatter, "\n  - {finding}")?;
        }
        Ok(())
    }
}

impl std::error::Error for TamperEvidence {}

/// Why a log file could not be verified.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The file could not be read.
    #[error("reading audit log {path}: {source}")]
    Io {
        /// The log file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The file was read and fails verification.
    #[error(transparent)]
    Tampered(#[from] TamperEvidence),
}

/// What a successful verification established.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifyReport {
    /// Every entry, in seq order, each authentic and chained to the previous.
    pub entries: Vec<AuditEntry>,
    /// The head that was checked, if one was given.
    pub head_seq: Option<u64>,
    /// Entries after the given head: normally 0; 1 after a crash between an
    /// append and its head update, more if the head given is an older one kept
    /// by an auditor.
    pub entries_after_head: u64,
}

impl VerifyReport {
    /// The last entry, if the log is not empty.
    pub fn last(&self) -> Option<&AuditEntry> {
        self.entries.last()
    }
}

/// One line (or list position) prepared for the analysis.
struct LineRecord {
    line: usize,
    entry: Option<AuditEntry>,
    status: Result<(), LineFault>,
}

/// Verifies the contents of a log file.
pub fn verify_log_bytes(
    contents: &[u8],
    public_key: &AuditPublicKey,
    head: Option<&Head>,
) -> Result<VerifyReport, TamperEvidence> {
    let split = split_lines(contents);
    let records = split
        .complete
        .iter()
        .enumerate()
        .map(|(index, line)| {
            let (entry, status) = AuditEntry::parse_line(line, public_key);
            LineRecord {
                line: index + 1,
                entry,
                status,
            }
        })
        .collect();
    let torn = split.torn.map(|fragment| TamperFinding::TornTail {
        line: split.complete.len() + 1,
        bytes: fragment.len(),
    });
    analyse(records, torn, public_key, head)
}

/// Reads and verifies a log file.
pub fn verify_log_file(
    path: &Path,
    public_key: &AuditPublicKey,
    head: Option<&Head>,
) -> Result<VerifyReport, VerifyError> {
    let contents = std::fs::read(path).map_err(|source| VerifyError::Io {
        path: path.to_owned(),
        source,
    })?;
    Ok(verify_log_bytes(&contents, public_key, head)?)
}

/// Verifies entries already in memory; "line" in findings is the 1-based position.
pub fn verify_entries(
    entries: &[AuditEntry],
    public_key: &AuditPublicKey,
    head: Option<&Head>,
) -> Result<VerifyReport, TamperEvidence> {
    let records = entries
        .iter()
        .enumerate()
        .map(|(index, entry)| LineRecord {
            line: index + 1,
            status: entry.check(public_key),
            entry: Some(entry.clone()),
        })
        .collect();
    analyse(records, None, public_key, head)
}

fn analyse(
    records: Vec<LineRecord>,
    torn: Option<TamperFinding>,
    public_key: &AuditPublicKey,
    head: Option<&Head>,
) -> Result<VerifyReport, TamperEvidence> {
    let mut findings: Vec<TamperFinding> = torn.into_iter().collect();

    // Authentic entries by seq, keeping the first copy of any duplicate.
    let mut authentic: BTreeMap<u64, usize> = BTreeMap::new();
    let mut is_placed_authentic = vec![false; records.len()];
    for (index, record) in records.iter().enumerate() {
        let Some(entry) = record.entry.as_ref().filter(|_| record.status.is_ok()) else {
            continue;
        };
        match authentic.get(&entry.seq) {
            Some(&first) => findings.push(TamperFinding::DuplicateEntry {
                seq: entry.seq,
                line: record.line,
                first_line: records[first].line,
            }),
            None => {
                authentic.insert(entry.seq, index);
                is_placed_authentic[index] = true;
            }
        }
    }
    let seq_of = |index: usize| records[index].entry.as_ref().map_or(0, |entry| entry.seq);
    let authentic_in_file_order: Vec<usize> = (0..records.len())
        .filter(|&index| is_placed_authentic[index])
        .collect();

    // Reordering: the longest run of authentic entries already in increasing
    // order stays; every other authentic entry was moved.
    let in_order = longest_increasing_run(
        &authentic_in_file_order
            .iter()
            .map(|&index| seq_of(index))
            .collect::<Vec<_>>(),
    );
    for (position, &index) in authentic_in_file_order.iter().enumerate() {
        if !in_order.contains(&position) {
            findings.push(TamperFinding::OutOfOrder {
                seq: seq_of(index),
                line: records[index].line,
                follows_seq: position
                    .checked_sub(1)
                    .map(|previous| seq_of(authentic_in_file_order[previous])),
            });
        }
    }

    // Lines that are not authentic: replacements of a missing entry, or insertions.
    let mut placed: BTreeMap<u64, usize> = authentic.clone();
    let mut expected_seq = 0u64;
    let mut next_authentic_seq: Vec<Option<u64>> = vec![None; records.len() + 1];
    for index in (0..records.len()).rev() {
        next_authentic_seq[index] = if is_placed_authentic[index] {
            Some(seq_of(index))
        } else {
            next_authentic_seq[index + 1]
        };
    }
    for (index, record) in records.iter().enumerate() {
        if let (Some(entry), Ok(())) = (&record.entry, &record.status) {
            if is_placed_authentic[index] {
                expected_seq = entry.seq.saturating_add(1);
            }
            continue;
        }
        // A hole is bounded by the next authentic entry; past the last one,
        // only the next seq is believable (a forged line must not be able to
        // claim that the log once reached seq 2^64 - 1).
        let fits_hole = |seq: u64| {
            !placed.contains_key(&seq)
                && seq >= expected_seq
                && next_authentic_seq[index + 1].map_or(seq == expected_seq, |next| seq < next)
        };
        let claimed_seq = record.entry.as_ref().map(|entry| entry.seq);
        let replaced_seq = claimed_seq
            .filter(|&seq| fits_hole(seq))
            .or_else(|| fits_hole(expected_seq).then_some(expected_seq));
        let Some(seq) = replaced_seq else {
            findings.push(TamperFinding::InsertedEntry {
                line: record.line,
                claimed_seq,
            });
            continue;
        };
        placed.insert(seq, index);
        expected_seq = seq.saturating_add(1);
        findings.push(match &record.status {
            Err(LineFault::Unparseable(reason)) => TamperFinding::MalformedLine {
                line: record.line,
                expected_seq: seq,
                reason: reason.clone(),
            },
            Err(LineFault::BadSignature) if claimed_seq == Some(seq) => {
                TamperFinding::BadSignature {
                    seq,
                    line: record.line,
                }
            }
            _ => TamperFinding::EntryModified {
                seq,
                line: record.line,
            },
        });
    }

    // Deletions: the holes between the seqs that some line accounts for.
    // Walking the placed seqs (not every integer up to the last) keeps the
    // cost linear whatever seq a forged line claims.
    let last_seq = placed.keys().next_back().copied();
    let mut previous_seq: Option<u64> = None;
    for (&seq, &index) in &placed {
        let first_missing = previous_seq.map_or(0, |previous| previous + 1);
        if seq > first_missing {
            findings.push(TamperFinding::EntriesDeleted {
                first_seq: first_missing,
                last_seq: seq - 1,
                next_line: Some(records[index].line),
            });
        }
        previous_seq = Some(seq);
    }

    // The chain between authentic neighbours in seq order.
    for (&seq, &index) in &authentic {
        let entry = records[index].entry.as_ref();
        let expected_prev = if seq == 0 {
            Some(GENESIS_PREV_HASH)
        } else {
            authentic
                .get(&(seq - 1))
                .and_then(|&previous| records[previous].entry.as_ref())
                .map(|previous| previous.hash)
        };
        if let (Some(entry), Some(expected_prev)) = (entry, expected_prev)
            && entry.prev_hash != expected_prev
        {
            findings.push(TamperFinding::ChainBroken {
                seq,
                line: records[index].line,
            });
        }
    }

    // The head: the log must reach it, and hold the entry it signed.
    let mut entries_after_head = 0;
    if let Some(head) = head {
        if !head.is_signed_by(public_key) {
            findings.push(TamperFinding::HeadBadSignature { seq: head.seq });
        } else if last_seq.is_none_or(|last| head.seq > last) {
            findings.push(TamperFinding::TailTruncated {
                head_seq: head.seq,
                last_seq,
            });
        } else {
            if let Some(&index) = authentic.get(&head.seq)
                && records[index].entry.as_ref().map(|entry| entry.hash) != Some(head.hash)
            {
                findings.push(TamperFinding::HeadMismatch {
                    seq: head.seq,
                    line: records[index].line,
                });
            }
            entries_after_head = last_seq.map_or(0, |last| last - head.seq);
        }
    }

    if !findings.is_empty() {
        findings.sort_by_key(|finding| finding.line().unwrap_or(usize::MAX));
        return Err(TamperEvidence { findings });
    }
    let mut records = records;
    let entries = authentic
        .values()
        .filter_map(|&index| records[index].entry.take())
        .collect();
    Ok(VerifyReport {
        entries,
        head_seq: head.map(|head| head.seq),
        entries_after_head,
    })
}

/// Positions of one longest strictly increasing subsequence of `values`
/// (patience sorting, O(n log n)).
fn longest_increasing_run(values: &[u64]) -> BTreeSet<usize> {
    // `tails[k]` is the position ending the best increasing run of length k+1.
    let mut tails: Vec<usize> = Vec::new();
    let mut predecessor: Vec<Option<usize>> = vec![None; values.len()];
    for (position, &value) in values.iter().enumerate() {
        let length = tails.partition_point(|&tail| values[tail] < value);
        predecessor[position] = length.checked_sub(1).map(|previous| tails[previous]);
        if length == tails.len() {
            tails.push(position);
        } else {
            tails[length] = position;
        }
    }
    let mut run = BTreeSet::new();
    let mut cursor = tails.last().copied();
    while let Some(position) = cursor {
        run.insert(position);
        cursor = predecessor[position];
    }
    run
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_increasing_run_leaves_out_the_moved_values() {
        let check = |values: &[u64], moved: &[usize]| {
            let run = longest_increasing_run(values);
            let outside: Vec<usize> = (0..values.len()).filter(|p| !run.contains(p)).collect();
            assert_eq!(outside, moved, "{values:?}");
        };
        check(&[], &[]);
        check(&[0, 1, 2, 3], &[]);
        check(&[0, 1, 5, 3, 4, 2, 6], &[2, 5]);
        check(&[3, 0, 1, 2], &[0]);
    }
}
