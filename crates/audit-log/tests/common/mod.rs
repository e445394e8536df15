//! Shared fixtures for the integration tests: sample events and small logs on disk.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ring::rand::SystemRandom;
use ring::signature::Ed25519KeyPair;
use tempfile::TempDir;
use veil_audit_log::{
    AuditEntry, AuditEvent, AuditLog, AuditLogConfig, AuditPublicKey, AuditSigner, EpsilonCharge,
    Head, SyncPolicy, head_path_for, verify_log_file,
};

/// A fresh PKCS#8 key, so a test can build two signers with the same key.
pub fn pkcs8() -> Vec<u8> {
    Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .unwrap()
        .as_ref()
        .to_vec()
}

/// Signs `message` with a key that is not the coordinator's.
pub fn sign_with_foreign_key(message: &[u8]) -> Vec<u8> {
    let key_pair = Ed25519KeyPair::from_pkcs8(&pkcs8()).unwrap();
    key_pair.sign(message).as_ref().to_vec()
}

pub fn round_committed(job_id: &str, round: u64, epsilon: f64) -> AuditEvent {
    AuditEvent::RoundCommitted {
        job_id: job_id.into(),
        round,
        participants: vec!["node-a".into(), "node-b".into(), "node-c".into()],
        epsilon_charged: ["node-a", "node-b", "node-c"]
            .iter()
            .map(|partner| EpsilonCharge {
                partner: (*partner).into(),
                unit: "customer".into(),
                epsilon,
            })
            .collect(),
        model_sha256: [round as u8; 32],
    }
}

/// The `index`-th sample event: cycles through every kind so fixtures cover them all.
pub fn sample_event(index: u64) -> AuditEvent {
    let job_id = format!("job-{}", index / 12);
    match index % 12 {
        0 => AuditEvent::JobCreated {
            job_id,
            spec_sha256: [index as u8; 32],
        },
        1 => AuditEvent::RoundStarted {
            job_id,
            round: index,
            participants: vec!["node-a".into(), "node-b".into(), "node-c".into()],
            mechanism: BTreeMap::from([
                ("clip_norm".to_owned(), "1.0".to_owned()),
                ("noise_multiplier".to_owned(), "1.1".to_owned()),
            ]),
        },
        // Multiples of 1/4 are exact in binary, so tests can compare ε with `==`.
        2 => round_committed(&job_id, index, 0.25 * index as f64),
        3 => AuditEvent::ModelReleased {
            job_id,
            version: index,
            model_sha256: [3; 32],
        },
        4 => AuditEvent::ModelExported {
            job_id,
            version: index,
            model_sha256: [4; 32],
            // A control character from a hostile peer: JSON spells it `\u001b`,
            // and `\u001B` would read the same, which the canonical check catches.
            destination: "FetchModel \u{1b}[0m".into(),
        },
        5 => AuditEvent::BudgetRefused {
            job_id,
            round: index,
            partner: "node-b".into(),
            unit: "customer".into(),
            requested_epsilon: 0.5,
            // 2^-40 prints with an exponent (`…e-13`), which JSON would also read as `E`.
            remaining_epsilon: 2f64.powi(-40),
        },
        6 => AuditEvent::NodeVeto {
            job_id,
            round: index,
            node_id: "node-c".into(),
            reason: "local policy: \"no weekends\"\n".into(),
        },
        7 => AuditEvent::AuthFailure {
            peer: "cn=intruder".into(),
            rpc: "StartJob".into(),
            reason: "node certificate on operator RPC".into(),
        },
        8 => AuditEvent::CertificateIssued {
            role: "node".into(),
            name: "node-d".into(),
            serial: "0a1b".into(),
        },
        9 => AuditEvent::CertificateRevoked {
            serial: "0a1b".into(),
            reason: "key compromise".into(),
        },
        10 => AuditEvent::EvaluationReleased {
            job_id,
            round: index,
            participants: vec!["node-a".into(), "node-b".into()],
            epsilon_charged: vec![EpsilonCharge {
                partner: "node-a".into(),
                unit: "customer".into(),
                epsilon: 0.125,
            }],
        },
        _ => AuditEvent::Note {
            text: "maintenance window — ünïcode".into(),
        },
    }
}

/// A log of `entries` sample entries on disk, with its head and parsed entries.
pub struct Fixture {
    /// Keeps the directory alive.
    pub directory: TempDir,
    pub log_path: PathBuf,
    pub public_key: AuditPublicKey,
    pub head: Head,
    pub entries: Vec<AuditEntry>,
    pub lines: Vec<String>,
}

impl Fixture {
    pub fn new(entries: u64) -> Self {
        Self::with_signer(
            entries,
            AuditSigner::generate_ephemeral().unwrap(),
            "coordinator",
        )
    }

    /// A log written by `signer` with every entry's actor set to `actor`.
    pub fn with_signer(entries: u64, signer: AuditSigner, actor: &str) -> Self {
        let directory = tempfile::tempdir().unwrap();
        let log_path = directory.path().join("audit.jsonl");
        let mut log = open_log(&log_path, signer, SyncPolicy::OsBuffered);
        for index in 0..entries {
            log.append(1_700_000_000_000 + index as i64, actor, sample_event(index))
                .unwrap();
        }
        let public_key = log.public_key();
        drop(log);
        let head = Head::read(&head_path_for(&log_path)).unwrap().unwrap();
        let report = verify_log_file(&log_path, &public_key, Some(&head)).unwrap();
        let lines = read_lines(&log_path);
        Fixture {
            directory,
            log_path,
            public_key,
            head,
            entries: report.entries,
            lines,
        }
    }
}

pub fn open_log(path: &Path, signer: AuditSigner, sync: SyncPolicy) -> AuditLog {
    AuditLog::open(
        AuditLogConfig {
            log_path: path.to_owned(),
            sync,
        },
        signer,
    )
    .unwrap()
}

pub fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

pub fn write_lines(path: &Path, lines: &[String]) {
    let mut contents = lines.join("\n");
    if !lines.is_empty() {
        contents.push('\n');
    }
    std::fs::write(path, contents).unwrap();
}
