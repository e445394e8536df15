//! The federated route: each node bins its customers' summaries into a public
//! histogram of integer counts (an additive vector for secure aggregation),
//! optionally adds discrete Gaussian noise, and the coordinator fits BG/NBD and
//! Gamma-Gamma to the aggregate, scoring each bin at its representative
//! customer. The privacy argument is in the crate documentation
//! (`docs/sensitivity.md`).

use rand_core::CryptoRng;
use veil_dp_noise::DiscreteGaussian;

use crate::bg_nbd::{BgNbdParameters, PurchaseGroup, RecencyAge, fit_groups};
use crate::error::LifetimeValueError;
use crate::gamma_gamma::{GammaGammaParameters, SpendGroup, fit_spend_groups};
use crate::grouped::{Cell, Group, Prior};
use crate::summary::CustomerSummary;

/// ℓ1 sensitivity of [`local_histogram`] under add/remove adjacency: one
/// customer adds 1 to one purchase bin and, with a repeat purchase, 1 to one
/// spend bin.
pub const HISTOGRAM_L1_SENSITIVITY: f64 = 2.0;

/// ℓ2 sensitivity of [`local_histogram`] under add/remove adjacency: `√2`
/// (two entries change by 1).
pub const HISTOGRAM_L2_SENSITIVITY: f64 = std::f64::consts::SQRT_2;

/// The histogram fit's prior (see [`Prior`]): a binned, possibly noised
/// histogram is where the likelihood can peak at infinity.
const HISTOGRAM_PRIOR: Prior = Prior::LogNormal { scale: 5.0 };

/// Quadrature points per spend bin: the Gamma-Gamma density is smooth in
/// log-spend, and 8 midpoints make the rule's error negligible next to the
/// information the binning removes.
const SPEND_QUADRATURE_POINTS: usize = 8;

/// The public binning of the histogram. It must be fixed before any data is
/// seen (for example from the job's calibration window and currency), because
/// a data-dependent binning would leak through its edges.
#[derive(Debug, Clone, PartialEq)]
pub struct BinningConfig {
    /// Width of every age (`T`) and recency (`t_x`) bin, in days.
    pub day_bin_width: u32,
    /// The oldest age the bins describe, in days: the length of the
    /// calibration window. The last bin ends here (it may be narrower than
    /// the others), and older customers are counted in it.
    pub max_age_days: u32,
    /// Lower edges of the repeat-purchase buckets: `0, 1, ...` strictly
    /// increasing. Bucket `k` holds `edges[k] ≤ x < edges[k+1]`; the last edge
    /// is a cap, and every `x` at or above it is counted as that edge.
    pub frequency_edges: Vec<u32>,
    /// Edges of the mean-spend bins, positive and strictly increasing (`n + 1`
    /// edges for `n` bins); spend below the first or above the last edge falls
    /// in the first or last bin and is scored as if it were inside it, so the
    /// range should cover the plausible means.
    pub spend_edges: Vec<f64>,
}

impl BinningConfig {
    /// The binning that loses nothing: one-day bins up to `max_age_days` and
    /// every repeat count up to `max_frequency` its own bucket, so the
    /// purchase part of the histogram is exactly the multiset of `(x, t_x, T)`
    /// and a fit on it equals the per-customer fit (the spend part still bins
    /// spend into `spend_edges`). Meant for federation without noise: with
    /// noise, its many sparse bins are the wrong choice.
    pub fn lossless(max_age_days: u32, max_frequency: u32, spend_edges: Vec<f64>) -> Self {
        Self {
            day_bin_width: 1,
            max_age_days,
            frequency_edges: (0..=max_frequency).collect(),
            spend_edges,
        }
    }

    /// The binning the crate's tests measure (see the crate docs for its
    /// costs) for a calibration window of `window_days` days and mean spends
    /// between `min_spend` and `max_spend`: 14 age and recency bins covering
    /// the window, repeat counts exact to 8 then in buckets
    /// 8–9, 10–12, 13–16, 17–22, 23–29, 30–39, 40–59, 60–99 and a cap at 100,
    /// and 30 log-spaced spend bins. About 2,200 entries: meant for releases
    /// of at least some tens of thousands of customers.
    pub fn recommended(window_days: u32, min_spend: f64, max_spend: f64) -> Self {
        const AGE_BINS: u32 = 14;
        Self {
            day_bin_width: window_days.saturating_add(1).div_ceil(AGE_BINS).max(1),
            max_age_days: window_days,
            frequency_edges: vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 13, 17, 23, 30, 40, 60, 100],
            spend_edges: Self::log_spaced_spend_edges(min_spend, max_spend, 30),
        }
    }

    /// Log-spaced spend edges: `bins` bins from `min` to `max`, each the same
    /// ratio wide.
    pub fn log_spaced_spend_edges(min: f64, max: f64, bins: u32) -> Vec<f64> {
        let ratio = (max / min).ln() / f64::from(bins.max(1));
        (0..=bins.max(1))
            .map(|edge| min * (ratio * f64::from(edge)).exp())
            .collect()
    }
}

/// A validated [`BinningConfig`] with the layout of the histogram vector:
/// first the purchase part (`x = 0` by age bin, then for each bucket of
/// `x ≥ 1` every (age bin, recency bin ≤ age bin) pair), then the spend part
/// (for each bucket of `x ≥ 1`, every spend bin).
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramBinning {
    /// The public choices it was built from.
    config: BinningConfig,
    /// Age (and recency) bins: enough `day_bin_width` bins to reach
    /// `max_age_days`.
    age_bins: usize,
    /// Entries of the purchase part.
    purchase_len: usize,
    /// Age/recency pairs per repeat bucket: `n(n+1)/2` for `n` age bins.
    pairs_per_bucket: usize,
}

impl HistogramBinning {
    /// Checks the config describes a partition and computes the layout.
    pub fn new(config: BinningConfig) -> Result<Self, LifetimeValueError> {
        let invalid = |reason| Err(LifetimeValueError::InvalidBinning(reason));
        if config.day_bin_width == 0 {
            return invalid("day_bin_width must be at least 1");
        }
        if config.frequency_edges.len() < 2
            || config.frequency_edges[0] != 0
            || config.frequency_edges[1] != 1
        {
            return invalid("frequency_edges must start 0, 1");
        }
        if config
            .frequency_edges
            .windows(2)
            .any(|pair| pair[0] >= pair[1])
        {
            return invalid("frequency_edges must be strictly increasing");
        }
        if config.spend_edges.len() < 2
            || config
                .spend_edges
                .iter()
                .any(|edge| !(edge.is_finite() && *edge > 0.0))
            || config.spend_edges.windows(2).any(|pair| pair[0] >= pair[1])
        {
            return invalid("spend_edges must be at least two positive, finite, increasing edges");
        }
        let age_bins = (config.max_age_days / config.day_bin_width) as usize + 1;
        let pairs_per_bucket = age_bins * (age_bins + 1) / 2;
        let repeat_buckets = config.frequency_edges.len() - 1;
        let purchase_len = age_bins + repeat_buckets * pairs_per_bucket;
        let spend_len = repeat_buckets * (config.spend_edges.len() - 1);
        if purchase_len
            .checked_add(spend_len)
            .is_none_or(|len| len > 1 << 28)
        {
            return invalid("the histogram would have more than 2^28 entries");
        }
        Ok(Self {
            config,
            age_bins,
            purchase_len,
            pairs_per_bucket,
        })
    }

    /// The public choices.
    pub fn config(&self) -> &BinningConfig {
        &self.config
    }

    /// Entries of the histogram vector.
    pub fn len(&self) -> usize {
        self.purchase_len + self.repeat_buckets() * self.spend_bins()
    }

    /// Never true: a valid binning has at least one bin.
    pub fn is_empty(&self) -> bool {
        false
    }

    fn repeat_buckets(&self) -> usize {
        self.config.frequency_edges.len() - 1
    }

    fn spend_bins(&self) -> usize {
        self.config.spend_edges.len() - 1
    }

    fn day_bin(&self, days: u32) -> usize {
        ((days / self.config.day_bin_width) as usize).min(self.age_bins - 1)
    }

    /// Bucket of `x ≥ 1`, from 0 for the bucket starting at 1.
    fn repeat_bucket(&self, frequency: u32) -> usize {
        let edges = &self.config.frequency_edges;
        edges.partition_point(|&edge| edge <= frequency) - 2
    }

    fn spend_bin(&self, mean_spend: f64) -> usize {
        let edges = &self.config.spend_edges;
        edges
            .partition_point(|&edge| edge <= mean_spend)
            .saturating_sub(1)
            .min(self.spend_bins() - 1)
    }

    /// Index of the purchase bin and, with repeat purchases, the spend bin.
    fn bins_of(&self, summary: &CustomerSummary) -> (usize, Option<usize>) {
        let age_bin = self.day_bin(summary.age_days);
        if summary.frequency == 0 {
            return (age_bin, None);
        }
        let bucket = self.repeat_bucket(summary.frequency);
        let recency_bin = self.day_bin(summary.recency_days);
        let purchase = self.age_bins
            + bucket * self.pairs_per_bucket
            + age_bin * (age_bin + 1) / 2
            + recency_bin;
        let spend =
            self.purchase_len + bucket * self.spend_bins() + self.spend_bin(summary.mean_spend);
        (purchase, Some(spend))
    }

    /// The entries of each part of the histogram the fit treats as one
    /// sample: each age column of the purchase part (BG/NBD is conditional on
    /// a customer's age `T`) and each repeat bucket of the spend part
    /// (Gamma-Gamma is conditional on `x`). Together they cover every entry
    /// once.
    fn conditional_parts(&self) -> Vec<Vec<usize>> {
        let mut parts: Vec<Vec<usize>> = (0..self.age_bins).map(|age_bin| vec![age_bin]).collect();
        for bucket in 0..self.repeat_buckets() {
            let offset = self.age_bins + bucket * self.pairs_per_bucket;
            for (age_bin, part) in parts.iter_mut().enumerate() {
                let column = offset + age_bin * (age_bin + 1) / 2;
                part.extend(column..=column + age_bin);
            }
        }
        for bucket in 0..self.repeat_buckets() {
            let start = self.purchase_len + bucket * self.spend_bins();
            parts.push((start..start + self.spend_bins()).collect());
        }
        parts
    }

    /// The counts the fit weighs the bins by: in each of
    /// [`Self::conditional_parts`], the non-negative counts closest (in ℓ2)
    /// to the released ones with the same total (the released total, if
    /// positive; otherwise the part is empty). A histogram without negative
    /// counts, such as any noiseless one, is unchanged.
    fn consistent_counts(&self, aggregate: &[i64]) -> Vec<f64> {
        let mut counts = vec![0.0; aggregate.len()];
        for part in self.conditional_parts() {
            let mut values: Vec<f64> = part.iter().map(|&entry| aggregate[entry] as f64).collect();
            project_onto_nonnegative_with_sum(&mut values);
            for (&entry, value) in part.iter().zip(values) {
                counts[entry] = value;
            }
        }
        counts
    }

    /// The repeat counts bucket `bucket` (0 for `x = 1`) holds: its integers,
    /// or only the cap for the last bucket.
    fn bucket_frequencies(&self, bucket: usize) -> std::ops::Range<u32> {
        let edges = &self.config.frequency_edges;
        let low = edges[bucket + 1];
        low..edges.get(bucket + 2).copied().unwrap_or(low + 1)
    }

    /// The repeat count Gamma-Gamma scores a spend bin at: the mean of the
    /// bucket's integers (spend depends on `x` only smoothly).
    fn bucket_representative(&self, bucket: usize) -> f64 {
        let frequencies = self.bucket_frequencies(bucket);
        0.5 * (f64::from(frequencies.start) + f64::from(frequencies.end - 1))
    }

    /// The days of day bin `bin`; the last ends at `max_age_days` (older
    /// customers counted in it are scored as if they were that old).
    fn bin_days(&self, bin: usize) -> std::ops::Range<u32> {
        let width = self.config.day_bin_width;
        let start = bin as u32 * width;
        start..(start + width).min(self.config.max_age_days + 1)
    }

    /// The purchase bins as groups of the grouped BG/NBD likelihood, skipping
    /// empty ones. A bin of `x = 0` is scored at its middle age (the
    /// likelihood depends on `T` only smoothly, through `-r ln(α+T)`). A bin of
    /// `x ≥ 1` is the probability that the repeat count is one of the bucket's
    /// and the last purchase one of the recency bin's days: a sum over those
    /// `(x, t)` of the BG/NBD likelihood times `t^(x-1)/(x-1)!`, the volume of
    /// the earlier purchase times, averaged over the age bin's days `T ≥ t`
    /// (for many repeat purchases `(α+T)^-(r+x)` is far from linear across a
    /// bin, so a middle age would bias the dropout parameters). Sums over
    /// more than [`MAX_DAY_POINTS`] days use that many midpoints.
    fn purchase_groups(&self, histogram: &[f64]) -> Vec<PurchaseGroup> {
        let age_bins = self.age_bins;
        let middle = |bin: usize| {
            let days = self.bin_days(bin);
            0.5 * (f64::from(days.start) + f64::from(days.end - 1))
        };
        let mut groups = Vec::new();
        for (age_bin, &count) in histogram[..age_bins].iter().enumerate() {
            if count != 0.0 {
                groups.push(Group {
                    weight: count,
                    cells: vec![Cell::exact(
                        0.0,
                        RecencyAge {
                            recency: 0.0,
                            age: middle(age_bin),
                        },
                    )],
                });
            }
        }
        for bucket in 0..self.repeat_buckets() {
            let offset = age_bins + bucket * self.pairs_per_bucket;
            for age_bin in 0..age_bins {
                for recency_bin in 0..=age_bin {
                    let count = histogram[offset + age_bin * (age_bin + 1) / 2 + recency_bin];
                    if count == 0.0 {
                        continue;
                    }
                    let ages = day_quadrature(self.bin_days(age_bin));
                    let mut cells = Vec::new();
                    for frequency in self.bucket_frequencies(bucket) {
                        let x = f64::from(frequency);
                        let ln_factorial = libm::lgamma(x);
                        for &(age, age_weight) in &ages {
                            // A repeat purchase is at least a day after the
                            // first, and the last is no later than the age.
                            let days = self.bin_days(recency_bin);
                            let last = (days.end - 1).min(age.floor() as u32);
                            let first = days.start.max(1);
                            if first > last {
                                continue;
                            }
                            for (recency, recency_weight) in day_quadrature(first..last + 1) {
                                cells.push(Cell {
                                    frequency: x,
                                    frequency_index: 0,
                                    data: RecencyAge { recency, age },
                                    log_weight: (x - 1.0) * recency.ln() - ln_factorial
                                        + (age_weight * recency_weight).ln(),
                                });
                            }
                        }
                    }
                    // A bin no customer can be in (last purchase on the first
                    // day) holds only noise; it carries no information.
                    if !cells.is_empty() {
                        groups.push(Group {
                            weight: count,
                            cells,
                        });
                    }
                }
            }
        }
        groups
    }

    /// The spend bins as groups of the grouped Gamma-Gamma likelihood: the
    /// probability of the bin is the density of the mean spend integrated over
    /// it, by the midpoint rule on [`SPEND_QUADRATURE_POINTS`] points evenly
    /// spaced in log-spend (weight `m`, the Jacobian of `dm = m d ln m`).
    fn spend_groups(&self, histogram: &[f64]) -> Vec<SpendGroup> {
        let edges = &self.config.spend_edges;
        let mut groups = Vec::new();
        for bucket in 0..self.repeat_buckets() {
            let frequency = self.bucket_representative(bucket);
            for bin in 0..self.spend_bins() {
                let count = histogram[self.purchase_len + bucket * self.spend_bins() + bin];
                if count == 0.0 {
                    continue;
                }
                let (low, high) = (edges[bin].ln(), edges[bin + 1].ln());
                let step = (high - low) / SPEND_QUADRATURE_POINTS as f64;
                let cells = (0..SPEND_QUADRATURE_POINTS)
                    .map(|point| {
                        let ln_spend = low + (point as f64 + 0.5) * step;
                        Cell {
                            frequency,
                            frequency_index: 0,
                            data: ln_spend.exp(),
                            log_weight: ln_spend,
                        }
                    })
                    .collect();
                groups.push(Group {
                    weight: count,
                    cells,
                });
            }
        }
        groups
    }
}

/// The Euclidean projection of `values` onto the non-negative vectors with
/// the same sum, `max(v - δ, 0)` with the one `δ ≥ 0` that keeps the sum
/// (Duchi et al. 2008); all zero when the sum is not positive. For a noised
/// histogram this is the consistency step of Wang et al. 2020 ("Norm-Sub"):
/// the released total is kept, and the noise's negative counts are paid for
/// by every positive count equally rather than by phantom customers in empty
/// bins, as clamping at zero would.
fn project_onto_nonnegative_with_sum(values: &mut [f64]) {
    let total: f64 = values.iter().sum();
    if total.is_nan() || total <= 0.0 {
        values.fill(0.0);
        return;
    }
    if values.iter().all(|&value| value >= 0.0) {
        return;
    }
    let mut descending = values.to_vec();
    descending.sort_unstable_by(|left, right| right.total_cmp(left));
    let mut prefix = 0.0;
    let mut shift = 0.0;
    for (kept, &value) in descending.iter().enumerate() {
        prefix += value;
        let candidate = (prefix - total) / (kept + 1) as f64;
        if value - candidate <= 0.0 {
            break;
        }
        shift = candidate;
    }
    for value in values.iter_mut() {
        *value = (*value - shift).max(0.0);
    }
}

/// Most points a range of days is summed over: every day up to this many,
/// beyond that this many midpoints of equal sub-ranges (the likelihood is
/// smooth in days, so eight points keep the quadrature error far below the
/// binning's loss of information while bounding the cost of wide bins).
const MAX_DAY_POINTS: u32 = 8;

/// Quadrature points and weights for a sum over the integer days of `days`.
fn day_quadrature(days: std::ops::Range<u32>) -> Vec<(f64, f64)> {
    let count = days.end.saturating_sub(days.start);
    if count <= MAX_DAY_POINTS {
        return days.map(|day| (f64::from(day), 1.0)).collect();
    }
    let step = f64::from(count) / f64::from(MAX_DAY_POINTS);
    (0..MAX_DAY_POINTS)
        .map(|point| {
            (
                f64::from(days.start) - 0.5 + (f64::from(point) + 0.5) * step,
                step,
            )
        })
        .collect()
}

/// The node's release before noise: each customer adds 1 to the purchase bin
/// of its `(x, t_x, T)` and, if `x ≥ 1`, 1 to the spend bin of its
/// `(x, mean spend)`. Histograms of disjoint customer sets add up to the
/// histogram of their union, so the secure sum of the nodes' vectors is the
/// pooled histogram.
pub fn local_histogram(
    summaries: &[CustomerSummary],
    binning: &HistogramBinning,
) -> Result<Vec<i64>, LifetimeValueError> {
    let mut histogram = vec![0i64; binning.len()];
    for (index, summary) in summaries.iter().enumerate() {
        summary.validate(index)?;
        let (purchase, spend) = binning.bins_of(summary);
        histogram[purchase] += 1;
        if let Some(spend) = spend {
            histogram[spend] += 1;
        }
    }
    Ok(histogram)
}

/// Adds independent discrete Gaussian noise `N_Z(0, σ²)` (the exact sampler of
/// `veil-dp-noise`, σ² rounded up to a multiple of 2^-16) to every entry, from
/// the caller's cryptographic generator. `noise_sigma` is in customer counts;
/// see the crate docs for its calibration against
/// [`HISTOGRAM_L2_SENSITIVITY`].
pub fn add_histogram_noise<R: CryptoRng + ?Sized>(
    histogram: &mut [i64],
    noise_sigma: f64,
    rng: &mut R,
) -> Result<(), LifetimeValueError> {
    let sampler = DiscreteGaussian::from_sigma(noise_sigma)?;
    let mut rng = rng;
    sampler.add_to(histogram, &mut rng)?;
    Ok(())
}

/// Both models fitted to one histogram.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HistogramFit {
    /// BG/NBD, from the purchase part.
    pub purchases: BgNbdParameters,
    /// Gamma-Gamma, from the spend part.
    pub spend: GammaGammaParameters,
}

/// Which counts a model was fitted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FittedCounts {
    /// The released counts as they are, negative ones included: the maximum
    /// likelihood estimate, unbiased in the counts.
    Released,
    /// The nearest non-negative counts of each conditional part (see
    /// [`fit_from_histogram`]): the released counts' likelihood had no
    /// maximum at which the model's predictions are defined. The noise then
    /// dominates the counts, and the shrinkage of this projection biases the
    /// fit towards the histogram's densest bins.
    NearestNonNegative,
}

/// [`fit_from_histogram`]'s models and the counts each was fitted to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FittedHistogram {
    /// BG/NBD and Gamma-Gamma.
    pub models: HistogramFit,
    /// The counts BG/NBD was fitted to.
    pub purchases_from: FittedCounts,
    /// The counts Gamma-Gamma was fitted to.
    pub spend_from: FittedCounts,
}

/// The coordinator's fit: BG/NBD and Gamma-Gamma by maximum likelihood on the
/// (summed, possibly noised) histogram, each bin's count times the log of the
/// probability the model gives the bin (the maximum likelihood estimate from
/// grouped data).
///
/// Noise makes some counts negative. They are kept: the noise has mean zero,
/// so the weighted log-likelihood stays an unbiased estimate of the pooled
/// one (clamping to 0 would add about 0.4σ phantom customers to every empty
/// bin). But a likelihood that weighs a bin negatively can be unbounded (it
/// rises as the model gives that bin no probability), which happens when the
/// noise is large next to the counts. A model whose fit to the released
/// counts fails, or lands where its predictions are undefined (BG/NBD with
/// `a + b ≤ 1`, Gamma-Gamma with `q ≤ 1`), is fitted instead to the nearest
/// non-negative counts with the same totals (see
/// `project_onto_nonnegative_with_sum`), and [`FittedHistogram`] says so.
pub fn fit_from_histogram(
    binning: &HistogramBinning,
    aggregate: &[i64],
) -> Result<FittedHistogram, LifetimeValueError> {
    if aggregate.len() != binning.len() {
        return Err(LifetimeValueError::HistogramLength {
            expected: binning.len(),
            actual: aggregate.len(),
        });
    }
    let released: Vec<f64> = aggregate.iter().map(|&count| count as f64).collect();
    let nearest = binning.consistent_counts(aggregate);
    let (purchases, purchases_from) = fit_with_fallback(
        &released,
        &nearest,
        |counts| fit_groups(binning.purchase_groups(counts), HISTOGRAM_PRIOR),
        |fit| fit.a + fit.b > 1.0,
    )?;
    let (spend, spend_from) = fit_with_fallback(
        &released,
        &nearest,
        |counts| fit_spend_groups(binning.spend_groups(counts), HISTOGRAM_PRIOR),
        |fit| fit.q > 1.0,
    )?;
    Ok(FittedHistogram {
        models: HistogramFit { purchases, spend },
        purchases_from,
        spend_from,
    })
}

/// `fit` of the released counts if it succeeds where `predicts` holds, else
/// `fit` of the nearest non-negative counts (when they differ).
fn fit_with_fallback<M>(
    released: &[f64],
    nearest: &[f64],
    fit: impl Fn(&[f64]) -> Result<M, LifetimeValueError>,
    predicts: impl Fn(&M) -> bool,
) -> Result<(M, FittedCounts), LifetimeValueError> {
    let first = fit(released);
    match first {
        Ok(model) if predicts(&model) => Ok((model, FittedCounts::Released)),
        _ if released == nearest => first.map(|model| (model, FittedCounts::Released)),
        _ => fit(nearest).map(|model| (model, FittedCounts::NearestNonNegative)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binning() -> HistogramBinning {
        HistogramBinning::new(BinningConfig {
            day_bin_width: 7,
            max_age_days: 27,
            frequency_edges: vec![0, 1, 2, 4],
            spend_edges: vec![1.0, 10.0, 100.0],
        })
        .unwrap_or_else(|error| panic!("{error}"))
    }

    #[test]
    fn each_customer_lands_in_one_purchase_bin_and_at_most_one_spend_bin() {
        let binning = binning();
        // 4 ages + 3 buckets · 10 pairs + 3 buckets · 2 spend bins.
        assert_eq!(binning.len(), 4 + 30 + 6);
        let customer = |frequency, recency_days, age_days, mean_spend| CustomerSummary {
            frequency,
            recency_days,
            age_days,
            mean_spend,
        };
        for (summary, purchase, spend) in [
            (customer(0, 0, 0, 0.0), 0, None),
            (customer(0, 0, 100, 0.0), 3, None),
            // x = 1, age bin 1, recency bin 0: pair 1·2/2 + 0 = 1.
            (customer(1, 3, 8, 5.0), 4 + 1, Some(34)),
            // x = 3 (bucket 2..4), age bin 3 (clamped), recency bin 3; spend above the top.
            (customer(3, 27, 200, 500.0), 4 + 10 + 9, Some(34 + 2 + 1)),
            // x = 9 is capped into the last bucket; spend below the bottom edge.
            (customer(9, 10, 14, 0.5), 4 + 20 + 3 + 1, Some(34 + 4)),
        ] {
            assert_eq!(binning.bins_of(&summary), (purchase, spend), "{summary:?}");
        }
        let summaries = [
            customer(0, 0, 0, 0.0),
            customer(1, 3, 8, 5.0),
            customer(1, 3, 8, 5.0),
        ];
        let histogram = local_histogram(&summaries, &binning);
        assert!(
            histogram
                .as_ref()
                .is_ok_and(|h| h[0] == 1 && h[5] == 2 && h[34] == 2 && h.iter().sum::<i64>() == 5)
        );
    }

    proptest::proptest! {
        #[test]
        fn adding_one_customer_changes_the_histogram_by_at_most_the_sensitivity(
            others in proptest::collection::vec((0u32..200, 0u32..500, 0u32..500, 0.0f64..5_000.0), 0..40),
            added in (0u32..200, 0u32..500, 0u32..500, 0.0f64..5_000.0),
        ) {
            // Arbitrary valid summaries, many outside the binning's ranges (ages
            // beyond 28 days, repeat counts above the cap, spend outside 1..100).
            let summary = |(frequency, recency, extra, spend): (u32, u32, u32, f64)| {
                let recency_days = if frequency == 0 { 0 } else { recency.max(frequency) };
                CustomerSummary {
                    frequency,
                    recency_days,
                    age_days: recency_days + extra,
                    mean_spend: if frequency == 0 { 0.0 } else { spend },
                }
            };
            let binning = binning();
            let mut customers: Vec<CustomerSummary> = others.into_iter().map(summary).collect();
            let without = local_histogram(&customers, &binning);
            customers.push(summary(added));
            let with = local_histogram(&customers, &binning);
            proptest::prop_assert!(without.is_ok() && with.is_ok());
            let (without, with) = (without.unwrap_or_default(), with.unwrap_or_default());
            let changes: Vec<i64> = with.iter().zip(&without).map(|(w, o)| w - o).collect();
            let l1: i64 = changes.iter().map(|c| c.abs()).sum();
            let l2 = (changes.iter().map(|c| (c * c) as f64).sum::<f64>()).sqrt();
            proptest::prop_assert!(changes.iter().all(|&c| c == 0 || c == 1));
            proptest::prop_assert_eq!(l1, if added.0 == 0 { 1 } else { 2 });
            proptest::prop_assert!(l1 as f64 <= HISTOGRAM_L1_SENSITIVITY);
            proptest::prop_assert!(l2 <= HISTOGRAM_L2_SENSITIVITY + 1e-12);
        }
    }

    #[test]
    fn the_nearest_non_negative_counts_keep_the_total_and_the_order() {
        let mut values = [10.0, -3.0, 4.0, -1.0, 0.5];
        project_onto_nonnegative_with_sum(&mut values);
        // Sum 10.5; the shift δ = 1.75 leaves 8.25 + 2.25 = 10.5.
        assert_eq!(values, [8.25, 0.0, 2.25, 0.0, 0.0]);
        let mut untouched = [1.0, 0.0, 2.0];
        project_onto_nonnegative_with_sum(&mut untouched);
        assert_eq!(untouched, [1.0, 0.0, 2.0]);
        let mut all_noise = [2.0, -5.0];
        project_onto_nonnegative_with_sum(&mut all_noise);
        assert_eq!(all_noise, [0.0, 0.0]);
    }

    #[test]
    fn conditional_parts_cover_every_entry_once() {
        let binning = binning();
        let mut seen = vec![0; binning.len()];
        for part in binning.conditional_parts() {
            for entry in part {
                seen[entry] += 1;
            }
        }
        assert!(seen.iter().all(|&times| times == 1), "{seen:?}");
    }

    #[test]
    fn spend_counts_the_noise_made_unbounded_are_fitted_through_their_projection() {
        // The spend part of one repeat bucket: customers at one mean spend,
        // and noise that put a large negative count in the next bin. Their
        // likelihood rises without bound as the model concentrates all spend
        // in the first bin, so the fit falls back to the nearest
        // non-negative counts, and says so.
        let binning = binning();
        let mut histogram = vec![0i64; binning.len()];
        // Purchase part: enough customers with repeats for BG/NBD.
        for (entry, count) in [(0, 50), (3, 40), (4 + 1, 30), (4 + 5, 20), (4 + 10 + 7, 10)] {
            histogram[entry] = count;
        }
        // Two spend bins (1–10, 10–100) per repeat bucket.
        let spend = binning.purchase_len;
        for (offset, count) in [(0, 40), (1, -39), (2, 12), (3, 20), (4, 4), (5, 9)] {
            histogram[spend + offset] = count;
        }
        let fitted = fit_from_histogram(&binning, &histogram);
        assert!(
            fitted
                .as_ref()
                .is_ok_and(|fitted| fitted.spend_from == FittedCounts::NearestNonNegative),
            "{fitted:?}"
        );
        // Without negative counts the released counts are fitted as they are.
        histogram[spend + 1] = 25;
        let fitted = fit_from_histogram(&binning, &histogram);
        assert!(
            fitted
                .as_ref()
                .is_ok_and(|fitted| fitted.spend_from == FittedCounts::Released
                    && fitted.purchases_from == FittedCounts::Released),
            "{fitted:?}"
        );
    }

    #[test]
    fn bad_binnings_and_histograms_are_refused() {
        let valid = binning().config().clone();
        for (config, reason) in [
            (
                BinningConfig {
                    day_bin_width: 0,
                    ..valid.clone()
                },
                "day_bin_width must be at least 1",
            ),
            (
                BinningConfig {
                    frequency_edges: vec![0, 2],
                    ..valid.clone()
                },
                "frequency_edges must start 0, 1",
            ),
            (
                BinningConfig {
                    frequency_edges: vec![0, 1, 3, 3],
                    ..valid.clone()
                },
                "frequency_edges must be strictly increasing",
            ),
            (
                BinningConfig {
                    spend_edges: vec![0.0, 1.0],
                    ..valid.clone()
                },
                "spend_edges must be at least two positive, finite, increasing edges",
            ),
            (
                BinningConfig {
                    day_bin_width: 1,
                    max_age_days: 100_000,
                    ..valid.clone()
                },
                "the histogram would have more than 2^28 entries",
            ),
        ] {
            assert_eq!(
                HistogramBinning::new(config),
                Err(LifetimeValueError::InvalidBinning(reason))
            );
        }
        let binning = binning();
        assert_eq!(
            fit_from_histogram(&binning, &[0; 3]),
            Err(LifetimeValueError::HistogramLength {
                expected: 40,
                actual: 3
            })
        );
        assert!(matches!(
            fit_from_histogram(&binning, &vec![0; 40]),
            Err(LifetimeValueError::NoCustomers { .. })
        ));
        let mut histogram = vec![0; 40];
        let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::seed_from_u64(1);
        assert!(matches!(
            add_histogram_noise(&mut histogram, -1.0, &mut rng),
            Err(LifetimeValueError::Noise(_))
        ));
    }
}
