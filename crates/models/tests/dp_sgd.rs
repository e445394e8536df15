//! DP-SGD through the public API: without noise and clipping it is ordinary full-batch
//! training, its noise has the calibrated scale, one customer moves the model by at most the
//! clip norm, it still learns, and it reports what the accountant composes.

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::{ChaCha8Rng, ChaCha20Rng};
use veil_models::{
    Dataset, DpSgdConfig, ModelError, ModelKind, ModelSpec, OptimizerKind, OutputKind,
    TrainingConfig, predict, train, train_dp_sgd,
};
use veil_privacy_accounting::{Accountant, DpEvent};
use veil_scoring_evaluation::exact_auc;

const N_FEATURES: usize = 5;

/// Roughly standard-normal features (sums of uniforms); positive label when a weighted sum plus
/// a little noise is positive.
fn separable(n_rows: usize, seed: u64) -> Dataset {
    let mut generator = ChaCha8Rng::seed_from_u64(seed);
    let mut features = Vec::with_capacity(n_rows * N_FEATURES);
    let mut labels = Vec::with_capacity(n_rows);
    for _ in 0..n_rows {
        let row: Vec<f32> = (0..N_FEATURES)
            .map(|_| (0..3).map(|_| generator.random_range(-1.0f32..1.0)).sum())
            .collect();
        let score = 1.5 * row[0] - row[1] + 0.5 * row[2] + generator.random_range(-0.3f32..0.3);
        labels.push(if score > 0.0 { 1.0 } else { 0.0 });
        features.extend(row);
    }
    Dataset::new(features, labels, N_FEATURES).expect("synthetic data is well formed")
}

fn spec(kind: ModelKind, output: OutputKind) -> ModelSpec {
    ModelSpec {
        kind,
        n_inputs: N_FEATURES,
        output,
    }
}

fn mlp() -> ModelKind {
    ModelKind::Mlp {
        hidden: vec![16, 8],
    }
}

fn training(epochs: usize, optimizer: OptimizerKind, learning_rate: f64) -> TrainingConfig {
    TrainingConfig {
        epochs,
        batch_size: 64,
        learning_rate,
        optimizer,
        proximal_mu: 0.0,
        seed: 3,
    }
}

fn dp(noise_multiplier: f64, clip_norm: f64, sampling_rate: f64) -> DpSgdConfig {
    DpSgdConfig {
        noise_multiplier,
        clip_norm,
        sampling_rate,
    }
}

fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

fn differences(left: &[f32], right: &[f32]) -> Vec<f64> {
    left.iter()
        .zip(right)
        .map(|(a, b)| f64::from(*a) - f64::from(*b))
        .collect()
}

fn mean_and_sd(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, variance.sqrt())
}

#[test]
fn without_noise_or_clipping_full_batch_dp_sgd_is_ordinary_full_batch_training() {
    let data = separable(300, 1);
    // q = 1 puts every row in every batch and gives one step per epoch; a clip norm far above
    // any gradient never clips; sigma = 0 adds nothing. What is left is full-batch descent.
    // Several epochs with FedProx also check the proximal gradient, which is zero on the first
    // step from the global model.
    for kind in [ModelKind::LogisticRegression, mlp()] {
        for (optimizer, learning_rate, mu) in [
            (OptimizerKind::Sgd, 0.5, 0.0),
            (OptimizerKind::Sgd, 0.5, 0.3),
            (OptimizerKind::Adam, 0.01, 0.3),
        ] {
            let model = spec(kind.clone(), OutputKind::Binary);
            let global = model.initial_parameters(9);
            let mut config = training(3, optimizer, learning_rate);
            config.proximal_mu = mu;
            config.batch_size = data.n_rows();
            let ordinary = train(&model, &global, &data, &config).expect("ordinary training");
            let private = train_dp_sgd(
                &model,
                &global,
                &data,
                &config,
                &dp(0.0, 1e6, 1.0),
                &mut rng(1),
            )
            .expect("DP-SGD training");
            assert_eq!(private.steps, 3);
            assert_eq!(private.training.examples, ordinary.examples);
            // f32 sums of 300 gradients in different orders differ by ~1e-7 relative; Adam
            // divides by sqrt(v), which magnifies that for near-zero gradients, hence 1e-5.
            for (index, (p, o)) in private
                .training
                .parameters
                .iter()
                .zip(&ordinary.parameters)
                .enumerate()
            {
                assert!(
                    (p - o).abs() < 1e-5,
                    "{kind:?} {optimizer:?} mu={mu} parameter {index}: {p} vs {o}"
                );
            }
            assert!(
                (private.training.mean_training_loss - ordinary.mean_training_loss).abs() < 1e-5
            );
            assert_ne!(private.training.parameters, global, "the model moved");
        }
    }
}

#[test]
fn noise_on_real_gradients_has_standard_deviation_sigma_c_over_q_n() {
    // q = 1 draws no sampling randomness, so the noisy and noiseless runs differ only by the
    // noise: one SGD step with learning rate 1 moves each parameter by noise / (q N).
    let data = separable(300, 2);
    let model = spec(
        ModelKind::Mlp {
            hidden: vec![128, 64],
        },
        OutputKind::Binary,
    );
    let global = model.initial_parameters(4);
    let config = training(1, OptimizerKind::Sgd, 1.0);
    let (sigma, clip_norm) = (2.0, 0.5);
    let noiseless = train_dp_sgd(
        &model,
        &global,
        &data,
        &config,
        &dp(0.0, clip_norm, 1.0),
        &mut rng(7),
    )
    .expect("noiseless run");
    let noisy = train_dp_sgd(
        &model,
        &global,
        &data,
        &config,
        &dp(sigma, clip_norm, 1.0),
        &mut rng(7),
    )
    .expect("noisy run");
    let noise = differences(&noiseless.training.parameters, &noisy.training.parameters);
    check_noise_scale(&noise, sigma * clip_norm / data.n_rows() as f64);
}

#[test]
fn noise_is_scaled_by_the_expected_batch_size_when_subsampling() {
    // With all parameters and labels zero every regression gradient is zero, whatever rows
    // are sampled, so one SGD step with learning rate 1 leaves exactly -noise / (q N).
    // q = 0.8 makes round(1/q) = 1 step per epoch.
    let model = spec(
        ModelKind::Mlp {
            hidden: vec![128, 64],
        },
        OutputKind::Regression,
    );
    let n_rows = 500;
    let features = (0..n_rows * N_FEATURES)
        .map(|i| (i % 7) as f32 - 3.0)
        .collect();
    let data = Dataset::new(features, vec![0.0; n_rows], N_FEATURES).expect("well formed");
    let zero = vec![0.0f32; model.parameter_count()];
    let (sigma, clip_norm, sampling_rate) = (1.5, 2.0, 0.8);
    let outcome = train_dp_sgd(
        &model,
        &zero,
        &data,
        &training(1, OptimizerKind::Sgd, 1.0),
        &dp(sigma, clip_norm, sampling_rate),
        &mut rng(3),
    )
    .expect("DP-SGD training");
    assert_eq!(outcome.steps, 1);
    let noise = differences(&outcome.training.parameters, &zero);
    check_noise_scale(&noise, sigma * clip_norm / (sampling_rate * n_rows as f64));
}

/// `noise` (hundreds of independent coordinates) should be N(0, expected_sd²).
fn check_noise_scale(noise: &[f64], expected_sd: f64) {
    let n = noise.len() as f64;
    assert!(n > 9_000.0, "enough coordinates for the statistics");
    let (mean, sd) = mean_and_sd(noise);
    // The sample sd has relative standard error 1/sqrt(2n) ≈ 0.74% at n = 9089 (MLP 128-64);
    // allowing 5 of them (3.7%) still catches a divisor or scale off by 10%.
    let tolerance = 5.0 / (2.0 * n).sqrt();
    assert!(
        (sd / expected_sd - 1.0).abs() < tolerance,
        "noise sd {sd}, expected {expected_sd}"
    );
    assert!(
        mean.abs() < 5.0 * expected_sd / n.sqrt(),
        "noise mean {mean} should be about 0 (sd {expected_sd})"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// The privacy claim: one customer's contribution to a step is at most the clip norm, for
    /// any row however extreme. With one row, q = 1, no noise and SGD at learning rate 1, the
    /// step moves the model by exactly that row's clipped gradient / (q N) = clipped gradient.
    #[test]
    fn one_customer_moves_the_model_by_at_most_the_clip_norm(
        row in proptest::collection::vec(-1e3f32..1e3, N_FEATURES),
        label in 0.0f32..=1.0,
        clip_norm in 0.1f64..10.0,
        use_mlp in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let kind = if use_mlp { mlp() } else { ModelKind::LogisticRegression };
        let model = spec(kind, OutputKind::Binary);
        let global = model.initial_parameters(seed);
        let data = Dataset::new(row, vec![label], N_FEATURES).expect("well formed");
        let outcome = train_dp_sgd(
            &model,
            &global,
            &data,
            &training(1, OptimizerKind::Sgd, 1.0),
            &dp(0.0, clip_norm, 1.0),
            &mut rng(seed),
        );
        prop_assert!(outcome.is_ok());
        let moved = differences(&outcome.expect("checked").training.parameters, &global);
        let distance = moved.iter().map(|d| d * d).sum::<f64>().sqrt();
        prop_assert!(distance <= clip_norm, "moved {} > clip norm {}", distance, clip_norm);
    }
}

#[test]
fn private_training_still_learns_a_separable_set() {
    let training_rows = separable(3_000, 5);
    let held_out = separable(1_000, 6);
    let model = spec(ModelKind::LogisticRegression, OutputKind::Binary);
    let global = model.initial_parameters(1);
    let outcome = train_dp_sgd(
        &model,
        &global,
        &training_rows,
        &training(4, OptimizerKind::Adam, 0.05),
        &dp(1.0, 1.0, 0.05),
        &mut rng(8),
    )
    .expect("DP-SGD training");
    let scores = predict(&model, &outcome.training.parameters, &held_out.features).expect("scores");
    let auc = exact_auc(&scores, &held_out.labels).expect("both classes");
    assert!(auc > 0.95, "held-out AUC {auc}");
}

#[test]
fn the_outcome_says_what_the_accountant_composes() {
    // One row and q = 0.01: nearly every batch is empty, and each still counts as a step.
    let data = separable(1, 7);
    let model = spec(ModelKind::LogisticRegression, OutputKind::Binary);
    let global = model.initial_parameters(2);
    let config = dp(1.1, 1.0, 0.01);
    let outcome = train_dp_sgd(
        &model,
        &global,
        &data,
        &training(3, OptimizerKind::Adam, 0.01),
        &config,
        &mut rng(4),
    )
    .expect("DP-SGD training");
    assert_eq!(config.steps_per_epoch(), 100);
    assert_eq!(outcome.steps, 300);
    assert_eq!(outcome.sampling_rate, 0.01);
    assert_eq!(outcome.noise_multiplier, 1.1);
    assert_ne!(
        outcome.training.parameters, global,
        "empty steps still add noise"
    );

    let mut accountant = Accountant::new();
    accountant
        .compose(DpEvent::PoissonSampledGaussian {
            sampling_rate: outcome.sampling_rate,
            noise_multiplier: outcome.noise_multiplier,
            steps: outcome.steps,
        })
        .expect("valid event");
    let epsilon = accountant.epsilon(1e-5).expect("epsilon").epsilon;
    assert!(epsilon.is_finite() && epsilon > 0.0, "epsilon {epsilon}");
}

#[test]
fn bad_dp_settings_are_refused_naming_the_field() {
    let check = |config: DpSgdConfig, expected_field: &str| match config.validate() {
        Err(ModelError::InvalidDpSgdConfig { field, .. }) => assert_eq!(field, expected_field),
        other => panic!("expected InvalidDpSgdConfig for {expected_field}, got {other:?}"),
    };
    check(dp(-0.1, 1.0, 0.1), "noise_multiplier");
    check(dp(f64::NAN, 1.0, 0.1), "noise_multiplier");
    check(dp(f64::INFINITY, 1.0, 0.1), "noise_multiplier");
    check(dp(1.0, 0.0, 0.1), "clip_norm");
    check(dp(1.0, -1.0, 0.1), "clip_norm");
    check(dp(1.0, f64::INFINITY, 0.1), "clip_norm");
    check(dp(1.0, 1.0, 0.0), "sampling_rate");
    check(dp(1.0, 1.0, 1.5), "sampling_rate");
    check(dp(1.0, 1.0, f64::NAN), "sampling_rate");
    assert_eq!(dp(0.0, 1.0, 1.0).validate(), Ok(()));

    // Training refuses them too, before touching the data, and also refuses what
    // `DpSgdConfig::validate` cannot see: a noise standard deviation σ·C that overflows.
    let data = separable(10, 1);
    let model = spec(ModelKind::LogisticRegression, OutputKind::Binary);
    let global = model.initial_parameters(1);
    let run = |config: DpSgdConfig| {
        train_dp_sgd(
            &model,
            &global,
            &data,
            &training(1, OptimizerKind::Sgd, 0.1),
            &config,
            &mut rng(1),
        )
    };
    assert!(matches!(
        run(dp(1.0, 1.0, 2.0)),
        Err(ModelError::InvalidDpSgdConfig {
            field: "sampling_rate",
            ..
        })
    ));
    assert!(matches!(
        run(dp(1e200, 1e200, 0.5)),
        Err(ModelError::InvalidDpSgdConfig {
            field: "noise_multiplier",
            ..
        })
    ));
    let empty = Dataset::new(vec![], vec![], N_FEATURES).expect("well formed");
    assert_eq!(
        train_dp_sgd(
            &model,
            &global,
            &empty,
            &training(1, OptimizerKind::Sgd, 0.1),
            &dp(1.0, 1.0, 0.5),
            &mut rng(1),
        ),
        Err(ModelError::EmptyDataset)
    );
}
