//! Assembles the report page: one HTML document with inline CSS and inline
//! SVG, no script and no external asset (its Content-Security-Policy forbids
//! loading any), every text escaped.

use std::fmt::Write;

use veil_scoring_evaluation::{BinaryEvaluation, Estimate, RegressionEvaluation};

use crate::escape::{escape, number, optional};
use crate::input::{Evaluation, LifetimeValuePoint, PrivacyAudit, ReportInput, Rule, Segments};
use crate::pca::project_to_plane;
use crate::svg::{
    Axis, Band, BarChart, Guide, LineChart, ScatterChart, Series, bar_chart, line_chart,
    scatter_chart,
};

const STYLE: &str = "
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;margin:0 auto;max-width:1180px;padding:24px;color:#1b1b1b;background:#fff;line-height:1.45}
h1{font-size:1.7rem;margin:0 0 4px}h2{font-size:1.3rem;margin:32px 0 8px;border-bottom:2px solid #1f4e9c;padding-bottom:4px}h3{font-size:1.05rem;margin:0 0 6px}
.meta{color:#555;margin:0 0 16px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:.92rem}caption{text-align:left;font-weight:600;padding:4px 0}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f1f4f9}th[scope=row],td.text{text-align:left}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(540px,1fr));gap:20px}
figure{margin:0;border:1px solid #ddd;border-radius:6px;padding:12px}figcaption{font-size:.88rem;color:#333;margin-top:4px}
svg.chart{width:100%;height:auto;display:block}
details{margin-top:6px;font-size:.88rem}summary{cursor:pointer;color:#1f4e9c}
.note{background:#f7f7f2;border-left:4px solid #b34712;padding:8px 12px;font-size:.92rem}
";

/// An estimate with its interval, e.g. `0.812 (0.801 – 0.823)`.
fn with_interval(estimate: &Estimate, decimals: usize) -> String {
    if estimate.lower == estimate.upper {
        number(estimate.value, decimals)
    } else {
        format!(
            "{} ({} – {})",
            number(estimate.value, decimals),
            number(estimate.lower, decimals),
            number(estimate.upper, decimals)
        )
    }
}

/// A table with a caption, column headers and rows whose first cell is the row's header.
fn table(caption: &str, headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!("<table><caption>{}</caption><thead><tr>", escape(caption));
    for header in headers {
        let _ = write!(out, r#"<th scope="col">{}</th>"#, escape(header));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for (index, cell) in row.iter().enumerate() {
            if index == 0 {
                let _ = write!(out, r#"<th scope="row">{}</th>"#, escape(cell));
            } else if is_numeric(cell) {
                let _ = write!(out, "<td>{}</td>", escape(cell));
            } else {
                let _ = write!(out, r#"<td class="text">{}</td>"#, escape(cell));
            }
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

/// Whether a cell reads as a number (right-aligned) rather than text.
fn is_numeric(cell: &str) -> bool {
    cell.chars()
        .next()
        .is_some_and(|first| first.is_ascii_digit() || first == '-' || first == '—')
}

/// A chart in a figure with a heading, a caption and its data as a table.
fn figure(heading: &str, svg: String, caption: &str, data: String) -> String {
    format!(
        "<figure><h3>{}</h3>{svg}<figcaption>{}</figcaption><details><summary>Data behind the chart</summary>{data}</details></figure>",
        escape(heading),
        escape(caption)
    )
}

/// The page.
pub fn render(input: &ReportInput) -> String {
    let mut out = String::with_capacity(256 * 1024);
    let title = format!("Veil job report: {}", input.job.job_id);
    let _ = write!(
        out,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'"><title>{}</title><style>{STYLE}</style></head><body><main>"#,
        escape(&title)
    );
    let _ = write!(
        out,
        r#"<h1>{}</h1><p class="meta">Report made {}</p>"#,
        escape(&title),
        escape(&input.generated_at)
    );
    for note in &input.notes {
        let _ = write!(out, r#"<p class="note">{}</p>"#, escape(note));
    }
    job_section(&mut out, input);
    privacy_section(&mut out, input);
    rounds_section(&mut out, input);
    match &input.evaluation {
        Some(Evaluation::Binary(evaluation)) => binary_section(&mut out, evaluation),
        Some(Evaluation::Regression(evaluation)) => regression_section(&mut out, evaluation),
        None => {}
    }
    if !input.segments.is_empty() {
        segments_section(&mut out, &input.segments);
    }
    if let Some(rules) = &input.rules {
        rules_section(&mut out, rules);
    }
    if let Some(points) = &input.lifetime_value {
        lifetime_value_section(&mut out, points);
    }
    if !input.privacy_audits.is_empty() {
        privacy_audit_section(&mut out, &input.privacy_audits);
    }
    out.push_str("</main></body></html>\n");
    out
}

fn job_section(out: &mut String, input: &ReportInput) {
    let job = &input.job;
    let mut rows = vec![
        vec!["Job".to_owned(), job.job_id.clone()],
        vec!["Kind".to_owned(), job.kind.clone()],
        vec!["State".to_owned(), job.state.clone()],
    ];
    rows.extend(
        job.details
            .iter()
            .map(|detail| vec![detail.name.clone(), detail.value.clone()]),
    );
    let _ = write!(
        out,
        r#"<section id="job"><h2>The job</h2>{}</section>"#,
        table("Job specification", &["Field", "Value"], &rows)
    );
}

fn privacy_section(out: &mut String, input: &ReportInput) {
    out.push_str(r#"<section id="privacy"><h2>Privacy spent</h2>"#);
    if input.privacy.is_empty() {
        out.push_str("<p>No privacy spending is recorded for this job.</p></section>");
        return;
    }
    let rows: Vec<Vec<String>> = input
        .privacy
        .iter()
        .map(|spent| {
            vec![
                spent.partner.clone(),
                spent.unit.clone(),
                spent.mechanism.clone(),
                number(spent.epsilon, 3),
                format!("{:e}", spent.delta),
                optional(spent.budget_epsilon, 2),
                spent
                    .budget_epsilon
                    .filter(|budget| *budget > 0.0)
                    .map_or_else(
                        || "—".to_owned(),
                        |budget| format!("{:.0}%", 100.0 * spent.epsilon / budget),
                    ),
            ]
        })
        .collect();
    let _ = write!(
        out,
        "<p>The differential-privacy guarantee each partner's data has for this job: the smaller ε, the less any one customer (or partner) can change what was released.</p>{}</section>",
        table(
            "Privacy spent per partner",
            &[
                "Partner",
                "Unit",
                "Mechanism",
                "ε",
                "δ",
                "Budget ε",
                "Budget used"
            ],
            &rows
        )
    );
}

fn rounds_section(out: &mut String, input: &ReportInput) {
    if input.rounds.is_empty() {
        return;
    }
    out.push_str(r#"<section id="rounds"><h2>Training rounds</h2><div class="charts">"#);
    let rounds = &input.rounds;
    let x = Axis {
        label: "Round".to_owned(),
        min: 0.0,
        max: rounds
            .iter()
            .map(|r| f64::from(r.round))
            .fold(1.0, f64::max),
    };
    let series = |name: &str, value: &dyn Fn(&crate::input::RoundMetrics) -> Option<f64>| Series {
        name: name.to_owned(),
        points: rounds
            .iter()
            .map(|round| (f64::from(round.round), value(round).unwrap_or(f64::NAN)))
            .collect(),
        band: Vec::new(),
    };
    let losses = vec![
        series("Training loss", &|r| r.training_loss),
        series("Held-out loss", &|r| r.evaluation_loss),
    ];
    let loss_values = rounds
        .iter()
        .flat_map(|r| [r.training_loss, r.evaluation_loss])
        .flatten();
    let rows: Vec<Vec<String>> = rounds
        .iter()
        .map(|r| {
            vec![
                r.round.to_string(),
                r.participants.to_string(),
                optional(r.training_loss, 4),
                optional(r.evaluation_loss, 4),
                optional(r.auc, 4),
                optional(r.rmse, 4),
            ]
        })
        .collect();
    let data = table(
        "Metrics per round",
        &[
            "Round",
            "Partners",
            "Training loss",
            "Held-out loss",
            "AUC",
            "RMSE",
        ],
        &rows,
    );
    out.push_str(&figure(
        "Loss per round",
        line_chart(&LineChart {
            id: "round-loss".to_owned(),
            title: "Loss per round".to_owned(),
            description: "Mean training loss and held-out loss after each round.".to_owned(),
            x: x.clone(),
            y: Axis::fitted("Mean loss", loss_values),
            series: losses,
            guide: None,
        }),
        "Solid: training loss; dashed: held-out loss. Under customer-level DP only the final round's held-out metrics are released.",
        data.clone(),
    ));
    let quality: Vec<(String, Series)> = if rounds.iter().any(|r| r.auc.is_some()) {
        vec![("AUC".to_owned(), series("AUC", &|r| r.auc))]
    } else if rounds.iter().any(|r| r.rmse.is_some()) {
        vec![("RMSE".to_owned(), series("RMSE", &|r| r.rmse))]
    } else {
        Vec::new()
    };
    for (name, line) in quality {
        let y = if name == "AUC" {
            Axis::unit("AUC")
        } else {
            Axis::fitted("RMSE", line.points.iter().map(|(_, y)| *y))
        };
        out.push_str(&figure(
            &format!("{name} per round"),
            line_chart(&LineChart {
                id: format!("round-{}", name.to_lowercase()),
                title: format!("Held-out {name} per round"),
                description: format!(
                    "The model's held-out {name} after each round that released one."
                ),
                x: x.clone(),
                y,
                series: vec![line],
                guide: (name == "AUC")
                    .then(|| Guide::Horizontal(0.5, "AUC of a random score".to_owned())),
            }),
            &format!("Held-out {name} after each round that released it."),
            data.clone(),
        ));
    }
    out.push_str("</div></section>");
}

fn estimate_band(points: impl Iterator<Item = (f64, Estimate)>) -> (Vec<(f64, f64)>, Vec<Band>) {
    points
        .map(|(x, estimate)| ((x, estimate.value), (x, estimate.lower, estimate.upper)))
        .unzip()
}

fn binary_section(out: &mut String, evaluation: &BinaryEvaluation) {
    let confidence = 100.0 * evaluation.intervals.confidence();
    let _ = write!(
        out,
        r#"<section id="evaluation"><h2>How good is the score?</h2><p class="note">Figures come from the final model's evaluation on held-out customers, released once with differential-privacy noise. Ranges in brackets and shaded bands are {confidence:.0}% intervals for that noise ({} parametric-bootstrap draws, seed {}): they show what the noise costs, not which customers happened to be held out.</p>"#,
        evaluation.intervals.replicates(),
        evaluation.intervals.seed()
    );
    let summary = vec![
        vec![
            "AUC".to_owned(),
            with_interval(&evaluation.auc, 3),
            "Chance a random positive scores above a random negative (0.5 is a coin toss)."
                .to_owned(),
        ],
        vec![
            "Average precision".to_owned(),
            with_interval(&evaluation.average_precision, 3),
            "Area under the precision-recall curve.".to_owned(),
        ],
        vec![
            "Brier score".to_owned(),
            with_interval(&evaluation.brier_score, 4),
            "Mean squared gap between score and outcome (lower is better).".to_owned(),
        ],
        vec![
            "Positives".to_owned(),
            with_interval(&evaluation.positives, 0),
            "Held-out customers with the outcome.".to_owned(),
        ],
        vec![
            "Negatives".to_owned(),
            with_interval(&evaluation.negatives, 0),
            "Held-out customers without it.".to_owned(),
        ],
    ];
    out.push_str(&table(
        "Headline metrics",
        &["Metric", "Value", "Meaning"],
        &summary,
    ));
    let top_rows: Vec<Vec<String>> = evaluation
        .top_percents
        .iter()
        .map(|top| {
            vec![
                format!("Top {}%", top.percent),
                with_interval(&top.precision, 3),
                with_interval(&top.recall, 3),
            ]
        })
        .collect();
    out.push_str(&table(
        "Targeting the highest-scoring customers",
        &[
            "Customers targeted",
            "Precision (share that are positive)",
            "Recall (share of all positives reached)",
        ],
        &top_rows,
    ));
    let decile_rows: Vec<Vec<String>> = evaluation
        .deciles
        .iter()
        .map(|decile| {
            vec![
                decile.decile.to_string(),
                with_interval(&decile.response_rate, 3),
                with_interval(&decile.lift, 2),
                with_interval(&decile.cumulative_gain, 3),
                with_interval(&decile.cumulative_lift, 2),
            ]
        })
        .collect();
    let decile_table = table(
        "Lift and gains by decile (decile 1 = highest scores)",
        &[
            "Decile",
            "Response rate",
            "Lift",
            "Cumulative gain",
            "Cumulative lift",
        ],
        &decile_rows,
    );
    out.push_str(&decile_table);
    out.push_str(r#"<div class="charts">"#);

    let (roc_points, roc_band) = estimate_band(
        evaluation
            .roc
            .iter()
            .map(|p| (p.false_positive_rate.value, p.true_positive_rate)),
    );
    let roc_rows: Vec<Vec<String>> = evaluation
        .roc
        .iter()
        .map(|p| {
            vec![
                number(p.threshold, 2),
                with_interval(&p.false_positive_rate, 3),
                with_interval(&p.true_positive_rate, 3),
            ]
        })
        .collect();
    out.push_str(&figure(
        "ROC curve",
        line_chart(&LineChart {
            id: "roc".to_owned(),
            title: "ROC curve".to_owned(),
            description: format!("True positive rate against false positive rate at each score threshold; AUC {}.", with_interval(&evaluation.auc, 3)),
            x: Axis::unit("False positive rate"),
            y: Axis::unit("True positive rate"),
            series: vec![Series { name: "Model".to_owned(), points: roc_points, band: roc_band }],
            guide: Some(Guide::Diagonal("A random score".to_owned())),
        }),
        "Each point is a score threshold (a released bucket edge). The dotted diagonal is a random score; the shaded band is the interval of the true positive rate.",
        table("ROC points", &["Score threshold", "False positive rate", "True positive rate"], &roc_rows),
    ));

    let (pr_points, pr_band) = estimate_band(
        evaluation
            .precision_recall
            .iter()
            .map(|p| (p.recall.value, p.precision)),
    );
    let pr_rows: Vec<Vec<String>> = evaluation
        .precision_recall
        .iter()
        .map(|p| {
            vec![
                number(p.threshold, 2),
                with_interval(&p.recall, 3),
                with_interval(&p.precision, 3),
            ]
        })
        .collect();
    let base_rate =
        evaluation.positives.value / (evaluation.positives.value + evaluation.negatives.value);
    out.push_str(&figure(
        "Precision and recall",
        line_chart(&LineChart {
            id: "precision-recall".to_owned(),
            title: "Precision-recall curve".to_owned(),
            description: format!(
                "Precision against recall at each score threshold; average precision {}.",
                with_interval(&evaluation.average_precision, 3)
            ),
            x: Axis::unit("Recall"),
            y: Axis::unit("Precision"),
            series: vec![Series {
                name: "Model".to_owned(),
                points: pr_points,
                band: pr_band,
            }],
            guide: Some(Guide::Horizontal(
                base_rate,
                "Share of positives overall".to_owned(),
            )),
        }),
        "The dotted line is the overall share of positives, what targeting at random achieves.",
        table(
            "Precision-recall points",
            &["Score threshold", "Recall", "Precision"],
            &pr_rows,
        ),
    ));

    let (gain_points, gain_band) = estimate_band(
        evaluation
            .gains
            .iter()
            .map(|p| (p.population_fraction, p.gain)),
    );
    out.push_str(&figure(
        "Cumulative gains",
        line_chart(&LineChart {
            id: "gains".to_owned(),
            title: "Cumulative gains".to_owned(),
            description: "Share of all positives reached when targeting a share of customers, highest scores first.".to_owned(),
            x: Axis::unit("Share of customers targeted"),
            y: Axis::unit("Share of positives reached"),
            series: vec![Series { name: "Model".to_owned(), points: gain_points, band: gain_band }],
            guide: Some(Guide::Diagonal("Targeting at random".to_owned())),
        }),
        "The further above the dotted diagonal, the more positives targeting by score reaches than targeting at random.",
        decile_table.clone(),
    ));

    out.push_str(&figure(
        "Lift by decile",
        bar_chart(&BarChart {
            id: "lift".to_owned(),
            title: "Lift by decile".to_owned(),
            description: "Response rate of each score decile over the overall rate, with intervals.".to_owned(),
            categories: evaluation.deciles.iter().map(|d| d.decile.to_string()).collect(),
            values: evaluation.deciles.iter().map(|d| (d.lift.value, Some((d.lift.lower, d.lift.upper)))).collect(),
            x_label: "Decile (1 = highest scores)".to_owned(),
            y: Axis::fitted("Lift", evaluation.deciles.iter().map(|d| d.lift.upper)),
            guide: Some(Guide::Horizontal(1.0, "Lift 1: no better than random".to_owned())),
        }),
        "Bars are each decile's lift; whiskers its interval; the dotted line is lift 1 (no better than random).",
        decile_table,
    ));

    let (calibration_points, calibration_band) = estimate_band(
        evaluation
            .calibration
            .iter()
            .map(|b| (b.mean_predicted, b.observed_rate)),
    );
    let calibration_rows: Vec<Vec<String>> = evaluation
        .calibration
        .iter()
        .map(|b| {
            vec![
                format!("{:.2}–{:.2}", b.lower_score, b.upper_score),
                with_interval(&b.count, 0),
                with_interval(&b.observed_rate, 3),
            ]
        })
        .collect();
    out.push_str(&figure(
        "Calibration",
        line_chart(&LineChart {
            id: "calibration".to_owned(),
            title: "Calibration (reliability) curve".to_owned(),
            description: format!("Observed share of positives against the predicted probability, per score bucket; Brier score {}.", with_interval(&evaluation.brier_score, 4)),
            x: Axis::unit("Predicted probability (bucket midpoint)"),
            y: Axis::unit("Observed share of positives"),
            series: vec![Series { name: "Model".to_owned(), points: calibration_points, band: calibration_band }],
            guide: Some(Guide::Diagonal("Perfect calibration".to_owned())),
        }),
        "On the dotted diagonal a score of 0.3 means 30% of such customers have the outcome. Buckets too sparse to place under the noise are left out.",
        table("Calibration buckets", &["Score bucket", "Customers", "Observed share"], &calibration_rows),
    ));
    out.push_str("</div></section>");
}

fn regression_section(out: &mut String, evaluation: &RegressionEvaluation) {
    let confidence = 100.0 * evaluation.intervals.confidence();
    let _ = write!(
        out,
        r#"<section id="evaluation"><h2>How good is the spend model?</h2><p class="note">Figures come from the final model's evaluation on held-out customers, released once with differential-privacy noise. Ranges in brackets are {confidence:.0}% intervals for that noise ({} parametric-bootstrap draws, seed {}).</p>"#,
        evaluation.intervals.replicates(),
        evaluation.intervals.seed()
    );
    let rows = vec![
        vec![
            "Mean absolute error".to_owned(),
            with_interval(&evaluation.mean_absolute_error, 3),
        ],
        vec![
            "Root mean squared error".to_owned(),
            with_interval(&evaluation.root_mean_squared_error, 3),
        ],
        vec!["R²".to_owned(), with_interval(&evaluation.r_squared, 3)],
        vec![
            "Customers evaluated".to_owned(),
            with_interval(&evaluation.count, 0),
        ],
    ];
    out.push_str(&table("Headline metrics", &["Metric", "Value"], &rows));
    if evaluation.actual_versus_predicted.is_empty() {
        out.push_str("<p>This release carries no per-bin sums, so there is no actual-versus-predicted curve.</p></section>");
        return;
    }
    let bins = &evaluation.actual_versus_predicted;
    let (points, band) =
        estimate_band(bins.iter().map(|b| (b.mean_predicted.value, b.mean_actual)));
    let values = bins.iter().flat_map(|b| {
        [
            b.mean_predicted.value,
            b.mean_actual.lower,
            b.mean_actual.upper,
        ]
    });
    let axis = Axis::fitted("", values);
    let data_rows: Vec<Vec<String>> = bins
        .iter()
        .map(|b| {
            vec![
                format!("{:.2} to {:.2}", b.lower_prediction, b.upper_prediction),
                with_interval(&b.count, 0),
                with_interval(&b.mean_predicted, 3),
                with_interval(&b.mean_actual, 3),
            ]
        })
        .collect();
    out.push_str(r#"<div class="charts">"#);
    out.push_str(&figure(
        "Actual against predicted",
        line_chart(&LineChart {
            id: "actual-versus-predicted".to_owned(),
            title: "Actual against predicted spend".to_owned(),
            description: "Mean actual spend against mean predicted spend per prediction bin."
                .to_owned(),
            x: Axis {
                label: "Mean predicted".to_owned(),
                ..axis.clone()
            },
            y: Axis {
                label: "Mean actual".to_owned(),
                ..axis
            },
            series: vec![Series {
                name: "Model".to_owned(),
                points,
                band,
            }],
            guide: Some(Guide::Diagonal("Predicted equals actual".to_owned())),
        }),
        "On the dotted diagonal, predictions are right on average.",
        table(
            "Prediction bins",
            &[
                "Predicted range",
                "Customers",
                "Mean predicted",
                "Mean actual",
            ],
            &data_rows,
        ),
    ));
    out.push_str("</div></section>");
}

fn segments_section(out: &mut String, fits: &[Segments]) {
    out.push_str(r#"<section id="segments"><h2>Customer segments</h2>"#);
    if fits.iter().any(|fit| fit.noised) {
        out.push_str(
            "<p>Segment sizes, means and costs are released with differential-privacy noise.</p>",
        );
    }
    let elbow: Vec<(f64, f64)> = fits
        .iter()
        .filter_map(|fit| Some((fit.k as f64, fit.cost?)))
        .collect();
    if elbow.len() > 1 {
        let high = elbow.iter().map(|(_, cost)| *cost).fold(0.0, f64::max);
        let (first_k, last_k) = (elbow[0].0, elbow[elbow.len() - 1].0);
        let rows: Vec<Vec<String>> = elbow
            .iter()
            .map(|(k, cost)| vec![number(*k, 0), number(*cost, 1)])
            .collect();
        out.push_str(r#"<div class="charts">"#);
        out.push_str(&figure(
            "Choosing k",
            line_chart(&LineChart {
                id: "segments-elbow".to_owned(),
                title: "Noised k-means cost by number of segments".to_owned(),
                description: "The released cost of each fitted k; where the curve stops falling steeply is the usual choice of k.".to_owned(),
                x: Axis {
                    label: "Segments (k)".to_owned(),
                    min: first_k.min(last_k) - 0.5,
                    max: first_k.max(last_k) + 0.5,
                },
                y: Axis {
                    label: "Cost (scaled units)".to_owned(),
                    min: 0.0,
                    max: (high * 1.1).max(1.0),
                },
                series: vec![Series {
                    name: "Noised cost".to_owned(),
                    points: elbow,
                    band: Vec::new(),
                }],
                guide: None,
            }),
            "Pick the k after which more segments buy little.",
            table("Cost by k", &["k", "Noised cost"], &rows),
        ));
        out.push_str("</div>");
    }
    for fit in fits {
        segment_fit(out, fit);
    }
    out.push_str("</section>");
}

fn segment_fit(out: &mut String, segments: &Segments) {
    let _ = write!(out, "<h3>{} segments</h3>", segments.k);
    let mut headers = vec!["Segment", "Customers", "Label rate"];
    headers.extend(segments.features.iter().map(String::as_str));
    let rows: Vec<Vec<String>> = segments
        .segments
        .iter()
        .map(|segment| {
            let mut row = vec![
                segment.name.clone(),
                number(segment.size, 0),
                optional(segment.label_rate, 3),
            ];
            row.extend(segment.centroid.iter().map(|value| number(*value, 2)));
            row
        })
        .collect();
    let profile = table(
        "Segment profile (feature means in original units)",
        &headers,
        &rows,
    );
    out.push_str(&profile);
    let centroids: Vec<Vec<f64>> = segments
        .segments
        .iter()
        .map(|s| s.centroid.clone())
        .collect();
    if let Some(plane) = project_to_plane(&centroids) {
        let points: Vec<(String, f64, f64, f64)> = segments
            .segments
            .iter()
            .zip(&plane)
            .map(|(segment, (x, y))| (segment.name.clone(), *x, *y, segment.size))
            .collect();
        let spread = |values: Vec<f64>, label: &str| {
            let low = values.iter().copied().fold(f64::INFINITY, f64::min);
            let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let margin = ((high - low) * 0.25).max(0.5);
            Axis {
                label: label.to_owned(),
                min: low - margin,
                max: high + margin,
            }
        };
        let x = spread(
            plane.iter().map(|(x, _)| *x).collect(),
            "First principal component",
        );
        let y = spread(
            plane.iter().map(|(_, y)| *y).collect(),
            "Second principal component",
        );
        out.push_str(r#"<div class="charts">"#);
        out.push_str(&figure(
            "Segment map",
            scatter_chart(&ScatterChart {
                id: format!("segments-k{}", segments.k),
                title: "Segment centroids projected to two dimensions".to_owned(),
                description: "Each circle is a segment's centroid on the first two principal components of the standardised centroids; its area is proportional to the segment's size.".to_owned(),
                x,
                y,
                points,
            }),
            "Segments close together have similar customers. Circle area is the segment's size.",
            profile,
        ));
        out.push_str("</div>");
    }
}

fn privacy_audit_section(out: &mut String, audits: &[PrivacyAudit]) {
    let rows: Vec<Vec<String>> = audits
        .iter()
        .map(|audit| {
            vec![
                audit.partner.clone(),
                audit.attack.clone(),
                audit.canaries.to_string(),
                format!("{} of {}", audit.correct, audit.guesses),
                number(audit.epsilon_lower, 3),
                number(audit.epsilon_lower_gaussian, 3),
                audit
                    .epsilon_upper
                    .map_or_else(|| "none (no DP-SGD)".to_owned(), |upper| number(upper, 3)),
                if audit.bound_violated() {
                    "LOWER BOUND ABOVE ε: stop and investigate".to_owned()
                } else {
                    "consistent".to_owned()
                },
            ]
        })
        .collect();
    let confidence = audits.first().map_or(0.95, |audit| audit.confidence);
    let _ = write!(
        out,
        r#"<section id="privacy-audit"><h2>Empirical privacy audit</h2><p>Lower bounds on ε measured by an auditor's canaries ({}% confidence, one training run), beside the accountant's upper bound. A lower bound only says what these attacks found; one above the upper bound means the job leaked more than it was charged for.</p>{}</section>"#,
        number(confidence * 100.0, 0),
        table(
            "Privacy tests",
            &[
                "Partner",
                "Attack",
                "Canaries",
                "Correct guesses",
                "ε lower (one run)",
                "ε lower (Gaussian)",
                "ε upper (accountant)",
                "Verdict"
            ],
            &rows
        )
    );
}

fn rules_section(out: &mut String, rules: &[Rule]) {
    let rows: Vec<Vec<String>> = rules
        .iter()
        .map(|rule| {
            vec![
                format!("{} → {}", rule.antecedent, rule.consequent),
                with_interval(&rule.support, 4),
                with_interval(&rule.confidence, 3),
                with_interval(&rule.lift, 2),
            ]
        })
        .collect();
    let _ = write!(
        out,
        r#"<section id="rules"><h2>Association rules</h2><p>Each estimate from the noised counts, with its 95% interval (DP noise included) in brackets.</p>{}</section>"#,
        table("Rules", &["Rule", "Support", "Confidence", "Lift"], &rows)
    );
}

fn lifetime_value_section(out: &mut String, points: &[LifetimeValuePoint]) {
    let x = Axis {
        label: "Purchases in the calibration period".to_owned(),
        min: 0.0,
        max: points
            .iter()
            .map(|p| f64::from(p.calibration_purchases))
            .fold(1.0, f64::max),
    };
    let y = Axis::fitted(
        "Mean purchases in the hold-out period",
        points
            .iter()
            .flat_map(|p| [p.mean_actual, p.mean_predicted]),
    );
    let line = |name: &str, value: &dyn Fn(&LifetimeValuePoint) -> f64| Series {
        name: name.to_owned(),
        points: points
            .iter()
            .map(|p| (f64::from(p.calibration_purchases), value(p)))
            .collect(),
        band: Vec::new(),
    };
    let rows: Vec<Vec<String>> = points
        .iter()
        .map(|p| {
            vec![
                p.calibration_purchases.to_string(),
                number(p.customers, 0),
                number(p.mean_actual, 3),
                number(p.mean_predicted, 3),
            ]
        })
        .collect();
    let _ = write!(
        out,
        r#"<section id="lifetime-value"><h2>Lifetime value</h2><div class="charts">{}</div></section>"#,
        figure(
            "Actual and predicted purchases",
            line_chart(&LineChart {
                id: "lifetime-value".to_owned(),
                title: "Hold-out purchases by calibration purchases".to_owned(),
                description: "Mean actual and mean predicted purchases in the hold-out period for customers grouped by their purchases in the calibration period.".to_owned(),
                x,
                y,
                series: vec![line("Actual", &|p| p.mean_actual), line("Predicted", &|p| p.mean_predicted)],
                guide: None,
            }),
            "Solid with circles: actual; dashed with squares: predicted.",
            table("Purchases by calibration group", &["Calibration purchases", "Customers", "Mean actual", "Mean predicted"], &rows),
        )
    );
}
