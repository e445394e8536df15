//! Correctness of whole rounds under every dropout pattern, and uniformity of
//! a single masked upload, driven through the in-process harness.

mod harness;

use std::collections::BTreeSet;

use harness::{Cohort, DropPoint, run_round};
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use veil_secure_aggregation::ForwardedShares;

fn drop_point() -> impl Strategy<Value = DropPoint> {
    prop_oneof![
        6 => Just(DropPoint::Never),
        1 => Just(DropPoint::BeforeAdvertise),
        1 => Just(DropPoint::AfterAdvertise),
        1 => Just(DropPoint::AfterShareKeys),
        1 => Just(DropPoint::AfterMaskedInput),
        1 => Just(DropPoint::AfterConsistencyCheck),
    ]
}

/// (n, k, t): n in 3..=10, k either n-1 or an even number below it, k/2 < t <= k.
fn graph_shape() -> impl Strategy<Value = (usize, usize, usize)> {
    (3usize..=10)
        .prop_flat_map(|n| {
            let mut degrees = vec![n - 1];
            degrees.extend((2..n - 1).step_by(2));
            (Just(n), prop::sample::select(degrees))
        })
        .prop_flat_map(|(n, k)| (Just(n), Just(k), (k / 2 + 1)..=k))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    // The unmasked sum is exactly the plain sum of the clients whose masked
    // input was accepted, or the round fails with a named reason; it is never
    // a wrong sum. A round with no dropouts always succeeds.
    #[test]
    fn unmasked_sum_equals_plain_sum_of_survivors(
        (n, k, t) in graph_shape(),
        modulus_bits in prop::sample::select(vec![8u32, 16, 20, 32]),
        vector_length in 1usize..24,
        drops in prop::collection::vec(drop_point(), 10),
        seed in any::<u64>(),
    ) {
        let cohort = Cohort::new(n, k, t, modulus_bits, vector_length, seed);
        let outcome = run_round(&cohort, &drops[..n], seed.wrapping_add(1));
        match outcome.result {
            Ok((sum, survivors)) => {
                prop_assert_eq!(sum, cohort.plain_sum(&outcome.accepted_inputs));
                let expected: Vec<_> = outcome.accepted_inputs.iter().map(|&index| harness::node(index)).collect();
                prop_assert_eq!(survivors, expected);
            }
            Err(failed) => {
                prop_assert!(drops[..n].iter().any(|&drop| drop != DropPoint::Never), "failed without dropouts: {failed}");
            }
        }
    }
}

#[test]
fn no_dropouts_on_a_sparse_graph_succeeds() {
    let cohort = Cohort::new(12, 4, 3, 32, 50, 9);
    let outcome = run_round(&cohort, &[DropPoint::Never; 12], 10);
    let all: BTreeSet<usize> = (0..12).collect();
    assert_eq!(
        outcome.result.expect("round succeeds").0,
        cohort.plain_sum(&all)
    );
}

#[test]
fn dropouts_after_masked_input_are_unmasked_with_key_shares() {
    // Two clients drop after uploading and two before: their pairwise masks
    // are removed through reconstructed mask keys, and the two that uploaded stay in the sum.
    let mut drops = [DropPoint::Never; 10];
    drops[1] = DropPoint::AfterMaskedInput;
    drops[4] = DropPoint::AfterConsistencyCheck;
    drops[6] = DropPoint::AfterShareKeys;
    drops[8] = DropPoint::AfterAdvertise;
    let cohort = Cohort::new(10, 9, 5, 24, 40, 11);
    let outcome = run_round(&cohort, &drops, 12);
    let expected: BTreeSet<usize> = (0..10).filter(|&index| index != 6 && index != 8).collect();
    assert_eq!(outcome.accepted_inputs, expected);
    assert_eq!(
        outcome.result.expect("round succeeds").0,
        cohort.plain_sum(&expected)
    );
}

#[test]
fn too_few_survivors_fails_with_a_named_reason() {
    let mut drops = [DropPoint::AfterShareKeys; 6];
    drops[0] = DropPoint::Never;
    drops[1] = DropPoint::Never;
    let cohort = Cohort::new(6, 5, 3, 32, 8, 13);
    let outcome = run_round(&cohort, &drops, 14);
    let failed = outcome.result.expect_err("two survivors cannot meet t = 3");
    assert!(matches!(
        failed.reason,
        veil_secure_aggregation::FailureReason::TooFewClients {
            phase: veil_secure_aggregation::Phase::MaskedInput,
            live: 2,
            required: 4
        }
    ));
}

/// Chi-square statistic of `values` against the uniform distribution over `buckets`.
fn chi_square(values: impl Iterator<Item = usize>, buckets: usize, count: usize) -> f64 {
    let mut observed = vec![0usize; buckets];
    for bucket in values {
        observed[bucket] += 1;
    }
    let expected = count as f64 / buckets as f64;
    observed
        .iter()
        .map(|&o| (o as f64 - expected).powi(2) / expected)
        .sum()
}

#[test]
fn a_single_masked_upload_is_indistinguishable_from_uniform() {
    // Input all zeros, the least random input there is. With fixed seeds the
    // test is deterministic; the thresholds are the chi-square critical values
    // at p = 0.001 (63 degrees of freedom: 103.4; 255: 330.5), so an
    // honest uniform stream fails them once in a thousand seeds.
    for (modulus_bits, buckets, critical) in [(32u32, 64usize, 103.4f64), (8, 256, 330.5)] {
        let vector_length = 64_000;
        let cohort = Cohort::new(3, 2, 2, modulus_bits, vector_length, 21);
        let zero_input = vec![0u32; vector_length];
        let mut rng = ChaCha20Rng::seed_from_u64(22);
        let mut server = cohort.server();
        let mut sessions = Vec::new();
        for index in 0..3 {
            let (session, message) = cohort.client(index).advertise_keys(&mut rng).unwrap();
            server.handle_key_advertisement(message).unwrap();
            sessions.push(session);
        }
        let (mut server, directory) = server.finish_phase().unwrap();
        let mut sharing = Vec::new();
        for session in sessions {
            let (session, message) = session.share_keys(&directory, &mut rng).unwrap();
            server.handle_encrypted_shares(message).unwrap();
            sharing.push(session);
        }
        let (_, forwarded) = server.finish_phase().unwrap();
        let first = sharing.into_iter().next().unwrap();
        let bundle: &ForwardedShares = forwarded
            .iter()
            .find(|bundle| bundle.recipient == *first.node_id())
            .unwrap();
        let (_, upload) = first.masked_input(bundle, &zero_input).unwrap();
        let shift = modulus_bits - buckets.trailing_zeros();
        let statistic = chi_square(
            upload
                .masked_vector
                .iter()
                .map(|&value| (value >> shift) as usize),
            buckets,
            vector_length,
        );
        assert!(
            statistic < critical,
            "b = {modulus_bits}: chi-square {statistic} >= {critical}"
        );
        // And 4 bytes per parameter on the wire, plus a small header.
        assert!(upload.to_bytes().len() <= 4 * vector_length + 32);
    }
}
