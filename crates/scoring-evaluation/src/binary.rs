//! Metrics of a binary scoring model from its score histograms: one count of
//! positive and one of negative examples per equal-width score bucket over
//! [0, 1], lowest scores first, as `veil_models::EvalStats` keeps them and a
//! job releases them.
//!
//! A histogram forgets the order of examples inside a bucket. Thresholds are
//! therefore the bucket edges, where the histogram is exact (the ROC and PR
//! points, the calibration rates). Wherever a cut falls inside a bucket (the
//! top 10% of customers), the bucket's positives are taken as spread evenly
//! through it, as if its scores were tied: the error is then at most that
//! bucket's share of the positives. The AUC counts a positive and a negative
//! in the same bucket as half a win, as ties.
//!
//! Noisy counts can be negative. The AUC is computed from the counts as
//! released; every other metric from counts made consistent by
//! `monotone_at_or_above` (never a negative count, totals nearly unbiased).

use serde::{Deserialize, Serialize};

use crate::EvaluationError;
use crate::interval::{Estimate, Flat, IntervalConfig, NON_NEGATIVE, NoisyValue, UNIT, bootstrap};

/// The top fractions of customers, in percent, at which precision and recall
/// are reported.
pub const TOP_PERCENTS: [u32; 4] = [1, 5, 10, 20];

/// Points of the cumulative gains curve: every whole percent of customers.
const GAINS_STEPS: usize = 100;

/// Deciles of customers by score.
const DECILES: usize = 10;

/// What a job releases about a binary model's final evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BinaryRelease {
    /// Positive examples per score bucket, equal-width buckets over [0, 1],
    /// lowest first.
    pub positive: Vec<NoisyValue>,
    /// Negative examples per score bucket, as `positive`.
    pub negative: Vec<NoisyValue>,
    /// Examples evaluated.
    pub count: NoisyValue,
    /// Sum over examples of (predicted probability − label)².
    pub squared_error_sum: NoisyValue,
}

/// A point of the ROC curve: the rates when every customer scoring at least
/// `threshold` is called positive.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RocPoint {
    /// Score threshold (a bucket edge).
    pub threshold: f64,
    /// Share of negatives called positive.
    pub false_positive_rate: Estimate,
    /// Share of positives called positive (recall).
    pub true_positive_rate: Estimate,
}

/// A point of the precision-recall curve at a score threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PrecisionRecallPoint {
    /// Score threshold (a bucket edge).
    pub threshold: f64,
    /// Share of positives at or above the threshold.
    pub recall: Estimate,
    /// Share of customers at or above the threshold that are positive.
    pub precision: Estimate,
}

/// A point of the cumulative gains curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GainsPoint {
    /// Share of customers targeted, highest scores first.
    pub population_fraction: f64,
    /// Share of all positives among them.
    pub gain: Estimate,
}

/// One decile of customers by score, highest scores in decile 1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Decile {
    /// 1 to 10.
    pub decile: u32,
    /// Share of this decile's customers that are positive.
    pub response_rate: Estimate,
    /// `response_rate` over the overall positive rate.
    pub lift: Estimate,
    /// Share of all positives in deciles 1 to this one.
    pub cumulative_gain: Estimate,
    /// Positive rate of deciles 1 to this one over the overall rate.
    pub cumulative_lift: Estimate,
}

/// Precision and recall when the top `percent`% of customers by score are
/// targeted.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TopPercent {
    /// Share of customers targeted, in percent.
    pub percent: u32,
    /// Share of the targeted customers that are positive.
    pub precision: Estimate,
    /// Share of all positives that are targeted.
    pub recall: Estimate,
}

/// One bucket of the reliability (calibration) curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CalibrationBin {
    /// Lowest score of the bucket.
    pub lower_score: f64,
    /// Highest score of the bucket (exclusive but for the last).
    pub upper_score: f64,
    /// The predicted probability the bucket stands for: its midpoint, because
    /// the release carries counts, not the scores' sum.
    pub mean_predicted: f64,
    /// Share of the bucket's customers that are positive.
    pub observed_rate: Estimate,
    /// Customers in the bucket.
    pub count: Estimate,
}

/// Everything a marketer reads about a binary scoring model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BinaryEvaluation {
    /// How the intervals were computed.
    pub intervals: IntervalConfig,
    /// Positive examples.
    pub positives: Estimate,
    /// Negative examples.
    pub negatives: Estimate,
    /// Area under the ROC curve.
    pub auc: Estimate,
    /// Average precision (scikit-learn's step-wise area under the PR curve).
    pub average_precision: Estimate,
    /// Mean squared difference between predicted probability and label.
    pub brier_score: Estimate,
    /// From threshold 1 (nothing called positive) down to 0 (everything).
    pub roc: Vec<RocPoint>,
    /// From the highest threshold down; thresholds that call no customer
    /// positive are left out.
    pub precision_recall: Vec<PrecisionRecallPoint>,
    /// At every whole percent of customers, 0% to 100%.
    pub gains: Vec<GainsPoint>,
    /// Deciles 1 (highest scores) to 10.
    pub deciles: Vec<Decile>,
    /// At [`TOP_PERCENTS`].
    pub top_percents: Vec<TopPercent>,
    /// Buckets whose customer count is at least twice its noise deviation
    /// (and at least one); the others are too noisy to place.
    pub calibration: Vec<CalibrationBin>,
}

/// AUC from score histograms (a positive and a negative in the same bucket
/// count half a win, as tied scores). `None` if the histograms differ in
/// length, a count is negative or a class is missing.
pub fn histogram_auc(positive: &[f64], negative: &[f64]) -> Option<f64> {
    if positive.len() != negative.len() || positive.iter().chain(negative).any(|c| *c < 0.0) {
        return None;
    }
    let auc = mann_whitney_auc(positive, negative);
    auc.is_finite().then_some(auc)
}

/// Mann-Whitney AUC of score histograms, ties within a bucket counting half;
/// not finite unless both classes have a positive total.
///
/// It is computed from the counts as given, even negative noisy ones: it is a
/// ratio of bilinear forms in independent counts, so noise leaves it nearly
/// unbiased, whereas any zero-clamping of near-empty end buckets biases it
/// downwards (measured: 90% intervals covered the truth 86% of the time on
/// clamped counts, 90% on these).
fn mann_whitney_auc(positive: &[f64], negative: &[f64]) -> f64 {
    // Walking buckets upwards, each positive beats every negative in a lower
    // bucket and ties with those in its own bucket.
    let mut negatives_below = 0.0;
    let mut winning_pairs = 0.0;
    for (positive, negative) in positive.iter().zip(negative) {
        winning_pairs += positive * (negatives_below + 0.5 * negative);
        negatives_below += negative;
    }
    let pairs = positive.iter().sum::<f64>() * negatives_below;
    if pairs > 0.0 {
        winning_pairs / pairs
    } else {
        f64::NAN
    }
}

/// Evaluates a binary model's release, with intervals from `intervals`.
pub fn evaluate_binary(
    release: &BinaryRelease,
    intervals: &IntervalConfig,
) -> Result<BinaryEvaluation, EvaluationError> {
    let buckets = release.positive.len();
    if buckets == 0 || release.negative.len() != buckets {
        return Err(EvaluationError::HistogramShape {
            positive: buckets,
            negative: release.negative.len(),
        });
    }
    let mut released = Vec::with_capacity(2 * buckets + 2);
    for (name, values) in [
        ("positive", &release.positive),
        ("negative", &release.negative),
    ] {
        for (index, value) in values.iter().enumerate() {
            value.check(|| format!("{name}[{index}]"))?;
            released.push(*value);
        }
    }
    release.count.check(|| "count".to_owned())?;
    release
        .squared_error_sum
        .check(|| "squared_error_sum".to_owned())?;
    released.extend([release.count, release.squared_error_sum]);

    let metrics = |values: &[f64]| {
        let (positive, rest) = values.split_at(buckets);
        let (negative, scalars) = rest.split_at(buckets);
        let counts = Counts::new(positive, negative);
        let (count, squared_error_sum) = (scalars[0], scalars[1]);
        counts.flatten(squared_error_sum.max(0.0) / count)
    };
    let observed: Vec<f64> = released.iter().map(|value| value.value).collect();
    let point = Counts::new(&observed[..buckets], &observed[buckets..2 * buckets]);
    if !(point.positives > 0.0 && point.negatives > 0.0) {
        return Err(EvaluationError::OneClass {
            positives: point.positives,
            negatives: point.negatives,
        });
    }
    if release.count.value <= 0.0 {
        return Err(EvaluationError::NoExamples(release.count.value));
    }
    let estimates = bootstrap(&released, metrics, intervals);
    let count_deviations: Vec<f64> = release
        .positive
        .iter()
        .zip(&release.negative)
        .map(|(positive, negative)| {
            positive
                .noise_standard_deviation
                .hypot(negative.noise_standard_deviation)
        })
        .collect();
    Ok(assemble(buckets, &estimates, &count_deviations, *intervals))
}

/// Plain counts, negatives read as zero, with their cumulative sums from the
/// top bucket down.
struct Counts {
    positive: Vec<f64>,
    negative: Vec<f64>,
    /// `positive_at_or_above[j]`: positives in buckets `j..`, for `j` in `0..=B`.
    positive_at_or_above: Vec<f64>,
    /// As `positive_at_or_above`, for negatives.
    negative_at_or_above: Vec<f64>,
    positives: f64,
    negatives: f64,
    /// From the counts as released (see [`mann_whitney_auc`]).
    auc: f64,
}

impl Counts {
    fn new(positive: &[f64], negative: &[f64]) -> Self {
        let auc = mann_whitney_auc(positive, negative);
        let positive_at_or_above = monotone_at_or_above(positive);
        let negative_at_or_above = monotone_at_or_above(negative);
        let per_bucket =
            |sums: &[f64]| -> Vec<f64> { sums.windows(2).map(|pair| pair[0] - pair[1]).collect() };
        let positive = per_bucket(&positive_at_or_above);
        let negative = per_bucket(&negative_at_or_above);
        Self {
            positives: positive_at_or_above[0],
            negatives: negative_at_or_above[0],
            positive,
            negative,
            positive_at_or_above,
            negative_at_or_above,
            auc,
        }
    }

    fn buckets(&self) -> usize {
        self.positive.len()
    }

    /// Precision when buckets `threshold_bucket..` are called positive; NaN
    /// when they hold no customer.
    fn precision_at(&self, threshold_bucket: usize) -> f64 {
        let called = self.positive_at_or_above[threshold_bucket]
            + self.negative_at_or_above[threshold_bucket];
        if called > 0.0 {
            self.positive_at_or_above[threshold_bucket] / called
        } else {
            f64::NAN
        }
    }

    /// scikit-learn's average precision: recall steps times precision, from
    /// the highest threshold down.
    fn average_precision(&self) -> f64 {
        (0..self.buckets())
            .map(|bucket| {
                let recall_step = self.positive[bucket] / self.positives;
                if recall_step > 0.0 {
                    recall_step * self.precision_at(bucket)
                } else {
                    0.0
                }
            })
            .sum()
    }

    /// Share of positives among the `fraction` of customers with the highest
    /// scores; positives spread evenly within the bucket the cut falls in.
    fn gain(&self, fraction: f64) -> f64 {
        let mut wanted = fraction * (self.positives + self.negatives);
        let mut captured = 0.0;
        for bucket in (0..self.buckets()).rev() {
            let customers = self.positive[bucket] + self.negative[bucket];
            if customers <= 0.0 {
                continue;
            }
            if customers >= wanted {
                captured += self.positive[bucket] * wanted / customers;
                break;
            }
            captured += self.positive[bucket];
            wanted -= customers;
        }
        (captured / self.positives).min(1.0)
    }

    /// Every metric, in the order [`assemble`] reads them.
    fn flatten(&self, brier_score: f64) -> Flat {
        let buckets = self.buckets();
        let mut flat = Flat::default();
        flat.push(self.positives, NON_NEGATIVE);
        flat.push(self.negatives, NON_NEGATIVE);
        flat.push(self.auc, UNIT);
        flat.push(self.average_precision(), UNIT);
        flat.push(brier_score, UNIT);
        for threshold_bucket in (0..=buckets).rev() {
            flat.push(
                self.negative_at_or_above[threshold_bucket] / self.negatives,
                UNIT,
            );
            flat.push(
                self.positive_at_or_above[threshold_bucket] / self.positives,
                UNIT,
            );
        }
        for threshold_bucket in (0..buckets).rev() {
            flat.push(
                self.positive_at_or_above[threshold_bucket] / self.positives,
                UNIT,
            );
            flat.push(self.precision_at(threshold_bucket), UNIT);
        }
        let gains: Vec<f64> = (0..=GAINS_STEPS)
            .map(|step| self.gain(step as f64 / GAINS_STEPS as f64))
            .collect();
        for gain in &gains {
            flat.push(*gain, UNIT);
        }
        let base_rate = self.positives / (self.positives + self.negatives);
        let per_decile = GAINS_STEPS / DECILES;
        for decile in 1..=DECILES {
            let cumulative = gains[decile * per_decile];
            let within = cumulative - gains[(decile - 1) * per_decile];
            let lift = within * DECILES as f64;
            flat.push(lift * base_rate, UNIT);
            flat.push(lift, NON_NEGATIVE);
            flat.push(cumulative, UNIT);
            flat.push(cumulative * DECILES as f64 / decile as f64, NON_NEGATIVE);
        }
        for percent in TOP_PERCENTS {
            let recall = self.gain(f64::from(percent) / 100.0);
            flat.push(recall * base_rate * 100.0 / f64::from(percent), UNIT);
            flat.push(recall, UNIT);
        }
        for bucket in 0..buckets {
            let customers = self.positive[bucket] + self.negative[bucket];
            let rate = if customers > 0.0 {
                self.positive[bucket] / customers
            } else {
                f64::NAN
            };
            flat.push(rate, UNIT);
            flat.push(customers, NON_NEGATIVE);
        }
        flat
    }
}

/// Counts at or above each bucket, from the top bucket down, made
/// non-decreasing: `sums[j]` for `j` in `0..=B`, `sums[B] = 0`.
///
/// Noise can make a bucket's count negative. Clamping each bucket at zero
/// would add about 0.4 noise deviations to every near-empty bucket, a bias
/// that accumulates over the many near-empty buckets at a score range's ends
/// (positives at low scores, negatives at high). Instead the cumulative
/// counts are clamped to never fall: a negative bucket then cancels against
/// the buckets just below it, so counts move between neighbouring buckets but
/// the totals stay nearly unbiased.
fn monotone_at_or_above(counts: &[f64]) -> Vec<f64> {
    let mut sums = vec![0.0; counts.len() + 1];
    let mut raw = 0.0;
    for index in (0..counts.len()).rev() {
        raw += counts[index];
        sums[index] = raw.max(sums[index + 1]);
    }
    sums
}

/// Builds the evaluation from the estimates in [`Counts::flatten`]'s order.
fn assemble(
    buckets: usize,
    estimates: &[Estimate],
    count_deviations: &[f64],
    intervals: IntervalConfig,
) -> BinaryEvaluation {
    let mut next = estimates.iter().copied();
    let mut take = || {
        next.next().unwrap_or(Estimate {
            value: f64::NAN,
            lower: f64::NAN,
            upper: f64::NAN,
        })
    };
    let width = 1.0 / buckets as f64;
    let positives = take();
    let negatives = take();
    let auc = take();
    let average_precision = take();
    let brier_score = take();
    let roc = (0..=buckets)
        .rev()
        .map(|threshold_bucket| RocPoint {
            threshold: threshold_bucket as f64 * width,
            false_positive_rate: take(),
            true_positive_rate: take(),
        })
        .collect();
    let precision_recall = (0..buckets)
        .rev()
        .map(|threshold_bucket| PrecisionRecallPoint {
            threshold: threshold_bucket as f64 * width,
            recall: take(),
            precision: take(),
        })
        .filter(|point| point.precision.value.is_finite())
        .collect();
    let gains = (0..=GAINS_STEPS)
        .map(|step| GainsPoint {
            population_fraction: step as f64 / GAINS_STEPS as f64,
            gain: take(),
        })
        .collect();
    let deciles = (1..=DECILES as u32)
        .map(|decile| Decile {
            decile,
            response_rate: take(),
            lift: take(),
            cumulative_gain: take(),
            cumulative_lift: take(),
        })
        .collect();
    let top_percents = TOP_PERCENTS
        .iter()
        .map(|percent| TopPercent {
            percent: *percent,
            precision: take(),
            recall: take(),
        })
        .collect();
    let calibration = (0..buckets)
        .map(|bucket| {
            let lower_score = bucket as f64 * width;
            CalibrationBin {
                lower_score,
                upper_score: lower_score + width,
                mean_predicted: lower_score + width / 2.0,
                observed_rate: take(),
                count: take(),
            }
        })
        .zip(count_deviations)
        .filter(|(bin, deviation)| {
            bin.observed_rate.value.is_finite() && bin.count.value >= (2.0 * **deviation).max(1.0)
        })
        .map(|(bin, _)| bin)
        .collect();
    BinaryEvaluation {
        intervals,
        positives,
        negatives,
        auc,
        average_precision,
        brier_score,
        roc,
        precision_recall,
        gains,
        deciles,
        top_percents,
        calibration,
    }
}
