//! Statistical checks of the samplers with fixed seeds. Every tolerance is a
//! number of standard errors for the sample size used, stated where it is set.

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use veil_dp_noise::{DiscreteGaussian, Gaussian, Rational};

/// Samples per check: enough that 5 standard errors are tight (variance to
/// ~1.6%), small enough to keep the suite fast.
const SAMPLES: usize = 200_000;

/// Five standard errors: with ~10 checks per run, a false alarm is ~1 in 10^5 runs
/// (and the seeds are fixed, so a passing run stays passing).
const STANDARD_ERRORS: f64 = 5.0;

/// Exact moments of `N_Z(0, σ²)` by summing the mass function over ±60σ
/// (the tail beyond is below 1e-700 relative).
struct ExactDiscrete {
    variance: f64,
    fourth_moment: f64,
    p_zero: f64,
    p_tail: f64,
}

fn exact_discrete(sigma_squared: f64, tail_from: i64) -> ExactDiscrete {
    let reach = (60.0 * sigma_squared.sqrt()).ceil() as i64 + 1;
    let weight = |x: i64| (-(x * x) as f64 / (2.0 * sigma_squared)).exp();
    let normaliser: f64 = (-reach..=reach).map(weight).sum();
    let moment = |power: i32| {
        (-reach..=reach)
            .map(|x| (x as f64).powi(power) * weight(x))
            .sum::<f64>()
            / normaliser
    };
    let p_tail = (-reach..=reach)
        .filter(|x| x.abs() >= tail_from)
        .map(weight)
        .sum::<f64>()
        / normaliser;
    ExactDiscrete {
        variance: moment(2),
        fourth_moment: moment(4),
        p_zero: 1.0 / normaliser,
        p_tail,
    }
}

fn check_frequency(label: &str, hits: usize, probability: f64) {
    let frequency = hits as f64 / SAMPLES as f64;
    let tolerance = STANDARD_ERRORS * (probability * (1.0 - probability) / SAMPLES as f64).sqrt();
    assert!(
        (frequency - probability).abs() <= tolerance,
        "{label}: {frequency} vs {probability} ± {tolerance}"
    );
}

fn check_moments(label: &str, samples: &[f64], variance: f64, fourth_moment: f64) {
    let count = samples.len() as f64;
    let mean = samples.iter().sum::<f64>() / count;
    // Standard error of the mean: sqrt(variance / n).
    let mean_tolerance = STANDARD_ERRORS * (variance / count).sqrt();
    assert!(
        mean.abs() <= mean_tolerance,
        "{label}: mean {mean} ± {mean_tolerance}"
    );
    let sample_variance = samples.iter().map(|x| x * x).sum::<f64>() / count;
    // Standard error of the (known-mean) variance: sqrt((E[X⁴] - σ⁴) / n).
    let variance_tolerance =
        STANDARD_ERRORS * ((fourth_moment - variance * variance) / count).sqrt();
    assert!(
        (sample_variance - variance).abs() <= variance_tolerance,
        "{label}: variance {sample_variance} vs {variance} ± {variance_tolerance}"
    );
}

#[test]
fn discrete_gaussian_matches_its_exact_distribution() {
    let cases = [
        (
            Rational {
                numerator: 4,
                denominator: 1,
            },
            11_u64,
        ),
        (
            Rational {
                numerator: 1,
                denominator: 2,
            },
            12,
        ),
        (
            Rational {
                numerator: 10_609,
                denominator: 100,
            },
            13,
        ), // σ = 10.3
    ];
    for (sigma_squared, seed) in cases {
        let sampler = DiscreteGaussian::new(sigma_squared);
        assert!(sampler.is_ok(), "{sigma_squared:?}");
        let Ok(sampler) = sampler else { continue };
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let samples: Vec<i64> = (0..SAMPLES).map(|_| sampler.sample(&mut rng)).collect();
        let sigma_squared_f64 = sigma_squared.numerator as f64 / sigma_squared.denominator as f64;
        let tail_from = (2.0 * sigma_squared_f64.sqrt()).ceil() as i64;
        let exact = exact_discrete(sigma_squared_f64, tail_from);
        let as_floats: Vec<f64> = samples.iter().map(|&x| x as f64).collect();
        let label = format!("{sigma_squared:?}");
        check_moments(&label, &as_floats, exact.variance, exact.fourth_moment);
        check_frequency(
            &format!("{label} P(0)"),
            samples.iter().filter(|&&x| x == 0).count(),
            exact.p_zero,
        );
        check_frequency(
            &format!("{label} P(|X| ≥ {tail_from})"),
            samples.iter().filter(|&&x| x.abs() >= tail_from).count(),
            exact.p_tail,
        );
        // Symmetry: P(X > 0) = (1 - P(0)) / 2.
        check_frequency(
            &format!("{label} P(X>0)"),
            samples.iter().filter(|&&x| x > 0).count(),
            (1.0 - exact.p_zero) / 2.0,
        );
    }
}

#[test]
fn continuous_gaussian_matches_the_normal_distribution() {
    let sigma = 2.5;
    let sampler = Gaussian::new(sigma);
    assert!(sampler.is_ok());
    let Ok(sampler) = sampler else { return };
    let mut rng = ChaCha20Rng::seed_from_u64(21);
    let samples: Vec<f64> = (0..SAMPLES).map(|_| sampler.sample(&mut rng)).collect();
    let variance = sigma * sigma;
    check_moments("gaussian", &samples, variance, 3.0 * variance * variance);
    // P(|Z| > 2) = erfc(√2) = 0.04550026389635842; P(|Z| > 3) = 0.0026997960632601866.
    check_frequency(
        "gaussian 2σ tail",
        samples.iter().filter(|x| x.abs() > 2.0 * sigma).count(),
        0.045_500_263_896_358_42,
    );
    check_frequency(
        "gaussian 3σ tail",
        samples.iter().filter(|x| x.abs() > 3.0 * sigma).count(),
        0.002_699_796_063_260_186_6,
    );
}

#[test]
fn add_to_noises_every_coordinate_with_the_same_law() {
    let sampler = Gaussian::new(1.0);
    let Ok(sampler) = sampler else { return };
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let mut values = vec![10.0_f32; 20_001];
    sampler.add_to(&mut values, &mut rng);
    let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / values.len() as f64;
    // Five standard errors of a mean of 20 001 unit-variance draws.
    assert!(
        (mean - 10.0).abs() < 5.0 / (values.len() as f64).sqrt(),
        "{mean}"
    );
    assert!(
        values.iter().all(|&v| v != 10.0),
        "every coordinate must be noised"
    );

    let discrete = DiscreteGaussian::new(Rational {
        numerator: 9,
        denominator: 1,
    });
    let Ok(discrete) = discrete else { return };
    let mut ring = vec![u32::MAX; 1000];
    discrete.add_to_wrapping(&mut ring, &mut rng);
    let recentred: Vec<i64> = ring
        .iter()
        .map(|&v| i64::from(v.wrapping_add(1) as i32))
        .collect();
    // Wrapping addition mod 2^32 keeps the noise intact: X - 1 recovered in
    // signed form must look like N_Z(0, 9) (|X| ≤ 9σ = 27 with overwhelming probability).
    assert!(recentred.iter().all(|x| x.abs() <= 27), "{recentred:?}");
    let mut integers = vec![i64::MAX; 3];
    let overflow = discrete.add_to(&mut integers, &mut rng);
    assert!(overflow.is_ok() || matches!(overflow, Err(veil_dp_noise::NoiseError::Overflow(_))));
}
