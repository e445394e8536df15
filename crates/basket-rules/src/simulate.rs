//! Seeded synthetic purchase rows for tests and benchmarks: categories with
//! partner-specific popularity and planted co-purchase pairs, across several
//! non-IID partners.
//!
//! Each partner ranks the categories by a Zipf law with its own exponent and
//! its own rotation of the category order, so the popular categories differ
//! by partner; basket sizes and the rate of planted pairs differ by partner
//! too. A customer makes 1 to `max_visits_per_customer` visits on distinct
//! days; each visit buys `1 + Poisson(mean_basket_size − 1)` distinct
//! categories (at most `max_basket_size`), and with the partner's pair rate
//! includes both categories of one planted pair, chosen uniformly.
//!
//! [`mine_federated`] runs the whole protocol in one process, as the
//! secure sum would reveal it: every partner counts and noises its vector,
//! the vectors are summed, and the miner takes the sum.
//!
//! Test and benchmark data only: the generator's randomness is a seeded
//! ChaCha stream, never a source of noise (that is `veil-dp-noise`, from the
//! generator passed to [`mine_federated`]).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;
use rand_core::CryptoRng;

use crate::baskets::{BasketConfig, BasketGrouping, Baskets, PurchaseRow};
use crate::counting::local_counts;
use crate::error::RulesError;
use crate::miner::{FrequentItemsets, LevelAggregate, Miner, MinerConfig, Next};
use crate::privacy::NoisePlan;
use crate::vocabulary::{ItemId, Vocabulary};

/// What to generate; every field is a choice of the test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimulationConfig {
    /// Seed of the whole data set.
    pub seed: u64,
    /// Number of categories (the vocabulary).
    pub categories: u32,
    /// Number of partners.
    pub partners: u32,
    /// Customers at each partner.
    pub customers_per_partner: u32,
    /// Visits happen on days `0..days`.
    pub days: u32,
    /// Each customer visits on 1 to this many distinct days (at most `days`).
    pub max_visits_per_customer: u32,
    /// Mean number of categories bought per visit, at least 1.
    pub mean_basket_size: f64,
    /// Most categories bought per visit, at least 2.
    pub max_basket_size: u32,
    /// Number of planted pairs (disjoint category pairs).
    pub planted_pairs: u32,
    /// Mean probability that a visit holds a planted pair, in `[0, 1]`;
    /// partners range from half to one and a half times it (capped at 1).
    pub pair_rate: f64,
}

/// One generated purchase row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulatedRow {
    /// Customer key, unique across partners.
    pub customer: String,
    /// Day of the visit.
    pub day: i64,
    /// Category name, `cat-000` onwards.
    pub item: String,
}

impl SimulatedRow {
    /// The row as basket building reads it.
    pub fn as_row(&self) -> PurchaseRow<'_> {
        PurchaseRow {
            customer: &self.customer,
            day: self.day,
            item: &self.item,
        }
    }
}

/// A generated data set.
#[derive(Debug, Clone, PartialEq)]
pub struct Simulation {
    /// What it was generated from.
    pub config: SimulationConfig,
    /// The declared category vocabulary.
    pub vocabulary: Vocabulary,
    /// The planted pairs, each sorted.
    pub planted_pairs: Vec<(ItemId, ItemId)>,
    /// Each partner's rows.
    pub partners: Vec<Vec<SimulatedRow>>,
}

impl Simulation {
    /// Each partner's baskets over the whole simulated window.
    pub fn baskets(&self, grouping: BasketGrouping) -> Result<Vec<Baskets>, RulesError> {
        let config = BasketConfig {
            grouping,
            first_day: 0,
            last_day: i64::from(self.config.days) - 1,
        };
        self.partners
            .iter()
            .map(|rows| {
                Baskets::build(
                    rows.iter().map(SimulatedRow::as_row),
                    &self.vocabulary,
                    &config,
                )
            })
            .collect()
    }
}

/// The name of category `index`.
pub fn category_name(index: u32) -> String {
    format!("cat-{index:03}")
}

fn check(config: &SimulationConfig) -> Result<(), RulesError> {
    let zero = |what| Err(RulesError::ZeroBound { what });
    if config.categories < 2 {
        return Err(RulesError::OutOfRange {
            what: "categories",
            range: "[2, 2^31)",
            value: f64::from(config.categories),
        });
    }
    if config.partners == 0 {
        return zero("partners");
    }
    if config.days == 0 {
        return zero("days");
    }
    if config.max_visits_per_customer == 0 || config.max_visits_per_customer > config.days {
        return Err(RulesError::OutOfRange {
            what: "max_visits_per_customer",
            range: "[1, days]",
            value: f64::from(config.max_visits_per_customer),
        });
    }
    if !(config.mean_basket_size >= 1.0 && config.mean_basket_size.is_finite()) {
        return Err(RulesError::OutOfRange {
            what: "mean_basket_size",
            range: "[1, inf)",
            value: config.mean_basket_size,
        });
    }
    if config.max_basket_size < 2 || config.max_basket_size > config.categories {
        return Err(RulesError::OutOfRange {
            what: "max_basket_size",
            range: "[2, categories]",
            value: f64::from(config.max_basket_size),
        });
    }
    if u64::from(config.planted_pairs) * 2 > u64::from(config.categories) {
        return Err(RulesError::OutOfRange {
            what: "planted_pairs",
            range: "[0, categories / 2]",
            value: f64::from(config.planted_pairs),
        });
    }
    if !(0.0..=1.0).contains(&config.pair_rate) {
        return Err(RulesError::OutOfRange {
            what: "pair_rate",
            range: "[0, 1]",
            value: config.pair_rate,
        });
    }
    Ok(())
}

/// Poisson draw by multiplication of uniforms (means here are small).
fn poisson<R: Rng>(mean: f64, rng: &mut R) -> u32 {
    let limit = (-mean).exp();
    let mut product: f64 = rng.random();
    let mut count = 0;
    while product > limit {
        product *= rng.random::<f64>();
        count += 1;
    }
    count
}

/// One partner's popularity: cumulative Zipf weights over a rotated order.
fn partner_cumulative<R: Rng>(categories: u32, rng: &mut R) -> Vec<f64> {
    let exponent = rng.random_range(0.6..1.2);
    let rotation = rng.random_range(0..categories);
    let mut cumulative = Vec::with_capacity(categories as usize);
    let mut total = 0.0;
    for category in 0..categories {
        let rank = (category + categories - rotation) % categories;
        total += 1.0 / f64::from(rank + 1).powf(exponent);
        cumulative.push(total);
    }
    cumulative.iter_mut().for_each(|weight| *weight /= total);
    cumulative
}

/// `count` disjoint category pairs out of `categories`, each sorted, drawn
/// by a partial shuffle.
pub fn plant_pairs<R: Rng>(categories: u32, count: u32, rng: &mut R) -> Vec<(ItemId, ItemId)> {
    let mut shuffled: Vec<ItemId> = (0..categories).collect();
    for position in 0..shuffled.len() {
        let chosen = rng.random_range(position..shuffled.len());
        shuffled.swap(position, chosen);
    }
    shuffled
        .chunks_exact(2)
        .take(count as usize)
        .map(|pair| (pair[0].min(pair[1]), pair[0].max(pair[1])))
        .collect()
}

/// One partner's way of filling a basket: its own Zipf popularity over a
/// rotated category order, its own rate of planted pairs (half to one and a
/// half times the mean, capped at 1) and its own mean basket size (0.8 to
/// 1.2 times the mean). Also the basket model of `veil-synth-data`'s
/// buy-till-you-die partners.
#[derive(Debug, Clone, PartialEq)]
pub struct PartnerBaskets {
    cumulative: Vec<f64>,
    planted_pairs: Vec<(ItemId, ItemId)>,
    pair_rate: f64,
    mean_size: f64,
    max_size: u32,
}

impl PartnerBaskets {
    /// Draws one partner's parameters around the means.
    pub fn draw<R: Rng>(
        categories: u32,
        planted_pairs: &[(ItemId, ItemId)],
        pair_rate: f64,
        mean_basket_size: f64,
        max_basket_size: u32,
        rng: &mut R,
    ) -> Self {
        let cumulative = partner_cumulative(categories, rng);
        let pair_rate = (pair_rate * rng.random_range(0.5..1.5)).min(1.0);
        let mean_size = mean_basket_size * rng.random_range(0.8..1.2);
        Self {
            cumulative,
            planted_pairs: planted_pairs.to_vec(),
            pair_rate,
            mean_size,
            max_size: max_basket_size,
        }
    }

    /// One visit's distinct categories into `basket` (cleared first):
    /// `1 + Poisson(mean − 1)` of them (at most the maximum), including both
    /// of one planted pair with the partner's pair rate.
    pub fn fill<R: Rng>(&self, basket: &mut Vec<ItemId>, rng: &mut R) {
        let categories = self.cumulative.len() as u32;
        let size = (1 + poisson(self.mean_size - 1.0, rng)).min(self.max_size);
        basket.clear();
        if !self.planted_pairs.is_empty() && rng.random_bool(self.pair_rate) {
            let (first, second) = self.planted_pairs[rng.random_range(0..self.planted_pairs.len())];
            basket.extend([first, second]);
        }
        // Distinct draws; a few retries keep heavy heads from looping.
        let mut attempts = 0;
        while basket.len() < size as usize && attempts < 20 * self.max_size {
            attempts += 1;
            let uniform: f64 = rng.random();
            let item = self.cumulative.partition_point(|&weight| weight < uniform) as ItemId;
            let item = item.min(categories - 1);
            if !basket.contains(&item) {
                basket.push(item);
            }
        }
    }
}

/// Generates the data set.
pub fn simulate(config: &SimulationConfig) -> Result<Simulation, RulesError> {
    check(config)?;
    let mut rng = ChaCha12Rng::seed_from_u64(config.seed);
    let vocabulary = Vocabulary::declared((0..config.categories).map(category_name))?;
    let planted_pairs = plant_pairs(config.categories, config.planted_pairs, &mut rng);
    let mut partners = Vec::with_capacity(config.partners as usize);
    for partner in 0..config.partners {
        let baskets = PartnerBaskets::draw(
            config.categories,
            &planted_pairs,
            config.pair_rate,
            config.mean_basket_size,
            config.max_basket_size,
            &mut rng,
        );
        let mut rows = Vec::new();
        let mut visit_days = Vec::new();
        let mut basket: Vec<ItemId> = Vec::new();
        for customer in 0..config.customers_per_partner {
            let customer_key = format!("p{partner}-c{customer}");
            let visits = rng.random_range(1..=config.max_visits_per_customer);
            visit_days.clear();
            while visit_days.len() < visits as usize {
                let day = rng.random_range(0..config.days);
                if !visit_days.contains(&day) {
                    visit_days.push(day);
                }
            }
            for &day in &visit_days {
                baskets.fill(&mut basket, &mut rng);
                rows.extend(basket.iter().map(|&item| SimulatedRow {
                    customer: customer_key.clone(),
                    day: i64::from(day),
                    item: category_name(item),
                }));
            }
        }
        partners.push(rows);
    }
    Ok(Simulation {
        config: *config,
        vocabulary,
        planted_pairs,
        partners,
    })
}

/// Runs federated mining in one process: at each level every partner counts
/// its baskets under the level's cap, adds its noise when there is a plan
/// (all partners survive, so the sum holds every partner's noise), and the
/// miner takes the plain sum of the vectors, which is what secure
/// aggregation reveals. `rng` stands in for every node's generator.
pub fn mine_federated<R: CryptoRng>(
    partners: &[Baskets],
    config: MinerConfig,
    noise: Option<&NoisePlan>,
    rng: &mut R,
) -> Result<FrequentItemsets, RulesError> {
    let vocabulary_len = partners.first().map_or(0, Baskets::vocabulary_len);
    let mut miner = Miner::new(config, vocabulary_len, noise.cloned())?;
    loop {
        let (Some(candidates), Some(cap)) = (miner.candidates().cloned(), miner.cap()) else {
            return Err(RulesError::MinerFinished);
        };
        let mut sum = vec![0i64; candidates.vector_len()];
        for baskets in partners {
            let mut counts = local_counts(baskets, &candidates, cap, rng)?;
            if let Some(release) = noise.and_then(|plan| plan.release(candidates.level() - 1)) {
                release.add_node_noise(&mut counts, rng)?;
            }
            for (index, (total, count)) in sum.iter_mut().zip(counts).enumerate() {
                *total = total
                    .checked_add(count)
                    .ok_or(RulesError::CountOverflow(index))?;
            }
        }
        let noise_shares = if noise.is_some() {
            partners.len() as u64
        } else {
            0
        };
        match miner.handle_level_counts(LevelAggregate {
            counts: sum,
            noise_shares,
        })? {
            Next::Candidates(_) => {}
            Next::Done(frequent) => return Ok(frequent),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(seed: u64) -> SimulationConfig {
        SimulationConfig {
            seed,
            categories: 40,
            partners: 3,
            customers_per_partner: 500,
            days: 10,
            max_visits_per_customer: 3,
            mean_basket_size: 3.0,
            max_basket_size: 6,
            planted_pairs: 2,
            pair_rate: 0.4,
        }
    }

    /// Share of each partner's rows that name each category.
    fn category_shares(rows: &[SimulatedRow], categories: u32) -> Vec<f64> {
        let mut shares = vec![0.0; categories as usize];
        for row in rows {
            if let Some(index) = (0..categories).position(|index| category_name(index) == row.item)
            {
                shares[index] += 1.0 / rows.len() as f64;
            }
        }
        shares
    }

    #[test]
    fn the_same_seed_gives_the_same_data_and_partners_differ() {
        let first = simulate(&config(5)).expect("valid");
        assert_eq!(Ok(&first), simulate(&config(5)).as_ref());
        assert_ne!(Ok(&first), simulate(&config(6)).as_ref());
        // Non-IID: the partners' category mixes are far apart (total
        // variation distance above 0.2; two samples of one mix of 1500+
        // rows are within about 0.1).
        let shares: Vec<Vec<f64>> = first
            .partners
            .iter()
            .map(|rows| category_shares(rows, 40))
            .collect();
        let distance = |left: &[f64], right: &[f64]| {
            left.iter()
                .zip(right)
                .map(|(a, b)| (a - b).abs())
                .sum::<f64>()
                / 2.0
        };
        assert!(distance(&shares[0], &shares[1]) > 0.2);
        assert!(distance(&shares[1], &shares[2]) > 0.2);
        // Planted pairs are disjoint and sorted.
        let mut items: Vec<ItemId> = first
            .planted_pairs
            .iter()
            .flat_map(|&(a, b)| [a, b])
            .collect();
        assert!(first.planted_pairs.iter().all(|&(a, b)| a < b));
        items.sort_unstable();
        items.dedup();
        assert_eq!(items.len(), 4);
    }

    #[test]
    fn bad_simulation_settings_are_refused() {
        let bad = SimulationConfig {
            planted_pairs: 21,
            ..config(1)
        };
        assert!(matches!(
            simulate(&bad),
            Err(RulesError::OutOfRange {
                what: "planted_pairs",
                ..
            })
        ));
        let bad = SimulationConfig {
            max_visits_per_customer: 11,
            ..config(1)
        };
        assert!(matches!(
            simulate(&bad),
            Err(RulesError::OutOfRange {
                what: "max_visits_per_customer",
                ..
            })
        ));
        let bad = SimulationConfig {
            partners: 0,
            ..config(1)
        };
        assert_eq!(
            simulate(&bad),
            Err(RulesError::ZeroBound { what: "partners" })
        );
    }
}
