//! Likelihoods of grouped data, shared by both models.
//!
//! A group is a set of customers known only to lie in one of several cells
//! (a histogram bin: a range of days, of repeat counts or of spend), so its
//! likelihood is the probability of the bin: the sum over the cells of each
//! cell's likelihood times a parameter-free weight (the density's Jacobian,
//! for example `t^(x-1)/(x-1)!` for the position of the last purchase). A
//! customer known exactly is a group of one cell, and then this is the plain
//! per-customer likelihood. Maximising the grouped likelihood is the maximum
//! likelihood estimate from the binned data, so binning costs precision but
//! adds no bias beyond the quadrature of each bin.

use crate::error::LifetimeValueError;
use crate::optimise::minimise;

/// One term of a group's likelihood.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Cell<D> {
    /// `x`, repeat purchases.
    pub frequency: f64,
    /// Index of `frequency` among the distinct frequencies, so terms in `x`
    /// alone (Gamma functions, the expensive part) are evaluated once per
    /// distinct `x` per evaluation; set by [`index_frequencies`].
    pub frequency_index: usize,
    /// The model's other data for the cell.
    pub data: D,
    /// Log of the cell's parameter-free weight (0 for an exactly known customer).
    pub log_weight: f64,
}

/// Customers who share a bin, and how many there are.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Group<D> {
    /// How many customers the group holds (the bin's count, which noise can
    /// make negative).
    pub weight: f64,
    /// The cells the customers may be in.
    pub cells: Vec<Cell<D>>,
}

impl<D> Cell<D> {
    /// A cell for a customer known exactly.
    pub(crate) fn exact(frequency: f64, data: D) -> Self {
        Self {
            frequency,
            frequency_index: 0,
            data,
            log_weight: 0.0,
        }
    }
}

/// Sets every cell's `frequency_index` and returns the distinct frequencies.
pub(crate) fn index_frequencies<D>(groups: &mut [Group<D>]) -> Vec<f64> {
    let mut frequencies: Vec<f64> = groups
        .iter()
        .flat_map(|group| group.cells.iter().map(|cell| cell.frequency))
        .collect();
    frequencies.sort_by(f64::total_cmp);
    frequencies.dedup();
    for cell in groups.iter_mut().flat_map(|group| group.cells.iter_mut()) {
        cell.frequency_index = frequencies.partition_point(|&f| f < cell.frequency);
    }
    frequencies
}

/// What a fit assumes about the parameters before it sees the data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Prior {
    /// Nothing: maximum likelihood, as `lifetimes` fits without a penalizer.
    None,
    /// Each log-parameter `N(0, scale²)`: the fit is the posterior mode.
    /// A noised histogram can favour a limit at infinity (`r, α → ∞` with
    /// `r/α` fixed, every customer the same purchase rate; or `q, γ → ∞` for
    /// spend), which the minimiser walks towards for thousands of
    /// iterations; a prior that weak (scale e^5 ≈ 150 either way of 1, in
    /// the fit's units) stops the walk and moves a fit of thousands of
    /// customers by far less than its sampling error.
    LogNormal { scale: f64 },
}

/// Maximum likelihood (or, with a [`Prior`], the posterior mode) over
/// groups: drops empty groups, refuses data whose total weight is not
/// positive, and minimises `objective` (the mean negative log-likelihood and
/// its gradient in the log-parameters, given the groups, their distinct
/// frequencies and total weight), plus the prior's negative log-density over
/// the total weight, from lifetimes' starting point, every log-parameter
/// 0.1. Returns the parameters themselves.
pub(crate) fn fit<D, const P: usize>(
    model: &'static str,
    mut groups: Vec<Group<D>>,
    prior: Prior,
    objective: impl Fn(&[f64], &[Group<D>], &[f64], f64, &mut [f64]) -> f64,
) -> Result<[f64; P], LifetimeValueError> {
    groups.retain(|group| group.weight != 0.0);
    let total_weight: f64 = groups.iter().map(|group| group.weight).sum();
    if !(total_weight.is_finite() && total_weight > 0.0) {
        return Err(LifetimeValueError::NoCustomers {
            model,
            total_weight,
        });
    }
    let frequencies = index_frequencies(&mut groups);
    let minimum = minimise(
        |log_parameters: &[f64], gradient: &mut [f64]| {
            let value = objective(
                log_parameters,
                &groups,
                &frequencies,
                total_weight,
                gradient,
            );
            match prior {
                Prior::None => value,
                Prior::LogNormal { scale } => {
                    let precision = 1.0 / (scale * scale * total_weight);
                    let mut penalty = 0.0;
                    for (derivative, x) in gradient.iter_mut().zip(log_parameters) {
                        penalty += 0.5 * precision * x * x;
                        *derivative += precision * x;
                    }
                    value + penalty
                }
            }
        },
        &[0.1; P],
    )
    .map_err(|failure| LifetimeValueError::FitDidNotConverge {
        model,
        iterations: failure.iterations,
        gradient_norm: failure.gradient_norm,
    })?;
    Ok(std::array::from_fn(|i| minimum.point[i].exp()))
}

/// `(1/W) Σ_g w_g ln Σ_c exp(ℓ_c)` and its gradient in the model's `P`
/// parameters, where `cell` returns `ℓ_c` (including the log-weight) and
/// writes its gradient.
pub(crate) fn mean_log_likelihood<D, const P: usize>(
    groups: &[Group<D>],
    total_weight: f64,
    mut cell: impl FnMut(&Cell<D>, &mut [f64; P]) -> f64,
) -> (f64, [f64; P]) {
    let mut value = 0.0;
    let mut gradient = [0.0; P];
    let mut cell_values: Vec<f64> = Vec::new();
    let mut cell_gradients: Vec<[f64; P]> = Vec::new();
    for group in groups {
        if let [only] = group.cells.as_slice() {
            let mut cell_gradient = [0.0; P];
            value += group.weight * cell(only, &mut cell_gradient);
            for (total, part) in gradient.iter_mut().zip(cell_gradient) {
                *total += group.weight * part;
            }
            continue;
        }
        cell_values.clear();
        cell_gradients.clear();
        for each in &group.cells {
            let mut cell_gradient = [0.0; P];
            cell_values.push(cell(each, &mut cell_gradient));
            cell_gradients.push(cell_gradient);
        }
        let largest = cell_values.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
        if !largest.is_finite() {
            // A bin the parameters give probability 0 (or NaN): the objective
            // is outside its domain here, which the line search steps back from.
            return (f64::NAN, gradient);
        }
        let scaled: Vec<f64> = cell_values.iter().map(|v| (v - largest).exp()).collect();
        let sum: f64 = scaled.iter().sum();
        value += group.weight * (largest + sum.ln());
        for (share, cell_gradient) in scaled.iter().zip(&cell_gradients) {
            for (total, part) in gradient.iter_mut().zip(cell_gradient) {
                *total += group.weight * share / sum * part;
            }
        }
    }
    for total in &mut gradient {
        *total /= total_weight;
    }
    (value / total_weight, gradient)
}

/// Test support: the analytic gradient of `objective` agrees with central
/// differences at `at`.
#[cfg(test)]
pub(crate) fn assert_gradient_matches_central_differences<const P: usize>(
    objective: impl Fn(&[f64; P], &mut [f64; P]) -> f64,
    at: [f64; P],
) {
    let mut gradient = [0.0; P];
    objective(&at, &mut gradient);
    for i in 0..P {
        let h = 1e-6;
        let (mut plus, mut minus) = (at, at);
        plus[i] += h;
        minus[i] -= h;
        let mut scratch = [0.0; P];
        let numeric =
            (objective(&plus, &mut scratch) - objective(&minus, &mut scratch)) / (2.0 * h);
        // Central differences at h = 1e-6 are accurate to ~1e-9 for these
        // smooth objectives of order 1.
        assert!(
            (gradient[i] - numeric).abs() < 1e-7,
            "component {i}: {} vs {numeric}",
            gradient[i]
        );
    }
}
