//! Accounting for the distributed discrete Gaussian mechanism of DP-FedAvg
//! with secure aggregation (Kairouz, Liu, Steinke 2021, "The distributed
//! discrete Gaussian mechanism for federated learning with secure
//! aggregation"): each node clips its update, scales it by `1/γ`, rounds it
//! to integers with conditional randomised rounding, and adds discrete
//! Gaussian noise; only the modular sum is revealed.
//!
//! Three pieces, each a pure function:
//! * [`rounded_sensitivity`]: the ℓ2 and ℓ1 sensitivity of one node's
//!   integer vector after scaling and rounding (the paper's Theorem 1 /
//!   Proposition 22), which is what the noise must cover;
//! * [`DistributedDiscreteGaussian::rdp`]: the Rényi DP of one round, from the
//!   paper's bound for a sum of `t` discrete Gaussians (Proposition 14,
//!   Eq. 17), including its `τ` correction for the sum not being exactly a
//!   discrete Gaussian;
//! * [`calibrate_node_sigma`]: the smallest per-node σ meeting a target (ε, δ).
//!
//! Partner sampling is ignored: every round is charged as if the partner took
//! part, which is an upper bound (amplification by sampling would only lower
//! it). The modular wrap-around of secure aggregation is post-processing of
//! the integer sum and costs no privacy.

use serde::{Deserialize, Serialize};

use crate::accountant::{Accountant, DpEvent};
use crate::bound::{nan_is_unbounded, tighter_upper_bound};
use crate::error::AccountingError;

/// The paper's privacy analysis assumes each node's σ is at least 1/2 (in
/// integer units); below that a discrete Gaussian is nearly a point mass.
pub const MIN_NODE_SIGMA: f64 = 0.5;

/// Terms of the `τ` series summed exactly; beyond this the remaining terms,
/// which decrease in `k`, are bounded by the last one times their count.
const MAX_EXACT_TAU_TERMS: u64 = 100_000;

/// Calibration never searches beyond this σ (integer units): the summed
/// noise would swamp any update a 64-bit modulus can carry.
const MAX_NODE_SIGMA: f64 = 1e12;

/// Calibration bisects σ until the bracket's ratio is below this.
const RELATIVE_PRECISION: f64 = 1.0 + 1e-4;

/// How each node turns its clipped float update into integers before adding
/// noise. All four numbers are part of the privacy claim, so the ledger
/// records them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DiscreteEncoding {
    /// ℓ2 clip norm `c`, in model units.
    pub clip_norm: f64,
    /// Quantisation step `γ`: one integer unit is `γ` model units, so the
    /// clipped update is multiplied by `1/γ` before rounding.
    pub granularity: f64,
    /// Dimension `d` of the vector that is rounded (after any padding for the
    /// flattening rotation); rounding error grows with it.
    pub dimension: u64,
    /// `β ∈ [0, 1)` of conditional randomised rounding: a rounded vector whose
    /// norm exceeds the bound of [`rounded_sensitivity`] is resampled. `0`
    /// means plain randomised rounding, bounded by `c/γ + √d`.
    pub rounding_beta: f64,
}

/// Sensitivity of one node's rounded integer vector, in integer units.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RoundedSensitivity {
    /// ℓ2 norm bound `Δ₂`.
    pub l2: f64,
    /// ℓ1 norm bound `Δ₁ = Δ₂·min(√d, Δ₂)`: `√d·Δ₂` holds for any vector,
    /// `Δ₂²` for integer ones.
    pub l1: f64,
}

/// One round of the distributed discrete Gaussian mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DistributedDiscreteGaussian {
    /// How updates are encoded before noise.
    pub encoding: DiscreteEncoding,
    /// Scale σ of each node's discrete Gaussian `N_Z(0, σ²)`, in integer
    /// units (its variance is at most σ²); at least [`MIN_NODE_SIGMA`].
    pub node_sigma: f64,
    /// `t`: nodes whose noise is guaranteed to be in the sum, i.e. the
    /// secure-aggregation threshold, never the number invited. The adjacency
    /// is zero-out: a partner's update is replaced by zero while its noise
    /// share stays, so both neighbouring sums carry at least `t` shares.
    pub min_survivors: u64,
}

fn positive_finite(value: f64, reason: &'static str) -> Result<(), AccountingError> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(AccountingError::InvalidDiscreteNoise(reason))
    }
}

impl DiscreteEncoding {
    /// Refuses encodings the rounding bound does not cover.
    pub fn validate(&self) -> Result<(), AccountingError> {
        positive_finite(self.clip_norm, "clip_norm must be positive")?;
        positive_finite(self.granularity, "granularity must be positive")?;
        positive_finite(
            self.clip_norm / self.granularity,
            "clip_norm / granularity must be finite",
        )?;
        if self.dimension == 0 {
            return Err(AccountingError::InvalidDiscreteNoise(
                "dimension must be at least 1",
            ));
        }
        if !(0.0..1.0).contains(&self.rounding_beta) {
            return Err(AccountingError::InvalidDiscreteNoise(
                "rounding_beta must be in [0, 1)",
            ));
        }
        Ok(())
    }
}

/// The ℓ2 and ℓ1 sensitivity of one node's vector after clipping to `c`,
/// scaling by `1/γ` and (conditional) randomised rounding (Kairouz et al.
/// 2021, Theorem 1 / Proposition 22), with `c' = c/γ`:
///
/// `Δ₂ = min(c' + √d, sqrt(c'² + d/4 + sqrt(2 ln(1/β))·(c' + √d/2)))`,
///
/// the second term only when `β > 0`; `Δ₁ = Δ₂·min(√d, Δ₂)`.
pub fn rounded_sensitivity(
    encoding: &DiscreteEncoding,
) -> Result<RoundedSensitivity, AccountingError> {
    encoding.validate()?;
    let scaled_clip = encoding.clip_norm / encoding.granularity;
    let dimension = encoding.dimension as f64;
    let sqrt_dimension = dimension.sqrt();
    // Plain randomised rounding moves each coordinate by less than 1.
    let worst_case = scaled_clip + sqrt_dimension;
    let l2 = if encoding.rounding_beta > 0.0 {
        let conditional = (scaled_clip * scaled_clip
            + dimension / 4.0
            + (2.0 * (1.0 / encoding.rounding_beta).ln()).sqrt()
                * (scaled_clip + sqrt_dimension / 2.0))
            .sqrt();
        // Both are valid bounds; a NaN conditional one is no bound at all.
        tighter_upper_bound(worst_case, conditional)
    } else {
        worst_case
    };
    Ok(RoundedSensitivity {
        l2,
        l1: l2 * sqrt_dimension.min(l2),
    })
}

/// `τ = 10·Σ_{k=1}^{t-1} exp(-2π²σ²·k/(k+1))`: how far a sum of `t` discrete
/// Gaussians of scale σ may be from one discrete Gaussian of variance `tσ²`
/// (Kairouz et al. 2021, Theorem 11). Zero for a single node.
pub fn summed_discrete_gaussian_tau(node_sigma: f64, min_survivors: u64) -> f64 {
    let exponent_scale = -2.0 * std::f64::consts::PI.powi(2) * node_sigma * node_sigma;
    let term = |k: u64| {
        let k = k as f64;
        (exponent_scale * k / (k + 1.0)).exp()
    };
    let terms = min_survivors.saturating_sub(1);
    let exact_terms = terms.min(MAX_EXACT_TAU_TERMS);
    let mut sum: f64 = (1..=exact_terms).map(term).sum();
    if terms > exact_terms {
        // Terms decrease in k, so the last exact one bounds every later one.
        sum += (terms - exact_terms) as f64 * term(exact_terms);
    }
    10.0 * sum
}

impl DistributedDiscreteGaussian {
    /// Refuses parameters outside the paper's assumptions.
    pub fn validate(&self) -> Result<(), AccountingError> {
        self.encoding.validate()?;
        if !(self.node_sigma.is_finite() && self.node_sigma >= MIN_NODE_SIGMA) {
            return Err(AccountingError::InvalidDiscreteNoise(
                "node_sigma must be at least 0.5 integer units",
            ));
        }
        if self.min_survivors == 0 {
            return Err(AccountingError::InvalidDiscreteNoise(
                "min_survivors must be at least 1",
            ));
        }
        Ok(())
    }

    /// Standard deviation scale of the summed noise over the rounded ℓ2
    /// sensitivity, `√t·σ/Δ₂`: the noise multiplier of the continuous
    /// Gaussian this mechanism approaches as `τ → 0`.
    pub fn effective_noise_multiplier(&self) -> Result<f64, AccountingError> {
        self.validate()?;
        let sensitivity = rounded_sensitivity(&self.encoding)?;
        Ok((self.min_survivors as f64).sqrt() * self.node_sigma / sensitivity.l2)
    }

    /// Rényi DP of one round at `order ≥ 1` (Kairouz et al. 2021,
    /// Proposition 14, Eq. 17), with `a₂ = Δ₂/(√t·σ)`, `a₁ = Δ₁/(√t·σ)`:
    ///
    /// `min(α/2·a₂² + τd, α/2·(a₂² + 2a₁τ + τ²d), α/2·(a₂ + √d·τ)²)`.
    ///
    /// With `τ = 0` every term is the continuous Gaussian's `α/(2·z²)` for
    /// `z = 1/a₂`.
    pub fn rdp(&self, order: f64) -> Result<f64, AccountingError> {
        self.validate()?;
        let sensitivity = rounded_sensitivity(&self.encoding)?;
        let summed_sigma = (self.min_survivors as f64).sqrt() * self.node_sigma;
        let l2_scale = sensitivity.l2 / summed_sigma;
        let l1_scale = sensitivity.l1 / summed_sigma;
        let tau = summed_discrete_gaussian_tau(self.node_sigma, self.min_survivors);
        let dimension = self.encoding.dimension as f64;
        let half_order = order / 2.0;
        let additive = half_order * l2_scale * l2_scale + tau * dimension;
        let through_l1 =
            half_order * (l2_scale * l2_scale + 2.0 * l1_scale * tau + tau * tau * dimension);
        let through_l2 = half_order * (l2_scale + dimension.sqrt() * tau).powi(2);
        // Each is a valid bound on its own. `f64::min` skips a NaN operand
        // only by accident (∞·0 when τ = 0 and a₁ overflows); say so, and
        // make all-NaN +inf rather than NaN.
        Ok(tighter_upper_bound(
            tighter_upper_bound(additive, through_l1),
            through_l2,
        ))
    }
}

/// What to calibrate a distributed discrete Gaussian for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DistributedCalibrationTarget {
    /// How updates are encoded before noise.
    pub encoding: DiscreteEncoding,
    /// `t`, the secure-aggregation threshold.
    pub min_survivors: u64,
    /// Number of rounds the partner takes part in.
    pub rounds: u64,
    /// Privacy budget ε to stay within.
    pub epsilon: f64,
    /// Privacy budget δ.
    pub delta: f64,
}

fn distributed_epsilon(
    target: &DistributedCalibrationTarget,
    node_sigma: f64,
) -> Result<f64, AccountingError> {
    let mut accountant = Accountant::new();
    accountant.compose(DpEvent::DistributedDiscreteGaussian {
        mechanism: DistributedDiscreteGaussian {
            encoding: target.encoding,
            node_sigma,
            min_survivors: target.min_survivors,
        },
        rounds: target.rounds,
    })?;
    // `NaN > target` is false, which would make the search accept σ.
    Ok(nan_is_unbounded(accountant.epsilon(target.delta)?.epsilon))
}

/// The smallest per-node σ (integer units, to within 0.01%, and at least
/// [`MIN_NODE_SIGMA`]) whose `rounds` rounds stay within the target (ε, δ).
/// The returned σ always meets the target.
pub fn calibrate_node_sigma(target: &DistributedCalibrationTarget) -> Result<f64, AccountingError> {
    if !(target.epsilon.is_finite() && target.epsilon > 0.0) {
        return Err(AccountingError::InvalidEpsilon(target.epsilon));
    }
    if distributed_epsilon(target, MIN_NODE_SIGMA)? <= target.epsilon {
        return Ok(MIN_NODE_SIGMA);
    }
    let mut low = MIN_NODE_SIGMA;
    let mut high = 2.0 * MIN_NODE_SIGMA;
    // Invariant from here on: ε(low) > target.
    while distributed_epsilon(target, high)? > target.epsilon {
        low = high;
        high *= 2.0;
        if high > MAX_NODE_SIGMA {
            return Err(AccountingError::CalibrationOutOfRange(MAX_NODE_SIGMA));
        }
    }
    while high / low > RELATIVE_PRECISION {
        let middle = (low * high).sqrt();
        if distributed_epsilon(target, middle)? > target.epsilon {
            low = middle;
        } else {
            high = middle;
        }
    }
    Ok(high)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rdp::{FractionalCoefficients, rdp_poisson_subsampled_gaussian};

    fn encoding(
        clip_norm: f64,
        granularity: f64,
        dimension: u64,
        rounding_beta: f64,
    ) -> DiscreteEncoding {
        DiscreteEncoding {
            clip_norm,
            granularity,
            dimension,
            rounding_beta,
        }
    }

    #[test]
    fn rounding_inflates_the_sensitivity_as_the_paper_states() {
        // c/γ = 100, d = 16. Plain rounding: 100 + √16 = 104, and ℓ1 = 104·4.
        let plain = rounded_sensitivity(&encoding(1.0, 0.01, 16, 0.0));
        assert_eq!(
            plain,
            Ok(RoundedSensitivity {
                l2: 104.0,
                l1: 416.0
            })
        );
        // β = e^{-1/2} makes sqrt(2 ln(1/β)) = 1: Δ₂² = 100² + 16/4 + (100 + 2).
        let conditional = rounded_sensitivity(&encoding(1.0, 0.01, 16, (-0.5f64).exp()))
            .map(|sensitivity| sensitivity.l2);
        let expected = 10_106.0f64.sqrt();
        // 1e-12 relative: one sqrt and a handful of rounded operations.
        assert!(conditional.is_ok_and(|l2| (l2 - expected).abs() < 1e-12 * expected));
        // Tiny integer vectors: ℓ1 ≤ Δ₂² is the tighter bound.
        let tiny = rounded_sensitivity(&encoding(1.0, 1.0, 100, 0.0));
        assert_eq!(
            tiny,
            Ok(RoundedSensitivity {
                l2: 11.0,
                l1: 110.0
            })
        );
    }

    #[test]
    fn tau_matches_the_series_by_hand() {
        // One node: the sum is exactly a discrete Gaussian.
        assert_eq!(summed_discrete_gaussian_tau(0.5, 1), 0.0);
        // t = 2, σ = 1/2: 10·exp(-2π²·¼·½) = 10·exp(-π²/4).
        let two = summed_discrete_gaussian_tau(0.5, 2);
        let expected_two = 10.0 * (-std::f64::consts::PI.powi(2) / 4.0).exp();
        // 1e-14 relative: one exp of the same rounded argument.
        assert!((two - expected_two).abs() < 1e-14 * expected_two);
        // t = 3, σ = 1: 10·(exp(-π²) + exp(-4π²/3)).
        let pi_squared = std::f64::consts::PI.powi(2);
        let expected_three = 10.0 * ((-pi_squared).exp() + (-4.0 * pi_squared / 3.0).exp());
        let three = summed_discrete_gaussian_tau(1.0, 3);
        assert!((three - expected_three).abs() < 1e-14 * expected_three);
    }

    #[test]
    fn tau_tail_bound_never_undercounts() {
        // Past the exact terms the tail is bounded above by its largest term.
        let exact: f64 = 10.0
            * (1..MAX_EXACT_TAU_TERMS + 1_000)
                .map(|k| {
                    let k = k as f64;
                    (-2.0 * std::f64::consts::PI.powi(2) * 0.25 * k / (k + 1.0)).exp()
                })
                .sum::<f64>();
        let bounded = summed_discrete_gaussian_tau(0.5, MAX_EXACT_TAU_TERMS + 1_000);
        assert!(bounded >= exact * (1.0 - 1e-12), "{bounded} < {exact}");
        assert!(
            bounded <= exact * (1.0 + 1e-6),
            "{bounded} far above {exact}"
        );
    }

    #[test]
    fn without_tau_the_rdp_is_the_continuous_gaussians() {
        // σ = 40 integer units makes every τ term exp(-2π²·1600·k/(k+1)) = 0.
        let mechanism = DistributedDiscreteGaussian {
            encoding: encoding(1.0, 0.01, 64, 0.0),
            node_sigma: 40.0,
            min_survivors: 9,
        };
        assert_eq!(summed_discrete_gaussian_tau(40.0, 9), 0.0);
        // z = √9·40 / (100 + 8) = 120/108.
        let noise_multiplier = 120.0 / 108.0;
        assert_eq!(mechanism.effective_noise_multiplier(), Ok(noise_multiplier));
        for order in [1.5, 2.0, 8.0, 64.0, 1024.0] {
            let distributed = mechanism.rdp(order).unwrap_or(f64::NAN);
            let continuous = rdp_poisson_subsampled_gaussian(
                1.0,
                noise_multiplier,
                order,
                FractionalCoefficients::Signed,
            );
            // Both are α/(2z²) up to the rounding of z².
            assert!(
                (distributed - continuous).abs() < 1e-12 * continuous,
                "α={order}: {distributed} vs {continuous}"
            );
        }
    }

    #[test]
    fn small_node_noise_costs_more_than_the_gaussian_approximation() {
        let mechanism = DistributedDiscreteGaussian {
            encoding: encoding(1.0, 0.5, 1_000, 0.0),
            node_sigma: 0.5,
            min_survivors: 10,
        };
        let gaussian_rdp = 4.0
            / (2.0
                * mechanism
                    .effective_noise_multiplier()
                    .unwrap_or(0.0)
                    .powi(2));
        let distributed_rdp = mechanism.rdp(4.0).unwrap_or(0.0);
        // τ ≈ 10·9·e^{-π²/4·…} is far from 0 here; the bound must notice.
        assert!(
            distributed_rdp > gaussian_rdp * 1.01,
            "{distributed_rdp} vs {gaussian_rdp}"
        );
    }

    #[test]
    fn invalid_mechanisms_are_refused_with_the_reason() {
        let valid = DistributedDiscreteGaussian {
            encoding: encoding(1.0, 0.01, 16, 0.1),
            node_sigma: 2.0,
            min_survivors: 3,
        };
        assert_eq!(valid.validate(), Ok(()));
        let cases = [
            (
                DistributedDiscreteGaussian {
                    node_sigma: 0.4,
                    ..valid
                },
                "node_sigma must be at least 0.5 integer units",
            ),
            (
                DistributedDiscreteGaussian {
                    min_survivors: 0,
                    ..valid
                },
                "min_survivors must be at least 1",
            ),
            (
                DistributedDiscreteGaussian {
                    encoding: encoding(1.0, 0.01, 16, 1.0),
                    ..valid
                },
                "rounding_beta must be in [0, 1)",
            ),
            (
                DistributedDiscreteGaussian {
                    encoding: encoding(1.0, 0.0, 16, 0.1),
                    ..valid
                },
                "granularity must be positive",
            ),
            (
                DistributedDiscreteGaussian {
                    encoding: encoding(1.0, 0.01, 0, 0.1),
                    ..valid
                },
                "dimension must be at least 1",
            ),
        ];
        for (mechanism, reason) in cases {
            assert_eq!(
                mechanism.rdp(2.0),
                Err(AccountingError::InvalidDiscreteNoise(reason))
            );
        }
    }

    #[test]
    fn calibrated_node_sigma_meets_the_target_and_one_percent_less_does_not() {
        let target = DistributedCalibrationTarget {
            encoding: encoding(1.0, 1e-3, 1 << 12, 1e-2),
            min_survivors: 8,
            rounds: 50,
            epsilon: 4.0,
            delta: 1e-5,
        };
        let node_sigma = calibrate_node_sigma(&target).unwrap_or(f64::NAN);
        assert!(node_sigma.is_finite() && node_sigma > MIN_NODE_SIGMA);
        let at = distributed_epsilon(&target, node_sigma).unwrap_or(f64::INFINITY);
        let below = distributed_epsilon(&target, node_sigma * 0.99).unwrap_or(0.0);
        assert!(at <= target.epsilon, "{at}");
        assert!(below > target.epsilon, "{below}");
    }

    #[test]
    fn overflowing_sensitivity_gives_infinite_rdp_not_a_number() {
        // c/γ = 1e300 squares to +inf, and with one node τ = 0, so the ℓ1
        // bound is ∞·0 = NaN. The RDP must be +inf, never NaN or finite.
        let mechanism = DistributedDiscreteGaussian {
            encoding: encoding(1e200, 1e-100, 16, 0.0),
            node_sigma: 1.0,
            min_survivors: 1,
        };
        for order in [1.5, 2.0, 64.0] {
            assert_eq!(mechanism.rdp(order), Ok(f64::INFINITY), "α={order}");
        }
        let mut accountant = Accountant::new();
        let event = DpEvent::DistributedDiscreteGaussian {
            mechanism,
            rounds: 1,
        };
        assert_eq!(accountant.compose(event), Ok(()));
        let report = accountant.epsilon(1e-5);
        assert!(report.is_ok_and(|report| {
            report.epsilon == f64::INFINITY
                && report.epsilon_rdp == f64::INFINITY
                && report
                    .reason()
                    .is_some_and(|reason| reason.contains("infinite at every order"))
        }),);
        // Calibration cannot meet a target with such a sensitivity: it must
        // say so, not return a σ.
        let target = DistributedCalibrationTarget {
            encoding: encoding(1e200, 1e-100, 16, 0.0),
            min_survivors: 1,
            rounds: 1,
            epsilon: 1.0,
            delta: 1e-5,
        };
        assert_eq!(
            calibrate_node_sigma(&target),
            Err(AccountingError::CalibrationOutOfRange(MAX_NODE_SIGMA))
        );
    }

    #[test]
    fn a_loose_target_needs_only_the_minimum_sigma() {
        let target = DistributedCalibrationTarget {
            // One node (τ = 0), Δ₂ = 0.1 + 1: ρ ≈ 2.4 per round, ε ≈ 13 at δ = 1e-5.
            encoding: encoding(0.1, 1.0, 1, 0.0),
            min_survivors: 1,
            rounds: 1,
            epsilon: 50.0,
            delta: 1e-5,
        };
        assert_eq!(calibrate_node_sigma(&target), Ok(MIN_NODE_SIGMA));
    }
}
