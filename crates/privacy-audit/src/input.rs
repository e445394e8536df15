//! What an audit observed (canaries, guesses, correct guesses) and the level
//! it is judged at (δ, confidence), each validated once when built so that
//! every bound below can assume its preconditions.

use serde::Serialize;

use crate::error::AuditError;

/// The outcome of one guessing game: `m` canaries, each included in training
/// independently with probability 1/2; the attacker guessed "in" or "out" for
/// `r` of them (abstaining on the rest) and `v` guesses were right.
///
/// Invariant: `correct <= guesses <= canaries`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GuessCounts {
    /// `m`: canaries randomised. The δ term of the bound grows with `m`,
    /// because δ is paid once per canary that could be the one that leaks.
    canaries: u64,
    /// `r`: guesses made (abstentions excluded).
    guesses: u64,
    /// `v`: guesses that matched the secret inclusion bit.
    correct: u64,
}

impl GuessCounts {
    /// Checks `correct <= guesses <= canaries`.
    pub fn new(canaries: u64, guesses: u64, correct: u64) -> Result<Self, AuditError> {
        if correct > guesses {
            return Err(AuditError::MoreCorrectThanGuesses { correct, guesses });
        }
        if guesses > canaries {
            return Err(AuditError::MoreGuessesThanCanaries { guesses, canaries });
        }
        Ok(Self {
            canaries,
            guesses,
            correct,
        })
    }

    /// `m`, the number of canaries randomised.
    pub fn canaries(&self) -> u64 {
        self.canaries
    }

    /// `r`, the number of guesses made.
    pub fn guesses(&self) -> u64 {
        self.guesses
    }

    /// `v`, the number of correct guesses.
    pub fn correct(&self) -> u64 {
        self.correct
    }
}

/// The claim under test is "(ε, δ)-DP" at this δ, and it is rejected only
/// when what was observed has probability below `1 - confidence` under it.
///
/// No `Default`: the job's δ and the audit's confidence are decisions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AuditLevel {
    /// The δ of the claim being audited, normally the job's δ. In `[0, 1)`.
    delta: f64,
    /// Probability that the reported lower bound is valid, e.g. 0.95. In `(0, 1)`.
    confidence: f64,
}

impl AuditLevel {
    /// Checks `0 <= delta < 1` and `0 < confidence < 1`.
    pub fn new(delta: f64, confidence: f64) -> Result<Self, AuditError> {
        // Written so that NaN fails both checks.
        if !(0.0..1.0).contains(&delta) {
            return Err(AuditError::InvalidDelta(delta));
        }
        if !(confidence > 0.0 && confidence < 1.0) {
            return Err(AuditError::InvalidConfidence(confidence));
        }
        Ok(Self { delta, confidence })
    }

    /// δ of the claim under test.
    pub fn delta(&self) -> f64 {
        self.delta
    }

    /// Confidence of the lower bound.
    pub fn confidence(&self) -> f64 {
        self.confidence
    }

    /// `1 - confidence`: the largest p-value at which the claim is rejected.
    pub fn significance(&self) -> f64 {
        1.0 - self.confidence
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_checked() {
        assert_eq!(
            GuessCounts::new(10, 5, 6),
            Err(AuditError::MoreCorrectThanGuesses {
                correct: 6,
                guesses: 5
            })
        );
        assert_eq!(
            GuessCounts::new(10, 11, 3),
            Err(AuditError::MoreGuessesThanCanaries {
                guesses: 11,
                canaries: 10
            })
        );
        assert!(GuessCounts::new(0, 0, 0).is_ok());
    }

    #[test]
    fn level_is_checked() {
        for delta in [-1e-9, 1.0, 2.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                AuditLevel::new(delta, 0.95),
                Err(AuditError::InvalidDelta(_))
            ));
        }
        for confidence in [0.0, 1.0, -0.5, 1.5, f64::NAN] {
            assert!(matches!(
                AuditLevel::new(1e-5, confidence),
                Err(AuditError::InvalidConfidence(_))
            ));
        }
        assert!(AuditLevel::new(0.0, 0.95).is_ok());
    }
}
