//! The `coordinator` command line as an operator and an auditor use it:
//! creating a CA, issuing and revoking certificates, refusing to serve
//! without either TLS or the explicit development flag, and verifying an
//! audit log, which names the tampering when a byte changes.

use std::path::Path;
use std::process::{Command, Output};

fn coordinator(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_coordinator"))
        .args(args)
        .current_dir(dir)
        .env_remove("VEIL_TLS_DIR")
        .output()
        .expect("the coordinator binary runs")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn ca_commands_issue_and_revoke_member_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let init = coordinator(
        &["ca", "init", "--ca-dir", "ca", "--name", "test-federation"],
        dir.path(),
    );
    assert!(init.status.success(), "{}", text(&init));
    let issue = coordinator(
        &[
            "ca", "issue", "--ca-dir", "ca", "--role", "node", "--name", "node-a", "--out",
            "node-a",
        ],
        dir.path(),
    );
    assert!(issue.status.success(), "{}", text(&issue));
    for file in ["ca.pem", "node-a.pem", "node-a-key.pem"] {
        assert!(
            dir.path().join("node-a").join(file).exists(),
            "{file} missing"
        );
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("node-a/node-a-key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the key is readable by others: {mode:o}");
    }
    let issued = text(&issue);
    let serial = issued
        .split_whitespace()
        .skip_while(|word| *word != "serial")
        .nth(1)
        .expect("the serial is printed");
    let revoke = coordinator(
        &["ca", "revoke", "--ca-dir", "ca", "--serial", serial],
        dir.path(),
    );
    assert!(revoke.status.success(), "{}", text(&revoke));
    let list =
        std::fs::read_to_string(dir.path().join("ca").join(veil_pki::REVOCATIONS_FILE)).unwrap();
    assert!(list.contains(serial));
    // A coordinator certificate needs a host name.
    let no_host = coordinator(
        &[
            "ca",
            "issue",
            "--ca-dir",
            "ca",
            "--role",
            "coordinator",
            "--name",
            "c",
            "--out",
            "c",
        ],
        dir.path(),
    );
    assert!(!no_host.status.success());
}

#[test]
fn serving_needs_tls_or_the_explicit_development_flag() {
    let dir = tempfile::tempdir().unwrap();
    let output = coordinator(
        &["serve", "--listen", "127.0.0.1:0", "--state-dir", "state"],
        dir.path(),
    );
    assert!(!output.status.success());
    assert!(
        text(&output).contains("--insecure-dev"),
        "{}",
        text(&output)
    );
}

#[test]
fn audit_verify_accepts_an_intact_log_and_names_a_changed_byte() {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("audit-signing.key");
    let signer = veil_audit_log::generate_signing_key(&key_path).unwrap();
    let public_key = signer.public_key();
    std::fs::write(
        dir.path().join("audit-public.key"),
        format!("{public_key}\n"),
    )
    .unwrap();
    let log_path = dir.path().join("audit.log");
    let mut log = veil_audit_log::AuditLog::open(
        veil_audit_log::AuditLogConfig {
            log_path: log_path.clone(),
            sync: veil_audit_log::SyncPolicy::EveryAppend,
        },
        signer,
    )
    .unwrap();
    for index in 0..5 {
        log.append(
            1_700_000_000_000 + index,
            "operator/alice",
            veil_audit_log::AuditEvent::Note {
                text: format!("entry {index}"),
            },
        )
        .unwrap();
    }
    drop(log);
    let verify = |dir: &Path| {
        coordinator(
            &[
                "audit",
                "verify",
                "--log",
                "audit.log",
                "--public-key",
                "audit-public.key",
            ],
            dir,
        )
    };
    let intact = verify(dir.path());
    assert!(intact.status.success(), "{}", text(&intact));
    assert!(
        text(&intact).contains("5 entries verified"),
        "{}",
        text(&intact)
    );
    let report = coordinator(
        &[
            "audit",
            "report",
            "--json",
            "--log",
            "audit.log",
            "--public-key",
            "audit-public.key",
        ],
        dir.path(),
    );
    assert!(report.status.success(), "{}", text(&report));

    let mut bytes = std::fs::read(&log_path).unwrap();
    let position = bytes
        .windows(7)
        .position(|window| window == b"entry 2")
        .unwrap();
    bytes[position + 6] = b'9';
    std::fs::write(&log_path, bytes).unwrap();
    let tampered = verify(dir.path());
    assert!(!tampered.status.success());
    assert!(
        text(&tampered).contains("does NOT verify"),
        "{}",
        text(&tampered)
    );
}

fn open_log(dir: &Path, signer: veil_audit_log::AuditSigner) -> veil_audit_log::AuditLog {
    veil_audit_log::AuditLog::open(
        veil_audit_log::AuditLogConfig {
            log_path: dir.join("audit.log"),
            sync: veil_audit_log::SyncPolicy::EveryAppend,
        },
        signer,
    )
    .unwrap()
}

fn round_committed(participants: &[&str], epsilon: f64) -> veil_audit_log::AuditEvent {
    veil_audit_log::AuditEvent::RoundCommitted {
        job_id: "job-1".to_owned(),
        round: 0,
        participants: participants.iter().map(|node| (*node).to_owned()).collect(),
        epsilon_charged: participants
            .iter()
            .map(|node| veil_audit_log::EpsilonCharge {
                partner: (*node).to_owned(),
                unit: "customer".to_owned(),
                epsilon,
            })
            .collect(),
        model_sha256: [7; 32],
    }
}

#[test]
fn audit_reconcile_accepts_matching_receipts_and_names_a_rewritten_log() {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("audit-signing.key");
    let signer = veil_audit_log::generate_signing_key(&key_path).unwrap();
    std::fs::write(
        dir.path().join("audit-public.key"),
        format!("{}\n", signer.public_key()),
    )
    .unwrap();
    let public_key = signer.public_key();
    let mut log = open_log(dir.path(), signer);
    let entry = log
        .append(
            1,
            "coordinator",
            round_committed(&["node-a", "node-b"], 0.25),
        )
        .unwrap();
    let mut store = veil_audit_log::ReceiptStore::open(&dir.path().join("receipts.jsonl")).unwrap();
    for receipt in log.issue_receipts(&entry).unwrap() {
        if receipt.node_id == "node-a" {
            store.append(&receipt, &public_key).unwrap();
        }
    }
    drop(log);
    let reconcile = |dir: &Path| {
        coordinator(
            &[
                "audit",
                "reconcile",
                "--log",
                "audit.log",
                "--public-key",
                "audit-public.key",
                "--receipts",
                "receipts.jsonl",
            ],
            dir,
        )
    };
    let matching = reconcile(dir.path());
    assert!(matching.status.success(), "{}", text(&matching));
    assert!(
        text(&matching).contains("1 of 1 receipts match"),
        "{}",
        text(&matching)
    );

    // Whoever holds the coordinator's key can rewrite the whole log so that
    // it verifies again, here charging node-a less; the receipt exposes it.
    std::fs::remove_file(dir.path().join("audit.log")).unwrap();
    std::fs::remove_file(veil_audit_log::head_path_for(&dir.path().join("audit.log"))).unwrap();
    let mut rewritten = open_log(
        dir.path(),
        veil_audit_log::load_signing_key(&key_path).unwrap(),
    );
    rewritten
        .append(
            1,
            "coordinator",
            round_committed(&["node-a", "node-b"], 0.05),
        )
        .unwrap();
    drop(rewritten);
    let exposed = reconcile(dir.path());
    assert!(!exposed.status.success(), "{}", text(&exposed));
    assert!(
        text(&exposed).contains("MISMATCH") && text(&exposed).contains("seq 0"),
        "{}",
        text(&exposed)
    );
}

#[test]
fn the_serving_coordinator_audits_certificate_issue_and_revocation() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let output = coordinator(args, dir.path());
        assert!(output.status.success(), "{args:?}: {}", text(&output));
        text(&output)
    };
    let serial_of = |printed: &str| {
        printed
            .split_whitespace()
            .skip_while(|word| *word != "serial")
            .nth(1)
            .expect("the serial is printed")
            .to_owned()
    };
    run(&["ca", "init", "--ca-dir", "ca", "--name", "test-federation"]);
    run(&[
        "ca",
        "issue",
        "--ca-dir",
        "ca",
        "--role",
        "coordinator",
        "--name",
        "coordinator",
        "--host",
        "127.0.0.1",
        "--out",
        "coord",
    ]);
    let before_start = serial_of(&run(&[
        "ca", "issue", "--ca-dir", "ca", "--role", "node", "--name", "node-a", "--out", "node-a",
    ]));
    let mut server = Command::new(env!("CARGO_BIN_EXE_coordinator"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tls-dir",
            "coord",
            "--revocations",
            "ca/revoked.txt",
            "--state-dir",
            "state",
        ])
        .current_dir(dir.path())
        .env_remove("VEIL_TLS_DIR")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Issued and revoked while the coordinator runs.
    let while_serving = serial_of(&run(&[
        "ca", "issue", "--ca-dir", "ca", "--role", "auditor", "--name", "eve", "--out", "eve",
    ]));
    run(&[
        "ca",
        "revoke",
        "--ca-dir",
        "ca",
        "--serial",
        &before_start,
        "--reason",
        "key-compromise",
    ]);

    let log_path = dir.path().join("state").join("audit.log");
    let public_key_path = dir.path().join("state").join("audit-public.key");
    let wanted = |entries: &[veil_audit_log::AuditEntry]| {
        let has = |predicate: &dyn Fn(&veil_audit_log::AuditEvent) -> bool| {
            entries.iter().any(|entry| predicate(&entry.event))
        };
        has(
            &|event| matches!(event, veil_audit_log::AuditEvent::CertificateIssued { serial, role, .. } if *serial == before_start && role == "node"),
        ) && has(
            &|event| matches!(event, veil_audit_log::AuditEvent::CertificateIssued { serial, name, .. } if *serial == while_serving && name == "eve"),
        ) && has(
            &|event| matches!(event, veil_audit_log::AuditEvent::CertificateRevoked { serial, reason } if *serial == before_start && reason == "key-compromise"),
        )
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let entries = loop {
        let entries = std::fs::read_to_string(&public_key_path)
            .ok()
            .and_then(|text| veil_audit_log::AuditPublicKey::from_hex(text.trim()).ok())
            .and_then(|key| veil_audit_log::verify_log_file(&log_path, &key, None).ok())
            .map(|report| report.entries)
            .unwrap_or_default();
        if wanted(&entries) || std::time::Instant::now() > deadline {
            break entries;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let still_serving = server.try_wait().unwrap().is_none();
    let _ = server.kill();
    let _ = server.wait();
    assert!(still_serving, "the coordinator did not start");
    assert!(wanted(&entries), "{entries:#?}");
    // Each is recorded once, with the CA as the actor, even though the
    // coordinator checked the files many times.
    let certificate_entries: Vec<_> = entries
        .iter()
        .filter(|entry| entry.event.kind().starts_with("certificate_"))
        .collect();
    assert_eq!(certificate_entries.len(), 4, "{certificate_entries:#?}");
    assert!(certificate_entries.iter().all(|entry| entry.actor == "ca"));
}
