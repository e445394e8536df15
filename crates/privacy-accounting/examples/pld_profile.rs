//! Splits the headline PLD query's time between discretisation and composition.

use veil_privacy_accounting::{BOTH_ADJACENCIES, DiscretePld, PldConfig, SubsampledGaussian};

fn main() {
    let config = PldConfig::default();
    let mechanism = SubsampledGaussian {
        sampling_rate: 0.01,
        noise_multiplier: 1.1,
    };
    let [remove, add] = BOTH_ADJACENCIES;
    let started = std::time::Instant::now();
    let (Ok(single_remove), Ok(single_add)) = (
        DiscretePld::connect_the_dots(mechanism, remove, &config),
        DiscretePld::connect_the_dots(mechanism, add, &config),
    ) else {
        return;
    };
    let discretised = started.elapsed();
    let started = std::time::Instant::now();
    let Ok([composed_remove, composed_add]) =
        DiscretePld::self_compose_pair([&single_remove, &single_add], 10_000, &config)
    else {
        return;
    };
    let composed_time = started.elapsed();
    println!(
        "bins {} / {} discretised in {discretised:?}; composed to {} / {} bins in {composed_time:?}; ε = {} / {}",
        single_remove.len(),
        single_add.len(),
        composed_remove.len(),
        composed_add.len(),
        composed_remove.epsilon_for_delta(1e-5),
        composed_add.epsilon_for_delta(1e-5)
    );
}
