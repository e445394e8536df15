//! Every input Veil takes from outside its processes, as a fuzz target: a function that takes
//! arbitrary bytes and must return, never panic and never hang. `cargo fuzz` runs them with
//! coverage guidance (`crates/fuzz-targets/fuzz`, `scripts/fuzz`); `tests/smoke.rs` runs each
//! over its seeds ([`seeds`]), seeded mutations of them and every input a fuzzer once crashed
//! (`regressions/<target>/`), as part of `scripts/test`.
//!
//! Each target goes through the same code the processes use on that input: the coordinator's
//! intake checks and job validation, the secure-aggregation decoders, the chunk reassembler,
//! the node's ingestion with de-identification, the job and node TOML readers, the model file
//! reader, the audit-log verifier and receipt reader, and the accountant's command line.

pub mod seeds;

use std::io::Write;

use prost::Message;
use veil_secure_aggregation::{
    ConsistencySignature, EncryptedShares, ForwardedShares, KeyAdvertisement, KeyDirectory,
    MaskedInput, SurvivorList, UnmaskRequest, UnmaskResponse,
};
use veil_wire::v1;

/// One fuzz target: its name (the cargo-fuzz target and corpus folder) and its function.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// The target's name.
    pub name: &'static str,
    /// Runs one input.
    pub run: fn(&[u8]),
}

/// Every target, in the order `scripts/fuzz` runs them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "coordinator_messages",
        run: coordinator_messages,
    },
    Target {
        name: "result_upload",
        run: result_upload,
    },
    Target {
        name: "secure_aggregation_messages",
        run: secure_aggregation_messages,
    },
    Target {
        name: "chunk_reassembly",
        run: chunk_reassembly,
    },
    Target {
        name: "csv_ingestion",
        run: csv_ingestion,
    },
    Target {
        name: "parquet_ingestion",
        run: parquet_ingestion,
    },
    Target {
        name: "job_toml",
        run: job_toml,
    },
    Target {
        name: "node_toml",
        run: node_toml,
    },
    Target {
        name: "model_file",
        run: model_file,
    },
    Target {
        name: "audit_log",
        run: audit_log,
    },
    Target {
        name: "receipts",
        run: receipts,
    },
    Target {
        name: "accountant_cli",
        run: accountant_cli,
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().copied().find(|target| target.name == name)
}

/// Splits `data` into frames of `[u16 little-endian length][bytes]`; a short tail is one last
/// frame. Lets one input carry a sequence of messages.
pub fn frames(mut data: &[u8]) -> Vec<&[u8]> {
    let mut frames = Vec::new();
    while data.len() >= 2 {
        let length = usize::from(u16::from_le_bytes([data[0], data[1]]));
        let rest = &data[2..];
        let (frame, tail) = rest.split_at(length.min(rest.len()));
        frames.push(frame);
        data = tail;
    }
    frames
}

/// Joins messages into the framing [`frames`] reads.
pub fn framed(messages: &[Vec<u8>]) -> Vec<u8> {
    let mut data = Vec::new();
    for message in messages {
        let length = u16::try_from(message.len()).unwrap_or(u16::MAX);
        data.extend_from_slice(&length.to_le_bytes());
        data.extend_from_slice(&message[..usize::from(length)]);
    }
    data
}

fn u32_at(data: &[u8], at: usize) -> u32 {
    let mut bytes = [0u8; 4];
    for (index, byte) in bytes.iter_mut().enumerate() {
        *byte = data.get(at + index).copied().unwrap_or(0);
    }
    u32::from_le_bytes(bytes)
}

/// The unary requests the coordinator accepts, chosen by the first byte, decoded and checked as
/// its services check them before anything reaches the engine.
pub fn coordinator_messages(data: &[u8]) {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    match kind % 8 {
        0 => {
            if let Ok(request) = v1::RegisterRequest::decode(body) {
                let _ = coordinator::intake::validate_node_id(&request.node_id);
            }
        }
        1 => {
            if let Ok(request) = v1::HeartbeatRequest::decode(body) {
                let _ = coordinator::intake::validate_node_id(&request.node_id);
            }
        }
        2 => {
            if let Ok(request) = v1::FetchTaskRequest::decode(body) {
                let _ = coordinator::intake::validate_node_id(&request.node_id);
            }
        }
        3 => {
            if let Ok(request) = v1::FetchReceiptsRequest::decode(body) {
                let _ = coordinator::intake::validate_node_id(&request.node_id);
            }
        }
        4 => {
            let _ = v1::DownloadModelRequest::decode(body);
        }
        5 => {
            if let Ok(request) = v1::SubmitJobRequest::decode(body)
                && let Some(wire) = request.spec
            {
                check_job_spec(&wire);
            }
        }
        6 => {
            let _ = v1::JobRef::decode(body);
        }
        _ => {
            if let Ok(result) = v1::PrivacyAuditResult::decode(body) {
                let _ = coordinator::intake::privacy_audit_event(
                    result,
                    "partner".to_owned(),
                    [0u8; 32],
                );
            }
        }
    }
}

/// A job spec as the coordinator validates one at submission: the field checks, then the plan
/// of its whole privacy spend.
fn check_job_spec(wire: &v1::JobSpec) {
    if let Ok(spec) = veil_job::JobSpec::from_wire(wire) {
        let _ = veil_job::planned_spend(&spec);
    }
}

/// A result upload stream: four bytes of model size, then framed `ResultChunk`s, through the
/// coordinator's intake (header first, then value chunks, then the finished submission).
pub fn result_upload(data: &[u8]) {
    // Model sizes up to 2^20 parameters: enough to reach every size check.
    let parameter_count = u64::from(u32_at(data, 0) % (1 << 20));
    let mut chunks = frames(data.get(4..).unwrap_or_default())
        .into_iter()
        .map(v1::ResultChunk::decode);
    let first = match chunks.next() {
        Some(Ok(chunk)) => Some(chunk),
        Some(Err(_)) => return,
        None => None,
    };
    let Ok(header) = coordinator::intake::result_header(first) else {
        return;
    };
    let Ok(mut upload) = coordinator::intake::ResultUpload::start(header, parameter_count) else {
        return;
    };
    for chunk in chunks {
        let Ok(chunk) = chunk else { return };
        if upload.push(chunk).is_err() {
            return;
        }
    }
    let _ = upload.finish();
}

/// Checks that a decoded message encodes back to something that decodes to itself.
macro_rules! decode_and_round_trip {
    ($message:ty, $bytes:expr) => {
        if let Ok(message) = <$message>::from_bytes($bytes) {
            let again = <$message>::from_bytes(&message.to_bytes());
            assert_eq!(
                again.ok().as_ref(),
                Some(&message),
                "re-encoding changed a message"
            );
        }
    };
}

/// The secure-aggregation messages, chosen by the first byte: decoded, and when they decode,
/// re-encoded and decoded to the same message.
pub fn secure_aggregation_messages(data: &[u8]) {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    match kind % 9 {
        0 => decode_and_round_trip!(KeyAdvertisement, body),
        1 => decode_and_round_trip!(KeyDirectory, body),
        2 => decode_and_round_trip!(EncryptedShares, body),
        3 => decode_and_round_trip!(ForwardedShares, body),
        4 => decode_and_round_trip!(MaskedInput, body),
        5 => decode_and_round_trip!(SurvivorList, body),
        6 => decode_and_round_trip!(ConsistencySignature, body),
        7 => decode_and_round_trip!(UnmaskRequest, body),
        _ => decode_and_round_trip!(UnmaskResponse, body),
    }
}

/// The chunk reassembler: announced length and limit (four bytes each), then framed chunks of
/// `[u32 offset][values]`.
pub fn chunk_reassembly(data: &[u8]) {
    let announced = u64::from(u32_at(data, 0) % (1 << 16));
    let limit = u64::from(u32_at(data, 4) % (1 << 16));
    let Ok(mut assembler) = veil_wire::chunking::VectorAssembler::new(announced, limit) else {
        return;
    };
    for frame in frames(data.get(8..).unwrap_or_default()) {
        let offset = u64::from(u32_at(frame, 0));
        if assembler
            .push(offset, frame.get(4..).unwrap_or_default())
            .is_err()
        {
            return;
        }
    }
    let _ = assembler.finish();
}

/// A fresh folder for one input's files.
fn scratch() -> Option<tempfile::TempDir> {
    tempfile::tempdir().ok()
}

fn write_file(path: &std::path::Path, bytes: &[u8]) -> bool {
    std::fs::File::create(path)
        .and_then(|mut file| file.write_all(bytes))
        .is_ok()
}

/// The node's ingestion of a transaction CSV with de-identification: the first byte picks the
/// encoding (UTF-8 or GBK) and whether the delimiter is sniffed; every row may be rejected.
pub fn csv_ingestion(data: &[u8]) {
    let Some((&options, contents)) = data.split_first() else {
        return;
    };
    let Some(folder) = scratch() else { return };
    let path = folder.path().join("transactions.csv");
    if !write_file(&path, contents) {
        return;
    }
    let mut config =
        veil_partner_data::PartnerDataConfig::from(veil_behaviour_features::CsvSource::new(&path));
    config.transactions.input = veil_partner_data::Input::Csv {
        path,
        delimiter: if options & 2 == 0 { Some(',') } else { None },
        encoding: if options & 1 == 0 {
            veil_partner_data::TextEncoding::Utf8
        } else {
            veil_partner_data::TextEncoding::Gbk
        },
    };
    config.transactions.max_reject_fraction = 1.0;
    let _ = veil_partner_data::load_partner_data(&config);
}

/// The node's ingestion of a transaction Parquet file with de-identification.
pub fn parquet_ingestion(data: &[u8]) {
    let Some(folder) = scratch() else { return };
    let path = folder.path().join("transactions.parquet");
    if !write_file(&path, data) {
        return;
    }
    let mut config = veil_partner_data::PartnerDataConfig::from(
        veil_behaviour_features::CsvSource::new(folder.path().join("unused.csv")),
    );
    config.transactions.input = veil_partner_data::Input::Parquet { path };
    config.transactions.max_reject_fraction = 1.0;
    let _ = veil_partner_data::load_partner_data(&config);
}

/// A job file, as `coordinator submit` reads it and the coordinator then validates it.
pub fn job_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(file) = veil_job::file::JobFile::parse(text) {
        check_job_spec(&file.to_wire());
    }
}

/// A node's configuration file, as `client-node run` reads it.
pub fn node_toml(data: &[u8]) {
    let Some(folder) = scratch() else { return };
    let path = folder.path().join("node.toml");
    if write_file(&path, data) {
        let _ = client_node::config::NodeConfig::read(&path);
    }
}

/// An exported model file, as `client-node score` and `evaluate` read one.
pub fn model_file(data: &[u8]) {
    let _ = veil_job::export::ExportedModel::from_bytes(data, "fuzz-input.model");
}

/// An audit log checked by `coordinator audit verify`: the first 32 bytes are the public key it
/// is checked against, the rest the log.
pub fn audit_log(data: &[u8]) {
    if data.len() < 32 {
        return;
    }
    let (key, log) = data.split_at(32);
    let mut public_key = [0u8; 32];
    public_key.copy_from_slice(key);
    let _ =
        veil_audit_log::verify_log_bytes(log, &veil_audit_log::AuditPublicKey(public_key), None);
}

/// A node's receipts file, as `coordinator audit reconcile` reads it.
pub fn receipts(data: &[u8]) {
    let Some(folder) = scratch() else { return };
    let path = folder.path().join("receipts.jsonl");
    if write_file(&path, data) {
        let _ = veil_audit_log::ReceiptStore::read_all(&path);
    }
}

/// The accountant's command line (`veil-privacy`): arguments separated by NUL bytes.
pub fn accountant_cli(data: &[u8]) {
    let arguments = std::iter::once("veil-privacy".to_owned()).chain(
        data.split(|byte| *byte == 0)
            .filter(|argument| !argument.is_empty())
            .map(|argument| String::from_utf8_lossy(argument).into_owned()),
    );
    use clap::Parser as _;
    if let Ok(cli) = veil_privacy_accounting::cli::Cli::try_parse_from(arguments) {
        let _ = veil_privacy_accounting::cli::run(&cli);
    }
}
