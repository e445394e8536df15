//! A small quasi-Newton minimiser (BFGS with a backtracking Armijo line
//! search) for the three- and four-parameter likelihoods of this crate.
//!
//! Dense BFGS is the right size here: the Hessian approximation is 4×4, every
//! objective evaluation is a pass over the data, and near the optimum BFGS
//! converges superlinearly, so the gradient can be driven to 1e-10 in a few
//! dozen evaluations. The objectives are evaluated on log-parameters, so no
//! step can leave the positive domain.

/// Iterations before giving up.
const MAX_ITERATIONS: usize = 1_000;

/// Converged when every gradient component of the (mean) objective is below
/// this: for the log-parameters of BG/NBD and Gamma-Gamma, whose mean
/// log-likelihood has curvature of order 1e-3 or more, that places the
/// parameters within about 1e-7 relative of the optimum.
const GRADIENT_TOLERANCE: f64 = 1e-10;

/// When the line search can no longer decrease the objective (the decrease is
/// below f64 rounding of the sum), a gradient this small is accepted as
/// converged; anything larger is reported as a failure.
const STALLED_GRADIENT_TOLERANCE: f64 = 1e-7;

/// After every iteration is used, a gradient this small is accepted: the
/// minimiser is creeping along a flat ridge towards a boundary of the
/// parameter space (the likelihood of a noised histogram can peak at `b → ∞`
/// or `a → 0`), where the objective, and so every prediction, changes by
/// less than this per unit of log-parameter. Anything larger is a failure.
const FLAT_RIDGE_GRADIENT_TOLERANCE: f64 = 1e-4;

/// Consecutive iterations without a decrease beyond rounding after which the
/// minimiser stops (converged if the gradient is below
/// [`FLAT_RIDGE_GRADIENT_TOLERANCE`], failed otherwise: a noised Gamma-Gamma
/// histogram stalled at a gradient of 1.7e-7, just above
/// [`STALLED_GRADIENT_TOLERANCE`], with nothing left to gain). On a likelihood that
/// a noised histogram makes unbounded, the line search keeps accepting
/// vanishing steps that leave the objective where it is; without this, each
/// of the remaining iterations would still cost [`MAX_BACKTRACKS`]
/// evaluations.
const MAX_STALLED_ITERATIONS: usize = 5;

/// No single step moves a log-parameter by more than this (a factor e^4 ≈ 55),
/// so an early quasi-Newton step cannot fly to where the likelihood overflows.
const MAX_STEP: f64 = 4.0;

/// Armijo's sufficient-decrease constant.
const ARMIJO: f64 = 1e-4;

/// Halvings of the step before the line search gives up.
const MAX_BACKTRACKS: usize = 60;

/// Where the minimiser stopped.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Minimum {
    /// The minimising point.
    pub point: Vec<f64>,
}

/// Why the minimiser did not reach a stationary point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct NotConverged {
    /// Iterations run.
    pub iterations: usize,
    /// Largest gradient component where it stopped.
    pub gradient_norm: f64,
}

fn max_abs(values: &[f64]) -> f64 {
    values
        .iter()
        .fold(0.0, |largest, value| largest.max(value.abs()))
}

fn dot(left: &[f64], right: &[f64]) -> f64 {
    left.iter().zip(right).map(|(l, r)| l * r).sum()
}

/// Minimises `objective`, which returns the value at a point and writes the
/// gradient into its second argument. A non-finite value means "outside the
/// domain" and makes the line search step back.
pub(crate) fn minimise<F>(mut objective: F, start: &[f64]) -> Result<Minimum, NotConverged>
where
    F: FnMut(&[f64], &mut [f64]) -> f64,
{
    let n = start.len();
    let mut point = start.to_vec();
    let mut gradient = vec![0.0; n];
    let mut value = objective(&point, &mut gradient);
    if !value.is_finite() || gradient.iter().any(|g| !g.is_finite()) {
        return Err(NotConverged {
            iterations: 0,
            gradient_norm: f64::INFINITY,
        });
    }
    // Inverse Hessian approximation, row-major.
    let mut inverse_hessian = identity(n);
    let mut first_update = true;
    let mut trial = vec![0.0; n];
    let mut trial_gradient = vec![0.0; n];
    let mut stalled_iterations = 0;
    for iteration in 0..MAX_ITERATIONS {
        let gradient_norm = max_abs(&gradient);
        if gradient_norm < GRADIENT_TOLERANCE {
            return Ok(Minimum { point });
        }
        let mut direction: Vec<f64> = (0..n)
            .map(|row| -dot(&inverse_hessian[row * n..(row + 1) * n], &gradient))
            .collect();
        let mut slope = dot(&gradient, &direction);
        // `slope` can be NaN only if the gradient were, which evaluation rules out;
        // a non-negative slope means H is no longer positive definite.
        if slope >= 0.0 || slope.is_nan() {
            // The approximation lost positive definiteness: restart from steepest descent.
            inverse_hessian = identity(n);
            first_update = true;
            direction = gradient.iter().map(|g| -g).collect();
            slope = dot(&gradient, &direction);
        }
        let longest = max_abs(&direction);
        let mut step = if longest > MAX_STEP {
            MAX_STEP / longest
        } else {
            1.0
        };
        let mut accepted = None;
        for _ in 0..MAX_BACKTRACKS {
            for ((t, p), d) in trial.iter_mut().zip(&point).zip(&direction) {
                *t = p + step * d;
            }
            let trial_value = objective(&trial, &mut trial_gradient);
            let finite = trial_value.is_finite() && trial_gradient.iter().all(|g| g.is_finite());
            // The 1e-15·|f| slack lets a step through whose decrease is lost in
            // the rounding of a sum over many customers.
            if finite && trial_value <= value + ARMIJO * step * slope + 1e-15 * value.abs() {
                accepted = Some(trial_value);
                break;
            }
            step *= 0.5;
        }
        let Some(trial_value) = accepted else {
            return if gradient_norm < STALLED_GRADIENT_TOLERANCE {
                Ok(Minimum { point })
            } else {
                Err(NotConverged {
                    iterations: iteration,
                    gradient_norm,
                })
            };
        };
        let displacement: Vec<f64> = trial.iter().zip(&point).map(|(t, p)| t - p).collect();
        let gradient_change: Vec<f64> = trial_gradient
            .iter()
            .zip(&gradient)
            .map(|(t, g)| t - g)
            .collect();
        let curvature = dot(&displacement, &gradient_change);
        if curvature > 1e-12 * dot(&displacement, &displacement).sqrt() * max_abs(&gradient_change)
        {
            if first_update {
                // Nocedal & Wright (6.20): scale the initial guess to the observed curvature.
                let scale = curvature / dot(&gradient_change, &gradient_change);
                inverse_hessian = identity(n).into_iter().map(|v| v * scale).collect();
                first_update = false;
            }
            bfgs_update(
                &mut inverse_hessian,
                &displacement,
                &gradient_change,
                curvature,
            );
        }
        let stalled = value - trial_value <= 1e-16 * value.abs();
        point.copy_from_slice(&trial);
        gradient.copy_from_slice(&trial_gradient);
        value = trial_value;
        stalled_iterations = if stalled { stalled_iterations + 1 } else { 0 };
        let gradient_norm = max_abs(&gradient);
        if stalled && gradient_norm < STALLED_GRADIENT_TOLERANCE {
            return Ok(Minimum { point });
        }
        if stalled_iterations >= MAX_STALLED_ITERATIONS {
            // No step changes the objective beyond rounding any more: the same
            // flat ridge as after every iteration is used, found sooner. An
            // unbounded likelihood stalls with a large gradient and still fails.
            return if gradient_norm < FLAT_RIDGE_GRADIENT_TOLERANCE {
                Ok(Minimum { point })
            } else {
                Err(NotConverged {
                    iterations: iteration + 1,
                    gradient_norm,
                })
            };
        }
    }
    let gradient_norm = max_abs(&gradient);
    if gradient_norm < FLAT_RIDGE_GRADIENT_TOLERANCE {
        return Ok(Minimum { point });
    }
    Err(NotConverged {
        iterations: MAX_ITERATIONS,
        gradient_norm,
    })
}

fn identity(n: usize) -> Vec<f64> {
    let mut matrix = vec![0.0; n * n];
    for i in 0..n {
        matrix[i * n + i] = 1.0;
    }
    matrix
}

/// `H ← (I - ρ s yᵀ) H (I - ρ y sᵀ) + ρ s sᵀ` with `ρ = 1/(yᵀs)`.
fn bfgs_update(inverse_hessian: &mut [f64], s: &[f64], y: &[f64], curvature: f64) {
    let n = s.len();
    let rho = 1.0 / curvature;
    let h_y: Vec<f64> = (0..n)
        .map(|row| dot(&inverse_hessian[row * n..(row + 1) * n], y))
        .collect();
    let y_h_y = dot(y, &h_y);
    for row in 0..n {
        for column in 0..n {
            // H is symmetric, so (yᵀH)_column = (Hy)_column.
            inverse_hessian[row * n + column] += -rho
                * (s[row] * h_y[column] + h_y[row] * s[column])
                + (rho * rho * y_h_y + rho) * s[row] * s[column];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_minimum_of_rosenbrock() {
        let rosenbrock = |x: &[f64], gradient: &mut [f64]| {
            let (a, b) = (x[0], x[1]);
            gradient[0] = -2.0 * (1.0 - a) - 400.0 * a * (b - a * a);
            gradient[1] = 200.0 * (b - a * a);
            (1.0 - a).powi(2) + 100.0 * (b - a * a).powi(2)
        };
        let minimum = minimise(rosenbrock, &[-1.2, 1.0]);
        // The gradient tolerance 1e-10 with curvature ~1 leaves ~1e-9 in x.
        assert!(
            minimum
                .as_ref()
                .is_ok_and(|m| (m.point[0] - 1.0).abs() < 1e-8 && (m.point[1] - 1.0).abs() < 1e-8),
            "{minimum:?}"
        );
    }

    #[test]
    fn a_stall_on_a_flat_ridge_is_accepted_and_a_steep_one_is_not() {
        // So large a value that no step changes it beyond rounding: every
        // iteration stalls, at the gradient the slope sets.
        let stalled_at = |slope: f64| {
            minimise(
                move |x: &[f64], gradient: &mut [f64]| {
                    gradient[0] = slope;
                    1e20 + slope * x[0]
                },
                &[0.0],
            )
        };
        assert!(stalled_at(2e-7).is_ok());
        let steep = stalled_at(1e-2).expect_err("a steep stall is a failure");
        assert_eq!(steep.gradient_norm, 1e-2);
    }

    #[test]
    fn an_unbounded_objective_is_reported_not_returned() {
        // exp(-x) has no minimum: the gradient never vanishes at a finite point
        // the line search reaches within the iteration limit.
        let result = minimise(
            |x: &[f64], gradient: &mut [f64]| {
                gradient[0] = -(-x[0]).exp() - 1e-3;
                (-x[0]).exp() - 1e-3 * x[0]
            },
            &[0.0],
        );
        assert!(result.is_err(), "{result:?}");
    }
}
