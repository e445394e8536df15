//! How much noise each release carries, and what it costs: calibration of the
//! distributed discrete Gaussian for a sequence of count releases (the mining
//! levels, or the one heavy-hitters release), the charge of each, and the
//! node's noise step. The noise itself and the accounting are
//! `veil-dp-noise` and `veil-privacy-accounting`; nothing here samples by hand.
//!
//! **Mechanism.** Every partner adds `N_Z(0, σ_r²)` to each entry of its
//! integer count vector for release `r` before masking; secure aggregation
//! reveals only the sum, which holds at least `t` partners' noise (`t` the
//! reconstruction threshold). Counts are integers already, so there is no
//! rounding and the sensitivity is exactly the contribution bound
//! ([`crate::level_sensitivity`]).
//!
//! **Calibration and composition.** All releases get the same noise
//! multiplier `z = √t·σ_r / Δ₂,r`, so each is a Gaussian mechanism with
//! multiplier `z` and `R` of them compose exactly to one with `z/√R`
//! (full-batch Gaussians add their `1/z²`). `z` is the smallest with `R`
//! full-batch Gaussian steps within the target (ε, δ)
//! (`calibrate_noise_multiplier`), then `σ_r = z·Δ₂,r/√t`, raised to at
//! least [`MIN_NODE_SIGMA`]. The charge of each release is
//! `DpEvent::SummedDiscreteNoise` with the exact sampler's σ (its σ² rounded
//! up to a multiple of 2^-16), so the ledger's ε is at most the target.
//!
//! **Trade-off.** `SummedDiscreteNoise` accounts the sum of discrete
//! Gaussians as a continuous Gaussian. Kairouz, Liu and Steinke (2021,
//! Prop. 14) bound the difference by an extra Rényi term `τ·d`; with
//! `σ ≥ 2` and `t ≤ 1000`, `τ < 10⁻¹³`, so for any vector under 10⁶ entries
//! the extra term is below 10⁻⁷ nats (checked in the tests). The rigorous
//! `DistributedDiscreteGaussian` event of the accountant is built for
//! rounded float updates and would charge rounding growth (`+√d`) that
//! integer counts do not have.

use rand_core::CryptoRng;
use veil_dp_noise::DiscreteGaussian;
use veil_privacy_accounting::{Accountant, CalibrationTarget, DpEvent, calibrate_noise_multiplier};

use crate::counting::Sensitivity;
use crate::error::RulesError;

/// Smallest per-node σ used, so the Gaussian accounting of a sum of discrete
/// Gaussians is exact to within a negligible `τ` (module docs).
pub const MIN_NODE_SIGMA: f64 = 2.0;

/// The privacy target of a whole sequence of releases, per partner.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrivacyTarget {
    /// ε of all releases together, per partner (customer-level).
    pub epsilon: f64,
    /// δ of all releases together.
    pub delta: f64,
    /// `t`: partners whose noise every unmasked sum is guaranteed to hold.
    pub min_survivors: u64,
}

/// One release's noise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReleaseNoise {
    /// The contribution bound the noise covers.
    pub sensitivity: Sensitivity,
    /// The sampler every node uses for this release.
    sampler: DiscreteGaussian,
}

impl ReleaseNoise {
    /// σ of each node's noise, exactly the sampler's (its σ² is rounded up).
    pub fn node_sigma(&self) -> f64 {
        let sigma_squared = self.sampler.sigma_squared();
        (sigma_squared.numerator as f64 / sigma_squared.denominator as f64).sqrt()
    }

    /// Variance of the noise in a sum holding `noise_shares` nodes' noise
    /// (an upper bound: a discrete Gaussian's variance is at most σ²).
    pub fn aggregate_variance(&self, noise_shares: u64) -> f64 {
        noise_shares as f64 * self.node_sigma().powi(2)
    }

    /// The node's step: adds its noise to every entry of its counts, from the
    /// node's cryptographic generator.
    pub fn add_node_noise<R: CryptoRng>(
        &self,
        counts: &mut [i64],
        rng: &mut R,
    ) -> Result<(), RulesError> {
        Ok(self.sampler.add_to(counts, rng)?)
    }
}

/// The noise of every release in a sequence, calibrated together.
#[derive(Debug, Clone, PartialEq)]
pub struct NoisePlan {
    /// The target the plan meets.
    target: PrivacyTarget,
    /// Per release, in order.
    releases: Vec<ReleaseNoise>,
}

impl NoisePlan {
    /// Calibrates one release per sensitivity (in order) to meet `target`
    /// together.
    pub fn calibrate(
        target: PrivacyTarget,
        sensitivities: &[Sensitivity],
    ) -> Result<Self, RulesError> {
        if target.min_survivors == 0 {
            return Err(RulesError::ZeroBound {
                what: "min_survivors",
            });
        }
        if sensitivities.is_empty() {
            return Err(RulesError::ZeroBound {
                what: "the number of releases",
            });
        }
        if let Some(bad) = sensitivities
            .iter()
            .find(|sensitivity| !(sensitivity.l2.is_finite() && sensitivity.l2 > 0.0))
        {
            return Err(RulesError::OutOfRange {
                what: "l2 sensitivity",
                range: "(0, inf)",
                value: bad.l2,
            });
        }
        let noise_multiplier = calibrate_noise_multiplier(&CalibrationTarget {
            sampling_rate: 1.0,
            steps: sensitivities.len() as u64,
            epsilon: target.epsilon,
            delta: target.delta,
        })?;
        let survivors_root = (target.min_survivors as f64).sqrt();
        let releases = sensitivities
            .iter()
            .map(|&sensitivity| {
                let sigma =
                    (noise_multiplier * sensitivity.l2 / survivors_root).max(MIN_NODE_SIGMA);
                Ok(ReleaseNoise {
                    sensitivity,
                    sampler: DiscreteGaussian::from_sigma(sigma)?,
                })
            })
            .collect::<Result<Vec<_>, RulesError>>()?;
        Ok(Self { target, releases })
    }

    /// The target the plan was calibrated for.
    pub fn target(&self) -> &PrivacyTarget {
        &self.target
    }

    /// Number of releases.
    pub fn len(&self) -> usize {
        self.releases.len()
    }

    /// Whether the plan has no releases (never true for a calibrated plan).
    pub fn is_empty(&self) -> bool {
        self.releases.is_empty()
    }

    /// Release `index` (0-based; mining level `L` is release `L - 1`).
    pub fn release(&self, index: usize) -> Option<&ReleaseNoise> {
        self.releases.get(index)
    }

    /// What release `index` costs each partner, for both ledgers.
    pub fn charge(&self, index: usize) -> Option<DpEvent> {
        self.releases
            .get(index)
            .map(|release| DpEvent::SummedDiscreteNoise {
                sampling_rate: 1.0,
                per_client_sigma: release.node_sigma(),
                n_clients: self.target.min_survivors,
                l2_sensitivity: release.sensitivity.l2,
                steps: 1,
            })
    }

    /// ε (at the target's δ) of the first `releases` releases composed: what
    /// a run that stopped early spent.
    pub fn epsilon_spent(&self, releases: usize) -> Result<f64, RulesError> {
        if releases == 0 {
            return Ok(0.0);
        }
        let mut accountant = Accountant::new();
        for index in 0..releases.min(self.releases.len()) {
            if let Some(event) = self.charge(index) {
                accountant.compose(event)?;
            }
        }
        Ok(accountant.epsilon(self.target.delta)?.epsilon)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use veil_privacy_accounting::summed_discrete_gaussian_tau;

    #[test]
    fn the_plan_meets_its_target_and_scales_noise_with_sensitivity() {
        let target = PrivacyTarget {
            epsilon: 1.0,
            delta: 1e-6,
            min_survivors: 10,
        };
        let sensitivities = [
            Sensitivity { l1: 9.0, l2: 3.0 },
            Sensitivity { l1: 36.0, l2: 6.0 },
            Sensitivity { l1: 36.0, l2: 6.0 },
        ];
        let plan = NoisePlan::calibrate(target, &sensitivities).expect("calibrates");
        let spent = plan.epsilon_spent(3).expect("accounts");
        assert!(spent <= 1.0, "{spent}");
        // The calibration is tight: 0.02% bisection, plus σ² rounded up by at
        // most 2^-16 absolute, so the spend is within 1% of the target.
        assert!(spent > 0.99, "{spent}");
        let first = plan.release(0).expect("release").node_sigma();
        let second = plan.release(1).expect("release").node_sigma();
        assert!((second / first - 2.0).abs() < 1e-4, "{first} {second}");
        // Stopping early spends less.
        assert!(plan.epsilon_spent(1).expect("accounts") < spent);
    }

    #[test]
    fn the_minimum_sigma_makes_the_discrete_correction_negligible() {
        // τ·d for a million-entry vector with a thousand survivors.
        let tau = summed_discrete_gaussian_tau(MIN_NODE_SIGMA, 1000);
        assert!(tau * 1e6 < 1e-7, "{tau}");
    }

    #[test]
    fn bad_targets_are_refused() {
        let sensitivities = [Sensitivity { l1: 1.0, l2: 1.0 }];
        let target = PrivacyTarget {
            epsilon: 1.0,
            delta: 1e-6,
            min_survivors: 0,
        };
        assert_eq!(
            NoisePlan::calibrate(target, &sensitivities),
            Err(RulesError::ZeroBound {
                what: "min_survivors"
            })
        );
        let target = PrivacyTarget {
            min_survivors: 3,
            epsilon: -1.0,
            ..target
        };
        assert!(matches!(
            NoisePlan::calibrate(target, &sensitivities),
            Err(RulesError::Accounting(_))
        ));
        assert_eq!(
            NoisePlan::calibrate(
                PrivacyTarget {
                    epsilon: 1.0,
                    ..target
                },
                &[]
            ),
            Err(RulesError::ZeroBound {
                what: "the number of releases"
            })
        );
    }
}
