//! The privacy claims of the crate docs, each tested against what it
//! guards: one customer moves a node's release by at most the stated
//! sensitivity, every release a node sends is noised with the planned σ, and
//! the plan's composed ε stays within the budget.

use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use veil_privacy_accounting::{Accountant, DpEvent};
use veil_segmentation::rfm::{RfmBins, RfmValues, local_rfm_histograms, rfm_plan};
use veil_segmentation::seeding::{candidate_centres, local_seeding_sums};
use veil_segmentation::{
    CandidateLayout, Points, PrivacyPlan, Release, ReleaseKind, Request, SegmentationConfig,
    SegmentationError, SegmentationPrivacy, local_cluster_sums, local_profile_sums, node_release,
};

const D: usize = 3;

fn config(with_label: bool) -> SegmentationConfig {
    let mut config = SegmentationConfig::recommended(
        D,
        vec![3],
        SegmentationPrivacy {
            epsilon: 1.0,
            delta: 1e-6,
            min_survivors: 3,
        },
    );
    config.seeding.layout = CandidateLayout::Halton { count: 64 };
    config.with_label = with_label;
    config
}

fn release_of(plan: &PrivacyPlan, wanted: fn(&ReleaseKind) -> bool) -> Release {
    *plan
        .releases()
        .iter()
        .find(|release| wanted(&release.kind))
        .expect("the plan has this release")
}

/// ℓ2 norm of the difference, in value units.
fn moved(with: &[i64], without: &[i64], release: &Release) -> f64 {
    with.iter()
        .zip(without)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum::<f64>()
        .sqrt()
        * release.granularity()
}

fn rows_strategy() -> impl Strategy<Value = Vec<Vec<f64>>> {
    prop::collection::vec(prop::collection::vec(-5.0f64..5.0, D), 0..40)
}

/// The plan of `config(true)`, calibrated once for all cases.
fn labelled_plan() -> &'static PrivacyPlan {
    static PLAN: std::sync::OnceLock<PrivacyPlan> = std::sync::OnceLock::new();
    PLAN.get_or_init(|| config(true).plan().expect("the test config is valid"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Adding one customer (anywhere, even outside the box) moves every
    /// release of a node by at most its stated sensitivity Δ.
    #[test]
    fn one_customer_moves_each_release_by_at_most_its_sensitivity(
        rows in rows_strategy(),
        extra in prop::collection::vec(-50.0f64..50.0, D),
        extra_label in any::<bool>(),
        centroids in prop::collection::vec(prop::collection::vec(-3.0f64..3.0, D), 3),
    ) {
        let config = config(true);
        let plan = labelled_plan();
        let without = Points::from_scaled(&rows, D, config.box_bound).unwrap();
        let mut with_rows = rows.clone();
        with_rows.push(extra.clone());
        let with = Points::from_scaled(&with_rows, D, config.box_bound).unwrap();
        let labels_without: Vec<bool> = rows.iter().map(|row| row[0] > 0.0).collect();
        let mut labels_with = labels_without.clone();
        labels_with.push(extra_label);

        let lloyd = release_of(plan, |kind| matches!(kind, ReleaseKind::Lloyd { .. }));
        let change = moved(
            &local_cluster_sums(&with, &centroids, config.radius, &lloyd),
            &local_cluster_sums(&without, &centroids, config.radius, &lloyd),
            &lloyd,
        );
        prop_assert!(change <= lloyd.sensitivity, "lloyd {change} > {}", lloyd.sensitivity);

        let profile = release_of(plan, |kind| matches!(kind, ReleaseKind::Profile { .. }));
        let change = moved(
            &local_profile_sums(&with, Some(&labels_with), &centroids, &config, &profile),
            &local_profile_sums(&without, Some(&labels_without), &centroids, &config, &profile),
            &profile,
        );
        prop_assert!(change <= profile.sensitivity, "profile {change} > {}", profile.sensitivity);

        let seeding = release_of(plan, |kind| matches!(kind, ReleaseKind::Seeding));
        let centres = candidate_centres(&config);
        let change = moved(
            &local_seeding_sums(&with, &centres, &config, &seeding),
            &local_seeding_sums(&without, &centres, &config, &seeding),
            &seeding,
        );
        prop_assert!(change <= seeding.sensitivity, "seeding {change} > {}", seeding.sensitivity);
    }

    #[test]
    fn one_customer_moves_the_rfm_histograms_by_at_most_root_three(
        values in prop::collection::vec((0.0f64..1000.0, 0.0f64..500.0, 0.0f64..1e7), 0..30),
        extra in (-10.0f64..1e4, -1.0f64..1e4, -1.0f64..1e8),
    ) {
        let bins = RfmBins::standard();
        let plan = rfm_plan(&bins, &SegmentationPrivacy { epsilon: 1.0, delta: 1e-6, min_survivors: 3 }).unwrap();
        let release = plan.releases()[0];
        let to_values = |(recency_days, frequency, monetary): (f64, f64, f64)| RfmValues { recency_days, frequency, monetary };
        let without: Vec<RfmValues> = values.iter().copied().map(to_values).collect();
        let mut with = without.clone();
        with.push(to_values(extra));
        let change = moved(
            &local_rfm_histograms(&with, &bins, &release).unwrap(),
            &local_rfm_histograms(&without, &bins, &release).unwrap(),
            &release,
        );
        prop_assert!(change <= release.sensitivity + 1e-12, "{change}");
    }
}

#[test]
fn every_node_release_carries_noise_of_the_planned_deviation() -> Result<(), SegmentationError> {
    // A node with no customers sends pure noise: its sample deviation over
    // the coordinates of many releases must match σ. With 4000 samples the
    // relative standard error of a deviation is about 1.1%, so 5% is over
    // four standard errors.
    let config = config(false);
    let plan = config.plan()?;
    let empty = Points::from_scaled::<Vec<f64>>(&[], D, config.box_bound)?;
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let centroids = vec![vec![0.0; D], vec![1.0; D], vec![-1.0; D]];
    for (index, release) in plan.releases().iter().enumerate() {
        let request = Request {
            release: index,
            centroids: if matches!(release.kind, ReleaseKind::Seeding) {
                Vec::new()
            } else {
                centroids.clone()
            },
        };
        let mut samples = Vec::new();
        while samples.len() < 4000 {
            samples.extend(node_release(
                &config, &plan, &request, &empty, None, &mut rng,
            )?);
        }
        let deviation = (samples.iter().map(|&v| (v as f64).powi(2)).sum::<f64>()
            / samples.len() as f64)
            .sqrt();
        assert!(
            (deviation / release.node_sigma - 1.0).abs() < 0.05,
            "release {index}: {deviation} vs σ {}",
            release.node_sigma
        );
    }
    Ok(())
}

#[test]
fn the_plan_composes_every_release_within_the_budget_and_no_looser() -> Result<(), SegmentationError>
{
    let mut config = config(true);
    config.k_values = vec![2, 3, 4];
    for epsilon in [0.5, 1.0, 4.0] {
        config.privacy.epsilon = epsilon;
        let plan = config.plan()?;
        // One seeding, then (iterations + 1) per k.
        assert_eq!(plan.releases().len(), 1 + 3 * (config.iterations + 1));
        let compose = |scale: f64| {
            let mut accountant = Accountant::new();
            for release in plan.releases() {
                let mut mechanism = release.mechanism();
                mechanism.node_sigma *= scale;
                accountant
                    .compose(DpEvent::DistributedDiscreteGaussian {
                        mechanism,
                        rounds: 1,
                    })
                    .map_err(|e| SegmentationError::Privacy(e.to_string()))?;
            }
            accountant
                .epsilon(config.privacy.delta)
                .map(|report| report.epsilon)
                .map_err(|e| SegmentationError::Privacy(e.to_string()))
        };
        let at_plan = compose(1.0)?;
        assert!(at_plan <= epsilon, "ε {at_plan} > {epsilon}");
        assert!((at_plan - plan.epsilon()).abs() < 1e-12);
        // 1% less noise everywhere breaks the budget: the plan is tight.
        assert!(
            compose(0.99)? > epsilon,
            "ε = {epsilon}: the plan wastes budget"
        );
        // Every release has the same noise multiplier over its rounded sensitivity.
        for release in plan.releases() {
            let rounded =
                release.sensitivity / release.granularity() + (release.dimension as f64).sqrt();
            let multiplier = (release.min_survivors as f64).sqrt() * release.node_sigma / rounded;
            assert!((multiplier / plan.noise_multiplier() - 1.0).abs() < 1e-9);
        }
    }
    Ok(())
}

#[test]
fn released_statistics_survive_the_fixed_point_of_secure_aggregation_exactly()
-> Result<(), SegmentationError> {
    let config = config(false);
    let plan = config.plan()?;
    for release in plan.releases() {
        assert!(release.granularity_exponent <= veil_segmentation::MAX_GRANULARITY_EXPONENT);
        let vector: Vec<i64> = (0..release.dimension as i64)
            .map(|i| i * 7919 - 400_000)
            .collect();
        let statistics = release.to_statistics(&vector);
        // 20 fractional bits: every value is a whole multiple of 2^-20.
        for value in &statistics {
            let scaled = value * f64::from(1u32 << 20);
            assert_eq!(scaled, scaled.round());
        }
        assert_eq!(release.from_statistics(&statistics)?, vector);
    }
    let release = plan.releases()[0];
    let mut statistics = release.to_statistics(&vec![0; release.dimension]);
    statistics[3] = release.granularity() / 3.0;
    assert_eq!(
        release.from_statistics(&statistics),
        Err(SegmentationError::NotQuantised { index: 3 })
    );
    Ok(())
}
