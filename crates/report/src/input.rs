//! The report's input: a plain serialisable description of one job, filled
//! by whoever holds the job's state (the coordinator), so rendering needs no
//! store, clock or network.

use serde::{Deserialize, Serialize};
use veil_scoring_evaluation::{BinaryEvaluation, Estimate, RegressionEvaluation};

/// Everything the report shows about one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportInput {
    /// The job's summary.
    pub job: JobSummary,
    /// When the report was made, as the caller formats it (the renderer reads no clock).
    pub generated_at: String,
    /// Things the reader must know that have no section, e.g. why the
    /// evaluation is missing.
    #[serde(default)]
    pub notes: Vec<String>,
    /// Privacy spent, one row per partner and privacy unit.
    #[serde(default)]
    pub privacy: Vec<PrivacySpent>,
    /// Metrics of each completed round, in round order.
    #[serde(default)]
    pub rounds: Vec<RoundMetrics>,
    /// The final model's evaluation, for scoring jobs.
    #[serde(default)]
    pub evaluation: Option<Evaluation>,
    /// The segment profile of each fitted k, for segmentation jobs.
    #[serde(default)]
    pub segments: Vec<Segments>,
    /// Association rules, for rule-mining jobs.
    #[serde(default)]
    pub rules: Option<Vec<Rule>>,
    /// Lifetime-value calibration, for lifetime-value jobs.
    #[serde(default)]
    pub lifetime_value: Option<Vec<LifetimeValuePoint>>,
    /// Empirical privacy tests of the job, as the audit log records them.
    #[serde(default)]
    pub privacy_audits: Vec<PrivacyAudit>,
}

/// One attack of an auditor's empirical privacy test (docs/privacy-audit.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrivacyAudit {
    /// The audited partner.
    pub partner: String,
    /// The attack, e.g. "black-box-loss".
    pub attack: String,
    /// Canaries randomised.
    pub canaries: u64,
    /// Guesses made and how many were correct.
    pub guesses: u64,
    /// Correct guesses.
    pub correct: u64,
    /// Confidence of the bounds.
    pub confidence: f64,
    /// δ of the bounds.
    pub delta: f64,
    /// The one-run lower bound on ε.
    pub epsilon_lower: f64,
    /// The Gaussian f-DP refinement.
    pub epsilon_lower_gaussian: f64,
    /// The accountant's ε, when the job has one.
    #[serde(default)]
    pub epsilon_upper: Option<f64>,
}

impl PrivacyAudit {
    /// Whether a lower bound exceeds the accountant's upper bound: a bug.
    pub fn bound_violated(&self) -> bool {
        self.epsilon_upper
            .is_some_and(|upper| self.epsilon_lower.max(self.epsilon_lower_gaussian) > upper)
    }
}

/// What the job was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSummary {
    /// The job's id.
    pub job_id: String,
    /// Its kind, e.g. "churn score (binary)".
    pub kind: String,
    /// Its state, e.g. "succeeded".
    pub state: String,
    /// Further facts in display order, e.g. ("rounds", "12").
    #[serde(default)]
    pub details: Vec<Detail>,
}

/// One named fact about the job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detail {
    /// What it is.
    pub name: String,
    /// Its value, already formatted.
    pub value: String,
}

/// Privacy one partner spent on the job in one unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrivacySpent {
    /// The partner.
    pub partner: String,
    /// Whom the guarantee protects: "customer" or "partner".
    pub unit: String,
    /// The mechanism and trust model, e.g. "DP-SGD (local), Gaussian".
    pub mechanism: String,
    /// ε spent.
    pub epsilon: f64,
    /// δ of that ε.
    pub delta: f64,
    /// The partner's ε budget for the job, when it has one.
    #[serde(default)]
    pub budget_epsilon: Option<f64>,
}

/// One round's metrics; a metric the round did not release is `None`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundMetrics {
    /// Round number, from 1.
    pub round: u32,
    /// Partners whose update is in the round's model.
    pub participants: u32,
    /// Mean training loss.
    #[serde(default)]
    pub training_loss: Option<f64>,
    /// Mean loss on held-out customers.
    #[serde(default)]
    pub evaluation_loss: Option<f64>,
    /// AUC on held-out customers.
    #[serde(default)]
    pub auc: Option<f64>,
    /// RMSE on held-out customers.
    #[serde(default)]
    pub rmse: Option<f64>,
}

/// The final model's evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Evaluation {
    /// A churn or propensity score.
    Binary(BinaryEvaluation),
    /// A spend model.
    Regression(RegressionEvaluation),
}

/// A segmentation's profile at one k.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segments {
    /// Number of segments.
    pub k: usize,
    /// The released (noised) k-means cost at this k, for the elbow chart.
    #[serde(default)]
    pub cost: Option<f64>,
    /// Feature names, in the centroids' order.
    pub features: Vec<String>,
    /// Whether sizes and means are noised (said in the section's text).
    pub noised: bool,
    /// One entry per segment.
    pub segments: Vec<Segment>,
}

/// One segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// Its name, e.g. "at risk, high value" or "segment 3".
    pub name: String,
    /// Customers in it.
    pub size: f64,
    /// Mean of each feature, in original units.
    pub centroid: Vec<f64>,
    /// Share of its customers with the job's label, when the job has one.
    #[serde(default)]
    pub label_rate: Option<f64>,
}

/// One association rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// Items on the left, e.g. "bought A, bought B".
    pub antecedent: String,
    /// Item on the right.
    pub consequent: String,
    /// Share of customers with all items, with its 95% interval (DP noise
    /// included), as are the two below.
    pub support: Estimate,
    /// Share of customers with the antecedent that also have the consequent.
    pub confidence: Estimate,
    /// Confidence over the consequent's overall rate.
    pub lift: Estimate,
}

/// Customers with the same number of purchases in the calibration period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LifetimeValuePoint {
    /// Purchases in the calibration period.
    pub calibration_purchases: u32,
    /// Customers with that many.
    pub customers: f64,
    /// Their mean purchases in the hold-out period.
    pub mean_actual: f64,
    /// The model's mean prediction for them.
    pub mean_predicted: f64,
}
