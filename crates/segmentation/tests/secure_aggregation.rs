//! A segmentation release crosses Veil's secure-aggregation reply encoding
//! (the statistics fixed point of `veil-federation`) without losing a step:
//! the coordinator recovers exactly the integer sum of the nodes' noised
//! vectors, so the noise it sees is exactly the accounted discrete Gaussian.

use std::time::Duration;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use veil_federation::secure::{DEFAULT_COLLUSION_FRACTION, DEFAULT_SECURITY_BITS};
use veil_federation::{ExpectedShape, PartnerPrivacy, ReplyEncoding, SecureSettings};
use veil_segmentation::simulate::{ClusterSimulation, simulate_clusters};
use veil_segmentation::{
    Request, SegmentationConfig, SegmentationError, SegmentationPrivacy, node_release,
};

#[test]
fn released_sums_survive_the_reply_encoding_exactly() -> Result<(), SegmentationError> {
    let federation = simulate_clusters(
        &ClusterSimulation {
            n_partners: 4,
            customers_per_partner: 2_000,
            k: 3,
            n_features: 4,
            separation: 2.0,
            spread: 0.4,
            box_bound: 3.0,
            skew: 0.8,
        },
        &mut ChaCha20Rng::seed_from_u64(1),
    )?;
    let config = SegmentationConfig::recommended(
        4,
        vec![3],
        SegmentationPrivacy {
            epsilon: 1.0,
            delta: 1e-6,
            min_survivors: 4,
        },
    );
    let plan = config.plan()?;
    let settings = SecureSettings {
        clip_range: 1.0,
        modulus_bits: 32,
        max_weight: 10_000.0,
        dropout_rate: 0.1,
        step_timeout: Duration::from_secs(5),
        graph_seed: [7; 32],
        collusion_fraction: DEFAULT_COLLUSION_FRACTION,
        security_bits: DEFAULT_SECURITY_BITS,
    };
    let centroids = vec![vec![0.5; 4], vec![-0.5; 4], vec![1.0, -1.0, 0.0, 0.0]];
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    // The seeding release (longest) and a Lloyd step.
    for (index, centroids) in [(0, Vec::new()), (1, centroids)] {
        let release = plan.releases()[index];
        let encoding = ReplyEncoding::new(
            0,
            release.dimension,
            federation.partners.len(),
            &settings,
            &PartnerPrivacy::Off,
        )
        .map_err(|error| SegmentationError::Privacy(error.to_string()))?;
        let request = Request {
            release: index,
            centroids,
        };
        let mut integer_sum = vec![0i64; release.dimension];
        let mut masked_sum = vec![0u32; encoding.encoded_len()];
        for partner in &federation.partners {
            let vector = node_release(&config, &plan, &request, &partner.points, None, &mut rng)?;
            for (total, value) in integer_sum.iter_mut().zip(&vector) {
                *total += value;
            }
            let encoded = encoding
                .encode(1.0, &release.to_statistics(&vector), &[], &mut rng)
                .map_err(|error| SegmentationError::Privacy(error.to_string()))?;
            for (total, value) in masked_sum.iter_mut().zip(encoded) {
                *total = total.wrapping_add(value);
            }
        }
        let decoded = encoding
            .decode(
                &masked_sum,
                federation.partners.len(),
                ExpectedShape {
                    vector_len: 0,
                    statistics_len: release.dimension,
                    positive_weight: false,
                },
            )
            .map_err(|error| SegmentationError::Privacy(error.to_string()))?;
        assert_eq!(
            release.from_statistics(decoded.statistics_sum())?,
            integer_sum
        );
    }
    Ok(())
}
