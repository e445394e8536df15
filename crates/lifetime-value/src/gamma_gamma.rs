//! The Gamma-Gamma model of spend per purchase (Fader, Hardie and Lee 2005,
//! "RFM and CLV: using iso-value curves"): each purchase's value is
//! `Gamma(p, ν)` with the customer's `ν ~ Gamma(q, γ)`, independent of the
//! purchase process. Fitted on customers with at least one repeat purchase,
//! as `lifetimes.GammaGammaFitter` is; also the discounted lifetime value
//! `GammaGammaFitter.customer_lifetime_value` computes.

use crate::bg_nbd::BgNbdParameters;
use crate::error::LifetimeValueError;
use crate::grouped::{Cell, Group, Prior, fit, index_frequencies, mean_log_likelihood};
use crate::special::{digamma, ln_gamma};
use crate::summary::CustomerSummary;

/// Gamma-Gamma parameters (lifetimes calls `gamma` `v`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GammaGammaParameters {
    /// Shape of each purchase's spend.
    pub p: f64,
    /// Shape of the customers' spend rates.
    pub q: f64,
    /// Scale of the customers' spend rates, in currency units.
    pub gamma: f64,
}

/// A group of customers in the Gamma-Gamma likelihood; a cell's data is its
/// mean spend per repeat purchase.
pub(crate) type SpendGroup = Group<f64>;

const MODEL: &str = "Gamma-Gamma";

/// How `customer_lifetime_value` discounts: lifetimes' convention is a sum
/// over whole periods (months of 30 days with `freq="D"`), each period's
/// expected purchases times the expected spend, discounted by
/// `(1 + rate)^k` for the k-th period. Every deployment chooses its own rate,
/// so there is no default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClvConfig {
    /// Number of periods summed (lifetimes' `time`, 12 there).
    pub periods: u32,
    /// Days per period (30 for lifetimes' monthly periods with `freq="D"`).
    pub days_per_period: f64,
    /// Discount rate per period (lifetimes' `discount_rate`, 0.01 there).
    pub discount_rate_per_period: f64,
}

/// Fits Gamma-Gamma by maximum likelihood to the customers with at least one
/// repeat purchase (the others carry no spend information and are skipped).
pub fn fit_gamma_gamma(
    summaries: &[CustomerSummary],
) -> Result<GammaGammaParameters, LifetimeValueError> {
    fit_spend_groups(repeat_customers(summaries)?, Prior::None)
}

/// One exact group per customer with repeat purchases.
fn repeat_customers(summaries: &[CustomerSummary]) -> Result<Vec<SpendGroup>, LifetimeValueError> {
    let mut groups = Vec::new();
    for (index, summary) in summaries.iter().enumerate() {
        summary.validate(index)?;
        if summary.frequency == 0 {
            continue;
        }
        if summary.mean_spend <= 0.0 {
            return Err(LifetimeValueError::NonPositiveSpend {
                index,
                mean_spend: summary.mean_spend,
            });
        }
        groups.push(Group {
            weight: 1.0,
            cells: vec![Cell::exact(
                f64::from(summary.frequency),
                summary.mean_spend,
            )],
        });
    }
    Ok(groups)
}

/// Maximum likelihood (or the posterior mode under `prior`) over groups;
/// the total weight must be positive.
pub(crate) fn fit_spend_groups(
    groups: Vec<SpendGroup>,
    prior: Prior,
) -> Result<GammaGammaParameters, LifetimeValueError> {
    let [p, q, gamma] = fit(MODEL, groups, prior, mean_negative_log_likelihood)?;
    Ok(GammaGammaParameters { p, q, gamma })
}

/// `-(1/W) Σ_g w_g ℓ_g` and its gradient in `(ln p, ln q, ln γ)`, where a cell
/// at mean spend `m` has lifetimes' log-density
/// `lnΓ(px+q) - lnΓ(px) - lnΓ(q) + q ln γ + (px-1) ln m + px ln x - (px+q) ln(xm+γ)`.
fn mean_negative_log_likelihood(
    log_parameters: &[f64],
    groups: &[SpendGroup],
    frequencies: &[f64],
    total_weight: f64,
    gradient: &mut [f64],
) -> f64 {
    let [p, q, gamma] = [0, 1, 2].map(|i| log_parameters[i].exp());
    let ln_gamma_scale = gamma.ln();
    let (ln_gamma_q, digamma_q) = (ln_gamma(q), digamma(q));
    let by_frequency: Vec<(f64, [f64; 3])> = frequencies
        .iter()
        .map(|&x| {
            let px = p * x;
            let digamma_pxq = digamma(px + q);
            let value =
                ln_gamma(px + q) - ln_gamma(px) - ln_gamma_q + q * ln_gamma_scale + px * x.ln();
            let derivative = [
                x * (digamma_pxq - digamma(px) + x.ln()),
                digamma_pxq - digamma_q + ln_gamma_scale,
                q / gamma,
            ];
            (value, derivative)
        })
        .collect();
    let (value, derivative) =
        mean_log_likelihood(groups, total_weight, |cell, d: &mut [f64; 3]| {
            let (frequency_term, frequency_derivative) = by_frequency[cell.frequency_index];
            let (x, m) = (cell.frequency, cell.data);
            let px = p * x;
            let ln_total = (x * m + gamma).ln();
            let ln_m = m.ln();
            d[0] = frequency_derivative[0] + x * (ln_m - ln_total);
            d[1] = frequency_derivative[1] - ln_total;
            d[2] = frequency_derivative[2] - (px + q) / (x * m + gamma);
            frequency_term + (px - 1.0) * ln_m - (px + q) * ln_total + cell.log_weight
        });
    for (i, parameter) in [p, q, gamma].into_iter().enumerate() {
        gradient[i] = -derivative[i] * parameter;
    }
    -value
}

impl GammaGammaParameters {
    /// Refuses parameters that are not positive finite numbers.
    pub fn validate(&self) -> Result<(), LifetimeValueError> {
        for (name, value) in [("p", self.p), ("q", self.q), ("gamma", self.gamma)] {
            if !(value.is_finite() && value > 0.0) {
                return Err(LifetimeValueError::InvalidArgument {
                    name,
                    requirement: "a positive finite number",
                    value,
                });
            }
        }
        Ok(())
    }

    /// The Gamma-Gamma log-likelihood of the customers with repeat purchases
    /// under these parameters, as lifetimes writes it: for comparing fits and
    /// for standard errors.
    pub fn log_likelihood(&self, summaries: &[CustomerSummary]) -> Result<f64, LifetimeValueError> {
        self.validate()?;
        let mut groups = repeat_customers(summaries)?;
        let frequencies = index_frequencies(&mut groups);
        let log_parameters = [self.p, self.q, self.gamma].map(f64::ln);
        let mut gradient = [0.0; 3];
        // With total weight 1 the "mean" is the sum.
        Ok(-mean_negative_log_likelihood(
            &log_parameters,
            &groups,
            &frequencies,
            1.0,
            &mut gradient,
        ))
    }

    /// Expected spend per purchase of this customer
    /// (`conditional_expected_average_profit`): a weighted average of the
    /// population mean `pγ/(q-1)` and the customer's own mean spend, which is
    /// the population mean for a customer without repeat purchases. Needs
    /// `q > 1`, without which the population mean is infinite.
    pub fn conditional_expected_spend(
        &self,
        customer: &CustomerSummary,
    ) -> Result<f64, LifetimeValueError> {
        self.validate()?;
        customer.validate(0)?;
        if self.q <= 1.0 {
            return Err(LifetimeValueError::PredictionUndefined(
                "the mean spend per purchase is infinite when q <= 1",
            ));
        }
        let Self { p, q, gamma } = *self;
        let x = f64::from(customer.frequency);
        let individual_weight = p * x / (p * x + q - 1.0);
        let population_mean = gamma * p / (q - 1.0);
        Ok((1.0 - individual_weight) * population_mean + individual_weight * customer.mean_spend)
    }

    /// Discounted expected spend over the horizon of `config`, as
    /// `GammaGammaFitter.customer_lifetime_value(bg, ..., time, discount_rate, freq)`:
    /// `Σ_{k=1..n} m̂ · (E[X(kD)] - E[X((k-1)D)]) / (1 + d)^k` with `m̂` the
    /// conditional expected spend, `E[X(t)]` BG/NBD's conditional expected
    /// purchases, `D` the days per period and `d` the rate per period.
    pub fn customer_lifetime_value(
        &self,
        purchases: &BgNbdParameters,
        customer: &CustomerSummary,
        config: &ClvConfig,
    ) -> Result<f64, LifetimeValueError> {
        if !(config.days_per_period.is_finite() && config.days_per_period > 0.0) {
            return Err(LifetimeValueError::InvalidArgument {
                name: "days_per_period",
                requirement: "a positive finite number",
                value: config.days_per_period,
            });
        }
        if !(config.discount_rate_per_period.is_finite() && config.discount_rate_per_period > -1.0)
        {
            return Err(LifetimeValueError::InvalidArgument {
                name: "discount_rate_per_period",
                requirement: "a finite number above -1",
                value: config.discount_rate_per_period,
            });
        }
        let spend = self.conditional_expected_spend(customer)?;
        let mut value = 0.0;
        let mut previous = 0.0;
        for period in 1..=config.periods {
            let cumulative = purchases.conditional_expected_purchases(
                f64::from(period) * config.days_per_period,
                customer,
            )?;
            value += spend * (cumulative - previous)
                / (1.0 + config.discount_rate_per_period).powf(f64::from(period));
            previous = cumulative;
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grouped::assert_gradient_matches_central_differences;

    #[test]
    fn gradient_matches_central_differences() {
        let cell = |frequency: f64, mean_spend, log_weight| Cell {
            frequency,
            frequency_index: 0,
            data: mean_spend,
            log_weight,
        };
        let mut groups = vec![
            Group {
                weight: 2.0,
                cells: vec![cell(1.0, 12.0, 0.0)],
            },
            Group {
                weight: 1.0,
                cells: vec![cell(3.0, 40.5, 0.0)],
            },
            Group {
                weight: 1.0,
                cells: vec![
                    cell(7.0, 8.0, 0.1),
                    cell(7.0, 8.5, 0.2),
                    cell(8.0, 9.0, -0.3),
                ],
            },
        ];
        let frequencies = index_frequencies(&mut groups);
        assert_gradient_matches_central_differences(
            |at: &[f64; 3], gradient: &mut [f64; 3]| {
                mean_negative_log_likelihood(at, &groups, &frequencies, 4.0, gradient)
            },
            [0.7, 1.1, 2.5],
        );
    }

    #[test]
    fn an_unbounded_likelihood_is_reported_not_returned() {
        // A noised count can be negative: 100 customers at a mean spend of 10
        // and -99 at 10.5 reward a spend distribution ever more concentrated
        // at 10, so the likelihood has no maximum.
        let group = |weight, mean_spend| Group {
            weight,
            cells: vec![Cell::exact(1.0, mean_spend)],
        };
        let result = fit_spend_groups(vec![group(100.0, 10.0), group(-99.0, 10.5)], Prior::None);
        assert!(
            matches!(
                result,
                Err(LifetimeValueError::FitDidNotConverge { model: MODEL, .. })
            ),
            "{result:?}"
        );
    }

    #[test]
    fn bad_inputs_are_refused() {
        let customer = CustomerSummary {
            frequency: 1,
            recency_days: 4,
            age_days: 9,
            mean_spend: 0.0,
        };
        assert_eq!(
            fit_gamma_gamma(&[customer]),
            Err(LifetimeValueError::NonPositiveSpend {
                index: 0,
                mean_spend: 0.0
            })
        );
        let no_repeat = CustomerSummary {
            frequency: 0,
            recency_days: 0,
            age_days: 9,
            mean_spend: 0.0,
        };
        assert_eq!(
            fit_gamma_gamma(&[no_repeat]),
            Err(LifetimeValueError::NoCustomers {
                model: MODEL,
                total_weight: 0.0
            })
        );
        let parameters = GammaGammaParameters {
            p: 6.0,
            q: 0.9,
            gamma: 15.0,
        };
        assert!(matches!(
            parameters.conditional_expected_spend(&no_repeat),
            Err(LifetimeValueError::PredictionUndefined(_))
        ));
        let purchases = BgNbdParameters {
            r: 0.3,
            alpha: 30.0,
            a: 0.8,
            b: 2.0,
        };
        let config = ClvConfig {
            periods: 12,
            days_per_period: 0.0,
            discount_rate_per_period: 0.01,
        };
        assert_eq!(
            GammaGammaParameters {
                q: 3.0,
                ..parameters
            }
            .customer_lifetime_value(&purchases, &no_repeat, &config),
            Err(LifetimeValueError::InvalidArgument {
                name: "days_per_period",
                requirement: "a positive finite number",
                value: 0.0
            })
        );
    }
}
