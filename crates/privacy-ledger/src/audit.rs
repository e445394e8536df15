//! The auditor's view of a ledger: a row per partner per job per unit
//! (mechanism, noise, clip, sampling, steps, δ, ε by RDP and PLD, ε
//! remaining), rows per partner cap, and ε over rounds. Rendered as a text
//! table, an SVG plot (hand-written, no plotting crate) and JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use veil_privacy_accounting::Accountant;

use crate::budget::{JobBudget, PartnerCap, PeriodWindow, Scope, Spent, compose};
use crate::charge::{Charge, ChargeSet, PrivacyUnit, TrustModel};
use crate::error::LedgerError;

/// The smallest and largest value of a parameter across a row's charges
/// (equal when the job never changed it).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ValueRange {
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

impl ValueRange {
    fn of(values: impl IntoIterator<Item = f64>) -> Option<Self> {
        values.into_iter().fold(None, |range, value| {
            Some(match range {
                None => Self {
                    min: value,
                    max: value,
                },
                Some(Self { min, max }) => Self {
                    min: min.min(value),
                    max: max.max(value),
                },
            })
        })
    }

    fn render(&self) -> String {
        if self.min == self.max {
            format!("{:.4}", self.min)
        } else {
            format!("{:.4}-{:.4}", self.min, self.max)
        }
    }
}

/// One partner's spending in one unit within one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRow {
    /// The partner.
    pub partner_id: String,
    /// The job.
    pub job_id: String,
    /// The unit.
    pub unit: PrivacyUnit,
    /// Trust models used, in order, without repeats.
    pub trust_models: Vec<TrustModel>,
    /// Mechanism kinds used, without repeats.
    pub mechanisms: Vec<String>,
    /// Noise over sensitivity (effective for distributed rounds).
    pub noise_multiplier: ValueRange,
    /// ℓ2 clip norm.
    pub clip_norm: ValueRange,
    /// Sampling probability per step.
    pub sampling_rate: ValueRange,
    /// Noisy steps in total.
    pub steps: u64,
    /// Rounds charged.
    pub rounds: u64,
    /// ε spent, at the job budget's δ (or the smallest charge δ without one).
    pub spent: Spent,
    /// The job's budget for this unit, if known.
    pub epsilon_limit: Option<f64>,
    /// `epsilon_limit − spent.epsilon`, if the limit is known.
    pub epsilon_remaining: Option<f64>,
}

/// One partner's spending against one of its caps, in the period containing
/// the report's `as_of` time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapRow {
    /// The partner.
    pub partner_id: String,
    /// The dataset.
    pub dataset_id: String,
    /// The unit.
    pub unit: PrivacyUnit,
    /// The period.
    pub window: PeriodWindow,
    /// ε spent in the period across all jobs, at the cap's δ.
    pub spent: Spent,
    /// The cap.
    pub epsilon_cap: f64,
    /// `epsilon_cap − spent.epsilon`.
    pub epsilon_remaining: f64,
}

/// Cumulative ε after each round.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SeriesPoint {
    /// The round.
    pub round: u64,
    /// RDP ε of all rounds up to and including this one.
    pub epsilon_rdp: f64,
}

/// One partner's ε over the rounds of one job in one unit. Uses the RDP
/// accountant: one PLD composition per round would cost a round's worth of
/// FFTs each, and RDP is a valid (slightly higher) upper bound.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpsilonSeries {
    /// The partner.
    pub partner_id: String,
    /// The job.
    pub job_id: String,
    /// The unit.
    pub unit: PrivacyUnit,
    /// δ the points are measured at.
    pub delta: f64,
    /// One point per charged round, in round order.
    pub points: Vec<SeriesPoint>,
}

/// Everything an auditor needs, computed from charges alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditorReport {
    /// UNIX seconds the cap periods were taken at.
    pub as_of_unix_s: i64,
    /// Per partner, job and unit.
    pub jobs: Vec<JobRow>,
    /// Per partner cap (only where the partner has charges on the dataset).
    pub caps: Vec<CapRow>,
    /// ε over rounds per partner, job and unit.
    pub series: Vec<EpsilonSeries>,
}

type RowKey = (String, String, PrivacyUnit);

fn push_unique<T: PartialEq>(values: &mut Vec<T>, value: T) {
    if !values.contains(&value) {
        values.push(value);
    }
}

fn job_row(
    (partner_id, job_id, unit): &RowKey,
    charges: &[&Charge],
    budget: Option<&JobBudget>,
) -> Result<JobRow, LedgerError> {
    let limit = budget.map(|budget| budget.for_unit(*unit));
    let delta = match limit {
        Some(limit) => limit.delta,
        // Without a budget use the smallest δ charged: smaller δ, larger ε.
        None => charges
            .iter()
            .map(|charge| charge.delta)
            .fold(f64::INFINITY, f64::min),
    };
    let spent = compose(charges.iter().copied(), delta)?;
    let mut trust_models = Vec::new();
    let mut mechanisms = Vec::new();
    let mut noise_multipliers = Vec::new();
    for charge in charges {
        push_unique(&mut trust_models, charge.trust_model);
        push_unique(&mut mechanisms, charge.mechanism.kind().to_owned());
        noise_multipliers.push(charge.mechanism.noise_multiplier()?);
    }
    let range = |values: Vec<f64>| {
        ValueRange::of(values).ok_or(LedgerError::InvalidBudget("a report row needs a charge"))
    };
    Ok(JobRow {
        partner_id: partner_id.clone(),
        job_id: job_id.clone(),
        unit: *unit,
        trust_models,
        mechanisms,
        noise_multiplier: range(noise_multipliers)?,
        clip_norm: range(
            charges
                .iter()
                .map(|charge| charge.mechanism.clip_norm())
                .collect(),
        )?,
        sampling_rate: range(
            charges
                .iter()
                .map(|charge| charge.mechanism.sampling_rate())
                .collect(),
        )?,
        steps: charges.iter().map(|charge| charge.mechanism.steps()).sum(),
        rounds: charges.len() as u64,
        epsilon_limit: limit.map(|limit| limit.epsilon),
        epsilon_remaining: limit.map(|limit| limit.epsilon - spent.epsilon),
        spent,
    })
}

fn series(key: &RowKey, charges: &[&Charge], delta: f64) -> Result<EpsilonSeries, LedgerError> {
    let mut ordered = charges.to_vec();
    ordered.sort_by_key(|charge| charge.round);
    let mut accountant = Accountant::new();
    let mut points = Vec::with_capacity(ordered.len());
    for charge in ordered {
        charge.mechanism.compose_into(&mut accountant)?;
        points.push(SeriesPoint {
            round: charge.round,
            epsilon_rdp: accountant.epsilon_rdp(delta)?,
        });
    }
    Ok(EpsilonSeries {
        partner_id: key.0.clone(),
        job_id: key.1.clone(),
        unit: key.2,
        delta,
        points,
    })
}

impl AuditorReport {
    /// Builds the report. `budgets` are the jobs' declared budgets (the
    /// coordinator's side), `caps` a node's own caps (the partner's side);
    /// either may be empty. Cap periods are those containing `as_of_unix_s`.
    pub fn build(
        charges: &[Charge],
        budgets: &[JobBudget],
        caps: &[PartnerCap],
        as_of_unix_s: i64,
    ) -> Result<Self, LedgerError> {
        let mut distinct = ChargeSet::default();
        for charge in charges {
            distinct.insert(charge)?;
        }
        let mut groups: BTreeMap<RowKey, Vec<&Charge>> = BTreeMap::new();
        for charge in distinct.charges() {
            groups
                .entry((
                    charge.partner_id.clone(),
                    charge.job_id.clone(),
                    charge.unit,
                ))
                .or_default()
                .push(charge);
        }
        let mut jobs = Vec::with_capacity(groups.len());
        let mut all_series = Vec::with_capacity(groups.len());
        for (key, group) in &groups {
            let budget = budgets.iter().find(|budget| budget.job_id == key.1);
            let row = job_row(key, group, budget)?;
            all_series.push(series(key, group, row.spent.delta)?);
            jobs.push(row);
        }
        let mut cap_rows = Vec::new();
        let partners: std::collections::BTreeSet<&str> = distinct
            .charges()
            .map(|charge| charge.partner_id.as_str())
            .collect();
        for cap in caps {
            let window = cap.period.window_containing(as_of_unix_s)?;
            for partner_id in &partners {
                let scope = Scope::Period {
                    partner_id: (*partner_id).to_owned(),
                    dataset_id: cap.dataset_id.clone(),
                    unit: cap.unit,
                    window,
                };
                let in_scope: Vec<&Charge> = distinct
                    .charges()
                    .filter(|charge| scope.contains(charge))
                    .collect();
                if in_scope.is_empty() {
                    continue;
                }
                let spent = compose(in_scope, cap.delta)?;
                cap_rows.push(CapRow {
                    partner_id: (*partner_id).to_owned(),
                    dataset_id: cap.dataset_id.clone(),
                    unit: cap.unit,
                    window,
                    epsilon_cap: cap.epsilon,
                    epsilon_remaining: cap.epsilon - spent.epsilon,
                    spent,
                });
            }
        }
        Ok(Self {
            as_of_unix_s,
            jobs,
            caps: cap_rows,
            series: all_series,
        })
    }

    /// A fixed-width text table, one line per row.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let optional =
            |value: Option<f64>| value.map_or_else(|| "-".to_owned(), |v| format!("{v:.4}"));
        let _ = writeln!(
            out,
            "{:<16} {:<16} {:<9} {:<28} {:<30} {:>15} {:>15} {:>15} {:>8} {:>7} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "partner",
            "job",
            "unit",
            "trust model",
            "mechanism",
            "noise mult",
            "clip norm",
            "sampling rate",
            "steps",
            "rounds",
            "delta",
            "eps RDP",
            "eps PLD",
            "eps",
            "limit",
            "remaining"
        );
        for row in &self.jobs {
            let trust: Vec<String> = row
                .trust_models
                .iter()
                .map(|model| format!("{model:?}"))
                .collect();
            let _ = writeln!(
                out,
                "{:<16} {:<16} {:<9} {:<28} {:<30} {:>15} {:>15} {:>15} {:>8} {:>7} {:>8.1e} {:>9.4} {:>9} {:>9.4} {:>9} {:>9}",
                row.partner_id,
                row.job_id,
                format!("{:?}", row.unit),
                trust.join(","),
                row.mechanisms.join(","),
                row.noise_multiplier.render(),
                row.clip_norm.render(),
                row.sampling_rate.render(),
                row.steps,
                row.rounds,
                row.spent.delta,
                row.spent.epsilon_rdp,
                optional(row.spent.epsilon_pld),
                row.spent.epsilon,
                optional(row.epsilon_limit),
                optional(row.epsilon_remaining),
            );
        }
        if !self.caps.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "{:<16} {:<16} {:<9} {:>12} {:>12} {:>8} {:>9} {:>9} {:>9}",
                "partner",
                "dataset",
                "unit",
                "period from",
                "period to",
                "delta",
                "eps",
                "cap",
                "remaining"
            );
            for row in &self.caps {
                let _ = writeln!(
                    out,
                    "{:<16} {:<16} {:<9} {:>12} {:>12} {:>8.1e} {:>9.4} {:>9.4} {:>9.4}",
                    row.partner_id,
                    row.dataset_id,
                    format!("{:?}", row.unit),
                    row.window.start_unix_s,
                    row.window.end_unix_s,
                    row.spent.delta,
                    row.spent.epsilon,
                    row.epsilon_cap,
                    row.epsilon_remaining,
                );
            }
        }
        out
    }

    /// SVG plot of cumulative ε (RDP) over the rounds of `job_id` in `unit`:
    /// axes with ticks and labels, one polyline per partner with a legend,
    /// and a dashed line at the job budget when it is known.
    pub fn render_svg(&self, job_id: &str, unit: PrivacyUnit) -> String {
        render_svg(self, job_id, unit)
    }

    /// Pretty JSON of the whole report.
    pub fn to_json(&self) -> Result<String, LedgerError> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    /// Reads a report exported by [`AuditorReport::to_json`].
    pub fn from_json(json: &str) -> Result<Self, LedgerError> {
        Ok(serde_json::from_str(json)?)
    }
}

/// Escapes text for SVG content and attributes: partner and job ids come
/// from outside and must not become markup.
fn xml_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// Colour-blind-safe palette (Okabe–Ito), cycled.
const PALETTE: [&str; 8] = [
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000",
];

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 55.0;
const TICKS: u32 = 5;

fn render_svg(report: &AuditorReport, job_id: &str, unit: PrivacyUnit) -> String {
    let lines: Vec<&EpsilonSeries> = report
        .series
        .iter()
        .filter(|series| series.job_id == job_id && series.unit == unit)
        .collect();
    let limit = report
        .jobs
        .iter()
        .find(|row| row.job_id == job_id && row.unit == unit)
        .and_then(|row| row.epsilon_limit);
    let max_round = lines
        .iter()
        .flat_map(|series| series.points.iter().map(|point| point.round))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let max_epsilon = lines
        .iter()
        .flat_map(|series| series.points.iter().map(|point| point.epsilon_rdp))
        .chain(limit)
        .filter(|epsilon| epsilon.is_finite())
        .fold(0.0_f64, f64::max);
    let y_top = if max_epsilon > 0.0 {
        max_epsilon * 1.1
    } else {
        1.0
    };
    let plot_width = WIDTH - LEFT - RIGHT;
    let plot_height = HEIGHT - TOP - BOTTOM;
    let x_of = |round: f64| LEFT + round / max_round * plot_width;
    let y_of = |epsilon: f64| TOP + plot_height - epsilon.min(y_top) / y_top * plot_height;

    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(
        svg,
        r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
    );
    let _ = write!(
        svg,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14">Cumulative ε (RDP) over rounds: job {}, {:?} level</text>"#,
        LEFT + plot_width / 2.0,
        xml_escape(job_id),
        unit
    );
    // Axes.
    let _ = write!(
        svg,
        r#"<line class="axis" x1="{LEFT}" y1="{}" x2="{}" y2="{}" stroke="black"/>"#,
        TOP + plot_height,
        LEFT + plot_width,
        TOP + plot_height
    );
    let _ = write!(
        svg,
        r#"<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{}" stroke="black"/>"#,
        TOP + plot_height
    );
    for tick in 0..=TICKS {
        let fraction = f64::from(tick) / f64::from(TICKS);
        let round = fraction * max_round;
        let epsilon = fraction * y_top;
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{:.0}</text>"#,
            x_of(round),
            TOP + plot_height + 18.0,
            round
        );
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{:.2}</text>"#,
            LEFT - 6.0,
            y_of(epsilon) + 4.0,
            epsilon
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">round</text>"#,
        LEFT + plot_width / 2.0,
        HEIGHT - 15.0
    );
    let _ = write!(
        svg,
        r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">ε</text>"#,
        TOP + plot_height / 2.0,
        TOP + plot_height / 2.0
    );
    if let Some(limit) = limit {
        let _ = write!(
            svg,
            r#"<line class="budget" x1="{LEFT}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="red" stroke-dasharray="6 4"/><text x="{}" y="{:.1}" fill="red">budget ε={limit:.2}</text>"#,
            LEFT + plot_width,
            LEFT + plot_width + 6.0,
            y_of(limit) + 4.0,
            y = y_of(limit),
        );
    }
    for (index, series) in lines.iter().enumerate() {
        let colour = PALETTE[index % PALETTE.len()];
        let points: Vec<String> = std::iter::once((0.0, 0.0))
            .chain(
                series
                    .points
                    .iter()
                    .map(|point| (point.round as f64, point.epsilon_rdp)),
            )
            .map(|(round, epsilon)| format!("{:.1},{:.1}", x_of(round), y_of(epsilon)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"><title>{}</title></polyline>"#,
            points.join(" "),
            xml_escape(&series.partner_id)
        );
        let legend_y = TOP + 20.0 + 18.0 * index as f64;
        let _ = write!(
            svg,
            r#"<line x1="{x1:.1}" y1="{legend_y:.1}" x2="{x2:.1}" y2="{legend_y:.1}" stroke="{colour}" stroke-width="2"/><text x="{tx:.1}" y="{ty:.1}">{}</text>"#,
            xml_escape(&series.partner_id),
            x1 = LEFT + plot_width + 6.0,
            x2 = LEFT + plot_width + 26.0,
            tx = LEFT + plot_width + 30.0,
            ty = legend_y + 4.0,
        );
    }
    svg.push_str("</svg>\n");
    svg
}
