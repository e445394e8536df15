//! Speed of a segmentation job at library level: 10 partners, 1M customers
//! in all, 8 features, k = 8, 20 Lloyd steps, ε = 1 (seeding, every step and
//! the profile computed, noised and summed; no network). Also one node's
//! share of a Lloyd step and of the seeding release (100k customers), which
//! is what each partner computes in parallel in a deployment.

use criterion::{Criterion, criterion_group, criterion_main};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use veil_behaviour_features::Scaling;
use veil_segmentation::seeding::{candidate_centres, local_seeding_sums};
use veil_segmentation::simulate::{ClusterSimulation, SimulatedFederation, simulate_clusters};
use veil_segmentation::{
    ReleaseKind, SegmentationConfig, SegmentationCoordinator, SegmentationPrivacy,
    local_cluster_sums, node_release,
};

const PARTNERS: usize = 10;
const CUSTOMERS: usize = 1_000_000;
const FEATURES: usize = 8;
const K: usize = 8;

fn setup() -> (SegmentationConfig, SimulatedFederation) {
    let simulation = ClusterSimulation {
        n_partners: PARTNERS,
        customers_per_partner: CUSTOMERS / PARTNERS,
        k: K,
        n_features: FEATURES,
        separation: 2.0,
        spread: 0.5,
        box_bound: 3.0,
        skew: 0.7,
    };
    let federation = simulate_clusters(&simulation, &mut ChaCha20Rng::seed_from_u64(1))
        .expect("the benchmark federation generates");
    let mut config = SegmentationConfig::recommended(
        FEATURES,
        vec![K],
        SegmentationPrivacy {
            epsilon: 1.0,
            delta: 1e-6,
            min_survivors: PARTNERS as u64,
        },
    );
    config.iterations = 20;
    (config, federation)
}

fn whole_job(config: &SegmentationConfig, federation: &SimulatedFederation) -> usize {
    let scaling = Scaling {
        mean: vec![0.0; FEATURES],
        std: vec![1.0; FEATURES],
    };
    let mut coordinator =
        SegmentationCoordinator::new(config.clone(), scaling).expect("valid config");
    let plan = config.plan().expect("valid plan");
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    while let Some(request) = coordinator.request() {
        let mut sum = vec![0i64; plan.releases()[request.release].dimension];
        for partner in &federation.partners {
            let vector = node_release(config, &plan, &request, &partner.points, None, &mut rng)
                .expect("node release");
            for (total, value) in sum.iter_mut().zip(vector) {
                *total += value;
            }
        }
        coordinator
            .handle_sum(request.release, &sum, &mut rng)
            .expect("coordinator step");
    }
    coordinator.outcomes().map_or(0, <[_]>::len)
}

fn segment(criterion: &mut Criterion) {
    let (config, federation) = setup();
    let plan = config.plan().expect("valid plan");
    let mut group = criterion.benchmark_group("segment");
    group.sample_size(10);
    group.measurement_time(std::time::Duration::from_secs(90));
    group.bench_function("job_10_partners_1m_customers_k8_20_steps", |bench| {
        bench.iter(|| whole_job(&config, &federation))
    });
    let lloyd = *plan
        .releases()
        .iter()
        .find(|release| matches!(release.kind, ReleaseKind::Lloyd { .. }))
        .expect("a Lloyd release");
    let seeding = plan.releases()[0];
    let centroids: Vec<Vec<f64>> = federation.centres.clone();
    let node = &federation.partners[0].points;
    group.measurement_time(std::time::Duration::from_secs(10));
    group.bench_function("node_lloyd_step_100k_customers", |bench| {
        bench.iter(|| local_cluster_sums(node, &centroids, config.radius, &lloyd))
    });
    let centres = candidate_centres(&config);
    group.bench_function("node_seeding_100k_customers_1024_cells", |bench| {
        bench.iter(|| local_seeding_sums(node, &centres, &config, &seeding))
    });
    group.finish();
}

criterion_group!(benches, segment);
criterion_main!(benches);
