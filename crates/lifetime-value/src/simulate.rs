//! Synthetic transactions from known BG/NBD and Gamma-Gamma parameters, for
//! parameter-recovery tests, the reference data set and benchmarks.
//!
//! Each customer draws a purchase rate `λ ~ Gamma(r, α)`, a dropout
//! probability `p ~ Beta(a, b)` and a spend rate `ν ~ Gamma(q, γ)`. Its first
//! purchase is on a day drawn uniformly from the acquisition window; while
//! alive it buys at the times of a Poisson process of rate `λ` per day, and
//! after each repeat purchase drops out with probability `p` (the BG/NBD
//! story, and `lifetimes.generate_data.beta_geometric_nbd_model`'s). Each
//! purchase's amount is `Gamma(p_spend, ν)`. Purchases are recorded on the day
//! they fall in, so two in one day become one purchase day in the summary,
//! as they would in real data.
//!
//! The randomness is whatever seeded generator the caller passes: this is test
//! and benchmark data, never a source for keys, masks or noise.

use rand::Rng;

use crate::bg_nbd::BgNbdParameters;
use crate::error::LifetimeValueError;
use crate::gamma_gamma::GammaGammaParameters;
use crate::summary::Transaction;

/// One partner's population and window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PartnerSimulation {
    /// Customers to draw.
    pub customers: u64,
    /// Purchase-process parameters (time in days).
    pub purchases: BgNbdParameters,
    /// Spend parameters.
    pub spend: GammaGammaParameters,
    /// First day a customer may make its first purchase.
    pub first_day: i64,
    /// First purchases are spread uniformly over this many days from `first_day`.
    pub acquisition_days: u32,
    /// Last day simulated; no purchase is recorded after it.
    pub last_day: i64,
}

/// Three deliberately different populations (time in days), cycled by
/// [`non_iid_partners`]: a steady mid-rate one, a frequent loyal one with high
/// spend, and a sporadic one that churns fast with low spend.
const PARTNER_PARAMETERS: [(BgNbdParameters, GammaGammaParameters); 3] = [
    (
        BgNbdParameters {
            r: 0.6,
            alpha: 25.0,
            a: 0.8,
            b: 3.0,
        },
        GammaGammaParameters {
            p: 6.0,
            q: 4.0,
            gamma: 20.0,
        },
    ),
    (
        BgNbdParameters {
            r: 1.2,
            alpha: 40.0,
            a: 1.5,
            b: 6.0,
        },
        GammaGammaParameters {
            p: 4.0,
            q: 6.0,
            gamma: 60.0,
        },
    ),
    (
        BgNbdParameters {
            r: 0.35,
            alpha: 12.0,
            a: 0.6,
            b: 2.2,
        },
        GammaGammaParameters {
            p: 8.0,
            q: 3.5,
            gamma: 10.0,
        },
    ),
];

/// `n_partners` partners that are not identically distributed: each has its
/// own BG/NBD and Gamma-Gamma parameters (the three populations of this
/// module in turn, with α stretched by 10% more on each further cycle), all
/// acquiring customers over the first `acquisition_days` of the window
/// `first_day..=last_day`.
pub fn non_iid_partners(
    n_partners: usize,
    customers_per_partner: u64,
    first_day: i64,
    acquisition_days: u32,
    last_day: i64,
) -> Vec<PartnerSimulation> {
    (0..n_partners)
        .map(|index| {
            let (purchases, spend) = PARTNER_PARAMETERS[index % PARTNER_PARAMETERS.len()];
            let stretch = 1.0 + 0.1 * (index / PARTNER_PARAMETERS.len()) as f64;
            PartnerSimulation {
                customers: customers_per_partner,
                purchases: BgNbdParameters {
                    alpha: purchases.alpha * stretch,
                    ..purchases
                },
                spend,
                first_day,
                acquisition_days,
                last_day,
            }
        })
        .collect()
}

/// Draws one partner's transactions. Customers are numbered from
/// `first_customer`, so several partners can use disjoint ranges.
pub fn simulate_partner<R: Rng + ?Sized>(
    simulation: &PartnerSimulation,
    first_customer: u64,
    rng: &mut R,
) -> Result<Vec<Transaction<u64>>, LifetimeValueError> {
    simulation.purchases.validate()?;
    simulation.spend.validate()?;
    if simulation.acquisition_days == 0 {
        return Err(LifetimeValueError::InvalidArgument {
            name: "acquisition_days",
            requirement: "at least 1",
            value: 0.0,
        });
    }
    let BgNbdParameters { r, alpha, a, b } = simulation.purchases;
    let spend = simulation.spend;
    let mut transactions = Vec::new();
    for customer in first_customer..first_customer.saturating_add(simulation.customers) {
        let rate = gamma(rng, r) / alpha;
        let dropout = beta(rng, a, b);
        let spend_rate = gamma(rng, spend.q) / spend.gamma;
        let first_day =
            simulation.first_day + i64::from(rng.random_range(0..simulation.acquisition_days));
        if first_day > simulation.last_day {
            continue;
        }
        transactions.push(Transaction {
            customer,
            day: first_day,
            amount: gamma(rng, spend.p) / spend_rate,
        });
        let mut elapsed = 0.0;
        loop {
            elapsed += exponential(rng) / rate;
            let day = first_day as f64 + elapsed.floor();
            if day > simulation.last_day as f64 || day.is_nan() {
                break;
            }
            transactions.push(Transaction {
                customer,
                day: day as i64,
                amount: gamma(rng, spend.p) / spend_rate,
            });
            if rng.random::<f64>() < dropout {
                break;
            }
        }
    }
    Ok(transactions)
}

/// Uniform on `(0, 1]`, so its logarithm is finite.
fn uniform_open_closed<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    1.0 - rng.random::<f64>()
}

fn exponential<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    -uniform_open_closed(rng).ln()
}

fn standard_normal<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    let radius = (-2.0 * uniform_open_closed(rng).ln()).sqrt();
    radius * (std::f64::consts::TAU * rng.random::<f64>()).cos()
}

/// `Gamma(shape, 1)` by Marsaglia and Tsang (2000), with the `U^(1/k)` boost
/// for shapes below 1.
fn gamma<R: Rng + ?Sized>(rng: &mut R, shape: f64) -> f64 {
    if shape < 1.0 {
        return gamma(rng, shape + 1.0) * uniform_open_closed(rng).powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let normal = standard_normal(rng);
        let v = (1.0 + c * normal).powi(3);
        if v <= 0.0 {
            continue;
        }
        let u = uniform_open_closed(rng);
        if u.ln() < 0.5 * normal * normal + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

fn beta<R: Rng + ?Sized>(rng: &mut R, a: f64, b: f64) -> f64 {
    let x = gamma(rng, a);
    let y = gamma(rng, b);
    x / (x + y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn samplers_have_their_moments() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let n = 200_000;
        for shape in [0.3, 1.0, 4.5] {
            let draws: Vec<f64> = (0..n).map(|_| gamma(&mut rng, shape)).collect();
            let mean = draws.iter().sum::<f64>() / f64::from(n);
            let variance = draws.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / f64::from(n);
            // Gamma(k, 1) has mean and variance k; five standard errors of the mean.
            assert!(
                (mean - shape).abs() < 5.0 * (shape / f64::from(n)).sqrt(),
                "shape {shape}: mean {mean}"
            );
            assert!(
                (variance - shape).abs() < 0.05 * shape,
                "shape {shape}: variance {variance}"
            );
        }
        let draws: Vec<f64> = (0..n).map(|_| beta(&mut rng, 0.8, 2.4)).collect();
        let mean = draws.iter().sum::<f64>() / f64::from(n);
        // Beta(0.8, 2.4) has mean 0.25 and standard deviation ≈ 0.21.
        assert!(
            (mean - 0.25).abs() < 5.0 * 0.21 / f64::from(n).sqrt(),
            "beta mean {mean}"
        );
    }

    #[test]
    fn same_seed_same_transactions_and_none_after_the_window() {
        let simulation = PartnerSimulation {
            customers: 500,
            purchases: BgNbdParameters {
                r: 0.5,
                alpha: 20.0,
                a: 0.8,
                b: 2.5,
            },
            spend: GammaGammaParameters {
                p: 6.0,
                q: 4.0,
                gamma: 15.0,
            },
            first_day: 100,
            acquisition_days: 60,
            last_day: 300,
        };
        let draw =
            |seed| simulate_partner(&simulation, 1000, &mut ChaCha20Rng::seed_from_u64(seed));
        let first = draw(9);
        assert_eq!(first, draw(9));
        assert_ne!(first, draw(10));
        assert!(first.as_ref().is_ok_and(|rows| rows.iter().all(
            |row| (100..=300).contains(&row.day)
                && (1000..1500).contains(&row.customer)
                && row.amount > 0.0
        )));
        assert_eq!(
            simulate_partner(
                &PartnerSimulation {
                    acquisition_days: 0,
                    ..simulation
                },
                0,
                &mut ChaCha20Rng::seed_from_u64(1)
            ),
            Err(LifetimeValueError::InvalidArgument {
                name: "acquisition_days",
                requirement: "at least 1",
                value: 0.0
            })
        );
    }
}
