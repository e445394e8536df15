//! Wall time of the federated lifetime-value fit for 1,000,000 customers over
//! 10 non-IID partners: each partner's summaries and histogram, the sum, and
//! the BG/NBD + Gamma-Gamma fit on it; and, for comparison, the centralised
//! per-customer fit of the pooled summaries. `reference/generate_reference.py
//! --bench 1000000` times `lifetimes` on the same pooled summaries.
//!
//! The transactions are simulated once, outside the timed region.

use criterion::{Criterion, criterion_group, criterion_main};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use veil_lifetime_value::simulate::{non_iid_partners, simulate_partner};
use veil_lifetime_value::{
    BinningConfig, CustomerSummary, HistogramBinning, Transaction, fit_bg_nbd, fit_from_histogram,
    fit_gamma_gamma, local_histogram, summarise_transactions,
};

const CUSTOMERS: u64 = 1_000_000;
const PARTNERS: usize = 10;
const LAST_DAY: i64 = 364;

fn partner_transactions() -> Vec<Vec<Transaction<u64>>> {
    non_iid_partners(PARTNERS, CUSTOMERS / PARTNERS as u64, 0, 182, LAST_DAY)
        .iter()
        .enumerate()
        .map(|(index, partner)| {
            simulate_partner(
                partner,
                index as u64 * CUSTOMERS,
                &mut ChaCha20Rng::seed_from_u64(index as u64),
            )
            .unwrap_or_else(|error| panic!("{error}"))
        })
        .collect()
}

fn summaries(transactions: &[Transaction<u64>]) -> Vec<CustomerSummary> {
    summarise_transactions(transactions, LAST_DAY)
        .unwrap_or_else(|error| panic!("{error}"))
        .into_iter()
        .map(|(_, summary)| summary)
        .collect()
}

fn fit_benchmarks(criterion: &mut Criterion) {
    let partners = partner_transactions();
    let binning = HistogramBinning::new(BinningConfig::recommended(LAST_DAY as u32, 1.0, 1_000.0))
        .unwrap_or_else(|error| panic!("{error}"));
    let mut group = criterion.benchmark_group("lifetime_value_1m_customers_10_partners");
    group.sample_size(10);
    group.bench_function("summaries_histograms_and_fit", |bencher| {
        bencher.iter(|| {
            let mut aggregate = vec![0i64; binning.len()];
            for transactions in &partners {
                let local = local_histogram(&summaries(transactions), &binning)
                    .unwrap_or_else(|error| panic!("{error}"));
                for (sum, count) in aggregate.iter_mut().zip(local) {
                    *sum += count;
                }
            }
            fit_from_histogram(&binning, &aggregate).unwrap_or_else(|error| panic!("{error}"))
        })
    });
    let pooled: Vec<CustomerSummary> = partners.iter().flat_map(|t| summaries(t)).collect();
    group.bench_function("centralised_per_customer_fit", |bencher| {
        bencher.iter(|| {
            (
                fit_bg_nbd(&pooled).unwrap_or_else(|error| panic!("{error}")),
                fit_gamma_gamma(&pooled).unwrap_or_else(|error| panic!("{error}")),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, fit_benchmarks);
criterion_main!(benches);
