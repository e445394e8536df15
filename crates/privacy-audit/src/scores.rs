//! From per-canary attack scores to guesses and the best bound over a small
//! grid of guess sets, with the multiple-testing correction that makes
//! "the best of several" still a valid lower bound.
//!
//! The attacker ranks canaries by score (higher = more likely included),
//! guesses "in" for the `k_plus` highest, "out" for the `k_minus` lowest, and
//! abstains on the rest, as in Steinke, Nasr and Jagielski's experiments.
//!
//! # Choosing k after seeing the results
//!
//! Reporting the largest bound over several `(k_plus, k_minus)` after seeing
//! every outcome is `G` tests at once; reported naively the bound would hold
//! with less than the stated confidence. We apply a Bonferroni correction:
//! each of the `G` guess sets is tested at significance `(1 - confidence) /
//! G`, so by the union bound all of them are valid at once with probability
//! at least `confidence`, and so is their maximum. This is the default
//! threshold strategy of DeepMind's `jax_privacy.auditing` for the same
//! bound. A grid of one pair ([`GuessGrid::fixed`]) is a k fixed in advance
//! and needs no correction. Splitting the canaries (choose k on one half,
//! bound on the other) is the other valid option; we do not implement it.
//!
//! Ties in score are broken by canary index, a rule fixed before the output
//! is seen and independent of the secret bits, so guesses remain a function
//! of the mechanism's output alone, as the theorems require.

use serde::Serialize;

use crate::error::AuditError;
use crate::gaussian::gaussian_epsilon_lower_bound;
use crate::input::{AuditLevel, GuessCounts};
use crate::one_run::epsilon_lower_bound;
use crate::result::{BoundMethod, EpsilonLowerBound};

/// Fractions of the canaries used by [`GuessGrid::standard`] for each of
/// `k_plus` and `k_minus`. From 1% (few, very confident guesses, which win
/// when the attack is strong on a few canaries) to 50% (many guesses, which
/// win when the signal is weak but spread). 7 × 7 - 1 = 48 sets at most, so
/// Bonferroni costs a factor 48 in significance: at 95% confidence each set
/// is tested at 0.001, which moves ε by a few percent for m ≥ 1000.
pub const STANDARD_GRID_FRACTIONS: [f64; 7] = [0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5];

/// The guess sets `(k_plus, k_minus)` an audit may choose among, fixed
/// before the scores are seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GuessGrid {
    /// Distinct, non-empty `(k_plus, k_minus)` pairs.
    pairs: Vec<(usize, usize)>,
}

impl GuessGrid {
    /// A grid of the given pairs; duplicates and `(0, 0)` are dropped, and a
    /// grid left empty is refused.
    pub fn new(pairs: impl IntoIterator<Item = (usize, usize)>) -> Result<Self, AuditError> {
        let mut kept: Vec<(usize, usize)> = Vec::new();
        for pair in pairs {
            if pair != (0, 0) && !kept.contains(&pair) {
                kept.push(pair);
            }
        }
        if kept.is_empty() {
            return Err(AuditError::EmptyGrid);
        }
        Ok(Self { pairs: kept })
    }

    /// One guess set chosen in advance: no multiple-testing correction.
    pub fn fixed(k_plus: usize, k_minus: usize) -> Result<Self, AuditError> {
        Self::new([(k_plus, k_minus)])
    }

    /// Every pair of [`STANDARD_GRID_FRACTIONS`] of `canaries` (rounded
    /// down) with `k_plus + k_minus <= canaries`.
    pub fn standard(canaries: usize) -> Result<Self, AuditError> {
        let counts: Vec<usize> = STANDARD_GRID_FRACTIONS
            .iter()
            .map(|fraction| (fraction * canaries as f64).floor() as usize)
            .collect();
        let mut pairs = Vec::new();
        for &k_plus in &counts {
            for &k_minus in &counts {
                if k_plus + k_minus <= canaries {
                    pairs.push((k_plus, k_minus));
                }
            }
        }
        Self::new(pairs)
    }

    /// The pairs, in the order given.
    pub fn pairs(&self) -> &[(usize, usize)] {
        &self.pairs
    }
}

/// The best bound over a grid, and which guess set gave it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoreAudit {
    /// The largest bound over the grid; its `confidence` is the overall one,
    /// valid for the maximum thanks to the correction.
    pub bound: EpsilonLowerBound,
    /// Canaries guessed "in" in the best guess set.
    pub k_plus: usize,
    /// Canaries guessed "out" in the best guess set.
    pub k_minus: usize,
    /// Number of guess sets compared (the Bonferroni factor).
    pub grid_size: usize,
    /// Confidence at which each guess set was tested, `1 - (1 - confidence) / grid_size`.
    pub per_set_confidence: f64,
}

/// Canaries ranked by score, with the prefix counts that let every guess set
/// be counted in constant time.
#[derive(Debug, Clone)]
pub struct RankedCanaries {
    /// `included_prefix[j]` = included canaries among the `j` highest scores.
    included_prefix: Vec<usize>,
}

impl RankedCanaries {
    /// Ranks `scores` (higher = more likely included), breaking ties by index.
    pub fn new(scores: &[f64], included: &[bool]) -> Result<Self, AuditError> {
        if scores.len() != included.len() {
            return Err(AuditError::LengthMismatch {
                scores: scores.len(),
                included: included.len(),
            });
        }
        if let Some(index) = scores.iter().position(|score| score.is_nan()) {
            return Err(AuditError::ScoreNotANumber { index });
        }
        let mut order: Vec<usize> = (0..scores.len()).collect();
        // Stable sort, descending: equal scores keep index order.
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        let mut included_prefix = Vec::with_capacity(scores.len() + 1);
        included_prefix.push(0);
        let mut running = 0;
        for &index in &order {
            running += usize::from(included[index]);
            included_prefix.push(running);
        }
        Ok(Self { included_prefix })
    }

    /// Number of canaries ranked.
    pub fn canaries(&self) -> usize {
        self.included_prefix.len() - 1
    }

    /// Guesses and correct guesses for "in" on the `k_plus` highest scores and
    /// "out" on the `k_minus` lowest.
    pub fn guess_counts(&self, k_plus: usize, k_minus: usize) -> Result<GuessCounts, AuditError> {
        let canaries = self.canaries();
        if k_plus + k_minus > canaries {
            return Err(AuditError::GuessSetTooLarge {
                k_plus,
                k_minus,
                canaries,
            });
        }
        let total_included = self.included_prefix[canaries];
        let correct_in = self.included_prefix[k_plus];
        let included_in_bottom = total_included - self.included_prefix[canaries - k_minus];
        let correct_out = k_minus - included_in_bottom;
        GuessCounts::new(
            canaries as u64,
            (k_plus + k_minus) as u64,
            (correct_in + correct_out) as u64,
        )
    }
}

/// The best lower bound over `grid`, each guess set tested at the
/// Bonferroni-corrected level, with `method`'s analysis.
pub fn audit_scores(
    scores: &[f64],
    included: &[bool],
    grid: &GuessGrid,
    level: &AuditLevel,
    method: BoundMethod,
) -> Result<ScoreAudit, AuditError> {
    let ranked = RankedCanaries::new(scores, included)?;
    let grid_size = grid.pairs().len();
    let per_set_confidence = 1.0 - level.significance() / grid_size as f64;
    let per_set_level = AuditLevel::new(level.delta(), per_set_confidence)?;
    let mut best: Option<(EpsilonLowerBound, usize, usize)> = None;
    for &(k_plus, k_minus) in grid.pairs() {
        let counts = ranked.guess_counts(k_plus, k_minus)?;
        let bound = match method {
            BoundMethod::OneRun => epsilon_lower_bound(&counts, &per_set_level),
            BoundMethod::GaussianFdp => gaussian_epsilon_lower_bound(&counts, &per_set_level)?,
        };
        let better = best
            .as_ref()
            .is_none_or(|(current, _, _)| bound.epsilon_lower > current.epsilon_lower);
        if better {
            best = Some((bound, k_plus, k_minus));
        }
    }
    // A grid is never empty (checked when built), so `best` is set.
    let (mut bound, k_plus, k_minus) = best.ok_or(AuditError::EmptyGrid)?;
    bound.confidence = level.confidence();
    Ok(ScoreAudit {
        bound,
        k_plus,
        k_minus,
        grid_size,
        per_set_confidence,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_guesses_from_both_ends() {
        // Ranked by score: idx 3 (0.9, in), 0 (0.8, in), 2 (0.5, out), 4 (0.5, in), 1 (0.1, out).
        let scores = [0.8, 0.1, 0.5, 0.9, 0.5];
        let included = [true, false, false, true, true];
        let ranked = RankedCanaries::new(&scores, &included).unwrap();
        assert_eq!(
            ranked.guess_counts(2, 0).unwrap(),
            GuessCounts::new(5, 2, 2).unwrap()
        );
        assert_eq!(
            ranked.guess_counts(0, 1).unwrap(),
            GuessCounts::new(5, 1, 1).unwrap()
        );
        // Tie at 0.5: index 2 ranks above index 4, so the bottom two are 4 (in) and 1 (out).
        assert_eq!(
            ranked.guess_counts(0, 2).unwrap(),
            GuessCounts::new(5, 2, 1).unwrap()
        );
        assert_eq!(
            ranked.guess_counts(3, 2).unwrap(),
            GuessCounts::new(5, 5, 3).unwrap()
        );
        assert_eq!(
            ranked.guess_counts(3, 3),
            Err(AuditError::GuessSetTooLarge {
                k_plus: 3,
                k_minus: 3,
                canaries: 5
            })
        );
    }

    #[test]
    fn refuses_bad_scores() {
        assert_eq!(
            RankedCanaries::new(&[0.1, 0.2], &[true]).map(|_| ()),
            Err(AuditError::LengthMismatch {
                scores: 2,
                included: 1
            })
        );
        assert_eq!(
            RankedCanaries::new(&[0.1, f64::NAN], &[true, false]).map(|_| ()),
            Err(AuditError::ScoreNotANumber { index: 1 })
        );
    }

    #[test]
    fn grids() {
        assert_eq!(GuessGrid::new([(0, 0)]), Err(AuditError::EmptyGrid));
        assert_eq!(GuessGrid::fixed(5, 5).unwrap().pairs(), &[(5, 5)]);
        let standard = GuessGrid::standard(1000).unwrap();
        assert_eq!(standard.pairs().len(), 48);
        assert!(
            standard
                .pairs()
                .iter()
                .all(|&(p, m)| p + m <= 1000 && (p, m) != (0, 0))
        );
        // Tiny m: the fractions collapse and duplicates go.
        assert_eq!(
            GuessGrid::standard(3).unwrap().pairs(),
            &[(0, 1), (1, 0), (1, 1)]
        );
    }

    #[test]
    fn bonferroni_costs_confidence() {
        // Perfect separation of 1000 canaries: the grid's best must be no
        // better than the same guess set tested alone at the corrected level.
        let scores: Vec<f64> = (0..1000).map(|i| i as f64).collect();
        let included: Vec<bool> = (0..1000).map(|i| i >= 500).collect();
        let level = AuditLevel::new(1e-5, 0.95).unwrap();
        let grid = GuessGrid::standard(1000).unwrap();
        let audit = audit_scores(&scores, &included, &grid, &level, BoundMethod::OneRun).unwrap();
        assert_eq!(audit.grid_size, 48);
        assert!((audit.per_set_confidence - (1.0 - 0.05 / 48.0)).abs() < 1e-15);
        assert_eq!(audit.bound.confidence, 0.95);
        let alone = epsilon_lower_bound(
            &GuessCounts::new(1000, audit.bound.guesses, audit.bound.correct).unwrap(),
            &level,
        );
        assert!(audit.bound.epsilon_lower < alone.epsilon_lower);
        assert!(audit.bound.epsilon_lower > 0.0);
    }
}
