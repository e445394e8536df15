//! Data seeded with known personal values (emails, phone numbers, resident ID numbers, names,
//! raw customer ids), and every form of them that must never appear in what a node or the
//! coordinator shows: on the wire, in metrics, in web pages.

use std::collections::BTreeMap;
use std::path::Path;

use md5::{Digest, Md5};
use veil_de_identification::{ColumnRole, GeneralisationPolicy};
use veil_partner_data::{
    DeidSettings, Input, PartnerDataConfig, SourceConfig, TextEncoding, UndeclaredColumns,
};
use veil_synth_data::{SynthConfig, write_partner_csv};

/// Resident ID numbers with valid GB 11643 checksums.
const RESIDENT_IDS: [&str; 3] = [
    "11010519491231002X",
    "310115198511205112",
    "44030419900307123X",
];

/// The seeded personal values, and the data files written with them.
pub struct SeededData {
    /// Every personal value written, raw.
    pub secrets: Vec<String>,
    /// The node's data section reading the files.
    pub config: PartnerDataConfig,
}

/// Writes a synthetic transaction log whose customer ids are replaced by distinctive raw ids,
/// and a profile table carrying names, emails, phones and ID numbers for every customer, with
/// more of them hidden in free-text notes and in a category value.
pub fn seed_data(dir: &Path) -> (SeededData, SynthConfig) {
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

/// The standard job for the seeded node alone: `rounds` rounds, one
/// participant, plain aggregation (a single node has no one to mask with).
pub fn single_node_job(synth: &SynthConfig, rounds: u32) -> veil_job::file::JobFile {
    let mut job_file = veil_job::standard_job(
        &synth.suggested_cutoff().format("%Y-%m-%d").to_string(),
        synth.suggested_horizon_days(),
    );
    job_file.rounds = rounds;
    job_file.min_participants = 1;
    job_file.max_participants = 1;
    job_file.aggregation.mode = Some("plain".to_owned());
    job_file
}

/// Every form of a secret that must not be on the wire.
pub fn forbidden_forms(secret: &str) -> Vec<String> {
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

/// Whether `needle` occurs in `haystack` (never for an empty needle).
pub fn contains(haystack: &[u8], needle: &str) -> bool {
    !needle.is_empty()
        && haystack
            .windows(needle.len())
            .any(|window| window == needle.as_bytes())
}
