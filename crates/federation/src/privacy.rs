//! Partner-level differential privacy of the aggregate (DP-FedAvg): how each
//! update is bounded, who adds the noise, and the exact mechanism a round
//! releases, for the ledger on both sides.
//!
//! - **Distributed** (the default with secure aggregation): every node clips
//!   its weight-normalised update to `clip_norm`, encodes it, and adds discrete
//!   Gaussian noise to the encoded integers before masking. The noise is
//!   calibrated so that the sum over the *minimum* number of survivors t
//!   carries `noise_multiplier` times the (rounding-inflated) sensitivity; more
//!   survivors only add noise. The coordinator never holds a noiseless sum.
//! - **Central**: the coordinator (trusted) clips plain updates itself, or
//!   receives clipped secure sums, and adds continuous Gaussian noise to the
//!   weighted sum before it becomes the next model.

use rand_core::CryptoRng;
use thiserror::Error;
use veil_dp_noise::{Gaussian, clip_l2};
use veil_privacy_accounting::{DiscreteEncoding, DistributedDiscreteGaussian, rounded_sensitivity};

/// Who adds partner-level noise, and how much.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub enum PartnerPrivacy {
    /// No partner-level noise: each partner's contribution to the model is
    /// protected only by secure aggregation (and customer-level DP, if any).
    #[default]
    Off,
    /// Nodes add discrete Gaussian noise inside secure aggregation.
    Distributed {
        /// Noise standard deviation of the survivors' sum over the sensitivity.
        noise_multiplier: f64,
        /// ℓ2 bound of each weight-normalised update.
        clip_norm: f64,
    },
    /// The coordinator adds Gaussian noise to the aggregate.
    Central {
        /// Noise standard deviation over the sensitivity.
        noise_multiplier: f64,
        /// ℓ2 bound of each weight-normalised update.
        clip_norm: f64,
        /// Example counts are capped at this when weighting, so one partner
        /// moves the weighted sum by at most `max_weight * clip_norm`.
        max_weight: f64,
    },
}

/// A partner-privacy setting or computation that cannot be used.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum PartnerPrivacyError {
    /// A parameter is out of range.
    #[error("privacy.{field} = {value} is out of range ({expected})")]
    Parameter {
        /// The field, as in the job file.
        field: &'static str,
        /// Its value.
        value: f64,
        /// The accepted range.
        expected: &'static str,
    },
    /// Distributed noise needs secure aggregation to hide each node's share.
    #[error(
        "privacy.partner = \"distributed\" needs secure aggregation; use \"central\" with plain aggregation"
    )]
    DistributedNeedsSecure,
    /// The accountant refused the mechanism.
    #[error("distributed noise: {0}")]
    Accounting(String),
    /// Central noise is required but the coordinator has no noise source.
    #[error("central noise is required but the coordinator has no cryptographic noise source")]
    NoNoiseSource,
}

impl PartnerPrivacy {
    /// The ℓ2 bound on each weight-normalised update, when one applies.
    pub fn clip_norm(&self) -> Option<f64> {
        match *self {
            PartnerPrivacy::Off => None,
            PartnerPrivacy::Distributed { clip_norm, .. }
            | PartnerPrivacy::Central { clip_norm, .. } => Some(clip_norm),
        }
    }

    /// Checks the parameters.
    pub fn validate(&self) -> Result<(), PartnerPrivacyError> {
        let (noise_multiplier, clip_norm) = match *self {
            PartnerPrivacy::Off => return Ok(()),
            PartnerPrivacy::Distributed {
                noise_multiplier,
                clip_norm,
            } => (noise_multiplier, clip_norm),
            PartnerPrivacy::Central {
                noise_multiplier,
                clip_norm,
                max_weight,
            } => {
                if !(max_weight.is_finite() && max_weight >= 1.0) {
                    return Err(PartnerPrivacyError::Parameter {
                        field: "max_weight",
                        value: max_weight,
                        expected: "finite and >= 1",
                    });
                }
                (noise_multiplier, clip_norm)
            }
        };
        if !(noise_multiplier.is_finite() && noise_multiplier > 0.0) {
            return Err(PartnerPrivacyError::Parameter {
                field: "partner_noise_multiplier",
                value: noise_multiplier,
                expected: "finite and > 0",
            });
        }
        if !(clip_norm.is_finite() && clip_norm > 0.0) {
            return Err(PartnerPrivacyError::Parameter {
                field: "update_clip_norm",
                value: clip_norm,
                expected: "finite and > 0",
            });
        }
        Ok(())
    }
}

/// Scales `update` down to ℓ2 norm `clip_norm` when it is longer.
pub fn clip_update(update: &mut [f32], clip_norm: f64) -> Result<(), PartnerPrivacyError> {
    clip_l2(update, clip_norm)
        .map_err(|error| PartnerPrivacyError::Accounting(error.to_string()))?;
    Ok(())
}

/// The distributed discrete Gaussian one secure round runs: the encoding's
/// granularity and dimension, the per-node σ in encoded units, and t.
pub fn distributed_mechanism(
    noise_multiplier: f64,
    clip_norm: f64,
    granularity: f64,
    dimension: usize,
    min_survivors: usize,
) -> Result<DistributedDiscreteGaussian, PartnerPrivacyError> {
    let encoding = DiscreteEncoding {
        clip_norm,
        granularity,
        dimension: dimension as u64,
        // Unconditional stochastic rounding: the worst-case sensitivity
        // C/γ + √d applies, which costs nothing visible at γ ≈ 1e-8.
        rounding_beta: 0.0,
    };
    let sensitivity = rounded_sensitivity(&encoding)
        .map_err(|error| PartnerPrivacyError::Accounting(error.to_string()))?;
    let mechanism = DistributedDiscreteGaussian {
        encoding,
        node_sigma: noise_multiplier * sensitivity.l2 / (min_survivors as f64).sqrt(),
        min_survivors: min_survivors as u64,
    };
    mechanism
        .validate()
        .map_err(|error| PartnerPrivacyError::Accounting(error.to_string()))?;
    Ok(mechanism)
}

/// Central mode: adds N(0, (z·C·max_weight)²) to every coordinate of the
/// weighted sum `Σ min(w, max_weight)·clip(Δ)`.
pub fn add_central_noise<R: CryptoRng>(
    weighted_sum: &mut [f64],
    noise_multiplier: f64,
    clip_norm: f64,
    max_weight: f64,
    rng: &mut R,
) -> Result<(), PartnerPrivacyError> {
    let gaussian = Gaussian::new(noise_multiplier * clip_norm * max_weight)
        .map_err(|error| PartnerPrivacyError::Accounting(error.to_string()))?;
    for value in weighted_sum.iter_mut() {
        *value += gaussian.sample(rng);
    }
    Ok(())
}
