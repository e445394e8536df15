//! The complete graph's deterministic guarantee, checked on whole rounds: a
//! round with the chooser's (k, t) survives any pattern of up to `dropouts`
//! dropouts, and a round that loses one more client fails with a named reason
//! instead of releasing a sum.

mod harness;

use harness::{Cohort, DropPoint, run_round};
use proptest::prelude::*;
use veil_secure_aggregation::{GraphRequirements, Guarantee, choose_neighbour_parameters};

fn late_drop_point() -> impl Strategy<Value = DropPoint> {
    prop_oneof![
        Just(DropPoint::BeforeAdvertise),
        Just(DropPoint::AfterAdvertise),
        Just(DropPoint::AfterShareKeys),
        Just(DropPoint::AfterMaskedInput),
        Just(DropPoint::AfterConsistencyCheck),
    ]
}

/// The complete-graph choice for a small cohort, as (k, t, dropouts tolerated).
fn complete_graph_choice(
    n_clients: usize,
    dropout_permille: usize,
    corrupt_permille: usize,
) -> Option<(usize, usize, usize)> {
    let chosen = choose_neighbour_parameters(&GraphRequirements {
        n_clients,
        dropout_rate: dropout_permille as f64 / 1000.0,
        corrupt_fraction: corrupt_permille as f64 / 1000.0,
        security_bits: 40,
        correctness_bits: 20,
    })
    .ok()?;
    match chosen.guarantee {
        Guarantee::Deterministic { dropouts, .. } => Some((
            chosen.neighbour_count,
            chosen.reconstruction_threshold,
            dropouts,
        )),
        Guarantee::Statistical { .. } => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    // Any `dropouts` clients, each dropping at any phase, leave a round that
    // releases exactly the sum of the accepted inputs.
    #[test]
    fn complete_graph_survives_its_tolerated_dropouts(
        n in 3usize..=9,
        dropout_permille in 0usize..=300,
        corrupt_permille in 0usize..=300,
        points in prop::collection::vec(late_drop_point(), 9),
        order in Just((0usize..9).collect::<Vec<_>>()).prop_shuffle(),
        seed in any::<u64>(),
    ) {
        let Some((k, t, dropouts)) = complete_graph_choice(n, dropout_permille, corrupt_permille) else {
            return Ok(());
        };
        prop_assert_eq!(k, n - 1);
        let cohort = Cohort::new(n, k, t, 16, 4, seed);
        let mut drops = vec![DropPoint::Never; n];
        for (&index, &point) in order.iter().filter(|&&index| index < n).zip(&points).take(dropouts) {
            drops[index] = point;
        }
        let outcome = run_round(&cohort, &drops, seed.wrapping_add(1));
        match outcome.result {
            Ok((sum, _)) => prop_assert_eq!(sum, cohort.plain_sum(&outcome.accepted_inputs)),
            Err(failed) => prop_assert!(false, "n = {n}, t = {t}, {dropouts} dropouts {drops:?}: {failed}"),
        }
    }
}

#[test]
fn complete_graph_fails_cleanly_one_dropout_past_its_guarantee() {
    // (n, δ‰, γ‰): three partners with one colluder tolerate no dropout, ten
    // with two colluders tolerate three.
    for (n, dropout_permille, corrupt_permille) in [(3, 100, 200), (5, 100, 200), (10, 100, 200)] {
        let (k, t, dropouts) = complete_graph_choice(n, dropout_permille, corrupt_permille)
            .expect("a complete-graph choice");
        let cohort = Cohort::new(n, k, t, 16, 4, 7);
        let mut drops = vec![DropPoint::Never; n];
        for drop in drops.iter_mut().take(dropouts + 1) {
            *drop = DropPoint::BeforeAdvertise;
        }
        let outcome = run_round(&cohort, &drops, 8);
        assert!(
            outcome.result.is_err(),
            "n = {n}, t = {t}: {} dropouts should fail",
            dropouts + 1
        );
    }
}
