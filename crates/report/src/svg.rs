//! Inline SVG charts: line charts with interval bands, bar charts with
//! error bars and labelled scatter plots. Each chart is an `<svg
//! role="img">` with a `<title>` and `<desc>`; series differ in dash pattern
//! and marker shape as well as colour, so none is told apart by colour alone.

use std::fmt::Write;

use crate::escape::escape;

const WIDTH: f64 = 560.0;
const HEIGHT: f64 = 340.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 52.0;
/// Lines with more points than this are drawn without markers.
const MAX_MARKED_POINTS: usize = 40;

/// How series are told apart: colour, dash pattern and marker.
const STYLES: [(&str, &str, Marker); 3] = [
    ("#1f4e9c", "", Marker::Circle),
    ("#b34712", "7 4", Marker::Square),
    ("#2e7031", "2 3", Marker::Triangle),
];

#[derive(Debug, Clone, Copy)]
enum Marker {
    Circle,
    Square,
    Triangle,
}

/// An axis: its label and the range it shows.
#[derive(Debug, Clone)]
pub struct Axis {
    pub label: String,
    pub min: f64,
    pub max: f64,
}

impl Axis {
    /// [0, 1] with `label`.
    pub fn unit(label: &str) -> Self {
        Self {
            label: label.to_owned(),
            min: 0.0,
            max: 1.0,
        }
    }

    /// From 0 (or the lowest value, if below) to a little above the highest value.
    pub fn fitted(label: &str, values: impl IntoIterator<Item = f64>) -> Self {
        let (mut min, mut max) = (0.0f64, f64::NEG_INFINITY);
        for value in values.into_iter().filter(|value| value.is_finite()) {
            min = min.min(value);
            max = max.max(value);
        }
        if !max.is_finite() || max <= min {
            max = min + 1.0;
        }
        Self {
            label: label.to_owned(),
            min,
            max: max + 0.05 * (max - min),
        }
    }
}

/// A point of an interval band: x, low, high.
pub type Band = (f64, f64, f64);

/// One line, with an optional interval band.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub band: Vec<Band>,
}

/// A guide line drawn behind the data.
#[derive(Debug, Clone)]
pub enum Guide {
    /// y = x, e.g. a random model's ROC.
    Diagonal(String),
    /// y = constant, e.g. lift 1.
    Horizontal(f64, String),
}

/// A line chart.
#[derive(Debug, Clone)]
pub struct LineChart {
    /// Names the chart in the DOM (`data-chart`).
    pub id: String,
    pub title: String,
    pub description: String,
    pub x: Axis,
    pub y: Axis,
    pub series: Vec<Series>,
    pub guide: Option<Guide>,
}

/// A bar chart with optional error bars.
#[derive(Debug, Clone)]
pub struct BarChart {
    pub id: String,
    pub title: String,
    pub description: String,
    pub categories: Vec<String>,
    /// (value, optional (low, high)) per category.
    pub values: Vec<(f64, Option<(f64, f64)>)>,
    pub x_label: String,
    pub y: Axis,
    pub guide: Option<Guide>,
}

/// A scatter plot of labelled points sized by weight.
#[derive(Debug, Clone)]
pub struct ScatterChart {
    pub id: String,
    pub title: String,
    pub description: String,
    pub x: Axis,
    pub y: Axis,
    /// (label, x, y, weight ≥ 0).
    pub points: Vec<(String, f64, f64, f64)>,
}

/// Maps data coordinates to the plot area.
struct Frame<'a> {
    x: &'a Axis,
    y: &'a Axis,
}

impl Frame<'_> {
    fn px(&self, x: f64) -> f64 {
        LEFT + (x - self.x.min) / (self.x.max - self.x.min) * (WIDTH - LEFT - RIGHT)
    }

    fn py(&self, y: f64) -> f64 {
        let clamped = y.clamp(self.y.min, self.y.max);
        HEIGHT
            - BOTTOM
            - (clamped - self.y.min) / (self.y.max - self.y.min) * (HEIGHT - TOP - BOTTOM)
    }
}

fn open_svg(out: &mut String, id: &str, title: &str, description: &str) {
    let id = escape(id);
    let _ = write!(
        out,
        r#"<svg class="chart" data-chart="{id}" role="img" aria-labelledby="{id}-title {id}-desc" viewBox="0 0 {WIDTH} {HEIGHT}" xmlns="http://www.w3.org/2000/svg"><title id="{id}-title">{}</title><desc id="{id}-desc">{}</desc>"#,
        escape(title),
        escape(description)
    );
}

fn ticks(axis: &Axis) -> Vec<f64> {
    let span = axis.max - axis.min;
    let raw = span / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|factor| factor * magnitude)
        .find(|step| *step >= raw)
        .unwrap_or(raw);
    let first = (axis.min / step).ceil() * step;
    (0..=20)
        .map(|index| first + index as f64 * step)
        .take_while(|tick| *tick <= axis.max + step * 1e-9)
        .collect()
}

fn tick_label(value: f64) -> String {
    let rounded = (value * 1000.0).round() / 1000.0;
    let text = format!("{rounded}");
    if text == "-0" { "0".to_owned() } else { text }
}

fn axes(out: &mut String, frame: &Frame<'_>, x_ticks: bool) {
    let (left, right) = (LEFT, WIDTH - RIGHT);
    let (top, bottom) = (TOP, HEIGHT - BOTTOM);
    let _ = write!(
        out,
        r##"<g class="axes" font-size="12" fill="#222"><rect x="{left}" y="{top}" width="{}" height="{}" fill="none" stroke="#888"/>"##,
        right - left,
        bottom - top
    );
    for tick in ticks(frame.y) {
        let y = frame.py(tick);
        let _ = write!(
            out,
            r##"<line x1="{left}" x2="{right}" y1="{y:.1}" y2="{y:.1}" stroke="#e3e3e3"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            left - 6.0,
            y + 4.0,
            tick_label(tick)
        );
    }
    if x_ticks {
        for tick in ticks(frame.x) {
            let x = frame.px(tick);
            let _ = write!(
                out,
                r##"<line x1="{x:.1}" x2="{x:.1}" y1="{top}" y2="{bottom}" stroke="#e3e3e3"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
                bottom + 16.0,
                tick_label(tick)
            );
        }
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            (left + right) / 2.0,
            HEIGHT - 10.0,
            escape(&frame.x.label)
        );
    }
    let _ = write!(
        out,
        r#"<text transform="translate(16 {}) rotate(-90)" text-anchor="middle">{}</text></g>"#,
        (top + bottom) / 2.0,
        escape(&frame.y.label)
    );
}

fn guide(out: &mut String, frame: &Frame<'_>, guide: &Guide) {
    let (label, x1, y1, x2, y2) = match guide {
        Guide::Diagonal(label) => {
            let low = frame.x.min.max(frame.y.min);
            let high = frame.x.max.min(frame.y.max);
            (label, low, low, high, high)
        }
        Guide::Horizontal(y, label) => (label, frame.x.min, *y, frame.x.max, *y),
    };
    let _ = write!(
        out,
        r##"<line class="guide" x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#777" stroke-dasharray="1 4" stroke-width="1.5"><title>{}</title></line>"##,
        frame.px(x1),
        frame.py(y1),
        frame.px(x2),
        frame.py(y2),
        escape(label)
    );
}

fn marker(out: &mut String, shape: Marker, x: f64, y: f64, colour: &str, tooltip: &str) {
    let _ = match shape {
        Marker::Circle => write!(
            out,
            r#"<circle class="marker" cx="{x:.1}" cy="{y:.1}" r="3.5" fill="{colour}"><title>{tooltip}</title></circle>"#
        ),
        Marker::Square => write!(
            out,
            r#"<rect class="marker" x="{:.1}" y="{:.1}" width="7" height="7" fill="{colour}"><title>{tooltip}</title></rect>"#,
            x - 3.5,
            y - 3.5
        ),
        Marker::Triangle => write!(
            out,
            r#"<path class="marker" d="M{x:.1} {:.1}L{:.1} {:.1}L{:.1} {:.1}Z" fill="{colour}"><title>{tooltip}</title></path>"#,
            y - 4.5,
            x + 4.5,
            y + 3.5,
            x - 4.5,
            y + 3.5
        ),
    };
}

fn legend(out: &mut String, names: &[&str]) {
    for (index, name) in names.iter().enumerate() {
        let (colour, dash, shape) = STYLES[index % STYLES.len()];
        let y = TOP + 14.0 + index as f64 * 18.0;
        let x = WIDTH - RIGHT - 190.0;
        let _ = write!(
            out,
            r#"<g class="legend"><line x1="{x}" x2="{}" y1="{y}" y2="{y}" stroke="{colour}" stroke-width="2.5" stroke-dasharray="{dash}"/>"#,
            x + 28.0
        );
        marker(out, shape, x + 14.0, y, colour, &escape(name));
        let _ = write!(
            out,
            r##"<text x="{}" y="{}" font-size="12" fill="#222">{}</text></g>"##,
            x + 34.0,
            y + 4.0,
            escape(name)
        );
    }
}

/// A line chart as inline SVG.
pub fn line_chart(chart: &LineChart) -> String {
    let mut out = String::new();
    open_svg(&mut out, &chart.id, &chart.title, &chart.description);
    let frame = Frame {
        x: &chart.x,
        y: &chart.y,
    };
    axes(&mut out, &frame, true);
    if let Some(line) = &chart.guide {
        guide(&mut out, &frame, line);
    }
    for (index, series) in chart.series.iter().enumerate() {
        let (colour, _, _) = STYLES[index % STYLES.len()];
        let band: Vec<&Band> = series
            .band
            .iter()
            .filter(|(x, low, high)| x.is_finite() && low.is_finite() && high.is_finite())
            .collect();
        if band.iter().any(|(_, low, high)| high > low) {
            let mut d = String::new();
            for (position, (x, _, high)) in band.iter().enumerate() {
                let command = if position == 0 { 'M' } else { 'L' };
                let _ = write!(d, "{command}{:.1} {:.1}", frame.px(*x), frame.py(*high));
            }
            for (x, low, _) in band.iter().rev() {
                let _ = write!(d, "L{:.1} {:.1}", frame.px(*x), frame.py(*low));
            }
            let _ = write!(
                out,
                r#"<path class="band" d="{d}Z" fill="{colour}" fill-opacity="0.16" stroke="none"><title>{} interval</title></path>"#,
                escape(&series.name)
            );
        }
    }
    for (index, series) in chart.series.iter().enumerate() {
        let (colour, dash, shape) = STYLES[index % STYLES.len()];
        let mut d = String::new();
        let mut pen_down = false;
        for (x, y) in &series.points {
            if x.is_finite() && y.is_finite() {
                let command = if pen_down { 'L' } else { 'M' };
                let _ = write!(d, "{command}{:.1} {:.1}", frame.px(*x), frame.py(*y));
                pen_down = true;
            } else {
                pen_down = false;
            }
        }
        let _ = write!(
            out,
            r#"<path class="series" data-series="{}" d="{d}" fill="none" stroke="{colour}" stroke-width="2.5" stroke-dasharray="{dash}"/>"#,
            escape(&series.name)
        );
        if series.points.len() <= MAX_MARKED_POINTS {
            for (x, y) in series
                .points
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
            {
                let tooltip = format!(
                    "{}: ({}, {})",
                    escape(&series.name),
                    tick_label(*x),
                    tick_label(*y)
                );
                marker(
                    &mut out,
                    shape,
                    frame.px(*x),
                    frame.py(*y),
                    colour,
                    &tooltip,
                );
            }
        }
    }
    // One series is named by the chart's title; a legend would only cover data.
    if chart.series.len() > 1 {
        let names: Vec<&str> = chart
            .series
            .iter()
            .map(|series| series.name.as_str())
            .collect();
        legend(&mut out, &names);
    }
    out.push_str("</svg>");
    out
}

/// A bar chart as inline SVG.
pub fn bar_chart(chart: &BarChart) -> String {
    let mut out = String::new();
    open_svg(&mut out, &chart.id, &chart.title, &chart.description);
    let x_axis = Axis {
        label: chart.x_label.clone(),
        min: 0.0,
        max: chart.categories.len().max(1) as f64,
    };
    let frame = Frame {
        x: &x_axis,
        y: &chart.y,
    };
    axes(&mut out, &frame, false);
    let slot = frame.px(1.0) - frame.px(0.0);
    let (colour, _, _) = STYLES[0];
    for (index, (category, (value, interval))) in
        chart.categories.iter().zip(&chart.values).enumerate()
    {
        let left = frame.px(index as f64) + slot * 0.15;
        let base = frame.py(chart.y.min.max(0.0));
        let _ = write!(
            out,
            r##"<text x="{:.1}" y="{}" font-size="12" text-anchor="middle" fill="#222">{}</text>"##,
            left + slot * 0.35,
            HEIGHT - BOTTOM + 16.0,
            escape(category)
        );
        if !value.is_finite() {
            continue;
        }
        let top = frame.py(*value);
        let _ = write!(
            out,
            r#"<path class="series bar" d="M{left:.1} {base:.1}V{top:.1}H{:.1}V{base:.1}Z" fill="{colour}" fill-opacity="0.8"><title>{}: {}</title></path>"#,
            left + slot * 0.7,
            escape(category),
            tick_label(*value)
        );
        if let Some((low, high)) = interval {
            let middle = left + slot * 0.35;
            let _ = write!(
                out,
                r##"<path class="error-bar" d="M{middle:.1} {:.1}V{:.1}M{:.1} {:.1}H{:.1}M{:.1} {:.1}H{:.1}" stroke="#111" stroke-width="1.5" fill="none"/>"##,
                frame.py(*low),
                frame.py(*high),
                middle - 5.0,
                frame.py(*low),
                middle + 5.0,
                middle - 5.0,
                frame.py(*high),
                middle + 5.0
            );
        }
    }
    if let Some(line) = &chart.guide {
        guide(&mut out, &frame, line);
    }
    let _ = write!(
        out,
        r##"<text x="{}" y="{}" text-anchor="middle" font-size="12" fill="#222">{}</text>"##,
        (LEFT + WIDTH - RIGHT) / 2.0,
        HEIGHT - 10.0,
        escape(&chart.x_label)
    );
    out.push_str("</svg>");
    out
}

/// A scatter plot as inline SVG: each point a circle with its label beside it.
pub fn scatter_chart(chart: &ScatterChart) -> String {
    let mut out = String::new();
    open_svg(&mut out, &chart.id, &chart.title, &chart.description);
    let frame = Frame {
        x: &chart.x,
        y: &chart.y,
    };
    axes(&mut out, &frame, true);
    let heaviest = chart
        .points
        .iter()
        .map(|(_, _, _, weight)| *weight)
        .fold(0.0f64, f64::max);
    let (colour, _, _) = STYLES[0];
    for (label, x, y, weight) in &chart.points {
        if !(x.is_finite() && y.is_finite()) {
            continue;
        }
        let radius = if heaviest > 0.0 {
            4.0 + 14.0 * (weight.max(0.0) / heaviest).sqrt()
        } else {
            6.0
        };
        let (cx, cy) = (frame.px(*x), frame.py(*y));
        let _ = write!(
            out,
            r##"<circle class="series point" cx="{cx:.1}" cy="{cy:.1}" r="{radius:.1}" fill="{colour}" fill-opacity="0.35" stroke="{colour}" stroke-width="1.5"><title>{}</title></circle><text x="{:.1}" y="{:.1}" font-size="12" fill="#222">{}</text>"##,
            escape(label),
            cx + radius + 3.0,
            cy + 4.0,
            escape(label)
        );
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_numbers_inside_the_axis() {
        assert_eq!(
            ticks(&Axis::unit("x")),
            vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]
        );
        let axis = Axis::fitted("lift", [0.2, 3.1]);
        let found = ticks(&axis);
        assert!(
            found
                .iter()
                .all(|tick| *tick >= axis.min && *tick <= axis.max)
        );
        assert!(found.len() >= 3);
    }

    #[test]
    fn a_line_chart_has_its_title_paths_and_band_and_escapes_names() {
        let chart = LineChart {
            id: "roc".to_owned(),
            title: "ROC <curve>".to_owned(),
            description: "TPR & FPR".to_owned(),
            x: Axis::unit("FPR"),
            y: Axis::unit("TPR"),
            series: vec![Series {
                name: "model \"a\"".to_owned(),
                points: vec![(0.0, 0.0), (0.5, f64::NAN), (0.5, 0.8), (1.0, 1.0)],
                band: vec![(0.0, 0.0, 0.0), (0.5, 0.7, 0.9), (1.0, 1.0, 1.0)],
            }],
            guide: Some(Guide::Diagonal("chance".to_owned())),
        };
        let svg = line_chart(&chart);
        assert!(svg.contains("<title id=\"roc-title\">ROC &lt;curve&gt;</title>"));
        assert!(svg.contains("<desc id=\"roc-desc\">TPR &amp; FPR</desc>"));
        assert!(svg.contains("class=\"band\""));
        assert!(svg.contains("data-series=\"model &quot;a&quot;\""));
        // The NaN point breaks the line: a second move command starts after it.
        let path = svg.split("class=\"series\"").nth(1).unwrap();
        let d = path
            .split("d=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(d.matches('M').count(), 2, "{d}");
        assert!(!svg.contains("NaN"));
    }
}
