//! The canonical binary encoding that hashes and signatures cover.
//!
//! Why not hash the JSON line: JSON has many spellings of one value (key order,
//! whitespace, escapes, `1e5` against `100000.0`) and its exact output depends
//! on the serialiser's version. Hashing a length-prefixed binary encoding keeps
//! a v1 log verifiable whatever happens to the JSON library. Every string and
//! list is prefixed with its length, so no two different field values encode to
//! the same bytes; every event starts with its own tag byte; integers are
//! big-endian; floats are their IEEE-754 bits. Tag bytes and field order are
//! part of format v1 and must never change; a new event gets a new tag.
//!
//! Each message starts with its own domain tag so an entry hash, a head and a
//! receipt can never be mistaken for each other, whatever their contents.

use std::collections::BTreeMap;

use ring::digest::{Context, SHA256};

use crate::event::{AuditEvent, EpsilonCharge};

/// Domain tag of entry hashes.
const ENTRY_DOMAIN: &[u8] = b"veil.audit.v1.entry\0";
/// Domain tag of signed head checkpoints.
const HEAD_DOMAIN: &[u8] = b"veil.audit.v1.head\0";
/// Domain tag of signed receipts.
const RECEIPT_DOMAIN: &[u8] = b"veil.audit.v1.receipt\0";

/// The `prev_hash` of the first entry.
pub const GENESIS_PREV_HASH: [u8; 32] = [0; 32];

/// Appends fields to a byte buffer in the canonical layout.
struct CanonicalWriter {
    bytes: Vec<u8>,
}

impl CanonicalWriter {
    fn with_domain(domain: &[u8]) -> Self {
        let mut bytes = Vec::with_capacity(256);
        bytes.extend_from_slice(domain);
        CanonicalWriter { bytes }
    }

    fn tag(&mut self, tag: u8) {
        self.bytes.push(tag);
    }

    fn u64(&mut self, value: u64) {
        self.bytes.extend_from_slice(&value.to_be_bytes());
    }

    fn i64(&mut self, value: i64) {
        self.bytes.extend_from_slice(&value.to_be_bytes());
    }

    fn f64(&mut self, value: f64) {
        self.u64(value.to_bits());
    }

    fn length(&mut self, length: usize) {
        // usize always fits in u64 on supported targets.
        self.u64(length as u64);
    }

    fn str(&mut self, value: &str) {
        self.length(value.len());
        self.bytes.extend_from_slice(value.as_bytes());
    }

    fn digest(&mut self, digest: &[u8; 32]) {
        self.bytes.extend_from_slice(digest);
    }

    fn strings(&mut self, values: &[String]) {
        self.length(values.len());
        values.iter().for_each(|value| self.str(value));
    }

    fn string_map(&mut self, map: &BTreeMap<String, String>) {
        self.length(map.len());
        for (key, value) in map {
            self.str(key);
            self.str(value);
        }
    }

    fn charges(&mut self, charges: &[EpsilonCharge]) {
        self.length(charges.len());
        for charge in charges {
            self.str(&charge.partner);
            self.str(&charge.unit);
            self.f64(charge.epsilon);
        }
    }

    fn event(&mut self, event: &AuditEvent) {
        match event {
            AuditEvent::JobCreated {
                job_id,
                spec_sha256,
            } => {
                self.tag(1);
                self.str(job_id);
                self.digest(spec_sha256);
            }
            AuditEvent::RoundStarted {
                job_id,
                round,
                participants,
                mechanism,
            } => {
                self.tag(2);
                self.str(job_id);
                self.u64(*round);
                self.strings(participants);
                self.string_map(mechanism);
            }
            AuditEvent::RoundCommitted {
                job_id,
                round,
                participants,
                epsilon_charged,
                model_sha256,
            } => {
                self.tag(3);
                self.str(job_id);
                self.u64(*round);
                self.strings(participants);
                self.charges(epsilon_charged);
                self.digest(model_sha256);
            }
            AuditEvent::ModelReleased {
                job_id,
                version,
                model_sha256,
            } => {
                self.tag(4);
                self.str(job_id);
                self.u64(*version);
                self.digest(model_sha256);
            }
            AuditEvent::ModelExported {
                job_id,
                version,
                model_sha256,
                destination,
            } => {
                self.tag(5);
                self.str(job_id);
                self.u64(*version);
                self.digest(model_sha256);
                self.str(destination);
            }
            AuditEvent::BudgetRefused {
                job_id,
                round,
                partner,
                unit,
                requested_epsilon,
                remaining_epsilon,
            } => {
                self.tag(6);
                self.str(job_id);
                self.u64(*round);
                self.str(partner);
                self.str(unit);
                self.f64(*requested_epsilon);
                self.f64(*remaining_epsilon);
            }
            AuditEvent::NodeVeto {
                job_id,
                round,
                node_id,
                reason,
            } => {
                self.tag(7);
                self.str(job_id);
                self.u64(*round);
                self.str(node_id);
                self.str(reason);
            }
            AuditEvent::AuthFailure { peer, rpc, reason } => {
                self.tag(8);
                self.str(peer);
                self.str(rpc);
                self.str(reason);
            }
            AuditEvent::CertificateIssued { role, name, serial } => {
                self.tag(9);
                self.str(role);
                self.str(name);
                self.str(serial);
            }
            AuditEvent::CertificateRevoked { serial, reason } => {
                self.tag(10);
                self.str(serial);
                self.str(reason);
            }
            AuditEvent::Note { text } => {
                self.tag(11);
                self.str(text);
            }
            AuditEvent::EvaluationReleased {
                job_id,
                round,
                participants,
                epsilon_charged,
            } => {
                self.tag(12);
                self.str(job_id);
                self.u64(*round);
                self.strings(participants);
                self.charges(epsilon_charged);
            }
            AuditEvent::PrivacyAuditRecorded {
                job_id,
                partner,
                commitment,
                attack,
                canaries,
                guesses,
                correct,
                delta,
                confidence,
                epsilon_lower,
                epsilon_lower_gaussian,
                epsilon_upper,
            } => {
                self.tag(13);
                self.str(job_id);
                self.str(partner);
                self.digest(commitment);
                self.str(attack);
                self.u64(*canaries);
                self.u64(*guesses);
                self.u64(*correct);
                self.f64(*delta);
                self.f64(*confidence);
                self.f64(*epsilon_lower);
                self.f64(*epsilon_lower_gaussian);
                // Absent is its own byte, so no ε can encode like "no DP".
                match epsilon_upper {
                    None => self.tag(0),
                    Some(upper) => {
                        self.tag(1);
                        self.f64(*upper);
                    }
                }
            }
        }
    }

    fn sha256(&self) -> [u8; 32] {
        let mut context = Context::new(&SHA256);
        context.update(&self.bytes);
        let mut digest = [0u8; 32];
        digest.copy_from_slice(context.finish().as_ref());
        digest
    }
}

/// SHA-256(entry domain ‖ prev_hash ‖ seq ‖ at ‖ actor ‖ event): the entry's hash.
pub fn entry_hash(
    prev_hash: &[u8; 32],
    seq: u64,
    at_unix_ms: i64,
    actor: &str,
    event: &AuditEvent,
) -> [u8; 32] {
    let mut writer = CanonicalWriter::with_domain(ENTRY_DOMAIN);
    writer.digest(prev_hash);
    writer.u64(seq);
    writer.i64(at_unix_ms);
    writer.str(actor);
    writer.event(event);
    writer.sha256()
}

/// The bytes a head checkpoint's signature covers.
pub fn head_message(seq: u64, hash: &[u8; 32]) -> Vec<u8> {
    let mut writer = CanonicalWriter::with_domain(HEAD_DOMAIN);
    writer.u64(seq);
    writer.digest(hash);
    writer.bytes
}

/// The bytes a receipt's signature covers.
pub fn receipt_message(
    job_id: &str,
    round: u64,
    node_id: &str,
    entry_seq: u64,
    entry_hash: &[u8; 32],
    charges: &[EpsilonCharge],
) -> Vec<u8> {
    let mut writer = CanonicalWriter::with_domain(RECEIPT_DOMAIN);
    writer.str(job_id);
    writer.u64(round);
    writer.str(node_id);
    writer.u64(entry_seq);
    writer.digest(entry_hash);
    writer.charges(charges);
    writer.bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(text: &str) -> AuditEvent {
        AuditEvent::Note {
            text: text.to_owned(),
        }
    }

    #[test]
    fn length_prefixes_keep_field_boundaries_apart() {
        // Same concatenated text, different split between actor and note.
        let first = entry_hash(&GENESIS_PREV_HASH, 0, 0, "ab", &note("c"));
        let second = entry_hash(&GENESIS_PREV_HASH, 0, 0, "a", &note("bc"));
        assert_ne!(first, second);
    }

    #[test]
    fn every_covered_field_changes_the_hash() {
        let base = entry_hash(&GENESIS_PREV_HASH, 3, 10, "coordinator", &note("x"));
        assert_ne!(base, entry_hash(&[1; 32], 3, 10, "coordinator", &note("x")));
        assert_ne!(
            base,
            entry_hash(&GENESIS_PREV_HASH, 4, 10, "coordinator", &note("x"))
        );
        assert_ne!(
            base,
            entry_hash(&GENESIS_PREV_HASH, 3, 11, "coordinator", &note("x"))
        );
        assert_ne!(
            base,
            entry_hash(&GENESIS_PREV_HASH, 3, 10, "operator", &note("x"))
        );
        assert_ne!(
            base,
            entry_hash(&GENESIS_PREV_HASH, 3, 10, "coordinator", &note("y"))
        );
    }

    #[test]
    fn a_privacy_audit_without_an_upper_bound_never_encodes_like_one_with_it() {
        let audit = |epsilon_upper| AuditEvent::PrivacyAuditRecorded {
            job_id: "job-1".to_owned(),
            partner: "retailer-a".to_owned(),
            commitment: [3; 32],
            attack: "black-box-loss".to_owned(),
            canaries: 1000,
            guesses: 20,
            correct: 20,
            delta: 1e-5,
            confidence: 0.95,
            epsilon_lower: 1.5,
            epsilon_lower_gaussian: 2.0,
            epsilon_upper,
        };
        let hash = |event: &AuditEvent| entry_hash(&GENESIS_PREV_HASH, 0, 0, "auditor/a", event);
        assert_ne!(hash(&audit(None)), hash(&audit(Some(0.0))));
        assert_ne!(hash(&audit(Some(2.0))), hash(&audit(Some(3.0))));
        assert_eq!(audit(None).kind(), "privacy_audit_recorded");
        assert!(audit(Some(f64::INFINITY)).validate().is_err());
    }

    #[test]
    fn domains_separate_heads_from_receipts() {
        assert!(head_message(0, &[0; 32]).starts_with(HEAD_DOMAIN));
        assert!(receipt_message("j", 0, "n", 0, &[0; 32], &[]).starts_with(RECEIPT_DOMAIN));
    }
}
