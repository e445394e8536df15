//! Bad input gets a clear error naming what was wrong and where, never a panic.

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use veil_behaviour_features::Scaling;
use veil_segmentation::{
    CandidateLayout, ClusteringOutcome, Points, Request, SegmentModel, SegmentationConfig,
    SegmentationCoordinator, SegmentationError, SegmentationPrivacy, node_release,
};

fn config() -> SegmentationConfig {
    let mut config = SegmentationConfig::recommended(
        2,
        vec![2],
        SegmentationPrivacy {
            epsilon: 1.0,
            delta: 1e-6,
            min_survivors: 2,
        },
    );
    config.seeding.layout = CandidateLayout::Halton { count: 16 };
    config
}

fn scaling() -> Scaling {
    Scaling {
        mean: vec![0.0, 0.0],
        std: vec![1.0, 1.0],
    }
}

fn field_of(result: Result<impl std::fmt::Debug, SegmentationError>) -> &'static str {
    match result {
        Err(SegmentationError::InvalidConfig { field, .. }) => field,
        other => panic!("expected an invalid config, got {other:?}"),
    }
}

#[test]
fn invalid_configs_are_refused_naming_the_field() {
    let check = |edit: fn(&mut SegmentationConfig), field: &str| {
        let mut config = config();
        edit(&mut config);
        assert_eq!(field_of(config.plan()), field);
    };
    check(|c| c.k_values.clear(), "k_values");
    check(|c| c.k_values = vec![0], "k_values");
    check(|c| c.iterations = 0, "iterations");
    check(|c| c.radius = f64::NAN, "radius");
    check(|c| c.seeding.radius = -1.0, "seeding.radius");
    check(|c| c.cost_bound = f64::INFINITY, "cost_bound");
    check(|c| c.damping = 0.0, "damping");
    check(|c| c.box_bound = 0.0, "box_bound");
    check(|c| c.n_features = 0, "n_features");
    check(
        |c| c.seeding.layout = CandidateLayout::Halton { count: 0 },
        "seeding.layout",
    );
    check(
        |c| c.seeding.layout = CandidateLayout::Grid { per_axis: 1000 },
        "seeding.layout",
    );
    check(|c| c.k_values = vec![17], "seeding.layout");
    check(|c| c.privacy.delta = 1.0, "privacy.delta");
    check(|c| c.privacy.min_survivors = 0, "privacy.min_survivors");
    check(|c| c.privacy.epsilon = -1.0, "privacy.epsilon");
}

#[test]
fn customer_rows_of_the_wrong_width_or_not_finite_name_the_row_and_feature() {
    assert_eq!(
        Points::from_scaled(&[vec![0.0, 1.0], vec![0.0]], 2, 3.0),
        Err(SegmentationError::WrongWidth {
            row: 1,
            expected: 2,
            actual: 1
        })
    );
    assert_eq!(
        Points::from_scaled(&[vec![0.0, 1.0], vec![0.0, f64::NAN]], 2, 3.0),
        Err(SegmentationError::NonFinite { row: 1, feature: 1 })
    );
    let model = SegmentModel::new(
        &ClusteringOutcome {
            k: 1,
            centroids: vec![vec![0.0, 0.0]],
            centroids_original: vec![vec![0.0, 0.0]],
            segments: Vec::new(),
            noised_cost: 0.0,
            reseeded: 0,
        },
        scaling(),
        3.0,
    );
    let model = model.expect("a valid model");
    assert_eq!(
        model.assign(7, &[1.0]),
        Err(SegmentationError::WrongWidth {
            row: 7,
            expected: 2,
            actual: 1
        })
    );
    assert_eq!(
        model.assign(8, &[1.0, f64::INFINITY]),
        Err(SegmentationError::NonFinite { row: 8, feature: 1 })
    );
}

#[test]
fn a_node_refuses_requests_that_do_not_fit_its_plan() -> Result<(), SegmentationError> {
    let config = config();
    let plan = config.plan()?;
    let points = Points::from_scaled(&[vec![0.5, 0.5], vec![-0.5, 0.1]], 2, 3.0)?;
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let mut ask = |request: Request, labels: Option<&[bool]>| {
        node_release(&config, &plan, &request, &points, labels, &mut rng)
    };
    // Release 1 is the first Lloyd step at k = 2.
    let good = vec![vec![0.0, 0.0], vec![1.0, 1.0]];
    assert!(
        ask(
            Request {
                release: 1,
                centroids: good.clone()
            },
            None
        )
        .is_ok()
    );
    assert!(matches!(
        ask(
            Request {
                release: 1,
                centroids: vec![vec![0.0, 0.0]]
            },
            None
        ),
        Err(SegmentationError::WrongLength {
            what: "requested centroids",
            expected: 2,
            actual: 1
        })
    ));
    assert!(matches!(
        ask(
            Request {
                release: 1,
                centroids: vec![vec![0.0, f64::NAN], vec![1.0, 1.0]]
            },
            None
        ),
        Err(SegmentationError::InvalidConfig {
            field: "request.centroids",
            ..
        })
    ));
    assert!(matches!(
        ask(
            Request {
                release: 1,
                centroids: vec![vec![0.0, 99.0], vec![1.0, 1.0]]
            },
            None
        ),
        Err(SegmentationError::InvalidConfig {
            field: "request.centroids",
            ..
        })
    ));
    assert!(matches!(
        ask(
            Request {
                release: 0,
                centroids: good.clone()
            },
            None
        ),
        Err(SegmentationError::WrongLength { expected: 0, .. })
    ));
    assert!(matches!(
        ask(
            Request {
                release: 999,
                centroids: good
            },
            None
        ),
        Err(SegmentationError::OutOfOrder {
            expected: None,
            actual: 999
        })
    ));
    let mut labelled = config.clone();
    labelled.with_label = true;
    let plan = labelled.plan()?;
    let request = Request {
        release: 0,
        centroids: Vec::new(),
    };
    assert_eq!(
        node_release(&labelled, &plan, &request, &points, Some(&[true]), &mut rng),
        Err(SegmentationError::LabelCount {
            labels: 1,
            points: 2
        })
    );
    assert_eq!(
        node_release(&labelled, &plan, &request, &points, None, &mut rng),
        Err(SegmentationError::LabelCount {
            labels: 0,
            points: 2
        })
    );
    Ok(())
}

#[test]
fn the_coordinator_refuses_sums_out_of_order_or_misshapen_and_stays_put()
-> Result<(), SegmentationError> {
    let config = config();
    let mut coordinator = SegmentationCoordinator::new(config.clone(), scaling())?;
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let seeding_length = coordinator.plan().releases()[0].dimension;
    assert_eq!(
        coordinator.handle_sum(1, &[0; 6], &mut rng),
        Err(SegmentationError::OutOfOrder {
            expected: Some(0),
            actual: 1
        })
    );
    assert!(matches!(
        coordinator.handle_sum(0, &[0; 5], &mut rng),
        Err(SegmentationError::WrongLength {
            what: "released sum",
            ..
        })
    ));
    // Still waiting for the seeding sum, which an all-zero (empty) one is.
    assert_eq!(coordinator.request().map(|r| r.release), Some(0));
    coordinator.handle_sum(0, &vec![0; seeding_length], &mut rng)?;
    assert_eq!(coordinator.request().map(|r| r.release), Some(1));
    assert!(
        SegmentationCoordinator::new(
            config,
            Scaling {
                mean: vec![0.0],
                std: vec![1.0]
            }
        )
        .is_err()
    );
    Ok(())
}
