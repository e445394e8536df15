//! Continuations: one more sum over exactly a finished round's survivors,
//! with no new keys or shares. Exact when every survivor sends, nothing when
//! one does not, and an upload stays masked against a coordinator holding
//! every secret the round revealed to it and every colluder's seeds.

mod harness;

use std::collections::BTreeSet;

use harness::{Cohort, ContinuableRound, DropPoint, node, run_round_keeping_continuations};
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use veil_secure_aggregation::{ClientError, FailureReason, RejectedMessage};

/// The continuation's protocol round, distinct from the harness round's.
const CONTINUATION_ROUND: u32 = 14;

/// A second vector per client, of another length than the round's.
fn second_inputs(n: usize, length: usize, modulus_bits: u32, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let modulus_mask = if modulus_bits >= 32 {
        u32::MAX
    } else {
        (1u32 << modulus_bits) - 1
    };
    (0..n)
        .map(|_| (0..length).map(|_| rng.next_u32() & modulus_mask).collect())
        .collect()
}

fn plain_sum(inputs: &[Vec<u32>], members: &BTreeSet<usize>, modulus_bits: u32) -> Vec<u32> {
    let mut sum = vec![0u32; inputs[0].len()];
    for &index in members {
        for (total, value) in sum.iter_mut().zip(&inputs[index]) {
            *total = total.wrapping_add(*value);
        }
    }
    let modulus_mask = if modulus_bits >= 32 {
        u32::MAX
    } else {
        (1u32 << modulus_bits) - 1
    };
    sum.iter_mut().for_each(|value| *value &= modulus_mask);
    sum
}

/// Runs the continuation of `round` with every client in `senders` sending
/// its second input; returns the coordinator's result.
fn continue_round(
    round: ContinuableRound,
    second: &[Vec<u32>],
    modulus_bits: u32,
    senders: impl Fn(usize) -> bool,
) -> Result<Vec<u32>, veil_secure_aggregation::RoundFailed> {
    let finished = round.finished.expect("the round finished");
    let mut sum = finished.continuation(second[0].len(), modulus_bits);
    for (index, continuation) in round.continuations {
        if !senders(index) {
            continue;
        }
        let message = continuation
            .masked_input(CONTINUATION_ROUND, modulus_bits, &second[index])
            .expect("an honest continuation input");
        sum.handle_masked_input(&message)
            .expect("an honest continuation input is accepted");
    }
    sum.finish()
}

fn drop_point() -> impl Strategy<Value = DropPoint> {
    prop_oneof![
        6 => Just(DropPoint::Never),
        1 => Just(DropPoint::BeforeAdvertise),
        1 => Just(DropPoint::AfterShareKeys),
        1 => Just(DropPoint::AfterMaskedInput),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 60, ..ProptestConfig::default() })]

    // Whatever dropped out of the round (before or after its masked input
    // left), the continuation's sum is exactly the plain sum of the second
    // vectors over the round's survivors when all of them send.
    #[test]
    fn a_continuation_sums_exactly_the_rounds_survivors(
        n in 5usize..=12,
        sparse in any::<bool>(),
        modulus_bits in prop::sample::select(vec![12u32, 20, 32]),
        length in 1usize..40,
        drops in prop::collection::vec(drop_point(), 12),
        seed in any::<u64>(),
    ) {
        let (k, t) = if sparse && n >= 8 { (4, 3) } else { (n - 1, n / 2 + 1) };
        let cohort = Cohort::new(n, k, t, modulus_bits, 7, seed);
        let round = run_round_keeping_continuations(&cohort, &drops[..n], seed ^ 1);
        let Ok((_, survivors)) = &round.outcome.result else {
            return Ok(());
        };
        let survivors: BTreeSet<usize> = (0..n).filter(|&index| survivors.contains(&node(index))).collect();
        // Survivors (whose masked input is in the sum) that completed the
        // round can continue; one that left after its input did not.
        let continuing: BTreeSet<usize> = round.continuations.iter().map(|(index, _)| *index).collect();
        let completed: BTreeSet<usize> = survivors.iter().copied().filter(|&index| drops[index] == DropPoint::Never).collect();
        prop_assert_eq!(&continuing, &completed);
        let second = second_inputs(n, length, modulus_bits, seed ^ 2);
        match continue_round(round, &second, modulus_bits, |_| true) {
            Ok(sum) => {
                prop_assert_eq!(&continuing, &survivors);
                prop_assert_eq!(sum, plain_sum(&second, &survivors, modulus_bits));
            }
            Err(failed) => {
                prop_assert!(continuing != survivors, "failed with every survivor sending: {failed}");
                let is_incomplete = matches!(failed.reason, FailureReason::ContinuationIncomplete { .. });
                prop_assert!(is_incomplete);
            }
        }
    }
}

#[test]
fn one_missing_survivor_releases_nothing() {
    let cohort = Cohort::new(10, 4, 3, 32, 16, 21);
    let round = run_round_keeping_continuations(&cohort, &[DropPoint::Never; 10], 22);
    let second = second_inputs(10, 5, 32, 23);
    let failed = continue_round(round, &second, 32, |index| index != 6).unwrap_err();
    assert_eq!(
        failed.reason,
        FailureReason::ContinuationIncomplete {
            missing: 1,
            first_missing: node(6)
        }
    );
}

#[test]
fn a_continuation_refuses_strangers_repeats_and_wrong_lengths() {
    let cohort = Cohort::new(6, 5, 4, 32, 8, 31);
    let mut drops = [DropPoint::Never; 6];
    drops[5] = DropPoint::AfterShareKeys;
    let round = run_round_keeping_continuations(&cohort, &drops, 32);
    let finished = round.finished.expect("the round finished");
    let mut sum = finished.continuation(3, 32);
    let mut continuations = round.continuations.into_iter();
    let (_, first) = continuations.next().expect("a survivor");
    let message = first
        .masked_input(CONTINUATION_ROUND, 32, &[1, 2, 3])
        .unwrap();
    sum.handle_masked_input(&message).unwrap();
    assert_eq!(
        sum.handle_masked_input(&message),
        Err(RejectedMessage::Duplicate { node: node(0) })
    );
    let mut stranger = message.clone();
    stranger.sender = node(5);
    assert_eq!(
        sum.handle_masked_input(&stranger),
        Err(RejectedMessage::NotExpected { node: node(5) })
    );
    let (_, second) = continuations.next().expect("a second survivor");
    let long = second
        .masked_input(CONTINUATION_ROUND, 32, &[1, 2, 3, 4])
        .unwrap();
    assert_eq!(
        sum.handle_masked_input(&long),
        Err(RejectedMessage::WrongLength {
            node: node(1),
            expected: 3,
            actual: 4
        })
    );
}

#[test]
fn inputs_outside_the_modulus_are_refused_by_the_client() {
    let cohort = Cohort::new(5, 4, 3, 32, 4, 41);
    let mut round = run_round_keeping_continuations(&cohort, &[DropPoint::Never; 5], 42);
    let (_, continuation) = round.continuations.remove(0);
    assert!(matches!(
        continuation.masked_input(CONTINUATION_ROUND, 8, &[1, 256]),
        Err(ClientError::InputOutOfRange { index: 1 })
    ));
    let (_, continuation) = round.continuations.remove(0);
    assert!(matches!(
        continuation.masked_input(CONTINUATION_ROUND, 33, &[1]),
        Err(ClientError::ModulusOutOfRange { modulus_bits: 33 })
    ));
}

#[test]
fn a_continuation_input_stays_masked_against_a_coordinator_with_colluders() {
    // The coordinator holds every self-mask seed and dropped key the round
    // revealed, and two colluding survivors hand it their continuations'
    // inputs: it removes everything it can from an honest client's upload
    // by summing every other upload it has. With one honest neighbour's
    // upload withheld from that sum, the honest client's input is still
    // covered by their pair's mask. Checked on the sum it can form: all
    // uploads but the one honest neighbour's, minus the colluders' inputs,
    // is not the honest client's input.
    let n = 10;
    let modulus_bits = 32;
    let cohort = Cohort::new(n, 4, 3, modulus_bits, 6, 51);
    let round = run_round_keeping_continuations(&cohort, &[DropPoint::Never; 10], 52);
    let second = second_inputs(n, 64, modulus_bits, 53);
    let mut uploads: Vec<(usize, Vec<u32>)> = Vec::new();
    for (index, continuation) in round.continuations {
        let message = continuation
            .masked_input(CONTINUATION_ROUND, modulus_bits, &second[index])
            .unwrap();
        // An upload is not its input: at least one pair's mask covers it.
        assert_ne!(message.masked_vector, second[index], "client {index}");
        uploads.push((index, message.masked_vector));
    }
    let honest_target = 0;
    let graph = cohort.params.neighbour_graph();
    let withheld = graph
        .neighbours_of(honest_target)
        .into_iter()
        .next()
        .expect("a neighbour");
    let mut partial = vec![0u32; 64];
    for (index, upload) in &uploads {
        if *index == withheld {
            continue;
        }
        for (total, value) in partial.iter_mut().zip(upload) {
            *total = total.wrapping_add(*value);
        }
    }
    // Everyone but the target and the withheld neighbour "colludes": their
    // inputs are known and subtracted.
    for index in 0..n {
        if index == honest_target || index == withheld {
            continue;
        }
        for (total, value) in partial.iter_mut().zip(&second[index]) {
            *total = total.wrapping_sub(*value);
        }
    }
    assert_ne!(partial, second[honest_target]);
    // And with the neighbour's upload added back, the masks cancel: the
    // target and the neighbour are revealed only as their sum.
    let (_, neighbour_upload) = uploads
        .iter()
        .find(|(index, _)| *index == withheld)
        .unwrap();
    let both: Vec<u32> = partial
        .iter()
        .zip(neighbour_upload)
        .map(|(a, b)| a.wrapping_add(*b))
        .collect();
    let expected: Vec<u32> = second[honest_target]
        .iter()
        .zip(&second[withheld])
        .map(|(a, b)| a.wrapping_add(*b))
        .collect();
    assert_eq!(both, expected);
}

#[test]
fn a_client_outside_its_signed_list_gets_no_continuation() {
    // A client that dropped before its masked input left is in no
    // continuation; every survivor is.
    let cohort = Cohort::new(6, 5, 3, 32, 4, 61);
    let mut drops = [DropPoint::Never; 6];
    drops[2] = DropPoint::AfterShareKeys;
    let round = run_round_keeping_continuations(&cohort, &drops, 62);
    let continuing: Vec<usize> = round
        .continuations
        .iter()
        .map(|(index, _)| *index)
        .collect();
    assert_eq!(continuing, vec![0, 1, 3, 4, 5]);
}
