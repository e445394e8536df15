//! RFM scoring the way marketers use it: federated DP quintile cut points of
//! recency, frequency and monetary value, 1–5 scores against the same cut
//! points at every partner, and the standard named segments from a
//! configurable table.
//!
//! Each node releases one additive vector: a histogram per field over
//! public bins (one customer adds 1 to one bin of each of the three
//! histograms, so its ℓ2 sensitivity is √3), noised with the distributed
//! discrete Gaussian like every segmentation release. The coordinator reads
//! cut points off the noised cumulative counts; scoring is local.
//!
//! ## Error bound of the cut points
//!
//! Let `σ` be the standard deviation of the summed noise in one bin
//! ([`Release::summed_noise_deviation`], in customers) and `b` the bins of a
//! field. Every prefix sum of the noise is a sum of at most `b` independent
//! (sub-)Gaussian terms; by Lévy's maximal inequality all prefix errors are
//! at most `E = 6·σ·√b` with probability at least `1 - 4·e^{-18}`. The
//! coordinator's cumulative counts (a running maximum of the noised prefix
//! sums, floored at 0) are then each within `E` of the exact pooled ones,
//! the total `N̂` within `E` of `N`, and the cut point `x̂_p` for level `p`
//! lies in a bin `i` with `C_{i-1} < pN + 2E` and `C_i ≥ pN − 2E`. So `x̂_p`
//! is at least the lower edge of the bin holding the pooled value of rank
//! `⌊pN − 2E⌋` and at most the upper edge of the bin holding the value of
//! rank `⌈pN + 2E⌉` ([`quantile_rank_error`] returns `2E`).

use serde::{Deserialize, Serialize};

use crate::error::SegmentationError;
use crate::release::{PrivacyPlan, Release, ReleaseKind, ReleaseShape, SegmentationPrivacy};

/// Quintile levels of the four cut points.
const LEVELS: [f64; 4] = [0.2, 0.4, 0.6, 0.8];

/// Standard deviations of the prefix noise covered by the stated bound.
const BOUND_DEVIATIONS: f64 = 6.0;

/// One customer's RFM values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RfmValues {
    /// Days since the last purchase.
    pub recency_days: f64,
    /// Number of purchases.
    pub frequency: f64,
    /// Total spend.
    pub monetary: f64,
}

/// Public bin edges per field, strictly increasing. Bin `i` is
/// `[edge_i, edge_{i+1})`; values below the first edge count in the first
/// bin and values at or above the last in the last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RfmBins {
    /// Recency edges, in days.
    pub recency: Vec<f64>,
    /// Frequency edges, in purchases.
    pub frequency: Vec<f64>,
    /// Monetary edges, in currency units.
    pub monetary: Vec<f64>,
}

impl RfmBins {
    /// Edges fixed from typical retail ranges, never from data: recency
    /// every 7 days up to two years, frequency every purchase to 10 and then
    /// about 8 bins per decade to 1000, monetary 16 bins per decade from 1 to 10^6.
    pub fn standard() -> Self {
        let recency = (0..=105).map(|week| f64::from(week) * 7.0).collect();
        let mut frequency: Vec<f64> = (1..=10).map(f64::from).collect();
        frequency.extend((1..=16).map(|step| (10f64.powf(1.0 + f64::from(step) / 8.0)).round()));
        frequency.dedup();
        let mut monetary = vec![0.0];
        monetary.extend((0..=96).map(|step| 10f64.powf(f64::from(step) / 16.0)));
        Self {
            recency,
            frequency,
            monetary,
        }
    }

    fn fields(&self) -> [(&'static str, &[f64]); 3] {
        [
            ("bins.recency", &self.recency),
            ("bins.frequency", &self.frequency),
            ("bins.monetary", &self.monetary),
        ]
    }

    /// Refuses edges that are not finite and strictly increasing, or fewer than two.
    pub fn validate(&self) -> Result<(), SegmentationError> {
        for (field, edges) in self.fields() {
            if edges.len() < 2 {
                return Err(SegmentationError::InvalidConfig {
                    field,
                    reason: format!("needs at least 2 edges, got {}", edges.len()),
                });
            }
            if let Some(index) = edges
                .windows(2)
                .position(|pair| !(pair[0].is_finite() && pair[1].is_finite() && pair[0] < pair[1]))
            {
                return Err(SegmentationError::InvalidConfig {
                    field,
                    reason: format!(
                        "edges {index} and {} are not finite and increasing",
                        index + 1
                    ),
                });
            }
        }
        Ok(())
    }

    /// Length of the released vector: all bins of the three fields.
    pub fn dimension(&self) -> usize {
        self.fields().iter().map(|(_, edges)| edges.len() - 1).sum()
    }
}

fn bin_of(edges: &[f64], value: f64) -> usize {
    let bins = edges.len() - 1;
    edges[1..bins].partition_point(|edge| *edge <= value)
}

/// The plan of an RFM job: one histogram release within `privacy`.
pub fn rfm_plan(
    bins: &RfmBins,
    privacy: &SegmentationPrivacy,
) -> Result<PrivacyPlan, SegmentationError> {
    bins.validate()?;
    PrivacyPlan::calibrate(
        &[ReleaseShape {
            kind: ReleaseKind::RfmHistograms,
            sensitivity: 3f64.sqrt(),
            dimension: bins.dimension(),
        }],
        privacy,
    )
}

/// The node's histogram vector before noise: recency, frequency and
/// monetary histograms concatenated, each count in whole steps of `γ`.
pub fn local_rfm_histograms(
    customers: &[RfmValues],
    bins: &RfmBins,
    release: &Release,
) -> Result<Vec<i64>, SegmentationError> {
    bins.validate()?;
    release.check_length("RFM histograms", bins.dimension())?;
    let one = release.quantise(1.0);
    let mut histogram = vec![0i64; bins.dimension()];
    for (row, customer) in customers.iter().enumerate() {
        let values = [customer.recency_days, customer.frequency, customer.monetary];
        if let Some(feature) = values.iter().position(|value| !value.is_finite()) {
            return Err(SegmentationError::NonFinite { row, feature });
        }
        let mut offset = 0;
        for ((_, edges), value) in bins.fields().into_iter().zip(values) {
            let slot = &mut histogram[offset + bin_of(edges, value)];
            *slot = slot.saturating_add(one);
            offset += edges.len() - 1;
        }
    }
    Ok(histogram)
}

/// `2E` of the module docs for a field of `bins` bins: how many customers'
/// rank a cut point can be off by, except with probability `4·e^{-18}`.
pub fn quantile_rank_error(release: &Release, bins: usize) -> f64 {
    2.0 * BOUND_DEVIATIONS * release.summed_noise_deviation() * (bins as f64).sqrt()
}

/// The four quintile cut points of each field, shared by every partner.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RfmCutPoints {
    /// Recency cut points, non-decreasing.
    pub recency: [f64; 4],
    /// Frequency cut points, non-decreasing.
    pub frequency: [f64; 4],
    /// Monetary cut points, non-decreasing.
    pub monetary: [f64; 4],
}

/// A customer's 1–5 scores: 5 is the most recent, most frequent, highest spend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RfmScore {
    /// Recency score.
    pub recency: u8,
    /// Frequency score.
    pub frequency: u8,
    /// Monetary score.
    pub monetary: u8,
}

fn cut_points(noised: &[i64], edges: &[f64], granularity: f64) -> [f64; 4] {
    // Running maximum of the noised prefix sums, floored at 0: monotone like
    // the true cumulative counts, and never further from them.
    let mut cumulative = Vec::with_capacity(noised.len());
    let mut running: f64 = 0.0;
    let mut prefix = 0.0;
    for &count in noised {
        prefix += count as f64 * granularity;
        running = running.max(prefix);
        cumulative.push(running);
    }
    let total = cumulative.last().copied().unwrap_or(0.0);
    LEVELS.map(|level| {
        let target = level * total;
        let bin = cumulative
            .iter()
            .position(|&count| count >= target)
            .unwrap_or(cumulative.len() - 1);
        let before = if bin == 0 { 0.0 } else { cumulative[bin - 1] };
        let inside = cumulative[bin] - before;
        let fraction = if inside > 0.0 {
            ((target - before) / inside).clamp(0.0, 1.0)
        } else {
            0.0
        };
        edges[bin] + fraction * (edges[bin + 1] - edges[bin])
    })
}

impl RfmCutPoints {
    /// Cut points from the noised sum of every node's histograms
    /// (post-processing only); any party that has the sum gets the same ones.
    pub fn from_noised_histograms(
        sum: &[i64],
        bins: &RfmBins,
        release: &Release,
    ) -> Result<Self, SegmentationError> {
        bins.validate()?;
        release.check_length("summed RFM histograms", sum.len())?;
        let granularity = release.granularity();
        let mut offset = 0;
        let mut fields = bins.fields().map(|(_, edges)| {
            let bins = edges.len() - 1;
            let points = cut_points(&sum[offset..offset + bins], edges, granularity);
            offset += bins;
            points
        });
        let [recency, frequency, monetary] = &mut fields;
        Ok(Self {
            recency: *recency,
            frequency: *frequency,
            monetary: *monetary,
        })
    }

    /// One customer's scores: for frequency and monetary, 1 plus the number
    /// of cut points strictly below the value; recency the other way round.
    pub fn score(&self, values: &RfmValues) -> RfmScore {
        let above =
            |cuts: &[f64; 4], value: f64| cuts.iter().filter(|cut| **cut < value).count() as u8;
        RfmScore {
            recency: 5 - above(&self.recency, values.recency_days),
            frequency: 1 + above(&self.frequency, values.frequency),
            monetary: 1 + above(&self.monetary, values.monetary),
        }
    }
}

/// One named segment: the recency and frequency score ranges it covers,
/// inclusive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentRule {
    /// The segment's name.
    pub name: String,
    /// Lowest and highest recency score.
    pub recency: [u8; 2],
    /// Lowest and highest frequency score.
    pub frequency: [u8; 2],
}

/// The named segments, by (R, F) score: every one of the 25 pairs must be
/// covered exactly once. Deserialises from a config file
/// (`[[segments]] name = "champions" recency = [5, 5] frequency = [4, 5]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RfmSegmentTable {
    /// The rules; their order is the order reports list them in.
    pub segments: Vec<SegmentRule>,
}

impl RfmSegmentTable {
    /// The usual eleven segments on the R/F grid (monetary is reported but
    /// does not name the segment):
    ///
    /// | segment            | R   | F   |
    /// |--------------------|-----|-----|
    /// | champions          | 5   | 4–5 |
    /// | loyal              | 3–4 | 4–5 |
    /// | potential loyalist | 4–5 | 2–3 |
    /// | new customers      | 5   | 1   |
    /// | promising          | 4   | 1   |
    /// | needs attention    | 3   | 3   |
    /// | about to sleep     | 3   | 1–2 |
    /// | can't lose them    | 1–2 | 5   |
    /// | at risk            | 1–2 | 3–4 |
    /// | hibernating        | 2   | 1–2 |
    /// | lost               | 1   | 1–2 |
    pub fn standard() -> Self {
        let rule = |name: &str, recency: [u8; 2], frequency: [u8; 2]| SegmentRule {
            name: name.to_owned(),
            recency,
            frequency,
        };
        Self {
            segments: vec![
                rule("champions", [5, 5], [4, 5]),
                rule("loyal", [3, 4], [4, 5]),
                rule("potential loyalist", [4, 5], [2, 3]),
                rule("new customers", [5, 5], [1, 1]),
                rule("promising", [4, 4], [1, 1]),
                rule("needs attention", [3, 3], [3, 3]),
                rule("about to sleep", [3, 3], [1, 2]),
                rule("can't lose them", [1, 2], [5, 5]),
                rule("at risk", [1, 2], [3, 4]),
                rule("hibernating", [2, 2], [1, 2]),
                rule("lost", [1, 1], [1, 2]),
            ],
        }
    }

    /// Refuses a table with a bad range or an (R, F) pair covered zero or
    /// several times, naming the pair and the segments.
    pub fn validate(&self) -> Result<(), SegmentationError> {
        for rule in &self.segments {
            for (axis, [low, high]) in [("recency", rule.recency), ("frequency", rule.frequency)] {
                if !(1 <= low && low <= high && high <= 5) {
                    return Err(SegmentationError::SegmentTable(format!(
                        "segment {:?} has {axis} range {low}..{high}, outside 1..=5 or reversed",
                        rule.name
                    )));
                }
            }
        }
        for recency in 1..=5u8 {
            for frequency in 1..=5u8 {
                let names: Vec<&str> = self
                    .segments
                    .iter()
                    .filter(|rule| covers(rule, recency, frequency))
                    .map(|rule| rule.name.as_str())
                    .collect();
                if names.len() != 1 {
                    return Err(SegmentationError::SegmentTable(format!(
                        "R = {recency}, F = {frequency} is covered by {} segments {names:?}, expected exactly 1",
                        names.len()
                    )));
                }
            }
        }
        Ok(())
    }

    /// The segment name of a score (the table must be valid).
    pub fn name(&self, score: &RfmScore) -> Option<&str> {
        self.segments
            .iter()
            .find(|rule| covers(rule, score.recency, score.frequency))
            .map(|rule| rule.name.as_str())
    }
}

fn covers(rule: &SegmentRule, recency: u8, frequency: u8) -> bool {
    (rule.recency[0]..=rule.recency[1]).contains(&recency)
        && (rule.frequency[0]..=rule.frequency[1]).contains(&frequency)
}
