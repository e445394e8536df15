//! The histogram path against scikit-learn on the same rows, from the table
//! `reference/generate_reference.py` wrote (`reference/sklearn_reference.json`).

mod common;

use common::{BUCKETS, Scored, bucket_of, histograms};
use serde::Deserialize;
use veil_scoring_evaluation::{
    BinaryEvaluation, BinaryRelease, IntervalConfig, NoisyValue, evaluate_binary,
};

#[derive(Deserialize)]
struct Table {
    buckets: usize,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    scores: Vec<f64>,
    labels: Vec<u8>,
    roc_auc_score: f64,
    average_precision: f64,
    brier_score_loss: f64,
    calibration_curve: Calibration,
    roc_curve: Option<Roc>,
    precision_recall_curve: Option<PrecisionRecall>,
}

#[derive(Deserialize)]
struct Calibration {
    prob_true: Vec<f64>,
    prob_pred: Vec<f64>,
}

#[derive(Deserialize)]
struct Roc {
    thresholds: Vec<f64>,
    false_positive_rate: Vec<f64>,
    true_positive_rate: Vec<f64>,
}

#[derive(Deserialize)]
struct PrecisionRecall {
    thresholds: Vec<f64>,
    precision: Vec<f64>,
    recall: Vec<f64>,
}

/// Differences of summation order between numpy and Rust.
const ROUNDING: f64 = 1e-12;

fn table() -> Table {
    serde_json::from_str(include_str!("../reference/sklearn_reference.json")).unwrap()
}

fn evaluate(data: &[Scored]) -> BinaryEvaluation {
    let (positive, negative) = histograms(data);
    let squared_error_sum: f64 = data
        .iter()
        .map(|c| (c.score - f64::from(u8::from(c.positive))).powi(2))
        .sum();
    let release = BinaryRelease {
        positive: positive.into_iter().map(NoisyValue::exact).collect(),
        negative: negative.into_iter().map(NoisyValue::exact).collect(),
        count: NoisyValue::exact(data.len() as f64),
        squared_error_sum: NoisyValue::exact(squared_error_sum),
    };
    evaluate_binary(&release, &IntervalConfig::new(0.9, 100, 0).unwrap()).unwrap()
}

fn close(actual: f64, expected: f64, tolerance: f64, what: &str) {
    assert!(
        (actual - expected).abs() <= tolerance,
        "{what}: veil {actual}, scikit-learn {expected} (tolerance {tolerance})"
    );
}

/// The most average precision can move when the order inside each bucket is
/// forgotten: per bucket, its positives' share times the gap between the
/// best precision one of them can have (the bucket's positives ranked ahead
/// of its negatives) and the bucket's precision at its lower edge.
fn average_precision_resolution(positive: &[f64], negative: &[f64]) -> f64 {
    let positives: f64 = positive.iter().sum();
    let (mut positive_above, mut called_above) = (0.0, 0.0);
    let mut bound = 0.0;
    for bucket in (0..positive.len()).rev() {
        let (p, n) = (positive[bucket], negative[bucket]);
        if p > 0.0 {
            let best = (positive_above + p) / (called_above + p);
            let at_edge = (positive_above + p) / (called_above + p + n);
            bound += p / positives * (best - at_edge);
        }
        positive_above += p;
        called_above += p + n;
    }
    bound
}

/// The released histogram's bucket of a threshold scikit-learn reports, for
/// the midpoints case (every score is a bucket midpoint).
fn bucket_of_midpoint(threshold: f64) -> usize {
    (threshold * BUCKETS as f64 - 0.5).round() as usize
}

#[test]
fn every_case_matches_scikit_learn() {
    let table = table();
    assert_eq!(table.buckets, BUCKETS);
    assert_eq!(table.cases.len(), 3);
    for case in &table.cases {
        let data: Vec<Scored> = case
            .scores
            .iter()
            .zip(&case.labels)
            .map(|(score, label)| Scored {
                score: *score,
                positive: *label == 1,
            })
            .collect();
        let evaluation = evaluate(&data);
        let name = case.name.as_str();
        let exact = name == "midpoints";
        let (positive, negative) = histograms(&data);
        let positives: f64 = positive.iter().sum();
        let negatives: f64 = negative.iter().sum();

        // AUC: exact when scores are bucket midpoints (ties are then real
        // ties), otherwise within half the pairs tied inside a bucket.
        let tied: f64 = positive.iter().zip(&negative).map(|(p, n)| p * n).sum();
        let auc_tolerance = if exact {
            ROUNDING
        } else {
            0.5 * tied / (positives * negatives)
        };
        close(
            evaluation.auc.value,
            case.roc_auc_score,
            auc_tolerance,
            &format!("{name} AUC"),
        );

        // Average precision: exact at midpoints; otherwise each positive takes
        // its bucket's precision (all of the bucket called positive) instead
        // of its own, which at best has the bucket's positives ranked first.
        let ap_tolerance = if exact {
            ROUNDING
        } else {
            average_precision_resolution(&positive, &negative)
        };
        close(
            evaluation.average_precision.value,
            case.average_precision,
            ap_tolerance,
            &format!("{name} average precision"),
        );

        // Brier score: from the released squared-error sum, exact.
        close(
            evaluation.brier_score.value,
            case.brier_score_loss,
            ROUNDING,
            &format!("{name} Brier"),
        );

        // Calibration: scikit-learn's uniform 20 bins are the released
        // buckets, so the observed rates are exact; its predicted value is
        // the bin's mean score, ours the midpoint (half a bucket at most).
        let curve = &case.calibration_curve;
        assert_eq!(
            evaluation.calibration.len(),
            curve.prob_true.len(),
            "{name} calibration bins"
        );
        for ((bin, prob_true), prob_pred) in evaluation
            .calibration
            .iter()
            .zip(&curve.prob_true)
            .zip(&curve.prob_pred)
        {
            close(
                bin.observed_rate.value,
                *prob_true,
                ROUNDING,
                &format!("{name} calibration rate"),
            );
            let predicted_tolerance = if exact {
                ROUNDING
            } else {
                0.5 / BUCKETS as f64
            };
            close(
                bin.mean_predicted,
                *prob_pred,
                predicted_tolerance,
                &format!("{name} calibration predicted"),
            );
        }

        if let Some(roc) = &case.roc_curve {
            for ((threshold, fpr), tpr) in roc
                .thresholds
                .iter()
                .zip(&roc.false_positive_rate)
                .zip(&roc.true_positive_rate)
            {
                // Threshold 2 stands for scikit-learn's +inf: nothing called positive.
                let edge = if *threshold > 1.0 {
                    1.0
                } else {
                    bucket_of_midpoint(*threshold) as f64 / BUCKETS as f64
                };
                let point = evaluation
                    .roc
                    .iter()
                    .find(|p| (p.threshold - edge).abs() < 1e-9)
                    .unwrap();
                close(
                    point.false_positive_rate.value,
                    *fpr,
                    ROUNDING,
                    &format!("FPR at {threshold}"),
                );
                close(
                    point.true_positive_rate.value,
                    *tpr,
                    ROUNDING,
                    &format!("TPR at {threshold}"),
                );
            }
        }
        if let Some(pr) = &case.precision_recall_curve {
            assert!(!pr.thresholds.is_empty());
            for ((threshold, precision), recall) in
                pr.thresholds.iter().zip(&pr.precision).zip(&pr.recall)
            {
                let edge = bucket_of_midpoint(*threshold) as f64 / BUCKETS as f64;
                let point = evaluation
                    .precision_recall
                    .iter()
                    .find(|p| (p.threshold - edge).abs() < 1e-9)
                    .unwrap();
                close(
                    point.precision.value,
                    *precision,
                    ROUNDING,
                    &format!("precision at {threshold}"),
                );
                close(
                    point.recall.value,
                    *recall,
                    ROUNDING,
                    &format!("recall at {threshold}"),
                );
            }
        }
        assert!(data.iter().all(|c| bucket_of(c.score) < BUCKETS));
    }
}
