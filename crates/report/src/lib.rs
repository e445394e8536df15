//! A job's report for the people who read it: one self-contained HTML file
//! (inline CSS and SVG charts, no script, no external asset) and the same
//! content as JSON, from a plain serialisable [`ReportInput`].
//!
//! This crate renders; it does not compute. The evaluation metrics and their
//! intervals come from `veil-scoring-evaluation`, the privacy spent from the
//! ledgers, the job and round facts from the coordinator's store (the
//! coordinator fills [`ReportInput`]). It reads no clock, file or network.
//!
//! Accessibility: every chart is an `<svg role="img">` with a title and a
//! description, followed by its data as a table with headers; series differ
//! by dash pattern and marker shape as well as colour.

#![forbid(unsafe_code)]

mod escape;
mod html;
mod input;
mod pca;
mod svg;

pub use escape::escape;
pub use input::{
    Detail, Evaluation, JobSummary, LifetimeValuePoint, PrivacyAudit, PrivacySpent, ReportInput,
    RoundMetrics, Rule, Segment, Segments,
};
pub use pca::project_to_plane;

use thiserror::Error;

/// A report that could not be written.
#[derive(Debug, Error)]
pub enum ReportError {
    /// The input could not be serialised as JSON.
    #[error("the report could not be written as JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// The report as one self-contained HTML document.
pub fn render_html(input: &ReportInput) -> String {
    html::render(input)
}

/// The report's content as pretty-printed JSON (the same [`ReportInput`]).
/// Numbers that are not finite (an R² of labels that do not vary) are written
/// as `null`.
pub fn render_json(input: &ReportInput) -> Result<String, ReportError> {
    Ok(serde_json::to_string_pretty(input)?)
}
