//! Why a node declines a phase: a fixed list of codes shared by the node,
//! which decides, and the engine, which reacts. Only the code travels, never
//! free text, so a decline cannot carry the value of a statistic; the node's
//! own log holds the details.

/// The reasons a node may give for not taking part in a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeclineCode {
    /// Partner policy refuses plain aggregation.
    PolicyPlainAggregation,
    /// Partner policy requires customer-level DP (DP-SGD).
    PolicyCustomerDpRequired,
    /// The job's noise multiplier is below the partner's minimum.
    PolicyNoiseTooLow,
    /// The job's ε exceeds the partner's per-job maximum.
    PolicyEpsilonTooHigh,
    /// The cohort is smaller than the partner's minimum.
    PolicyCohortTooSmall,
    /// The job's collusion tolerance or security parameter is below the
    /// partner's minimum.
    PolicyCollusionTolerance,
    /// The phase would exceed the partner's yearly privacy cap.
    PrivacyCapExceeded,
    /// The job spec differs from the one pinned at the job's first task.
    SpecChanged,
    /// The task is malformed.
    InvalidTask,
    /// A cohort member's certificate does not verify against the node's CA
    /// and revocation list, or does not name the member.
    PeerCertificateRejected,
    /// The cohort lists the node twice, omits it, or has too few distinct members.
    CohortInvalid,
    /// The secure-aggregation parameters are not the ones the node recomputes.
    ParametersMismatch,
    /// More attempts of the phase than the spec allows.
    AttemptLimit,
    /// The node's input for this (job, round, phase) already left once.
    AlreadyReleased,
    /// An evaluation the node may not release.
    EvaluationNotAllowed,
    /// A charge for this release conflicts with one already in the ledger.
    ChargeConflict,
    /// The secure-aggregation protocol refused a message.
    ProtocolRefused,
    /// The node lost this attempt's protocol state (it restarted).
    LostState,
    /// The node has no rows for this job.
    NoData,
    /// The task's aggregation mode does not match the job's.
    ModeMismatch,
    /// Partner-level DP whose statistics would leave un-noised.
    PartnerDpUnsound,
    /// A local failure (training, storage) prevented a reply.
    LocalFailure,
    /// Partner policy refuses privacy audits, or the node holds no audit kit
    /// matching the job's commitment.
    PolicyPrivacyAudit,
}

impl DeclineCode {
    /// Every code, in wire order.
    pub const ALL: [DeclineCode; 23] = [
        DeclineCode::PolicyPlainAggregation,
        DeclineCode::PolicyCustomerDpRequired,
        DeclineCode::PolicyNoiseTooLow,
        DeclineCode::PolicyEpsilonTooHigh,
        DeclineCode::PolicyCohortTooSmall,
        DeclineCode::PolicyCollusionTolerance,
        DeclineCode::PrivacyCapExceeded,
        DeclineCode::SpecChanged,
        DeclineCode::InvalidTask,
        DeclineCode::PeerCertificateRejected,
        DeclineCode::CohortInvalid,
        DeclineCode::ParametersMismatch,
        DeclineCode::AttemptLimit,
        DeclineCode::AlreadyReleased,
        DeclineCode::EvaluationNotAllowed,
        DeclineCode::ChargeConflict,
        DeclineCode::ProtocolRefused,
        DeclineCode::LostState,
        DeclineCode::NoData,
        DeclineCode::ModeMismatch,
        DeclineCode::PartnerDpUnsound,
        DeclineCode::LocalFailure,
        DeclineCode::PolicyPrivacyAudit,
    ];

    /// A stable machine-readable name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeclineCode::PolicyPlainAggregation => "policy-plain-aggregation",
            DeclineCode::PolicyCustomerDpRequired => "policy-customer-dp-required",
            DeclineCode::PolicyNoiseTooLow => "policy-noise-too-low",
            DeclineCode::PolicyEpsilonTooHigh => "policy-epsilon-too-high",
            DeclineCode::PolicyCohortTooSmall => "policy-cohort-too-small",
            DeclineCode::PolicyCollusionTolerance => "policy-collusion-tolerance",
            DeclineCode::PrivacyCapExceeded => "privacy-cap-exceeded",
            DeclineCode::SpecChanged => "spec-changed",
            DeclineCode::InvalidTask => "invalid-task",
            DeclineCode::PeerCertificateRejected => "peer-certificate-rejected",
            DeclineCode::CohortInvalid => "cohort-invalid",
            DeclineCode::ParametersMismatch => "parameters-mismatch",
            DeclineCode::AttemptLimit => "attempt-limit",
            DeclineCode::AlreadyReleased => "already-released",
            DeclineCode::EvaluationNotAllowed => "evaluation-not-allowed",
            DeclineCode::ChargeConflict => "charge-conflict",
            DeclineCode::ProtocolRefused => "protocol-refused",
            DeclineCode::LostState => "lost-state",
            DeclineCode::NoData => "no-data",
            DeclineCode::ModeMismatch => "mode-mismatch",
            DeclineCode::PartnerDpUnsound => "partner-dp-unsound",
            DeclineCode::LocalFailure => "local-failure",
            DeclineCode::PolicyPrivacyAudit => "policy-privacy-audit",
        }
    }

    /// The code's position in the wire enum (`veil.v1.DeclineCode`), from 1.
    pub fn wire_value(self) -> i32 {
        Self::ALL
            .iter()
            .position(|code| *code == self)
            .map_or(0, |index| index as i32 + 1)
    }

    /// The code at a wire value; `None` for 0 (unspecified) and unknown values.
    pub fn from_wire_value(value: i32) -> Option<Self> {
        usize::try_from(value)
            .ok()
            .and_then(|value| value.checked_sub(1))
            .and_then(|index| Self::ALL.get(index).copied())
    }
}

impl std::fmt::Display for DeclineCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_values_round_trip_and_unknown_values_are_refused() {
        for code in DeclineCode::ALL {
            assert_eq!(DeclineCode::from_wire_value(code.wire_value()), Some(code));
        }
        assert_eq!(DeclineCode::from_wire_value(0), None);
        assert_eq!(DeclineCode::from_wire_value(-3), None);
        assert_eq!(
            DeclineCode::from_wire_value(DeclineCode::ALL.len() as i32 + 1),
            None
        );
    }
}
