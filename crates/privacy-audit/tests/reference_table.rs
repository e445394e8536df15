//! Every row of `reference/one_run_reference.csv` (written by
//! `reference/generate_reference.py`, an independent Python implementation
//! of the papers' formulas, cross-checked there against DeepMind's
//! `jax_privacy` 2.0.0) must be reproduced by the crate.

use veil_privacy_audit::{
    AuditLevel, GuessCounts, epsilon_lower_bound, gaussian_epsilon_lower_bound,
};

const TABLE: &str = include_str!("../reference/one_run_reference.csv");

/// Both sides bisect to 1e-12, so what is left is the p-value's numerics:
/// lgamma-based log-space sums here against scipy's binomial (Boost) there.
/// Most rows agree to ~1e-12; the worst, 1.7e-10, is m = r = v = 100 000 at
/// δ = 1e-6, where the δ term (a maximum over 100 000 windowed sums far in
/// the tail, q ≈ 0.9999) decides the root. 1e-9 (relative, or absolute below
/// ε = 1) keeps a factor 6 over that and still catches any change to the
/// formula, which moves ε by 1e-4 or more.
const STEINKE_TOLERANCE: f64 = 1e-9;

/// The μ recursion runs up to 20 000 steps of `Φ(Φ⁻¹(x) - μ)`, ours with
/// Acklam + Halley and libm's erfc, Python's with AS241 and its erfc. They
/// agree to 5e-15 on every row: at the bisection's end both sides flip at
/// the same μ. 1e-10 allows for a step landing on the other side of a flip.
const GAUSSIAN_TOLERANCE: f64 = 1e-10;

/// jax_privacy's brentq stops at xtol = 1e-6 on ε (and for the f-DP column,
/// ε is converted through dp_accounting's σ(ε, δ) search, similar xtol).
const JAX_TOLERANCE: f64 = 5e-6;

struct Row {
    m: u64,
    r: u64,
    v: u64,
    delta: f64,
    confidence: f64,
    eps_lower: f64,
    eps_lower_appendix_d: f64,
    mu_lower_gdp: Option<f64>,
    eps_lower_gdp: Option<f64>,
    jax_eps_lower: f64,
    jax_eps_lower_gdp: Option<f64>,
}

fn rows() -> Vec<Row> {
    let mut lines = TABLE.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(
        header,
        [
            "m",
            "r",
            "v",
            "delta",
            "confidence",
            "eps_lower",
            "eps_lower_appendix_d",
            "mu_lower_gdp",
            "eps_lower_gdp",
            "jax_eps_lower",
            "jax_eps_lower_gdp"
        ]
    );
    lines
        .map(|line| {
            let cells: Vec<&str> = line.split(',').collect();
            let optional = |cell: &str| (!cell.is_empty()).then(|| cell.parse::<f64>().unwrap());
            Row {
                m: cells[0].parse().unwrap(),
                r: cells[1].parse().unwrap(),
                v: cells[2].parse().unwrap(),
                delta: cells[3].parse().unwrap(),
                confidence: cells[4].parse().unwrap(),
                eps_lower: cells[5].parse().unwrap(),
                eps_lower_appendix_d: cells[6].parse().unwrap(),
                mu_lower_gdp: optional(cells[7]),
                eps_lower_gdp: optional(cells[8]),
                jax_eps_lower: cells[9].parse().unwrap(),
                jax_eps_lower_gdp: optional(cells[10]),
            }
        })
        .collect()
}

fn close(got: f64, expected: f64, tolerance: f64) -> bool {
    (got - expected).abs() <= tolerance * expected.abs().max(1.0)
}

#[test]
fn one_run_bound_matches_every_row() {
    let rows = rows();
    assert!(rows.len() > 500, "the table has {} rows", rows.len());
    let mut worst = 0.0_f64;
    for row in &rows {
        let counts = GuessCounts::new(row.m, row.r, row.v).unwrap();
        let level = AuditLevel::new(row.delta, row.confidence).unwrap();
        let got = epsilon_lower_bound(&counts, &level).epsilon_lower;
        let label = format!(
            "m={} r={} v={} δ={} c={}",
            row.m, row.r, row.v, row.delta, row.confidence
        );
        worst = worst.max((got - row.eps_lower).abs());
        assert!(
            close(got, row.eps_lower, STEINKE_TOLERANCE),
            "{label}: {got} vs {}",
            row.eps_lower
        );
        // Appendix D's own search stops after 30 halvings of [0, ⌈ε⌉ + 1]
        // and returns the lower end, so it sits at most that width below.
        let appendix_width = (row.eps_lower_appendix_d.floor() + 2.0) * 0.5_f64.powi(30);
        assert!(
            got >= row.eps_lower_appendix_d - STEINKE_TOLERANCE
                && got <= row.eps_lower_appendix_d + appendix_width + STEINKE_TOLERANCE,
            "{label}: {got} vs Appendix D's {}",
            row.eps_lower_appendix_d
        );
        assert!(
            close(got, row.jax_eps_lower, JAX_TOLERANCE),
            "{label}: {got} vs jax {}",
            row.jax_eps_lower
        );
    }
    eprintln!(
        "largest |ε - reference| over {} rows: {worst:.3e}",
        rows.len()
    );
}

#[test]
fn gaussian_bound_matches_every_row() {
    let mut checked = 0;
    let mut worst = 0.0_f64;
    for row in rows() {
        let (Some(mu), Some(epsilon)) = (row.mu_lower_gdp, row.eps_lower_gdp) else {
            continue;
        };
        let counts = GuessCounts::new(row.m, row.r, row.v).unwrap();
        let level = AuditLevel::new(row.delta, row.confidence).unwrap();
        let bound = gaussian_epsilon_lower_bound(&counts, &level).unwrap();
        let label = format!(
            "m={} r={} v={} δ={} c={}",
            row.m, row.r, row.v, row.delta, row.confidence
        );
        let got_mu = bound.gaussian_mu_lower.unwrap();
        worst = worst
            .max((got_mu - mu).abs())
            .max((bound.epsilon_lower - epsilon).abs());
        assert!(
            close(got_mu, mu, GAUSSIAN_TOLERANCE),
            "{label}: μ {got_mu} vs {mu}"
        );
        assert!(
            close(bound.epsilon_lower, epsilon, GAUSSIAN_TOLERANCE),
            "{label}: ε {} vs {epsilon}",
            bound.epsilon_lower
        );
        if let Some(jax) = row.jax_eps_lower_gdp {
            assert!(
                close(bound.epsilon_lower, jax, JAX_TOLERANCE),
                "{label}: ε {} vs jax {jax}",
                bound.epsilon_lower
            );
        }
        checked += 1;
    }
    assert!(checked > 200, "only {checked} rows had a Gaussian column");
    eprintln!("largest |μ or ε - reference| over {checked} Gaussian rows: {worst:.3e}");
}
