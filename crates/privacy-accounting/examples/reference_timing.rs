//! Prints ε and wall time per reference case, to see where accounting time goes.

use veil_privacy_accounting::{Accountant, DpEvent};

fn main() {
    let text = include_str!("../reference/dp_accounting_reference.json");
    let parsed: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
    let cases = parsed
        .get("cases")
        .and_then(|cases| cases.as_array())
        .cloned()
        .unwrap_or_default();
    for case in cases {
        let number = |key: &str| {
            case.get(key)
                .and_then(serde_json::Value::as_f64)
                .unwrap_or(f64::NAN)
        };
        let (q, sigma, steps, delta) = (
            number("sampling_rate"),
            number("noise_multiplier"),
            number("steps"),
            number("delta"),
        );
        let mut accountant = Accountant::new();
        let event = DpEvent::PoissonSampledGaussian {
            sampling_rate: q,
            noise_multiplier: sigma,
            steps: steps as u64,
        };
        if accountant.compose(event).is_err() {
            continue;
        }
        let started = std::time::Instant::now();
        let pld = accountant.epsilon_pld(delta);
        let pld_time = started.elapsed();
        let started = std::time::Instant::now();
        let rdp = accountant.epsilon_rdp(delta);
        let rdp_time = started.elapsed();
        println!(
            "q={q} σ={sigma} steps={steps} δ={delta}: pld {pld:?} ({pld_time:?}) ref {} rdp {rdp:?} ({rdp_time:?}) ref {}",
            number("epsilon_pld"),
            number("epsilon_rdp")
        );
    }
}
