//! Calibration: the smallest noise multiplier that meets a target (ε, δ).

use crate::accountant::{Accountant, DpEvent};
use crate::analytic_gaussian::analytic_gaussian_epsilon;
use crate::bound::nan_is_unbounded;
use crate::error::AccountingError;

/// Largest noise multiplier searched; needing more means the target is not
/// reachable with any sensible amount of noise.
const MAX_NOISE_MULTIPLIER: f64 = 1e4;

/// Bisection stops when the bracket's ratio is below this: tight enough that
/// 0.99·σ is always on the failing side, loose enough for ~10 PLD evaluations.
const RELATIVE_PRECISION: f64 = 1.0 + 2e-4;

/// What to calibrate for: `steps` rounds at `sampling_rate`, within (ε, δ).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CalibrationTarget {
    /// Poisson sampling probability per round, in `(0, 1]`.
    pub sampling_rate: f64,
    /// Number of rounds.
    pub steps: u64,
    /// Privacy budget ε to stay within.
    pub epsilon: f64,
    /// Privacy budget δ.
    pub delta: f64,
}

fn epsilon_for(target: &CalibrationTarget, noise_multiplier: f64) -> Result<f64, AccountingError> {
    let mut accountant = Accountant::new();
    accountant.compose(DpEvent::PoissonSampledGaussian {
        sampling_rate: target.sampling_rate,
        noise_multiplier,
        steps: target.steps,
    })?;
    // Without subsampling, `steps` Gaussian releases compose exactly into
    // one of noise σ/√steps, whose exact ε is the analytic curve: the
    // tightest of the accountant's bounds and the one it would report, in
    // microseconds instead of a PLD per bisection step. Every analysis
    // job's releases are this case, and nodes recalibrate whenever they
    // read a job's spec.
    if target.sampling_rate >= 1.0 {
        let effective = noise_multiplier / (target.steps as f64).sqrt();
        return Ok(nan_is_unbounded(analytic_gaussian_epsilon(
            effective,
            target.delta,
        )));
    }
    // RDP is cheap and valid: if it already meets the target, skip the PLD.
    let rdp = accountant.epsilon_rdp(target.delta)?;
    if rdp <= target.epsilon {
        return Ok(rdp);
    }
    // The search compares with `>`, which is false for NaN and would accept
    // a σ that meets nothing; NaN is +inf, i.e. "does not meet the target".
    Ok(nan_is_unbounded(accountant.epsilon(target.delta)?.epsilon))
}

/// The smallest noise multiplier σ (to within 0.02%) with `ε(σ) ≤ target`,
/// using the tightest accountant. The returned σ always meets the target.
pub fn calibrate_noise_multiplier(target: &CalibrationTarget) -> Result<f64, AccountingError> {
    if !(target.epsilon.is_finite() && target.epsilon > 0.0) {
        return Err(AccountingError::InvalidEpsilon(target.epsilon));
    }
    let mut high = 1.0;
    while epsilon_for(target, high)? > target.epsilon {
        high *= 2.0;
        if high > MAX_NOISE_MULTIPLIER {
            return Err(AccountingError::CalibrationOutOfRange(MAX_NOISE_MULTIPLIER));
        }
    }
    let mut low = high / 2.0;
    while epsilon_for(target, low)? <= target.epsilon {
        high = low;
        low /= 2.0;
        if low < 1e-3 {
            return Ok(high);
        }
    }
    // Invariant: ε(low) > target ≥ ε(high).
    while high / low > RELATIVE_PRECISION {
        let middle = (low * high).sqrt();
        if epsilon_for(target, middle)? > target.epsilon {
            low = middle;
        } else {
            high = middle;
        }
    }
    Ok(high)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_batch_calibration_matches_the_whole_accountant() {
        // The shortcut for q = 1 gives the σ the accountant's own tightest
        // bound would: the ε it reports at that σ meets the target, and at
        // 0.999·σ it does not.
        for (steps, epsilon, delta) in [(1, 1.0, 1e-6), (2, 0.5, 1e-5), (30, 4.0, 1e-6)] {
            let target = CalibrationTarget {
                sampling_rate: 1.0,
                steps,
                epsilon,
                delta,
            };
            let sigma = calibrate_noise_multiplier(&target).unwrap_or(f64::NAN);
            let spent = |noise_multiplier| {
                let mut accountant = Accountant::new();
                accountant
                    .compose(DpEvent::Gaussian { noise_multiplier })
                    .and_then(|()| {
                        (1..steps).try_for_each(|_| {
                            accountant.compose(DpEvent::Gaussian { noise_multiplier })
                        })
                    })
                    .and_then(|()| accountant.epsilon(delta))
                    .map_or(f64::NAN, |report| report.epsilon)
            };
            assert!(spent(sigma) <= epsilon, "{steps} {epsilon}: σ {sigma}");
            assert!(
                spent(sigma * 0.999) > epsilon,
                "{steps} {epsilon}: σ {sigma}"
            );
        }
    }

    #[test]
    fn a_target_no_noise_can_meet_is_refused() {
        // 1e6 steps at q = 1 with ε = 1e-9 needs σ far above the searched
        // range: refused with the range, never an answer that misses it.
        let target = CalibrationTarget {
            sampling_rate: 1.0,
            steps: 1_000_000,
            epsilon: 1e-9,
            delta: 1e-10,
        };
        assert_eq!(
            calibrate_noise_multiplier(&target),
            Err(AccountingError::CalibrationOutOfRange(MAX_NOISE_MULTIPLIER))
        );
        // A NaN target ε is refused before any search.
        let nan_target = CalibrationTarget {
            epsilon: f64::NAN,
            ..target
        };
        assert!(matches!(
            calibrate_noise_multiplier(&nan_target),
            Err(AccountingError::InvalidEpsilon(epsilon)) if epsilon.is_nan()
        ));
    }

    #[test]
    fn epsilon_for_tiny_noise_is_infinite_not_zero() {
        // Regression: ε(σ = 1e-160) was 0, which the bisection would read as
        // "meets any target".
        let target = CalibrationTarget {
            sampling_rate: 0.5,
            steps: 1,
            epsilon: 1.0,
            delta: 1e-5,
        };
        assert_eq!(epsilon_for(&target, 1e-160), Ok(f64::INFINITY));
    }
}
