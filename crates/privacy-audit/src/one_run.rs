//! The one-run lower bound on ε of Steinke, Nasr and Jagielski, "Privacy
//! auditing with one (1) training run" (NeurIPS 2023, arXiv:2305.08846).
//!
//! # The theorem
//!
//! Let a mechanism be (ε, δ)-DP with respect to each of `m` canaries, each
//! included independently with probability 1/2, and let an attacker who sees
//! its output guess the inclusion bit of at most `r` canaries. Write
//! `f(v) = P[Binomial(r, q) >= v]` with `q = e^ε / (1 + e^ε)`, the accuracy
//! of ε-randomised response. Theorem 1 (main result) bounds the number `W` of
//! correct guesses:
//!
//! ```text
//! P[W >= v] <= f(v) + 2 m δ · max_{1 <= i <= m} (f(v - i) - f(v)) / i
//! ```
//!
//! For δ = 0 this says `W` is stochastically dominated by `Binomial(r, q)`:
//! no ε-DP mechanism lets an attacker beat randomised response.
//!
//! # The procedure
//!
//! The right-hand side, capped at 1, is the p-value of the observation
//! `(m, r, v)` under the claim "(ε, δ)-DP" ([`one_run_p_value`]); it is the
//! `p_value_DP_audit` function of the paper's Appendix D. The lower bound is
//! the largest ε whose claim is rejected at significance `1 - confidence`,
//! found as `get_eps_audit` there does: bracket by growing ε until the claim
//! is no longer rejected, then bisect. We double the bracket where the
//! appendix adds 1, and bisect to ~1e-12 where it stops after 30 halvings;
//! neither changes the root, only how precisely it is found.
//!
//! The bisection keeps the invariant "the lower end is 0 or a rejected ε", so
//! the reported ε is itself rejected. That is all soundness needs, even where
//! the δ term makes the p-value not strictly monotone in ε: (ε', δ)-DP implies
//! (ε, δ)-DP for every ε >= ε', so rejecting ε rejects everything below it.

use crate::input::{AuditLevel, GuessCounts};
use crate::result::{BoundMethod, EpsilonLowerBound};
use crate::special::{Binomial, largest_rejected, log_add};

/// Where the bracket stops growing. At ε = 1024, `ln q = -ln(1 + e^-1024)` is
/// 0 in f64: every guess is predicted correct with probability 1, so no
/// observation is rejected and the bracket always closes below this.
const EPSILON_SEARCH_CEILING: f64 = 1024.0;

/// Relative width at which the bisection stops: far below any tolerance a
/// reader of ε could care about, and above f64 noise in the p-value.
const EPSILON_RELATIVE_TOLERANCE: f64 = 1e-12;

/// The p-value of observing `counts` under the claim "(ε, δ)-DP": the
/// right-hand side of Theorem 1, capped at 1.
///
/// Inputs outside the theorem's domain (ε negative or not a number, δ outside
/// `[0, 1]`) give 1: no evidence, the safe answer for a lower bound.
pub fn one_run_p_value(counts: &GuessCounts, epsilon: f64, delta: f64) -> f64 {
    log_p_value(counts, epsilon, delta).exp()
}

/// `ln` of [`one_run_p_value`], computed entirely in log space so that
/// neither the binomial tail nor the δ term underflows.
fn log_p_value(counts: &GuessCounts, epsilon: f64, delta: f64) -> f64 {
    // `is_nan` spelled out: a NaN ε must land here, not in the sums.
    if epsilon.is_nan() || epsilon < 0.0 || !(0.0..=1.0).contains(&delta) {
        return 0.0;
    }
    let binomial = Binomial::randomised_response(counts.guesses(), epsilon);
    let log_tail = binomial.log_upper_tail(counts.correct());
    let log_total = if delta > 0.0 && counts.correct() > 0 {
        let log_delta_weight = (2.0 * counts.canaries() as f64 * delta).ln();
        log_add(
            log_tail,
            log_delta_weight + binomial.log_delta_coefficient(counts.correct()),
        )
    } else {
        log_tail
    };
    // NaN cannot come out of the sums for finite ε, but if it ever did it
    // must read as "no evidence" (p = 1), never as a rejection.
    if log_total.is_nan() {
        0.0
    } else {
        log_total.min(0.0)
    }
}

/// Whether the claim "(ε, δ)-DP" is rejected at the level's significance.
fn rejects(counts: &GuessCounts, epsilon: f64, level: &AuditLevel) -> bool {
    log_p_value(counts, epsilon, level.delta()) < level.significance().ln()
}

/// The largest ε for which "(ε, δ)-DP" is rejected at `level`: the one-run
/// lower bound of Steinke, Nasr and Jagielski (Theorem 1, Appendix D).
pub fn epsilon_lower_bound(counts: &GuessCounts, level: &AuditLevel) -> EpsilonLowerBound {
    let epsilon_lower = largest_rejected_epsilon(counts, level);
    EpsilonLowerBound::new(BoundMethod::OneRun, epsilon_lower, None, counts, level)
}

fn largest_rejected_epsilon(counts: &GuessCounts, level: &AuditLevel) -> f64 {
    largest_rejected(
        |parameter| rejects(counts, parameter, level),
        EPSILON_SEARCH_CEILING,
        EPSILON_RELATIVE_TOLERANCE,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(m: u64, r: u64, v: u64) -> GuessCounts {
        GuessCounts::new(m, r, v).unwrap()
    }

    #[test]
    fn pure_dp_p_value_is_the_binomial_tail() {
        // r = v = 10, δ = 0: P[Binomial(10, q) >= 10] = q^10 exactly.
        let epsilon = 1.0_f64;
        let q = 1.0 / (1.0 + (-epsilon).exp());
        let p = one_run_p_value(&counts(100, 10, 10), epsilon, 0.0);
        // A single lgamma-based term: a few ulps of ~50 in the log, ~1e-14 relative.
        assert!((p - q.powi(10)).abs() <= 1e-13 * q.powi(10), "{p}");
    }

    #[test]
    fn delta_term_matches_its_definition() {
        // m = 20, r = 6, v = 5, ε = 0.5, δ = 0.01: the max over i of the
        // windowed tail divided by i, written out by hand in linear space.
        let (m, r, v, epsilon, delta) = (20_u64, 6_u64, 5_u64, 0.5_f64, 0.01_f64);
        let q = 1.0 / (1.0 + (-epsilon).exp());
        let pmf = |k: u64| {
            let mut choose = 1.0;
            for j in 0..k {
                choose *= (r - j) as f64 / (j + 1) as f64;
            }
            choose * q.powi(k as i32) * (1.0 - q).powi((r - k) as i32)
        };
        let tail: f64 = (v..=r).map(pmf).sum();
        let mut best = 0.0_f64;
        for i in 1..=m {
            let window: f64 = (v.saturating_sub(i)..v).map(pmf).sum();
            best = best.max(window / i as f64);
        }
        let expected = (tail + 2.0 * m as f64 * delta * best).min(1.0);
        let got = one_run_p_value(&counts(m, r, v), epsilon, delta);
        // Seven-term linear sums against log-space sums: 1e-13 relative.
        assert!(
            (got - expected).abs() <= 1e-13 * expected,
            "{got} vs {expected}"
        );
    }

    #[test]
    fn outside_the_domain_is_no_evidence() {
        let c = counts(100, 50, 50);
        assert_eq!(one_run_p_value(&c, f64::NAN, 0.0), 1.0);
        assert_eq!(one_run_p_value(&c, -1.0, 0.0), 1.0);
        assert_eq!(one_run_p_value(&c, 1.0, 1.5), 1.0);
    }

    #[test]
    fn reported_epsilon_is_itself_rejected() {
        let level = AuditLevel::new(1e-5, 0.95).unwrap();
        for (m, r, v) in [(1000, 100, 90), (1000, 1000, 700), (10_000, 200, 200)] {
            let c = counts(m, r, v);
            let bound = epsilon_lower_bound(&c, &level);
            assert!(bound.epsilon_lower > 0.0);
            assert!(one_run_p_value(&c, bound.epsilon_lower, 1e-5) < 0.05);
            // And a hair above it is not (the root is bracketed tightly).
            assert!(one_run_p_value(&c, bound.epsilon_lower + 1e-9, 1e-5) >= 0.05);
        }
    }

    #[test]
    fn no_guesses_no_bound() {
        let level = AuditLevel::new(1e-5, 0.95).unwrap();
        assert_eq!(
            epsilon_lower_bound(&counts(0, 0, 0), &level).epsilon_lower,
            0.0
        );
        assert_eq!(
            epsilon_lower_bound(&counts(1000, 0, 0), &level).epsilon_lower,
            0.0
        );
    }
}
