//! Partners whose purchases follow the "buy till you die" models with known
//! parameters: purchase days from BG/NBD, spend from Gamma-Gamma, and
//! categories with planted co-purchase pairs, so tests can check that the
//! lifetime-value and basket-rules jobs recover what was planted.
//!
//! The purchase process is `veil_lifetime_value::simulate` (each partner its
//! own BG/NBD and Gamma-Gamma parameters, `non_iid_partners`), the baskets
//! `veil_basket_rules::simulate::PartnerBaskets` (each partner its own
//! popularity, basket size and rate of planted pairs). Each purchase becomes
//! one row per category bought, its amount split over the rows, so several
//! rows on one day are one purchase, as in real data. The two are drawn from
//! separate seeded streams: the purchase days do not depend on the basket
//! settings.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use rand::SeedableRng;
use rand_chacha::{ChaCha12Rng, ChaCha20Rng};
use veil_basket_rules::simulate::{PartnerBaskets, category_name, plant_pairs};
use veil_lifetime_value::simulate::{PartnerSimulation, non_iid_partners, simulate_partner};

use crate::SynthError;
use crate::generate::HEADER;

/// Days in the calibration window that ends at the cutoff.
const CALIBRATION_DAYS: i64 = 365;

/// First purchases fall in the first half of the calibration window.
const ACQUISITION_DAYS: u32 = 182;

/// Categories bought per purchase and the pairs planted among them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BasketPlan {
    /// The public vocabulary's size: categories `cat-000` onwards.
    pub categories: u32,
    /// Disjoint category pairs bought together more often than chance.
    pub planted_pairs: u32,
    /// Mean chance a purchase holds one planted pair (each partner has its
    /// own, from half to one and a half times this).
    pub pair_rate: f64,
    /// Mean categories per purchase, at least 1.
    pub mean_basket_size: f64,
    /// Most categories per purchase, at least 2.
    pub max_basket_size: u32,
}

impl BasketPlan {
    /// 20 categories, 3 planted pairs in a quarter of the purchases, about
    /// two categories per purchase.
    pub fn small() -> Self {
        Self {
            categories: 20,
            planted_pairs: 3,
            pair_rate: 0.25,
            mean_basket_size: 2.0,
            max_basket_size: 6,
        }
    }
}

/// What to write.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BuyTillYouDieConfig {
    /// Number of partners; they cycle through three different populations.
    pub partners: usize,
    /// Customers at each partner.
    pub customers_per_partner: u64,
    /// The last day of the calibration year.
    pub cutoff: NaiveDate,
    /// Days after the cutoff that are simulated too (the holdout).
    pub holdout_days: u32,
    /// The baskets.
    pub baskets: BasketPlan,
    /// Seed of every stream.
    pub seed: u64,
}

/// What was written, and the truth the tests compare against.
#[derive(Debug, Clone, PartialEq)]
pub struct BuyTillYouDiePartners {
    /// One CSV per partner, `partner-<index>.csv`.
    pub files: Vec<PathBuf>,
    /// Each partner's true BG/NBD and Gamma-Gamma parameters (days, counted
    /// from the start of the calibration year).
    pub simulations: Vec<PartnerSimulation>,
    /// The category vocabulary, in id order.
    pub categories: Vec<String>,
    /// The planted pairs, by name.
    pub planted_pairs: Vec<(String, String)>,
}

/// Writes the partners' files into `dir` (the generator's usual columns;
/// customer ids `Cust-NNNNNNN`, disjoint across partners).
pub fn write_buy_till_you_die_files(
    config: &BuyTillYouDieConfig,
    dir: &Path,
) -> Result<BuyTillYouDiePartners, SynthError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SynthError::Io {
            path: Some(path),
            source,
        }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let plan = config.baskets;
    if plan.categories < 2.max(2 * plan.planted_pairs)
        || plan.max_basket_size < 2
        || !(plan.mean_basket_size >= 1.0 && plan.mean_basket_size.is_finite())
        || !(0.0..=1.0).contains(&plan.pair_rate)
    {
        return Err(SynthError::InvalidBasketPlan(format!(
            "{plan:?}: need at least 2 categories and two per planted pair, a largest basket of at least 2, a mean basket size of at least 1 and a pair rate in [0, 1]"
        )));
    }
    let simulations = non_iid_partners(
        config.partners,
        config.customers_per_partner,
        0,
        ACQUISITION_DAYS,
        CALIBRATION_DAYS - 1 + i64::from(config.holdout_days),
    );
    let first_epoch_day = i64::from(config.cutoff.to_epoch_days()) - (CALIBRATION_DAYS - 1);
    let mut basket_rng = ChaCha12Rng::seed_from_u64(config.seed ^ 0xba5e);
    let planted = plant_pairs(plan.categories, plan.planted_pairs, &mut basket_rng);
    let categories: Vec<String> = (0..plan.categories).map(category_name).collect();
    let mut files = Vec::with_capacity(simulations.len());
    let mut basket = Vec::new();
    for (index, simulation) in simulations.iter().enumerate() {
        let transactions = simulate_partner(
            simulation,
            index as u64 * config.customers_per_partner,
            &mut ChaCha20Rng::seed_from_u64(config.seed + index as u64),
        )
        .map_err(|error| SynthError::Simulation(error.to_string()))?;
        let baskets = PartnerBaskets::draw(
            plan.categories,
            &planted,
            plan.pair_rate,
            plan.mean_basket_size,
            plan.max_basket_size,
            &mut basket_rng,
        );
        let path = dir.join(format!("partner-{index}.csv"));
        let mut out = BufWriter::new(File::create(&path).map_err(io(&path))?);
        writeln!(out, "{HEADER}").map_err(io(&path))?;
        for transaction in &transactions {
            let seconds = (first_epoch_day + transaction.day) * 86_400 + 12 * 3_600;
            let timestamp = chrono::DateTime::from_timestamp(seconds, 0)
                .ok_or_else(|| {
                    SynthError::Simulation(format!(
                        "purchase day {} of partner {index} is out of the calendar's range",
                        transaction.day
                    ))
                })?
                .format("%Y-%m-%dT%H:%M:%SZ");
            baskets.fill(&mut basket, &mut basket_rng);
            // The purchase's amount in cents, split over its categories with
            // the remainder on the first, so the day's rows sum to it.
            let cents = (transaction.amount * 100.0).round().max(1.0) as u64;
            let share = cents / basket.len() as u64;
            for (position, &item) in basket.iter().enumerate() {
                let row_cents = if position == 0 {
                    cents - share * (basket.len() as u64 - 1)
                } else {
                    share
                };
                writeln!(
                    out,
                    "Cust-{:07},{timestamp},{}.{:02},1,{},online",
                    transaction.customer,
                    row_cents / 100,
                    row_cents % 100,
                    categories[item as usize]
                )
                .map_err(io(&path))?;
            }
        }
        out.flush().map_err(io(&path))?;
        files.push(path);
    }
    Ok(BuyTillYouDiePartners {
        files,
        simulations,
        planted_pairs: planted
            .iter()
            .map(|&(first, second)| {
                (
                    categories[first as usize].clone(),
                    categories[second as usize].clone(),
                )
            })
            .collect(),
        categories,
    })
}
