//! Data-driven corpus for the PII scanner: positives and near-miss negatives for every detector.

use veil_de_identification::{PiiKind, redact, scan};

/// Scans `text` and asserts the hits are exactly `expected`, given as (kind, matched substring).
fn check(text: &str, expected: &[(PiiKind, &str)]) {
    let found: Vec<(PiiKind, &str)> = scan(text)
        .into_iter()
        .map(|hit| (hit.kind, &text[hit.byte_range]))
        .collect();
    assert_eq!(found, expected, "scanning {text:?}");
}

fn check_nothing(text: &str) {
    check(text, &[]);
}

/// The corpus file: one line per case, so new positives and near misses are added as data.
const CORPUS: &str = include_str!("data/pii_corpus.tsv");

fn kind_named(name: &str) -> PiiKind {
    PiiKind::ALL
        .into_iter()
        .find(|kind| kind.name() == name)
        .unwrap_or_else(|| panic!("unknown detector {name:?} in the corpus"))
}

/// One corpus line: the detector it exercises, the hits expected and the text.
struct CorpusCase<'corpus> {
    line_number: usize,
    detector: PiiKind,
    expected: Vec<(PiiKind, &'corpus str)>,
    text: &'corpus str,
}

fn corpus_cases() -> Vec<CorpusCase<'static>> {
    CORPUS
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
        .map(|(index, line)| {
            let fields: Vec<&str> = line.split('\t').collect();
            let [detector, expected, text] = fields[..] else {
                panic!("corpus line {} needs three tab-separated fields", index + 1);
            };
            let expected = if expected == "-" {
                Vec::new()
            } else {
                expected
                    .split(" | ")
                    .map(|hit| {
                        let (kind, matched) = hit
                            .split_once('=')
                            .unwrap_or_else(|| panic!("corpus line {}: {hit:?}", index + 1));
                        (kind_named(kind), matched)
                    })
                    .collect()
            };
            CorpusCase {
                line_number: index + 1,
                detector: kind_named(detector),
                expected,
                text,
            }
        })
        .collect()
}

#[test]
fn corpus_file_positives_and_near_misses() {
    let cases = corpus_cases();
    for kind in PiiKind::ALL {
        let of_kind = || cases.iter().filter(move |case| case.detector == kind);
        assert!(
            of_kind().any(|case| !case.expected.is_empty()),
            "the corpus has no positive for {kind:?}"
        );
        assert!(
            of_kind().any(|case| case.expected.is_empty()),
            "the corpus has no near-miss negative for {kind:?}"
        );
    }
    let mut failures = Vec::new();
    for case in &cases {
        let found: Vec<(PiiKind, &str)> = scan(case.text)
            .into_iter()
            .map(|hit| (hit.kind, &case.text[hit.byte_range]))
            .collect();
        if found != case.expected {
            failures.push(format!(
                "line {}: {:?} gave {found:?}, expected {:?}",
                case.line_number, case.text, case.expected
            ));
        }
        // Redaction removes every expected hit, counts it, and leaves the negatives untouched.
        let (redacted, counts) = redact(case.text);
        let leftover = case
            .expected
            .iter()
            .find(|(_, matched)| redacted.contains(matched));
        let expected_count = case
            .expected
            .iter()
            .filter(|(kind, _)| *kind == case.detector)
            .count() as u64;
        if (case.expected.is_empty() && redacted != case.text)
            || leftover.is_some()
            || counts.get(case.detector) != expected_count
        {
            failures.push(format!(
                "line {}: {:?} redacted to {redacted:?} counting {} {:?}",
                case.line_number,
                case.text,
                counts.get(case.detector),
                case.detector
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn resident_id_numbers_need_checksum_region_and_real_birth_date() {
    use PiiKind::ResidentId;
    check("11010519491231002X", &[(ResidentId, "11010519491231002X")]);
    check(
        "身份证号：44030419900307123x。",
        &[(ResidentId, "44030419900307123x")],
    );
    check(
        "id=310115198511205112;",
        &[(ResidentId, "310115198511205112")],
    );
    // 29 February 2000 exists (2000 is a leap year).
    check("330106200002290045", &[(ResidentId, "330106200002290045")]);
    // Wrong check digit (the valid one is X).
    check_nothing("110105194912310021");
    // Checksum valid but 30 February does not exist.
    check_nothing("110105200002301237");
    // Checksum valid but born in 1899.
    check_nothing("110105189912311237");
    // Checksum valid but 99 is not a province code.
    check_nothing("990105199001011236");
    // Too short, too long.
    check_nothing("11010519491231002");
    check_nothing("1101051949123100211");
}

#[test]
fn bank_cards_need_luhn_and_a_network_prefix() {
    use PiiKind::BankCard;
    check("4111111111111111", &[(BankCard, "4111111111111111")]);
    check(
        "card 5555 5555 5555 4444 exp",
        &[(BankCard, "5555 5555 5555 4444")],
    );
    check("amex 3782-822463-10005", &[(BankCard, "3782-822463-10005")]);
    check(
        "银联卡6222021234567890128",
        &[(BankCard, "6222021234567890128")],
    );
    check(
        "jcb 3530111333300000, discover 6011111111111117",
        &[
            (BankCard, "3530111333300000"),
            (BankCard, "6011111111111117"),
        ],
    );
    check("mc2 2221000000000009", &[(BankCard, "2221000000000009")]);
    // One digit changed: Luhn fails.
    check_nothing("4111111111111112");
    check_nothing("6222 0212 3456 7890 127");
    // Luhn-valid but no card network starts with 1.
    check_nothing("1234567812345670");
    // A compact timestamp is not a card even though it has 14 digits.
    check_nothing("20240105123000");
    // Twelve digits is too short for any card.
    check_nothing("411111111111");
    // Double separators break the number.
    check_nothing("4111  1111  1111  1111");
}

#[test]
fn phone_numbers_mainland_and_international() {
    use PiiKind::Phone;
    check("13800138000", &[(Phone, "13800138000")]);
    check(
        "call +86 138 0013 8000 now",
        &[(Phone, "+86 138 0013 8000")],
    );
    check("+86-139-1234-5678", &[(Phone, "+86-139-1234-5678")]);
    check("008613912345678", &[(Phone, "008613912345678")]);
    check("138-0013-8000", &[(Phone, "138-0013-8000")]);
    check("(+86)13912345678", &[(Phone, "13912345678")]);
    check("电话：19912345678，谢谢", &[(Phone, "19912345678")]);
    check("tel13800138000", &[(Phone, "13800138000")]);
    check("qty 2 138 0013 8000", &[(Phone, "138 0013 8000")]);
    check("London +44 20 7946 0958", &[(Phone, "+44 20 7946 0958")]);
    check("+1-202-555-0143.", &[(Phone, "+1-202-555-0143")]);
    // Second digit 2 is not a mainland mobile prefix.
    check_nothing("12800138000");
    // Ten and twelve digits.
    check_nothing("1380013800");
    check_nothing("138001380001");
    // Part of a decimal amount.
    check_nothing("13800138000.50");
    // International numbers need the + and a non-zero country code, and at most 15 digits.
    check_nothing("442079460958");
    check_nothing("+0 123 456 789");
    check_nothing("+1234567");
    check_nothing("+1234567890123456");
}

#[test]
fn email_addresses() {
    use PiiKind::Email;
    check("alice@example.com", &[(Email, "alice@example.com")]);
    check(
        "mail Bob.Smith+tag@mail.example.co.uk.",
        &[(Email, "Bob.Smith+tag@mail.example.co.uk")],
    );
    check("张三zhang.san@qq.com。", &[(Email, "zhang.san@qq.com")]);
    check("13800138000@163.com", &[(Email, "13800138000@163.com")]);
    check(
        "<a_b-c@sub-domain.example.org>",
        &[(Email, "a_b-c@sub-domain.example.org")],
    );
    check_nothing("user@localhost");
    check_nothing("@example.com");
    check_nothing("a@b.c");
    check_nothing("name@domain..com");
    check_nothing("name@-domain.com");
    check_nothing("follow @handle on weibo");
    check_nothing("price 3@5.00");
}

#[test]
fn ipv4_addresses_but_not_version_strings() {
    use PiiKind::Ipv4;
    check("192.168.1.1", &[(Ipv4, "192.168.1.1")]);
    check("ip=10.0.0.255;port", &[(Ipv4, "10.0.0.255")]);
    check("from 255.255.255.255.", &[(Ipv4, "255.255.255.255")]);
    check("0.0.0.0", &[(Ipv4, "0.0.0.0")]);
    check_nothing("version 1.2.3");
    check_nothing("v1.2.3.4");
    check_nothing("1.2.3.4.5");
    check_nothing("256.1.1.1");
    check_nothing("1.2.3.1000");
    check_nothing("pi is 3.14");
    check_nothing("192.168.1");
}

#[test]
fn ipv6_addresses_but_not_times_paths_or_macs() {
    use PiiKind::{Ipv4, Ipv6};
    check("2001:db8::1", &[(Ipv6, "2001:db8::1")]);
    check(
        "fe80::1ff:fe23:4567:890a%eth0",
        &[(Ipv6, "fe80::1ff:fe23:4567:890a")],
    );
    check("loopback ::1 ok", &[(Ipv6, "::1")]);
    check(
        "[2001:db8:85a3::8a2e:370:7334]:443",
        &[(Ipv6, "2001:db8:85a3::8a2e:370:7334")],
    );
    check("mapped ::ffff:192.168.1.1", &[(Ipv6, "::ffff:192.168.1.1")]);
    check(
        "2001:0db8:0000:0000:0000:ff00:0042:8329.",
        &[(Ipv6, "2001:0db8:0000:0000:0000:ff00:0042:8329")],
    );
    check(
        "both 10.1.2.3 and 2001:db8::2",
        &[(Ipv4, "10.1.2.3"), (Ipv6, "2001:db8::2")],
    );
    check_nothing("at 12:30:45");
    check_nothing("use std::fmt::Display");
    check_nothing("mac 00:1a:2b:3c:4d:5e");
    check_nothing("ratio 3:2");
    check_nothing("::");
    check_nothing("2001:db8::1g");
}

#[test]
fn text_without_pii_stays_untouched() {
    for text in [
        "",
        "Paid 128.50 CNY at store 0042 on 2024-01-05 12:30:00",
        "客户很满意，下次再来",
        "order #A-2024-000123, qty 3",
        "🙂🙃 emoji ï ß \u{200b}",
        "\u{0}\u{7f}\u{ffff}",
    ] {
        check_nothing(text);
        assert_eq!(redact(text).0, text);
    }
}

#[test]
fn redaction_replaces_every_hit_and_counts_by_kind() {
    let text = "联系 alice@example.com 或 +86 138 0013 8000，卡号 4111 1111 1111 1111，身份证 11010519491231002X，IP 10.0.0.1 / 2001:db8::1，备用 13912345678";
    let (redacted, counts) = redact(text);
    assert_eq!(
        redacted,
        "联系 [EMAIL] 或 [PHONE]，卡号 [CARD]，身份证 [ID_NUMBER]，IP [IPV4] / [IPV6]，备用 [PHONE]"
    );
    assert_eq!(
        (
            counts.email,
            counts.phone,
            counts.bank_card,
            counts.resident_id,
            counts.ipv4,
            counts.ipv6
        ),
        (1, 2, 1, 1, 1, 1)
    );
    assert_eq!(counts.total(), 7);
}

mod properties {
    use proptest::prelude::*;
    use veil_de_identification::{redact, scan};

    /// Text mixing digits, separators, `@`, colons, dots, hex letters and CJK, so the detectors'
    /// edge cases are reached far more often than with uniformly random strings.
    fn tricky_text() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                prop::sample::select(vec![
                    "1",
                    "3",
                    "8",
                    "0",
                    "X",
                    " ",
                    "-",
                    "+",
                    ".",
                    ":",
                    "::",
                    "@",
                    "a",
                    "f",
                    "com",
                    "电话",
                    "13800138000",
                    "4111111111111111",
                    "11010519491231002X",
                    "192.168.",
                    "2001:db8",
                    "@qq.com",
                    "+86 ",
                    "(",
                    ")",
                    "(415)",
                    "+1 ",
                    "440305 19880315 123",
                ])
                .prop_map(str::to_owned),
                "\\PC{0,3}",
            ],
            0..24,
        )
        .prop_map(|parts| parts.concat())
    }

    proptest! {
        #[test]
        fn hits_are_ordered_disjoint_and_on_char_boundaries(text in tricky_text()) {
            let hits = scan(&text);
            for pair in hits.windows(2) {
                prop_assert!(pair[0].byte_range.end <= pair[1].byte_range.start);
            }
            for hit in &hits {
                prop_assert!(!hit.byte_range.is_empty());
                prop_assert!(text.get(hit.byte_range.clone()).is_some());
            }
        }

        #[test]
        fn redaction_counts_every_hit_and_is_idempotent(text in tricky_text()) {
            let (redacted, counts) = redact(&text);
            // Re-scanning may redact fragments exposed by the first pass, never fewer hits.
            prop_assert!(counts.total() >= scan(&text).len() as u64);
            prop_assert!(scan(&redacted).is_empty(), "{redacted:?} still holds PII");
            let (twice, _) = redact(&redacted);
            prop_assert_eq!(twice, redacted);
        }
    }
}
