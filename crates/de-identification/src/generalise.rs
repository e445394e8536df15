//! Generalisation hierarchies for quasi-identifiers: each rule maps a raw value to a coarser one
//! at a numbered level, level 0 being the configured coarsening and the top level `*`. Every
//! level is a function of the one value and the rule, never of other rows; rows that feed
//! training only ever get level 0, and the higher levels serve the export pass.

use crate::policy::GeneralisationPolicy;

/// The value every quasi-identifier takes at the top of its hierarchy, and the value given to
/// missing or unparseable inputs: they carry no information, so they cannot single anyone out.
pub const SUPPRESSED_VALUE: &str = "*";

/// Number of age-band widenings before the age is suppressed: w, 2w, 4w, 8w.
const AGE_BAND_LEVELS: usize = 4;

/// Oldest age treated as plausible; anything above is treated as a data error and suppressed.
const MAX_PLAUSIBLE_AGE: u32 = 130;

/// Generalises `value` with the configured level-0 rule of `policy`.
pub fn generalise(value: &str, policy: &GeneralisationPolicy) -> String {
    generalise_at_level(value, policy, 0)
}

/// The level at which `policy` turns every value into [`SUPPRESSED_VALUE`]; levels above it
/// behave like it.
pub fn top_level(policy: &GeneralisationPolicy) -> usize {
    match policy {
        GeneralisationPolicy::AgeBand { .. } => AGE_BAND_LEVELS,
        GeneralisationPolicy::BirthDateToYear => 2,
        GeneralisationPolicy::Gender { suppress: true } => 0,
        GeneralisationPolicy::Gender { suppress: false } => 1,
        GeneralisationPolicy::PostcodePrefix { length } => *length,
        GeneralisationPolicy::City { .. } => city_steps(policy).len(),
    }
}

/// Generalises `value` at `level` of the hierarchy of `policy`:
/// - age: bands `lo-hi` of width `width * 2^level`, then `*`;
/// - birth date: year, decade (`1980s`), then `*`;
/// - gender: the trimmed value, then `*` (or `*` from the start when suppressed);
/// - postcode: the first `length - level` characters, then `*`;
/// - city: the city (unless mapped to its region from the start), its region, then `*`.
pub fn generalise_at_level(value: &str, policy: &GeneralisationPolicy, level: usize) -> String {
    let value = value.trim();
    if value.is_empty() || level >= top_level(policy) {
        return SUPPRESSED_VALUE.to_owned();
    }
    let generalised = match policy {
        GeneralisationPolicy::AgeBand { width } => age_band(value, *width, level),
        GeneralisationPolicy::BirthDateToYear => birth_year(value).map(|year| match level {
            0 => year.to_string(),
            _ => format!("{}s", year / 10 * 10),
        }),
        GeneralisationPolicy::Gender { .. } => Some(value.to_owned()),
        GeneralisationPolicy::PostcodePrefix { length } => {
            let keep = length.saturating_sub(level);
            Some(value.chars().take(keep).collect())
        }
        GeneralisationPolicy::City { region_map, .. } => match city_steps(policy).get(level) {
            Some(CityStep::City) => Some(value.to_owned()),
            Some(CityStep::Region) => region_map.get(value).cloned(),
            None => None,
        },
    };
    generalised.unwrap_or_else(|| SUPPRESSED_VALUE.to_owned())
}

fn age_band(value: &str, width: u32, level: usize) -> Option<String> {
    let age: u32 = value.parse().ok()?;
    if age > MAX_PLAUSIBLE_AGE || width == 0 {
        return None;
    }
    let band_width = width.checked_shl(u32::try_from(level).ok()?)?;
    let low = age / band_width * band_width;
    Some(format!("{low}-{}", low.saturating_add(band_width - 1)))
}

/// The year of a date written `YYYY-MM-DD`, `YYYY/MM/DD` or `YYYYMMDD` (anything after the day,
/// such as a time, is ignored), if the date exists in the calendar.
fn birth_year(value: &str) -> Option<i32> {
    let bytes = value.as_bytes();
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        let digits = bytes.get(range)?;
        digits.iter().try_fold(0u32, |total, byte| {
            byte.is_ascii_digit()
                .then(|| total * 10 + u32::from(byte - b'0'))
        })
    };
    let year = number(0..4)?;
    let (month, day) = match bytes.get(4) {
        Some(b'-' | b'/') if bytes.get(7) == bytes.get(4) => (number(5..7)?, number(8..10)?),
        _ => (number(4..6)?, number(6..8)?),
    };
    let year = i32::try_from(year).ok()?;
    chrono::NaiveDate::from_ymd_opt(year, month, day).map(|_| year)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum CityStep {
    City,
    Region,
}

fn city_steps(policy: &GeneralisationPolicy) -> Vec<CityStep> {
    let GeneralisationPolicy::City {
        to_region,
        region_map,
    } = policy
    else {
        return Vec::new();
    };
    let mut steps = Vec::with_capacity(2);
    if !to_region {
        steps.push(CityStep::City);
    }
    if !region_map.is_empty() {
        steps.push(CityStep::Region);
    }
    steps
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn check(policy: &GeneralisationPolicy, value: &str, expected_per_level: &[&str]) {
        for (level, expected) in expected_per_level.iter().enumerate() {
            assert_eq!(
                generalise_at_level(value, policy, level),
                *expected,
                "value {value:?} at level {level} of {policy:?}"
            );
        }
    }

    #[test]
    fn age_bands_widen_then_suppress() {
        let policy = GeneralisationPolicy::AgeBand { width: 5 };
        check(
            &policy,
            "37",
            &["35-39", "30-39", "20-39", "0-39", "*", "*"],
        );
        check(&policy, " 0 ", &["0-4", "0-9", "0-19", "0-39", "*"]);
        check(&policy, "abc", &["*"]);
        check(&policy, "-3", &["*"]);
        check(&policy, "999", &["*"]);
        assert_eq!(generalise("37", &policy), "35-39");
    }

    #[test]
    fn birth_dates_become_year_then_decade() {
        let policy = GeneralisationPolicy::BirthDateToYear;
        check(&policy, "1987-03-05", &["1987", "1980s", "*"]);
        check(&policy, "1987/03/05", &["1987", "1980s", "*"]);
        check(&policy, "19870305", &["1987", "1980s", "*"]);
        check(&policy, "1987-03-05T10:00:00", &["1987", "1980s", "*"]);
        check(&policy, "1987-02-30", &["*"]);
        check(&policy, "1987-03/05", &["*"]);
        check(&policy, "87-03-05", &["*"]);
        check(&policy, "生日", &["*"]);
    }

    #[test]
    fn gender_is_kept_or_suppressed() {
        check(
            &GeneralisationPolicy::Gender { suppress: false },
            " F ",
            &["F", "*"],
        );
        check(
            &GeneralisationPolicy::Gender { suppress: true },
            "F",
            &["*", "*"],
        );
    }

    #[test]
    fn postcodes_lose_one_character_per_level() {
        let policy = GeneralisationPolicy::PostcodePrefix { length: 3 };
        check(&policy, "100081", &["100", "10", "1", "*"]);
        check(&policy, "10", &["10", "10", "1", "*"]);
        check(&policy, "", &["*"]);
    }

    #[test]
    fn cities_map_to_regions_then_suppress() {
        let region_map = BTreeMap::from([
            ("杭州".to_owned(), "华东".to_owned()),
            ("Shanghai".to_owned(), "East".to_owned()),
        ]);
        let keep_city = GeneralisationPolicy::City {
            to_region: false,
            region_map: region_map.clone(),
        };
        check(&keep_city, "杭州", &["杭州", "华东", "*"]);
        check(&keep_city, "Lhasa", &["Lhasa", "*", "*"]);
        let to_region = GeneralisationPolicy::City {
            to_region: true,
            region_map,
        };
        check(&to_region, "Shanghai", &["East", "*"]);
        let no_map = GeneralisationPolicy::City {
            to_region: false,
            region_map: BTreeMap::new(),
        };
        check(&no_map, "Shanghai", &["Shanghai", "*"]);
    }
}
