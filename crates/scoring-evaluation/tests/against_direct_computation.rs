//! Every metric against a direct computation on the same raw scores: without
//! noise the histogram path agrees to the histogram's resolution; with noise
//! the noise-free value lies in the stated interval at close to the nominal
//! rate over many seeds.

mod common;

use common::{BUCKETS, Direct, Scored, customers, histograms, release, squared_error_sum};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use veil_dp_noise::Gaussian;
use veil_scoring_evaluation::{
    BinaryEvaluation, Estimate, EvaluationError, IntervalConfig, NoisyValue, RegressionBins,
    RegressionRelease, TOP_PERCENTS, evaluate_binary, evaluate_regression, exact_auc,
};

/// Rounding of sums of a few thousand f64 terms.
const ROUNDING: f64 = 1e-9;

fn noise_free(data: &[Scored]) -> BinaryEvaluation {
    let release = release(data, 0.0, &mut ChaCha20Rng::seed_from_u64(0));
    evaluate_binary(&release, &IntervalConfig::new(0.9, 100, 1).unwrap()).unwrap()
}

fn assert_exact(estimate: Estimate, expected: f64, tolerance: f64, what: &str) {
    assert!(
        (estimate.value - expected).abs() <= tolerance,
        "{what}: histogram {} direct {expected} (tolerance {tolerance})",
        estimate.value
    );
    assert_eq!(
        (estimate.lower, estimate.upper),
        (estimate.value, estimate.value),
        "{what}: a noise-free release has a zero-width interval"
    );
}

#[test]
fn without_noise_every_binary_metric_agrees_with_the_raw_scores_to_the_resolution() {
    for (seed, n, rate) in [(1, 3000, 0.3), (2, 5000, 0.03), (3, 800, 0.6)] {
        let data = customers(seed, n, rate, 1.8);
        let direct = Direct::new(&data);
        let evaluation = noise_free(&data);
        let (positive, negative) = histograms(&data);
        let (positives, negatives) = (direct.positives, direct.negatives);
        let total = positives + negatives;
        assert_exact(evaluation.positives, positives, 0.0, "positives");

        // AUC: only positive-negative pairs inside one bucket can be ordered
        // differently; the histogram counts them half.
        let tied_pairs: f64 = positive.iter().zip(&negative).map(|(p, n)| p * n).sum();
        let scores: Vec<f32> = data.iter().map(|c| c.score as f32).collect();
        let labels: Vec<f32> = data
            .iter()
            .map(|c| f32::from(u8::from(c.positive)))
            .collect();
        let exact = exact_auc(&scores, &labels).unwrap();
        assert_exact(
            evaluation.auc,
            exact,
            0.5 * tied_pairs / (positives * negatives) + 1e-6,
            "AUC",
        );

        // ROC and PR points sit at bucket edges, where the histogram is exact.
        assert_eq!(evaluation.roc.len(), BUCKETS + 1);
        for point in &evaluation.roc {
            let (fpr, tpr) = direct.rates_at(point.threshold);
            assert_exact(point.false_positive_rate, fpr, ROUNDING, "FPR");
            assert_exact(point.true_positive_rate, tpr, ROUNDING, "TPR");
        }
        for point in &evaluation.precision_recall {
            assert_exact(
                point.precision,
                direct.precision_at(point.threshold),
                ROUNDING,
                "precision",
            );
            assert_exact(
                point.recall,
                direct.rates_at(point.threshold).1,
                ROUNDING,
                "recall",
            );
        }

        // Cuts through a share of customers fall inside a bucket: the
        // histogram is off by at most that bucket's positives.
        for point in &evaluation.gains {
            let fraction = point.population_fraction;
            let resolution = direct.positives_in_cut_buckets(fraction, &positive) / positives;
            assert_exact(
                point.gain,
                direct.captured(fraction) / positives,
                resolution + ROUNDING,
                "gain",
            );
        }
        for decile in &evaluation.deciles {
            let (upper, lower) = (
                f64::from(decile.decile) / 10.0,
                f64::from(decile.decile - 1) / 10.0,
            );
            let within = direct.captured(upper) - direct.captured(lower);
            let resolution = direct.positives_in_cut_buckets(upper, &positive)
                + direct.positives_in_cut_buckets(lower, &positive);
            let decile_size = total / 10.0;
            assert_exact(
                decile.response_rate,
                within / decile_size,
                resolution / decile_size + ROUNDING,
                "response rate",
            );
            let base_rate = positives / total;
            assert_exact(
                decile.lift,
                within / decile_size / base_rate,
                resolution / decile_size / base_rate + ROUNDING,
                "lift",
            );
            let cumulative = direct.captured(upper) / positives;
            let cumulative_resolution =
                direct.positives_in_cut_buckets(upper, &positive) / positives;
            assert_exact(
                decile.cumulative_gain,
                cumulative,
                cumulative_resolution + ROUNDING,
                "cumulative gain",
            );
            assert_exact(
                decile.cumulative_lift,
                cumulative / upper,
                cumulative_resolution / upper + ROUNDING,
                "cumulative lift",
            );
        }
        assert_eq!(
            evaluation
                .top_percents
                .iter()
                .map(|t| t.percent)
                .collect::<Vec<_>>(),
            TOP_PERCENTS
        );
        for top in &evaluation.top_percents {
            let fraction = f64::from(top.percent) / 100.0;
            let resolution = direct.positives_in_cut_buckets(fraction, &positive);
            let captured = direct.captured(fraction);
            assert_exact(
                top.recall,
                captured / positives,
                resolution / positives + ROUNDING,
                "recall at top k",
            );
            let targeted = fraction * total;
            assert_exact(
                top.precision,
                captured / targeted,
                resolution / targeted + ROUNDING,
                "precision at top k",
            );
        }

        // Calibration: the observed rate per bucket is exact; the bucket's
        // mean score is within half a bucket of the midpoint the histogram uses.
        let mut shown = 0;
        for bucket in 0..BUCKETS {
            let Some((mean_score, rate)) = direct.bucket_means(bucket) else {
                continue;
            };
            shown += 1;
            let bin = evaluation
                .calibration
                .iter()
                .find(|bin| (bin.lower_score * BUCKETS as f64).round() as usize == bucket)
                .unwrap_or_else(|| {
                    panic!("bucket {bucket} holds customers but has no calibration bin")
                });
            assert_exact(bin.observed_rate, rate, ROUNDING, "calibration rate");
            assert!((bin.mean_predicted - mean_score).abs() <= 0.5 / BUCKETS as f64);
        }
        assert_eq!(shown, evaluation.calibration.len());

        // The Brier score comes from the released squared-error sum: exact.
        assert_exact(
            evaluation.brier_score,
            squared_error_sum(&data) / total,
            ROUNDING,
            "Brier",
        );
    }
}

/// Share of intervals that contain their truth.
struct Coverage {
    name: &'static str,
    covered: u32,
    trials: u32,
}

impl Coverage {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            covered: 0,
            trials: 0,
        }
    }

    fn record(&mut self, estimate: Estimate, truth: f64) {
        self.trials += 1;
        self.covered += u32::from(estimate.contains(truth));
    }

    /// Over 200 independent releases, the share of a 90% interval's hits has
    /// a binomial deviation of 2.1 points: [0.83, 0.97] is ±3.3 deviations.
    /// Curve families pool many correlated points, so the same band holds.
    fn check(&self, nominal: f64) -> f64 {
        let rate = f64::from(self.covered) / f64::from(self.trials);
        eprintln!(
            "{}: {:.3} of {} intervals cover the truth",
            self.name, rate, self.trials
        );
        assert!(
            (nominal - 0.07..=nominal + 0.07).contains(&rate),
            "{}: coverage {rate:.3} over {} intervals, nominal {nominal}",
            self.name,
            self.trials
        );
        rate
    }
}

#[test]
fn with_noise_the_intervals_cover_the_noise_free_values_at_the_nominal_rate() {
    // 20,000 held-out customers at three partners, each noising its part at
    // the default release (z = 5, sensitivity √7): 13.2 per value, 22.9 summed.
    let data = customers(42, 20_000, 0.25, 1.8);
    let truth = noise_free(&data);
    let deviation = 5.0 * 7f64.sqrt() * 3f64.sqrt();
    let mut coverage = [
        Coverage::new("AUC"),
        Coverage::new("average precision"),
        Coverage::new("Brier score"),
        Coverage::new("ROC true positive rates"),
        Coverage::new("precision at thresholds"),
        Coverage::new("gains"),
        Coverage::new("lift by decile"),
        Coverage::new("precision and recall at top k%"),
        Coverage::new("calibration rates"),
    ];
    let seeds = 200;
    for seed in 0..seeds {
        let mut rng = ChaCha20Rng::seed_from_u64(1000 + seed);
        let noisy = release(&data, deviation, &mut rng);
        let intervals = IntervalConfig::new(0.9, 400, seed).unwrap();
        let evaluation = evaluate_binary(&noisy, &intervals).unwrap();
        coverage[0].record(evaluation.auc, truth.auc.value);
        coverage[1].record(evaluation.average_precision, truth.average_precision.value);
        coverage[2].record(evaluation.brier_score, truth.brier_score.value);
        // The end points (nothing or everything called positive) are exact.
        for (point, true_point) in evaluation
            .roc
            .iter()
            .zip(&truth.roc)
            .skip(1)
            .take(BUCKETS - 1)
        {
            coverage[3].record(
                point.true_positive_rate,
                true_point.true_positive_rate.value,
            );
        }
        for point in &evaluation.precision_recall {
            if let Some(true_point) = truth
                .precision_recall
                .iter()
                .find(|p| p.threshold == point.threshold)
            {
                coverage[4].record(point.precision, true_point.precision.value);
            }
        }
        for (point, true_point) in evaluation.gains.iter().zip(&truth.gains).skip(1) {
            if true_point.population_fraction < 1.0 {
                coverage[5].record(point.gain, true_point.gain.value);
            }
        }
        for (decile, true_decile) in evaluation.deciles.iter().zip(&truth.deciles) {
            coverage[6].record(decile.lift, true_decile.lift.value);
        }
        for (top, true_top) in evaluation.top_percents.iter().zip(&truth.top_percents) {
            coverage[7].record(top.precision, true_top.precision.value);
            coverage[7].record(top.recall, true_top.recall.value);
        }
        for bin in &evaluation.calibration {
            if let Some(true_bin) = truth
                .calibration
                .iter()
                .find(|b| b.lower_score == bin.lower_score)
            {
                coverage[8].record(bin.observed_rate, true_bin.observed_rate.value);
            }
        }
    }
    for family in &coverage {
        family.check(0.9);
    }
}

/// Spend customers: (prediction, label), clamped to ±bound.
fn spend_customers(seed: u64, n: usize, bound: f64) -> Vec<(f64, f64)> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let normal = Gaussian::new(1.0).unwrap();
    (0..n)
        .map(|_| {
            let prediction = 3.0 + 1.5 * normal.sample(&mut rng);
            let label = prediction + 0.3 * (prediction - 3.0) + normal.sample(&mut rng);
            (prediction.clamp(-bound, bound), label.clamp(-bound, bound))
        })
        .collect()
}

fn spend_release(
    data: &[(f64, f64)],
    bound: f64,
    bins: usize,
    scalar_deviation: f64,
    bin_deviation: f64,
    rng: &mut ChaCha20Rng,
) -> RegressionRelease {
    let normal = Gaussian::new(1.0).unwrap();
    let mut noisy = |value: f64, deviation: f64| NoisyValue {
        value: if deviation > 0.0 {
            value + deviation * normal.sample(rng)
        } else {
            value
        },
        noise_standard_deviation: deviation,
    };
    let mut count = vec![0.0; bins];
    let mut prediction_sum = vec![0.0; bins];
    let mut label_sum = vec![0.0; bins];
    for (prediction, label) in data {
        let bin = RegressionBins::bin_of(*prediction, bound, bins);
        count[bin] += 1.0;
        prediction_sum[bin] += prediction;
        label_sum[bin] += label;
    }
    let sum = |f: &dyn Fn(f64, f64) -> f64| data.iter().map(|(p, l)| f(*p, *l)).sum::<f64>();
    RegressionRelease {
        count: noisy(data.len() as f64, scalar_deviation),
        absolute_error_sum: noisy(sum(&|p, l| (p - l).abs()), scalar_deviation * 2.0 * bound),
        squared_error_sum: noisy(
            sum(&|p, l| (p - l).powi(2)),
            scalar_deviation * 4.0 * bound * bound,
        ),
        label_sum: noisy(sum(&|_, l| l), scalar_deviation * bound),
        label_square_sum: noisy(sum(&|_, l| l * l), scalar_deviation * bound * bound),
        bins: Some(RegressionBins {
            value_bound: bound,
            count: count.into_iter().map(|v| noisy(v, bin_deviation)).collect(),
            prediction_sum: prediction_sum
                .into_iter()
                .map(|v| noisy(v, bin_deviation * bound))
                .collect(),
            label_sum: label_sum
                .into_iter()
                .map(|v| noisy(v, bin_deviation * bound))
                .collect(),
        }),
    }
}

#[test]
fn without_noise_regression_metrics_equal_the_direct_computation() {
    let bound = 12.0;
    let data = spend_customers(5, 4000, bound);
    let release = spend_release(
        &data,
        bound,
        24,
        0.0,
        0.0,
        &mut ChaCha20Rng::seed_from_u64(0),
    );
    let evaluation =
        evaluate_regression(&release, &IntervalConfig::new(0.9, 100, 0).unwrap()).unwrap();
    let n = data.len() as f64;
    let mae = data.iter().map(|(p, l)| (p - l).abs()).sum::<f64>() / n;
    let rmse = (data.iter().map(|(p, l)| (p - l).powi(2)).sum::<f64>() / n).sqrt();
    let mean_label = data.iter().map(|(_, l)| l).sum::<f64>() / n;
    let r_squared = 1.0
        - data.iter().map(|(p, l)| (p - l).powi(2)).sum::<f64>()
            / data
                .iter()
                .map(|(_, l)| (l - mean_label).powi(2))
                .sum::<f64>();
    assert_exact(evaluation.mean_absolute_error, mae, ROUNDING, "MAE");
    assert_exact(evaluation.root_mean_squared_error, rmse, ROUNDING, "RMSE");
    // SST from raw sums loses a few digits to cancellation against the mean.
    assert_exact(evaluation.r_squared, r_squared, 1e-7, "R²");
    let mut occupied = 0;
    for bin in 0..24 {
        let members: Vec<&(f64, f64)> = data
            .iter()
            .filter(|(p, _)| RegressionBins::bin_of(*p, bound, 24) == bin)
            .collect();
        if members.is_empty() {
            continue;
        }
        occupied += 1;
        let m = members.len() as f64;
        let point = evaluation
            .actual_versus_predicted
            .iter()
            .find(|point| {
                ((point.lower_prediction + bound) / (2.0 * bound / 24.0)).round() as usize == bin
            })
            .unwrap_or_else(|| panic!("bin {bin} holds customers but is not on the curve"));
        assert_exact(
            point.mean_predicted,
            members.iter().map(|(p, _)| p).sum::<f64>() / m,
            ROUNDING,
            "mean predicted",
        );
        assert_exact(
            point.mean_actual,
            members.iter().map(|(_, l)| l).sum::<f64>() / m,
            ROUNDING,
            "mean actual",
        );
        assert_exact(point.count, m, 0.0, "bin count");
    }
    assert_eq!(occupied, evaluation.actual_versus_predicted.len());
}

#[test]
fn with_noise_regression_intervals_cover_the_noise_free_values_at_the_nominal_rate() {
    let bound = 12.0;
    let data = spend_customers(6, 20_000, bound);
    let bins = 24;
    let truth_release = spend_release(
        &data,
        bound,
        bins,
        0.0,
        0.0,
        &mut ChaCha20Rng::seed_from_u64(0),
    );
    let intervals = IntervalConfig::new(0.9, 100, 0).unwrap();
    let truth = evaluate_regression(&truth_release, &intervals).unwrap();
    // The default release noise at three partners (z = 5; √6 today, 3 with bins).
    let scalar_deviation = 5.0 * 3.0 * 3f64.sqrt();
    let mut coverage = [
        Coverage::new("MAE"),
        Coverage::new("RMSE"),
        Coverage::new("R²"),
        Coverage::new("binned mean actual"),
    ];
    for seed in 0..200 {
        let mut rng = ChaCha20Rng::seed_from_u64(5000 + seed);
        let noisy = spend_release(
            &data,
            bound,
            bins,
            scalar_deviation,
            scalar_deviation,
            &mut rng,
        );
        let evaluation =
            evaluate_regression(&noisy, &IntervalConfig::new(0.9, 400, seed).unwrap()).unwrap();
        coverage[0].record(
            evaluation.mean_absolute_error,
            truth.mean_absolute_error.value,
        );
        coverage[1].record(
            evaluation.root_mean_squared_error,
            truth.root_mean_squared_error.value,
        );
        coverage[2].record(evaluation.r_squared, truth.r_squared.value);
        for point in &evaluation.actual_versus_predicted {
            // Bins with a few dozen customers are dominated by noise in the
            // ratio of two noisy sums; the curve's claim is for bins the
            // release resolves (count ≥ 10 deviations).
            if let Some(true_point) = truth.actual_versus_predicted.iter().find(|p| {
                p.lower_prediction == point.lower_prediction
                    && p.count.value >= 10.0 * scalar_deviation
            }) {
                coverage[3].record(point.mean_actual, true_point.mean_actual.value);
            }
        }
    }
    for family in &coverage {
        family.check(0.9);
    }
}

#[test]
fn unusable_releases_get_errors_that_name_the_problem() {
    let data = customers(9, 100, 0.3, 1.0);
    let config = IntervalConfig::new(0.9, 100, 0).unwrap();
    let mut bad = release(&data, 0.0, &mut ChaCha20Rng::seed_from_u64(0));
    bad.negative.pop();
    assert_eq!(
        evaluate_binary(&bad, &config),
        Err(EvaluationError::HistogramShape {
            positive: BUCKETS,
            negative: BUCKETS - 1
        })
    );
    let mut bad = release(&data, 0.0, &mut ChaCha20Rng::seed_from_u64(0));
    bad.positive[3].noise_standard_deviation = -1.0;
    assert_eq!(
        evaluate_binary(&bad, &config),
        Err(EvaluationError::InvalidValue {
            field: "positive[3].noise_standard_deviation".to_owned(),
            value: -1.0
        })
    );
    let mut bad = release(&data, 0.0, &mut ChaCha20Rng::seed_from_u64(0));
    for value in &mut bad.positive {
        value.value = -2.0;
    }
    assert!(
        matches!(evaluate_binary(&bad, &config), Err(EvaluationError::OneClass { positives, .. }) if positives == 0.0)
    );
    let mut bad = release(&data, 0.0, &mut ChaCha20Rng::seed_from_u64(0));
    bad.count.value = f64::NAN;
    assert!(
        matches!(evaluate_binary(&bad, &config), Err(EvaluationError::InvalidValue { field, .. }) if field == "count.value")
    );
}
