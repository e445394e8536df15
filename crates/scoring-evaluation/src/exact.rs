//! Exact metrics on pooled raw scores, for reporting where the scores
//! themselves are at hand (tests, benchmarks, the demo's pooled hold-out).

/// Exact AUC (Mann-Whitney with tie handling) for reporting on pooled held-out data.
///
/// A label of 0.5 or more counts as positive, as in `veil_models::EvalStats`. Tied scores
/// count half a win. `None` if the lengths differ, a score is NaN, or either class is missing.
pub fn exact_auc(scores: &[f32], labels: &[f32]) -> Option<f64> {
    if scores.len() != labels.len() || scores.iter().any(|score| score.is_nan()) {
        return None;
    }
    let mut pairs: Vec<(f32, bool)> = scores
        .iter()
        .zip(labels)
        .map(|(score, label)| (*score, *label >= 0.5))
        .collect();
    pairs.sort_by(|left, right| left.0.total_cmp(&right.0));
    let positives = pairs.iter().filter(|(_, positive)| *positive).count() as f64;
    let negatives = pairs.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return None;
    }
    // Sum of the positives' ranks, ties sharing their mean rank (the Mann-Whitney U statistic).
    let mut positive_rank_sum = 0.0f64;
    let mut group_start = 0usize;
    for group in pairs.chunk_by(|left, right| left.0 == right.0) {
        let group_positives = group.iter().filter(|(_, positive)| *positive).count() as f64;
        // Ranks are 1-based: this group occupies ranks group_start+1 ..= group_start+len.
        let mean_rank = group_start as f64 + (group.len() as f64 + 1.0) / 2.0;
        positive_rank_sum += group_positives * mean_rank;
        group_start += group.len();
    }
    let u_statistic = positive_rank_sum - positives * (positives + 1.0) / 2.0;
    Some(u_statistic / (positives * negatives))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn exact_auc_handles_ties_and_degenerate_inputs() {
        let check = |scores: &[f32], labels: &[f32], expected: Option<f64>| {
            assert_eq!(exact_auc(scores, labels), expected, "{scores:?} {labels:?}");
        };
        check(&[0.1, 0.4, 0.35, 0.8], &[0.0, 0.0, 1.0, 1.0], Some(0.75));
        check(&[0.5, 0.5], &[0.0, 1.0], Some(0.5));
        check(&[0.2, 0.5, 0.5, 0.9], &[0.0, 1.0, 0.0, 1.0], Some(0.875));
        check(&[0.2, 0.5], &[1.0, 1.0], None);
        check(&[0.2], &[1.0, 0.0], None);
        check(&[f32::NAN, 0.5], &[1.0, 0.0], None);
    }

    proptest! {
        #[test]
        fn exact_auc_equals_the_pairwise_definition(
            examples in proptest::collection::vec((0u8..6, any::<bool>()), 2..40),
        ) {
            // Few distinct scores, so ties are common.
            let scores: Vec<f32> = examples.iter().map(|(score, _)| f32::from(*score) / 5.0).collect();
            let labels: Vec<f32> = examples.iter().map(|(_, positive)| if *positive { 1.0 } else { 0.0 }).collect();
            let mut wins = 0.0f64;
            let mut pairs = 0.0f64;
            for (positive_score, _) in examples.iter().filter(|(_, positive)| *positive) {
                for (negative_score, _) in examples.iter().filter(|(_, positive)| !*positive) {
                    pairs += 1.0;
                    wins += match positive_score.cmp(negative_score) {
                        std::cmp::Ordering::Greater => 1.0,
                        std::cmp::Ordering::Equal => 0.5,
                        std::cmp::Ordering::Less => 0.0,
                    };
                }
            }
            let expected = (pairs > 0.0).then(|| wins / pairs);
            match (exact_auc(&scores, &labels), expected) {
                // Rank sums and pair counts round differently; both are exact to ~1e-12 here.
                (Some(actual), Some(expected)) => prop_assert!((actual - expected).abs() < 1e-9),
                (actual, expected) => prop_assert_eq!(actual, expected),
            }
        }

        #[test]
        fn histogram_auc_equals_exact_auc_when_scores_are_bucket_midpoints(
            examples in proptest::collection::vec((0usize..20, any::<bool>()), 2..60),
        ) {
            let mut positive = vec![0.0; 20];
            let mut negative = vec![0.0; 20];
            for (bucket, is_positive) in &examples {
                if *is_positive { positive[*bucket] += 1.0 } else { negative[*bucket] += 1.0 }
            }
            let scores: Vec<f32> = examples.iter().map(|(bucket, _)| (*bucket as f32 + 0.5) / 20.0).collect();
            let labels: Vec<f32> = examples.iter().map(|(_, positive)| f32::from(u8::from(*positive))).collect();
            match (crate::histogram_auc(&positive, &negative), exact_auc(&scores, &labels)) {
                (Some(histogram), Some(exact)) => prop_assert!((histogram - exact).abs() < 1e-9),
                (histogram, exact) => prop_assert_eq!(histogram, exact),
            }
        }
    }
}
