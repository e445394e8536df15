//! Loading partner data end to end: formats and encodings, malformed input (each a clear error
//! or a reject, never a panic), the profile join with measured k-anonymity, the reports, and PostgreSQL
//! against a real server started by `scripts/postgres-test-server`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use veil_behaviour_features::{FeatureName, FeatureSpec, build_scoring_rows};
use veil_de_identification::{ColumnRole, GeneralisationPolicy};
use veil_partner_data::{
    AUDITOR_SUMMARY, DeidSettings, Input, PartnerDataConfig, PartnerDataError, REPORT_JSON,
    REPORT_TEXT, SourceConfig, TextEncoding, UndeclaredColumns, load_partner_data,
    load_partner_data_with_local_ids,
};

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap_or_else(|error| panic!("tempdir: {error}")),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, contents).unwrap_or_else(|error| panic!("write: {error}"));
        path
    }

    fn settings(&self, k: usize) -> DeidSettings {
        DeidSettings {
            key_path: self.path("state/pseudonym.key"),
            report_dir: self.path("state/report"),
            k,
            l: None,
        }
    }
}

fn roles(pairs: &[(&str, ColumnRole)]) -> BTreeMap<String, ColumnRole> {
    pairs
        .iter()
        .map(|(name, role)| ((*name).to_owned(), role.clone()))
        .collect()
}

fn transactions(input: Input, rejects: Option<PathBuf>, max_reject_fraction: f64) -> SourceConfig {
    SourceConfig {
        input,
        customer_id: "cust".to_owned(),
        category: Some("category".to_owned()),
        channel: None,
        columns: roles(&[
            ("cust", ColumnRole::Identifier),
            ("ts", ColumnRole::Timestamp),
            ("amount", ColumnRole::Amount),
            ("category", ColumnRole::Feature),
            ("memo", ColumnRole::Text),
        ]),
        undeclared_columns: UndeclaredColumns::Error,
        rejects_path: rejects,
        max_reject_fraction,
    }
}

fn csv_input(path: PathBuf) -> Input {
    Input::Csv {
        path,
        delimiter: None,
        encoding: TextEncoding::Utf8,
    }
}

fn config(fixture: &Fixture, transactions: SourceConfig) -> PartnerDataConfig {
    PartnerDataConfig {
        transactions,
        profile: None,
        deid: fixture.settings(2),
    }
}

fn load_error(config: &PartnerDataConfig) -> String {
    match load_partner_data(config) {
        Ok(data) => panic!("expected an error, loaded {:?}", data.report),
        Err(error) => error.to_string(),
    }
}

const GOOD_ROWS: &str = "C-SECRET-1;2024-03-05;10.00;grocery;call 13800138000\n\
                         C-SECRET-2;2024-03-06;5;books;\n\
                         C-SECRET-1;2024-03-09T10:00:00Z;2.50;books;ok\n";

#[test]
fn sniffed_semicolons_with_bom_load_and_ids_are_pseudonymised() {
    let fixture = Fixture::new();
    let text = format!("\u{feff}cust;ts;amount;category;memo\n{GOOD_ROWS}");
    let path = fixture.write("tx.csv", text.as_bytes());
    let data = load_partner_data(&config(&fixture, transactions(csv_input(path), None, 0.0)))
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(data.log.n_customers(), 2);
    assert_eq!(data.log.n_transactions(), 3);
    for id in data.log.customer_ids() {
        assert_eq!(id.len(), 64, "pseudonyms are HMAC-SHA256 hex");
        assert!(!id.contains("SECRET"));
    }
    let deid = data
        .report
        .transactions
        .deid
        .unwrap_or_else(|| panic!("no deid report"));
    assert_eq!(deid.columns_pseudonymised, ["cust"]);
    assert_eq!(
        deid.pii_hits_per_column
            .get("memo")
            .map(|counts| counts.phone),
        Some(1)
    );
    for name in [REPORT_JSON, REPORT_TEXT, AUDITOR_SUMMARY] {
        let text = std::fs::read_to_string(fixture.path("state/report").join(name))
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        assert!(
            !text.contains("SECRET") && !text.contains("13800138000"),
            "{name}: {text}"
        );
    }
    let summary = std::fs::read_to_string(fixture.path("state/report").join(AUDITOR_SUMMARY))
        .unwrap_or_default();
    assert!(
        !summary.contains("memo"),
        "auditor summary names no columns: {summary}"
    );
}

#[test]
fn gbk_declared_files_are_decoded() {
    let fixture = Fixture::new();
    let text =
        "cust,ts,amount,category,memo\n张三,2024-03-05,10.00,食品,备注\n李四,2024-03-06,5,图书,\n";
    let (bytes, _, _) = encoding_rs::GBK.encode(text);
    let path = fixture.write("tx.csv", &bytes);
    let mut source = transactions(
        Input::Csv {
            path,
            delimiter: Some(','),
            encoding: TextEncoding::Gbk,
        },
        None,
        0.0,
    );
    source.category = Some("category".to_owned());
    let data =
        load_partner_data(&config(&fixture, source)).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(data.log.n_customers(), 2);
    let spec = FeatureSpec {
        features: vec![FeatureName::DistinctCategories],
        recent_window_days: 30,
    };
    let cutoff = chrono::NaiveDate::from_ymd_opt(2024, 4, 1).unwrap_or_default();
    let rows = build_scoring_rows(&data.log, cutoff, &spec);
    // One category each: ln(1 + 1).
    assert!(
        rows.iter()
            .all(|row| (row.features[0] - 2f32.ln()).abs() < 1e-6)
    );
}

#[test]
fn malformed_inputs_give_clear_errors() {
    let fixture = Fixture::new();
    let check = |name: &str, contents: &[u8], expected: &[&str]| {
        let path = fixture.write(name, contents);
        let message = load_error(&config(&fixture, transactions(csv_input(path), None, 0.5)));
        for fragment in expected {
            assert!(
                message.contains(fragment),
                "{name}: {message:?} lacks {fragment:?}"
            );
        }
        assert!(!message.contains("SECRET"), "{message}");
    };
    check("empty.csv", b"", &["empty.csv", "empty"]);
    check("blank.csv", b"\n\n", &["blank.csv", "empty"]);
    check(
        "header.csv",
        b"cust,ts,amount,category,memo\n",
        &["header.csv", "no data rows"],
    );
    check(
        "missing.csv",
        b"cust,ts,category,memo\nC-SECRET-1,2024-01-01,a,b\n",
        &[
            "missing.csv",
            "'amount'",
            "amount",
            "found: cust, ts, category, memo",
        ],
    );
    check(
        "extra.csv",
        b"cust,ts,amount,category,memo,email\nC-SECRET-1,2024-01-01,1,a,b,x@y.com\n",
        &["extra.csv", "'email' has no declared role"],
    );
    let (gbk_bytes, _, _) = encoding_rs::GBK.encode("cust,ts,amount,category,memo\n");
    let mut bad_gbk = gbk_bytes.into_owned();
    bad_gbk.extend_from_slice(b"C-SECRET-1,2024-01-01,1,\x81\x20,x\n");
    let path = fixture.write("bad-gbk.csv", &bad_gbk);
    let mut source = transactions(
        Input::Csv {
            path,
            delimiter: None,
            encoding: TextEncoding::Gbk,
        },
        None,
        0.5,
    );
    source.max_reject_fraction = 1.0;
    let message = load_error(&config(&fixture, source));
    assert!(
        message.contains("bad-gbk.csv")
            && message.contains("not valid GBK at byte")
            && message.contains("(line 2)"),
        "{message}"
    );
    check(
        "one-column.csv",
        b"cust\nC-SECRET-1\n",
        &["one-column.csv", "delimiter"],
    );
}

/// Loads `contents` as a UTF-8 transaction CSV allowing most rows to be rejected, and returns
/// each rejection as (row, column, message).
fn rejections(fixture: &Fixture, name: &str, contents: &[u8]) -> Vec<(u64, String, String)> {
    let path = fixture.write(name, contents);
    let data = load_partner_data(&config(
        fixture,
        transactions(csv_input(path.clone()), None, 0.9),
    ))
    .unwrap_or_else(|error| panic!("{name}: {error}"));
    let report = &data.report.transactions;
    assert_eq!(
        report.rows_accepted + report.rows_rejected,
        report.rows_read,
        "{name}: every row is accepted or rejected"
    );
    assert!(report.sample_errors.iter().all(|error| error.file == path));
    report
        .sample_errors
        .iter()
        .map(|error| (error.row, error.column.clone(), error.message.clone()))
        .collect()
}

/// Rows that parse anywhere, appended so each malformed file stays under the reject threshold.
const FILLER_ROWS: &str = "C-OK,2024-01-02,1,a,b\nC-OK,2024-01-03,1,a,b\nC-OK,2024-01-04,1,a,b\n\
                           C-OK,2024-01-05,1,a,b\nC-OK,2024-01-06,1,a,b\nC-OK,2024-01-07,1,a,b\n";

#[test]
fn unparseable_dates_and_amounts_are_rejected_naming_row_and_column() {
    let fixture = Fixture::new();
    let header = "cust,ts,amount,category,memo\n";
    let bad_dates = [
        "2024-13-01",
        "2024-02-30",
        "yesterday",
        "",
        "99999999999999999999",
    ];
    let mut text = String::from(header);
    for date in bad_dates {
        text.push_str(&format!("C-1,{date},1,a,b\n"));
    }
    text.push_str(FILLER_ROWS);
    let rejected = rejections(&fixture, "dates.csv", text.as_bytes());
    assert_eq!(rejected.len(), bad_dates.len());
    for ((row, column, message), (index, date)) in rejected.iter().zip(bad_dates.iter().enumerate())
    {
        assert_eq!(
            (*row, column.as_str()),
            (index as u64 + 2, "ts"),
            "{message}"
        );
        assert!(message.contains("timestamp"), "{message}");
        assert!(
            message.contains(date),
            "the message quotes {date:?}: {message}"
        );
    }

    let bad_amounts = [
        "NaN",
        "inf",
        "1e400",
        "",
        "--5",
        "\"1,000.00\"",
        "１",
        "12abc",
    ];
    let mut text = String::from(header);
    for amount in bad_amounts {
        text.push_str(&format!("C-1,2024-01-01,{amount},a,b\n"));
    }
    text.push_str(FILLER_ROWS);
    text.push_str(FILLER_ROWS);
    let rejected = rejections(&fixture, "amounts.csv", text.as_bytes());
    let where_rejected: Vec<(u64, &str)> = rejected
        .iter()
        .map(|(row, column, _)| (*row, column.as_str()))
        .collect();
    let expected: Vec<(u64, &str)> = (0..bad_amounts.len() as u64)
        .map(|index| (index + 2, "amount"))
        .collect();
    assert_eq!(where_rejected, expected, "{rejected:?}");
}

#[test]
fn broken_csv_structure_and_encodings_are_rejected_not_merged() {
    let fixture = Fixture::new();
    let header = "cust,ts,amount,category,memo\n";

    // A quote left open swallows the rest of the file into one field; that row is rejected with
    // the reason instead of loading as one transaction with a long memo.
    let text = format!(
        "{header}{FILLER_ROWS}C-1,2024-01-01,1,a,\"b\nC-2,2024-01-02,1,a,b\nC-3,2024-01-03,1,a,b\n"
    );
    let rejected = rejections(&fixture, "open-quote.csv", text.as_bytes());
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    let (row, column, message) = &rejected[0];
    assert_eq!((*row, column.as_str()), (8, "(record)"));
    assert!(
        message.contains("never closed") && message.contains("2 more line"),
        "{message}"
    );

    // Legitimate multi-line notes, in the middle and at the end, are not mistaken for that.
    let text = format!(
        "{header}C-1,2024-01-01,1,a,\"line one\nline two\"\n{FILLER_ROWS}C-2,2024-01-02,1,a,\"last\nnote, with a comma\"\n"
    );
    assert_eq!(rejections(&fixture, "multi-line.csv", text.as_bytes()), []);

    // Too many fields.
    let text = format!("{header}C-1,2024-01-01,1,a,b,extra\n{FILLER_ROWS}");
    let rejected = rejections(&fixture, "too-many.csv", text.as_bytes());
    assert_eq!(rejected.len(), 1);
    assert_eq!((rejected[0].0, rejected[0].1.as_str()), (2, "(record)"));
    assert!(
        rejected[0].2.contains("expected 5 fields"),
        "{}",
        rejected[0].2
    );

    // A GBK-encoded row in a file read as UTF-8: rejected, naming the column and the fix.
    // (Some GBK text such as 食品 happens to be valid UTF-8 byte-wise; 备注 is not.)
    let (gbk_row, _, _) = encoding_rs::GBK.encode("C-1,2024-01-01,1,a,备注\n");
    let mut bytes = header.as_bytes().to_vec();
    bytes.extend_from_slice(&gbk_row);
    bytes.extend_from_slice(FILLER_ROWS.as_bytes());
    let rejected = rejections(&fixture, "gbk-as-utf8.csv", &bytes);
    assert_eq!(rejected.len(), 1);
    assert_eq!((rejected[0].0, rejected[0].1.as_str()), (2, "memo"));
    assert!(
        rejected[0].2.contains("UTF-8") && rejected[0].2.contains("gbk"),
        "{}",
        rejected[0].2
    );
}

#[test]
fn unreadable_inputs_are_errors_naming_the_input() {
    let fixture = Fixture::new();
    let missing = fixture.path("does-not-exist.csv");
    let message = load_error(&config(
        &fixture,
        transactions(csv_input(missing), None, 0.5),
    ));
    assert!(
        message.contains("does-not-exist.csv") && message.contains("cannot open"),
        "{message}"
    );

    let bom_only = fixture.write("bom-only.csv", b"\xef\xbb\xbf");
    let message = load_error(&config(
        &fixture,
        transactions(csv_input(bom_only), None, 0.5),
    ));
    assert!(
        message.contains("bom-only.csv") && message.contains("empty"),
        "{message}"
    );

    // Invalid UTF-8 in the header: the declared column cannot be found, and the message lists
    // what the header does hold.
    let bad_header = fixture.write(
        "bad-header.csv",
        b"cust,t\xffs,amount,category,memo\nC-1,2024-01-01,1,a,b\n",
    );
    let message = load_error(&config(
        &fixture,
        transactions(csv_input(bad_header), None, 0.5),
    ));
    assert!(
        message.contains("bad-header.csv") && message.contains("'ts'"),
        "{message}"
    );

    let not_parquet = fixture.write("garbage.parquet", b"PAR1 this is not parquet PAR1");
    let message = load_error(&config(&fixture, parquet_transactions(not_parquet)));
    assert!(
        message.contains("garbage.parquet") && message.contains("Parquet"),
        "{message}"
    );

    // A profile table missing a declared column names the profile file, not the transactions.
    let (tx, _) = write_join_fixture(&fixture);
    let profile = fixture.write(
        "profile-no-age.csv",
        b"id,name,email,gender,postcode,segment,notes\nC0,N,e@x.com,F,10087,gold,\n",
    );
    let mut with_profile = config(&fixture, transactions(csv_input(tx), None, 0.0));
    with_profile.profile = Some(profile_source(csv_input(profile)));
    let message = load_error(&with_profile);
    assert!(
        message.contains("profile-no-age.csv") && message.contains("'age'"),
        "{message}"
    );
}

#[test]
fn bad_rows_are_rejected_with_file_row_and_column_and_redacted_ids() {
    let fixture = Fixture::new();
    let mut text = b"cust,ts,amount,category,memo\n".to_vec();
    text.extend_from_slice(b"C-SECRET-1,2024-03-05,10.00,grocery,fine\n");
    text.extend_from_slice(b"C-SECRET-2,2024-03-06,5\n");
    text.extend_from_slice(b"C-SECRET-3,05/03/2024,7.00,books,x\n");
    text.extend_from_slice(b"C-SECRET-4,2024-03-07,abc,books,mail me at a@b.com\n");
    text.extend_from_slice(b",2024-03-08,1.00,books,x\n");
    text.extend_from_slice(b"C-SECRET-5,2024-03-08,1.00,bo\xffks,x\n");
    for day in 10..20 {
        text.extend_from_slice(format!("C-SECRET-1,2024-03-{day},1.00,grocery,\n").as_bytes());
    }
    let path = fixture.write("tx.csv", &text);
    let rejects = fixture.path("tx.rejects.csv");
    let source = transactions(csv_input(path.clone()), Some(rejects.clone()), 0.5);
    let data =
        load_partner_data(&config(&fixture, source)).unwrap_or_else(|error| panic!("{error}"));
    let report = &data.report.transactions;
    assert_eq!(
        (report.rows_read, report.rows_accepted, report.rows_rejected),
        (16, 11, 5)
    );
    let where_what: Vec<(u64, &str)> = report
        .sample_errors
        .iter()
        .map(|error| (error.row, error.column.as_str()))
        .collect();
    assert_eq!(
        where_what,
        [
            (3, "(record)"),
            (4, "ts"),
            (5, "amount"),
            (6, "cust"),
            (7, "category")
        ]
    );
    assert!(report.sample_errors.iter().all(|error| error.file == path));
    let rejected = std::fs::read_to_string(&rejects).unwrap_or_default();
    assert_eq!(rejected.lines().count(), 6, "{rejected}");
    assert!(rejected.starts_with("row,column,error,cust,ts,amount,category,memo\n"));
    assert!(!rejected.contains("SECRET"), "{rejected}");
    assert!(rejected.contains("<redacted>"));
    assert!(
        rejected.contains("[EMAIL]") && !rejected.contains("a@b.com"),
        "{rejected}"
    );

    // The same file with a 10% threshold aborts, naming the counts.
    let strict = transactions(csv_input(path), None, 0.1);
    let message = load_error(&config(&fixture, strict));
    assert!(message.contains("5 of 16 rows were rejected"), "{message}");
}

/// One distinctive value per detector, letters in mixed case, for the leak test below.
const SEEDED_PII: [&str; 7] = [
    "Zed.QuartzLeak@Example-Unique.org",
    "+86 139 8765 4321",
    "+1 (415) 555-0132",
    "44030519880315123X",
    "6228 4812 3456 7890 128",
    "203.0.113.77",
    "2001:DB8:BEEF::77",
];

#[test]
fn pii_values_never_reach_reports_rejects_or_error_samples() {
    let fixture = Fixture::new();
    let mut text = String::from("cust,ts,amount,category,memo\n");
    for (index, value) in SEEDED_PII.iter().enumerate() {
        // In the free-text column, and in the category declared as a feature by mistake.
        text.push_str(&format!(
            "C-SECRET-{index},2024-03-0{},1.00,\"{value}\",\"note {value} end\"\n",
            index + 1
        ));
        // In a timestamp and in an amount, where the row is rejected and its reason reported.
        text.push_str(&format!("C-SECRET-{index},\"{value}\",1.00,books,\n"));
        text.push_str(&format!("C-SECRET-{index},2024-03-09,\"{value}\",books,\n"));
    }
    let path = fixture.write("tx.csv", text.as_bytes());
    let rejects = fixture.path("tx.rejects.csv");
    let source = transactions(csv_input(path), Some(rejects.clone()), 0.7);
    let data =
        load_partner_data(&config(&fixture, source)).unwrap_or_else(|error| panic!("{error}"));
    let report = &data.report.transactions;
    let n_values = SEEDED_PII.len() as u64;
    assert_eq!(
        (report.rows_accepted, report.rows_rejected),
        (n_values, 2 * n_values)
    );
    let deid = report
        .deid
        .as_ref()
        .unwrap_or_else(|| panic!("no deid report"));
    for column in ["memo", "category"] {
        let total = deid
            .pii_hits_per_column
            .get(column)
            .map_or(0, |counts| counts.total());
        assert_eq!(total, n_values, "every seeded value counted in {column}");
    }

    let mut outputs = vec![
        data.report.to_string(),
        serde_json::to_string(&data.report).unwrap_or_else(|error| panic!("{error}")),
        format!("{:?}", data.report),
        std::fs::read_to_string(&rejects).unwrap_or_else(|error| panic!("rejects: {error}")),
    ];
    for name in [REPORT_JSON, REPORT_TEXT, AUDITOR_SUMMARY] {
        let path = fixture.path("state/report").join(name);
        outputs
            .push(std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{name}: {error}")));
    }
    for value in SEEDED_PII {
        let mut forms = vec![value.to_owned(), value.to_lowercase(), value.to_uppercase()];
        // The bare digits too, for numbers long enough not to occur by chance in counts.
        let digits: String = value.chars().filter(char::is_ascii_digit).collect();
        if digits.len() >= 8 {
            forms.push(digits);
        }
        for form in forms {
            for output in &outputs {
                assert!(!output.contains(&form), "{form:?} leaked into:\n{output}");
            }
        }
    }
    assert!(outputs.iter().all(|output| !output.contains("SECRET")));
}

fn profile_source(input: Input) -> SourceConfig {
    SourceConfig {
        input,
        customer_id: "id".to_owned(),
        category: None,
        channel: None,
        columns: roles(&[
            ("id", ColumnRole::Identifier),
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
            ("segment", ColumnRole::Sensitive),
            ("notes", ColumnRole::Text),
        ]),
        undeclared_columns: UndeclaredColumns::Error,
        rejects_path: None,
        max_reject_fraction: 0.2,
    }
}

/// Ten customers C0..C9 with two purchases each, and profiles for C0..C8 (plus one without
/// transactions): C0..C5 have ages in their 30s and postcodes 10087, 10187, ... 10587 (one
/// prefix of two characters); C6..C8 are singled out.
fn write_join_fixture(fixture: &Fixture) -> (PathBuf, PathBuf) {
    let mut tx = String::from("cust,ts,amount,category,memo\n");
    for customer in 0..10 {
        tx.push_str(&format!(
            "C{customer},2024-01-0{},3.00,food,\n",
            customer % 9 + 1
        ));
        tx.push_str(&format!(
            "C{customer},2024-02-0{},4.00,toys,\n",
            customer % 9 + 1
        ));
    }
    let mut profile = String::from("id,name,email,age,gender,postcode,segment,notes\n");
    for customer in 0..6 {
        profile.push_str(&format!(
            "C{customer},Name {customer},c{customer}@example.com,3{customer},{},10{customer}87,{},likes tea\n",
            if customer % 2 == 0 { "F" } else { "M" },
            if customer % 2 == 0 { "gold" } else { "silver" }
        ));
    }
    profile.push_str("C6,Zed,z@example.com,71,F,90012,gold,\"call 13912345678\"\n");
    profile.push_str("C7,Yan,y@example.com,18,M,55555,silver,\n");
    profile.push_str("C8,Xu,x@example.com,55,F,77777,gold,\n");
    profile.push_str("C99,Wu,w@example.com,40,M,10087,gold,\n");
    (
        fixture.write("tx.csv", tx.as_bytes()),
        fixture.write("profile.csv", profile.as_bytes()),
    )
}

/// The profile of the customer whose raw id is `raw`.
fn profile_of(
    data: &veil_partner_data::PartnerData,
    local_ids: &std::collections::HashMap<String, String>,
    raw: &str,
) -> Option<veil_behaviour_features::CustomerProfile> {
    data.log
        .customers_with_profiles()
        .find(|(customer, _, _)| local_ids.get(*customer).is_some_and(|id| id == raw))
        .and_then(|(_, _, profile)| profile.copied())
}

/// The join keeps every customer and the report *measures* k and l of the declared
/// generalisation. This test used to check that k-anonymity was enforced on the profile rows
/// (recoding and suppressing C6..C8); it no longer is, because suppressing or recoding a
/// customer according to the other rows breaks the one-customer adjacency DP-SGD is charged for.
#[test]
fn profile_join_measures_k_anonymity_and_keeps_every_customer() {
    let fixture = Fixture::new();
    let (tx, profile) = write_join_fixture(&fixture);
    let mut config = config(&fixture, transactions(csv_input(tx), None, 0.0));
    config.profile = Some(profile_source(csv_input(profile)));
    config.deid = DeidSettings {
        k: 3,
        l: Some(2),
        ..fixture.settings(3)
    };
    let (data, local_ids) =
        load_partner_data_with_local_ids(&config).unwrap_or_else(|error| panic!("{error}"));
    let report = &data.report;
    let profile_report = report
        .profile
        .as_ref()
        .unwrap_or_else(|| panic!("no profile report"));
    let deid = profile_report
        .deid
        .as_ref()
        .unwrap_or_else(|| panic!("no deid"));
    let k_report = deid
        .k_anonymity
        .as_ref()
        .unwrap_or_else(|| panic!("k-anonymity was not measured"));
    // Under the declared rules (10-year bands, 3-character postcode prefixes 100, 101, ...)
    // every row is alone in its class. The old pass reached k = 3 by recoding postcodes from the
    // table; now the classes are measured as they are, below the targets, and all kept.
    assert_eq!(
        k_report.mode,
        veil_de_identification::KAnonymityMode::Measured
    );
    assert_eq!(
        (
            k_report.records_in,
            k_report.records_kept,
            k_report.records_suppressed
        ),
        (10, 10, 0)
    );
    assert_eq!(k_report.class_size_histogram, BTreeMap::from([(1, 10)]));
    assert_eq!(k_report.equivalence_classes, 10);
    assert_eq!(
        (k_report.k_achieved, k_report.l_achieved),
        (Some(1), Some(1))
    );
    assert!(!k_report.meets_targets());
    assert!(
        k_report
            .generalisation_levels
            .iter()
            .all(|level| level.level == 0)
    );
    let text = std::fs::read_to_string(fixture.path("state/report").join(REPORT_TEXT))
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(
        text.contains("measured, not enforced") && text.contains("below target"),
        "{text}"
    );
    assert_eq!(deid.columns_dropped, ["name"]);
    assert_eq!(deid.columns_pseudonymised, ["id", "email"]);
    assert_eq!(
        deid.pii_hits_per_column
            .get("notes")
            .map(|counts| counts.phone),
        Some(1)
    );

    let join = &report.join;
    assert_eq!(join.customers_with_transactions, 10);
    assert_eq!(join.customers_kept, 10);
    assert_eq!(join.customers_kept as usize, data.log.n_customers());
    // C0..C8 have a profile, singled out or not; C9 has none; C99 has no transactions.
    assert_eq!(join.customers_with_profile, 9);
    assert_eq!(join.customers_with_profile as usize, data.log.n_profiles());
    assert_eq!(join.customers_without_profile, 1);
    assert_eq!(join.profiles_without_transactions, 1);
    assert_eq!(data.log.n_transactions(), 20);
    // Local ids map pseudonyms back for local outputs only.
    assert!(local_ids.values().any(|raw| raw == "C0"));
    assert_eq!(local_ids.len(), 10);
}

/// The old behaviour is gone from the training path: no generalisation level is chosen from
/// the data. Whatever k asks for, and whether the table reaches it or not, every customer's
/// profile is its own row under the declared rules (10-year bands, gender as given), and the
/// loaded log is the same for k = 1 and k = 5.
#[test]
fn training_profiles_keep_the_declared_bands_whatever_k_the_table_reaches() {
    let fixture = Fixture::new();
    let (tx, profile) = write_join_fixture(&fixture);
    let mut config = config(&fixture, transactions(csv_input(tx), None, 0.0));
    config.profile = Some(profile_source(csv_input(profile)));
    let mut logs = Vec::new();
    for k in [1, 5] {
        config.deid = DeidSettings {
            l: Some(2),
            ..fixture.settings(k)
        };
        let (data, local_ids) =
            load_partner_data_with_local_ids(&config).unwrap_or_else(|error| panic!("{error}"));
        let declared = [
            ("C0", 34.5, Some(veil_behaviour_features::Gender::Female)),
            ("C1", 34.5, Some(veil_behaviour_features::Gender::Male)),
            ("C6", 74.5, Some(veil_behaviour_features::Gender::Female)),
            ("C7", 14.5, Some(veil_behaviour_features::Gender::Male)),
            ("C8", 54.5, Some(veil_behaviour_features::Gender::Female)),
        ];
        for (raw, age_band_middle, gender) in declared {
            assert_eq!(
                profile_of(&data, &local_ids, raw),
                Some(veil_behaviour_features::CustomerProfile {
                    age_years: Some(age_band_middle),
                    birth_year: None,
                    gender,
                }),
                "{raw} with k = {k}"
            );
        }
        assert_eq!(profile_of(&data, &local_ids, "C9"), None);
        logs.push(data.log);
    }
    assert_eq!(logs[0], logs[1], "k changed the training data");
}

#[test]
fn profile_features_use_generalised_attributes() {
    let fixture = Fixture::new();
    let (tx, profile) = write_join_fixture(&fixture);
    let mut config = config(&fixture, transactions(csv_input(tx), None, 0.0));
    config.profile = Some(profile_source(csv_input(profile)));
    config.deid = fixture.settings(2);
    let (data, local_ids) =
        load_partner_data_with_local_ids(&config).unwrap_or_else(|error| panic!("{error}"));
    let spec = FeatureSpec {
        features: vec![
            FeatureName::ProfileAge,
            FeatureName::ProfileAgeKnown,
            FeatureName::GenderFemale,
            FeatureName::CategoryConcentration,
        ],
        recent_window_days: 30,
    };
    let cutoff = chrono::NaiveDate::from_ymd_opt(2024, 4, 1).unwrap_or_default();
    let rows = build_scoring_rows(&data.log, cutoff, &spec);
    let by_raw = |raw: &str| {
        rows.iter()
            .find(|row| local_ids.get(&row.customer_id).is_some_and(|id| id == raw))
            .map(|row| row.features.clone())
    };
    // C0 is 30 and female: the declared band is 30-39, whose middle is 34.5; the raw age itself
    // is never used, and no wider band is chosen from the data. Band middles, 0 and 1 are
    // exact in f32, so they are compared exactly.
    let c0 = by_raw("C0").unwrap_or_else(|| panic!("C0 missing"));
    assert_eq!(c0[..3], [34.5, 1.0, 1.0]);
    // Two purchases in two categories: 0.5² + 0.5².
    assert!((c0[3] - 0.5).abs() < 1e-6);
    // C9 has no profile: age unknown, gender unknown.
    let c9 = by_raw("C9").unwrap_or_else(|| panic!("C9 missing"));
    assert_eq!(c9[..3], [0.0, 0.0, 0.5]);
}

#[test]
fn unparseable_ages_are_rejected_not_silently_suppressed() {
    let fixture = Fixture::new();
    let (tx, _) = write_join_fixture(&fixture);
    let profile = fixture.write(
        "profile.csv",
        b"id,name,email,age,gender,postcode,segment,notes\nC0,N,e@x.com,thirty,F,10087,gold,\nC1,N,f@x.com,31,F,10087,gold,\n",
    );
    let mut config = config(&fixture, transactions(csv_input(tx), None, 0.0));
    let mut profile_config = profile_source(csv_input(profile));
    profile_config.max_reject_fraction = 0.5;
    config.profile = Some(profile_config);
    config.deid = DeidSettings {
        k: 1,
        ..fixture.settings(1)
    };
    let data = load_partner_data(&config).unwrap_or_else(|error| panic!("{error}"));
    let profile_report = data
        .report
        .profile
        .unwrap_or_else(|| panic!("no profile report"));
    assert_eq!(profile_report.rows_rejected, 1);
    assert_eq!(profile_report.sample_errors[0].column, "age");
    assert_eq!(profile_report.sample_errors[0].row, 2);
}

/// Writes a Parquet file of transactions with the low-level column writers.
fn write_parquet(path: &Path, rows: &[(&str, i64, f64, Option<&str>)]) {
    use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;

    let schema = Arc::new(
        parse_message_type(
            "message tx { REQUIRED BYTE_ARRAY cust (UTF8); REQUIRED INT64 ts (TIMESTAMP_MILLIS); \
             REQUIRED DOUBLE amount; OPTIONAL BYTE_ARRAY category (UTF8); }",
        )
        .unwrap_or_else(|error| panic!("{error}")),
    );
    let file = std::fs::File::create(path).unwrap_or_else(|error| panic!("{error}"));
    let mut writer =
        SerializedFileWriter::new(file, schema, Arc::new(WriterProperties::builder().build()))
            .unwrap_or_else(|error| panic!("{error}"));
    let mut group = writer
        .next_row_group()
        .unwrap_or_else(|error| panic!("{error}"));
    let customers: Vec<ByteArray> = rows.iter().map(|row| ByteArray::from(row.0)).collect();
    let times: Vec<i64> = rows.iter().map(|row| row.1 * 1000).collect();
    let amounts: Vec<f64> = rows.iter().map(|row| row.2).collect();
    let categories: Vec<ByteArray> = rows
        .iter()
        .filter_map(|row| row.3)
        .map(ByteArray::from)
        .collect();
    let category_levels: Vec<i16> = rows.iter().map(|row| i16::from(row.3.is_some())).collect();
    let mut column =
        |write: &mut dyn FnMut(&mut parquet::file::writer::SerializedColumnWriter<'_>)| {
            let mut writer = group
                .next_column()
                .unwrap_or_else(|error| panic!("{error}"))
                .unwrap_or_else(|| panic!("schema has fewer columns"));
            write(&mut writer);
            writer.close().unwrap_or_else(|error| panic!("{error}"));
        };
    column(&mut |writer| {
        writer
            .typed::<ByteArrayType>()
            .write_batch(&customers, None, None)
            .map(|_| ())
            .unwrap_or_else(|error| panic!("{error}"))
    });
    column(&mut |writer| {
        writer
            .typed::<Int64Type>()
            .write_batch(&times, None, None)
            .map(|_| ())
            .unwrap_or_else(|error| panic!("{error}"))
    });
    column(&mut |writer| {
        writer
            .typed::<DoubleType>()
            .write_batch(&amounts, None, None)
            .map(|_| ())
            .unwrap_or_else(|error| panic!("{error}"))
    });
    column(&mut |writer| {
        writer
            .typed::<ByteArrayType>()
            .write_batch(&categories, Some(&category_levels), None)
            .map(|_| ())
            .unwrap_or_else(|error| panic!("{error}"))
    });
    group.close().unwrap_or_else(|error| panic!("{error}"));
    writer.close().unwrap_or_else(|error| panic!("{error}"));
}

fn parquet_transactions(path: PathBuf) -> SourceConfig {
    let mut source = transactions(Input::Parquet { path }, None, 0.0);
    source.columns.remove("memo");
    source
}

#[test]
fn parquet_round_trip_matches_the_csv_path() {
    let fixture = Fixture::new();
    let rows = [
        ("C-1", 1_709_600_000, 10.0, Some("food")),
        ("C-2", 1_709_700_000, 5.5, None),
        ("C-1", 1_709_800_000, 2.25, Some("toys")),
    ];
    let parquet_path = fixture.path("tx.parquet");
    write_parquet(&parquet_path, &rows);
    let mut csv_text = String::from("cust,ts,amount,category\n");
    for (customer, seconds, amount, category) in rows {
        csv_text.push_str(&format!(
            "{customer},{seconds},{amount},{}\n",
            category.unwrap_or("")
        ));
    }
    let csv_path = fixture.write("tx.csv", csv_text.as_bytes());
    let from_parquet = load_partner_data(&config(&fixture, parquet_transactions(parquet_path)))
        .unwrap_or_else(|error| panic!("{error}"));
    let mut csv_source = parquet_transactions(csv_path);
    csv_source.input = csv_input(match csv_source.input {
        Input::Parquet { path } => path,
        other => panic!("{other:?}"),
    });
    let from_csv =
        load_partner_data(&config(&fixture, csv_source)).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(from_parquet.log, from_csv.log);
    assert_eq!(from_parquet.log.n_transactions(), 3);
}

/// A checked-in crafted Parquet file (`tests/data/NAME`), copied into the fixture as
/// `crafted.parquet` so errors can be checked to name it.
fn crafted_parquet(fixture: &Fixture, name: &str) -> PathBuf {
    let crafted = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(name),
    )
    .unwrap_or_else(|error| panic!("{name}: {error}"));
    fixture.write("crafted.parquet", &crafted)
}

#[test]
fn a_parquet_footer_declaring_a_huge_list_is_refused_not_aborted() {
    // Found by the parquet_ingestion fuzz target: 129 bytes whose footer declares a list so
    // long that parquet 57 reserved 79 GB for it and the process aborted. The footer decoder
    // now bounds every list by the bytes left, and the load names the file and the footer.
    let fixture = Fixture::new();
    let path = crafted_parquet(&fixture, "parquet-footer-79gb-allocation.parquet");
    let message = load_error(&config(&fixture, parquet_transactions(path)));
    assert!(
        message.contains("crafted.parquet") && message.contains("Parquet footer"),
        "{message}"
    );
}

#[test]
fn a_parquet_data_page_the_reader_panics_on_is_refused_not_a_crash() {
    // Found by the parquet_ingestion fuzz target (stop 29): a valid footer over a data page
    // whose bit-packed run claims more bytes than the page holds. The parquet crate (60.2)
    // asserts on it in its bit reader and panics while rows are read; the load now catches
    // that, names the file and the row, and loads nothing from it.
    let fixture = Fixture::new();
    let path = crafted_parquet(&fixture, "parquet-data-page-run-past-its-end.parquet");
    // The columns the fuzz target declares: the defaults, every row allowed to be rejected.
    let mut config = PartnerDataConfig::from(veil_behaviour_features::CsvSource::new(
        fixture.path("unused.csv"),
    ));
    config.transactions.input = Input::Parquet { path };
    config.transactions.max_reject_fraction = 1.0;
    let message = load_error(&config);
    assert!(
        message.contains("crafted.parquet")
            && message.contains("Parquet data page")
            && message.contains("nothing from this input was loaded"),
        "{message}"
    );
}

#[test]
fn a_parquet_footer_pointing_past_the_file_is_refused_before_any_page_is_read() {
    // A real file's footer kept, its data cut away: every column chunk now lies outside the
    // file. The check runs before the parquet crate reserves a chunk's declared size.
    let fixture = Fixture::new();
    let rows: Vec<(String, i64, f64)> = (0..2000)
        .map(|index| (format!("C-{index}"), 1_709_600_000 + index, index as f64))
        .collect();
    let rows: Vec<(&str, i64, f64, Option<&str>)> = rows
        .iter()
        .map(|(customer, seconds, amount)| (customer.as_str(), *seconds, *amount, Some("food")))
        .collect();
    let whole_path = fixture.path("whole.parquet");
    write_parquet(&whole_path, &rows);
    let whole = std::fs::read(&whole_path).unwrap_or_else(|error| panic!("{error}"));
    let tail = &whole[whole.len() - 8..];
    let footer_length = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]) as usize;
    let footer_start = whole.len() - 8 - footer_length;
    assert!(
        footer_start > 4 + footer_length,
        "the data must outweigh the footer"
    );
    let mut cut = b"PAR1".to_vec();
    cut.extend_from_slice(&whole[footer_start..]);
    let cut_path = fixture.write("cut.parquet", &cut);
    let message = load_error(&config(&fixture, parquet_transactions(cut_path)));
    assert!(
        message.contains("cut.parquet")
            && message.contains("does not match the file")
            && message.contains("row group 0, column `cust`")
            && message.contains(&format!("{} bytes in all", cut.len())),
        "{message}"
    );
}

fn postgres_url() -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/postgres-test-server");
    let output = std::process::Command::new("bash")
        .arg(&script)
        .output()
        .unwrap_or_else(|error| panic!("{}: {error}", script.display()));
    assert!(
        output.status.success(),
        "postgres-test-server failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[test]
fn postgres_table_and_query_are_read_through_the_node_source_path() {
    let url = postgres_url();
    let mut client =
        postgres::Client::connect(&url, postgres::NoTls).unwrap_or_else(|error| panic!("{error}"));
    // A table per test process, so concurrent runs do not collide.
    let table = format!("veil_tx_{}", std::process::id());
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {table};
             CREATE TABLE {table} (cust text, ts timestamptz, amount numeric(10,2), category text, memo text);
             INSERT INTO {table} VALUES
               ('C-SECRET-1', '2024-03-05 10:00:00+00', 10.00, 'food', 'call 13800138000'),
               ('C-SECRET-2', '2024-03-06 11:00:00+08', 5.50, NULL, NULL),
               ('C-SECRET-1', '2024-03-07 00:00:00+00', 2.25, 'toys', 'a,b \"quoted\"'),
               ('C-SECRET-3', '2024-03-08 00:00:00+00', NULL, 'toys', NULL);"
        ))
        .unwrap_or_else(|error| panic!("{error}"));
    let fixture = Fixture::new();
    let mut source = transactions(
        Input::Postgres {
            url: url.clone(),
            table: Some(table.clone()),
            query: None,
        },
        None,
        0.5,
    );
    let data = load_partner_data(&config(&fixture, source.clone()))
        .unwrap_or_else(|error| panic!("{error}"));
    let report = &data.report.transactions;
    assert_eq!(
        (report.rows_read, report.rows_accepted, report.rows_rejected),
        (4, 3, 1)
    );
    assert_eq!(report.sample_errors[0].column, "amount");
    assert_eq!(data.log.n_customers(), 2);
    assert_eq!(
        report
            .deid
            .as_ref()
            .and_then(|deid| deid.pii_hits_per_column.get("memo"))
            .map(|counts| counts.phone),
        Some(1)
    );
    // The input is named by table, never by URL.
    assert_eq!(report.input, format!("PostgreSQL table {table}"));

    source.input = Input::Postgres {
        url,
        table: None,
        query: Some(format!("SELECT * FROM {table} WHERE amount IS NOT NULL;")),
    };
    let queried =
        load_partner_data(&config(&fixture, source)).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(queried.log, data.log);
    client
        .batch_execute(&format!("DROP TABLE {table}"))
        .unwrap_or_else(|error| panic!("{error}"));
}

#[test]
fn an_unreachable_database_is_an_error_without_the_url() {
    let fixture = Fixture::new();
    let source = transactions(
        Input::Postgres {
            url: "postgresql://user:hunter2@127.0.0.1:1/db".to_owned(),
            table: Some("t".to_owned()),
            query: None,
        },
        None,
        0.0,
    );
    let error = load_partner_data(&config(&fixture, source)).err();
    assert!(
        matches!(error, Some(PartnerDataError::Postgres { .. })),
        "{error:?}"
    );
    let message = error.map(|error| error.to_string()).unwrap_or_default();
    assert!(!message.contains("hunter2"), "{message}");
}

#[cfg(unix)]
#[test]
fn rejects_and_reports_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    // Both hold partner rows (redacted or de-identified, still rows); the
    // umask (often 0o022) must not make them readable by other accounts.
    let fixture = Fixture::new();
    let mut text = b"cust,ts,amount,category,memo\n".to_vec();
    text.extend_from_slice(b"C-SECRET-2,2024-03-06,5\n");
    for day in 10..20 {
        text.extend_from_slice(format!("C-SECRET-1,2024-03-{day},1.00,grocery,\n").as_bytes());
    }
    let path = fixture.write("tx.csv", &text);
    let rejects = fixture.path("tx.rejects.csv");
    let source = transactions(csv_input(path), Some(rejects.clone()), 0.5);
    let loaded = load_partner_data(&config(&fixture, source));
    assert!(loaded.is_ok(), "{:?}", loaded.err());
    let report_dir = fixture.settings(1).report_dir;
    let written = [
        rejects,
        report_dir.join(REPORT_JSON),
        report_dir.join(REPORT_TEXT),
        report_dir.join(AUDITOR_SUMMARY),
    ];
    for file in written {
        let mode = std::fs::metadata(&file)
            .map(|metadata| metadata.permissions().mode())
            .unwrap_or(0o777);
        assert_eq!(mode & 0o077, 0, "{} has mode {mode:o}", file.display());
    }
}
