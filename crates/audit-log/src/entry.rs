//! One audit entry: its fields, how it is sealed (hashed and signed), and its
//! one-line JSON form.

use serde::{Deserialize, Serialize};

use crate::canonical;
use crate::event::AuditEvent;
use crate::hex;
use crate::key::{AuditPublicKey, AuditSigner};

/// One record of the audit log, chained to its predecessor and signed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// Position in the log: 0 for the first entry, then consecutive.
    pub seq: u64,
    /// When the event happened, in milliseconds since the Unix epoch, as given
    /// by the caller (this crate reads no clock).
    pub at_unix_ms: i64,
    /// Who caused the event: a certificate name or role, or `coordinator`.
    pub actor: String,
    /// What happened.
    pub event: AuditEvent,
    /// The previous entry's hash; all zeros for the first entry.
    #[serde(with = "hex::digest")]
    pub prev_hash: [u8; 32],
    /// SHA-256 over a domain tag, `prev_hash` and the canonical encoding of
    /// `seq`, `at_unix_ms`, `actor` and `event` (see `canonical`).
    #[serde(with = "hex::digest")]
    pub hash: [u8; 32],
    /// The coordinator's Ed25519 signature of `hash`.
    #[serde(with = "hex::bytes")]
    pub signature: Vec<u8>,
}

/// Why a line is not a sound entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LineFault {
    /// Not an entry at all: bad JSON, a missing or unknown field, bad hex.
    Unparseable(String),
    /// The fields' content does not produce the stored hash, or the line is
    /// not the canonical spelling of its entry.
    HashMismatch,
    /// The hash is right but the signature is not the key's.
    BadSignature,
}

impl AuditEntry {
    /// Builds, hashes and signs the entry that follows `prev_hash` at `seq`.
    pub(crate) fn seal(
        signer: &AuditSigner,
        seq: u64,
        prev_hash: [u8; 32],
        at_unix_ms: i64,
        actor: String,
        event: AuditEvent,
    ) -> Self {
        let hash = canonical::entry_hash(&prev_hash, seq, at_unix_ms, &actor, &event);
        AuditEntry {
            seq,
            at_unix_ms,
            actor,
            event,
            prev_hash,
            signature: signer.sign(&hash),
            hash,
        }
    }

    /// Recomputes the hash from the entry's content.
    pub fn computed_hash(&self) -> [u8; 32] {
        canonical::entry_hash(
            &self.prev_hash,
            self.seq,
            self.at_unix_ms,
            &self.actor,
            &self.event,
        )
    }

    /// The entry's one-line JSON form, without the trailing newline.
    pub fn to_line(&self) -> String {
        // Serialising plain structs, strings and finite floats cannot fail;
        // an empty line would be reported as malformed by any reader.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Checks hash then signature, so a content edit is named as such rather
    /// than as a bad signature.
    pub(crate) fn check(&self, public_key: &AuditPublicKey) -> Result<(), LineFault> {
        if self.computed_hash() != self.hash {
            return Err(LineFault::HashMismatch);
        }
        if !public_key.verifies(&self.hash, &self.signature) {
            return Err(LineFault::BadSignature);
        }
        Ok(())
    }

    /// Parses a line and checks that it is the canonical spelling of the entry
    /// it holds, then checks the hash and signature.
    ///
    /// The canonical-spelling check is what makes every byte of the line
    /// matter: JSON would otherwise accept `1E-5` for `1e-5`, and the hash
    /// (over a binary encoding) could not tell.
    pub(crate) fn parse_line(
        line: &[u8],
        public_key: &AuditPublicKey,
    ) -> (Option<AuditEntry>, Result<(), LineFault>) {
        let entry: AuditEntry = match serde_json::from_slice(line) {
            Ok(entry) => entry,
            Err(error) => return (None, Err(LineFault::Unparseable(error.to_string()))),
        };
        let outcome = if entry.to_line().as_bytes() != line {
            Err(LineFault::HashMismatch)
        } else {
            entry.check(public_key)
        };
        (Some(entry), outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::GENESIS_PREV_HASH;
    use crate::event::EpsilonCharge;

    fn committed() -> AuditEvent {
        AuditEvent::RoundCommitted {
            job_id: "job-1".into(),
            round: 2,
            participants: vec!["n1".into(), "n2".into()],
            epsilon_charged: vec![EpsilonCharge {
                partner: "n1".into(),
                unit: "customer".into(),
                epsilon: 1e-5,
            }],
            model_sha256: [7; 32],
        }
    }

    #[test]
    fn sealed_entry_round_trips_through_its_line() {
        let signer = AuditSigner::generate_ephemeral().unwrap();
        let entry = AuditEntry::seal(&signer, 0, GENESIS_PREV_HASH, 5, "op".into(), committed());
        let line = entry.to_line();
        assert!(!line.contains('\n'));
        let (parsed, outcome) = AuditEntry::parse_line(line.as_bytes(), &signer.public_key());
        assert_eq!(outcome, Ok(()));
        assert_eq!(parsed, Some(entry));
    }

    #[test]
    fn equivalent_but_non_canonical_spelling_is_a_hash_mismatch() {
        let signer = AuditSigner::generate_ephemeral().unwrap();
        let entry = AuditEntry::seal(&signer, 0, GENESIS_PREV_HASH, 5, "op".into(), committed());
        let line = entry.to_line();
        // JSON reads both spellings as the same number.
        assert!(line.contains("0.00001"), "{line}");
        let respelled = line.replace("0.00001", "1e-5");
        let (parsed, outcome) = AuditEntry::parse_line(respelled.as_bytes(), &signer.public_key());
        assert_eq!(parsed, Some(entry));
        assert_eq!(outcome, Err(LineFault::HashMismatch));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let signer = AuditSigner::generate_ephemeral().unwrap();
        let entry = AuditEntry::seal(&signer, 0, GENESIS_PREV_HASH, 5, "op".into(), committed());
        let line = entry
            .to_line()
            .replacen("{\"seq\"", "{\"extra\":1,\"seq\"", 1);
        let (parsed, outcome) = AuditEntry::parse_line(line.as_bytes(), &signer.public_key());
        assert_eq!(parsed, None);
        assert!(matches!(outcome, Err(LineFault::Unparseable(_))));
    }
}
