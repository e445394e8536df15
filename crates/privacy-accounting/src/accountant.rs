//! The ledger-facing accountant: compose a sequence of [`DpEvent`]s, possibly
//! with different sampling rates and noise, then ask for ε at a δ.

use serde::{Deserialize, Serialize};

use crate::analytic_gaussian::analytic_gaussian_epsilon;
use crate::bound::{larger_or_unbounded, tighter_upper_bound};
use crate::distributed::DistributedDiscreteGaussian;
use crate::error::AccountingError;
use crate::pld::{BOTH_ADJACENCIES, DiscretePld, PldConfig, SubsampledGaussian};
use crate::rdp::{
    FractionalCoefficients, RdpConversion, default_orders, epsilon_from_rdp,
    rdp_poisson_subsampled_gaussian,
};

/// How many times the PLD accountant doubles its grid spacing when a
/// composition would not fit in `max_bins`; each doubling stays a valid
/// (looser) upper bound, and past 2^8 the ε is far beyond any usable budget.
const MAX_COARSENINGS: u32 = 8;

/// A differentially private release, described as an accountant needs it.
/// All events assume sensitivity 1 after clipping (noise is in units of the clip norm).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DpEvent {
    /// One Gaussian release over the whole dataset (q = 1).
    Gaussian {
        /// Noise standard deviation over the ℓ2 sensitivity.
        noise_multiplier: f64,
    },
    /// `steps` rounds, each including every record independently with
    /// probability `sampling_rate`, adding Gaussian noise.
    PoissonSampledGaussian {
        /// Poisson sampling probability per round, in `(0, 1]`.
        sampling_rate: f64,
        /// Noise standard deviation over the ℓ2 sensitivity.
        noise_multiplier: f64,
        /// Number of rounds.
        steps: u64,
    },
    /// Distributed DP: each of at least `n_clients` clients adds discrete
    /// Gaussian (or Skellam) noise of standard deviation `per_client_sigma` to
    /// its quantised update, and only the sum is revealed. Accounted as a
    /// Gaussian with the summed noise's standard deviation
    /// `sqrt(n_clients)·per_client_sigma / l2_sensitivity`, which is the
    /// standard approximation (Kairouz et al. 2021); see
    /// `docs/differential-privacy.md` for when it is tight.
    SummedDiscreteNoise {
        /// Poisson sampling probability of a record per round, in `(0, 1]`.
        sampling_rate: f64,
        /// Standard deviation each client adds, in quantised units.
        per_client_sigma: f64,
        /// Clients whose noise is guaranteed to be in the sum (the
        /// secure-aggregation threshold, not the expected count).
        n_clients: u64,
        /// ℓ2 sensitivity of the quantised sum, in quantised units.
        l2_sensitivity: f64,
        /// Number of rounds.
        steps: u64,
    },
    /// Distributed DP with the rigorous bound of Kairouz, Liu, Steinke 2021:
    /// each of at least `min_survivors` nodes adds discrete Gaussian noise to
    /// its clipped, scaled and rounded update, and only the sum is revealed.
    /// Accounted by RDP only (the paper's bound is a Rényi one), with the
    /// rounding's sensitivity growth and the `τ` term for sums of discrete
    /// Gaussians; partner sampling is not credited.
    DistributedDiscreteGaussian {
        /// The encoding, node noise and survivor threshold of each round.
        mechanism: DistributedDiscreteGaussian,
        /// Number of rounds the partner took part in.
        rounds: u64,
    },
}

/// Why the PLD accountant gives no bound for a composition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PldUnbounded {
    /// The distribution would not fit in `max_bins` even on the coarsest
    /// grid tried, which happens only for ε in the hundreds or more.
    TooManyBins,
    /// The composition contains [`DpEvent::DistributedDiscreteGaussian`]
    /// rounds, whose only proven bound is a Rényi one.
    NotCoveredByPld,
    /// A numerical intermediate of the PLD came out as NaN.
    NotANumber,
    /// More than δ of the privacy loss sits at `+inf` (or beyond the grid):
    /// no finite ε holds at this δ.
    InfiniteLoss,
}

impl std::fmt::Display for PldUnbounded {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            Self::TooManyBins => {
                "the privacy loss distribution does not fit in memory even on the coarsest grid \
                 (epsilon is in the hundreds or more)"
            }
            Self::NotCoveredByPld => {
                "the PLD accountant does not cover distributed discrete Gaussian rounds"
            }
            Self::NotANumber => "a privacy loss distribution intermediate was not a number",
            Self::InfiniteLoss => "more than delta of the privacy loss is infinite",
        })
    }
}

/// ε at a δ from each accountant and the reported (tightest valid) value.
/// Every ε is an upper bound; `+inf` (JSON `null`) means "no guarantee",
/// and [`EpsilonReport::reason`] says why. None is ever NaN.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpsilonReport {
    /// Privacy loss distribution accountant (pessimistic discretisation).
    /// `+inf` when the PLD accountant gives no bound; `pld_unbounded` says why.
    pub epsilon_pld: f64,
    /// Rényi DP accountant with the Balle et al. 2020 conversion. `+inf`
    /// when the divergence is infinite at every order: the noise is too
    /// small (σ² underflows) for any finite guarantee.
    pub epsilon_rdp: f64,
    /// The minimum of the valid upper bounds above (and the exact analytic
    /// Gaussian when every event is full-batch).
    pub epsilon: f64,
    /// Why `epsilon_pld` is `+inf`; `None` when it is finite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pld_unbounded: Option<PldUnbounded>,
}

impl EpsilonReport {
    /// One sentence per ε that is not finite, saying why; `None` when all
    /// three are finite. Whoever prints a `null` ε prints this next to it.
    pub fn reason(&self) -> Option<String> {
        let mut parts = Vec::new();
        if !self.epsilon.is_finite() {
            parts.push("epsilon: no accountant gives a finite guarantee".to_owned());
        }
        if !self.epsilon_rdp.is_finite() {
            parts.push(
                "epsilon_rdp: the Renyi divergence is infinite at every order \
                 (the noise is too small for any finite guarantee)"
                    .to_owned(),
            );
        }
        if !self.epsilon_pld.is_finite() {
            let why = self
                .pld_unbounded
                .map_or_else(|| "no bound".to_owned(), |reason| reason.to_string());
            parts.push(format!("epsilon_pld: {why}"));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// One homogeneous block of rounds after normalising events.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rounds {
    mechanism: SubsampledGaussian,
    steps: u64,
}

/// Accumulates DP events and reports ε. Holds only the event list, so it is
/// cheap to clone per job and to rebuild from a ledger.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Accountant {
    /// Events with sampling rate below 1, merged when identical.
    subsampled: Vec<Rounds>,
    /// `Σ steps/σ²` of full-batch events: n Gaussians compose exactly into
    /// one with `σ_eff = (Σ 1/σ²)^(-1/2)`, so they are kept as that sum.
    full_batch_precision: f64,
    /// PLD discretisation settings.
    pld_config: PldConfig,
    /// Distributed discrete Gaussian rounds, merged when identical. Kept
    /// apart because only the RDP accountant can bound them.
    distributed: Vec<(DistributedDiscreteGaussian, u64)>,
}

/// RDP curves (one value per order) of the mechanisms an
/// [`Accountant::epsilon_rdp_cached`] met, for the next call. A clone
/// shares the curves (they are reference-counted), so threads can each work
/// from a clone and [`RdpCurves::absorb`] what they computed afterwards.
#[derive(Debug, Default, Clone)]
pub struct RdpCurves {
    /// Per subsampled Gaussian step, on the default (`false`) or the large
    /// (`true`) grid of orders.
    gaussian: Vec<(bool, SubsampledGaussian, std::sync::Arc<Vec<f64>>)>,
    /// Per distributed discrete Gaussian round (always the large grid).
    distributed: Vec<(DistributedDiscreteGaussian, std::sync::Arc<Vec<f64>>)>,
    /// The RDP→ε conversion per grid (`false` default, `true` large) and δ:
    /// a chart converts at one or two δ, many times.
    conversions: Vec<(bool, std::sync::Arc<RdpConversion>)>,
    /// Scratch space for the Gaussian blocks' RDP per order, kept so a
    /// chart's thousands of evaluations allocate nothing.
    gaussian_totals: Vec<f64>,
    /// Scratch space for the total RDP per order.
    totals: Vec<f64>,
}

impl RdpCurves {
    /// Keeps the curves and conversions `other` holds that this one lacks
    /// (computed from a clone, on another thread).
    pub fn absorb(&mut self, other: RdpCurves) {
        for (large, mechanism, curve) in other.gaussian {
            if !self
                .gaussian
                .iter()
                .any(|(grid, known, _)| *grid == large && *known == mechanism)
            {
                self.gaussian.push((large, mechanism, curve));
            }
        }
        for (mechanism, curve) in other.distributed {
            if !self
                .distributed
                .iter()
                .any(|(known, _)| *known == mechanism)
            {
                self.distributed.push((mechanism, curve));
            }
        }
        for (large, conversion) in other.conversions {
            if !self.conversions.iter().any(|(grid, known)| {
                *grid == large && known.delta().to_bits() == conversion.delta().to_bits()
            }) {
                self.conversions.push((large, conversion));
            }
        }
    }

    /// The conversion at `delta` on the default (`false`) or large (`true`)
    /// grid of orders, whose orders are the grid's.
    fn conversion(&mut self, large: bool, delta: f64) -> std::sync::Arc<RdpConversion> {
        if let Some((_, conversion)) = self.conversions.iter().find(|(grid, conversion)| {
            *grid == large && conversion.delta().to_bits() == delta.to_bits()
        }) {
            return std::sync::Arc::clone(conversion);
        }
        let orders = if large {
            orders_with_large_integers()
        } else {
            default_orders()
        };
        let conversion = std::sync::Arc::new(RdpConversion::new(&orders, delta));
        self.conversions
            .push((large, std::sync::Arc::clone(&conversion)));
        conversion
    }

    fn gaussian(
        &mut self,
        large: bool,
        mechanism: SubsampledGaussian,
        orders: &[f64],
    ) -> std::sync::Arc<Vec<f64>> {
        if let Some((_, _, curve)) = self
            .gaussian
            .iter()
            .find(|(grid, known, _)| *grid == large && *known == mechanism)
        {
            return std::sync::Arc::clone(curve);
        }
        let curve = std::sync::Arc::new(
            orders
                .iter()
                .map(|&order| {
                    rdp_poisson_subsampled_gaussian(
                        mechanism.sampling_rate,
                        mechanism.noise_multiplier,
                        order,
                        FractionalCoefficients::Signed,
                    )
                })
                .collect::<Vec<f64>>(),
        );
        // Full-batch Gaussians fold into one block whose σ changes with
        // every event: not worth keeping.
        if mechanism.sampling_rate < 1.0 {
            self.gaussian
                .push((large, mechanism, std::sync::Arc::clone(&curve)));
        }
        curve
    }

    fn distributed(
        &mut self,
        mechanism: DistributedDiscreteGaussian,
        orders: &[f64],
    ) -> Result<std::sync::Arc<Vec<f64>>, AccountingError> {
        if let Some((_, curve)) = self
            .distributed
            .iter()
            .find(|(known, _)| *known == mechanism)
        {
            return Ok(std::sync::Arc::clone(curve));
        }
        let curve = std::sync::Arc::new(
            orders
                .iter()
                .map(|&order| mechanism.rdp(order))
                .collect::<Result<Vec<f64>, AccountingError>>()?,
        );
        self.distributed
            .push((mechanism, std::sync::Arc::clone(&curve)));
        Ok(curve)
    }
}

/// Orders added to the default grid when distributed discrete Gaussian rounds
/// are composed: their RDP is nearly linear in α, so weakly private
/// compositions have their optimum beyond 63 and the default grid's coarse
/// 128/256/512/1024 would cost up to a few percent of ε. Integers, so the
/// subsampled Gaussian's exact binomial sum applies at each.
fn orders_with_large_integers() -> Vec<f64> {
    let mut orders = default_orders();
    let mut order = 64.0_f64;
    while order <= 1e5 {
        orders.push(order.round());
        order *= 1.15;
    }
    orders.sort_by(f64::total_cmp);
    orders.dedup();
    orders
}

fn check_sampling_rate(sampling_rate: f64) -> Result<(), AccountingError> {
    if sampling_rate > 0.0 && sampling_rate <= 1.0 {
        Ok(())
    } else {
        Err(AccountingError::InvalidSamplingRate(sampling_rate))
    }
}

fn check_noise_multiplier(noise_multiplier: f64) -> Result<(), AccountingError> {
    if noise_multiplier.is_finite() && noise_multiplier > 0.0 {
        Ok(())
    } else {
        Err(AccountingError::InvalidNoiseMultiplier(noise_multiplier))
    }
}

fn check_delta(delta: f64) -> Result<(), AccountingError> {
    if delta > 0.0 && delta < 1.0 {
        Ok(())
    } else {
        Err(AccountingError::InvalidDelta(delta))
    }
}

impl Accountant {
    /// An empty accountant with dp-accounting's default discretisation.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty accountant with explicit PLD settings.
    pub fn with_pld_config(pld_config: PldConfig) -> Result<Self, AccountingError> {
        pld_config.validate()?;
        Ok(Self {
            pld_config,
            ..Self::default()
        })
    }

    /// Adds an event. Invalid parameters are refused and leave the accountant unchanged.
    pub fn compose(&mut self, event: DpEvent) -> Result<(), AccountingError> {
        let (sampling_rate, noise_multiplier, steps) = match event {
            DpEvent::Gaussian { noise_multiplier } => (1.0, noise_multiplier, 1),
            DpEvent::PoissonSampledGaussian {
                sampling_rate,
                noise_multiplier,
                steps,
            } => (sampling_rate, noise_multiplier, steps),
            DpEvent::SummedDiscreteNoise {
                sampling_rate,
                per_client_sigma,
                n_clients,
                l2_sensitivity,
                steps,
            } => {
                if !(per_client_sigma.is_finite() && per_client_sigma > 0.0) {
                    return Err(AccountingError::InvalidDiscreteNoise(
                        "per_client_sigma must be positive",
                    ));
                }
                if !(l2_sensitivity.is_finite() && l2_sensitivity > 0.0) {
                    return Err(AccountingError::InvalidDiscreteNoise(
                        "l2_sensitivity must be positive",
                    ));
                }
                if n_clients == 0 {
                    return Err(AccountingError::InvalidDiscreteNoise(
                        "n_clients must be at least 1",
                    ));
                }
                let summed_sigma = (n_clients as f64).sqrt() * per_client_sigma;
                (sampling_rate, summed_sigma / l2_sensitivity, steps)
            }
            DpEvent::DistributedDiscreteGaussian { mechanism, rounds } => {
                mechanism.validate()?;
                if rounds == 0 {
                    return Err(AccountingError::ZeroSteps);
                }
                match self
                    .distributed
                    .iter_mut()
                    .find(|(existing, _)| *existing == mechanism)
                {
                    Some((_, total)) => *total = total.saturating_add(rounds),
                    None => self.distributed.push((mechanism, rounds)),
                }
                return Ok(());
            }
        };
        check_sampling_rate(sampling_rate)?;
        check_noise_multiplier(noise_multiplier)?;
        if steps == 0 {
            return Err(AccountingError::ZeroSteps);
        }
        if sampling_rate >= 1.0 {
            self.full_batch_precision += steps as f64 / (noise_multiplier * noise_multiplier);
            return Ok(());
        }
        let mechanism = SubsampledGaussian {
            sampling_rate,
            noise_multiplier,
        };
        match self
            .subsampled
            .iter_mut()
            .find(|rounds| rounds.mechanism == mechanism)
        {
            Some(rounds) => rounds.steps = rounds.steps.saturating_add(steps),
            None => self.subsampled.push(Rounds { mechanism, steps }),
        }
        Ok(())
    }

    /// The normalised rounds, full-batch ones folded into one Gaussian step.
    fn all_rounds(&self) -> Vec<Rounds> {
        let mut rounds = self.subsampled.clone();
        if self.full_batch_precision > 0.0 {
            rounds.push(Rounds {
                mechanism: SubsampledGaussian {
                    sampling_rate: 1.0,
                    noise_multiplier: 1.0 / self.full_batch_precision.sqrt(),
                },
                steps: 1,
            });
        }
        rounds
    }

    /// ε from the RDP accountant (a valid upper bound, usually a little loose).
    pub fn epsilon_rdp(&self, delta: f64) -> Result<f64, AccountingError> {
        check_delta(delta)?;
        let orders = if self.distributed.is_empty() {
            default_orders()
        } else {
            orders_with_large_integers()
        };
        let rounds = self.all_rounds();
        let mut totals = Vec::with_capacity(orders.len());
        for &order in &orders {
            let gaussian: f64 = rounds
                .iter()
                .map(|block| {
                    block.steps as f64
                        * rdp_poisson_subsampled_gaussian(
                            block.mechanism.sampling_rate,
                            block.mechanism.noise_multiplier,
                            order,
                            FractionalCoefficients::Signed,
                        )
                })
                .sum();
            let mut distributed = 0.0;
            for (mechanism, count) in &self.distributed {
                distributed += *count as f64 * mechanism.rdp(order)?;
            }
            totals.push(gaussian + distributed);
        }
        Ok(epsilon_from_rdp(&orders, &totals, delta).0)
    }

    /// [`Accountant::epsilon_rdp`], bit for bit, reusing and filling
    /// `curves`: each distinct mechanism's RDP curve is evaluated once, so ε
    /// after each of many rounds (a chart's points) costs a sum per order
    /// instead of an RDP evaluation per mechanism, order and point.
    pub fn epsilon_rdp_cached(
        &self,
        delta: f64,
        curves: &mut RdpCurves,
    ) -> Result<f64, AccountingError> {
        check_delta(delta)?;
        let large = !self.distributed.is_empty();
        let conversion = curves.conversion(large, delta);
        let orders = conversion.orders();
        let rounds = self.all_rounds();
        let mut gaussian_curves = Vec::with_capacity(rounds.len());
        for block in &rounds {
            gaussian_curves.push(curves.gaussian(large, block.mechanism, orders));
        }
        let mut distributed_curves = Vec::with_capacity(self.distributed.len());
        for (mechanism, _) in &self.distributed {
            distributed_curves.push(curves.distributed(*mechanism, orders)?);
        }
        // Block by block over all orders (the loops vectorise), in the same
        // order of additions as `epsilon_rdp`'s per-order sums, from the
        // value an empty `f64` sum starts at: the same bits.
        let mut gaussian = std::mem::take(&mut curves.gaussian_totals);
        gaussian.clear();
        gaussian.resize(orders.len(), std::iter::empty::<f64>().sum::<f64>());
        for (block, curve) in rounds.iter().zip(&gaussian_curves) {
            let steps = block.steps as f64;
            for (total, value) in gaussian.iter_mut().zip(curve.iter()) {
                *total += steps * value;
            }
        }
        let mut totals = std::mem::take(&mut curves.totals);
        totals.clear();
        totals.resize(orders.len(), 0.0);
        for ((_, count), curve) in self.distributed.iter().zip(&distributed_curves) {
            let count = *count as f64;
            for (total, value) in totals.iter_mut().zip(curve.iter()) {
                *total += count * value;
            }
        }
        for (total, gaussian) in totals.iter_mut().zip(&gaussian) {
            *total = gaussian + *total;
        }
        let epsilon = conversion.epsilon(&totals).0;
        curves.gaussian_totals = gaussian;
        curves.totals = totals;
        Ok(epsilon)
    }

    /// ε from the PLD accountant: the larger of the remove and add directions.
    /// If the composition does not fit the configured bins, the grid is
    /// coarsened (still pessimistic) rather than failing.
    /// Refuses compositions with distributed discrete Gaussian rounds
    /// ([`AccountingError::NotCoveredByPld`]).
    pub fn epsilon_pld(&self, delta: f64) -> Result<f64, AccountingError> {
        check_delta(delta)?;
        if !self.distributed.is_empty() {
            return Err(AccountingError::NotCoveredByPld);
        }
        let rounds = self.all_rounds();
        let mut config = self.pld_config;
        let mut last_error = None;
        for _ in 0..=MAX_COARSENINGS {
            match pld_epsilon_with(&rounds, delta, &config) {
                Ok(epsilon) => return Ok(epsilon),
                Err(error @ AccountingError::TooManyBins { .. }) => {
                    last_error = Some(error);
                    config.value_discretization_interval *= 2.0;
                }
                Err(other) => return Err(other),
            }
        }
        Err(last_error.unwrap_or(AccountingError::InvalidPldConfig("no discretisation fits")))
    }

    /// ε from every accountant and the tightest valid upper bound.
    pub fn epsilon(&self, delta: f64) -> Result<EpsilonReport, AccountingError> {
        let epsilon_rdp = self.epsilon_rdp(delta)?;
        // A schedule whose PLD will not fit in memory has an astronomically
        // large ε; RDP still bounds it, so report PLD as unbounded (JSON null).
        // A NaN inside the PLD makes it no bound; RDP still is one.
        let (epsilon_pld, pld_unbounded) = match self.epsilon_pld(delta) {
            Ok(epsilon) if epsilon.is_nan() => (f64::INFINITY, Some(PldUnbounded::NotANumber)),
            Ok(epsilon) if epsilon.is_infinite() => {
                (f64::INFINITY, Some(PldUnbounded::InfiniteLoss))
            }
            Ok(epsilon) => (epsilon, None),
            Err(AccountingError::TooManyBins { .. }) => {
                (f64::INFINITY, Some(PldUnbounded::TooManyBins))
            }
            Err(AccountingError::NotCoveredByPld) => {
                (f64::INFINITY, Some(PldUnbounded::NotCoveredByPld))
            }
            Err(AccountingError::NotANumber(_)) => (f64::INFINITY, Some(PldUnbounded::NotANumber)),
            Err(other) => return Err(other),
        };
        // `f64::min` would return the other operand for a NaN one; a NaN
        // bound counts as +inf instead, so the minimum is never NaN.
        let mut epsilon = tighter_upper_bound(epsilon_rdp, epsilon_pld);
        if self.subsampled.is_empty()
            && self.distributed.is_empty()
            && self.full_batch_precision > 0.0
        {
            epsilon = tighter_upper_bound(
                epsilon,
                analytic_gaussian_epsilon(1.0 / self.full_batch_precision.sqrt(), delta),
            );
        }
        Ok(EpsilonReport {
            epsilon_pld,
            epsilon_rdp,
            epsilon,
            pld_unbounded,
        })
    }
}

/// PLD ε for a fixed discretisation.
fn pld_epsilon_with(
    rounds: &[Rounds],
    delta: f64,
    config: &PldConfig,
) -> Result<f64, AccountingError> {
    let [remove, add] = BOTH_ADJACENCIES;
    let mut composed: Option<[DiscretePld; 2]> = None;
    for block in rounds {
        let single_remove = DiscretePld::connect_the_dots(block.mechanism, remove, config)?;
        let single_add = DiscretePld::connect_the_dots(block.mechanism, add, config)?;
        let [block_remove, block_add] =
            DiscretePld::self_compose_pair([&single_remove, &single_add], block.steps, config)?;
        composed = Some(match composed {
            None => [block_remove, block_add],
            Some([previous_remove, previous_add]) => [
                previous_remove.compose(&block_remove, config)?,
                previous_add.compose(&block_add, config)?,
            ],
        });
    }
    // Both directions must hold, and `f64::max` would drop a NaN one.
    Ok(composed.map_or(0.0, |[remove_pld, add_pld]| {
        larger_or_unbounded(
            remove_pld.epsilon_for_delta(delta),
            add_pld.epsilon_for_delta(delta),
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_events_are_refused_with_the_reason() {
        let mut accountant = Accountant::new();
        let cases = [
            (
                DpEvent::Gaussian {
                    noise_multiplier: 0.0,
                },
                AccountingError::InvalidNoiseMultiplier(0.0),
            ),
            (
                DpEvent::PoissonSampledGaussian {
                    sampling_rate: 1.5,
                    noise_multiplier: 1.0,
                    steps: 1,
                },
                AccountingError::InvalidSamplingRate(1.5),
            ),
            (
                DpEvent::PoissonSampledGaussian {
                    sampling_rate: 0.1,
                    noise_multiplier: 1.0,
                    steps: 0,
                },
                AccountingError::ZeroSteps,
            ),
            (
                DpEvent::SummedDiscreteNoise {
                    sampling_rate: 0.1,
                    per_client_sigma: 3.0,
                    n_clients: 0,
                    l2_sensitivity: 10.0,
                    steps: 1,
                },
                AccountingError::InvalidDiscreteNoise("n_clients must be at least 1"),
            ),
        ];
        for (event, expected) in cases {
            assert_eq!(accountant.compose(event), Err(expected));
        }
        assert_eq!(accountant, Accountant::new());
        assert_eq!(
            accountant.epsilon(0.0),
            Err(AccountingError::InvalidDelta(0.0))
        );
    }

    #[test]
    fn underflowing_noise_reports_infinite_epsilon_with_a_reason() {
        // Regression: σ = 1e-160 reported ε = 0 (NaN through f64::max).
        for sampling_rate in [0.5, 1.0] {
            let mut accountant = Accountant::new();
            let event = DpEvent::PoissonSampledGaussian {
                sampling_rate,
                noise_multiplier: 1e-160,
                steps: 1,
            };
            assert_eq!(accountant.compose(event), Ok(()));
            let report = accountant.epsilon(1e-5);
            assert!(
                report
                    .as_ref()
                    .is_ok_and(|report| report.epsilon == f64::INFINITY
                        && report.epsilon_rdp == f64::INFINITY
                        && report.epsilon_pld == f64::INFINITY
                        && report.pld_unbounded.is_some()
                        && report
                            .reason()
                            .is_some_and(|reason| reason.contains("infinite at every order"))),
                "q = {sampling_rate}: {report:?}"
            );
        }
    }

    #[test]
    fn a_finite_report_has_no_reason_and_a_null_pld_one_has() {
        let mut accountant = Accountant::new();
        let event = DpEvent::PoissonSampledGaussian {
            sampling_rate: 0.01,
            noise_multiplier: 1.1,
            steps: 10,
        };
        assert_eq!(accountant.compose(event), Ok(()));
        let report = accountant.epsilon(1e-5);
        assert!(
            report.is_ok_and(|report| report.reason().is_none() && report.pld_unbounded.is_none())
        );
        let distributed = EpsilonReport {
            epsilon_pld: f64::INFINITY,
            epsilon_rdp: 2.0,
            epsilon: 2.0,
            pld_unbounded: Some(PldUnbounded::NotCoveredByPld),
        };
        assert_eq!(
            distributed.reason(),
            Some(
                "epsilon_pld: the PLD accountant does not cover distributed discrete Gaussian rounds"
                    .to_owned()
            )
        );
    }

    #[test]
    fn nothing_composed_means_no_loss() {
        let report = Accountant::new().epsilon(1e-5);
        assert_eq!(report.map(|report| report.epsilon), Ok(0.0));
    }

    #[test]
    fn summed_discrete_noise_is_the_gaussian_with_summed_sigma() {
        // 100 clients × σ=30 quantised units, sensitivity 300 units → σ_eff = 1.
        let mut discrete = Accountant::new();
        let mut gaussian = Accountant::new();
        let discrete_event = DpEvent::SummedDiscreteNoise {
            sampling_rate: 0.1,
            per_client_sigma: 30.0,
            n_clients: 100,
            l2_sensitivity: 300.0,
            steps: 10,
        };
        let gaussian_event = DpEvent::PoissonSampledGaussian {
            sampling_rate: 0.1,
            noise_multiplier: 1.0,
            steps: 10,
        };
        assert_eq!(discrete.compose(discrete_event), Ok(()));
        assert_eq!(gaussian.compose(gaussian_event), Ok(()));
        assert_eq!(discrete.epsilon(1e-5), gaussian.epsilon(1e-5));
    }

    fn distributed_round(node_sigma: f64) -> DistributedDiscreteGaussian {
        DistributedDiscreteGaussian {
            encoding: crate::distributed::DiscreteEncoding {
                clip_norm: 1.0,
                granularity: 1e-3,
                dimension: 1 << 10,
                rounding_beta: 1e-2,
            },
            node_sigma,
            min_survivors: 10,
        }
    }

    /// The cached ε is the uncached one bit for bit, after every event of a
    /// sequence mixing subsampled, full-batch and distributed rounds (the
    /// last switches the grid of orders).
    #[test]
    fn cached_rdp_epsilon_equals_the_uncached_one_after_every_event() {
        let events = [
            DpEvent::PoissonSampledGaussian {
                sampling_rate: 0.01,
                noise_multiplier: 1.1,
                steps: 100,
            },
            DpEvent::PoissonSampledGaussian {
                sampling_rate: 0.01,
                noise_multiplier: 1.1,
                steps: 100,
            },
            DpEvent::Gaussian {
                noise_multiplier: 5.0,
            },
            DpEvent::PoissonSampledGaussian {
                sampling_rate: 0.02,
                noise_multiplier: 0.9,
                steps: 50,
            },
            DpEvent::Gaussian {
                noise_multiplier: 7.0,
            },
            DpEvent::DistributedDiscreteGaussian {
                mechanism: distributed_round(400.0),
                rounds: 1,
            },
            DpEvent::PoissonSampledGaussian {
                sampling_rate: 0.01,
                noise_multiplier: 1.1,
                steps: 100,
            },
        ];
        let mut accountant = Accountant::new();
        let mut curves = RdpCurves::default();
        for event in events {
            accountant.compose(event).unwrap();
            for delta in [1e-5, 1e-7] {
                assert_eq!(
                    accountant
                        .epsilon_rdp_cached(delta, &mut curves)
                        .unwrap()
                        .to_bits(),
                    accountant.epsilon_rdp(delta).unwrap().to_bits()
                );
            }
        }
        assert!(curves.gaussian.len() >= 2 && curves.distributed.len() == 1);
    }

    #[test]
    fn distributed_rounds_are_accounted_by_rdp_alone_and_compose_additively() {
        let mechanism = distributed_round(400.0);
        let mut split = Accountant::new();
        let mut joined = Accountant::new();
        for _ in 0..3 {
            let one = DpEvent::DistributedDiscreteGaussian {
                mechanism,
                rounds: 1,
            };
            assert_eq!(split.compose(one), Ok(()));
        }
        let three = DpEvent::DistributedDiscreteGaussian {
            mechanism,
            rounds: 3,
        };
        assert_eq!(joined.compose(three), Ok(()));
        // Identical rounds merge, so three single rounds are three rounds.
        assert_eq!(split, joined);
        assert_eq!(
            split.epsilon_pld(1e-5),
            Err(AccountingError::NotCoveredByPld)
        );
        let report = split.epsilon(1e-5);
        assert!(report.is_ok_and(|report| report.epsilon_pld.is_infinite()
            && report.epsilon == report.epsilon_rdp
            && report.epsilon > 0.0));
        // More rounds can only cost more.
        let mut more = joined.clone();
        assert_eq!(more.compose(three), Ok(()));
        let (Ok(fewer), Ok(more)) = (joined.epsilon_rdp(1e-5), more.epsilon_rdp(1e-5)) else {
            panic!("valid compositions must have an ε");
        };
        assert!(more > fewer, "{more} ≤ {fewer}");
    }

    #[test]
    fn distributed_rounds_add_to_the_central_ones_under_rdp() {
        let mut central = Accountant::new();
        assert_eq!(
            central.compose(DpEvent::Gaussian {
                noise_multiplier: 2.0
            }),
            Ok(())
        );
        let mut mixed = central.clone();
        let event = DpEvent::DistributedDiscreteGaussian {
            mechanism: distributed_round(400.0),
            rounds: 5,
        };
        assert_eq!(mixed.compose(event), Ok(()));
        let (Ok(central), Ok(mixed)) = (central.epsilon(1e-5), mixed.epsilon(1e-5)) else {
            panic!("valid compositions must have an ε");
        };
        assert!(mixed.epsilon > central.epsilon);
        assert!(mixed.epsilon_pld.is_infinite());
    }

    #[test]
    fn invalid_distributed_rounds_are_refused() {
        let mut accountant = Accountant::new();
        let zero_rounds = DpEvent::DistributedDiscreteGaussian {
            mechanism: distributed_round(400.0),
            rounds: 0,
        };
        assert_eq!(
            accountant.compose(zero_rounds),
            Err(AccountingError::ZeroSteps)
        );
        let too_little_noise = DpEvent::DistributedDiscreteGaussian {
            mechanism: distributed_round(0.1),
            rounds: 1,
        };
        assert_eq!(
            accountant.compose(too_little_noise),
            Err(AccountingError::InvalidDiscreteNoise(
                "node_sigma must be at least 0.5 integer units"
            ))
        );
        assert_eq!(accountant, Accountant::new());
    }
}
