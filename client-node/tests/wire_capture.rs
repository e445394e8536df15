//! Proof that nothing identifying leaves the node: a node runs a short federated job on data
//! seeded with known emails, phone numbers, resident ID numbers, names and raw customer ids,
//! talking to an in-process coordinator through a recording TCP proxy on 127.0.0.1 (plaintext,
//! for this test only). Every byte in both directions is checked for each raw value, its
//! lower- and upper-case forms, and its unkeyed SHA-256 and MD5 hex (either case).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use client_node::config::NodeConfig;
use coordinator::CoordinatorConfig;
use md5::{Digest, Md5};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use veil_deid::{ColumnRole, GeneralisationPolicy};
use veil_partner_data::{
    DeidSettings, Input, PartnerDataConfig, SourceConfig, TextEncoding, UndeclaredColumns,
};
use veil_synth::{SynthConfig, write_partner_csv};
use veil_wire::v1;

/// Bytes seen by the proxy, per direction.
#[derive(Default)]
struct Capture {
    node_to_coordinator: Vec<u8>,
    coordinator_to_node: Vec<u8>,
}

/// Accepts connections on `listener` and relays each to `target`, recording every byte.
async fn recording_proxy(listener: TcpListener, target: String, capture: Arc<Mutex<Capture>>) {
    while let Ok((inbound, _)) = listener.accept().await {
        let target = target.clone();
        let capture = Arc::clone(&capture);
        tokio::spawn(async move {
            let Ok(outbound) = TcpStream::connect(&target).await else {
                return;
            };
            let (inbound_read, inbound_write) = inbound.into_split();
            let (outbound_read, outbound_write) = outbound.into_split();
            let upstream = relay(inbound_read, outbound_write, Arc::clone(&capture), true);
            let downstream = relay(outbound_read, inbound_write, capture, false);
            tokio::join!(upstream, downstream);
        });
    }
}

async fn relay(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    capture: Arc<Mutex<Capture>>,
    node_to_coordinator: bool,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if let Ok(mut capture) = capture.lock() {
            let sink = if node_to_coordinator {
                &mut capture.node_to_coordinator
            } else {
                &mut capture.coordinator_to_node
            };
            sink.extend_from_slice(&buffer[..read]);
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// Resident ID numbers with valid GB 11643 checksums.
const RESIDENT_IDS: [&str; 3] = [
    "11010519491231002X",
    "310115198511205112",
    "44030419900307123X",
];

/// The seeded personal values, and the data files written with them.
struct SeededData {
    secrets: Vec<String>,
    config: PartnerDataConfig,
}

/// Writes a synthetic transaction log whose customer ids are replaced by distinctive raw ids,
/// and a profile table carrying names, emails, phones and ID numbers for every customer, with
/// more of them hidden in free-text notes and in a category value.
fn seed_data(dir: &Path) -> (SeededData, SynthConfig) {
    let mut synth = SynthConfig::demo(1, 99);
    synth.partners[0].n_customers = 240;
    let mut generated = Vec::new();
    write_partner_csv(&synth, 0, &mut generated).unwrap_or_else(|error| panic!("{error}"));
    let mut reader = csv::Reader::from_reader(generated.as_slice());
    let header = reader.headers().cloned().unwrap_or_default();
    let mut writer =
        csv::Writer::from_path(dir.join("tx.csv")).unwrap_or_else(|error| panic!("{error}"));
    writer
        .write_record(&header)
        .unwrap_or_else(|error| panic!("{error}"));
    let mut raw_ids: BTreeMap<String, String> = BTreeMap::new();
    for (row, record) in reader.records().enumerate() {
        let record = record.unwrap_or_else(|error| panic!("{error}"));
        let mut fields: Vec<String> = record.iter().map(str::to_owned).collect();
        let number = raw_ids.len();
        let raw = raw_ids
            .entry(fields[0].clone())
            .or_insert_with(|| format!("RawCust-{number:05}-Zq"))
            .clone();
        fields[0] = raw;
        // Some category cells carry an email by mistake: the scanner must catch it.
        if row % 97 == 0 {
            fields[4] = format!("gift for cat.lover{row}@example.org");
        }
        writer
            .write_record(&fields)
            .unwrap_or_else(|error| panic!("{error}"));
    }
    writer.flush().unwrap_or_else(|error| panic!("{error}"));

    let mut secrets: Vec<String> = Vec::new();
    let mut profile =
        csv::Writer::from_path(dir.join("profile.csv")).unwrap_or_else(|error| panic!("{error}"));
    profile
        .write_record([
            "customer_id",
            "name",
            "email",
            "phone",
            "id_number",
            "age",
            "gender",
            "postcode",
            "notes",
        ])
        .unwrap_or_else(|error| panic!("{error}"));
    for (index, raw) in raw_ids.values().enumerate() {
        let name = format!("Wanglily{index:04}Qz");
        let email = format!("Lily.Wang{index}@Example-Mail.com");
        let phone = format!("139{:08}", 10_000_000 + index * 7919 % 90_000_000);
        let id_number = RESIDENT_IDS[index % RESIDENT_IDS.len()];
        let note_email = format!("backup.{index}@corp-mail.cn");
        let note_phone = format!("+86 138 {:04} {:04}", 1000 + index, 2000 + index);
        let notes = format!("prefers email {note_email}; call {note_phone}; ID {id_number}");
        let age = 20 + index % 50;
        let gender = if index % 2 == 0 { "F" } else { "M" };
        let postcode = format!("{}{:03}", 100 + index % 3, index);
        profile
            .write_record([
                raw.as_str(),
                &name,
                &email,
                &phone,
                id_number,
                &age.to_string(),
                gender,
                &postcode,
                &notes,
            ])
            .unwrap_or_else(|error| panic!("{error}"));
        secrets.extend([
            raw.clone(),
            name,
            email,
            phone,
            note_email,
            note_phone,
            postcode,
        ]);
    }
    profile.flush().unwrap_or_else(|error| panic!("{error}"));
    secrets.extend(RESIDENT_IDS.iter().map(|id| (*id).to_owned()));
    secrets.extend(
        (0..raw_ids.len())
            .step_by(97)
            .map(|row| format!("cat.lover{row}@example.org")),
    );

    let roles = |pairs: &[(&str, ColumnRole)]| {
        pairs
            .iter()
            .map(|(name, role)| ((*name).to_owned(), role.clone()))
            .collect()
    };
    let csv = |name: &str| Input::Csv {
        path: dir.join(name),
        delimiter: None,
        encoding: TextEncoding::Utf8,
    };
    let config = PartnerDataConfig {
        transactions: SourceConfig {
            input: csv("tx.csv"),
            customer_id: "customer_id".to_owned(),
            category: Some("category".to_owned()),
            channel: Some("channel".to_owned()),
            columns: roles(&[
                ("customer_id", ColumnRole::Identifier),
                ("timestamp", ColumnRole::Timestamp),
                ("amount", ColumnRole::Amount),
                ("quantity", ColumnRole::Feature),
                ("category", ColumnRole::Feature),
                ("channel", ColumnRole::Feature),
            ]),
            undeclared_columns: UndeclaredColumns::Error,
            rejects_path: Some(dir.join("tx.rejects.csv")),
            max_reject_fraction: 0.0,
        },
        profile: Some(SourceConfig {
            input: csv("profile.csv"),
            customer_id: "customer_id".to_owned(),
            category: None,
            channel: None,
            columns: roles(&[
                ("customer_id", ColumnRole::Identifier),
                ("name", ColumnRole::Drop),
                ("email", ColumnRole::Identifier),
                ("phone", ColumnRole::Drop),
                ("id_number", ColumnRole::Identifier),
                (
                    "age",
                    ColumnRole::QuasiIdentifier(GeneralisationPolicy::AgeBand { width: 10 }),
                ),
                (
                    "gender",
                    ColumnRole::QuasiIdentifier(GeneralisationPolicy::Gender { suppress: false }),
                ),
                (
                    "postcode",
                    ColumnRole::QuasiIdentifier(GeneralisationPolicy::PostcodePrefix { length: 2 }),
                ),
                ("notes", ColumnRole::Text),
            ]),
            undeclared_columns: UndeclaredColumns::Error,
            rejects_path: None,
            max_reject_fraction: 0.0,
        }),
        deid: DeidSettings {
            key_path: dir.join("state/pseudonym.key"),
            report_dir: dir.join("state/report"),
            k: 5,
            l: None,
        },
    };
    (SeededData { secrets, config }, synth)
}

/// Every form of a secret that must not be on the wire.
fn forbidden_forms(secret: &str) -> Vec<String> {
    let sha256 = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    let sha256_hex: String = sha256
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let md5_hex: String = Md5::digest(secret.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let mut forms = vec![
        secret.to_owned(),
        secret.to_lowercase(),
        secret.to_uppercase(),
        sha256_hex.to_uppercase(),
        md5_hex.to_uppercase(),
        sha256_hex,
        md5_hex,
    ];
    // Hashes of the case-folded forms too, since a careless pipeline would normalise first.
    for folded in [secret.to_lowercase(), secret.to_uppercase()] {
        let digest = ring::digest::digest(&ring::digest::SHA256, folded.as_bytes());
        forms.push(
            digest
                .as_ref()
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect(),
        );
    }
    forms.sort();
    forms.dedup();
    forms
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    !needle.is_empty()
        && haystack
            .windows(needle.len())
            .any(|window| window == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_identifying_value_or_its_hash_crosses_the_wire() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let (seeded, synth) = seed_data(dir.path());

    let coordinator_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let coordinator_address = coordinator_listener
        .local_addr()
        .unwrap_or_else(|error| panic!("{error}"));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let wait_for_stop = |mut receiver: tokio::sync::watch::Receiver<bool>| async move {
        let _ = receiver.wait_for(|stop| *stop).await;
    };
    let server = tokio::spawn(coordinator::run(
        CoordinatorConfig::insecure_development(),
        coordinator_listener,
        wait_for_stop(stopped.clone()),
    ));
    let proxy_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let proxy_address = proxy_listener
        .local_addr()
        .unwrap_or_else(|error| panic!("{error}"));
    let capture = Arc::new(Mutex::new(Capture::default()));
    let proxy = tokio::spawn(recording_proxy(
        proxy_listener,
        coordinator_address.to_string(),
        Arc::clone(&capture),
    ));

    let node_id = "partner-wire-test";
    let node = tokio::spawn(client_node::node::run(
        NodeConfig {
            node_id: node_id.to_owned(),
            tls_dir: None,
            insecure_dev: true,
            privacy_audit_kit: None,
            coordinator: format!("http://{proxy_address}"),
            data: seeded.config.clone(),
            state_dir: Some(dir.path().join("wire-node.state")),
            // Plain aggregation is the worst case for this test: the node's
            // own update and statistics travel unmasked, so anything it
            // derived from identifiers would be visible on the wire.
            policy: client_node::policy::NodePolicy {
                allow_plain_aggregation: true,
                ..Default::default()
            },
        },
        wait_for_stop(stopped.clone()),
    ));

    let job_text = veil_job::STANDARD_JOB
        .replace(
            "{cutoff}",
            &synth.suggested_cutoff().format("%Y-%m-%d").to_string(),
        )
        .replace("{horizon}", &synth.suggested_horizon_days().to_string())
        .replace("rounds = 12", "rounds = 1")
        .replace("min_participants = 3", "min_participants = 1")
        .replace("max_participants = 3", "max_participants = 1")
        .replace("mode = \"secure\"", "mode = \"plain\"")
        + "\n[features]\nnames = [\"recency_days\", \"frequency\", \"monetary\", \"category_concentration\", \"top_channel_share\", \"profile_age\", \"profile_age_known\", \"gender_female\"]\n";
    let job = veil_job::file::JobFile::parse(&job_text)
        .unwrap_or_else(|error| panic!("{error}"))
        .to_wire();
    let mut operator =
        coordinator::operator::connect(&format!("http://{coordinator_address}"), None)
            .await
            .unwrap_or_else(|error| panic!("{error}"));
    let job_id = coordinator::operator::submit(&mut operator, job)
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    coordinator::operator::start(&mut operator, &job_id)
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let status = tokio::time::timeout(
        Duration::from_secs(120),
        coordinator::operator::watch(&mut operator, &job_id, |_| {}),
    )
    .await
    .unwrap_or_else(|_| panic!("the job did not finish in time"))
    .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(
        v1::JobState::try_from(status.state),
        Ok(v1::JobState::Succeeded),
        "{}",
        status.failure_reason
    );
    let _ = stop.send(true);
    let _ = node.await;
    let _ = server.await;
    proxy.abort();

    let capture = capture.lock().unwrap_or_else(|error| panic!("{error}"));
    // The capture works: the node's own id and its updates went through the proxy.
    assert!(
        contains(&capture.node_to_coordinator, node_id),
        "the proxy saw no node traffic"
    );
    assert!(capture.node_to_coordinator.len() > 10_000);
    assert!(!capture.coordinator_to_node.is_empty());
    // The profile was really joined and used (so its data was on the node's path).
    let report = std::fs::read_to_string(dir.path().join("state/report/deid-report.json"))
        .unwrap_or_default();
    assert!(report.contains("\"customers_with_profile\""), "{report}");

    let mut leaks = Vec::new();
    for secret in &seeded.secrets {
        for form in forbidden_forms(secret) {
            for (direction, bytes) in [
                ("node->coordinator", &capture.node_to_coordinator),
                ("coordinator->node", &capture.coordinator_to_node),
            ] {
                if contains(bytes, &form) {
                    leaks.push(format!(
                        "{direction}: a form of secret #{} ({} chars)",
                        secret.len(),
                        form.len()
                    ));
                }
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "identifying values crossed the wire: {leaks:?}"
    );
}
