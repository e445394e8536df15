//! Prints the neighbour chooser's (k, t, guarantee) next to what the chooser
//! returned when it bounded the colluding neighbours by a binomial Bin(k, γ)
//! instead of the exact hypergeometric count, for the closing note of that
//! change: `cargo run --release -p veil-secure-aggregation --example chooser_table`.
//!
//! The binomial chooser is copied here privately (as `binomial_choice`) only
//! for the comparison; nothing else uses it.

use veil_secure_aggregation::{GraphError, GraphRequirements, choose_neighbour_parameters};

/// ln P[Bin(trials, probability) ≥ m] for every m in 0..=trials + 1 (pre-change copy).
fn binomial_log_tails(trials: usize, probability: f64, log_factorials: &[f64]) -> Vec<f64> {
    let mut tails = vec![f64::NEG_INFINITY; trials + 2];
    if probability <= 0.0 {
        tails[0] = 0.0;
        return tails;
    }
    let mut running = f64::NEG_INFINITY;
    for successes in (0..=trials).rev() {
        let term =
            log_factorials[trials] - log_factorials[successes] - log_factorials[trials - successes]
                + successes as f64 * probability.ln()
                + (trials - successes) as f64 * (1.0 - probability).ln();
        let (high, low) = if running >= term {
            (running, term)
        } else {
            (term, running)
        };
        running = if low == f64::NEG_INFINITY {
            high
        } else {
            high + (low - high).exp().ln_1p()
        };
        tails[successes] = running;
    }
    tails
}

/// The pre-change chooser's (k, t): split view bounded by n·P[Bin(k, γ) ≥ 2t − k],
/// otherwise the same bounds and the same complete-graph fallback.
fn binomial_choice(requirements: &GraphRequirements) -> Option<(usize, usize)> {
    let GraphRequirements {
        n_clients,
        dropout_rate,
        corrupt_fraction,
        security_bits,
        correctness_bits,
    } = *requirements;
    let mut log_factorials = vec![0.0f64];
    for m in 1..=n_clients {
        log_factorials.push(log_factorials[m - 1] + (m as f64).ln());
    }
    let log2_n = (n_clients as f64).log2();
    let bits = |log_tail: f64| -(log2_n + log_tail / std::f64::consts::LN_2);
    for k in (2..n_clients.saturating_sub(1)).step_by(2) {
        let disconnect =
            -(2.0 * log2_n - 1.0 + k as f64 * (dropout_rate + corrupt_fraction).log2());
        if disconnect < f64::from(security_bits) {
            continue;
        }
        let corrupt = binomial_log_tails(k, corrupt_fraction, &log_factorials);
        let dropout = binomial_log_tails(k, dropout_rate, &log_factorials);
        let Some(t) =
            ((k / 2 + 1)..=k).find(|&t| bits(corrupt[2 * t - k]) >= f64::from(security_bits))
        else {
            continue;
        };
        if bits(dropout[k - t + 1]) >= f64::from(correctness_bits) {
            return Some((k, t));
        }
    }
    let k = n_clients - 1;
    let colluders = (corrupt_fraction * n_clients as f64 - 1e-9).ceil().max(0.0) as usize;
    let dropouts = (dropout_rate * n_clients as f64 + 1e-9).floor() as usize;
    let t = (k + colluders) / 2 + 1;
    (t <= k.saturating_sub(dropouts)).then_some((k, t))
}

fn main() -> Result<(), GraphError> {
    println!("σ = 40, η = 20; k, t now (hypergeometric) | before (binomial)");
    println!(
        "{:>4} {:>5} {:>4} | {:>4} {:>4} {:<44} | {:>4} {:>4}",
        "γ", "n", "δ", "k", "t", "guarantee", "k", "t"
    );
    for corrupt_fraction in [0.2, 0.05] {
        for n_clients in [3, 5, 10, 20, 50, 100, 200, 500, 1000] {
            for dropout_rate in [0.1, 0.3] {
                let requirements = GraphRequirements {
                    n_clients,
                    dropout_rate,
                    corrupt_fraction,
                    security_bits: 40,
                    correctness_bits: 20,
                };
                let now = match choose_neighbour_parameters(&requirements) {
                    Ok(chosen) => format!(
                        "{:>4} {:>4} {:<44}",
                        chosen.neighbour_count,
                        chosen.reconstruction_threshold,
                        chosen.guarantee.to_string()
                    ),
                    Err(GraphError::CollusionUnachievable {
                        colluders,
                        dropouts_needed,
                        ..
                    }) => format!(
                        "{:>4} {:>4} {:<44}",
                        "-",
                        "-",
                        format!("error: c = {colluders}, needs {dropouts_needed} dropouts")
                    ),
                    Err(error) => return Err(error),
                };
                let before = binomial_choice(&requirements).map_or_else(
                    || format!("{:>4} {:>4}", "-", "-"),
                    |(k, t)| format!("{k:>4} {t:>4}"),
                );
                println!(
                    "{corrupt_fraction:>4} {n_clients:>5} {dropout_rate:>4} | {now} | {before}"
                );
            }
        }
    }
    Ok(())
}
