//! The synthetic customer table every training benchmark uses: 100k rows of 10 uniform
//! features, labelled by the sign of the first three, the same table the PyTorch and Opacus
//! baselines build in `scripts/`.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use veil_models::Dataset;

/// Rows in the benchmark table.
pub const N_ROWS: usize = 100_000;
/// Features per row.
pub const N_FEATURES: usize = 10;

/// The benchmark table; panics only if this very code builds malformed data.
pub fn customers() -> Dataset {
    let mut generator = ChaCha8Rng::seed_from_u64(42);
    let features: Vec<f32> = (0..N_ROWS * N_FEATURES)
        .map(|_| generator.random_range(-1.0f32..1.0))
        .collect();
    let labels = features
        .chunks_exact(N_FEATURES)
        .map(|row| {
            if row.iter().take(3).sum::<f32>() > 0.0 {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    match Dataset::new(features, labels, N_FEATURES) {
        Ok(dataset) => dataset,
        Err(error) => panic!("synthetic benchmark data is malformed: {error}"),
    }
}
