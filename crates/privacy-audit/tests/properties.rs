//! Properties every lower bound must have, for any inputs: more correct
//! guesses never lower it, chance-level guessing gives 0, it is never NaN,
//! and impossible inputs are refused with the right error.

use proptest::prelude::*;
use veil_privacy_audit::{
    AuditError, AuditLevel, GuessCounts, epsilon_lower_bound, gaussian_epsilon_lower_bound,
};

/// δ values an audit would use, plus a large one that makes the δ term of
/// Theorem 1 dominate.
fn deltas() -> impl Strategy<Value = f64> {
    prop::sample::select(vec![0.0, 1e-6, 1e-5, 1e-3])
}

/// (m, r, v) with v < r <= m, so that v + 1 is still a valid count.
fn counts_with_room() -> impl Strategy<Value = (u64, u64, u64)> {
    (1_u64..3000)
        .prop_flat_map(|m| (Just(m), 1..=m))
        .prop_flat_map(|(m, r)| (Just(m), Just(r), 0..r))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn one_run_bound_is_monotone_in_correct_guesses(
        (m, r, v) in counts_with_room(),
        delta in deltas(),
        confidence in 0.5_f64..0.999,
    ) {
        let level = AuditLevel::new(delta, confidence).unwrap();
        let fewer = epsilon_lower_bound(&GuessCounts::new(m, r, v).unwrap(), &level);
        let more = epsilon_lower_bound(&GuessCounts::new(m, r, v + 1).unwrap(), &level);
        prop_assert!(
            more.epsilon_lower >= fewer.epsilon_lower,
            "v={v}: {} then v+1: {}", fewer.epsilon_lower, more.epsilon_lower
        );
    }

    #[test]
    fn gaussian_bound_is_monotone_in_correct_guesses(
        (m, r, v) in counts_with_room(),
        delta in prop::sample::select(vec![1e-6, 1e-5, 1e-3]),
        confidence in 0.5_f64..0.999,
    ) {
        let level = AuditLevel::new(delta, confidence).unwrap();
        let fewer = gaussian_epsilon_lower_bound(&GuessCounts::new(m, r, v).unwrap(), &level).unwrap();
        let more = gaussian_epsilon_lower_bound(&GuessCounts::new(m, r, v + 1).unwrap(), &level).unwrap();
        prop_assert!(more.epsilon_lower >= fewer.epsilon_lower);
        prop_assert!(more.gaussian_mu_lower >= fewer.gaussian_mu_lower);
    }

    /// At ε = 0 the correct-guess count is Binomial(r, 1/2), whose upper tail
    /// from any v <= r/2 is at least 1/2, so no claim is rejected at a
    /// confidence of 1/2 or more. (Below 1/2 confidence a "lower bound" may
    /// legitimately be positive on a coin flip; audits use 0.95.)
    #[test]
    fn chance_level_gives_zero(
        (m, r) in (0_u64..5000).prop_flat_map(|m| (Just(m), 0..=m)),
        fraction in 0.0_f64..=0.5,
        delta in deltas(),
        confidence in 0.5_f64..0.9999,
    ) {
        let v = (fraction * r as f64).floor() as u64;
        prop_assume!(2 * v <= r);
        let counts = GuessCounts::new(m, r, v).unwrap();
        let level = AuditLevel::new(delta, confidence).unwrap();
        prop_assert_eq!(epsilon_lower_bound(&counts, &level).epsilon_lower, 0.0);
        if delta > 0.0 {
            prop_assert_eq!(gaussian_epsilon_lower_bound(&counts, &level).unwrap().epsilon_lower, 0.0);
        }
    }

    #[test]
    fn never_nan_never_negative(
        (m, r, v) in (0_u64..20_000)
            .prop_flat_map(|m| (Just(m), 0..=m))
            .prop_flat_map(|(m, r)| (Just(m), Just(r), 0..=r)),
        delta in 0.0_f64..0.999,
        confidence in 1e-6_f64..0.999_999,
    ) {
        let counts = GuessCounts::new(m, r, v).unwrap();
        let level = AuditLevel::new(delta, confidence).unwrap();
        let bound = epsilon_lower_bound(&counts, &level);
        prop_assert!(bound.epsilon_lower.is_finite() && bound.epsilon_lower >= 0.0);
        if delta > 0.0 {
            let gaussian = gaussian_epsilon_lower_bound(&counts, &level).unwrap();
            prop_assert!(gaussian.epsilon_lower.is_finite() && gaussian.epsilon_lower >= 0.0);
        }
    }

    #[test]
    fn impossible_counts_are_refused(m in 0_u64..1000, extra in 1_u64..1000) {
        // More correct than guesses, and more guesses than canaries.
        prop_assert_eq!(
            GuessCounts::new(m + extra, m, m + extra),
            Err(AuditError::MoreCorrectThanGuesses { correct: m + extra, guesses: m })
        );
        prop_assert_eq!(
            GuessCounts::new(m, m + extra, 0),
            Err(AuditError::MoreGuessesThanCanaries { guesses: m + extra, canaries: m })
        );
    }

    #[test]
    fn levels_outside_their_ranges_are_refused(
        delta in prop_oneof![-1e3_f64..0.0, 1.0_f64..1e3],
        confidence in prop_oneof![-1e3_f64..=0.0, 1.0_f64..1e3],
    ) {
        prop_assert_eq!(AuditLevel::new(delta, 0.95), Err(AuditError::InvalidDelta(delta)));
        prop_assert_eq!(AuditLevel::new(1e-5, confidence), Err(AuditError::InvalidConfidence(confidence)));
    }
}

#[test]
fn not_a_number_levels_are_refused() {
    assert!(matches!(
        AuditLevel::new(f64::NAN, 0.95),
        Err(AuditError::InvalidDelta(_))
    ));
    assert!(matches!(
        AuditLevel::new(1e-5, f64::NAN),
        Err(AuditError::InvalidConfidence(_))
    ));
}

#[test]
fn serialises_every_input_beside_the_bound() {
    let counts = GuessCounts::new(1000, 100, 90).unwrap();
    let level = AuditLevel::new(1e-5, 0.95).unwrap();
    let json = serde_json::to_value(epsilon_lower_bound(&counts, &level)).unwrap();
    assert_eq!(json["method"], "one_run");
    assert_eq!(json["canaries"], 1000);
    assert_eq!(json["guesses"], 100);
    assert_eq!(json["correct"], 90);
    assert_eq!(json["delta"], 1e-5);
    assert_eq!(json["confidence"], 0.95);
    assert!(json.get("gaussian_mu_lower").is_none());
    // The reference table's row (m, r, v, δ, confidence) = (1000, 100, 90,
    // 1e-5, 0.95), to its tolerance (see reference_table.rs).
    let epsilon = json["epsilon_lower"].as_f64().unwrap();
    assert!(
        (epsilon - 1.626_143_480_695_645_8).abs() < 1e-9,
        "{epsilon}"
    );
    let gaussian =
        serde_json::to_value(gaussian_epsilon_lower_bound(&counts, &level).unwrap()).unwrap();
    assert_eq!(gaussian["method"], "gaussian_fdp");
    assert!(gaussian["gaussian_mu_lower"].as_f64().unwrap() > 0.0);
}
