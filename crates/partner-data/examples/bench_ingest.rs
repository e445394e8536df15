//! Ingestion benchmark, run by `scripts/bench-ingest`: generates a synthetic transaction log
//! plus a profile table, then (in a fresh process, so peak memory is the load's own) times the
//! raw `csv` crate parse of the log and the full load with de-identification, and prints rows
//! per second, the ratio of the two, and the peak resident set size (VmHWM).
//!
//!   bench_ingest generate ROWS DIR
//!   bench_ingest ingest DIR

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Instant;

use veil_de_identification::{ColumnRole, GeneralisationPolicy};
use veil_partner_data::{
    DeidSettings, Input, PartnerDataConfig, SourceConfig, TextEncoding, UndeclaredColumns,
    load_partner_data,
};
use veil_synth_data::{SynthConfig, write_partner_csv};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arguments: Vec<String> = std::env::args().collect();
    match arguments.get(1).map(String::as_str) {
        Some("generate") => {
            let rows: usize = arguments.get(2).ok_or("ROWS missing")?.parse()?;
            generate(rows, Path::new(arguments.get(3).ok_or("DIR missing")?))
        }
        Some("ingest") => ingest(Path::new(arguments.get(2).ok_or("DIR missing")?)),
        _ => Err("usage: bench_ingest generate ROWS DIR | bench_ingest ingest DIR".into()),
    }
}

fn generate(target_rows: usize, dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    let mut config = SynthConfig::demo(1, 11);
    // About 55 rows per demo customer; calibrate on a small run.
    config.partners[0].n_customers = 2000;
    let mut sample = Vec::new();
    write_partner_csv(&config, 0, &mut sample)?;
    let rows_per_customer =
        (sample.iter().filter(|byte| **byte == b'\n').count() - 1) as f64 / 2000.0;
    config.partners[0].n_customers = (target_rows as f64 / rows_per_customer).ceil() as usize;
    let file = std::io::BufWriter::new(std::fs::File::create(dir.join("tx.csv"))?);
    write_partner_csv(&config, 0, file)?;
    let mut reader = csv::Reader::from_path(dir.join("tx.csv"))?;
    let mut record = csv::ByteRecord::new();
    let mut customers = HashSet::new();
    while reader.read_byte_record(&mut record)? {
        if let Some(id) = record.get(0)
            && !customers.contains(id)
        {
            customers.insert(id.to_vec());
        }
    }
    let mut profile = csv::Writer::from_path(dir.join("profile.csv"))?;
    profile.write_record([
        "customer_id",
        "name",
        "email",
        "age",
        "gender",
        "postcode",
        "notes",
    ])?;
    for (index, id) in customers.iter().enumerate() {
        let id = String::from_utf8_lossy(id);
        profile.write_record([
            id.as_ref(),
            &format!("Name {index}"),
            &format!("user{index}@example.com"),
            &(18 + index % 60).to_string(),
            if index % 2 == 0 { "F" } else { "M" },
            &format!("{:06}", 100_000 + (index * 37) % 900_000),
            if index % 10 == 0 {
                "call 13800138000 about delivery"
            } else {
                "likes tea"
            },
        ])?;
    }
    profile.flush()?;
    println!("generated {} customers", customers.len());
    Ok(())
}

fn roles(pairs: &[(&str, ColumnRole)]) -> BTreeMap<String, ColumnRole> {
    pairs
        .iter()
        .map(|(name, role)| ((*name).to_owned(), role.clone()))
        .collect()
}

fn ingest(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let transactions_path = dir.join("tx.csv");
    let started = Instant::now();
    let cpu_started = thread_cpu_seconds();
    let mut reader = csv::Reader::from_path(&transactions_path)?;
    let mut record = csv::ByteRecord::new();
    let mut raw_rows = 0u64;
    while reader.read_byte_record(&mut record)? {
        raw_rows += 1;
    }
    let raw_seconds = started.elapsed().as_secs_f64();
    let raw_cpu_seconds = thread_cpu_seconds() - cpu_started;

    let csv_input = |name: &str| Input::Csv {
        path: dir.join(name),
        delimiter: None,
        encoding: TextEncoding::Utf8,
    };
    let config = PartnerDataConfig {
        transactions: SourceConfig {
            input: csv_input("tx.csv"),
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
            rejects_path: None,
            max_reject_fraction: 0.01,
        },
        profile: Some(SourceConfig {
            input: csv_input("profile.csv"),
            customer_id: "customer_id".to_owned(),
            category: None,
            channel: None,
            columns: roles(&[
                ("customer_id", ColumnRole::Identifier),
                ("name", ColumnRole::Drop),
                ("email", ColumnRole::Identifier),
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
                    ColumnRole::QuasiIdentifier(GeneralisationPolicy::PostcodePrefix { length: 3 }),
                ),
                ("notes", ColumnRole::Text),
            ]),
            undeclared_columns: UndeclaredColumns::Error,
            rejects_path: None,
            max_reject_fraction: 0.01,
        }),
        deid: DeidSettings {
            key_path: dir.join("state/pseudonym.key"),
            report_dir: dir.join("state/report"),
            k: 5,
            l: None,
        },
    };
    let started = Instant::now();
    let cpu_started = thread_cpu_seconds();
    let data = load_partner_data(&config)?;
    let load_seconds = started.elapsed().as_secs_f64();
    let load_cpu_seconds = thread_cpu_seconds() - cpu_started;
    let profile_rows = data
        .report
        .profile
        .as_ref()
        .map_or(0, |profile| profile.rows_read);
    let peak_kib = std::fs::read_to_string("/proc/self/status")?
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0);
    let raw_rate = raw_rows as f64 / raw_seconds;
    let load_rate = data.report.transactions.rows_read as f64 / load_seconds;
    println!(
        "transaction rows: {raw_rows}, profile rows: {profile_rows}, customers kept: {}",
        data.log.n_customers()
    );
    let rows = data.report.transactions.rows_read as f64;
    println!(
        "raw csv parse: wall {raw_seconds:.2} s ({raw_rate:.0} rows/s), thread CPU {raw_cpu_seconds:.2} s ({:.0} rows/s per core)",
        raw_rows as f64 / raw_cpu_seconds
    );
    println!(
        "load + de-identification (transactions and profile, one thread): wall {load_seconds:.2} s ({load_rate:.0} rows/s), thread CPU {load_cpu_seconds:.2} s ({:.0} transaction rows/s per core)",
        rows / load_cpu_seconds
    );
    println!(
        "ratio to raw parse: {:.1}x the time (wall), {:.1}x (CPU)",
        raw_rate / load_rate,
        load_cpu_seconds / raw_cpu_seconds
    );
    println!("peak RSS (VmHWM): {:.0} MiB", peak_kib as f64 / 1024.0);
    Ok(())
}

/// CPU time this thread has run, from the scheduler's own accounting: the machine is shared, so
/// wall time includes waiting for a core.
fn thread_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |nanoseconds| nanoseconds / 1e9)
}
