//! The node's side of a lifetime-value job: its customers' summaries as of
//! the cutoff, the two noised releases (the summary histogram, then the
//! holdout check at the federation's fitted models), and the local
//! `client-node clv` command that turns the fitted models into each
//! customer's expected purchases, probability of being alive, expected spend
//! and discounted lifetime value.

use std::path::Path;

use anyhow::{Context, bail};
use chrono::NaiveDate;
use rand_core::CryptoRng;
use veil_behaviour_features::TransactionLog;
use veil_job::JobSpec;
use veil_job::analysis::Analysis;
use veil_job::export::ExportedModel;
use veil_job::lifetime_analysis::{
    EVALUATION_BLOCK, EVALUATION_BUCKETS, LifetimeValue, evaluation_contribution, parameters_to_fit,
};
use veil_lifetime_value::{
    ClvConfig, CustomerSummary, Purchase, add_histogram_noise, local_histogram,
};
use veil_partner_data::{PartnerDataConfig, load_partner_data_with_local_ids};

use crate::score::write_owner_only_csv;

/// Days per discounting period, as `lifetimes` counts months with `freq="D"`.
const DAYS_PER_PERIOD: f64 = 30.0;

/// One customer as the lifetime models see it: the summary as of the cutoff
/// and the purchase days in the holdout window after it.
struct CustomerHistory {
    customer: String,
    summary: CustomerSummary,
    holdout_purchases: u32,
}

/// Every customer with a purchase on or before `cutoff`, summarised in
/// purchase days (several rows on one day are one purchase).
fn customer_histories(
    log: &TransactionLog,
    cutoff: NaiveDate,
    holdout_days: u32,
) -> anyhow::Result<Vec<CustomerHistory>> {
    let cutoff_day = i64::from(cutoff.to_epoch_days());
    let holdout_end = cutoff_day + i64::from(holdout_days);
    let mut histories = Vec::new();
    for (customer, transactions) in log.customers() {
        let purchases: Vec<Purchase> = transactions
            .iter()
            .map(|transaction| Purchase {
                day: transaction.day(),
                amount: transaction.amount,
            })
            .collect();
        let Some(summary) = CustomerSummary::from_purchases(&purchases, cutoff_day)? else {
            continue;
        };
        let mut holdout: Vec<i64> = purchases
            .iter()
            .map(|purchase| purchase.day)
            .filter(|day| *day > cutoff_day && *day <= holdout_end)
            .collect();
        holdout.sort_unstable();
        holdout.dedup();
        histories.push(CustomerHistory {
            customer: customer.to_owned(),
            summary,
            holdout_purchases: holdout.len() as u32,
        });
    }
    Ok(histories)
}

/// This node's statistics for release `index` of a lifetime-value job,
/// noised with its own discrete Gaussian from `rng`.
pub fn release_statistics<R: CryptoRng>(
    lifetime: &LifetimeValue,
    spec: &JobSpec,
    index: usize,
    parameters: &[f64],
    log: &TransactionLog,
    rng: &mut R,
) -> anyhow::Result<Vec<f64>> {
    let histories = customer_histories(log, spec.label.cutoff, lifetime.holdout_days)?;
    let mut vector = match index {
        0 => {
            if !parameters.is_empty() {
                bail!(
                    "the histogram release takes no parameters, got {}",
                    parameters.len()
                );
            }
            let summaries: Vec<CustomerSummary> =
                histories.iter().map(|history| history.summary).collect();
            local_histogram(&summaries, &lifetime.binning)?
        }
        1 => {
            let fit = parameters_to_fit(parameters)?;
            let horizon = f64::from(lifetime.holdout_days);
            let mut sums = vec![0i64; EVALUATION_BUCKETS * EVALUATION_BLOCK];
            for history in &histories {
                let predicted = fit
                    .purchases
                    .conditional_expected_purchases(horizon, &history.summary)
                    .unwrap_or(f64::NAN);
                let (bucket, block) = evaluation_contribution(
                    &history.summary,
                    predicted,
                    f64::from(history.holdout_purchases),
                );
                let target = &mut sums[bucket * EVALUATION_BLOCK..(bucket + 1) * EVALUATION_BLOCK];
                for (sum, value) in target.iter_mut().zip(block) {
                    *sum = sum.saturating_add(value);
                }
            }
            sums
        }
        _ => bail!("a lifetime-value job has 2 releases, not {}", index + 1),
    };
    add_histogram_noise(&mut vector, lifetime.node_sigma(index), rng)?;
    let units = LifetimeValue::units(index);
    Ok(vector.iter().map(|&value| value as f64 / units).collect())
}

/// What `client-node clv` wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ClvSummary {
    /// Customers written.
    pub customers: usize,
    /// Their summed discounted lifetime value.
    pub total_value: f64,
    /// Rows rejected while reading the partner's data.
    pub rows_rejected: u64,
}

/// For every customer of the partner with a purchase up to the job's
/// cutoff: expected purchases in the next `horizon_days`, probability alive,
/// expected spend per purchase and the lifetime value over the horizon
/// discounted at `discount_rate` per 30-day period, written to `output`
/// (owner-only; raw ids stay here).
pub fn clv_customers(
    model_path: &Path,
    horizon_days: u32,
    discount_rate: f64,
    data: &PartnerDataConfig,
    output: &Path,
) -> anyhow::Result<ClvSummary> {
    let model = ExportedModel::read(model_path)?;
    if !matches!(model.spec.analysis, Some(Analysis::LifetimeValue(_))) {
        bail!(
            "{} is not the result of a lifetime-value job",
            model_path.display()
        );
    }
    if horizon_days == 0 {
        bail!("--horizon-days must be at least 1");
    }
    let values: Vec<f64> = model.parameters.iter().map(|&v| f64::from(v)).collect();
    let fit = parameters_to_fit(&values)?;
    let config = ClvConfig {
        periods: (f64::from(horizon_days) / DAYS_PER_PERIOD).ceil() as u32,
        days_per_period: DAYS_PER_PERIOD,
        discount_rate_per_period: discount_rate,
    };
    let (data, local_ids) = load_partner_data_with_local_ids(data)
        .with_context(|| format!("loading {}", data.describe()))?;
    let histories = customer_histories(&data.log, model.spec.label.cutoff, 0)?;
    let mut records = Vec::with_capacity(histories.len());
    let mut total_value = 0.0;
    for history in &histories {
        let summary = &history.summary;
        let expected = fit
            .purchases
            .conditional_expected_purchases(f64::from(horizon_days), summary)?;
        let alive = fit.purchases.probability_alive(summary)?;
        let spend = fit
            .spend
            .conditional_expected_spend(summary)
            .context("the fitted spend model has no finite mean (q <= 1)")?;
        let value = fit
            .spend
            .customer_lifetime_value(&fit.purchases, summary, &config)?;
        total_value += value;
        let customer_id = local_ids
            .get(&history.customer)
            .unwrap_or(&history.customer);
        records.push([
            customer_id.clone(),
            format!("{expected:.4}"),
            format!("{alive:.4}"),
            format!("{spend:.2}"),
            format!("{value:.2}"),
        ]);
    }
    write_owner_only_csv(
        output,
        &[
            "customer_id",
            "expected_purchases",
            "probability_alive",
            "expected_spend_per_purchase",
            "lifetime_value",
        ],
        &records,
    )?;
    Ok(ClvSummary {
        customers: records.len(),
        total_value,
        rows_rejected: data.report.rows_rejected(),
    })
}
