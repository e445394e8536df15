//! Shared test data and the direct computations on raw scores that the
//! histogram path is checked against.

#![allow(dead_code)]

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use veil_dp_noise::Gaussian;
use veil_scoring_evaluation::{BinaryRelease, NoisyValue};

/// Buckets of the released histogram (1000 buckets merged by 50).
pub const BUCKETS: usize = 20;

/// One held-out customer: predicted probability and label.
#[derive(Debug, Clone, Copy)]
pub struct Scored {
    pub score: f64,
    pub positive: bool,
}

/// `n` customers with roughly `positive_rate` positives; scores a logistic of
/// a normal shifted by `separation` for positives.
pub fn customers(seed: u64, n: usize, positive_rate: f64, separation: f64) -> Vec<Scored> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let normal = Gaussian::new(1.0).unwrap();
    (0..n)
        .map(|_| {
            let positive = (rng.next_u64() as f64 / u64::MAX as f64) < positive_rate;
            let logit = normal.sample(&mut rng) + if positive { separation } else { 0.0 } - 1.0;
            Scored {
                score: 1.0 / (1.0 + (-logit).exp()),
                positive,
            }
        })
        .collect()
}

/// The bucket `veil_models::EvalStats` puts a score in, at `BUCKETS` buckets.
pub fn bucket_of(score: f64) -> usize {
    ((score * BUCKETS as f64) as usize).min(BUCKETS - 1)
}

/// Noise-free positive and negative histograms.
pub fn histograms(data: &[Scored]) -> (Vec<f64>, Vec<f64>) {
    let mut positive = vec![0.0; BUCKETS];
    let mut negative = vec![0.0; BUCKETS];
    for customer in data {
        let histogram = if customer.positive {
            &mut positive
        } else {
            &mut negative
        };
        histogram[bucket_of(customer.score)] += 1.0;
    }
    (positive, negative)
}

/// Sum of (score − label)².
pub fn squared_error_sum(data: &[Scored]) -> f64 {
    data.iter()
        .map(|c| (c.score - if c.positive { 1.0 } else { 0.0 }).powi(2))
        .sum()
}

/// The release of `data`, each value with noise of deviation `deviation`
/// drawn from `rng` (none when `deviation` is 0).
pub fn release(data: &[Scored], deviation: f64, rng: &mut ChaCha20Rng) -> BinaryRelease {
    let normal = Gaussian::new(1.0).unwrap();
    let mut noisy = |value: f64| NoisyValue {
        value: if deviation > 0.0 {
            value + deviation * normal.sample(rng)
        } else {
            value
        },
        noise_standard_deviation: deviation,
    };
    let (positive, negative) = histograms(data);
    BinaryRelease {
        positive: positive.into_iter().map(&mut noisy).collect(),
        negative: negative.into_iter().map(&mut noisy).collect(),
        count: noisy(data.len() as f64),
        squared_error_sum: noisy(squared_error_sum(data)),
    }
}

/// Direct computations on the raw scores.
pub struct Direct {
    /// Highest scores first.
    sorted: Vec<Scored>,
    pub positives: f64,
    pub negatives: f64,
}

impl Direct {
    pub fn new(data: &[Scored]) -> Self {
        let mut sorted = data.to_vec();
        sorted.sort_by(|a, b| b.score.total_cmp(&a.score));
        let positives = data.iter().filter(|c| c.positive).count() as f64;
        Self {
            positives,
            negatives: data.len() as f64 - positives,
            sorted,
        }
    }

    /// (false positive rate, true positive rate) calling scores ≥ threshold positive.
    pub fn rates_at(&self, threshold: f64) -> (f64, f64) {
        let called = self.sorted.iter().filter(|c| c.score >= threshold);
        let (mut tp, mut fp) = (0.0, 0.0);
        for customer in called {
            if customer.positive {
                tp += 1.0
            } else {
                fp += 1.0
            }
        }
        (fp / self.negatives, tp / self.positives)
    }

    /// Precision calling scores ≥ threshold positive.
    pub fn precision_at(&self, threshold: f64) -> f64 {
        let called: Vec<&Scored> = self
            .sorted
            .iter()
            .filter(|c| c.score >= threshold)
            .collect();
        called.iter().filter(|c| c.positive).count() as f64 / called.len() as f64
    }

    /// Positives among the top `fraction` of customers (fractional customer at the cut).
    pub fn captured(&self, fraction: f64) -> f64 {
        let wanted = fraction * self.sorted.len() as f64;
        let whole = wanted.floor() as usize;
        let mut captured = self.sorted[..whole.min(self.sorted.len())]
            .iter()
            .filter(|c| c.positive)
            .count() as f64;
        if let Some(next) = self.sorted.get(whole)
            && next.positive
        {
            captured += wanted - whole as f64;
        }
        captured
    }

    /// The histogram's resolution at a cut through the top `fraction`: the
    /// positives of the bucket(s) the cut falls in, which the histogram
    /// spreads evenly and the direct computation orders.
    pub fn positives_in_cut_buckets(&self, fraction: f64, positive_histogram: &[f64]) -> f64 {
        let wanted = (fraction * self.sorted.len() as f64).floor() as usize;
        let mut buckets: Vec<usize> = [wanted.saturating_sub(1), wanted]
            .iter()
            .filter_map(|index| self.sorted.get(*index))
            .map(|c| bucket_of(c.score))
            .collect();
        buckets.dedup();
        buckets
            .iter()
            .map(|bucket| positive_histogram[*bucket])
            .sum()
    }

    /// Mean score and positive rate of the customers in `bucket`.
    pub fn bucket_means(&self, bucket: usize) -> Option<(f64, f64)> {
        let members: Vec<&Scored> = self
            .sorted
            .iter()
            .filter(|c| bucket_of(c.score) == bucket)
            .collect();
        if members.is_empty() {
            return None;
        }
        let n = members.len() as f64;
        Some((
            members.iter().map(|c| c.score).sum::<f64>() / n,
            members.iter().filter(|c| c.positive).count() as f64 / n,
        ))
    }
}
