//! The BG/NBD model of purchase counts (Fader, Hardie and Lee 2005, "Counting
//! your customers the easy way"): while alive a customer buys at a Poisson rate
//! `λ ~ Gamma(r, α)`, and after each repeat purchase drops out for good with
//! probability `p ~ Beta(a, b)`. Time is in days throughout.
//!
//! The log-likelihood, its gradient and the predictions are those of
//! `lifetimes.BetaGeoFitter` (0.11.3), written in log space.

use std::collections::BTreeMap;

use crate::error::LifetimeValueError;
use crate::grouped::{Cell, Group, Prior, fit, index_frequencies, mean_log_likelihood};
use crate::special::{digamma, ln_gamma, ln_hyp2f1};
use crate::summary::CustomerSummary;

/// BG/NBD parameters, with time in days.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BgNbdParameters {
    /// Shape of the Gamma distribution of purchase rates.
    pub r: f64,
    /// Rate of the Gamma distribution of purchase rates, in days (the mean
    /// purchase rate is `r/α` per day).
    pub alpha: f64,
    /// First shape of the Beta distribution of dropout probabilities.
    pub a: f64,
    /// Second shape of the Beta distribution of dropout probabilities.
    pub b: f64,
}

/// Where a customer's (or a cell's) last purchase and age are, in days.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RecencyAge {
    /// `t_x`.
    pub recency: f64,
    /// `T`.
    pub age: f64,
}

/// A group of customers in the BG/NBD likelihood.
pub(crate) type PurchaseGroup = Group<RecencyAge>;

const MODEL: &str = "BG/NBD";

fn positive(name: &'static str, value: f64) -> Result<(), LifetimeValueError> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(LifetimeValueError::InvalidArgument {
            name,
            requirement: "a positive finite number",
            value,
        })
    }
}

fn non_negative(name: &'static str, value: f64) -> Result<(), LifetimeValueError> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(LifetimeValueError::InvalidArgument {
            name,
            requirement: "a finite number at least 0",
            value,
        })
    }
}

/// Fits BG/NBD by maximum likelihood to every customer's exact summary.
/// Customers with equal `(x, t_x, T)` are scored once with their count as
/// weight, which changes nothing in the likelihood but makes a million
/// day-granular customers a few tens of thousands of distinct points.
pub fn fit_bg_nbd(summaries: &[CustomerSummary]) -> Result<BgNbdParameters, LifetimeValueError> {
    fit_groups(distinct_customers(summaries)?, Prior::None)
}

/// One exact group per distinct `(x, t_x, T)`, weighted by its count.
fn distinct_customers(
    summaries: &[CustomerSummary],
) -> Result<Vec<PurchaseGroup>, LifetimeValueError> {
    let mut counts: BTreeMap<(u32, u32, u32), f64> = BTreeMap::new();
    for (index, summary) in summaries.iter().enumerate() {
        summary.validate(index)?;
        *counts
            .entry((summary.frequency, summary.recency_days, summary.age_days))
            .or_insert(0.0) += 1.0;
    }
    Ok(counts
        .into_iter()
        .map(|((frequency, recency, age), weight)| Group {
            weight,
            cells: vec![Cell::exact(
                f64::from(frequency),
                RecencyAge {
                    recency: f64::from(recency),
                    age: f64::from(age),
                },
            )],
        })
        .collect())
}

/// Maximum likelihood (or the posterior mode under `prior`) over groups of
/// customers. Weights may be negative (a noised histogram); the total must
/// be positive.
pub(crate) fn fit_groups(
    mut groups: Vec<PurchaseGroup>,
    prior: Prior,
) -> Result<BgNbdParameters, LifetimeValueError> {
    let repeat_weight: f64 = groups
        .iter()
        .filter(|group| group.cells.iter().any(|cell| cell.frequency > 0.0))
        .map(|group| group.weight)
        .sum();
    let total: f64 = groups.iter().map(|group| group.weight).sum();
    // With no customer at all, say so (the generic check in `fit`); with
    // customers but no repeat purchase, the optimum is at r = 0.
    if total > 0.0 && (repeat_weight <= 0.0 || repeat_weight.is_nan()) {
        return Err(LifetimeValueError::NoRepeatPurchases { repeat_weight });
    }
    // As lifetimes does, measure time in units of the oldest customer's age so
    // α starts near the optimum's scale; α is converted back at the end.
    let max_age = groups
        .iter()
        .filter(|group| group.weight != 0.0)
        .flat_map(|group| &group.cells)
        .fold(0.0f64, |largest, cell| largest.max(cell.data.age));
    let time_scale = if max_age > 0.0 { 1.0 / max_age } else { 1.0 };
    let ln_time_scale = time_scale.ln();
    for cell in groups.iter_mut().flat_map(|group| group.cells.iter_mut()) {
        cell.data.recency *= time_scale;
        cell.data.age *= time_scale;
        // The density weight t^(x-1) of a cell is in the new unit too.
        if cell.frequency >= 1.0 {
            cell.log_weight += (cell.frequency - 1.0) * ln_time_scale;
        }
    }
    let [r, alpha, a, b] = fit(MODEL, groups, prior, mean_negative_log_likelihood)?;
    Ok(BgNbdParameters {
        r,
        alpha: alpha / time_scale,
        a,
        b,
    })
}

/// `-(1/W) Σ_g w_g ℓ_g` and its gradient in `(ln r, ln α, ln a, ln b)`, where a
/// cell's log-likelihood is lifetimes' `A1 + A2 + ln(e^{A3} + [x > 0] e^{A4})`.
fn mean_negative_log_likelihood(
    log_parameters: &[f64],
    groups: &[PurchaseGroup],
    frequencies: &[f64],
    total_weight: f64,
    gradient: &mut [f64],
) -> f64 {
    let [r, alpha, a, b] = [0, 1, 2, 3].map(|i| log_parameters[i].exp());
    let ln_alpha = alpha.ln();
    let (ln_a, digamma_r, digamma_b, digamma_ab) = (a.ln(), digamma(r), digamma(b), digamma(a + b));
    let (ln_gamma_r, ln_gamma_b, ln_gamma_ab) = (ln_gamma(r), ln_gamma(b), ln_gamma(a + b));
    // Terms in x alone, A1 + A2 =
    // lnΓ(r+x) - lnΓ(r) + r ln α + lnΓ(a+b) + lnΓ(b+x) - lnΓ(b) - lnΓ(a+b+x).
    let by_frequency: Vec<(f64, [f64; 4])> = frequencies
        .iter()
        .map(|&x| {
            let digamma_abx = digamma(a + b + x);
            let value = ln_gamma(r + x) - ln_gamma_r + r * ln_alpha + ln_gamma_ab + ln_gamma(b + x)
                - ln_gamma_b
                - ln_gamma(a + b + x);
            let derivative = [
                digamma(r + x) - digamma_r + ln_alpha,
                r / alpha,
                digamma_ab - digamma_abx,
                digamma_ab + digamma(b + x) - digamma_b - digamma_abx,
            ];
            (value, derivative)
        })
        .collect();
    let (value, derivative) =
        mean_log_likelihood(groups, total_weight, |cell, d: &mut [f64; 4]| {
            let (frequency_term, frequency_derivative) = by_frequency[cell.frequency_index];
            *d = frequency_derivative;
            let x = cell.frequency;
            let RecencyAge { recency, age } = cell.data;
            let ln_alpha_age = (alpha + age).ln();
            let a3 = -(r + x) * ln_alpha_age;
            let tail = if x > 0.0 {
                // A4 = ln a - ln(b+x-1) - (r+x) ln(α+t_x), added to A3 in log space.
                let ln_alpha_recency = (alpha + recency).ln();
                let a4 = ln_a - (b + x - 1.0).ln() - (r + x) * ln_alpha_recency;
                let larger = a3.max(a4);
                let (e3, e4) = ((a3 - larger).exp(), (a4 - larger).exp());
                let total = e3 + e4;
                let (w3, w4) = (e3 / total, e4 / total);
                d[0] += -w3 * ln_alpha_age - w4 * ln_alpha_recency;
                d[1] += -(r + x) * (w3 / (alpha + age) + w4 / (alpha + recency));
                d[2] += w4 / a;
                d[3] += -w4 / (b + x - 1.0);
                larger + total.ln()
            } else {
                d[0] += -ln_alpha_age;
                d[1] += -(r + x) / (alpha + age);
                a3
            };
            frequency_term + tail + cell.log_weight
        });
    // Chain rule to log-parameters, and the sign of the negative.
    for (i, parameter) in [r, alpha, a, b].into_iter().enumerate() {
        gradient[i] = -derivative[i] * parameter;
    }
    -value
}

impl BgNbdParameters {
    /// Refuses parameters that are not positive finite numbers.
    pub fn validate(&self) -> Result<(), LifetimeValueError> {
        positive("r", self.r)?;
        positive("alpha", self.alpha)?;
        positive("a", self.a)?;
        positive("b", self.b)
    }

    /// The BG/NBD log-likelihood of the customers under these parameters, as
    /// lifetimes writes it (without the terms that do not depend on the
    /// parameters): for comparing fits and for standard errors.
    pub fn log_likelihood(&self, summaries: &[CustomerSummary]) -> Result<f64, LifetimeValueError> {
        self.validate()?;
        let mut groups = distinct_customers(summaries)?;
        let frequencies = index_frequencies(&mut groups);
        let log_parameters = [self.r, self.alpha, self.a, self.b].map(f64::ln);
        let mut gradient = [0.0; 4];
        // With total weight 1 the "mean" is the sum.
        Ok(-mean_negative_log_likelihood(
            &log_parameters,
            &groups,
            &frequencies,
            1.0,
            &mut gradient,
        ))
    }

    /// Expected purchases of a new customer in `days` days
    /// (`expected_number_of_purchases_up_to_time`).
    pub fn expected_purchases_up_to(&self, days: f64) -> Result<f64, LifetimeValueError> {
        self.validate()?;
        non_negative("days", days)?;
        let Self { r, alpha, a, b } = *self;
        let ln_hyp = ln_hyp2f1(r, b, a + b - 1.0, days / (alpha + days)).ok_or(
            LifetimeValueError::PredictionUndefined(
                "2F1(r, b; a+b-1; t/(α+t)) needs a + b > 1 and t/(α+t) not within 1e-6 of 1",
            ),
        )?;
        let survivors = (ln_hyp + r * (alpha / (alpha + days)).ln()).exp();
        finite((a + b - 1.0) / (a - 1.0) * (1.0 - survivors))
    }

    /// Expected purchases of a customer with this history in the next `days`
    /// days (`conditional_expected_number_of_purchases_up_to_time`, Fader et
    /// al. 2005 eq. 10).
    pub fn conditional_expected_purchases(
        &self,
        days: f64,
        customer: &CustomerSummary,
    ) -> Result<f64, LifetimeValueError> {
        customer.validate(0)?;
        self.conditional_expected_purchases_at(
            days,
            f64::from(customer.frequency),
            f64::from(customer.recency_days),
            f64::from(customer.age_days),
        )
    }

    pub(crate) fn conditional_expected_purchases_at(
        &self,
        days: f64,
        x: f64,
        recency: f64,
        age: f64,
    ) -> Result<f64, LifetimeValueError> {
        self.validate()?;
        non_negative("days", days)?;
        let Self { r, alpha, a, b } = *self;
        let c = a + b + x - 1.0;
        let ln_hyp = ln_hyp2f1(r + x, b + x, c, days / (alpha + age + days)).ok_or(
            LifetimeValueError::PredictionUndefined(
                "2F1(r+x, b+x; a+b+x-1; z) needs a + b + x > 1 and z not within 1e-6 of 1",
            ),
        )?;
        let first = c / (a - 1.0);
        let second = 1.0 - (ln_hyp + (r + x) * ((alpha + age) / (alpha + days + age)).ln()).exp();
        let odds_dead = if x > 0.0 {
            a / (b + x - 1.0) * ((r + x) * ((alpha + age) / (alpha + recency)).ln()).exp()
        } else {
            0.0
        };
        finite(first * second / (1.0 + odds_dead))
    }

    /// Probability the customer is still alive at the end of observation
    /// (`conditional_probability_alive`): 1 without repeat purchases.
    pub fn probability_alive(&self, customer: &CustomerSummary) -> Result<f64, LifetimeValueError> {
        self.validate()?;
        customer.validate(0)?;
        if customer.frequency == 0 {
            return Ok(1.0);
        }
        let Self { r, alpha, a, b } = *self;
        let x = f64::from(customer.frequency);
        let ln_odds_dead = (r + x)
            * ((alpha + f64::from(customer.age_days)) / (alpha + f64::from(customer.recency_days)))
                .ln()
            + (a / (b + x - 1.0)).ln();
        // expit(-ln_odds_dead), written so neither branch overflows.
        Ok(if ln_odds_dead >= 0.0 {
            let odds_alive = (-ln_odds_dead).exp();
            odds_alive / (1.0 + odds_alive)
        } else {
            1.0 / (1.0 + ln_odds_dead.exp())
        })
    }
}

fn finite(value: f64) -> Result<f64, LifetimeValueError> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(LifetimeValueError::PredictionUndefined(
            "the prediction is not finite for these parameters (a = 1 exactly?)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grouped::assert_gradient_matches_central_differences;

    fn groups() -> Vec<PurchaseGroup> {
        let cell = |frequency: f64, recency, age, log_weight| Cell {
            frequency,
            frequency_index: 0,
            data: RecencyAge { recency, age },
            log_weight,
        };
        vec![
            Group {
                weight: 3.0,
                cells: vec![cell(0.0, 0.0, 30.0, 0.0)],
            },
            Group {
                weight: 1.0,
                cells: vec![cell(2.0, 20.0, 40.0, 0.0)],
            },
            // A bin of two repeat counts and three recencies.
            Group {
                weight: 2.0,
                cells: vec![
                    cell(5.0, 36.0, 40.0, 0.3),
                    cell(5.0, 37.0, 40.0, 0.2),
                    cell(6.0, 38.0, 40.0, -1.0),
                ],
            },
            Group {
                weight: -0.5,
                cells: vec![cell(1.0, 3.0, 50.0, 0.0)],
            },
        ]
    }

    #[test]
    fn gradient_matches_central_differences() {
        let mut groups = groups();
        let frequencies = index_frequencies(&mut groups);
        assert_gradient_matches_central_differences(
            |at: &[f64; 4], gradient: &mut [f64; 4]| {
                mean_negative_log_likelihood(at, &groups, &frequencies, 5.5, gradient)
            },
            [-0.3, 2.1, 0.4, 1.2],
        );
    }

    #[test]
    fn bad_parameters_and_arguments_are_refused() {
        let parameters = BgNbdParameters {
            r: 0.5,
            alpha: 20.0,
            a: 0.8,
            b: 2.5,
        };
        let customer = CustomerSummary {
            frequency: 2,
            recency_days: 30,
            age_days: 60,
            mean_spend: 10.0,
        };
        assert_eq!(
            BgNbdParameters {
                r: -1.0,
                ..parameters
            }
            .probability_alive(&customer),
            Err(LifetimeValueError::InvalidArgument {
                name: "r",
                requirement: "a positive finite number",
                value: -1.0
            })
        );
        assert_eq!(
            parameters.conditional_expected_purchases(-5.0, &customer),
            Err(LifetimeValueError::InvalidArgument {
                name: "days",
                requirement: "a finite number at least 0",
                value: -5.0
            })
        );
        // a + b + x - 1 ≤ 0 leaves the 2F1 series' domain.
        let no_repeat = CustomerSummary {
            frequency: 0,
            recency_days: 0,
            age_days: 10,
            mean_spend: 0.0,
        };
        assert!(matches!(
            BgNbdParameters {
                a: 0.2,
                b: 0.3,
                ..parameters
            }
            .conditional_expected_purchases(30.0, &no_repeat),
            Err(LifetimeValueError::PredictionUndefined(_))
        ));
        // Nobody ever came back: the likelihood keeps rising as r → 0.
        let never_returned: Vec<CustomerSummary> = (1..50)
            .map(|age_days| CustomerSummary {
                frequency: 0,
                recency_days: 0,
                age_days,
                mean_spend: 0.0,
            })
            .collect();
        assert_eq!(
            fit_bg_nbd(&never_returned),
            Err(LifetimeValueError::NoRepeatPurchases { repeat_weight: 0.0 })
        );
        assert_eq!(
            fit_bg_nbd(&[]),
            Err(LifetimeValueError::NoCustomers {
                model: MODEL,
                total_weight: 0.0
            })
        );
    }
}
