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
    let signer = veil_audit::generate_signing_key(&key_path).unwrap();
    let public_key = signer.public_key();
    std::fs::write(
        dir.path().join("audit-public.key"),
        format!("{public_key}\n"),
    )
    .unwrap();
    let log_path = dir.path().join("audit.log");
    let mut log = veil_audit::AuditLog::open(
        veil_audit::AuditLogConfig {
            log_path: log_path.clone(),
            sync: veil_audit::SyncPolicy::EveryAppend,
        },
        signer,
    )
    .unwrap();
    for index in 0..5 {
        log.append(
            1_700_000_000_000 + index,
            "operator/alice",
            veil_audit::AuditEvent::Note {
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
