//! Writes the data sets `reference/generate_reference.py` feeds to `lifetimes`:
//!
//! * `reference_data reference OUT.csv`: the checked-in reference transactions
//!   (3,000 customers of one population, day numbers since 1970-01-01);
//! * `reference_data bench N OUT.csv`: pooled summaries of N customers over 10
//!   non-IID partners (the data of `benches/fit.rs`), after timing Veil's
//!   summaries, histogram and fits on them, so the script can time `lifetimes`
//!   on the same data in the same run.

use std::io::Write;
use std::time::Instant;

use anyhow::Context;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use veil_lifetime_value::simulate::{non_iid_partners, simulate_partner};
use veil_lifetime_value::{
    BinningConfig, HistogramBinning, fit_bg_nbd, fit_from_histogram, fit_gamma_gamma,
    local_histogram, summarise_transactions,
};

/// 2020-01-01 as days since the Unix epoch.
const FIRST_DAY: i64 = 18_262;
/// The reference window: a year, acquisition over its first half.
const LAST_DAY: i64 = FIRST_DAY + 364;
const ACQUISITION_DAYS: u32 = 182;

fn main() -> anyhow::Result<()> {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    match arguments
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["reference", out] => write_reference(out),
        ["bench", customers, out] => {
            let customers: u64 = customers.parse().context("N must be a customer count")?;
            bench(customers, out)
        }
        _ => anyhow::bail!(
            "usage: reference_data reference OUT.csv | reference_data bench N OUT.csv"
        ),
    }
}

fn write_reference(out: &str) -> anyhow::Result<()> {
    let partner = &non_iid_partners(1, 3_000, FIRST_DAY, ACQUISITION_DAYS, LAST_DAY)[0];
    let transactions = simulate_partner(partner, 1, &mut ChaCha20Rng::seed_from_u64(2005))?;
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(out).with_context(|| format!("creating {out}"))?,
    );
    writeln!(file, "customer,day,amount")?;
    for row in &transactions {
        // Four decimals: a currency amount, and exact in both readers.
        writeln!(file, "{},{},{:.4}", row.customer, row.day, row.amount)?;
    }
    file.flush().with_context(|| format!("writing {out}"))?;
    Ok(())
}

fn bench(customers: u64, out: &str) -> anyhow::Result<()> {
    // The same partners, seeds and relative window as benches/fit.rs.
    let partners = non_iid_partners(10, customers / 10, FIRST_DAY, ACQUISITION_DAYS, LAST_DAY);
    let per_partner: Vec<_> = partners
        .iter()
        .enumerate()
        .map(|(index, partner)| {
            let first = index as u64 * customers;
            simulate_partner(
                partner,
                first,
                &mut ChaCha20Rng::seed_from_u64(index as u64),
            )
        })
        .collect::<Result<_, _>>()?;
    let binning = HistogramBinning::new(BinningConfig::recommended(
        (LAST_DAY - FIRST_DAY) as u32,
        1.0,
        1_000.0,
    ))?;
    let started = Instant::now();
    let mut aggregate = vec![0i64; binning.len()];
    let mut pooled = Vec::new();
    for transactions in &per_partner {
        let summaries: Vec<_> = summarise_transactions(transactions, LAST_DAY)?
            .into_iter()
            .map(|(_, summary)| summary)
            .collect();
        for (sum, count) in aggregate
            .iter_mut()
            .zip(local_histogram(&summaries, &binning)?)
        {
            *sum += count;
        }
        pooled.extend(summaries);
    }
    let fit = fit_from_histogram(&binning, &aggregate)?.models;
    let federated = started.elapsed();
    let started = Instant::now();
    let purchases = fit_bg_nbd(&pooled)?;
    let spend = fit_gamma_gamma(&pooled)?;
    let exact = started.elapsed();
    println!(
        "veil: {} customers, 10 partners: summaries + histograms + histogram fit {:.3} s; exact per-customer fit of the pooled summaries {:.3} s",
        pooled.len(),
        federated.as_secs_f64(),
        exact.as_secs_f64()
    );
    println!("veil histogram fit: {:?} {:?}", fit.purchases, fit.spend);
    println!("veil exact fit: {purchases:?} {spend:?}");
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(out).with_context(|| format!("creating {out}"))?,
    );
    writeln!(file, "frequency,recency,T,monetary_value")?;
    for summary in &pooled {
        writeln!(
            file,
            "{},{},{},{}",
            summary.frequency, summary.recency_days, summary.age_days, summary.mean_spend
        )?;
    }
    file.flush().with_context(|| format!("writing {out}"))?;
    Ok(())
}
