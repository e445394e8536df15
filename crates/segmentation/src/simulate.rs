//! Generated partners for tests, benchmarks and the reference comparison:
//! well-separated Gaussian clusters spread non-IID across partners, and
//! RFM values whose distributions differ by partner. Never used on real data.

use rand_core::CryptoRng;
use veil_dp_noise::Gaussian;

use crate::baseline::uniform;
use crate::error::SegmentationError;
use crate::points::Points;
use crate::rfm::RfmValues;

/// Attempts at drawing centres with the required separation.
const MAX_CENTRE_ATTEMPTS: usize = 100_000;

/// The shape of a generated federation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClusterSimulation {
    /// Number of partners.
    pub n_partners: usize,
    /// Customers at each partner.
    pub customers_per_partner: usize,
    /// True number of clusters.
    pub k: usize,
    /// Features per customer.
    pub n_features: usize,
    /// Smallest distance between two true centres.
    pub separation: f64,
    /// Standard deviation of each feature around its centre.
    pub spread: f64,
    /// `B` of the public box; centres stay `3·spread` inside it.
    pub box_bound: f64,
    /// Share of a partner's customers drawn from its two home clusters
    /// (partner `p`'s are `p mod k` and `p + 1 mod k`); the rest are uniform.
    pub skew: f64,
}

/// One generated partner.
#[derive(Debug, Clone, PartialEq)]
pub struct SimulatedPartner {
    /// Its customers, in the public scaling.
    pub points: Points,
    /// Each customer's true cluster.
    pub truth: Vec<usize>,
    /// Each customer's label; cluster `j`'s rate is `0.1 + 0.8·j/(k-1)`.
    pub labels: Vec<bool>,
}

/// A generated federation.
#[derive(Debug, Clone, PartialEq)]
pub struct SimulatedFederation {
    /// The true centres.
    pub centres: Vec<Vec<f64>>,
    /// The partners.
    pub partners: Vec<SimulatedPartner>,
}

impl SimulatedFederation {
    /// Every partner's points pooled (only a test can do this).
    pub fn pooled(&self) -> Result<Points, SegmentationError> {
        let parts: Vec<&Points> = self.partners.iter().map(|p| &p.points).collect();
        Points::concat(&parts)
    }

    /// Every partner's true clusters, in pooled order.
    pub fn pooled_truth(&self) -> Vec<usize> {
        self.partners
            .iter()
            .flat_map(|partner| partner.truth.iter().copied())
            .collect()
    }
}

/// Generates a federation; refuses shapes whose centres cannot be separated.
pub fn simulate_clusters<R: CryptoRng>(
    simulation: &ClusterSimulation,
    rng: &mut R,
) -> Result<SimulatedFederation, SegmentationError> {
    let invalid = |field, reason: &str| SegmentationError::InvalidConfig {
        field,
        reason: reason.to_owned(),
    };
    if simulation.k == 0 || simulation.n_partners == 0 {
        return Err(invalid(
            "simulation.k",
            "k and n_partners must be at least 1",
        ));
    }
    let noise = Gaussian::new(simulation.spread)?;
    let inner = simulation.box_bound - 3.0 * simulation.spread;
    if inner.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
        return Err(invalid(
            "simulation.spread",
            "the box leaves no room for centres",
        ));
    }
    let mut centres: Vec<Vec<f64>> = Vec::with_capacity(simulation.k);
    for _ in 0..MAX_CENTRE_ATTEMPTS {
        if centres.len() == simulation.k {
            break;
        }
        let candidate: Vec<f64> = (0..simulation.n_features)
            .map(|_| -inner + 2.0 * inner * uniform(rng))
            .collect();
        let separated = centres.iter().all(|centre| {
            crate::points::squared_distance(centre, &candidate).sqrt() >= simulation.separation
        });
        if separated {
            centres.push(candidate);
        }
    }
    if centres.len() < simulation.k {
        return Err(invalid(
            "simulation.separation",
            "could not place the centres that far apart in the box",
        ));
    }
    let mut partners = Vec::with_capacity(simulation.n_partners);
    for partner in 0..simulation.n_partners {
        let mut rows = Vec::with_capacity(simulation.customers_per_partner);
        let mut truth = Vec::with_capacity(simulation.customers_per_partner);
        let mut labels = Vec::with_capacity(simulation.customers_per_partner);
        for _ in 0..simulation.customers_per_partner {
            let cluster = if uniform(rng) < simulation.skew {
                (partner + usize::from(uniform(rng) < 0.5)) % simulation.k
            } else {
                ((uniform(rng) * simulation.k as f64) as usize).min(simulation.k - 1)
            };
            let row: Vec<f64> = centres[cluster]
                .iter()
                .map(|centre| centre + noise.sample(rng))
                .collect();
            let rate = if simulation.k > 1 {
                0.1 + 0.8 * cluster as f64 / (simulation.k - 1) as f64
            } else {
                0.5
            };
            rows.push(row);
            truth.push(cluster);
            labels.push(uniform(rng) < rate);
        }
        partners.push(SimulatedPartner {
            points: Points::from_scaled(&rows, simulation.n_features, simulation.box_bound)?,
            truth,
            labels,
        });
    }
    Ok(SimulatedFederation { centres, partners })
}

/// RFM values for `n_partners` partners of `customers_per_partner` each:
/// exponential recency, geometric frequency and log-normal spend per
/// purchase, with means that differ by partner (non-IID).
pub fn simulate_rfm<R: CryptoRng>(
    n_partners: usize,
    customers_per_partner: usize,
    rng: &mut R,
) -> Result<Vec<Vec<RfmValues>>, SegmentationError> {
    let standard = Gaussian::new(1.0)?;
    Ok((0..n_partners)
        .map(|partner| {
            let recency_mean = 30.0 * (1 + partner % 3) as f64;
            let frequency_mean = 2.0 * (1 + partner % 4) as f64;
            let spend_log_mean = 3.5 + 0.2 * partner as f64;
            (0..customers_per_partner)
                .map(|_| {
                    let open = 1.0 - uniform(rng);
                    let recency_days = (-recency_mean * open.ln()).min(900.0).floor();
                    let open = 1.0 - uniform(rng);
                    let frequency = 1.0 + (-frequency_mean * open.ln()).floor();
                    let monetary = frequency * (spend_log_mean + 0.8 * standard.sample(rng)).exp();
                    RfmValues {
                        recency_days,
                        frequency,
                        monetary: (monetary * 100.0).round() / 100.0,
                    }
                })
                .collect()
        })
        .collect())
}
