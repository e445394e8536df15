//! The one error type of the audit statistics: every way an input can be
//! refused, checked once when the input is built.

/// Why an audit input was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AuditError {
    /// More correct guesses than guesses.
    #[error("correct guesses ({correct}) exceed guesses made ({guesses})")]
    MoreCorrectThanGuesses {
        /// Correct guesses claimed.
        correct: u64,
        /// Guesses made.
        guesses: u64,
    },
    /// More guesses than canaries: each canary is guessed at most once.
    #[error("guesses ({guesses}) exceed canaries ({canaries})")]
    MoreGuessesThanCanaries {
        /// Guesses made.
        guesses: u64,
        /// Canaries inserted.
        canaries: u64,
    },
    /// A δ outside `[0, 1)` or not a number; δ = 1 is no guarantee at all.
    #[error("delta must be in [0, 1), got {0}")]
    InvalidDelta(f64),
    /// A confidence outside `(0, 1)` or not a number.
    #[error("confidence must be in (0, 1), got {0}")]
    InvalidConfidence(f64),
    /// The Gaussian refinement needs δ > 0: a Gaussian mechanism is
    /// (ε, 0)-DP for no finite ε, so its lower bound at δ = 0 means nothing.
    #[error("the Gaussian (f-DP) refinement needs delta > 0")]
    GaussianNeedsPositiveDelta,
    /// Scores and inclusion bits describe different numbers of canaries.
    #[error("{scores} scores but {included} inclusion bits")]
    LengthMismatch {
        /// Number of scores.
        scores: usize,
        /// Number of inclusion bits.
        included: usize,
    },
    /// A score that is not a number cannot be ranked.
    #[error("score of canary {index} is not a number")]
    ScoreNotANumber {
        /// Position of the offending score.
        index: usize,
    },
    /// A guess set asks for more guesses than there are canaries.
    #[error("k_plus ({k_plus}) + k_minus ({k_minus}) exceeds the {canaries} canaries")]
    GuessSetTooLarge {
        /// Canaries guessed "in".
        k_plus: usize,
        /// Canaries guessed "out".
        k_minus: usize,
        /// Canaries available.
        canaries: usize,
    },
    /// A grid with no guess set, or only the empty one, can test nothing.
    #[error("the guess grid has no non-empty guess set")]
    EmptyGrid,
    /// The operating system's generator failed to produce a seed.
    #[error("the system random generator failed")]
    Randomness,
    /// An audit seed that is not 64 hex digits (its value is not quoted: it is secret).
    #[error("the audit seed must be 64 hex digits")]
    SeedFormat,
    /// Canaries for a model with no inputs.
    #[error("canaries need at least one feature")]
    NoFeatures,
}
