//! Partner files of purchases drawn from BG/NBD and Gamma-Gamma, shared by
//! the lifetime-value end-to-end test and the soak bench's lifetime-value jobs.

use std::io::Write;
use std::path::{Path, PathBuf};

use rand_core::SeedableRng;

/// One CSV per partner (`customer_id,timestamp,amount`) of purchases drawn
/// from BG/NBD and Gamma-Gamma with known, partner-specific parameters
/// (`veil_lifetime_value::simulate::non_iid_partners`): customers acquired in
/// the first half year, observed for a year up to `cutoff` (YYYY-MM-DD) and
/// for `holdout_days` after it. Customer ids are disjoint across partners.
pub fn bg_nbd_partner_files(
    dir: &Path,
    partners: usize,
    customers_per_partner: u64,
    cutoff: &str,
    holdout_days: u32,
) -> std::io::Result<Vec<PathBuf>> {
    let calibration_last_day = 364;
    let simulations = veil_lifetime_value::simulate::non_iid_partners(
        partners,
        customers_per_partner,
        0,
        182,
        calibration_last_day + i64::from(holdout_days),
    );
    let cutoff = chrono::NaiveDate::parse_from_str(cutoff, "%Y-%m-%d")
        .map_err(|error| std::io::Error::other(format!("cutoff {cutoff}: {error}")))?;
    let first_epoch_day = i64::from(cutoff.to_epoch_days()) - calibration_last_day;
    let mut files = Vec::new();
    for (index, simulation) in simulations.iter().enumerate() {
        let transactions = veil_lifetime_value::simulate::simulate_partner(
            simulation,
            index as u64 * customers_per_partner,
            &mut rand_chacha::ChaCha20Rng::seed_from_u64(index as u64 + 40),
        )
        .map_err(std::io::Error::other)?;
        let path = dir.join(format!("partner-{index}.csv"));
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
        writeln!(file, "customer_id,timestamp,amount")?;
        for transaction in &transactions {
            let seconds = (first_epoch_day + transaction.day) * 86_400 + 12 * 3_600;
            let time = chrono::DateTime::from_timestamp(seconds, 0)
                .ok_or_else(|| std::io::Error::other("purchase day out of range"))?;
            writeln!(
                file,
                "Cust-{:07},{},{:.2}",
                transaction.customer,
                time.format("%Y-%m-%dT%H:%M:%SZ"),
                transaction.amount
            )?;
        }
        file.flush()?;
        files.push(path);
    }
    Ok(files)
}
