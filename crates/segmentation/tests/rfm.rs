//! Federated DP RFM: cut points within the stated bound of the pooled exact
//! quantiles, the same cut points and scores at every partner, and the
//! segment table.

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use veil_segmentation::rfm::{
    RfmBins, RfmCutPoints, RfmScore, RfmSegmentTable, RfmValues, local_rfm_histograms,
    quantile_rank_error, rfm_plan,
};
use veil_segmentation::simulate::simulate_rfm;
use veil_segmentation::{SegmentationError, SegmentationPrivacy};

const LEVELS: [f64; 4] = [0.2, 0.4, 0.6, 0.8];

/// A field's bin edges, its federated cut points, and how to read it off a customer.
type Field<'a> = (&'a [f64], [f64; 4], fn(&RfmValues) -> f64);

fn bin_of(edges: &[f64], value: f64) -> usize {
    let bins = edges.len() - 1;
    edges[1..bins].partition_point(|edge| *edge <= value)
}

/// The interval the crate docs promise for level `p`: from the lower edge of
/// the bin of the pooled value at rank ⌊pN − 2E⌋ to the upper edge of the bin
/// of the value at rank ⌈pN + 2E⌉ (ranks 1-based, clamped to 1..=N).
fn promised_interval(sorted: &[f64], edges: &[f64], level: f64, rank_error: f64) -> (f64, f64) {
    let n = sorted.len() as f64;
    let low_rank = ((level * n - rank_error).floor()).clamp(1.0, n) as usize;
    let high_rank = ((level * n + rank_error).ceil()).clamp(1.0, n) as usize;
    let low = edges[bin_of(edges, sorted[low_rank - 1])];
    let high = edges[bin_of(edges, sorted[high_rank - 1]) + 1];
    (low, high)
}

#[test]
fn federated_cut_points_are_within_the_dp_bound_of_the_pooled_quantiles_and_shared()
-> Result<(), SegmentationError> {
    let partners = simulate_rfm(6, 5_000, &mut ChaCha20Rng::seed_from_u64(5))?;
    let bins = RfmBins::standard();
    for epsilon in [0.5, 1.0] {
        let plan = rfm_plan(
            &bins,
            &SegmentationPrivacy {
                epsilon,
                delta: 1e-6,
                min_survivors: 6,
            },
        )?;
        assert!(plan.epsilon() <= epsilon);
        let release = plan.releases()[0];
        let mut sum = vec![0i64; bins.dimension()];
        for (node, customers) in partners.iter().enumerate() {
            let mut vector = local_rfm_histograms(customers, &bins, &release)?;
            release.add_noise(
                &mut vector,
                &mut ChaCha20Rng::seed_from_u64(100 + node as u64),
            )?;
            for (total, value) in sum.iter_mut().zip(vector) {
                *total += value;
            }
        }
        // Every partner derives the cut points from the same released sum.
        let at_each_partner: Vec<RfmCutPoints> = partners
            .iter()
            .map(|_| RfmCutPoints::from_noised_histograms(&sum, &bins, &release))
            .collect::<Result<_, _>>()?;
        let cuts = at_each_partner[0];
        assert!(at_each_partner.iter().all(|other| *other == cuts));

        let pooled: Vec<RfmValues> = partners.iter().flatten().copied().collect();
        let fields: [Field<'_>; 3] = [
            (&bins.recency, cuts.recency, |v| v.recency_days),
            (&bins.frequency, cuts.frequency, |v| v.frequency),
            (&bins.monetary, cuts.monetary, |v| v.monetary),
        ];
        for (edges, estimated, field) in fields {
            let mut sorted: Vec<f64> = pooled.iter().map(field).collect();
            sorted.sort_by(f64::total_cmp);
            let rank_error = quantile_rank_error(&release, edges.len() - 1);
            for (level, estimate) in LEVELS.iter().zip(estimated) {
                let (low, high) = promised_interval(&sorted, edges, *level, rank_error);
                let exact = sorted[((level * sorted.len() as f64) as usize).min(sorted.len() - 1)];
                println!(
                    "ε {epsilon} p {level}: exact {exact:.2}, federated {estimate:.2}, bound [{low:.2}, {high:.2}]"
                );
                assert!(
                    low <= estimate && estimate <= high,
                    "p = {level}: {estimate} outside [{low}, {high}]"
                );
            }
        }
        // A customer scores the same at every partner.
        let customer = pooled[17];
        let scores: Vec<RfmScore> = at_each_partner
            .iter()
            .map(|cuts| cuts.score(&customer))
            .collect();
        assert!(scores.iter().all(|score| *score == scores[0]));
    }
    Ok(())
}

#[test]
fn scores_follow_the_cut_points_with_recency_reversed() {
    let cuts = RfmCutPoints {
        recency: [10.0, 20.0, 30.0, 40.0],
        frequency: [1.0, 2.0, 3.0, 4.0],
        monetary: [10.0, 100.0, 1000.0, 10_000.0],
    };
    let check = |recency_days, frequency, monetary, expected: (u8, u8, u8)| {
        let score = cuts.score(&RfmValues {
            recency_days,
            frequency,
            monetary,
        });
        assert_eq!(
            (score.recency, score.frequency, score.monetary),
            expected,
            "{recency_days} {frequency} {monetary}"
        );
    };
    check(0.0, 1.0, 5.0, (5, 1, 1));
    check(10.0, 1.5, 10.0, (5, 2, 1));
    check(25.0, 3.5, 500.0, (3, 4, 3));
    check(99.0, 50.0, 1e6, (1, 5, 5));
}

#[test]
fn the_standard_table_names_every_score_and_reads_from_a_config_file()
-> Result<(), SegmentationError> {
    let table = RfmSegmentTable::standard();
    table.validate()?;
    let name = |recency, frequency| {
        table
            .name(&RfmScore {
                recency,
                frequency,
                monetary: 3,
            })
            .map(str::to_owned)
    };
    assert_eq!(name(5, 5).as_deref(), Some("champions"));
    assert_eq!(name(5, 1).as_deref(), Some("new customers"));
    assert_eq!(name(1, 5).as_deref(), Some("can't lose them"));
    assert_eq!(name(1, 1).as_deref(), Some("lost"));
    assert_eq!(name(2, 2).as_deref(), Some("hibernating"));
    assert_eq!(name(3, 3).as_deref(), Some("needs attention"));
    let names: std::collections::BTreeSet<&str> = table
        .segments
        .iter()
        .map(|rule| rule.name.as_str())
        .collect();
    assert_eq!(names.len(), 11);

    // An operator's own table, from TOML: two segments split the grid.
    let custom: RfmSegmentTable = toml::from_str(
        r#"
        [[segments]]
        name = "active"
        recency = [3, 5]
        frequency = [1, 5]

        [[segments]]
        name = "lapsed"
        recency = [1, 2]
        frequency = [1, 5]
        "#,
    )
    .map_err(|error| SegmentationError::SegmentTable(error.to_string()))?;
    custom.validate()?;
    assert_eq!(
        custom.name(&RfmScore {
            recency: 2,
            frequency: 5,
            monetary: 1
        }),
        Some("lapsed")
    );
    Ok(())
}

#[test]
fn a_table_with_a_gap_an_overlap_or_a_bad_range_is_refused_by_name() {
    let mut gap = RfmSegmentTable::standard();
    gap.segments.retain(|rule| rule.name != "lost");
    assert!(
        matches!(gap.validate(), Err(SegmentationError::SegmentTable(message))
        if message.contains("R = 1, F = 1") && message.contains("0 segments"))
    );
    let mut overlap = RfmSegmentTable::standard();
    overlap.segments[1].recency = [3, 5];
    assert!(
        matches!(overlap.validate(), Err(SegmentationError::SegmentTable(message))
        if message.contains("champions") && message.contains("loyal"))
    );
    let mut reversed = RfmSegmentTable::standard();
    reversed.segments[0].frequency = [5, 4];
    assert!(
        matches!(reversed.validate(), Err(SegmentationError::SegmentTable(message))
        if message.contains("\"champions\"") && message.contains("frequency"))
    );
}

#[test]
fn bad_rfm_input_is_refused_with_the_row_or_field() -> Result<(), SegmentationError> {
    let bins = RfmBins::standard();
    let plan = rfm_plan(
        &bins,
        &SegmentationPrivacy {
            epsilon: 1.0,
            delta: 1e-6,
            min_survivors: 2,
        },
    )?;
    let release = plan.releases()[0];
    let customers = [
        RfmValues {
            recency_days: 3.0,
            frequency: 2.0,
            monetary: 10.0,
        },
        RfmValues {
            recency_days: 3.0,
            frequency: f64::NAN,
            monetary: 10.0,
        },
    ];
    assert_eq!(
        local_rfm_histograms(&customers, &bins, &release),
        Err(SegmentationError::NonFinite { row: 1, feature: 1 })
    );
    let mut unsorted = bins.clone();
    unsorted.monetary.swap(3, 4);
    assert!(matches!(
        unsorted.validate(),
        Err(SegmentationError::InvalidConfig {
            field: "bins.monetary",
            ..
        })
    ));
    assert!(matches!(
        RfmCutPoints::from_noised_histograms(&[1, 2, 3], &bins, &release),
        Err(SegmentationError::WrongLength { .. })
    ));
    assert!(matches!(
        rfm_plan(
            &bins,
            &SegmentationPrivacy {
                epsilon: 0.0,
                delta: 1e-6,
                min_survivors: 2
            }
        ),
        Err(SegmentationError::InvalidConfig {
            field: "privacy.epsilon",
            ..
        })
    ));
    Ok(())
}
