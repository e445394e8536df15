//! Loading CSV files end to end: accepted rows, rejected rows and the rejects file, and the
//! errors that abort a load, then the features built from what was loaded.

use std::path::{Path, PathBuf};

use veil_features::{
    ColumnMapping, CsvSource, FeatureSpec, IngestError, LabelSpec, TaskKind, build_examples,
    load_transactions,
};

struct Fixture {
    /// Keeps the temporary directory alive for the test's duration.
    _dir: tempfile::TempDir,
    data: PathBuf,
    rejects: PathBuf,
}

fn fixture(contents: &[u8]) -> Fixture {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("tempdir: {error}"));
    let data = dir.path().join("partner.csv");
    let rejects = dir.path().join("partner.rejects.csv");
    std::fs::write(&data, contents).unwrap_or_else(|error| panic!("write: {error}"));
    Fixture {
        _dir: dir,
        data,
        rejects,
    }
}

fn source(fixture: &Fixture, max_reject_fraction: f64) -> CsvSource {
    CsvSource {
        rejects_path: Some(fixture.rejects.clone()),
        max_reject_fraction,
        ..CsvSource::new(&fixture.data)
    }
}

fn read_csv(path: &Path) -> Vec<Vec<String>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_path(path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    reader
        .records()
        .map(|record| {
            let record = record.unwrap_or_else(|error| panic!("{error}"));
            record.iter().map(str::to_owned).collect()
        })
        .collect()
}

const MIXED_FILE: &str = "\
customer_id,timestamp,amount,channel
C-SECRET-1,2024-03-05,10.00,web
C-SECRET-2,2024-03-06,5
C-SECRET-3,05/03/2024,7.00,store
C-SECRET-4,2024-03-07,abc,store
,2024-03-08,1.00,web
C-SECRET-1,2024-03-09T10:00:00Z,2.50,app
C-SECRET-5,2024-03-10 08:00:00,NaN,app
C-SECRET-6,2024-03-11,-3.00,app
";

#[test]
fn malformed_rows_are_rejected_counted_and_written_without_ids() {
    let fixture = fixture(MIXED_FILE.as_bytes());
    let (log, report) =
        load_transactions(&source(&fixture, 1.0)).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(
        (report.rows_read, report.rows_accepted, report.rows_rejected),
        (8, 2, 6)
    );
    assert_eq!(log.n_customers(), 1);
    assert_eq!(log.n_transactions(), 2);
    assert_eq!(
        report.rejects_path.as_deref(),
        Some(fixture.rejects.as_path())
    );

    let where_and_what: Vec<(u64, &str)> = report
        .sample_errors
        .iter()
        .map(|error| (error.row, error.column.as_str()))
        .collect();
    assert_eq!(
        where_and_what,
        [
            (3, "(record)"),
            (4, "timestamp"),
            (5, "amount"),
            (6, "customer_id"),
            (8, "amount"),
            (9, "amount")
        ]
    );
    let file = fixture.data.display();
    let texts: Vec<String> = report
        .sample_errors
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        texts[0],
        format!("{file}: row 3, column '(record)': expected 4 fields as in the header, found 3")
    );
    assert!(
        texts[1].starts_with(&format!(
            "{file}: row 4, column 'timestamp': cannot parse '05/03/2024'"
        )),
        "{}",
        texts[1]
    );
    assert_eq!(
        texts[2],
        format!("{file}: row 5, column 'amount': cannot parse 'abc' as a decimal amount")
    );
    assert_eq!(
        texts[3],
        format!("{file}: row 6, column 'customer_id': customer id is empty")
    );
    assert_eq!(
        texts[4],
        format!("{file}: row 8, column 'amount': amount 'NaN' is not a finite number")
    );
    assert!(texts[5].contains("negative"), "{}", texts[5]);
    for text in &texts {
        assert!(
            !text.contains("SECRET"),
            "a row error leaked a customer id: {text}"
        );
    }

    let rejects = read_csv(&fixture.rejects);
    let expected_rows: Vec<Vec<&str>> = vec![
        vec![
            "row",
            "column",
            "error",
            "customer_id",
            "timestamp",
            "amount",
            "channel",
        ],
        // A short row's fields may be shifted, so none of them is copied.
        vec![
            "3",
            "(record)",
            "expected 4 fields as in the header, found 3",
            "",
            "",
            "",
            "",
        ],
        vec![
            "4",
            "timestamp",
            &report.sample_errors[1].message,
            "<redacted>",
            "05/03/2024",
            "7.00",
            "store",
        ],
        vec![
            "5",
            "amount",
            "cannot parse 'abc' as a decimal amount",
            "<redacted>",
            "2024-03-07",
            "abc",
            "store",
        ],
        vec![
            "6",
            "customer_id",
            "customer id is empty",
            "<redacted>",
            "2024-03-08",
            "1.00",
            "web",
        ],
        vec![
            "8",
            "amount",
            "amount 'NaN' is not a finite number",
            "<redacted>",
            "2024-03-10 08:00:00",
            "NaN",
            "app",
        ],
        vec![
            "9",
            "amount",
            &report.sample_errors[5].message,
            "<redacted>",
            "2024-03-11",
            "-3.00",
            "app",
        ],
    ];
    assert_eq!(rejects, expected_rows);
    let rejects_text = std::fs::read_to_string(&fixture.rejects).unwrap_or_default();
    assert!(
        !rejects_text.contains("SECRET"),
        "the rejects file leaked a customer id"
    );
}

#[test]
fn too_many_rejects_abort_with_counts_but_still_write_the_rejects_file() {
    let fixture = fixture(MIXED_FILE.as_bytes());
    let error = load_transactions(&source(&fixture, 0.5))
        .map(|_| ())
        .unwrap_err();
    match &error {
        IngestError::TooManyRejects {
            file,
            rejected,
            read,
            threshold,
        } => {
            assert_eq!((file, *rejected, *read), (&fixture.data, 6, 8));
            // The threshold is stored, not computed, so it compares exactly.
            assert_eq!(*threshold, 0.5);
        }
        other => panic!("expected TooManyRejects, got {other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.contains("6 of 8 rows were rejected") && message.contains("0.5"),
        "{message}"
    );
    assert!(message.contains("partner.csv"), "{message}");
    assert_eq!(
        read_csv(&fixture.rejects).len(),
        7,
        "header and six rejected rows"
    );
    // Exactly at the threshold is still accepted: 6/8 = 0.75.
    assert!(load_transactions(&source(&fixture, 0.75)).is_ok());
}

#[test]
fn empty_and_header_only_files_are_named_errors() {
    let empty = fixture(b"");
    let error = load_transactions(&CsvSource::new(&empty.data))
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(&error, IngestError::EmptyFile { file } if *file == empty.data),
        "{error:?}"
    );
    assert!(error.to_string().contains("partner.csv"));

    let header_only = fixture(b"customer_id,timestamp,amount\n");
    let error = load_transactions(&CsvSource::new(&header_only.data))
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(&error, IngestError::NoRows { file } if *file == header_only.data),
        "{error:?}"
    );

    let missing = CsvSource::new(empty.data.with_file_name("absent.csv"));
    assert!(matches!(
        load_transactions(&missing),
        Err(IngestError::Open { .. })
    ));
}

#[test]
fn missing_mapped_columns_are_named() {
    let fixture = fixture(b"cust,timestamp,amount\nC1,2024-03-05,1.0\n");
    let error = load_transactions(&CsvSource::new(&fixture.data))
        .map(|_| ())
        .unwrap_err();
    match &error {
        IngestError::MissingColumn {
            file,
            role,
            column,
            found,
        } => {
            assert_eq!(
                (file, *role, column.as_str()),
                (&fixture.data, "customer id", "customer_id")
            );
            assert_eq!(found, &["cust", "timestamp", "amount"]);
        }
        other => panic!("expected MissingColumn, got {other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.contains("'customer_id'") && message.contains("partner.csv"),
        "{message}"
    );

    // An optional column that is mapped must exist too.
    let columns = ColumnMapping {
        customer_id: "cust".to_owned(),
        channel: Some("via".to_owned()),
        ..ColumnMapping::default()
    };
    let error = load_transactions(&CsvSource {
        columns,
        ..CsvSource::new(&fixture.data)
    })
    .map(|_| ())
    .unwrap_err();
    assert!(
        matches!(&error, IngestError::MissingColumn { column, .. } if column == "via"),
        "{error:?}"
    );
}

#[test]
fn custom_columns_and_delimiter() {
    let fixture = fixture(
        "kunde;datum;betrag\nA;05.03.2024;1.5\nB;2024/03/06;2\nA;1709769600;3\n".as_bytes(),
    );
    let columns = ColumnMapping {
        customer_id: "kunde".to_owned(),
        timestamp: "datum".to_owned(),
        amount: "betrag".to_owned(),
        ..ColumnMapping::default()
    };
    let source = CsvSource {
        columns,
        delimiter: ';',
        ..CsvSource::new(&fixture.data)
    };
    let (log, report) = load_transactions(&source).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!((report.rows_read, report.rows_rejected), (3, 0));
    assert_eq!(log.customer_ids().collect::<Vec<_>>(), ["A", "B"]);
    assert_eq!(log.n_transactions(), 3);
    assert!(matches!(
        load_transactions(&CsvSource {
            delimiter: '"',
            ..source.clone()
        }),
        Err(IngestError::InvalidDelimiter { delimiter: '"' })
    ));
    assert!(matches!(
        load_transactions(&CsvSource {
            max_reject_fraction: f64::NAN,
            ..source
        }),
        Err(IngestError::InvalidRejectFraction { .. })
    ));
}

#[test]
fn invalid_utf8_mid_file_fails_the_whole_load() {
    let mut contents = b"customer_id,timestamp,amount\nC1,2024-03-05,1.0\n".to_vec();
    contents.extend_from_slice(b"C2,2024-03-05,\xff\xfe\n");
    contents.extend_from_slice(b"C3,2024-03-06,2.0\n");
    let fixture = fixture(&contents);
    let error = load_transactions(&CsvSource::new(&fixture.data))
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(&error, IngestError::Read { file, .. } if *file == fixture.data),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("nothing from this file was loaded"),
        "{error}"
    );
}

#[test]
fn loaded_file_feeds_examples() {
    let fixture = fixture(
        b"customer_id,timestamp,amount\n\
          A,2024-03-01T09:00:00,10\n\
          A,2024-03-31T23:59:59+00:00,20\n\
          A,2024-04-15,5\n\
          B,2024-03-10,7\n\
          C,2024-04-02,1\n",
    );
    let (log, _) =
        load_transactions(&CsvSource::new(&fixture.data)).unwrap_or_else(|error| panic!("{error}"));
    let cutoff = chrono::NaiveDate::from_ymd_opt(2024, 3, 31).unwrap_or_default();
    let label = LabelSpec {
        task: TaskKind::Churn,
        cutoff,
        horizon_days: 30,
    };
    let examples = build_examples(&log, &label, &FeatureSpec::standard());
    let labels: Vec<(&str, Option<f32>)> = examples
        .iter()
        .map(|row| (row.customer_id.as_str(), row.label))
        .collect();
    assert_eq!(labels, [("A", Some(0.0)), ("B", Some(1.0))]);
    // A bought on the cutoff day itself (23:59:59 UTC), so its recency is 0.
    assert_eq!(examples[0].features[0], 0.0);
}

#[test]
fn byte_order_mark_and_crlf_line_endings_are_accepted() {
    let fixture = fixture(
        b"\xef\xbb\xbfcustomer_id,timestamp,amount\r\nC1,2024-03-05,1.0\r\nC2,2024-03-06,2.0\r\n",
    );
    let (log, report) =
        load_transactions(&CsvSource::new(&fixture.data)).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!((report.rows_read, report.rows_rejected), (2, 0));
    assert_eq!(log.customer_ids().collect::<Vec<_>>(), ["C1", "C2"]);
}

#[cfg(unix)]
#[test]
fn the_rejects_file_is_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    // Rejected rows are partner rows; the umask (often 0o022) must not make
    // them readable by other local accounts.
    let fixture = fixture(MIXED_FILE.as_bytes());
    let loaded = load_transactions(&source(&fixture, 1.0));
    assert!(loaded.is_ok(), "{:?}", loaded.err());
    let mode = std::fs::metadata(&fixture.rejects)
        .map(|metadata| metadata.permissions().mode())
        .unwrap_or(0o777);
    assert_eq!(mode & 0o077, 0, "rejects file mode {mode:o}");
}
