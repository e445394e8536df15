//! Quantised releases with Veil's distributed discrete Gaussian noise, and
//! the privacy plan that prices every release of a job before the first one.
//!
//! Each release is a vector of integers: every customer's contribution is
//! truncated towards zero to a whole number of quantisation steps
//! `γ = 2^-m` (so it never grows in norm), summed at the node, and the node
//! adds discrete Gaussian noise `N_Z(0, σ²)` (`veil_dp_noise::DiscreteGaussian`)
//! before the vector enters secure aggregation. The coordinator sees only the
//! sum over at least `t` nodes, whose noise is the sum of at least `t` node
//! shares; that is the mechanism `veil_privacy_accounting::DistributedDiscreteGaussian`
//! accounts (Kairouz, Liu, Steinke 2021), charged per release.
//!
//! `γ` is a power of two no finer than `2^-20`, so `integer · γ` is exact in
//! the 20 fractional bits of the statistics fixed point that
//! `veil-federation`'s reply encoding uses: [`Release::to_statistics`] gives
//! the `f64` statistics vector a node sends, and [`Release::from_statistics`]
//! recovers the integer sum exactly.

use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use veil_dp_noise::DiscreteGaussian;
use veil_privacy_accounting::{
    Accountant, DiscreteEncoding, DistributedCalibrationTarget, DistributedDiscreteGaussian,
    DpEvent, MIN_NODE_SIGMA, calibrate_node_sigma, rounded_sensitivity,
};

use crate::error::SegmentationError;

/// Finest quantisation step, `2^-20`: the fractional bits of the
/// statistics fixed point in `veil-federation`, so sums stay exact.
pub const MAX_GRANULARITY_EXPONENT: u32 = 20;

/// The node σ (integer units) the step is chosen for: far above the 1/2 the
/// distributed bound needs (its `τ` term is then below 1e-300), and a factor
/// four below the exact sampler's limit of `2^16`.
const TARGET_NODE_SIGMA: f64 = 16_384.0;

/// The exact sampler takes σ ≤ 2^16 (σ² ≤ 2^32).
const MAX_NODE_SIGMA: f64 = 65_536.0;

/// How far calibration may raise the common noise multiplier above the
/// single-encoding calibration before giving up (it needs < 1% in practice).
const MAX_CALIBRATION_STEPS: usize = 400;

/// The customer-level privacy of a segmentation or RFM job. No `Default`:
/// every deployment must choose its budget.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SegmentationPrivacy {
    /// ε per partner for the whole job, every release composed.
    pub epsilon: f64,
    /// δ of that ε.
    pub delta: f64,
    /// `t`: nodes whose noise is guaranteed to be in every released sum
    /// (the secure-aggregation threshold less tolerated colluders).
    pub min_survivors: u64,
}

/// What a release is, for the ledger and the protocol's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ReleaseKind {
    /// Per public candidate cell: clipped sum of offsets and count.
    Seeding,
    /// One Lloyd step at `k` clusters: per cluster clipped offset sum and count.
    Lloyd {
        /// Number of clusters.
        k: usize,
        /// Zero-based step.
        iteration: usize,
    },
    /// The segment profile at `k` clusters: offsets, count, label count, clipped cost.
    Profile {
        /// Number of clusters.
        k: usize,
    },
    /// RFM histograms of recency, frequency and monetary value.
    RfmHistograms,
}

/// A release before calibration: what one customer can change, and how long it is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ReleaseShape {
    pub kind: ReleaseKind,
    /// ℓ2 bound on one customer's contribution, in value units.
    pub sensitivity: f64,
    /// Length of the released vector.
    pub dimension: usize,
}

/// One calibrated release: how a node quantises and noises it, and what the
/// ledgers charge for it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Release {
    /// What is released.
    pub kind: ReleaseKind,
    /// ℓ2 bound on the change one customer makes to a node's vector, in
    /// value units, before quantisation (which only shrinks it).
    pub sensitivity: f64,
    /// Length of the released vector.
    pub dimension: usize,
    /// `m` of the quantisation step `γ = 2^-m`.
    pub granularity_exponent: u32,
    /// σ of each node's discrete Gaussian, in integer units.
    pub node_sigma: f64,
    /// `t` of the plan.
    pub min_survivors: u64,
}

impl Release {
    /// The quantisation step `γ`, in value units.
    pub fn granularity(&self) -> f64 {
        (-f64::from(self.granularity_exponent)).exp2()
    }

    /// Integer units per value unit, `1/γ`.
    pub(crate) fn units(&self) -> f64 {
        f64::from(self.granularity_exponent).exp2()
    }

    /// One customer's value in integer units, truncated towards zero so the
    /// quantised contribution is never larger than the real one.
    pub(crate) fn quantise(&self, value: f64) -> i64 {
        (value * self.units()).trunc() as i64
    }

    /// The mechanism both ledgers charge for this release: per-customer
    /// sensitivity `Δ` as the clip norm, `γ`, the vector length, plain
    /// rounding (`β = 0`, whose bound `Δ/γ + √d` covers truncation), σ and `t`.
    pub fn mechanism(&self) -> DistributedDiscreteGaussian {
        DistributedDiscreteGaussian {
            encoding: DiscreteEncoding {
                clip_norm: self.sensitivity,
                granularity: self.granularity(),
                dimension: self.dimension as u64,
                rounding_beta: 0.0,
            },
            node_sigma: self.node_sigma,
            min_survivors: self.min_survivors,
        }
    }

    /// Standard deviation of the noise in a released sum of exactly `t`
    /// nodes, in value units; more nodes only add noise.
    pub fn summed_noise_deviation(&self) -> f64 {
        (self.min_survivors as f64).sqrt() * self.node_sigma * self.granularity()
    }

    /// Adds this node's noise share to its integer vector, from `rng`
    /// (a cryptographic generator keyed by the OS in production).
    pub fn add_noise<R: CryptoRng>(
        &self,
        vector: &mut [i64],
        rng: &mut R,
    ) -> Result<(), SegmentationError> {
        self.check_length("node release", vector.len())?;
        let sampler = DiscreteGaussian::from_sigma(self.node_sigma)?;
        sampler.add_to(vector, rng)?;
        Ok(())
    }

    /// The statistics vector a node sends through secure aggregation:
    /// `integer · γ`, exact in `f64` and in the 20-fraction-bit fixed point.
    pub fn to_statistics(&self, vector: &[i64]) -> Vec<f64> {
        let granularity = self.granularity();
        vector
            .iter()
            .map(|&value| value as f64 * granularity)
            .collect()
    }

    /// The integer sum back from summed statistics; refuses values that are
    /// not whole steps (beyond a 1e-6 step of float slack), so a decoding
    /// mistake cannot pass as data.
    pub fn from_statistics(&self, statistics: &[f64]) -> Result<Vec<i64>, SegmentationError> {
        self.check_length("released statistics", statistics.len())?;
        let units = self.units();
        statistics
            .iter()
            .enumerate()
            .map(|(index, value)| {
                let scaled = value * units;
                let rounded = scaled.round();
                if !scaled.is_finite() || (scaled - rounded).abs() > 1e-6 || rounded.abs() > 9e18 {
                    return Err(SegmentationError::NotQuantised { index });
                }
                Ok(rounded as i64)
            })
            .collect()
    }

    pub(crate) fn check_length(
        &self,
        what: &'static str,
        actual: usize,
    ) -> Result<(), SegmentationError> {
        if actual == self.dimension {
            Ok(())
        } else {
            Err(SegmentationError::WrongLength {
                what,
                expected: self.dimension,
                actual,
            })
        }
    }
}

/// Every release of a job, calibrated together: each gets node noise
/// `σ_i = z · Δ_i' / √t` for one common noise multiplier `z`, where `Δ_i'`
/// is the release's rounded sensitivity in integer units, so every release
/// costs the same and the composition over all of them meets the target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrivacyPlan {
    /// The releases in protocol order.
    releases: Vec<Release>,
    /// The common `z`: summed noise at `t` nodes over rounded sensitivity.
    noise_multiplier: f64,
    /// ε of all releases composed (RDP), at the plan's δ.
    epsilon: f64,
    /// The δ of `epsilon`.
    delta: f64,
}

impl PrivacyPlan {
    /// Calibrates `shapes` to `privacy`.
    pub(crate) fn calibrate(
        shapes: &[ReleaseShape],
        privacy: &SegmentationPrivacy,
    ) -> Result<Self, SegmentationError> {
        check_privacy(privacy)?;
        let accounting = |error: veil_privacy_accounting::AccountingError| {
            SegmentationError::Privacy(error.to_string())
        };
        let Some(largest) = shapes.iter().max_by_key(|shape| shape.dimension) else {
            return Err(SegmentationError::Privacy(
                "the plan has no releases".to_owned(),
            ));
        };
        let rounds = shapes.len() as u64;
        let survivors = privacy.min_survivors as f64;
        // A first estimate of z only chooses each step γ: the zCDP budget
        // ρ = (√(ε + ln 1/δ) − √(ln 1/δ))² spread over the rounds, each
        // costing 1/(2z²). The exact calibration follows.
        let log_inverse_delta = (1.0 / privacy.delta).ln();
        let rho = ((privacy.epsilon + log_inverse_delta).sqrt() - log_inverse_delta.sqrt()).powi(2);
        let gaussian_multiplier = (rounds as f64 / (2.0 * rho)).sqrt();
        let exponent = |shape: &ReleaseShape| {
            let node_sigma_in_values = gaussian_multiplier * shape.sensitivity / survivors.sqrt();
            (TARGET_NODE_SIGMA / node_sigma_in_values)
                .log2()
                .floor()
                .clamp(0.0, f64::from(MAX_GRANULARITY_EXPONENT)) as u32
        };
        let encoding = |shape: &ReleaseShape| DiscreteEncoding {
            clip_norm: shape.sensitivity,
            granularity: (-f64::from(exponent(shape))).exp2(),
            dimension: shape.dimension as u64,
            rounding_beta: 0.0,
        };
        // Every release has the same RDP at the same z (up to the τ term,
        // negligible at these σ), so calibrating the longest one for all
        // rounds gives z; the whole plan is then checked exactly.
        let representative = encoding(largest);
        let representative_sigma = calibrate_node_sigma(&DistributedCalibrationTarget {
            encoding: representative,
            min_survivors: privacy.min_survivors,
            rounds,
            epsilon: privacy.epsilon,
            delta: privacy.delta,
        })
        .map_err(accounting)?;
        let representative_l2 = rounded_sensitivity(&representative).map_err(accounting)?.l2;
        let mut noise_multiplier = survivors.sqrt() * representative_sigma / representative_l2;
        for _ in 0..MAX_CALIBRATION_STEPS {
            let mut releases = Vec::with_capacity(shapes.len());
            let mut accountant = Accountant::new();
            for shape in shapes {
                let encoding = encoding(shape);
                let l2 = rounded_sensitivity(&encoding).map_err(accounting)?.l2;
                let node_sigma = (noise_multiplier * l2 / survivors.sqrt()).max(MIN_NODE_SIGMA);
                if node_sigma > MAX_NODE_SIGMA {
                    return Err(SegmentationError::Privacy(format!(
                        "release {:?} needs node sigma {node_sigma:.0} integer units, above the \
                         exact sampler's {MAX_NODE_SIGMA}; raise epsilon",
                        shape.kind
                    )));
                }
                let release = Release {
                    kind: shape.kind,
                    sensitivity: shape.sensitivity,
                    dimension: shape.dimension,
                    granularity_exponent: exponent(shape),
                    node_sigma,
                    min_survivors: privacy.min_survivors,
                };
                accountant
                    .compose(DpEvent::DistributedDiscreteGaussian {
                        mechanism: release.mechanism(),
                        rounds: 1,
                    })
                    .map_err(accounting)?;
                releases.push(release);
            }
            let epsilon = accountant
                .epsilon(privacy.delta)
                .map_err(accounting)?
                .epsilon;
            if epsilon <= privacy.epsilon {
                return Ok(Self {
                    releases,
                    noise_multiplier,
                    epsilon,
                    delta: privacy.delta,
                });
            }
            noise_multiplier *= 1.002;
        }
        Err(SegmentationError::Privacy(format!(
            "no noise multiplier up to {noise_multiplier:.1} meets epsilon {}",
            privacy.epsilon
        )))
    }

    /// The releases in protocol order.
    pub fn releases(&self) -> &[Release] {
        &self.releases
    }

    /// The release at `index`, if the plan has one.
    pub fn release(&self, index: usize) -> Option<&Release> {
        self.releases.get(index)
    }

    /// The common noise multiplier `z`.
    pub fn noise_multiplier(&self) -> f64 {
        self.noise_multiplier
    }

    /// ε per partner of all releases composed, an upper bound from the RDP
    /// accountant of `veil-privacy-accounting`; at most the target.
    pub fn epsilon(&self) -> f64 {
        self.epsilon
    }

    /// δ of [`PrivacyPlan::epsilon`].
    pub fn delta(&self) -> f64 {
        self.delta
    }
}

fn check_privacy(privacy: &SegmentationPrivacy) -> Result<(), SegmentationError> {
    let invalid = |field, reason: String| SegmentationError::InvalidConfig { field, reason };
    if !(privacy.epsilon.is_finite() && privacy.epsilon > 0.0) {
        return Err(invalid(
            "privacy.epsilon",
            format!("must be a positive finite number, got {}", privacy.epsilon),
        ));
    }
    if !(privacy.delta > 0.0 && privacy.delta < 1.0) {
        return Err(invalid(
            "privacy.delta",
            format!("must be in (0, 1), got {}", privacy.delta),
        ));
    }
    if privacy.min_survivors == 0 {
        return Err(invalid(
            "privacy.min_survivors",
            "must be at least 1".to_owned(),
        ));
    }
    Ok(())
}
