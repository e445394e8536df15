//! End-to-end federated DP segmentation on generated partners: nodes
//! release noised vectors, the coordinator sees only their sum.

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use veil_features::Scaling;
use veil_segmentation::baseline::{adjusted_rand_index, assign_all, kmeans_plus_plus};
use veil_segmentation::simulate::{ClusterSimulation, SimulatedFederation, simulate_clusters};
use veil_segmentation::{
    ClusteringOutcome, SegmentationConfig, SegmentationCoordinator, SegmentationError,
    SegmentationPrivacy, kmeans_cost, node_release,
};

fn identity_scaling(n_features: usize) -> Scaling {
    Scaling {
        mean: vec![0.0; n_features],
        std: vec![1.0; n_features],
    }
}

/// Runs the protocol: every node answers every request with its noised
/// vector, the harness sums them (what secure aggregation reveals).
fn run(
    config: &SegmentationConfig,
    federation: &SimulatedFederation,
    seed: u64,
) -> Result<Vec<ClusteringOutcome>, SegmentationError> {
    let mut coordinator =
        SegmentationCoordinator::new(config.clone(), identity_scaling(config.n_features))?;
    let plan = config.plan()?;
    let mut node_rngs: Vec<ChaCha20Rng> = (0..federation.partners.len() as u64)
        .map(|node| ChaCha20Rng::seed_from_u64(seed * 1000 + node))
        .collect();
    let mut coordinator_rng = ChaCha20Rng::seed_from_u64(seed);
    while let Some(request) = coordinator.request() {
        let mut sum: Vec<i64> = Vec::new();
        for (partner, rng) in federation.partners.iter().zip(&mut node_rngs) {
            let labels = config.with_label.then_some(partner.labels.as_slice());
            let vector = node_release(config, &plan, &request, &partner.points, labels, rng)?;
            if sum.is_empty() {
                sum = vector;
            } else {
                for (total, value) in sum.iter_mut().zip(vector) {
                    *total += value;
                }
            }
        }
        coordinator.handle_sum(request.release, &sum, &mut coordinator_rng)?;
    }
    Ok(coordinator.outcomes().map(<[_]>::to_vec).unwrap_or_default())
}

fn simulation(n_partners: usize, customers_per_partner: usize, k: usize) -> ClusterSimulation {
    ClusterSimulation {
        n_partners,
        customers_per_partner,
        k,
        n_features: 6,
        separation: 2.5,
        spread: 0.35,
        box_bound: 3.0,
        skew: 0.8,
    }
}

fn privacy(epsilon: f64, min_survivors: u64) -> SegmentationPrivacy {
    SegmentationPrivacy {
        epsilon,
        delta: 1e-6,
        min_survivors,
    }
}

#[test]
fn federated_dp_segmentation_recovers_non_iid_clusters_at_epsilon_one() -> Result<(), SegmentationError> {
    let simulation = simulation(5, 6_000, 5);
    let federation = simulate_clusters(&simulation, &mut ChaCha20Rng::seed_from_u64(1))?;
    let config = SegmentationConfig::recommended(6, vec![5], privacy(1.0, 5));
    let plan = config.plan()?;
    assert!(plan.epsilon() <= 1.0, "ε = {}", plan.epsilon());
    let outcomes = run(&config, &federation, 7)?;
    let outcome = &outcomes[0];
    let pooled = federation.pooled()?;
    let ari = adjusted_rand_index(&assign_all(&pooled, &outcome.centroids), &federation.pooled_truth())
        .unwrap_or(0.0);
    let central = kmeans_plus_plus(&pooled, 5, 10, &mut ChaCha20Rng::seed_from_u64(3));
    let ratio = kmeans_cost(&pooled, &outcome.centroids) / kmeans_cost(&pooled, &central);
    println!("ARI {ari:.4}, cost ratio {ratio:.4}, z {:.2}, ε {:.3}", plan.noise_multiplier(), plan.epsilon());
    assert!(ari >= 0.9, "ARI {ari}");
    assert!(ratio <= 1.15, "cost ratio {ratio}");
    Ok(())
}
