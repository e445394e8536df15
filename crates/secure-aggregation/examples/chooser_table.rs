//! Prints the neighbour chooser's (k, t, guarantee) next to what the chooser
//! before the split-view fix returned, for the closing note of that change:
//! `cargo run --release -p veil-secagg --example chooser_table`.
//!
//! The old algorithm is copied here privately (as `old_choice`) only for the
//! comparison; nothing else uses it.

use veil_secagg::{GraphError, GraphRequirements, choose_neighbour_parameters};

/// Natural log of P[Binomial(trials, probability) >= at_least] (pre-change copy).
fn old_log_binomial_upper_tail(
    trials: usize,
    probability: f64,
    at_least: usize,
    log_factorials: &[f64],
) -> f64 {
    if at_least == 0 {
        return 0.0;
    }
    if at_least > trials || probability <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if probability >= 1.0 {
        return 0.0;
    }
    let log_factorial = |m: usize| log_factorials.get(m).copied().unwrap_or(f64::INFINITY);
    let terms: Vec<f64> = (at_least..=trials)
        .map(|i| {
            log_factorial(trials) - log_factorial(i) - log_factorial(trials - i)
                + i as f64 * probability.ln()
                + (trials - i) as f64 * (1.0 - probability).ln()
        })
        .collect();
    let largest = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    largest
        + terms
            .iter()
            .map(|term| (term - largest).exp())
            .sum::<f64>()
            .ln()
}

/// The pre-change chooser: (k, t, security bits, correctness bits). It bounded
/// only n·P[Bin(k, γ) ≥ t] and fell back to the complete graph with the largest
/// majority t meeting correctness, whatever security that left.
fn old_choice(requirements: &GraphRequirements) -> (usize, usize, f64, f64) {
    let GraphRequirements {
        n_clients,
        dropout_rate,
        corrupt_fraction,
        security_bits,
        correctness_bits,
    } = *requirements;
    let mut log_factorials = Vec::with_capacity(n_clients + 1);
    let mut running = 0.0f64;
    log_factorials.push(0.0);
    for m in 1..=n_clients {
        running += (m as f64).ln();
        log_factorials.push(running);
    }
    let ln2 = std::f64::consts::LN_2;
    let log_n = (n_clients as f64).ln();
    let evaluate = |k: usize, t: usize, sparse: bool| -> (f64, f64) {
        let secret_leak =
            log_n + old_log_binomial_upper_tail(k, corrupt_fraction, t, &log_factorials);
        let disconnect = if sparse {
            2.0 * log_n - ln2 + k as f64 * (dropout_rate + corrupt_fraction).ln()
        } else {
            f64::NEG_INFINITY
        };
        let security = -secret_leak.max(disconnect) / ln2;
        let starve =
            log_n + old_log_binomial_upper_tail(k, dropout_rate, k - t + 1, &log_factorials);
        (security, -starve / ln2)
    };
    let candidates = (2..n_clients - 1)
        .step_by(2)
        .map(|k| (k, true))
        .chain(std::iter::once((n_clients - 1, false)));
    for (k, sparse) in candidates {
        for t in (k / 2 + 1)..=k {
            let (security, correctness) = evaluate(k, t, sparse);
            if security >= f64::from(security_bits) {
                if correctness >= f64::from(correctness_bits) {
                    return (k, t, security, correctness);
                }
                break;
            }
        }
    }
    let k = n_clients - 1;
    let t = ((k / 2 + 1)..=k)
        .rev()
        .find(|&t| evaluate(k, t, false).1 >= f64::from(correctness_bits))
        .unwrap_or(k / 2 + 1);
    let (security, correctness) = evaluate(k, t, false);
    (k, t, security, correctness)
}

fn main() -> Result<(), GraphError> {
    println!("γ = 0.2, σ = 40, η = 20");
    println!(
        "{:>5} {:>4} | {:>4} {:>4} {:<42} | {:>4} {:>4} {:>9} {:>9}",
        "n", "δ", "k", "t", "new guarantee", "oldk", "oldt", "old sec", "old corr"
    );
    for n_clients in [3, 5, 10, 20, 50, 100, 1000] {
        for dropout_rate in [0.1, 0.3] {
            let requirements = GraphRequirements {
                n_clients,
                dropout_rate,
                corrupt_fraction: 0.2,
                security_bits: 40,
                correctness_bits: 20,
            };
            let (old_k, old_t, old_security, old_correctness) = old_choice(&requirements);
            let new = match choose_neighbour_parameters(&requirements) {
                Ok(chosen) => format!(
                    "{:>4} {:>4} {:<42}",
                    chosen.neighbour_count,
                    chosen.reconstruction_threshold,
                    chosen.guarantee.to_string()
                ),
                Err(
                    error @ GraphError::CollusionUnachievable {
                        colluders,
                        dropouts_needed,
                        ..
                    },
                ) => {
                    // Keep the row; the full message follows the table.
                    eprintln!("n = {n_clients}, δ = {dropout_rate}: {error}");
                    format!(
                        "{:>4} {:>4} {:<42}",
                        "-",
                        "-",
                        format!("error: c = {colluders}, needs {dropouts_needed} dropouts")
                    )
                }
                Err(error) => return Err(error),
            };
            println!(
                "{n_clients:>5} {dropout_rate:>4} | {new} | {old_k:>4} {old_t:>4} {old_security:>9.1} {old_correctness:>9.1}"
            );
        }
    }
    Ok(())
}
