//! The engine end to end: policy from configuration, per-row treatment, malformed input, and
//! reports that carry no data values.

use veil_de_identification::{
    ColumnRole, DeidError, DeidPolicy, DeidRecord, Deidentifier, GeneralisationPolicy, PiiKind,
    PseudonymKey, SUPPRESSED_VALUE,
};

const POLICY_JSON: &str = r#"{
    "columns": [
        {"name": "customer_id", "role": "identifier"},
        {"name": "email", "role": "drop"},
        {"name": "age", "role": {"quasi_identifier": {"kind": "age_band", "width": 10}}},
        {"name": "gender", "role": {"quasi_identifier": {"kind": "gender", "suppress": false}}},
        {"name": "postcode", "role": {"quasi_identifier": {"kind": "postcode_prefix", "length": 3}}},
        {"name": "city", "role": {"quasi_identifier": {"kind": "city", "to_region": true,
            "region_map": {"杭州": "华东", "宁波": "华东", "成都": "西南"}}}},
        {"name": "churned", "role": "sensitive"},
        {"name": "amount", "role": "amount"},
        {"name": "spent_at", "role": "timestamp"},
        {"name": "note", "role": "text"}
    ],
    "k": 3,
    "l": 2
}"#;

fn policy() -> DeidPolicy {
    serde_json::from_str(POLICY_JSON).expect("policy parses")
}

fn key() -> PseudonymKey {
    PseudonymKey::from_bytes([11; 32])
}

fn engine() -> Deidentifier {
    Deidentifier::new(policy(), key()).expect("valid policy")
}

#[test]
fn each_role_gets_its_treatment() {
    let mut engine = engine();
    let output_names: Vec<&str> = engine
        .output_columns()
        .iter()
        .map(|column| column.name.as_str())
        .collect();
    assert_eq!(
        output_names,
        [
            "customer_id",
            "age",
            "gender",
            "postcode",
            "city",
            "churned",
            "amount",
            "spent_at",
            "note"
        ]
    );
    assert_eq!(
        engine.quasi_identifier_column_names(),
        ["age", "gender", "postcode", "city"]
    );
    let record = engine
        .process_record(&[
            Some("CUST-0001"),
            Some("wang.wei@example.com"),
            Some("37"),
            Some("M"),
            Some("310012"),
            Some("杭州"),
            Some("yes"),
            Some("128.50"),
            Some("2024-01-05 12:30:00"),
            Some("请致电13800138000或发邮件wang.wei@example.com"),
        ])
        .expect("well-formed record");
    let DeidRecord {
        row_index, values, ..
    } = record;
    assert_eq!(row_index, 0);
    let expected = [
        Some(key().pseudonymise("CUST-0001")),
        Some("30-39".to_owned()),
        Some("M".to_owned()),
        Some("310".to_owned()),
        Some("华东".to_owned()),
        Some("yes".to_owned()),
        Some("128.50".to_owned()),
        Some("2024-01-05 12:30:00".to_owned()),
        Some("请致电[PHONE]或发邮件[EMAIL]".to_owned()),
    ];
    assert_eq!(values, expected);
    let report = engine.report();
    assert_eq!(report.pii_hits_per_column["note"].phone, 1);
    assert_eq!(report.pii_hits_per_column["note"].email, 1);
    assert_eq!(report.pii_hits_total().total(), 2);
    assert_eq!(report.columns_dropped, ["email"]);
    assert_eq!(report.columns_pseudonymised, ["customer_id"]);
    assert!(!report.pii_hits_per_column.contains_key("customer_id"));
}

#[test]
fn missing_values_stay_missing_and_quasi_identifiers_become_suppressed() {
    let mut engine = engine();
    let record = engine
        .process_record(&[None; 10])
        .expect("all-missing record");
    assert_eq!(
        record.values,
        [
            None,
            Some(SUPPRESSED_VALUE.to_owned()),
            Some(SUPPRESSED_VALUE.to_owned()),
            Some(SUPPRESSED_VALUE.to_owned()),
            Some(SUPPRESSED_VALUE.to_owned()),
            None,
            None,
            None,
            None,
        ]
    );
    // Blank identifiers get no pseudonym rather than one shared by every blank.
    let mut blank = [None; 10];
    blank[0] = Some("   ");
    assert_eq!(
        engine.process_record(&blank).expect("record").values[0],
        None
    );
}

#[test]
fn pii_in_a_feature_or_quasi_identifier_column_is_redacted_and_counted() {
    let mut policy = policy();
    if let Some(city) = policy
        .columns
        .iter_mut()
        .find(|column| column.name == "city")
    {
        city.role = ColumnRole::QuasiIdentifier(GeneralisationPolicy::City {
            to_region: false,
            region_map: Default::default(),
        });
    }
    let mut engine = Deidentifier::new(policy, key()).expect("valid policy");
    let mut record = [Some("x"); 10];
    record[5] = Some("call 13800138000");
    record[7] = Some("6222021234567890128");
    let values = engine.process_record(&record).expect("record").values;
    assert_eq!(values[4].as_deref(), Some("call [PHONE]"));
    assert_eq!(values[6].as_deref(), Some("[CARD]"));
    let report = engine.report();
    assert_eq!(report.pii_hits_per_column["city"].phone, 1);
    assert_eq!(report.pii_hits_per_column["amount"].bank_card, 1);
}

#[test]
fn wrong_record_lengths_are_errors_and_row_indices_keep_counting() {
    let mut engine = engine();
    for (length, row_index) in [(0usize, 0u64), (9, 1), (11, 2)] {
        let record = vec![Some("value"); length];
        let error = engine.process_record(&record).expect_err("wrong length");
        assert!(
            matches!(error, DeidError::RecordLength { row_index: index, expected: 10, found } if index == row_index && found == length),
            "{error}"
        );
        assert!(error.to_string().contains("policy declares 10 columns"));
    }
    let record = engine
        .process_record(&[Some("v"); 10])
        .expect("well-formed record");
    assert_eq!(record.row_index, 3);
    let report = engine.report();
    assert_eq!((report.rows_processed, report.rows_rejected), (1, 3));
}

#[test]
fn unusual_unicode_never_panics() {
    let long = "長".repeat(10_000);
    let nasty: Vec<&str> = vec![
        "",
        "\u{0}",
        "\u{feff}37",
        "３７",
        "e\u{301}\u{301}\u{301}",
        "\u{202e}31001\u{202c}",
        "🙂@🙂.🙂",
        "1\u{200d}3800138000",
        "+",
        "-",
        "::::::::",
        "1.1.1.1.1.1.1.1",
        "9999999999999999999999999999999999",
        "X",
        "@",
        "@@@.com",
        long.as_str(),
    ];
    let mut engine = engine();
    let mut tuples = Vec::new();
    for value in &nasty {
        let record = [Some(*value); 10];
        let output = engine
            .process_record(&record)
            .expect("any string is a valid value");
        assert_eq!(output.values.len(), 9);
        tuples.push(output.quasi_identifiers);
    }
    // 17 records of which most are all-`*`; measuring never fails on them, and the export
    // pass settles without panicking either way.
    let measured = engine
        .measure_k_anonymity(&tuples)
        .expect("measuring any engine-made tuples succeeds");
    assert_eq!((measured.records_in, measured.records_suppressed), (17, 0));
    let outcome = engine.enforce_k_anonymity_for_export(tuples, 0.2);
    assert!(matches!(
        outcome,
        Ok(_) | Err(DeidError::SuppressionAboveLimit { .. })
    ));
}

#[test]
fn invalid_policies_are_refused_with_the_reason() {
    let mutate = |change: fn(&mut DeidPolicy)| {
        let mut policy = policy();
        change(&mut policy);
        Deidentifier::new(policy, key())
            .map(|_| ())
            .expect_err("invalid policy")
    };
    assert!(matches!(mutate(|policy| policy.k = 0), DeidError::ZeroK));
    assert!(matches!(
        mutate(|policy| policy.l = Some(0)),
        DeidError::ZeroL
    ));
    assert!(matches!(
        mutate(|policy| policy.columns.clear()),
        DeidError::EmptyPolicy
    ));
    assert!(matches!(
        mutate(|policy| {
            let duplicate = policy.columns[0].clone();
            policy.columns.push(duplicate);
        }),
        DeidError::DuplicateColumn { column } if column == "customer_id"
    ));
    assert!(matches!(
        mutate(|policy| policy.columns[2].role =
            ColumnRole::QuasiIdentifier(GeneralisationPolicy::AgeBand { width: 0 })),
        DeidError::InvalidGeneralisation { column, .. } if column == "age"
    ));
    assert!(matches!(
        mutate(|policy| policy.columns[5].role = ColumnRole::QuasiIdentifier(
            GeneralisationPolicy::City { to_region: true, region_map: Default::default() }
        )),
        DeidError::InvalidGeneralisation { column, .. } if column == "city"
    ));
    // Unknown configuration keys are errors, so a typo cannot silently disable a setting.
    let typo = POLICY_JSON.replace("\"l\": 2", "\"ell\": 2");
    assert!(serde_json::from_str::<DeidPolicy>(&typo).is_err());
    // The suppression limit of the old training path is refused with the reason, not ignored:
    // training rows are never suppressed any more.
    let old = POLICY_JSON.replace("\"l\": 2", "\"l\": 2, \"max_suppression_fraction\": 0.2");
    let message = serde_json::from_str::<DeidPolicy>(&old)
        .map(|_| ())
        .expect_err("removed key")
        .to_string();
    assert!(
        message.contains("`max_suppression_fraction` is no longer part of")
            && message.contains("never suppressed")
            && message.contains("enforce_k_anonymity_for_export"),
        "{message}"
    );
    // An export's suppression limit must be a fraction.
    for fraction in [f64::NAN, 1.5, -0.1] {
        let mut engine = engine();
        assert!(matches!(
            engine.enforce_k_anonymity_for_export(Vec::new(), fraction),
            Err(DeidError::InvalidSuppressionFraction { .. })
        ));
    }
}

#[test]
fn policies_follow_the_input_header_and_refuse_undeclared_columns() {
    let policy = policy();
    let mut header: Vec<&str> = policy
        .columns
        .iter()
        .map(|column| column.name.as_str())
        .collect();
    header.reverse();
    let reordered = policy.reordered_for_header(&header).expect("same columns");
    assert_eq!(
        reordered.columns.first().map(|column| column.name.as_str()),
        Some("note")
    );

    let mut extra = header.clone();
    extra.push("passport_no");
    assert!(matches!(
        policy.reordered_for_header(&extra),
        Err(DeidError::ColumnWithoutRole { column }) if column == "passport_no"
    ));
    let missing: Vec<&str> = header
        .iter()
        .copied()
        .filter(|name| *name != "age")
        .collect();
    assert!(matches!(
        policy.reordered_for_header(&missing),
        Err(DeidError::ColumnMissingFromInput { column }) if column == "age"
    ));
}

#[test]
fn tuples_from_another_engine_are_refused() {
    let mut first = engine();
    let tuple = first
        .process_record(&[Some("v"); 10])
        .expect("record")
        .quasi_identifiers;
    let mut other_policy = policy();
    other_policy.columns.truncate(3);
    let mut second = Deidentifier::new(other_policy, key()).expect("valid policy");
    assert!(matches!(
        second.measure_k_anonymity(std::slice::from_ref(&tuple)),
        Err(DeidError::ForeignQuasiIdentifierTuple { row_index: 0 })
    ));
    assert!(matches!(
        second.enforce_k_anonymity_for_export(vec![tuple], 0.0),
        Err(DeidError::ForeignQuasiIdentifierTuple { row_index: 0 })
    ));
}

/// A small job with distinctive values in every column.
fn distinctive_job() -> (Vec<Vec<String>>, Deidentifier) {
    let mut engine = engine();
    let mut rows = Vec::new();
    let cities = ["杭州", "宁波", "成都"];
    for index in 0..60u32 {
        let row = vec![
            format!("CUSTOMER-{:06}", 424_242 + index),
            format!("person.{index}@example.org"),
            (20 + index % 45).to_string(),
            ["Female", "Male"][(index % 2) as usize].to_owned(),
            format!("{}", 310_012 + index % 4),
            cities[(index % 3) as usize].to_owned(),
            ["churned-yes", "churned-no"][(index % 5 % 2) as usize].to_owned(),
            format!("{}.{:02}", 1_000 + index * 37, index),
            format!("2024-03-{:02}T08:15:00", 1 + index % 28),
            format!("客户 {index} 留言：请联系 1390000{:04}", 1000 + index),
        ];
        rows.push(row);
    }
    let mut tuples = Vec::new();
    for row in &rows {
        let record: Vec<Option<&str>> = row.iter().map(|value| Some(value.as_str())).collect();
        tuples.push(
            engine
                .process_record(&record)
                .expect("record")
                .quasi_identifiers,
        );
    }
    engine
        .measure_k_anonymity(&tuples)
        .expect("tuples of this engine");
    (rows, engine)
}

#[test]
fn auditor_summary_and_report_contain_no_input_values() {
    let (rows, engine) = distinctive_job();
    let report = engine.report();
    let summary = report.auditor_summary();
    let display = report.to_string();
    let json = serde_json::to_string(&report).expect("report serialises");
    let k_anonymity = report.k_anonymity.as_ref().expect("measurement ran");
    assert_eq!(k_anonymity.records_in, 60);
    assert_eq!(k_anonymity.records_suppressed, 0);
    assert!(k_anonymity.k_achieved.is_some());
    assert_eq!(report.pii_hits_per_column["note"].phone, 60);

    for value in rows.iter().flatten() {
        // Values of one or two characters (a gender letter, an age) are indistinguishable from
        // counts, so they are covered by the generalised values below instead.
        if value.chars().count() < 3 {
            continue;
        }
        assert!(
            !summary.contains(value.as_str()),
            "summary leaks {value:?}:\n{summary}"
        );
        assert!(
            !display.contains(value.as_str()),
            "display leaks {value:?}:\n{display}"
        );
        assert!(!json.contains(value.as_str()), "JSON leaks {value:?}");
    }
    // Nor do generalised values, city names, regions or age bands appear in the summary.
    for generalised in [
        "华东", "西南", "杭州", "Female", "Male", "310", "20-29", "-", "*",
    ] {
        assert!(
            !summary.contains(generalised),
            "summary leaks {generalised:?}:\n{summary}"
        );
    }
    // The summary names no columns either: it can leave the partner without revealing the schema.
    for column in &policy().columns {
        assert!(
            !summary.contains(column.name.as_str()),
            "summary names {}",
            column.name
        );
    }
    let round_trip: veil_de_identification::DeidReport =
        serde_json::from_str(&json).expect("report parses");
    assert_eq!(round_trip, report);
}

/// One distinctive value per detector, with letters in mixed case where the kind has letters,
/// so a report that echoed a value in any case would be caught.
const SEEDED_PII: [(PiiKind, &str); 8] = [
    (PiiKind::Email, "Zed.QuartzLeak@Example-Unique.org"),
    (PiiKind::Phone, "+86 139 8765 4321"),
    (PiiKind::Phone, "+1 (415) 555-0132"),
    (PiiKind::ResidentId, "44030519880315123X"),
    (PiiKind::BankCard, "6228 4812 3456 7890 128"),
    (PiiKind::Ipv4, "203.0.113.77"),
    (PiiKind::Ipv6, "2001:DB8:BEEF::77"),
    (PiiKind::Ipv6, "fe80::1ff:fe23:4567:890a"),
];

/// The forms of a value that must never appear: as written, lower and upper case, and for
/// numbers the bare digits (a report that stripped separators would still leak the number).
fn forbidden_forms(value: &str) -> Vec<String> {
    let mut forms = vec![value.to_owned(), value.to_lowercase(), value.to_uppercase()];
    let digits: String = value.chars().filter(char::is_ascii_digit).collect();
    if digits.len() >= 8 {
        forms.push(digits);
    }
    forms
}

#[test]
fn pii_hit_reports_never_contain_the_value_in_any_case() {
    let mut engine = engine();
    let mut tuples = Vec::new();
    let mut redacted_notes = Vec::new();
    let mut redacted_amounts = Vec::new();
    for (index, (_, value)) in SEEDED_PII.iter().enumerate() {
        // The same value in a free-text column and in a column declared as an amount by mistake.
        let note = format!("客户留言 {value}，谢谢");
        let record = [
            Some("C-1"),
            None,
            Some("35"),
            Some("F"),
            Some("310012"),
            Some("杭州"),
            Some(["yes", "no"][index % 2]),
            Some(*value),
            Some("2024-03-01"),
            Some(note.as_str()),
        ];
        let processed = engine.process_record(&record).expect("record");
        redacted_amounts.push(processed.values[6].clone().unwrap_or_default());
        redacted_notes.push(processed.values[8].clone().unwrap_or_default());
        tuples.push(processed.quasi_identifiers);
    }
    engine
        .measure_k_anonymity(&tuples)
        .expect("one class of eight");
    let report = engine.report();

    // Every seeded value was found and counted in both columns, once per value.
    for column in ["note", "amount"] {
        for kind in PiiKind::ALL {
            let seeded = SEEDED_PII
                .iter()
                .filter(|(seeded, _)| *seeded == kind)
                .count();
            assert_eq!(
                report.pii_hits_per_column[column].get(kind),
                seeded as u64,
                "{column} {kind:?}"
            );
        }
    }
    let outputs = [
        serde_json::to_string(&report).expect("report serialises"),
        serde_json::to_string_pretty(&report).expect("report serialises"),
        report.to_string(),
        report.auditor_summary(),
        redacted_notes.join("\n"),
        redacted_amounts.join("\n"),
    ];
    for (_, value) in SEEDED_PII {
        for form in forbidden_forms(value) {
            for output in &outputs {
                assert!(!output.contains(&form), "{form:?} leaked into:\n{output}");
            }
        }
    }
}

#[test]
fn a_reused_record_matches_a_fresh_one_row_after_row() {
    let rows: [[Option<&str>; 10]; 4] = [
        [
            Some("CUST-0001"),
            Some("a@example.com"),
            Some("37"),
            Some("F"),
            Some("310012"),
            Some("杭州"),
            Some("yes"),
            Some("12.50"),
            Some("2024-03-05T14:22:01"),
            Some("call 13800138000"),
        ],
        // Missing values where the previous row had strings, so stale text must not survive.
        [None, None, None, None, None, None, None, None, None, None],
        [
            Some("  "),
            None,
            Some("abc"),
            Some("M"),
            Some("1"),
            Some("成都"),
            None,
            Some("3"),
            Some("2024-03-06"),
            Some("no PII here"),
        ],
        [Some("cust-0001"); 10],
    ];
    let mut fresh_engine = engine();
    let mut reusing_engine = engine();
    let mut reused = DeidRecord::default();
    for row in &rows {
        let fresh = fresh_engine.process_record(row).expect("record");
        reusing_engine
            .process_record_into(row, &mut reused)
            .expect("record");
        assert_eq!(reused, fresh, "row {row:?}");
    }
    // A failed call leaves the reused record as it was and still counts the row.
    let before = reused.clone();
    let error = reusing_engine
        .process_record_into(&[Some("short")], &mut reused)
        .expect_err("wrong length");
    assert!(
        matches!(error, DeidError::RecordLength { row_index: 4, .. }),
        "{error}"
    );
    assert_eq!(reused, before);
    assert_eq!(reusing_engine.report(), {
        let _ = fresh_engine.process_record(&[Some("short")]);
        fresh_engine.report()
    });
}
