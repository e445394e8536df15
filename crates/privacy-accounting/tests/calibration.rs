//! Calibration meets its target and is (nearly) the smallest σ that does.

use veil_privacy_accounting::{
    Accountant, AccountingError, CalibrationTarget, DpEvent, calibrate_noise_multiplier,
};

fn epsilon(sampling_rate: f64, noise_multiplier: f64, steps: u64, delta: f64) -> f64 {
    let mut accountant = Accountant::new();
    let composed = accountant.compose(DpEvent::PoissonSampledGaussian {
        sampling_rate,
        noise_multiplier,
        steps,
    });
    assert_eq!(composed, Ok(()));
    accountant
        .epsilon(delta)
        .map(|report| report.epsilon)
        .unwrap_or(f64::NAN)
}

#[test]
fn calibrated_sigma_meets_the_target_and_one_percent_less_does_not() {
    let targets = [
        CalibrationTarget {
            sampling_rate: 0.01,
            steps: 10_000,
            epsilon: 3.0,
            delta: 1e-5,
        },
        CalibrationTarget {
            sampling_rate: 0.1,
            steps: 500,
            epsilon: 8.0,
            delta: 1e-6,
        },
        CalibrationTarget {
            sampling_rate: 1.0,
            steps: 10,
            epsilon: 1.0,
            delta: 1e-5,
        },
    ];
    for target in targets {
        let sigma = calibrate_noise_multiplier(&target);
        assert!(sigma.is_ok(), "{target:?}: {sigma:?}");
        let sigma = sigma.unwrap_or(f64::NAN);
        let at_sigma = epsilon(target.sampling_rate, sigma, target.steps, target.delta);
        let below = epsilon(
            target.sampling_rate,
            0.99 * sigma,
            target.steps,
            target.delta,
        );
        assert!(
            at_sigma <= target.epsilon,
            "{target:?}: ε({sigma}) = {at_sigma}"
        );
        assert!(
            below > target.epsilon,
            "{target:?}: ε(0.99·{sigma}) = {below}"
        );
    }
}

#[test]
fn calibration_refuses_nonsense_targets() {
    let bad_epsilon = CalibrationTarget {
        sampling_rate: 0.01,
        steps: 100,
        epsilon: -1.0,
        delta: 1e-5,
    };
    assert_eq!(
        calibrate_noise_multiplier(&bad_epsilon),
        Err(AccountingError::InvalidEpsilon(-1.0))
    );
    let bad_delta = CalibrationTarget {
        sampling_rate: 0.01,
        steps: 100,
        epsilon: 1.0,
        delta: 2.0,
    };
    assert_eq!(
        calibrate_noise_multiplier(&bad_delta),
        Err(AccountingError::InvalidDelta(2.0))
    );
}
