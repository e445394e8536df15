//! When a certificate is valid, read from its DER: the `notBefore` and
//! `notAfter` of RFC 5280 §4.1.2.5, as the unix seconds webpki compares.
//!
//! Why: a node verifies every cohort member's certificate before each secure
//! phase, and the chain's signature is most of that cost (about 0.1 ms a
//! certificate, 10 ms for a cohort of 100). A node that remembers the
//! certificates it has verified only needs the checks that can change with
//! time (this window, the revocation list); webpki keeps the window private,
//! so it is read here.

use time::{Date, Month, PrimitiveDateTime, Time};

/// DER tags this reader needs.
const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const EXPLICIT_VERSION: u8 = 0xA0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// A certificate's validity window in unix seconds; both ends are inclusive,
/// as in webpki (valid unless `now < not_before` or `now > not_after`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidityWindow {
    /// First second of validity (0 for a certificate valid before 1970).
    pub not_before: u64,
    /// Last second of validity.
    pub not_after: u64,
}

impl ValidityWindow {
    /// Whether the certificate is valid at `now_unix_seconds`.
    pub fn contains(&self, now_unix_seconds: u64) -> bool {
        self.not_before <= now_unix_seconds && now_unix_seconds <= self.not_after
    }
}

/// The validity window of the DER-encoded X.509 certificate, or `None` when
/// the DER is not shaped as a certificate or a time is malformed. Nothing is
/// verified: read the window only of a certificate webpki has accepted.
pub fn certificate_validity_window(certificate_der: &[u8]) -> Option<ValidityWindow> {
    let certificate = expect(certificate_der, SEQUENCE)?.0;
    let tbs = expect(certificate, SEQUENCE)?.0;
    let mut rest = tbs;
    // version [0] EXPLICIT, absent for v1.
    if let Some((EXPLICIT_VERSION, _, after)) = element(rest) {
        rest = after;
    }
    // serialNumber, signature (AlgorithmIdentifier), issuer (Name).
    for tag in [INTEGER, SEQUENCE, SEQUENCE] {
        rest = expect(rest, tag)?.1;
    }
    let validity = expect(rest, SEQUENCE)?.0;
    let (not_before_tag, not_before, rest) = element(validity)?;
    let (not_after_tag, not_after, rest) = element(rest)?;
    if !rest.is_empty() {
        return None;
    }
    let not_before = unix_seconds(not_before_tag, not_before)?;
    let not_after = unix_seconds(not_after_tag, not_after)?;
    Some(ValidityWindow {
        not_before: u64::try_from(not_before).unwrap_or(0),
        not_after: u64::try_from(not_after).ok()?,
    })
}

/// The contents of the element at the start of `input` if it has `tag`, and
/// what follows it.
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (found, contents, rest) = element(input)?;
    (found == tag).then_some((contents, rest))
}

/// One DER element (single-byte tags, definite lengths of up to four
/// bytes): its tag, contents and what follows it.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, rest) = rest.split_at(count);
        let length = bytes
            .iter()
            .fold(0usize, |length, &byte| (length << 8) | usize::from(byte));
        (length, rest)
    };
    if rest.len() < length {
        return None;
    }
    let (contents, rest) = rest.split_at(length);
    Some((tag, contents, rest))
}

/// A UTCTime (`YYMMDDHHMMSSZ`, years 1950-2049 per RFC 5280) or
/// GeneralizedTime (`YYYYMMDDHHMMSSZ`) as signed unix seconds.
fn unix_seconds(tag: u8, text: &[u8]) -> Option<i64> {
    let (year, rest) = match (tag, text.len()) {
        (UTC_TIME, 13) => {
            let short = digits(&text[..2])?;
            let century = if short >= 50 { 1900 } else { 2000 };
            (century + short, &text[2..])
        }
        (GENERALIZED_TIME, 15) => (digits(&text[..4])?, &text[4..]),
        _ => return None,
    };
    if rest.last() != Some(&b'Z') {
        return None;
    }
    let month = Month::try_from(u8::try_from(digits(&rest[0..2])?).ok()?).ok()?;
    let field =
        |range: std::ops::Range<usize>| -> Option<u8> { u8::try_from(digits(&rest[range])?).ok() };
    let date = Date::from_calendar_date(i32::try_from(year).ok()?, month, field(2..4)?).ok()?;
    let time = Time::from_hms(field(4..6)?, field(6..8)?, field(8..10)?).ok()?;
    Some(
        PrimitiveDateTime::new(date, time)
            .assume_utc()
            .unix_timestamp(),
    )
}

/// ASCII decimal digits as a number; `None` for anything else.
fn digits(text: &[u8]) -> Option<u32> {
    text.iter().try_fold(0u32, |value, &byte| {
        byte.is_ascii_digit()
            .then(|| value * 10 + u32::from(byte - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CertificateRequest, FederationCa, Role, Validity, verify_node_certificate};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    fn unix(time: SystemTime) -> u64 {
        time.duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    #[test]
    fn the_window_is_the_one_issued_and_the_one_webpki_enforces() {
        // Times on whole seconds, as certificates carry them; one window in
        // UTCTime's range, one past 2049 (GeneralizedTime).
        for (start, lifetime) in [
            (1_750_000_000u64, 86_400u64),
            (1_800_000_123, 40 * 365 * 86_400),
        ] {
            let validity = Validity {
                not_before: UNIX_EPOCH + Duration::from_secs(start),
                not_after: UNIX_EPOCH + Duration::from_secs(start + lifetime),
            };
            let ca = FederationCa::create(
                "window-test",
                Validity {
                    not_before: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
                    not_after: UNIX_EPOCH + Duration::from_secs(4_000_000_000),
                },
            )
            .unwrap();
            let (issued, _) = ca
                .issue_with_new_key(&CertificateRequest::member(Role::Node, "node-a", validity))
                .unwrap();
            let der = issued.certificate_der.to_vec();
            let window = certificate_validity_window(&der).unwrap();
            assert_eq!(
                window,
                ValidityWindow {
                    not_before: unix(validity.not_before),
                    not_after: unix(validity.not_after),
                }
            );
            // webpki agrees on both edges, to the second.
            let root = ca.root();
            for (now, valid) in [
                (window.not_before - 1, false),
                (window.not_before, true),
                (window.not_after, true),
                (window.not_after + 1, false),
            ] {
                assert_eq!(window.contains(now), valid, "at {now}");
                assert_eq!(
                    verify_node_certificate(root, &der, now, None).is_ok(),
                    valid,
                    "webpki at {now}"
                );
            }
        }
    }

    #[test]
    fn times_parse_in_both_encodings() {
        assert_eq!(unix_seconds(UTC_TIME, b"700101000000Z"), Some(0));
        assert_eq!(
            unix_seconds(UTC_TIME, b"491231235959Z"),
            Some(2_524_607_999)
        );
        assert_eq!(unix_seconds(UTC_TIME, b"500101000000Z"), Some(-631_152_000));
        assert_eq!(
            unix_seconds(GENERALIZED_TIME, b"20500101000000Z"),
            Some(2_524_608_000)
        );
        assert_eq!(
            unix_seconds(GENERALIZED_TIME, b"20240229120000Z"),
            Some(1_709_208_000)
        );
    }

    #[test]
    fn malformed_input_gives_none() {
        for (tag, text) in [
            (UTC_TIME, &b"700101000000"[..]),
            (UTC_TIME, b"7001010000001"),
            (UTC_TIME, b"701301000000Z"),
            (UTC_TIME, b"700230000000Z"),
            (UTC_TIME, b"700101250000Z"),
            (UTC_TIME, b"70010100000aZ"),
            (GENERALIZED_TIME, b"700101000000Z"),
            (0x04, b"700101000000Z"),
        ] {
            assert_eq!(unix_seconds(tag, text), None, "{text:?}");
        }
        let ca =
            FederationCa::create("short", Validity::starting_now(Duration::from_secs(60))).unwrap();
        let (issued, _) = ca
            .issue_with_new_key(&CertificateRequest::member(
                Role::Node,
                "node-a",
                Validity::starting_now(Duration::from_secs(60)),
            ))
            .unwrap();
        let der = issued.certificate_der.to_vec();
        // Every truncation fails cleanly, none panics.
        for length in 0..der.len() {
            assert_eq!(
                certificate_validity_window(&der[..length]),
                None,
                "{length}"
            );
        }
        assert_eq!(certificate_validity_window(b"not a certificate"), None);
        let mut long_length = vec![SEQUENCE, 0x85];
        long_length.extend([0xff; 5]);
        assert_eq!(certificate_validity_window(&long_length), None);
    }
}
