//! Privacy loss distributions (PLDs) of the Poisson-subsampled Gaussian:
//! pessimistic connect-the-dots discretisation (Doroshenko et al. 2022),
//! FFT self-composition, and ε(δ) read off the composed distribution.

use crate::bound::{delta_in_unit_interval, epsilon_at_least_zero, mass_at_least_zero};
use crate::error::AccountingError;
use crate::fft::{Complex, Direction, FftPlan, fft_with_plan};
use crate::special::{
    exp_times_normal_cdf, exp_times_normal_sf, normal_cdf, normal_sf, normal_upper_quantile,
};

/// Discretisation and truncation settings. `Default` matches dp-accounting;
/// none of these is a privacy budget, so a default is safe here.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PldConfig {
    /// Spacing of the privacy-loss grid. Smaller is tighter and slower; the
    /// error of connect-the-dots is second order in it.
    pub value_discretization_interval: f64,
    /// Probability mass allowed in each truncated tail (charged to δ or moved
    /// to a pessimistic bin, never silently dropped).
    pub tail_mass_truncation: f64,
    /// Ceiling on bins in any one distribution, to bound memory and time.
    pub max_bins: usize,
}

impl Default for PldConfig {
    fn default() -> Self {
        Self {
            value_discretization_interval: 1e-4,
            tail_mass_truncation: 1e-15,
            max_bins: 1 << 22,
        }
    }
}

impl PldConfig {
    pub(crate) fn validate(&self) -> Result<(), AccountingError> {
        let interval = self.value_discretization_interval;
        if !(interval.is_finite() && interval > 0.0) {
            return Err(AccountingError::InvalidPldConfig(
                "value_discretization_interval must be positive",
            ));
        }
        let tail = self.tail_mass_truncation;
        if !(tail.is_finite() && tail > 0.0 && tail < 1e-6) {
            return Err(AccountingError::InvalidPldConfig(
                "tail_mass_truncation must be in (0, 1e-6)",
            ));
        }
        if self.max_bins < 2 {
            return Err(AccountingError::InvalidPldConfig(
                "max_bins must be at least 2",
            ));
        }
        Ok(())
    }
}

/// Which neighbouring dataset is the larger one. Under add/remove adjacency the
/// reported ε is the larger of the two directions, as in dp-accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adjacency {
    /// `P = (1-q)N(0,σ²) + qN(1,σ²)` against `Q = N(0,σ²)`.
    Remove,
    /// `P = N(0,σ²)` against `Q = (1-q)N(0,σ²) + qN(1,σ²)`.
    Add,
}

/// Both adjacency directions, in the order they are evaluated.
pub const BOTH_ADJACENCIES: [Adjacency; 2] = [Adjacency::Remove, Adjacency::Add];

/// One step of a Poisson-subsampled Gaussian with sensitivity 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SubsampledGaussian {
    /// Poisson sampling probability `q` in `(0, 1]`.
    pub sampling_rate: f64,
    /// Noise standard deviation over sensitivity.
    pub noise_multiplier: f64,
}

impl SubsampledGaussian {
    /// `ln(1 - q + q·exp((2x-1)/(2σ²)))`: the remove-direction privacy loss at
    /// output `x`, written with `ln_1p`/`exp_m1` so small `q` keeps its digits.
    fn remove_loss(&self, x: f64) -> f64 {
        let exponent = (2.0 * x - 1.0) / (2.0 * self.noise_multiplier * self.noise_multiplier);
        if self.sampling_rate >= 1.0 {
            return exponent;
        }
        (self.sampling_rate * exponent.exp_m1()).ln_1p()
    }

    /// The output `x` at which the remove-direction loss equals `epsilon`
    /// (the inverse of `remove_loss`); `-inf` below the loss's lower limit.
    fn remove_threshold(&self, epsilon: f64) -> f64 {
        let variance = self.noise_multiplier * self.noise_multiplier;
        if self.sampling_rate >= 1.0 {
            return variance * epsilon + 0.5;
        }
        let ratio = epsilon.exp_m1() / self.sampling_rate;
        if ratio <= -1.0 {
            return f64::NEG_INFINITY;
        }
        variance * ratio.ln_1p() + 0.5
    }

    /// Exact hockey-stick divergence `δ(ε) = sup_S P(S) - e^ε Q(S)` of one step.
    pub fn delta_for_epsilon(&self, adjacency: Adjacency, epsilon: f64) -> f64 {
        // `clamp` passes NaN through; a δ that cannot be evaluated is 1.
        delta_in_unit_interval(self.delta_unclamped(adjacency, epsilon))
    }

    /// `δ(ε)` before clamping to `[0, 1]`, as connect-the-dots needs it.
    fn delta_unclamped(&self, adjacency: Adjacency, epsilon: f64) -> f64 {
        let q = self.sampling_rate;
        let sigma = self.noise_multiplier;
        match adjacency {
            Adjacency::Remove => {
                // Loss > ε exactly when x > x*; P puts mass q on the shifted Gaussian.
                let threshold = self.remove_threshold(epsilon);
                if threshold == f64::NEG_INFINITY {
                    return -epsilon.exp_m1();
                }
                // ln(e^ε - 1 + q), written so neither large nor small ε loses it.
                let log_factor = if epsilon > 0.0 {
                    epsilon + (-(1.0 - q) * (-epsilon).exp()).ln_1p()
                } else {
                    (epsilon.exp_m1() + q).ln()
                };
                q * normal_sf((threshold - 1.0) / sigma)
                    - exp_times_normal_sf(log_factor, threshold / sigma)
            }
            Adjacency::Add => {
                // Add-direction loss is minus the remove loss, so loss > ε
                // exactly when x < x*(-ε), with x drawn from N(0, σ²).
                let threshold = self.remove_threshold(-epsilon);
                if threshold == f64::NEG_INFINITY {
                    return 0.0;
                }
                // The weights go inside the exponent so q = 1 gives ln(0) = -inf
                // and a clean zero, never 0 · inf.
                let (log_unsampled, log_sampled) = ((-q).ln_1p() + epsilon, q.ln() + epsilon);
                normal_cdf(threshold / sigma)
                    - exp_times_normal_cdf(log_unsampled, threshold / sigma)
                    - exp_times_normal_cdf(log_sampled, (threshold - 1.0) / sigma)
            }
        }
    }

    /// `δ(ε) - (1 - e^ε) = e^ε Q(L ≤ ε) - P(L ≤ ε)`. It differs from δ by a
    /// function linear in `e^ε`, which contributes nothing to connect-the-dots
    /// masses, and it is tiny where δ is near 1: computing masses from
    /// whichever is smaller keeps their rounding error relative, not absolute.
    fn delta_complement(&self, adjacency: Adjacency, epsilon: f64) -> f64 {
        let q = self.sampling_rate;
        let sigma = self.noise_multiplier;
        match adjacency {
            Adjacency::Remove => {
                let threshold = self.remove_threshold(epsilon);
                if threshold == f64::NEG_INFINITY {
                    return 0.0;
                }
                let below = normal_cdf(threshold / sigma);
                let below_shifted = normal_cdf((threshold - 1.0) / sigma);
                exp_times_normal_cdf(epsilon, threshold / sigma)
                    - ((1.0 - q) * below + q * below_shifted)
            }
            Adjacency::Add => {
                let threshold = self.remove_threshold(-epsilon);
                if threshold == f64::NEG_INFINITY {
                    return epsilon.exp_m1();
                }
                let (log_unsampled, log_sampled) = ((-q).ln_1p() + epsilon, q.ln() + epsilon);
                exp_times_normal_sf(log_unsampled, threshold / sigma)
                    + exp_times_normal_sf(log_sampled, (threshold - 1.0) / sigma)
                    - normal_sf(threshold / sigma)
            }
        }
    }

    /// Loss values beyond which each tail holds at most `tail_mass`.
    fn loss_range(&self, adjacency: Adjacency, tail_mass: f64) -> (f64, f64) {
        let z = normal_upper_quantile(tail_mass) * self.noise_multiplier;
        match adjacency {
            // x ~ mixture of N(0,σ²) and N(1,σ²): [-z, 1+z] holds all but 2·tail.
            Adjacency::Remove => (self.remove_loss(-z), self.remove_loss(1.0 + z)),
            // x ~ N(0,σ²) and the loss decreases in x.
            Adjacency::Add => (-self.remove_loss(z), -self.remove_loss(-z)),
        }
    }
}

/// A privacy loss distribution on the grid `{k·h}` plus an atom at `+∞`.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscretePld {
    /// Grid spacing `h`; every composed distribution shares it.
    interval: f64,
    /// Grid index of `masses[0]`: its loss is `lowest_index · h`.
    lowest_index: i64,
    /// Probability of each grid loss.
    masses: Vec<f64>,
    /// Probability of infinite loss; it is charged to δ in full.
    infinity_mass: f64,
}

impl DiscretePld {
    /// The distribution that never leaks: all mass at loss 0.
    pub fn identity(interval: f64) -> Self {
        Self {
            interval,
            lowest_index: 0,
            masses: vec![1.0],
            infinity_mass: 0.0,
        }
    }

    /// Number of grid bins held.
    pub fn len(&self) -> usize {
        self.masses.len()
    }

    /// Whether no bins are held (never true for distributions built here).
    pub fn is_empty(&self) -> bool {
        self.masses.is_empty()
    }

    /// Pessimistic connect-the-dots discretisation of one step.
    ///
    /// The result `ω` is supported on grid points `l_0 < … < l_n` and `+∞` and
    /// has `δ_ω(l_i) = δ(l_i)` at every grid point. Since `δ(ε)` is convex in
    /// `e^ε`, the chords `δ_ω` lie above it everywhere, so `ω` dominates the
    /// mechanism and stays an upper bound under composition.
    pub fn connect_the_dots(
        mechanism: SubsampledGaussian,
        adjacency: Adjacency,
        config: &PldConfig,
    ) -> Result<Self, AccountingError> {
        let interval = config.value_discretization_interval;
        let (lowest_loss, highest_loss) =
            mechanism.loss_range(adjacency, config.tail_mass_truncation);
        let lowest_index = (lowest_loss / interval).floor();
        let highest_index = (highest_loss / interval).ceil();
        let bins = highest_index - lowest_index + 1.0;
        if !(bins.is_finite() && bins <= config.max_bins as f64) {
            return Err(AccountingError::TooManyBins {
                needed: if bins.is_finite() {
                    bins as usize
                } else {
                    usize::MAX
                },
                limit: config.max_bins,
            });
        }
        let lowest_index = lowest_index as i64;
        let bins = bins as usize;
        let loss_at = |offset: usize| (lowest_index + offset as i64) as f64 * interval;
        let deltas: Vec<f64> = (0..bins)
            .map(|offset| mechanism.delta_unclamped(adjacency, loss_at(offset)))
            .collect();
        if deltas.iter().any(|delta| delta.is_nan()) {
            return Err(AccountingError::NotANumber(
                "delta(epsilon) of one step on the PLD grid",
            ));
        }
        // Where the complement is the smaller curve (cheaply estimated from δ),
        // compute it accurately at that point and both neighbours; the top
        // point always uses δ, whose slope above it is zero.
        let prefers_complement: Vec<bool> = deltas
            .iter()
            .enumerate()
            .map(|(offset, delta)| {
                offset + 1 < bins && (delta + loss_at(offset).exp_m1()).abs() < *delta
            })
            .collect();
        let mut complements = vec![0.0; bins];
        let mut computed = vec![false; bins];
        for offset in
            (0..bins).filter(|&offset| prefers_complement.get(offset).copied().unwrap_or(false))
        {
            for neighbour in offset.saturating_sub(1)..=(offset + 1).min(bins - 1) {
                if let (Some(value), Some(done)) =
                    (complements.get_mut(neighbour), computed.get_mut(neighbour))
                    && !*done
                {
                    *value = mechanism.delta_complement(adjacency, loss_at(neighbour));
                    *done = true;
                }
            }
        }
        let growth = interval.exp();
        let growth_minus_one = interval.exp_m1();
        let mut masses = vec![0.0; bins];
        // p_j = [e^h (δ_{j-1} - δ_j) - (δ_j - δ_{j+1})] / (e^h - 1), with the
        // slope above the top point zero (only the atom at +∞ lives there).
        for (j, mass) in masses.iter_mut().enumerate().skip(1) {
            let use_complement = prefers_complement.get(j).copied().unwrap_or(false);
            let curve = if use_complement {
                &complements
            } else {
                &deltas
            };
            let previous = curve.get(j - 1).copied().unwrap_or(0.0);
            let current = curve.get(j).copied().unwrap_or(0.0);
            let next = curve.get(j + 1).copied().unwrap_or(current);
            let value = (growth * (previous - current) - (current - next)) / growth_minus_one;
            // Negative values are rounding noise in far tails, where δ is flat.
            // NaN stays NaN and is refused below: zeroing it would move its
            // mass to the lowest loss, which is optimistic.
            *mass = mass_at_least_zero(value);
        }
        let infinity_mass = delta_in_unit_interval(deltas.last().copied().unwrap_or(0.0));
        let finite_above_lowest: f64 = masses.iter().skip(1).sum();
        if finite_above_lowest.is_nan() {
            return Err(AccountingError::NotANumber(
                "connect-the-dots probability masses",
            ));
        }
        if let Some(lowest) = masses.first_mut() {
            // Everything else sits at the lowest grid point: the chord from
            // (e^ε = 0, δ = 1) keeps the curve pessimistic below l_0 too.
            *lowest = (1.0 - infinity_mass - finite_above_lowest).max(0.0);
        }
        Ok(Self {
            interval,
            lowest_index,
            masses,
            infinity_mass,
        })
    }

    /// `ln E[exp(λ L)]` over the finite part, for `λ` of either sign, computed
    /// by scaling from the end the exponent grows towards so nothing overflows.
    fn log_moment(&self, lambda: f64) -> f64 {
        let step_factor = (-lambda.abs() * self.interval).exp();
        let mut weight = 1.0_f64;
        let mut sum = 0.0_f64;
        let bins = self.masses.len();
        for offset in 0..bins {
            let index = if lambda > 0.0 {
                bins - 1 - offset
            } else {
                offset
            };
            sum += self.masses.get(index).copied().unwrap_or(0.0) * weight;
            weight *= step_factor;
            if weight < 1e-300 {
                break;
            }
        }
        let anchor_index = if lambda > 0.0 {
            self.lowest_index + bins as i64 - 1
        } else {
            self.lowest_index
        };
        sum.ln() + lambda * anchor_index as f64 * self.interval
    }

    /// Grid indices outside which the `times`-fold composition holds at most
    /// `tail_mass` per tail, by Chernoff bounds over a grid of orders.
    fn composed_index_bounds(&self, times: u64, tail_mass: f64) -> (i64, i64) {
        let times_f = times as f64;
        let log_inverse_tail = -tail_mass.ln();
        let mut upper = f64::INFINITY;
        let mut lower = f64::NEG_INFINITY;
        // λ from 2^-8 to 2^12 in steps of √2: the optimum for a 1e-15 tail of
        // any schedule we account lies well inside, and each λ costs a pass.
        for exponent in -16..=24 {
            let lambda = 2.0_f64.powf(f64::from(exponent) / 2.0);
            let upper_candidate = (times_f * self.log_moment(lambda) + log_inverse_tail) / lambda;
            if upper_candidate.is_finite() {
                upper = upper.min(upper_candidate);
            }
            let lower_candidate = -(times_f * self.log_moment(-lambda) + log_inverse_tail) / lambda;
            if lower_candidate.is_finite() {
                lower = lower.max(lower_candidate);
            }
        }
        let support_low = self.lowest_index.saturating_mul(times as i64);
        let support_high =
            (self.lowest_index + self.masses.len() as i64 - 1).saturating_mul(times as i64);
        let upper_index = if upper.is_finite() {
            ((upper / self.interval).ceil() as i64).min(support_high)
        } else {
            support_high
        };
        let lower_index = if lower.is_finite() {
            ((lower / self.interval).floor() as i64).max(support_low)
        } else {
            support_low
        };
        (lower_index, upper_index.max(lower_index))
    }

    /// The `times`-fold self-composition, with one forward FFT, a pointwise
    /// power and one inverse FFT over a window sized by Chernoff bounds.
    ///
    /// Mass above the window (at most `tail_mass_truncation`) is charged to
    /// `+∞`; mass below it, and any cyclic aliasing, lands inside the window,
    /// so losses only ever move up: the result stays pessimistic.
    pub fn self_compose(&self, times: u64, config: &PldConfig) -> Result<Self, AccountingError> {
        let [composed, _] = Self::self_compose_pair([self, self], times, config)?;
        Ok(composed)
    }

    /// [`Self::self_compose`] for two distributions at once (typically the
    /// remove and add directions): both are real, so they travel as the real
    /// and imaginary parts of one complex transform, halving the FFT work.
    pub fn self_compose_pair(
        pair: [&Self; 2],
        times: u64,
        config: &PldConfig,
    ) -> Result<[Self; 2], AccountingError> {
        let [first, second] = pair;
        if times <= 1 {
            return Ok([first.clone(), second.clone()]);
        }
        let tail_mass = config.tail_mass_truncation;
        let bounds = [
            first.composed_index_bounds(times, tail_mass),
            second.composed_index_bounds(times, tail_mass),
        ];
        let mut transform_length: usize = 1;
        for ((lower_index, upper_index), pld) in bounds.iter().zip(pair) {
            let window = usize::try_from(upper_index - lower_index + 1).unwrap_or(usize::MAX);
            let needed = window
                .max(pld.masses.len())
                .checked_next_power_of_two()
                .unwrap_or(usize::MAX);
            transform_length = transform_length.max(needed);
        }
        if transform_length > config.max_bins {
            return Err(AccountingError::TooManyBins {
                needed: transform_length,
                limit: config.max_bins,
            });
        }
        let mut spectrum = vec![Complex::default(); transform_length];
        for (slot, mass) in spectrum.iter_mut().zip(&first.masses) {
            slot.re = *mass;
        }
        for (slot, mass) in spectrum.iter_mut().zip(&second.masses) {
            slot.im = *mass;
        }
        let plan = FftPlan::new(transform_length);
        fft_with_plan(&mut spectrum, &plan, Direction::Forward);
        for k in 0..=transform_length / 2 {
            let mirror = (transform_length - k) % transform_length;
            let z = spectrum.get(k).copied().unwrap_or_default();
            let w = spectrum.get(mirror).copied().unwrap_or_default();
            // Separate the two real inputs' spectra by conjugate symmetry:
            // F_k = (z_k + conj(z_{-k}))/2, G_k = (z_k - conj(z_{-k}))/(2i).
            let first_spectrum = Complex {
                re: 0.5 * (z.re + w.re),
                im: 0.5 * (z.im - w.im),
            }
            .pow(times);
            let second_spectrum = Complex {
                re: 0.5 * (z.im + w.im),
                im: -0.5 * (z.re - w.re),
            }
            .pow(times);
            // Recombine as F^n + i·G^n; bin -k holds conj(F^n) + i·conj(G^n).
            if let Some(slot) = spectrum.get_mut(k) {
                *slot = Complex {
                    re: first_spectrum.re - second_spectrum.im,
                    im: first_spectrum.im + second_spectrum.re,
                };
            }
            if mirror != k
                && let Some(slot) = spectrum.get_mut(mirror)
            {
                *slot = Complex {
                    re: first_spectrum.re + second_spectrum.im,
                    im: second_spectrum.re - first_spectrum.im,
                };
            }
        }
        fft_with_plan(&mut spectrum, &plan, Direction::Inverse);
        let [first_bounds, second_bounds] = bounds;
        Ok([
            first.read_composed(&spectrum, |value| value.re, times, first_bounds, tail_mass)?,
            second.read_composed(&spectrum, |value| value.im, times, second_bounds, tail_mass)?,
        ])
    }

    /// Reads this distribution's `times`-fold composition out of the cyclic
    /// inverse transform and settles the truncated tails pessimistically.
    /// Refuses a transform holding NaN instead of reading it as zero mass.
    fn read_composed(
        &self,
        spectrum: &[Complex],
        part: fn(&Complex) -> f64,
        times: u64,
        (lower_index, upper_index): (i64, i64),
        tail_mass: f64,
    ) -> Result<Self, AccountingError> {
        // Composed grid index s sits at (s - times·lowest) mod length.
        let base = self.lowest_index.saturating_mul(times as i64);
        let length = spectrum.len().max(1) as i64;
        let mut masses: Vec<f64> = (lower_index..=upper_index)
            .map(|index| {
                let position = (index - base).rem_euclid(length) as usize;
                spectrum
                    .get(position)
                    .map_or(0.0, |value| mass_at_least_zero(part(value)))
            })
            .collect();
        if masses.iter().any(|mass| mass.is_nan()) || self.infinity_mass.is_nan() {
            return Err(AccountingError::NotANumber(
                "self-composed probability masses",
            ));
        }
        let finite_survival = times as f64 * (-self.infinity_mass).ln_1p();
        let infinity_mass = (-finite_survival.exp_m1() + tail_mass).min(1.0);
        let window_total: f64 = masses.iter().sum();
        let missing = finite_survival.exp() - window_total;
        if missing > 0.0
            && let Some(lowest) = masses.first_mut()
        {
            *lowest += missing;
        }
        Ok(Self {
            interval: self.interval,
            lowest_index: lower_index,
            masses,
            infinity_mass,
        })
    }

    /// Composition with an independent mechanism on the same grid.
    pub fn compose(&self, other: &Self, config: &PldConfig) -> Result<Self, AccountingError> {
        let needed = self.masses.len() + other.masses.len();
        if needed > config.max_bins {
            return Err(AccountingError::TooManyBins {
                needed,
                limit: config.max_bins,
            });
        }
        let masses: Vec<f64> = crate::fft::convolve(&self.masses, &other.masses)
            .into_iter()
            .map(mass_at_least_zero)
            .collect();
        let infinity_mass = 1.0 - (1.0 - self.infinity_mass) * (1.0 - other.infinity_mass);
        if masses.iter().any(|mass| mass.is_nan()) || infinity_mass.is_nan() {
            return Err(AccountingError::NotANumber("composed probability masses"));
        }
        let composed = Self {
            interval: self.interval,
            lowest_index: self.lowest_index + other.lowest_index,
            masses,
            infinity_mass,
        };
        Ok(composed.truncate_tails(config.tail_mass_truncation))
    }

    /// Drops tails of at most `tail_mass` each: the upper one to `+∞`, the lower
    /// one onto the lowest kept bin (rounding losses up), so δ never shrinks.
    fn truncate_tails(mut self, tail_mass: f64) -> Self {
        let mut dropped_top = 0.0;
        while self.masses.len() > 1 {
            let top = self.masses.last().copied().unwrap_or(0.0);
            if dropped_top + top > tail_mass {
                break;
            }
            dropped_top += top;
            self.masses.pop();
        }
        self.infinity_mass += dropped_top;
        let mut dropped_bottom = 0.0;
        let mut first_kept = 0;
        while first_kept + 1 < self.masses.len() {
            let mass = self.masses.get(first_kept).copied().unwrap_or(0.0);
            if dropped_bottom + mass > tail_mass {
                break;
            }
            dropped_bottom += mass;
            first_kept += 1;
        }
        self.masses.drain(..first_kept);
        self.lowest_index += first_kept as i64;
        if let Some(lowest) = self.masses.first_mut() {
            *lowest += dropped_bottom;
        }
        self
    }

    /// `δ(ε) = m∞ + Σ_k p_k (1 - e^{ε - l_k})₊`.
    pub fn delta_for_epsilon(&self, epsilon: f64) -> f64 {
        let mut delta = self.infinity_mass;
        for (offset, mass) in self.masses.iter().enumerate() {
            let loss = (self.lowest_index + offset as i64) as f64 * self.interval;
            if loss > epsilon {
                delta += mass * -(epsilon - loss).exp_m1();
            }
        }
        // NaN (from a NaN mass) is read as δ = 1, no guarantee.
        delta_in_unit_interval(delta)
    }

    /// The smallest `ε ≥ 0` with `δ(ε) ≤ delta`; `+inf` if even `ε = ∞` fails.
    ///
    /// Walks the grid from the top, keeping `S = Σ p_k` and `W = Σ p_k e^{-l_k}`
    /// of the bins above; between grid points `δ(ε) = m∞ + S - e^ε W`.
    /// Any NaN mass or δ gives `+inf`, never a smaller ε.
    pub fn epsilon_for_delta(&self, delta: f64) -> f64 {
        // `NaN > δ` is false, so a NaN atom at +∞ would otherwise walk on
        // and end at ε = 0.
        if self.infinity_mass.is_nan()
            || delta.is_nan()
            || self.masses.iter().any(|mass| mass.is_nan())
            || self.infinity_mass > delta
        {
            return f64::INFINITY;
        }
        // W is kept relative to the current bin, W_k = Σ_{j≥k} p_j e^{-(l_j - l_k)},
        // so no exponent is ever positive: losses in the thousands neither
        // overflow nor underflow it.
        let mut mass_above = 0.0;
        let mut weighted_above = 0.0;
        let step_down = (-self.interval).exp();
        for offset in (0..self.masses.len()).rev() {
            let loss = (self.lowest_index + offset as i64) as f64 * self.interval;
            let mass = self.masses.get(offset).copied().unwrap_or(0.0);
            mass_above += mass;
            weighted_above = weighted_above * step_down + mass;
            let delta_one_step_down = self.infinity_mass + mass_above - step_down * weighted_above;
            if delta_one_step_down > delta {
                // The crossing lies in [loss - h, loss]: e^{ε - l_k} W_k = m∞ + S - δ.
                let epsilon =
                    loss + ((self.infinity_mass + mass_above - delta) / weighted_above).ln();
                return epsilon_at_least_zero(epsilon);
            }
        }
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mechanism(q: f64, sigma: f64) -> SubsampledGaussian {
        SubsampledGaussian {
            sampling_rate: q,
            noise_multiplier: sigma,
        }
    }

    #[test]
    fn discretised_step_is_a_probability_distribution() {
        let config = PldConfig::default();
        for adjacency in BOTH_ADJACENCIES {
            let pld = DiscretePld::connect_the_dots(mechanism(0.01, 1.1), adjacency, &config)
                .unwrap_or_else(|_| DiscretePld::identity(1.0));
            let total: f64 = pld.masses.iter().sum::<f64>() + pld.infinity_mass;
            // Masses are built from differences of δ values near 1e-2 with
            // ~1e-16 error each, over ~3e4 bins: 1e-9 is a safe bound.
            assert!((total - 1.0).abs() < 1e-9, "{adjacency:?}: total {total}");
        }
    }

    #[test]
    fn discretisation_is_pessimistic_on_and_off_the_grid() {
        let config = PldConfig {
            value_discretization_interval: 1e-2,
            ..PldConfig::default()
        };
        let step = mechanism(0.2, 0.9);
        for adjacency in BOTH_ADJACENCIES {
            let pld = DiscretePld::connect_the_dots(step, adjacency, &config)
                .unwrap_or_else(|_| DiscretePld::identity(1.0));
            for tenth in 0..60 {
                let epsilon = f64::from(tenth) * 0.0137;
                let exact = step.delta_for_epsilon(adjacency, epsilon);
                let discrete = pld.delta_for_epsilon(epsilon);
                // Pessimism must hold up to float rounding (1e-12 absolute).
                assert!(
                    discrete >= exact - 1e-12,
                    "{adjacency:?} ε={epsilon}: {discrete} < {exact}"
                );
            }
        }
    }

    #[test]
    fn huge_losses_neither_overflow_nor_vanish() {
        // At ε = 800, e^ε overflows f64; the curve must still be the analytic
        // Gaussian's (σ = 0.02, q = 1), which the log-space products keep.
        let step = mechanism(1.0, 0.02);
        for adjacency in BOTH_ADJACENCIES {
            let ours = step.delta_for_epsilon(adjacency, 800.0);
            let exact = crate::analytic_gaussian::analytic_gaussian_delta(0.02, 800.0);
            // Both evaluate the same two normal tails; 1e-9 relative is rounding.
            assert!(
                ours.is_finite() && (ours - exact).abs() <= 1e-9 * exact,
                "{adjacency:?}: {ours} vs {exact}"
            );
        }
        // A distribution whose losses sit near 3000 must report ε near 3000,
        // not +inf from e^{-3000} underflowing to zero.
        let far = DiscretePld {
            interval: 1.0,
            lowest_index: 2999,
            masses: vec![0.5, 0.5],
            infinity_mass: 0.0,
        };
        let epsilon = far.epsilon_for_delta(1e-5);
        assert!((2999.0..=3000.0).contains(&epsilon), "{epsilon}");
    }

    #[test]
    fn not_a_number_masses_give_no_guarantee() {
        // Regression: `NaN > δ` is false and `NaN.max(0.0)` is 0, so a NaN
        // atom or bin used to read as ε = 0.
        let nan_atom = DiscretePld {
            interval: 1e-2,
            lowest_index: 0,
            masses: vec![0.5, 0.5],
            infinity_mass: f64::NAN,
        };
        assert_eq!(nan_atom.epsilon_for_delta(1e-5), f64::INFINITY);
        assert_eq!(nan_atom.delta_for_epsilon(1.0), 1.0);
        let nan_bin = DiscretePld {
            masses: vec![f64::NAN, 1.0],
            infinity_mass: 0.0,
            ..nan_atom.clone()
        };
        assert_eq!(nan_bin.epsilon_for_delta(1e-5), f64::INFINITY);
        assert_eq!(
            DiscretePld::identity(1e-2).epsilon_for_delta(f64::NAN),
            f64::INFINITY
        );
        let config = PldConfig::default();
        let identity = DiscretePld::identity(1e-2);
        assert_eq!(
            nan_bin.compose(&identity, &config),
            Err(AccountingError::NotANumber("composed probability masses"))
        );
        assert_eq!(
            nan_bin.self_compose(3, &config),
            Err(AccountingError::NotANumber(
                "self-composed probability masses"
            ))
        );
    }

    #[test]
    fn not_a_number_mechanisms_are_refused_or_unbounded() {
        let config = PldConfig::default();
        for adjacency in BOTH_ADJACENCIES {
            // A NaN loss range cannot be gridded; refused, never a distribution.
            let refused =
                DiscretePld::connect_the_dots(mechanism(f64::NAN, 1.0), adjacency, &config);
            assert!(
                matches!(refused, Err(AccountingError::TooManyBins { .. })),
                "{adjacency:?}: {refused:?}"
            );
            // `clamp` passes NaN through; δ must read as 1 instead.
            assert_eq!(
                mechanism(f64::NAN, 1.0).delta_for_epsilon(adjacency, 1.0),
                1.0
            );
        }
    }

    #[test]
    fn epsilon_and_delta_are_inverse() {
        let config = PldConfig::default();
        let pld = DiscretePld::connect_the_dots(mechanism(0.05, 1.0), Adjacency::Remove, &config)
            .and_then(|pld| pld.self_compose(200, &config))
            .unwrap_or_else(|_| DiscretePld::identity(1.0));
        let epsilon = pld.epsilon_for_delta(1e-5);
        // Relative 1e-9: the solve is closed form inside one grid cell.
        let delta = pld.delta_for_epsilon(epsilon);
        assert!(
            (delta - 1e-5).abs() < 1e-9 * 1e-5 + 1e-15,
            "δ(ε(1e-5)) = {delta}"
        );
    }

    #[test]
    fn fft_self_composition_matches_repeated_composition() {
        let config = PldConfig {
            value_discretization_interval: 1e-3,
            ..PldConfig::default()
        };
        let single = DiscretePld::connect_the_dots(mechanism(0.1, 1.0), Adjacency::Remove, &config)
            .unwrap_or_else(|_| DiscretePld::identity(1.0));
        let mut repeated = single.clone();
        for _ in 1..8 {
            repeated = repeated
                .compose(&single, &config)
                .unwrap_or_else(|_| DiscretePld::identity(1.0));
        }
        let direct = single
            .self_compose(8, &config)
            .unwrap_or_else(|_| DiscretePld::identity(1.0));
        let (a, b) = (
            repeated.epsilon_for_delta(1e-5),
            direct.epsilon_for_delta(1e-5),
        );
        // Both are the same convolution up to ~1e-15 tail handling: 1e-9 relative.
        assert!((a - b).abs() < 1e-9 * a, "{a} vs {b}");
    }
}
