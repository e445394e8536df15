//! Utility of Veil's federated DP segmentation next to central DP k-means:
//! writes the generated datasets as CSV (for `reference/compare_diffprivlib.py`)
//! with Veil's centroids of every run, and prints Veil's k-means cost ratio to centralised k-means++ (best of 10)
//! for ε ∈ {0.5, 1, 2}, k ∈ {4, 8}, 3 and 10 partners.
//!
//! `cargo run --release -p veil-segmentation --example compare_ratios -- OUT_DIR`

use std::io::Write;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use veil_behaviour_features::Scaling;
use veil_segmentation::baseline::kmeans_plus_plus;
use veil_segmentation::simulate::{ClusterSimulation, SimulatedFederation, simulate_clusters};
use veil_segmentation::{
    ClusteringOutcome, SegmentationConfig, SegmentationCoordinator, SegmentationError,
    SegmentationPrivacy, kmeans_cost, node_release,
};

/// Customers in all, split evenly between the partners.
const CUSTOMERS: usize = 30_000;
/// Features per customer.
const FEATURES: usize = 6;
/// Runs (noise draws) averaged per cell of the table.
const RUNS: u64 = 3;

fn run(
    config: &SegmentationConfig,
    federation: &SimulatedFederation,
    seed: u64,
) -> Result<ClusteringOutcome, SegmentationError> {
    let scaling = Scaling {
        mean: vec![0.0; FEATURES],
        std: vec![1.0; FEATURES],
    };
    let mut coordinator = SegmentationCoordinator::new(config.clone(), scaling)?;
    let plan = config.plan()?;
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    while let Some(request) = coordinator.request() {
        let mut sum = vec![0i64; plan.releases()[request.release].dimension];
        for partner in &federation.partners {
            let vector = node_release(config, &plan, &request, &partner.points, None, &mut rng)?;
            for (total, value) in sum.iter_mut().zip(vector) {
                *total += value;
            }
        }
        coordinator.handle_sum(request.release, &sum, &mut rng)?;
    }
    coordinator
        .outcomes()
        .and_then(|outcomes| outcomes.first().cloned())
        .ok_or_else(|| SegmentationError::Privacy("the run ended without an outcome".to_owned()))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/segment-compare".to_owned());
    std::fs::create_dir_all(&out_dir)?;
    println!("partners,k,epsilon,veil_cost_ratio");
    for n_partners in [3usize, 10] {
        for k in [4usize, 8] {
            let simulation = ClusterSimulation {
                n_partners,
                customers_per_partner: CUSTOMERS / n_partners,
                k,
                n_features: FEATURES,
                separation: 2.0,
                spread: 0.5,
                box_bound: 3.0,
                skew: 0.7,
            };
            let seed = (n_partners * 100 + k) as u64;
            let federation = simulate_clusters(&simulation, &mut ChaCha20Rng::seed_from_u64(seed))?;
            let pooled = federation.pooled()?;
            let path = format!("{out_dir}/pooled_p{n_partners}_k{k}.csv");
            let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
            let header: Vec<String> = (0..FEATURES).map(|f| format!("f{f}")).collect();
            writeln!(file, "partner,{}", header.join(","))?;
            for (partner_index, partner) in federation.partners.iter().enumerate() {
                for row in partner.points.rows() {
                    let values: Vec<String> = row.iter().map(|v| format!("{v:.9}")).collect();
                    writeln!(file, "{partner_index},{}", values.join(","))?;
                }
            }
            file.flush()?;
            let central = kmeans_cost(
                &pooled,
                &kmeans_plus_plus(&pooled, k, 10, &mut ChaCha20Rng::seed_from_u64(seed + 1)),
            );
            for epsilon in [0.5, 1.0, 2.0] {
                let privacy = SegmentationPrivacy {
                    epsilon,
                    delta: 1e-6,
                    min_survivors: n_partners as u64,
                };
                let config = SegmentationConfig::recommended(FEATURES, vec![k], privacy);
                let mut total = 0.0;
                for run_index in 0..RUNS {
                    let outcome = run(&config, &federation, seed * 10 + run_index)?;
                    total += kmeans_cost(&pooled, &outcome.centroids) / central;
                    // The script scores these against scikit-learn's k-means too.
                    let path = format!(
                        "{out_dir}/veil_centroids_p{n_partners}_k{k}_e{epsilon}_r{run_index}.csv"
                    );
                    let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
                    for centroid in &outcome.centroids {
                        let values: Vec<String> =
                            centroid.iter().map(|v| format!("{v:.9}")).collect();
                        writeln!(file, "{}", values.join(","))?;
                    }
                    file.flush()?;
                }
                println!("{n_partners},{k},{epsilon},{:.4}", total / RUNS as f64);
            }
        }
    }
    Ok(())
}
