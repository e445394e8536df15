//! Cross-module behaviour of the models crate: training learns, FedProx pulls, evaluation
//! statistics merge exactly, and bad inputs come back as typed errors.

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use veil_models::{
    Dataset, EVAL_BUCKETS, EvalStats, ModelError, ModelKind, ModelSpec, OptimizerKind, OutputKind,
    TrainingConfig, evaluate, predict, train,
};
use veil_scoring_evaluation::exact_auc;

const N_FEATURES: usize = 5;

/// Rows of roughly standard-normal features (sum of uniforms) and a label from `label_of`.
fn synthetic(
    n_rows: usize,
    seed: u64,
    label_of: impl Fn(&[f32], &mut ChaCha8Rng) -> f32,
) -> Dataset {
    let mut generator = ChaCha8Rng::seed_from_u64(seed);
    let mut features = Vec::with_capacity(n_rows * N_FEATURES);
    let mut labels = Vec::with_capacity(n_rows);
    for _ in 0..n_rows {
        let row: Vec<f32> = (0..N_FEATURES)
            .map(|_| (0..3).map(|_| generator.random_range(-1.0f32..1.0)).sum())
            .collect();
        labels.push(label_of(&row, &mut generator));
        features.extend(row);
    }
    Dataset::new(features, labels, N_FEATURES).expect("synthetic data is well formed")
}

/// A linearly separable-ish churn-like set: positive when a weighted sum plus small noise is
/// positive.
fn separable(n_rows: usize, seed: u64) -> Dataset {
    synthetic(n_rows, seed, |row, generator| {
        let score = 1.5 * row[0] - row[1] + 0.5 * row[2] + generator.random_range(-0.3f32..0.3);
        if score > 0.0 { 1.0 } else { 0.0 }
    })
}

fn spec(kind: ModelKind, output: OutputKind) -> ModelSpec {
    ModelSpec {
        kind,
        n_inputs: N_FEATURES,
        output,
    }
}

fn config(
    epochs: usize,
    optimizer: OptimizerKind,
    learning_rate: f64,
    proximal_mu: f64,
) -> TrainingConfig {
    TrainingConfig {
        epochs,
        batch_size: 64,
        learning_rate,
        optimizer,
        proximal_mu,
        seed: 3,
    }
}

fn distance(left: &[f32], right: &[f32]) -> f64 {
    left.iter()
        .zip(right)
        .map(|(a, b)| f64::from(a - b).powi(2))
        .sum::<f64>()
        .sqrt()
}

#[test]
fn binary_models_learn_a_separable_set() {
    let training = separable(2_000, 1);
    let held_out = separable(1_000, 2);
    for kind in [
        ModelKind::LogisticRegression,
        ModelKind::Mlp {
            hidden: vec![16, 8],
        },
    ] {
        let spec = spec(kind, OutputKind::Binary);
        let initial = spec.initial_parameters(5);
        let initial_loss = evaluate(&spec, &initial, &training)
            .unwrap()
            .mean_loss()
            .unwrap();
        let one_epoch = train(
            &spec,
            &initial,
            &training,
            &config(1, OptimizerKind::Adam, 0.01, 0.0),
        )
        .unwrap();
        let five_epochs = train(
            &spec,
            &initial,
            &training,
            &config(5, OptimizerKind::Adam, 0.01, 0.0),
        )
        .unwrap();
        assert!(one_epoch.mean_training_loss < initial_loss, "{spec:?}");
        assert!(
            five_epochs.mean_training_loss < one_epoch.mean_training_loss,
            "{spec:?}"
        );
        assert_eq!(five_epochs.examples, 2_000);
        let stats = evaluate(&spec, &five_epochs.parameters, &held_out).unwrap();
        let auc = stats.auc().unwrap();
        assert!(auc > 0.9, "{spec:?} reached AUC {auc}");
        assert!(stats.mean_loss().unwrap() < initial_loss);
    }
}

#[test]
fn sgd_also_learns_and_training_is_deterministic_for_a_seed() {
    let training = separable(1_000, 4);
    let spec = spec(ModelKind::LogisticRegression, OutputKind::Binary);
    let initial = spec.initial_parameters(1);
    let sgd = config(3, OptimizerKind::Sgd, 0.5, 0.0);
    let first = train(&spec, &initial, &training, &sgd).unwrap();
    let second = train(&spec, &initial, &training, &sgd).unwrap();
    assert_eq!(first.parameters, second.parameters);
    let auc = evaluate(&spec, &first.parameters, &training)
        .unwrap()
        .auc()
        .unwrap();
    assert!(auc > 0.9, "SGD reached AUC {auc}");
}

#[test]
fn regression_learns_a_linear_target() {
    let data = synthetic(2_000, 6, |row, _| 2.0 * row[0] - row[1] + 0.5);
    for kind in [
        ModelKind::LogisticRegression,
        ModelKind::Mlp { hidden: vec![8] },
    ] {
        let spec = spec(kind, OutputKind::Regression);
        let trained = train(
            &spec,
            &spec.initial_parameters(2),
            &data,
            &config(20, OptimizerKind::Adam, 0.02, 0.0),
        )
        .unwrap();
        let stats = evaluate(&spec, &trained.parameters, &data).unwrap();
        // Labels have variance ≈ 5 × 1 (features are sums of three U(-1,1), variance 1), so an
        // RMSE of 0.2 is under 10% of the label's standard deviation.
        let rmse = stats.rmse().unwrap();
        assert!(rmse < 0.2, "{spec:?} rmse {rmse}");
        assert!(stats.r_squared().unwrap() > 0.99);
    }
    // The linear model recovers the coefficients themselves.
    let spec = spec(ModelKind::LogisticRegression, OutputKind::Regression);
    let trained = train(
        &spec,
        &spec.initial_parameters(2),
        &data,
        &config(20, OptimizerKind::Adam, 0.02, 0.0),
    )
    .unwrap();
    let expected = [2.0f32, -1.0, 0.0, 0.0, 0.0, 0.5];
    // Adam with lr 0.02 keeps jittering by about its step size around the optimum.
    assert!(
        distance(&trained.parameters, &expected) < 0.1,
        "{:?}",
        trained.parameters
    );
}

#[test]
fn a_large_proximal_term_keeps_parameters_near_global() {
    let data = separable(1_000, 7);
    let spec = spec(ModelKind::Mlp { hidden: vec![8] }, OutputKind::Binary);
    let global = spec.initial_parameters(9);
    // lr × mu = 0.5 keeps plain gradient descent on the proximal term stable.
    let free = train(
        &spec,
        &global,
        &data,
        &config(3, OptimizerKind::Sgd, 0.01, 0.0),
    )
    .unwrap();
    let pulled = train(
        &spec,
        &global,
        &data,
        &config(3, OptimizerKind::Sgd, 0.01, 50.0),
    )
    .unwrap();
    let free_distance = distance(&free.parameters, &global);
    let pulled_distance = distance(&pulled.parameters, &global);
    assert!(
        free_distance > 0.1,
        "unconstrained training should move: {free_distance}"
    );
    assert!(
        pulled_distance < 0.1 * free_distance,
        "{pulled_distance} vs {free_distance}"
    );
}

#[test]
fn predict_returns_probabilities_and_matches_evaluate() {
    let data = separable(300, 8);
    let spec = spec(ModelKind::Mlp { hidden: vec![4] }, OutputKind::Binary);
    let parameters = spec.initial_parameters(4);
    let probabilities = predict(&spec, &parameters, &data.features).unwrap();
    assert_eq!(probabilities.len(), 300);
    assert!(probabilities.iter().all(|p| (0.0..=1.0).contains(p)));
    let brier: f64 = probabilities
        .iter()
        .zip(&data.labels)
        .map(|(p, y)| f64::from(p - y).powi(2))
        .sum();
    let stats = evaluate(&spec, &parameters, &data).unwrap();
    // predict rounds probabilities to f32, evaluate keeps f64: 300 rows × ~1e-7 each.
    assert!((stats.squared_error_sum - brier).abs() < 1e-4);
}

#[test]
fn histogram_auc_is_close_to_exact_auc() {
    // A realistic churn scorer: a partly-trained model on noisy labels gives scores spread over
    // [0, 1] with AUC well below 1. The histogram only loses the order of positive/negative
    // pairs that share one of the 1000 buckets, and counts each such pair as half right, so its
    // error is at most half the fraction of such pairs. With scores spread over most of [0, 1]
    // that fraction is of the order of 1/1000 per unit of score density, so 0.005 allows a
    // five-fold concentration of scores while still catching a wrong bucketing or tie rule.
    let noisy = |seed| {
        synthetic(5_000, seed, |row, generator| {
            let score = row[0] + 0.5 * row[1] + generator.random_range(-2.0f32..2.0);
            if score > 0.0 { 1.0 } else { 0.0 }
        })
    };
    let training = noisy(10);
    let held_out = noisy(11);
    let spec = spec(ModelKind::LogisticRegression, OutputKind::Binary);
    let trained = train(
        &spec,
        &spec.initial_parameters(1),
        &training,
        &config(2, OptimizerKind::Adam, 0.01, 0.0),
    )
    .unwrap();
    let scores = predict(&spec, &trained.parameters, &held_out.features).unwrap();
    let exact = exact_auc(&scores, &held_out.labels).unwrap();
    let histogram = evaluate(&spec, &trained.parameters, &held_out)
        .unwrap()
        .auc()
        .unwrap();
    assert!(exact > 0.6 && exact < 0.95, "not a realistic case: {exact}");
    assert!((histogram - exact).abs() < 0.005, "{histogram} vs {exact}");
}

#[test]
fn bad_inputs_are_typed_errors() {
    let data = separable(10, 12);
    let binary = spec(ModelKind::LogisticRegression, OutputKind::Binary);
    let good = binary.initial_parameters(0);
    let adam = config(1, OptimizerKind::Adam, 0.01, 0.0);

    assert_eq!(
        train(&binary, &good[1..], &data, &adam).unwrap_err(),
        ModelError::ParameterLength {
            expected: 6,
            actual: 5
        }
    );
    let mut with_nan = good.clone();
    with_nan[2] = f32::NAN;
    assert!(matches!(
        train(&binary, &with_nan, &data, &adam),
        Err(ModelError::NonFinite {
            input: "global",
            index: 2,
            ..
        })
    ));
    let wider = ModelSpec {
        n_inputs: 6,
        ..binary.clone()
    };
    assert_eq!(
        train(&wider, &wider.initial_parameters(0), &data, &adam).unwrap_err(),
        ModelError::FeatureCount {
            expected: 6,
            actual: 5
        }
    );
    let out_of_range = Dataset::new(data.features.clone(), vec![2.0; 10], N_FEATURES).unwrap();
    assert!(matches!(
        train(&binary, &good, &out_of_range, &adam),
        Err(ModelError::LabelOutOfRange { row: 0, .. })
    ));
    let empty = Dataset::new(vec![], vec![], N_FEATURES).unwrap();
    assert_eq!(
        train(&binary, &good, &empty, &adam).unwrap_err(),
        ModelError::EmptyDataset
    );
    let no_batch = TrainingConfig {
        batch_size: 0,
        ..adam.clone()
    };
    assert!(matches!(
        train(&binary, &good, &data, &no_batch),
        Err(ModelError::InvalidTrainingConfig {
            field: "batch_size",
            ..
        })
    ));
    let bad_rate = TrainingConfig {
        learning_rate: f64::NAN,
        ..adam.clone()
    };
    assert!(matches!(
        train(&binary, &good, &data, &bad_rate),
        Err(ModelError::InvalidTrainingConfig {
            field: "learning_rate",
            ..
        })
    ));
    assert_eq!(
        predict(&binary, &good, &[1.0; 7]).unwrap_err(),
        ModelError::PartialRow {
            n_features: 5,
            actual: 7
        }
    );
    assert!(matches!(
        predict(&binary, &good, &[1.0, 1.0, f32::INFINITY, 1.0, 1.0]),
        Err(ModelError::NonFinite {
            input: "features",
            index: 2,
            ..
        })
    ));
    assert_eq!(
        evaluate(&binary, &good[..3], &data).unwrap_err(),
        ModelError::ParameterLength {
            expected: 6,
            actual: 3
        }
    );
    let regression_stats = EvalStats::empty(OutputKind::Regression);
    let mut binary_stats = EvalStats::empty(OutputKind::Binary);
    assert_eq!(
        binary_stats.merge(&regression_stats).unwrap_err(),
        ModelError::StatsShape {
            expected: EVAL_BUCKETS,
            actual: 0
        }
    );
    assert_eq!(
        EvalStats::from_vector(OutputKind::Regression, &[0.0; 7]).unwrap_err(),
        ModelError::StatsShape {
            expected: 6,
            actual: 7
        }
    );
    assert!(matches!(
        EvalStats::from_vector(OutputKind::Regression, &[0.0, f64::NAN, 0.0, 0.0, 0.0, 0.0])
            .unwrap_err(),
        ModelError::StatsValue { index: 1, .. }
    ));
    // A count pushed below zero by the noise of a private release reads as zero.
    assert_eq!(
        EvalStats::from_vector(OutputKind::Regression, &[-3.0, 0.0, 0.0, 0.0, 0.0, 0.0])
            .unwrap()
            .count,
        0
    );
}

/// Field-wise comparison: counts exactly, float sums up to summation-order rounding (relative
/// 1e-9 is far above f64 reassociation error for a few hundred terms of order 1).
fn assert_stats_close(left: &EvalStats, right: &EvalStats) {
    assert_eq!(left.count, right.count);
    assert_eq!(left.positive_histogram, right.positive_histogram);
    assert_eq!(left.negative_histogram, right.negative_histogram);
    for (a, b) in left.to_vector().iter().zip(right.to_vector()).take(6) {
        assert!((a - b).abs() <= 1e-9 * a.abs().max(1.0), "{a} vs {b}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn merged_stats_equal_stats_of_the_union(split in 0usize..=200, regression in any::<bool>()) {
        let output = if regression { OutputKind::Regression } else { OutputKind::Binary };
        let spec = spec(ModelKind::Mlp { hidden: vec![3] }, output);
        let parameters = spec.initial_parameters(21);
        let union = separable(200, 13);
        let part = |range: std::ops::Range<usize>| {
            Dataset::new(
                union.features[range.start * N_FEATURES..range.end * N_FEATURES].to_vec(),
                union.labels[range].to_vec(),
                N_FEATURES,
            ).unwrap()
        };
        let mut merged = evaluate(&spec, &parameters, &part(0..split)).unwrap();
        merged.merge(&evaluate(&spec, &parameters, &part(split..200)).unwrap()).unwrap();
        assert_stats_close(&merged, &evaluate(&spec, &parameters, &union).unwrap());
    }

    #[test]
    fn stats_vector_round_trips(
        count in 0u64..1_000_000,
        sums in proptest::array::uniform5(-1e6f64..1e6),
        buckets in proptest::collection::vec((0u64..1_000_000, 0u64..1_000_000), EVAL_BUCKETS),
    ) {
        let stats = EvalStats {
            count,
            loss_sum: sums[0],
            squared_error_sum: sums[1],
            absolute_error_sum: sums[2],
            label_sum: sums[3],
            label_square_sum: sums[4],
            positive_histogram: buckets.iter().map(|pair| pair.0).collect(),
            negative_histogram: buckets.iter().map(|pair| pair.1).collect(),
        };
        prop_assert_eq!(EvalStats::from_vector(OutputKind::Binary, &stats.to_vector()), Ok(stats.clone()));
        let regression = EvalStats { positive_histogram: vec![], negative_histogram: vec![], ..stats };
        prop_assert_eq!(EvalStats::from_vector(OutputKind::Regression, &regression.to_vector()), Ok(regression.clone()));
    }
}
