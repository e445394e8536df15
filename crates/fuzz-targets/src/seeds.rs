//! Seed inputs for every target: well-formed examples of each input, made with the same code
//! that writes them in production (the wire types, the job template, the synthetic partner
//! generator, the model exporter, the audit log), so mutations start deep in each parser.

use prost::Message;
use veil_secure_aggregation::messages::{AddressedCiphertext, RevealedShare};
use veil_secure_aggregation::shamir::Share;
use veil_secure_aggregation::{
    ConsistencySignature, EncryptedShares, ForwardedShares, KeyAdvertisement, KeyDirectory,
    MaskedInput, NodeId, SurvivorList, UnmaskRequest, UnmaskResponse,
};
use veil_wire::v1;

use crate::framed;

/// The seeds of the target called `name` (empty for an unknown name).
pub fn seeds(name: &str) -> Vec<Vec<u8>> {
    match name {
        "coordinator_messages" => coordinator_messages(),
        "result_upload" => result_upload(),
        "secure_aggregation_messages" => secure_aggregation_messages(),
        "chunk_reassembly" => chunk_reassembly(),
        "csv_ingestion" => csv_ingestion(),
        "parquet_ingestion" => parquet_ingestion(),
        "job_toml" => vec![standard_job_text().into_bytes()],
        "node_toml" => node_toml(),
        "model_file" => model_file(),
        "audit_log" => audit_log(),
        "receipts" => receipts(),
        "accountant_cli" => accountant_cli(),
        _ => Vec::new(),
    }
}

fn tagged(tag: u8, body: Vec<u8>) -> Vec<u8> {
    let mut input = vec![tag];
    input.extend(body);
    input
}

fn standard_job_text() -> String {
    veil_job::STANDARD_JOB
        .replace("{cutoff}", "2024-10-02")
        .replace("{horizon}", "90")
}

fn coordinator_messages() -> Vec<Vec<u8>> {
    let node_id = "node-1".to_owned();
    vec![
        tagged(
            0,
            v1::RegisterRequest {
                node_id: node_id.clone(),
                software_version: "veil 0.1.0".to_owned(),
                identity_public_key: vec![7; 32],
                certificate_der: vec![0x30, 0x82, 0x01, 0x00],
            }
            .encode_to_vec(),
        ),
        tagged(1, v1::HeartbeatRequest { node_id }.encode_to_vec()),
        tagged(
            5,
            v1::SubmitJobRequest {
                spec: Some(veil_job::standard_job("2024-10-02", 90).to_wire()),
            }
            .encode_to_vec(),
        ),
        tagged(
            6,
            v1::JobRef {
                job_id: "job-1".to_owned(),
            }
            .encode_to_vec(),
        ),
        tagged(
            7,
            v1::PrivacyAuditResult {
                job_id: "job-1".to_owned(),
                attack: "black-box-loss".to_owned(),
                canaries: 1000,
                guesses: 100,
                correct: 90,
                delta: 1e-5,
                confidence: 0.95,
                epsilon_lower: 1.2,
                epsilon_lower_gaussian: 1.5,
                epsilon_upper: Some(3.0),
            }
            .encode_to_vec(),
        ),
    ]
}

fn header(phase: v1::Phase) -> v1::ResultHeader {
    v1::ResultHeader {
        node_id: "node-1".to_owned(),
        job_id: "job-1".to_owned(),
        round: 1,
        phase: phase as i32,
        ..Default::default()
    }
}

fn chunk(body: v1::result_chunk::Body) -> Vec<u8> {
    v1::ResultChunk { body: Some(body) }.encode_to_vec()
}

fn result_upload() -> Vec<Vec<u8>> {
    let parameters = 100u32;
    let values: Vec<f32> = (0..parameters).map(|index| index as f32 * 0.01).collect();
    let encoded = veil_wire::chunking::encode_values(&values);
    let plain = v1::ResultHeader {
        weight: 120.0,
        statistics: vec![1.0, 2.0, 3.0],
        vector_length: u64::from(parameters),
        ..header(v1::Phase::Train)
    };
    let secure = v1::ResultHeader {
        secure_step: v1::SecureStep::MaskedInput as i32,
        secure_attempt: 1,
        payload_bytes: 16,
        ..header(v1::Phase::Train)
    };
    let declined = v1::ResultHeader {
        decline_code: 3,
        ..header(v1::Phase::Evaluate)
    };
    let with_size = |frames: Vec<Vec<u8>>| {
        let mut input = parameters.to_le_bytes().to_vec();
        input.extend(framed(&frames));
        input
    };
    let (first, second) = encoded.split_at(encoded.len() / 2);
    vec![
        with_size(vec![
            chunk(v1::result_chunk::Body::Header(plain)),
            chunk(v1::result_chunk::Body::Values(first.to_vec())),
            chunk(v1::result_chunk::Body::Values(second.to_vec())),
        ]),
        with_size(vec![
            chunk(v1::result_chunk::Body::Header(secure)),
            chunk(v1::result_chunk::Body::Values(vec![9; 16])),
        ]),
        with_size(vec![chunk(v1::result_chunk::Body::Header(declined))]),
    ]
}

fn node(name: &str) -> NodeId {
    NodeId::new(name).unwrap_or_else(|error| unreachable!("a fixed valid node id: {error}"))
}

fn secure_aggregation_messages() -> Vec<Vec<u8>> {
    let advertisement = KeyAdvertisement {
        node_id: node("node-1"),
        encryption_public_key: [1; 32],
        mask_public_key: [2; 32],
        signature: vec![3; 64],
    };
    let ciphertext = AddressedCiphertext {
        peer: node("node-2"),
        ciphertext: vec![4; 48],
    };
    let share = |peer: &str| RevealedShare {
        peer: node(peer),
        share: Share {
            x: 2,
            y: vec![5, 6],
        },
    };
    let signature = ConsistencySignature {
        signer: node("node-1"),
        signature: vec![8; 64],
    };
    vec![
        tagged(0, advertisement.to_bytes()),
        tagged(
            1,
            KeyDirectory {
                advertisements: vec![advertisement.clone(), advertisement],
            }
            .to_bytes(),
        ),
        tagged(
            2,
            EncryptedShares {
                sender: node("node-1"),
                self_mask_commitment: [9; 32],
                ciphertexts: vec![ciphertext.clone()],
            }
            .to_bytes(),
        ),
        tagged(
            3,
            ForwardedShares {
                recipient: node("node-2"),
                ciphertexts: vec![ciphertext],
            }
            .to_bytes(),
        ),
        tagged(
            4,
            MaskedInput {
                sender: node("node-1"),
                masked_vector: vec![1, 2, 3, u32::MAX],
            }
            .to_bytes(),
        ),
        tagged(
            5,
            SurvivorList {
                survivors: vec![node("node-1"), node("node-2"), node("node-3")],
            }
            .to_bytes(),
        ),
        tagged(6, signature.to_bytes()),
        tagged(
            7,
            UnmaskRequest {
                signatures: vec![signature],
                self_mask_share_peers: vec![node("node-2")],
                mask_key_share_peers: vec![node("node-3")],
            }
            .to_bytes(),
        ),
        tagged(
            8,
            UnmaskResponse {
                sender: node("node-1"),
                self_mask_shares: vec![share("node-2")],
                mask_key_shares: vec![share("node-3")],
            }
            .to_bytes(),
        ),
    ]
}

fn chunk_reassembly() -> Vec<Vec<u8>> {
    let values = veil_wire::chunking::encode_values(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
    let (first, second) = values.split_at(16);
    let frame = |offset: u32, bytes: &[u8]| {
        let mut frame = offset.to_le_bytes().to_vec();
        frame.extend_from_slice(bytes);
        frame
    };
    let mut input = 8u32.to_le_bytes().to_vec();
    input.extend(16u32.to_le_bytes());
    input.extend(framed(&[frame(0, first), frame(4, second)]));
    vec![input]
}

/// A small generated partner file, as UTF-8 (option byte 0) and sniffed GBK (option byte 3).
/// A small synthetic partner's transactions as the CSV the generator writes.
fn synthetic_partner_csv() -> Option<Vec<u8>> {
    let mut config = veil_synth_data::SynthConfig::demo(1, 3);
    config.partners[0].n_customers = 12;
    let mut csv = Vec::new();
    veil_synth_data::write_partner_csv(&config, 0, &mut csv).ok()?;
    Some(csv)
}

fn csv_ingestion() -> Vec<Vec<u8>> {
    let Some(csv) = synthetic_partner_csv() else {
        return Vec::new();
    };
    vec![tagged(0, csv.clone()), tagged(3, csv)]
}

/// The synthetic partner's transactions as Parquet, every column an optional UTF-8 string (as
/// an export from a warehouse often is): once plain and uncompressed, once with dictionary
/// pages and Snappy, so mutations reach both page decoders.
fn parquet_ingestion() -> Vec<Vec<u8>> {
    let Some(Ok(text)) = synthetic_partner_csv().map(String::from_utf8) else {
        return Vec::new();
    };
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let header: Vec<&str> = header.split(',').collect();
    let rows: Vec<Vec<&str>> = lines.map(|line| line.split(',').collect()).collect();
    [
        parquet::file::properties::WriterProperties::builder()
            .set_dictionary_enabled(false)
            .build(),
        parquet::file::properties::WriterProperties::builder()
            .set_compression(parquet::basic::Compression::SNAPPY)
            .build(),
    ]
    .into_iter()
    .filter_map(|properties| write_text_parquet(&header, &rows, properties).ok())
    .collect()
}

fn write_text_parquet(
    header: &[&str],
    rows: &[Vec<&str>],
    properties: parquet::file::properties::WriterProperties,
) -> Result<Vec<u8>, parquet::errors::ParquetError> {
    use parquet::data_type::{ByteArray, ByteArrayType};
    let fields: String = header
        .iter()
        .map(|name| format!("OPTIONAL BYTE_ARRAY {name} (UTF8); "))
        .collect();
    let schema = parquet::schema::parser::parse_message_type(&format!(
        "message transactions {{ {fields}}}"
    ))?;
    let mut bytes = Vec::new();
    let mut writer = parquet::file::writer::SerializedFileWriter::new(
        &mut bytes,
        std::sync::Arc::new(schema),
        std::sync::Arc::new(properties),
    )?;
    let mut group = writer.next_row_group()?;
    for column_index in 0..header.len() {
        let fields: Vec<Option<&str>> = rows
            .iter()
            .map(|row| {
                row.get(column_index)
                    .copied()
                    .filter(|text| !text.is_empty())
            })
            .collect();
        let values: Vec<ByteArray> = fields
            .iter()
            .flatten()
            .map(|text| ByteArray::from(*text))
            .collect();
        let levels: Vec<i16> = fields
            .iter()
            .map(|field| i16::from(field.is_some()))
            .collect();
        let Some(mut column) = group.next_column()? else {
            break;
        };
        column
            .typed::<ByteArrayType>()
            .write_batch(&values, Some(&levels), None)?;
        column.close()?;
    }
    group.close()?;
    writer.close()?;
    Ok(bytes)
}

fn node_toml() -> Vec<Vec<u8>> {
    vec![
        b"node_id = \"node-1\"\ncoordinator = \"https://coordinator.example:50051\"\ntls_dir = \"tls\"\n\n[data]\npath = \"transactions.csv\"\n\n[policy]\nallow_plain_aggregation = false\n".to_vec(),
        b"node_id = \"node-2\"\ncoordinator = \"http://127.0.0.1:50051\"\ninsecure_dev = true\n\n[data.transactions]\ninput = { csv = { path = \"t.csv\", encoding = \"gbk\" } }\ncustomer_id = \"cust\"\n".to_vec(),
    ]
}

fn model_file() -> Vec<Vec<u8>> {
    let file = veil_job::standard_job("2024-10-02", 90);
    let Ok(spec) = veil_job::JobSpec::from_wire(&file.to_wire()) else {
        return Vec::new();
    };
    let n_features = spec.features.n_features();
    let model = veil_job::export::ExportedModel {
        job_id: "job-1".to_owned(),
        parameters: vec![0.25; spec.model_spec().parameter_count()],
        scaling: veil_behaviour_features::Scaling {
            mean: vec![0.0; n_features],
            std: vec![1.0; n_features],
        },
        spec,
        final_metrics: None,
    };
    vec![model.to_bytes()]
}

/// A short signed log, preceded by the public key that verifies it.
fn audit_log() -> Vec<Vec<u8>> {
    let Some(folder) = crate::scratch() else {
        return Vec::new();
    };
    let Ok(signer) = veil_audit_log::AuditSigner::generate_ephemeral() else {
        return Vec::new();
    };
    let public_key = signer.public_key();
    let log_path = folder.path().join("audit.log");
    let config = veil_audit_log::AuditLogConfig {
        log_path: log_path.clone(),
        sync: veil_audit_log::SyncPolicy::OsBuffered,
    };
    let Ok(mut log) = veil_audit_log::AuditLog::open(config, signer) else {
        return Vec::new();
    };
    for round in 1..=2 {
        let event = veil_audit_log::AuditEvent::RoundStarted {
            job_id: "job-1".to_owned(),
            round,
            participants: vec!["node-1".to_owned(), "node-2".to_owned()],
            mechanism: [("customers".to_owned(), "dp-sgd".to_owned())].into(),
        };
        if log.append(1_700_000_000_000, "coordinator", event).is_err() {
            return Vec::new();
        }
    }
    drop(log);
    let Ok(contents) = std::fs::read(&log_path) else {
        return Vec::new();
    };
    let mut input = public_key.0.to_vec();
    input.extend(contents);
    vec![input]
}

fn receipts() -> Vec<Vec<u8>> {
    let receipt = veil_audit_log::Receipt {
        job_id: "job-1".to_owned(),
        round: 1,
        node_id: "node-1".to_owned(),
        entry_seq: 4,
        entry_hash: [3; 32],
        charges: Vec::new(),
        signature: vec![5; 64],
    };
    match serde_json::to_string(&receipt) {
        Ok(line) => vec![format!("{line}\n{line}\n").into_bytes()],
        Err(_) => Vec::new(),
    }
}

fn accountant_cli() -> Vec<Vec<u8>> {
    let join = |arguments: &[&str]| arguments.join("\0").into_bytes();
    vec![
        join(&[
            "epsilon",
            "--sampling-rate",
            "0.01",
            "--noise-multiplier",
            "1.1",
            "--steps",
            "1000",
            "--delta",
            "1e-5",
        ]),
        join(&[
            "calibrate",
            "--sampling-rate",
            "0.01",
            "--steps",
            "1000",
            "--epsilon",
            "3",
            "--delta",
            "1e-5",
        ]),
    ]
}
