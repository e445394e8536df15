//! A full report input for the tests: a binary evaluation computed by
//! `veil-scoring-evaluation` from a noised release, and every optional
//! section, with names that need escaping.

#![allow(dead_code)]

use veil_report::{
    Detail, Evaluation, JobSummary, LifetimeValuePoint, PrivacyAudit, PrivacySpent, ReportInput,
    RoundMetrics, Rule, Segment, Segments,
};
use veil_scoring_evaluation::{
    BinaryRelease, Estimate, IntervalConfig, NoisyValue, RegressionBins, RegressionRelease,
    evaluate_binary, evaluate_regression,
};

/// An estimate with its interval.
fn estimate(value: f64, lower: f64, upper: f64) -> Estimate {
    Estimate {
        value,
        lower,
        upper,
    }
}

/// The `data-chart` names of every chart [`binary_input`]'s report draws.
pub const BINARY_REPORT_CHARTS: [&str; 11] = [
    "round-loss",
    "round-auc",
    "roc",
    "precision-recall",
    "gains",
    "lift",
    "calibration",
    "segments-elbow",
    "segments-k4",
    "segments-k2",
    "lifetime-value",
];

/// Text a hostile or careless job author could put in a name.
pub const HOSTILE: &str = "<script>alert('x')</script> & \"quoted\"";

/// Positive and negative counts over 20 score buckets of a decent churn
/// score, and a fixed pseudo-noise of the release's size (deviation 23).
fn release() -> BinaryRelease {
    let noise = |index: usize| 23.0 * (((index * 7919) % 17) as f64 - 8.0) / 8.0;
    let positive: Vec<NoisyValue> = (0..20)
        .map(|b| NoisyValue {
            value: (30.0 + 900.0 * (b as f64 / 19.0).powi(2)) + noise(b),
            noise_standard_deviation: 23.0,
        })
        .collect();
    let negative: Vec<NoisyValue> = (0..20)
        .map(|b| NoisyValue {
            value: (1400.0 * (1.0 - b as f64 / 20.0).powi(2) + 20.0) + noise(b + 20),
            noise_standard_deviation: 23.0,
        })
        .collect();
    let count = positive
        .iter()
        .chain(&negative)
        .map(|v| v.value)
        .sum::<f64>();
    BinaryRelease {
        positive,
        negative,
        count: NoisyValue {
            value: count,
            noise_standard_deviation: 23.0,
        },
        squared_error_sum: NoisyValue {
            value: 0.16 * count,
            noise_standard_deviation: 23.0,
        },
    }
}

pub fn binary_input() -> ReportInput {
    let evaluation =
        evaluate_binary(&release(), &IntervalConfig::new(0.9, 500, 2026).unwrap()).unwrap();
    ReportInput {
        job: JobSummary {
            job_id: format!("churn-q4 {HOSTILE}"),
            kind: "churn score (binary), logistic regression".to_owned(),
            state: "succeeded".to_owned(),
            details: vec![
                Detail {
                    name: "Rounds".to_owned(),
                    value: "12".to_owned(),
                },
                Detail {
                    name: "Partners".to_owned(),
                    value: "3".to_owned(),
                },
                Detail {
                    name: "Features".to_owned(),
                    value: format!("recency, frequency, {HOSTILE}"),
                },
            ],
        },
        generated_at: "2026-12-05 23:30 UTC".to_owned(),
        notes: vec![format!("A note {HOSTILE}")],
        privacy: ["north", "south", HOSTILE]
            .iter()
            .flat_map(|partner| {
                [
                    PrivacySpent {
                        partner: (*partner).to_owned(),
                        unit: "customer".to_owned(),
                        mechanism: "DP-SGD (local), Gaussian; final evaluation, Gaussian"
                            .to_owned(),
                        epsilon: 2.87,
                        delta: 1e-5,
                        budget_epsilon: Some(10.0),
                    },
                    PrivacySpent {
                        partner: (*partner).to_owned(),
                        unit: "partner".to_owned(),
                        mechanism: "distributed discrete Gaussian, secure aggregation".to_owned(),
                        epsilon: 4.1,
                        delta: 1e-5,
                        budget_epsilon: None,
                    },
                ]
            })
            .collect(),
        rounds: (1..=12)
            .map(|round| RoundMetrics {
                round,
                participants: 3,
                training_loss: Some(0.69 - 0.2 * (1.0 - (-(f64::from(round)) / 4.0).exp())),
                evaluation_loss: (round == 12).then_some(0.5),
                auc: (round == 12).then_some(evaluation.auc.value),
                rmse: None,
            })
            .collect(),
        evaluation: Some(Evaluation::Binary(evaluation)),
        segments: vec![
            Segments {
                k: 4,
                cost: Some(5120.0),
                features: vec![
                    "recency days".to_owned(),
                    "orders".to_owned(),
                    format!("spend {HOSTILE}"),
                ],
                noised: true,
                segments: vec![
                    Segment {
                        name: "champions".to_owned(),
                        size: 1200.0,
                        centroid: vec![12.0, 14.0, 820.0],
                        label_rate: Some(0.04),
                    },
                    Segment {
                        name: "loyal".to_owned(),
                        size: 2600.0,
                        centroid: vec![30.0, 8.0, 410.0],
                        label_rate: Some(0.09),
                    },
                    Segment {
                        name: "at risk, high value".to_owned(),
                        size: 900.0,
                        centroid: vec![140.0, 9.0, 700.0],
                        label_rate: Some(0.41),
                    },
                    Segment {
                        name: HOSTILE.to_owned(),
                        size: 3100.0,
                        centroid: vec![260.0, 1.5, 60.0],
                        label_rate: Some(0.63),
                    },
                ],
            },
            Segments {
                k: 2,
                cost: Some(9100.0),
                features: vec![
                    "recency days".to_owned(),
                    "orders".to_owned(),
                    format!("spend {HOSTILE}"),
                ],
                noised: true,
                segments: vec![
                    Segment {
                        name: "active".to_owned(),
                        size: 4700.0,
                        centroid: vec![40.0, 9.0, 520.0],
                        label_rate: Some(0.12),
                    },
                    Segment {
                        name: "lapsed".to_owned(),
                        size: 3100.0,
                        centroid: vec![250.0, 1.8, 70.0],
                        label_rate: Some(0.6),
                    },
                ],
            },
        ],
        rules: Some(vec![
            Rule {
                antecedent: "coffee, filters".to_owned(),
                consequent: "milk".to_owned(),
                support: estimate(0.031, 0.027, 0.035),
                confidence: estimate(0.52, 0.47, 0.58),
                lift: estimate(2.4, 2.1, 2.75),
            },
            Rule {
                antecedent: HOSTILE.to_owned(),
                consequent: "tea".to_owned(),
                support: estimate(0.012, 0.009, 0.015),
                confidence: estimate(0.33, 0.25, 0.41),
                lift: estimate(1.7, 1.3, 2.2),
            },
        ]),
        lifetime_value: Some(
            (0..=7)
                .map(|purchases| LifetimeValuePoint {
                    calibration_purchases: purchases,
                    customers: 4000.0 / (1.0 + f64::from(purchases)).powi(2),
                    mean_actual: 0.2 + 0.8 * f64::from(purchases),
                    mean_predicted: 0.25 + 0.75 * f64::from(purchases),
                })
                .collect(),
        ),
        privacy_audits: vec![PrivacyAudit {
            partner: format!("retailer {HOSTILE}"),
            attack: "white-box-gradient-alignment".to_owned(),
            canaries: 1000,
            guesses: 200,
            correct: 187,
            confidence: 0.95,
            delta: 1e-5,
            epsilon_lower: 1.75,
            epsilon_lower_gaussian: 2.1,
            epsilon_upper: Some(0.95),
        }],
    }
}

/// A spend job's input: regression metrics with a binned curve, no optional sections.
pub fn regression_input() -> ReportInput {
    let deviation = 26.0;
    let bins = 12;
    let count: Vec<NoisyValue> = (0..bins)
        .map(|b| NoisyValue {
            value: 2000.0 * (-((b as f64 - 6.0) / 2.5).powi(2)).exp() + 5.0,
            noise_standard_deviation: deviation,
        })
        .collect();
    let midpoint = |b: usize| -12.0 + (b as f64 + 0.5) * 2.0;
    let prediction_sum = count
        .iter()
        .enumerate()
        .map(|(b, c)| NoisyValue {
            value: c.value * midpoint(b),
            noise_standard_deviation: deviation * 12.0,
        })
        .collect();
    let label_sum = count
        .iter()
        .enumerate()
        .map(|(b, c)| NoisyValue {
            value: c.value * (midpoint(b) * 1.1 - 0.2),
            noise_standard_deviation: deviation * 12.0,
        })
        .collect();
    let total: f64 = count.iter().map(|c| c.value).sum();
    let release = RegressionRelease {
        count: NoisyValue {
            value: total,
            noise_standard_deviation: deviation,
        },
        absolute_error_sum: NoisyValue {
            value: 0.8 * total,
            noise_standard_deviation: deviation * 24.0,
        },
        squared_error_sum: NoisyValue {
            value: 1.1 * total,
            noise_standard_deviation: deviation * 576.0,
        },
        label_sum: NoisyValue {
            value: 0.5 * total,
            noise_standard_deviation: deviation * 12.0,
        },
        label_square_sum: NoisyValue {
            value: 9.0 * total,
            noise_standard_deviation: deviation * 144.0,
        },
        bins: Some(RegressionBins {
            value_bound: 12.0,
            count,
            prediction_sum,
            label_sum,
        }),
    };
    let evaluation =
        evaluate_regression(&release, &IntervalConfig::new(0.9, 500, 7).unwrap()).unwrap();
    ReportInput {
        job: JobSummary {
            job_id: "spend-2026".to_owned(),
            kind: "spend (regression)".to_owned(),
            state: "succeeded".to_owned(),
            details: Vec::new(),
        },
        generated_at: "2026-12-05".to_owned(),
        notes: Vec::new(),
        privacy: Vec::new(),
        rounds: Vec::new(),
        evaluation: Some(Evaluation::Regression(evaluation)),
        segments: Vec::new(),
        rules: None,
        lifetime_value: None,
        privacy_audits: Vec::new(),
    }
}
