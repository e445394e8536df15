//! End-to-end federated DP segmentation on generated partners: nodes
//! release noised vectors, the coordinator sees only their sum.

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use veil_behaviour_features::Scaling;
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
    Ok(coordinator
        .outcomes()
        .map(<[_]>::to_vec)
        .unwrap_or_default())
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
fn federated_dp_segmentation_recovers_non_iid_clusters_at_epsilon_one()
-> Result<(), SegmentationError> {
    let simulation = simulation(5, 6_000, 5);
    let federation = simulate_clusters(&simulation, &mut ChaCha20Rng::seed_from_u64(1))?;
    let config = SegmentationConfig::recommended(6, vec![5], privacy(1.0, 5));
    let plan = config.plan()?;
    assert!(plan.epsilon() <= 1.0, "ε = {}", plan.epsilon());
    let outcomes = run(&config, &federation, 7)?;
    let outcome = &outcomes[0];
    let pooled = federation.pooled()?;
    let ari = adjusted_rand_index(
        &assign_all(&pooled, &outcome.centroids),
        &federation.pooled_truth(),
    )
    .unwrap_or(0.0);
    let central = kmeans_plus_plus(&pooled, 5, 10, &mut ChaCha20Rng::seed_from_u64(3));
    let ratio = kmeans_cost(&pooled, &outcome.centroids) / kmeans_cost(&pooled, &central);
    println!(
        "ARI {ari:.4}, cost ratio {ratio:.4}, z {:.2}, ε {:.3}",
        plan.noise_multiplier(),
        plan.epsilon()
    );
    assert!(ari >= 0.9, "ARI {ari}");
    assert!(ratio <= 1.15, "cost ratio {ratio}");
    Ok(())
}

#[test]
fn the_noised_cost_per_k_shows_the_elbow_at_the_true_k() -> Result<(), SegmentationError> {
    let simulation = simulation(4, 5_000, 4);
    let federation = simulate_clusters(&simulation, &mut ChaCha20Rng::seed_from_u64(21))?;
    let config = SegmentationConfig::recommended(6, vec![2, 3, 4, 5, 6], privacy(1.0, 4));
    let outcomes = run(&config, &federation, 8)?;
    let cost: Vec<f64> = outcomes.iter().map(|outcome| outcome.noised_cost).collect();
    println!("noised cost per k = 2..6: {cost:?}");
    assert_eq!(
        outcomes.iter().map(|o| o.k).collect::<Vec<_>>(),
        vec![2, 3, 4, 5, 6]
    );
    // Each true cluster found cuts the cost a lot; past the truth it barely moves.
    assert!(
        cost[1] < 0.8 * cost[0] && cost[2] < 0.5 * cost[1],
        "{cost:?}"
    );
    assert!(
        cost[3] > 0.8 * cost[2] && cost[4] > 0.7 * cost[2],
        "{cost:?}"
    );
    Ok(())
}

#[test]
fn profiles_report_sizes_means_and_label_rates_in_original_units() -> Result<(), SegmentationError>
{
    let simulation = simulation(3, 6_000, 3);
    let federation = simulate_clusters(&simulation, &mut ChaCha20Rng::seed_from_u64(31))?;
    let mut config = SegmentationConfig::recommended(6, vec![3], privacy(1.0, 3));
    config.with_label = true;
    let scaling = Scaling {
        mean: vec![100.0, -5.0, 0.0, 1.0, 2.0, 3.0],
        std: vec![20.0, 0.5, 1.0, 2.0, 3.0, 4.0],
    };
    let mut coordinator = SegmentationCoordinator::new(config.clone(), scaling.clone())?;
    let plan = config.plan()?;
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    while let Some(request) = coordinator.request() {
        let mut sum = vec![0i64; plan.releases()[request.release].dimension];
        for partner in &federation.partners {
            let vector = node_release(
                &config,
                &plan,
                &request,
                &partner.points,
                Some(&partner.labels),
                &mut rng,
            )?;
            for (total, value) in sum.iter_mut().zip(vector) {
                *total += value;
            }
        }
        coordinator.handle_sum(request.release, &sum, &mut rng)?;
    }
    let outcome = coordinator
        .outcomes()
        .map(|o| o[0].clone())
        .ok_or(SegmentationError::Privacy("no outcome".into()))?;
    let pooled = federation.pooled()?;
    let truth = federation.pooled_truth();
    let labels: Vec<bool> = federation
        .partners
        .iter()
        .flat_map(|p| p.labels.iter().copied())
        .collect();
    let assigned = assign_all(&pooled, &outcome.centroids);
    for (segment, profile) in outcome.segments.iter().enumerate() {
        let members: Vec<usize> = (0..assigned.len())
            .filter(|&i| assigned[i] == segment)
            .collect();
        let size = members.len() as f64;
        // Count noise is about z·Δ ≈ 20 customers; 1% of ~6000 is 60.
        assert!(
            (profile.size - size).abs() < 0.01 * size,
            "size {} vs {size}",
            profile.size
        );
        let rows: Vec<&[f64]> = pooled.rows().collect();
        for (feature, reported) in profile.mean.iter().enumerate() {
            let exact_scaled = members.iter().map(|&i| rows[i][feature]).sum::<f64>() / size;
            let exact = exact_scaled * scaling.std[feature] + scaling.mean[feature];
            // Within 0.02 public standard deviations (noise ≈ 20/6000, clipping at r = 1
            // of points 0.35·√6 ≈ 0.86 from their centre on average).
            assert!(
                (reported - exact).abs() < 0.02 * scaling.std[feature],
                "feature {feature}: {reported} vs {exact}"
            );
        }
        let rate = members.iter().filter(|&&i| labels[i]).count() as f64 / size;
        let reported = profile.label_rate.unwrap_or(f64::NAN);
        assert!(
            (reported - rate).abs() < 0.02,
            "label rate {reported} vs {rate}"
        );
        assert!(profile.reliable);
        let true_cluster = truth[members[0]];
        let centre = &federation.centres[true_cluster];
        for (feature, centre) in centre.iter().enumerate() {
            let original = centre * scaling.std[feature] + scaling.mean[feature];
            assert!(
                (outcome.centroids_original[segment][feature] - original).abs()
                    < 0.1 * scaling.std[feature]
            );
        }
    }
    Ok(())
}

#[test]
fn tiny_clusters_are_reseeded_or_flagged_never_a_failure() -> Result<(), SegmentationError> {
    // Eight clusters asked of 900 customers in 3 true groups at ε = 0.5:
    // several clusters are tiny under noise.
    let federation =
        simulate_clusters(&simulation(3, 300, 3), &mut ChaCha20Rng::seed_from_u64(41))?;
    let mut config = SegmentationConfig::recommended(6, vec![8], privacy(0.5, 3));
    config.with_label = true;
    let outcomes = run(&config, &federation, 9)?;
    let outcome = &outcomes[0];
    assert_eq!(outcome.centroids.len(), 8);
    assert!(
        outcome.segments.iter().any(|segment| !segment.reliable),
        "{outcome:?}"
    );
    for (segment, centroid) in outcome.segments.iter().zip(&outcome.centroids_original) {
        assert!(segment.size >= 0.0 && segment.mean.iter().all(|v| v.is_finite()));
        if !segment.reliable {
            assert_eq!(segment.label_rate, None);
            assert_eq!(&segment.mean, centroid);
        }
    }
    println!(
        "re-seeded {} clusters, reliable {:?}",
        outcome.reseeded,
        outcome
            .segments
            .iter()
            .map(|s| s.reliable)
            .collect::<Vec<_>>()
    );
    Ok(())
}

#[test]
fn seeding_layouts_compared_after_a_single_lloyd_step() -> Result<(), SegmentationError> {
    // Eight overlapping-ish clusters in three features (so a grid is
    // affordable), one Lloyd step to repair the seeds: how good is each
    // public cell layout? `Halton { count: 8 }` is the data-independent
    // baseline: k public points and one noised mean step from them.
    let mut simulation = simulation(5, 4_000, 8);
    simulation.n_features = 3;
    simulation.separation = 1.6;
    simulation.spread = 0.4;
    let federation = simulate_clusters(&simulation, &mut ChaCha20Rng::seed_from_u64(51))?;
    let pooled = federation.pooled()?;
    let central = kmeans_cost(
        &pooled,
        &kmeans_plus_plus(&pooled, 8, 10, &mut ChaCha20Rng::seed_from_u64(3)),
    );
    let mut ratios = Vec::new();
    for layout in [
        veil_segmentation::CandidateLayout::Halton { count: 1024 },
        veil_segmentation::CandidateLayout::Halton { count: 128 },
        veil_segmentation::CandidateLayout::Grid { per_axis: 8 },
        veil_segmentation::CandidateLayout::Halton { count: 8 },
    ] {
        let mut config = SegmentationConfig::recommended(3, vec![8], privacy(1.0, 5));
        config.iterations = 1;
        config.seeding.layout = layout;
        let outcomes = run(&config, &federation, 10)?;
        let ratio = kmeans_cost(&pooled, &outcomes[0].centroids) / central;
        println!("{layout:?}: cost ratio after one step {ratio:.4}");
        ratios.push(ratio);
    }
    assert!(ratios[0] <= 1.15 && ratios[2] <= 1.15, "{ratios:?}");
    assert!(
        ratios[3] > ratios[0],
        "data-independent seeds should be worse: {ratios:?}"
    );
    Ok(())
}

#[test]
fn the_radius_constraint_beats_unclipped_updates_on_a_small_federation()
-> Result<(), SegmentationError> {
    // FastLloyd's lesson: clipping offsets to r = 1 makes the sensitivity
    // √2 instead of about the box diameter, so far less noise for the same ε.
    // r = 15 covers the box's diameter (2·3·√6 ≈ 14.7): no clipping at all.
    let federation = simulate_clusters(
        &simulation(3, 1_000, 5),
        &mut ChaCha20Rng::seed_from_u64(61),
    )?;
    let pooled = federation.pooled()?;
    let central = kmeans_cost(
        &pooled,
        &kmeans_plus_plus(&pooled, 5, 10, &mut ChaCha20Rng::seed_from_u64(3)),
    );
    let mut ratios = Vec::new();
    for radius in [1.0, 15.0] {
        let mut config = SegmentationConfig::recommended(6, vec![5], privacy(0.5, 3));
        config.radius = radius;
        config.seeding.radius = radius.max(1.5);
        let mut total = 0.0;
        for seed in 0..3 {
            let outcomes = run(&config, &federation, 70 + seed)?;
            total += kmeans_cost(&pooled, &outcomes[0].centroids) / central / 3.0;
        }
        println!("radius {radius}: mean cost ratio {total:.4}");
        ratios.push(total);
    }
    assert!(ratios[0] < ratios[1], "{ratios:?}");
    Ok(())
}
