//! The stored forms of snapshot parts: raw little-endian blobs for vectors,
//! CBOR for engine structures, and fixed names for phases and states.
//!
//! Vectors are raw so a model of 10^6 parameters costs 4 MB and a memcpy-like
//! loop, not a text parser. Structures are CBOR rather than JSON because node
//! sums can legitimately reach infinity, which JSON cannot represent (serde_json
//! silently writes `null`, which then fails to read back).

use serde::Serialize;
use serde::de::DeserializeOwned;
use veil_federation::{JobState, Phase};

/// `values` as consecutive little-endian f32s.
pub(crate) fn f32_blob(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|value| value.to_le_bytes())
        .collect()
}

/// The f32s of a blob written by [`f32_blob`].
pub(crate) fn f32s_from_blob(bytes: &[u8]) -> Result<Vec<f32>, String> {
    let (values, rest) = bytes.as_chunks::<4>();
    if !rest.is_empty() {
        return Err(format!(
            "{} bytes is not a whole number of f32s",
            bytes.len()
        ));
    }
    Ok(values
        .iter()
        .map(|value| f32::from_le_bytes(*value))
        .collect())
}

/// `values` as consecutive little-endian f64s.
pub(crate) fn f64_blob(values: &[f64]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|value| value.to_le_bytes())
        .collect()
}

/// The f64s of a blob written by [`f64_blob`].
pub(crate) fn f64s_from_blob(bytes: &[u8]) -> Result<Vec<f64>, String> {
    let (values, rest) = bytes.as_chunks::<8>();
    if !rest.is_empty() {
        return Err(format!(
            "{} bytes is not a whole number of f64s",
            bytes.len()
        ));
    }
    Ok(values
        .iter()
        .map(|value| f64::from_le_bytes(*value))
        .collect())
}

/// `value` in CBOR.
pub(crate) fn to_cbor<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    ciborium::into_writer(value, &mut bytes).map_err(|error| error.to_string())?;
    Ok(bytes)
}

/// A value back from CBOR written by [`to_cbor`].
pub(crate) fn from_cbor<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    ciborium::from_reader(bytes).map_err(|error| error.to_string())
}

/// The stored name of a phase. The match is exhaustive so that a new phase
/// fails to compile here, a reminder that the schema's CHECK needs a migration.
pub(crate) fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::FeatureStats => "feature-stats",
        Phase::Train => "train",
        Phase::Evaluate => "evaluate",
        Phase::Release => "release",
    }
}

/// The phase of a stored name.
pub(crate) fn phase_from_name(name: &str) -> Option<Phase> {
    [
        Phase::FeatureStats,
        Phase::Train,
        Phase::Evaluate,
        Phase::Release,
    ]
    .into_iter()
    .find(|phase| phase_name(*phase) == name)
}

/// The stored name of a state, and the failure reason column.
pub(crate) fn state_columns(state: &JobState) -> (&'static str, Option<&str>) {
    match state {
        JobState::Pending => ("pending", None),
        JobState::Running => ("running", None),
        JobState::Succeeded => ("succeeded", None),
        JobState::Failed { reason } => ("failed", Some(reason.as_str())),
        JobState::Cancelled => ("cancelled", None),
    }
}

/// The state of stored columns, or what is wrong with them.
pub(crate) fn state_from_columns(name: &str, reason: Option<String>) -> Result<JobState, String> {
    let state = match (name, reason) {
        ("failed", Some(reason)) => JobState::Failed { reason },
        ("failed", None) => return Err("state 'failed' without a failure reason".to_owned()),
        (other, Some(_)) if other != "failed" => {
            return Err(format!("state '{other}' with a failure reason"));
        }
        ("pending", _) => JobState::Pending,
        ("running", _) => JobState::Running,
        ("succeeded", _) => JobState::Succeeded,
        ("cancelled", _) => JobState::Cancelled,
        (other, _) => return Err(format!("unknown state '{other}'")),
    };
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_survive_their_blobs_bit_for_bit() {
        let floats = [
            0.0_f32,
            -0.0,
            1.5,
            f32::MIN_POSITIVE,
            f32::INFINITY,
            -3.25e30,
        ];
        let back = f32s_from_blob(&f32_blob(&floats)).unwrap_or_default();
        let bits = |values: &[f32]| values.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back), bits(&floats));
        let doubles = [f64::NEG_INFINITY, 1e-300, -7.0, f64::MAX];
        assert_eq!(f64s_from_blob(&f64_blob(&doubles)), Ok(doubles.to_vec()));
    }

    #[test]
    fn a_torn_blob_is_refused() {
        assert!(f32s_from_blob(&[0, 0, 0, 0, 1]).is_err());
        assert!(f64s_from_blob(&[0; 12]).is_err());
    }

    #[test]
    fn every_phase_and_state_reads_back() {
        for phase in [Phase::FeatureStats, Phase::Train, Phase::Evaluate] {
            assert_eq!(phase_from_name(phase_name(phase)), Some(phase));
        }
        let states = [
            JobState::Pending,
            JobState::Running,
            JobState::Succeeded,
            JobState::Failed {
                reason: "too few nodes".to_owned(),
            },
            JobState::Cancelled,
        ];
        for state in states {
            let (name, reason) = state_columns(&state);
            let back = state_from_columns(name, reason.map(str::to_owned));
            assert_eq!(back, Ok(state));
        }
        assert!(state_from_columns("running", Some("why".to_owned())).is_err());
        assert!(state_from_columns("paused", None).is_err());
    }

    #[test]
    fn cbor_keeps_non_finite_sums() {
        let sums = vec![f64::INFINITY, f64::NEG_INFINITY, 2.5];
        let back: Result<Vec<f64>, String> = to_cbor(&sums).and_then(|bytes| from_cbor(&bytes));
        assert_eq!(back, Ok(sums));
    }
}
