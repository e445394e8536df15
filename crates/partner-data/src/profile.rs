//! A customer's profile attributes, read from that customer's own de-identified profile row and
//! nothing else.
//!
//! This is where the adjacency DP-SGD relies on is kept on the profile side: the values come
//! from the row's declared (level-0) generalisation, which `veil-de-identification` computes from the row
//! alone, and no other row is consulted, so adding or removing a customer cannot change anyone
//! else's profile.

use veil_behaviour_features::{CustomerProfile, Gender};
use veil_de_identification::{DeidRecord, GeneralisationPolicy};

/// A quasi-identifier column that a profile feature reads: its position in the de-identified
/// record and its generalisation rule, which says how to read the generalised value.
#[derive(Debug, Clone)]
pub(crate) struct ProfileAttribute {
    pub(crate) output_position: usize,
    pub(crate) rule: GeneralisationPolicy,
}

/// The profile of one de-identified row. A quasi-identifier generalised to `*` (missing or
/// suppressed at level 0 by its rule) gives an unknown attribute.
pub(crate) fn profile_from_record(
    record: &DeidRecord,
    attributes: &[ProfileAttribute],
) -> CustomerProfile {
    let mut profile = CustomerProfile::default();
    for attribute in attributes {
        let Some(value) = record
            .values
            .get(attribute.output_position)
            .and_then(Option::as_deref)
        else {
            continue;
        };
        match attribute.rule {
            GeneralisationPolicy::AgeBand { .. } => profile.age_years = band_middle(value),
            GeneralisationPolicy::BirthDateToYear => profile.birth_year = year_middle(value),
            GeneralisationPolicy::Gender { .. } => profile.gender = Gender::parse(value),
            GeneralisationPolicy::PostcodePrefix { .. } | GeneralisationPolicy::City { .. } => {}
        }
    }
    profile
}

/// Whether a quasi-identifier rule feeds a profile feature.
pub(crate) fn is_profile_attribute(rule: &GeneralisationPolicy) -> bool {
    matches!(
        rule,
        GeneralisationPolicy::AgeBand { .. }
            | GeneralisationPolicy::BirthDateToYear
            | GeneralisationPolicy::Gender { .. }
    )
}

/// The middle of an age band `lo-hi`, or `None` for `*`.
fn band_middle(value: &str) -> Option<f32> {
    let (low, high) = value.split_once('-')?;
    let low: f32 = low.trim().parse().ok()?;
    let high: f32 = high.trim().parse().ok()?;
    Some((low + high) / 2.0)
}

/// A generalised birth year `1987` as itself, a decade `1980s` as its middle, `*` as `None`.
fn year_middle(value: &str) -> Option<f32> {
    match value.strip_suffix('s') {
        Some(decade) => decade.parse::<f32>().ok().map(|start| start + 4.5),
        None => value.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generalised_values_become_numbers() {
        assert_eq!(band_middle("30-39"), Some(34.5));
        assert_eq!(band_middle("*"), None);
        assert_eq!(year_middle("1987"), Some(1987.0));
        assert_eq!(year_middle("1980s"), Some(1984.5));
        assert_eq!(year_middle("*"), None);
    }

    #[test]
    fn a_profile_reads_only_its_own_record() {
        let record = DeidRecord {
            values: vec![
                Some("pseudonym".to_owned()),
                Some("30-39".to_owned()),
                Some("F".to_owned()),
                Some("1987".to_owned()),
                Some("100".to_owned()),
            ],
            ..DeidRecord::default()
        };
        let attributes = [
            (1, GeneralisationPolicy::AgeBand { width: 10 }),
            (2, GeneralisationPolicy::Gender { suppress: false }),
            (3, GeneralisationPolicy::BirthDateToYear),
            (4, GeneralisationPolicy::PostcodePrefix { length: 3 }),
        ]
        .map(|(output_position, rule)| ProfileAttribute {
            output_position,
            rule,
        });
        assert_eq!(
            profile_from_record(&record, &attributes),
            CustomerProfile {
                age_years: Some(34.5),
                birth_year: Some(1987.0),
                gender: Some(Gender::Female),
            }
        );
        let suppressed = DeidRecord {
            values: vec![Some("pseudonym".to_owned()), Some("*".to_owned()), None],
            ..DeidRecord::default()
        };
        assert_eq!(
            profile_from_record(&suppressed, &attributes),
            CustomerProfile::default()
        );
    }
}
