//! Generates a seeded multi-partner basket data set, mines it federated
//! (exactly, or with DP at a per-partner ε) and writes Veil's rules and
//! itemsets as CSV; optionally writes the pooled baskets for mlxtend
//! (`reference/compare_mlxtend.py` and the checked-in reference data set).
//!
//! ```text
//! cargo run --release -p veil-basket-rules --example mine_simulated -- \
//!     --baskets-out pooled.csv --rules-out rules.csv --epsilon 1
//! ```

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use veil_basket_rules::simulate::{SimulationConfig, mine_federated, simulate};
use veil_basket_rules::{
    BasketGrouping, Baskets, MinerConfig, NoisePlan, PrivacyTarget, RuleConfig, association_rules,
    write_itemsets_csv, write_rules_csv,
};

#[derive(Debug, Parser)]
struct Arguments {
    /// Seed of the data set.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Seed of the noise (a stand-in for the nodes' OS-keyed generators).
    #[arg(long, default_value_t = 1)]
    noise_seed: u64,
    #[arg(long, default_value_t = 200)]
    categories: u32,
    #[arg(long, default_value_t = 10)]
    partners: u32,
    #[arg(long, default_value_t = 100_000)]
    customers_per_partner: u32,
    #[arg(long, default_value_t = 4.0)]
    mean_basket_size: f64,
    #[arg(long, default_value_t = 12)]
    max_basket_size: u32,
    #[arg(long, default_value_t = 10)]
    planted_pairs: u32,
    #[arg(long, default_value_t = 0.3)]
    pair_rate: f64,
    #[arg(long, default_value_t = 0.01)]
    min_support: f64,
    #[arg(long, default_value_t = 0.2)]
    min_confidence: f64,
    /// Incidence cap per customer at each level, comma-separated; its length
    /// is the number of levels.
    #[arg(long, default_value = "12,66,220", value_delimiter = ',')]
    caps: Vec<u32>,
    /// With noise: expected itemsets per level kept although their true
    /// support is below `min_support`.
    #[arg(long, default_value_t = 1.0)]
    expected_false_itemsets: f64,
    /// Per-partner ε of the whole run; exact counts when absent.
    #[arg(long)]
    epsilon: Option<f64>,
    #[arg(long, default_value_t = 1e-6)]
    delta: f64,
    #[arg(long, default_value_t = 1_000_000)]
    top_n: usize,
    /// Pooled baskets as CSV `basket,item`.
    #[arg(long)]
    baskets_out: Option<PathBuf>,
    #[arg(long)]
    rules_out: Option<PathBuf>,
    #[arg(long)]
    itemsets_out: Option<PathBuf>,
}

fn create(path: &PathBuf) -> anyhow::Result<BufWriter<File>> {
    Ok(BufWriter::new(
        File::create(path).with_context(|| format!("creating {}", path.display()))?,
    ))
}

fn main() -> anyhow::Result<()> {
    let arguments = Arguments::parse();
    let simulation = simulate(&SimulationConfig {
        seed: arguments.seed,
        categories: arguments.categories,
        partners: arguments.partners,
        customers_per_partner: arguments.customers_per_partner,
        days: 28,
        max_visits_per_customer: 1,
        mean_basket_size: arguments.mean_basket_size,
        max_basket_size: arguments.max_basket_size,
        planted_pairs: arguments.planted_pairs,
        pair_rate: arguments.pair_rate,
    })?;
    let partners = simulation.baskets(BasketGrouping::CustomerWindow)?;
    if let Some(path) = &arguments.baskets_out {
        let mut writer = create(path)?;
        writeln!(writer, "basket,item")?;
        for (basket_index, basket) in partners.iter().flat_map(Baskets::iter_baskets).enumerate() {
            for &item in basket {
                let label = simulation.vocabulary.label(item).context("item id")?;
                writeln!(writer, "{basket_index},{label}")?;
            }
        }
        writer.flush()?;
    }
    let miner_config = MinerConfig {
        min_support: arguments.min_support,
        itemset_caps: arguments.caps.clone(),
        max_baskets_per_customer: 1,
        expected_false_itemsets_per_level: arguments.expected_false_itemsets,
    };
    let plan = match arguments.epsilon {
        Some(epsilon) => Some(NoisePlan::calibrate(
            PrivacyTarget {
                epsilon,
                delta: arguments.delta,
                min_survivors: u64::from(arguments.partners),
            },
            &miner_config.level_sensitivities(),
        )?),
        None => None,
    };
    let mut rng = ChaCha20Rng::seed_from_u64(arguments.noise_seed);
    let started = Instant::now();
    let frequent = mine_federated(&partners, miner_config, plan.as_ref(), &mut rng)?;
    let rules = association_rules(
        &frequent,
        &RuleConfig {
            min_confidence: arguments.min_confidence,
            interval_level: 0.95,
            top_n: arguments.top_n,
        },
    )?;
    eprintln!(
        "mined {} itemsets and {} rules from {} baskets in {:.2}s{}",
        frequent.itemsets.len(),
        rules.len(),
        partners
            .iter()
            .map(|baskets| baskets.report().baskets)
            .sum::<u64>(),
        started.elapsed().as_secs_f64(),
        match &plan {
            Some(plan) => format!(
                " (epsilon spent {:.3}, level-1 node sigma {:.2})",
                plan.epsilon_spent(plan.len())?,
                plan.release(0)
                    .map_or(f64::NAN, |release| release.node_sigma())
            ),
            None => " (exact counts)".to_owned(),
        }
    );
    if let Some(path) = &arguments.rules_out {
        write_rules_csv(create(path)?, &rules, &simulation.vocabulary)?;
    }
    if let Some(path) = &arguments.itemsets_out {
        write_itemsets_csv(create(path)?, &frequent, &simulation.vocabulary)?;
    }
    Ok(())
}
