//! The one mapping between the engine's phase and secure-step enums and their
//! `veil.v1` values, used by both the coordinator's service edge and the
//! node's, so the two sides cannot drift apart.

use veil_federation::{Phase, SecureStep};
use veil_wire::v1;

/// A wire enum value that names no known variant (or an unspecified one
/// where a value is required).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {field} value {value}")]
pub struct UnknownWireValue {
    /// Which field: "phase" or "secure step".
    pub field: &'static str,
    /// The raw value received.
    pub value: i32,
}

/// Domain phase to wire phase.
pub fn phase_to_wire(phase: Phase) -> v1::Phase {
    match phase {
        Phase::FeatureStats => v1::Phase::FeatureStats,
        Phase::Train => v1::Phase::Train,
        Phase::Evaluate => v1::Phase::Evaluate,
        Phase::Release => v1::Phase::Release,
    }
}

/// Wire phase to domain phase; unspecified or unknown values are refused.
pub fn phase_from_wire(raw: i32) -> Result<Phase, UnknownWireValue> {
    match v1::Phase::try_from(raw) {
        Ok(v1::Phase::FeatureStats) => Ok(Phase::FeatureStats),
        Ok(v1::Phase::Train) => Ok(Phase::Train),
        Ok(v1::Phase::Evaluate) => Ok(Phase::Evaluate),
        Ok(v1::Phase::Release) => Ok(Phase::Release),
        _ => Err(UnknownWireValue {
            field: "phase",
            value: raw,
        }),
    }
}

/// Domain secure step to wire.
pub fn secure_step_to_wire(step: SecureStep) -> v1::SecureStep {
    match step {
        SecureStep::AdvertiseKeys => v1::SecureStep::AdvertiseKeys,
        SecureStep::ShareKeys => v1::SecureStep::ShareKeys,
        SecureStep::MaskedInput => v1::SecureStep::MaskedInput,
        SecureStep::ConsistencyCheck => v1::SecureStep::ConsistencyCheck,
        SecureStep::Unmask => v1::SecureStep::Unmask,
        SecureStep::ContinuationInput => v1::SecureStep::ContinuationInput,
    }
}

/// Wire secure step to domain; `Ok(None)` when unspecified (a plain reply).
pub fn secure_step_from_wire(raw: i32) -> Result<Option<SecureStep>, UnknownWireValue> {
    match v1::SecureStep::try_from(raw) {
        Ok(v1::SecureStep::Unspecified) => Ok(None),
        Ok(v1::SecureStep::AdvertiseKeys) => Ok(Some(SecureStep::AdvertiseKeys)),
        Ok(v1::SecureStep::ShareKeys) => Ok(Some(SecureStep::ShareKeys)),
        Ok(v1::SecureStep::MaskedInput) => Ok(Some(SecureStep::MaskedInput)),
        Ok(v1::SecureStep::ConsistencyCheck) => Ok(Some(SecureStep::ConsistencyCheck)),
        Ok(v1::SecureStep::Unmask) => Ok(Some(SecureStep::Unmask)),
        Ok(v1::SecureStep::ContinuationInput) => Ok(Some(SecureStep::ContinuationInput)),
        Err(_) => Err(UnknownWireValue {
            field: "secure step",
            value: raw,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_phase_and_step_round_trips_and_unknown_values_are_named() {
        for phase in [
            Phase::FeatureStats,
            Phase::Train,
            Phase::Evaluate,
            Phase::Release,
        ] {
            assert_eq!(phase_from_wire(phase_to_wire(phase) as i32), Ok(phase));
        }
        for step in [
            SecureStep::AdvertiseKeys,
            SecureStep::ShareKeys,
            SecureStep::MaskedInput,
            SecureStep::ConsistencyCheck,
            SecureStep::Unmask,
            SecureStep::ContinuationInput,
        ] {
            assert_eq!(
                secure_step_from_wire(secure_step_to_wire(step) as i32),
                Ok(Some(step))
            );
        }
        assert_eq!(secure_step_from_wire(0), Ok(None));
        assert_eq!(
            phase_from_wire(0).unwrap_err().to_string(),
            "unknown phase value 0"
        );
        assert_eq!(
            secure_step_from_wire(99).unwrap_err().to_string(),
            "unknown secure step value 99"
        );
    }
}
