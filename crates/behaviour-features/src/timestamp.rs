//! Parsing the timestamp cell of a transaction row into Unix seconds (UTC).
//!
//! Accepted, tried in this order (leading and trailing whitespace is ignored):
//!
//! | Shape | Example | Meaning |
//! |---|---|---|
//! | ISO 8601 date and time, no offset | `2024-03-05T14:22:01`, `2024-03-05 14:22:01`, with optional fraction `.250` | taken as UTC |
//! | ISO 8601 date and minutes, no offset | `2024-03-05T14:22`, `2024-03-05 14:22` | taken as UTC |
//! | ISO 8601 date | `2024-03-05` | midnight UTC |
//! | RFC 3339 (`T` or space) | `2024-03-05T14:22:01Z`, `2024-03-05 14:22:01+08:00` | converted to UTC |
//! | ISO 8601 with compact or hours-only offset | `2024-03-05T14:22:01+0800`, `2024-03-05 14:22:01+08` | converted to UTC |
//! | Slashed year-first date | `2024/03/05` | midnight UTC |
//! | Dotted day-first date | `05.03.2024` | midnight UTC |
//! | Unix epoch seconds | `1709648521` (digits only) | as is |
//!
//! Slashed day-first or month-first dates such as `05/03/2024` are **rejected** on purpose:
//! they mean 5 March in Europe and 3 May in the United States, and guessing would silently
//! shift customers' histories by months. A bare integer is always epoch seconds, never a
//! compact `YYYYMMDD` date.

use chrono::{DateTime, NaiveDate, NaiveDateTime};

/// Seconds in one calendar day; features and labels work on whole UTC days.
pub(crate) const SECONDS_PER_DAY: i64 = 86_400;

/// Longest excerpt of an offending cell quoted back in an error, so a malformed row cannot
/// flood the logs or copy a long free-text field into them.
const MAX_QUOTED_CHARS: usize = 32;

/// Text listing the accepted shapes, shared by every timestamp error message.
pub(crate) const ACCEPTED_TIMESTAMP_FORMATS: &str = "YYYY-MM-DD, YYYY-MM-DD[T| ]HH:MM[:SS[.fff]][Z|+HH:MM], \
     YYYY/MM/DD, DD.MM.YYYY or Unix epoch seconds";

/// Formats without an offset, taken as UTC. The `%.f` directive also accepts no fraction.
const NAIVE_DATE_TIME_FORMATS: &[&str] = &[
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
];

/// Formats with a compact `+HHMM` or hours-only `+HH` offset (PostgreSQL's `timestamptz`
/// output), which RFC 3339 parsing does not accept; `%#z` takes minutes as optional.
const OFFSET_DATE_TIME_FORMATS: &[&str] = &["%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%#z"];

/// Date-only formats, taken as midnight UTC.
const DATE_FORMATS: &[&str] = &["%Y-%m-%d", "%Y/%m/%d", "%d.%m.%Y"];

/// Why a timestamp cell could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    /// The cell was empty or only whitespace.
    #[error("timestamp is empty")]
    Empty,
    /// The cell matched none of the accepted shapes (or named an impossible date).
    #[error("cannot parse '{excerpt}' as a timestamp; accepted: {ACCEPTED_TIMESTAMP_FORMATS}")]
    Unrecognised {
        /// The start of the offending cell, shortened to a few dozen characters.
        excerpt: String,
    },
}

/// Parses one timestamp cell into Unix seconds (UTC). See the module docs for the shapes.
pub fn parse_timestamp(text: &str) -> Result<i64, TimestampError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(TimestampError::Empty);
    }
    parse_known_shape(text).ok_or_else(|| TimestampError::Unrecognised {
        excerpt: text.chars().take(MAX_QUOTED_CHARS).collect(),
    })
}

/// Tries each accepted shape, most common first, so the typical export parses on the first try.
fn parse_known_shape(text: &str) -> Option<i64> {
    if let Some(unix_seconds) = parse_plain_iso(text) {
        return Some(unix_seconds);
    }
    if text.bytes().all(|byte| byte.is_ascii_digit()) {
        return parse_epoch_seconds(text);
    }
    for format in NAIVE_DATE_TIME_FORMATS {
        if let Ok(date_time) = NaiveDateTime::parse_from_str(text, format) {
            return Some(date_time.and_utc().timestamp());
        }
    }
    for format in DATE_FORMATS {
        if let Ok(date) = NaiveDate::parse_from_str(text, format) {
            return Some(i64::from(date.to_epoch_days()) * SECONDS_PER_DAY);
        }
    }
    if let Ok(date_time) = DateTime::parse_from_rfc3339(text) {
        return Some(date_time.timestamp());
    }
    for format in OFFSET_DATE_TIME_FORMATS {
        if let Ok(date_time) = DateTime::parse_from_str(text, format) {
            return Some(date_time.timestamp());
        }
    }
    None
}

/// Fast path for the most common export shapes, `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM:SS` (or with a
/// space) and the same with a trailing `Z`. Chrono's general parser is about five times slower
/// and dominated loading time. Anything else, including out-of-range fields, returns `None` and
/// goes through the general formats, so this path can only accept what those accept.
fn parse_plain_iso(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        let digits = bytes.get(range)?;
        digits.iter().try_fold(0u32, |value, byte| {
            byte.is_ascii_digit()
                .then(|| value * 10 + u32::from(byte - b'0'))
        })
    };
    if bytes.get(4) != Some(&b'-') || bytes.get(7) != Some(&b'-') {
        return None;
    }
    let year = i32::try_from(number(0..4)?).ok()?;
    let date = NaiveDate::from_ymd_opt(year, number(5..7)?, number(8..10)?)?;
    let midnight = i64::from(date.to_epoch_days()) * SECONDS_PER_DAY;
    match bytes.len() {
        10 => return Some(midnight),
        19 => {}
        20 if bytes.get(19) == Some(&b'Z') => {}
        _ => return None,
    }
    let shape_matches = matches!(bytes.get(10), Some(b'T' | b' '))
        && bytes.get(13) == Some(&b':')
        && bytes.get(16) == Some(&b':');
    if !shape_matches {
        return None;
    }
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if hour >= 24 || minute >= 60 || second >= 60 {
        return None;
    }
    Some(midnight + i64::from(hour * 3600 + minute * 60 + second))
}

/// Epoch seconds are accepted only inside chrono's representable range, so every accepted
/// value also has a calendar date.
fn parse_epoch_seconds(digits: &str) -> Option<i64> {
    let seconds: i64 = digits.parse().ok()?;
    DateTime::from_timestamp(seconds, 0).map(|date_time| date_time.timestamp())
}

/// The UTC day number (days since 1970-01-01) of a Unix timestamp.
pub(crate) fn day_of(unix_seconds: i64) -> i64 {
    unix_seconds.div_euclid(SECONDS_PER_DAY)
}

/// The UTC day number (days since 1970-01-01) of a calendar date.
pub(crate) fn day_number(date: NaiveDate) -> i64 {
    i64::from(date.to_epoch_days())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seconds since the epoch of 2024-03-05T00:00:00Z, the base of the accepted examples.
    const MARCH_5_2024: i64 = 1_709_596_800;

    fn check(text: &str, expected: Option<i64>) {
        let parsed = parse_timestamp(text).ok();
        assert_eq!(parsed, expected, "parsing {text:?}");
    }

    #[test]
    fn accepted_formats_give_utc_seconds() {
        let time_of_day = 14 * 3600 + 22 * 60 + 1;
        check("2024-03-05", Some(MARCH_5_2024));
        check("  2024-03-05  ", Some(MARCH_5_2024));
        check("2024-03-05T14:22:01", Some(MARCH_5_2024 + time_of_day));
        check("2024-03-05 14:22:01", Some(MARCH_5_2024 + time_of_day));
        check("2024-03-05T14:22:01.750", Some(MARCH_5_2024 + time_of_day));
        check("2024-03-05T14:22", Some(MARCH_5_2024 + time_of_day - 1));
        check("2024-03-05 14:22", Some(MARCH_5_2024 + time_of_day - 1));
        check("2024-03-05T14:22:01Z", Some(MARCH_5_2024 + time_of_day));
        check("2024-03-05 14:22:01Z", Some(MARCH_5_2024 + time_of_day));
        check(
            "2024-03-05T14:22:01+08:00",
            Some(MARCH_5_2024 + time_of_day - 8 * 3600),
        );
        check(
            "2024-03-05T14:22:01-05:30",
            Some(MARCH_5_2024 + time_of_day + 5 * 3600 + 1800),
        );
        check(
            "2024-03-05T14:22:01+0800",
            Some(MARCH_5_2024 + time_of_day - 8 * 3600),
        );
        check("2024/03/05", Some(MARCH_5_2024));
        check("05.03.2024", Some(MARCH_5_2024));
        check("1709596800", Some(MARCH_5_2024));
        check("0", Some(0));
    }

    #[test]
    fn ambiguous_and_malformed_timestamps_are_rejected() {
        check("05/03/2024", None);
        check("03/05/2024", None);
        check("2024-13-01", None);
        check("2024-02-30", None);
        check("2024-03-05T25:00:00", None);
        check("yesterday", None);
        check("-1709596800", None);
        check("99999999999999999999", None);
        check("2024-03-05T14:22:01+08:00 extra", None);
        check("", None);
    }

    #[test]
    fn errors_quote_only_a_short_excerpt() {
        let long_cell = "x".repeat(500);
        let message = parse_timestamp(&long_cell)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(message.contains(&"x".repeat(MAX_QUOTED_CHARS)));
        assert!(!message.contains(&"x".repeat(MAX_QUOTED_CHARS + 1)));
        assert_eq!(parse_timestamp("   "), Err(TimestampError::Empty));
    }

    proptest::proptest! {
        /// The fast path agrees with chrono's general parser on every shape it accepts.
        #[test]
        fn fast_path_agrees_with_chrono(
            year in 1000i32..9999, month in 1u32..=12, day in 1u32..=31,
            hour in 0u32..24, minute in 0u32..60, second in 0u32..60, shape in 0usize..4,
        ) {
            let date_text = format!("{year:04}-{month:02}-{day:02}");
            let text = match shape {
                0 => date_text.clone(),
                1 => format!("{date_text}T{hour:02}:{minute:02}:{second:02}"),
                2 => format!("{date_text} {hour:02}:{minute:02}:{second:02}"),
                _ => format!("{date_text}T{hour:02}:{minute:02}:{second:02}Z"),
            };
            let general = if shape == 0 {
                NaiveDate::parse_from_str(&text, "%Y-%m-%d").ok().map(|date| day_number(date) * SECONDS_PER_DAY)
            } else {
                NaiveDateTime::parse_from_str(text.trim_end_matches('Z'), "%Y-%m-%dT%H:%M:%S")
                    .or_else(|_| NaiveDateTime::parse_from_str(&text, "%Y-%m-%d %H:%M:%S"))
                    .ok()
                    .map(|date_time| date_time.and_utc().timestamp())
            };
            proptest::prop_assert_eq!(parse_plain_iso(&text), general);
            proptest::prop_assert_eq!(parse_timestamp(&text).ok(), general);
        }
    }

    #[test]
    fn day_numbers_agree_between_dates_and_seconds() {
        let date = NaiveDate::from_ymd_opt(2024, 3, 5).unwrap_or_default();
        assert_eq!(day_number(date), day_of(MARCH_5_2024));
        assert_eq!(day_of(MARCH_5_2024 + SECONDS_PER_DAY - 1), day_number(date));
        assert_eq!(day_of(-1), -1);
    }
}
