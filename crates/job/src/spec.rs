//! The validated job specification and its wire conversions.

use std::time::Duration;

use chrono::NaiveDate;
use thiserror::Error;
use veil_behaviour_features::{FeatureName, FeatureSpec, LabelSpec, TaskKind};
use veil_federation::secure::{DEFAULT_COLLUSION_FRACTION, DEFAULT_SECURITY_BITS};
use veil_federation::{
    AggregationMode, JobPlan, PhaseTimeouts, PlanError, SecureSettings, Strategy,
};
use veil_models::{ModelKind, ModelSpec, OptimizerKind, OutputKind, TrainingConfig};
use veil_wire::v1;

use crate::analysis::{Analysis, AnalysisContext};
use crate::privacy::PrivacySpec;
use crate::statistics;

/// Share of each partner's customers held out for evaluation when the job
/// file says nothing.
pub const DEFAULT_HOLDOUT_FRACTION: f64 = 0.2;

fn privacy_audit_from_wire(
    wire: Option<&v1::PrivacyAudit>,
) -> Result<Option<PrivacyAuditRequest>, JobSpecError> {
    let Some(wire) = wire else {
        return Ok(None);
    };
    let partner = wire.partner.trim().to_owned();
    if partner.is_empty() {
        return Err(invalid(
            "privacy_audit.partner",
            "must name the audited partner",
        ));
    }
    let commitment: [u8; 32] = wire.commitment.as_slice().try_into().map_err(|_| {
        invalid(
            "privacy_audit.commitment",
            format!("must be 32 bytes (SHA-256), got {}", wire.commitment.len()),
        )
    })?;
    Ok(Some(PrivacyAuditRequest {
        partner,
        commitment,
    }))
}

/// A job field that is missing or invalid, named as in the job file.
#[derive(Debug, Clone, Error, PartialEq)]
#[error("job field '{field}': {message}")]
pub struct JobSpecError {
    /// The field, dotted as in the job file (`task.kind`, `model.hidden`).
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> JobSpecError {
    JobSpecError {
        field,
        message: message.into(),
    }
}

/// How each node trains locally in one round.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalTraining {
    /// Passes over the local training split per round.
    pub local_epochs: usize,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Optimiser step size.
    pub learning_rate: f64,
    /// Local optimiser.
    pub optimizer: OptimizerKind,
}

/// A complete, validated training job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    /// Operator's name for the job.
    pub name: String,
    /// What is predicted, and the label window.
    pub label: LabelSpec,
    /// Which behaviour features feed the model.
    pub features: FeatureSpec,
    /// Model architecture.
    pub model: ModelKind,
    /// Local training settings.
    pub training: LocalTraining,
    /// Rounds after the feature-statistics round.
    pub rounds: u32,
    /// Minimum replies for a phase to proceed.
    pub min_participants: u32,
    /// Maximum nodes invited per phase.
    pub max_participants: u32,
    /// Per-phase deadlines.
    pub timeouts: PhaseTimeouts,
    /// Server-side aggregation strategy.
    pub strategy: Strategy,
    /// Fraction of each node's customers held out for evaluation.
    pub holdout_fraction: f64,
    /// Seed for the initial model and local shuffling.
    pub seed: u64,
    /// Secure (the default) or plain aggregation.
    pub aggregation: AggregationMode,
    /// Differential privacy: DP-SGD, partner-level noise and the budget.
    pub privacy: PrivacySpec,
    /// Set only by `coordinator audit privacy-test`: the partner whose node
    /// inserts canaries, and the commitment to the auditor's seed.
    pub privacy_audit: Option<PrivacyAuditRequest>,
    /// An analysis job (segments, RFM) instead of training: its releases
    /// replace the rounds, and `model` and `training` are unused.
    pub analysis: Option<Analysis>,
}

/// An auditor's privacy test of a job (docs/privacy-audit.md). The named
/// partner's node inserts canaries only when its policy allows audits and the
/// kit it holds hashes to `commitment`; every other node trains as usual.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivacyAuditRequest {
    /// The audited partner (its node id).
    pub partner: String,
    /// SHA-256 of the auditor's seed.
    pub commitment: [u8; 32],
}

impl JobSpec {
    /// The weight every partner's update carries when example counts may not
    /// be released (customer-level DP): the cap of secure aggregation, so the
    /// encoded update keeps its full precision; 1 with plain aggregation.
    pub fn uniform_weight(&self) -> f64 {
        match &self.aggregation {
            AggregationMode::Secure(settings) => settings.max_weight,
            AggregationMode::Plain => 1.0,
        }
    }

    /// The model as `veil-models` sees it.
    pub fn model_spec(&self) -> ModelSpec {
        ModelSpec {
            kind: self.model.clone(),
            n_inputs: self.features.n_features(),
            output: if self.label.task.is_regression() {
                OutputKind::Regression
            } else {
                OutputKind::Binary
            },
        }
    }

    /// The round plan for the coordinator's engine.
    pub fn plan(&self) -> JobPlan {
        if let Some(analysis) = &self.analysis {
            return JobPlan {
                rounds: self.rounds,
                min_participants: self.min_participants,
                max_participants: self.max_participants,
                timeouts: self.timeouts,
                strategy: Strategy::FedAvg,
                parameter_count: analysis.result_len(),
                feature_statistics_len: 0,
                train_statistics_len: 0,
                evaluate_statistics_len: 0,
                max_phase_attempts: 3,
                aggregation: self.aggregation.clone(),
                partner_privacy: self.privacy.partners,
                releases: analysis.release_lengths(),
            };
        }
        JobPlan {
            rounds: self.rounds,
            min_participants: self.min_participants,
            max_participants: self.max_participants,
            timeouts: self.timeouts,
            strategy: self.strategy,
            parameter_count: self.model_spec().parameter_count(),
            feature_statistics_len: statistics::feature_statistics_len(self.features.n_features()),
            train_statistics_len: statistics::TRAIN_STATISTICS_LEN,
            evaluate_statistics_len: statistics::evaluate_statistics_len(self.model_spec().output),
            max_phase_attempts: 3,
            aggregation: self.aggregation.clone(),
            partner_privacy: self.privacy.partners,
            releases: Vec::new(),
        }
    }

    /// The job's model before its first aggregation: a freshly initialised
    /// network from `seed`, or, for an analysis, zeros where its result will
    /// go (the result replaces them after the last release).
    pub fn initial_parameters(&self, seed: u64) -> Vec<f32> {
        match &self.analysis {
            Some(analysis) => vec![0.0; analysis.result_len()],
            None => self.model_spec().initial_parameters(seed),
        }
    }

    /// Local training settings for one round at one node.
    pub fn training_config(&self, round: u32, node_seed: u64) -> TrainingConfig {
        TrainingConfig {
            epochs: self.training.local_epochs,
            batch_size: self.training.batch_size,
            learning_rate: self.training.learning_rate,
            optimizer: self.training.optimizer,
            proximal_mu: self.strategy.proximal_mu(),
            seed: self.seed ^ node_seed ^ (u64::from(round) << 32),
        }
    }

    /// Validates a wire job spec; every error names the field.
    pub fn from_wire(wire: &v1::JobSpec) -> Result<Self, JobSpecError> {
        let name = wire.name.trim().to_owned();
        if name.is_empty() {
            return Err(invalid("name", "must not be empty"));
        }
        let task: TaskKind = wire
            .task
            .parse()
            .map_err(|e| invalid("task.kind", format!("{e}")))?;
        let cutoff = NaiveDate::parse_from_str(&wire.cutoff, "%Y-%m-%d").map_err(|_| {
            invalid(
                "task.cutoff",
                format!(
                    "'{}' is not a YYYY-MM-DD date (the last day of history; the label window starts the day after)",
                    wire.cutoff
                ),
            )
        })?;
        if wire.horizon_days == 0 {
            return Err(invalid("task.horizon_days", "must be at least 1"));
        }
        let names = if wire.features.is_empty() {
            FeatureName::ALL.to_vec()
        } else {
            wire.features
                .iter()
                .map(|name| {
                    name.parse::<FeatureName>()
                        .map_err(|e| invalid("features.names", format!("{e}")))
                })
                .collect::<Result<Vec<_>, _>>()?
        };
        if let Some(duplicate) = names
            .iter()
            .enumerate()
            .find(|(i, n)| names[..*i].contains(n))
        {
            return Err(invalid(
                "features.names",
                format!("'{}' is listed twice", duplicate.1.as_str()),
            ));
        }
        let recent_window_days = if wire.recent_window_days == 0 {
            30
        } else {
            wire.recent_window_days
        };
        let default_model = v1::ModelSpec {
            kind: "logistic_regression".to_owned(),
            hidden: Vec::new(),
        };
        // An analysis trains nothing: its model and training sections may be
        // left out, and are then the defaults (unused).
        let model_wire = match (&wire.model, &wire.analysis) {
            (Some(model), _) => model,
            (None, Some(_)) => &default_model,
            (None, None) => return Err(invalid("model", "is missing")),
        };
        let model = match model_wire.kind.as_str() {
            "logistic_regression" | "logistic" => {
                if !model_wire.hidden.is_empty() {
                    return Err(invalid(
                        "model.hidden",
                        "logistic regression has no hidden layers",
                    ));
                }
                ModelKind::LogisticRegression
            }
            "mlp" => {
                if model_wire.hidden.is_empty() {
                    return Err(invalid(
                        "model.hidden",
                        "an MLP needs at least one hidden layer",
                    ));
                }
                ModelKind::Mlp {
                    hidden: model_wire.hidden.iter().map(|h| *h as usize).collect(),
                }
            }
            other => {
                return Err(invalid(
                    "model.kind",
                    format!("unknown model '{other}'; expected logistic_regression or mlp"),
                ));
            }
        };
        let default_training = v1::TrainingSpec {
            local_epochs: 1,
            batch_size: 32,
            learning_rate: 0.1,
            optimizer: "sgd".to_owned(),
        };
        let training_wire = match (&wire.training, &wire.analysis) {
            (Some(training), _) => training,
            (None, Some(_)) => &default_training,
            (None, None) => return Err(invalid("training", "is missing")),
        };
        let optimizer = match training_wire.optimizer.as_str() {
            "sgd" => OptimizerKind::Sgd,
            "adam" | "" => OptimizerKind::Adam,
            other => {
                return Err(invalid(
                    "training.optimizer",
                    format!("unknown optimizer '{other}'; expected sgd or adam"),
                ));
            }
        };
        if training_wire.local_epochs == 0 {
            return Err(invalid("training.local_epochs", "must be at least 1"));
        }
        if training_wire.batch_size == 0 {
            return Err(invalid("training.batch_size", "must be at least 1"));
        }
        if !(training_wire.learning_rate.is_finite() && training_wire.learning_rate > 0.0) {
            return Err(invalid(
                "training.learning_rate",
                "must be a positive number",
            ));
        }
        let timeouts_wire = wire.timeouts.unwrap_or_default();
        let timeout = |ms: u32, default_secs: u64| {
            if ms == 0 {
                Duration::from_secs(default_secs)
            } else {
                Duration::from_millis(u64::from(ms))
            }
        };
        let timeouts = PhaseTimeouts {
            feature_stats: timeout(timeouts_wire.feature_stats_ms, 60),
            train: timeout(timeouts_wire.train_ms, 600),
            evaluate: timeout(timeouts_wire.evaluate_ms, 60),
            wait_for_nodes: timeout(
                timeouts_wire.wait_for_nodes_ms,
                veil_federation::DEFAULT_WAIT_FOR_NODES.as_secs(),
            ),
        };
        let strategy = strategy_from_wire(wire.strategy.as_ref())?;
        // Absent means the default; 0 means no holdout (a partner that
        // keeps its own evaluation set trains on every customer).
        let holdout_fraction = wire.holdout_fraction.unwrap_or(DEFAULT_HOLDOUT_FRACTION);
        if !(0.0..1.0).contains(&holdout_fraction) {
            return Err(invalid(
                "holdout_fraction",
                "must be at least 0 (no holdout) and below 1",
            ));
        }
        let aggregation = aggregation_from_wire(wire.aggregation.as_ref(), &name, wire.seed)?;
        let max_weight = match &aggregation {
            AggregationMode::Secure(settings) => settings.max_weight,
            AggregationMode::Plain => wire
                .aggregation
                .as_ref()
                .map(|a| a.max_weight)
                .filter(|&w| w != 0.0)
                .unwrap_or(DEFAULT_MAX_WEIGHT),
        };
        let mut privacy = PrivacySpec::from_wire(wire.privacy.as_ref(), &aggregation, max_weight)?;
        let features = FeatureSpec {
            features: names,
            recent_window_days,
        };
        let analysis = match &wire.analysis {
            None => None,
            Some(analysis_wire) => {
                if privacy.customers.is_none() {
                    return Err(invalid(
                        "privacy.customers",
                        "an analysis releases only noised sums; it needs customer-level DP (leave privacy.customers at its default)",
                    ));
                }
                if wire.privacy_audit.is_some() {
                    return Err(invalid(
                        "privacy_audit",
                        "privacy tests audit training jobs; an analysis has no model to attack",
                    ));
                }
                let partners = wire.privacy.as_ref().map_or("", |p| p.partners.as_str());
                if !matches!(partners, "" | "off") {
                    return Err(invalid(
                        "privacy.partners",
                        "an analysis is protected at the customer level only; say partners = \"off\" or leave it out",
                    ));
                }
                privacy.partners = veil_federation::PartnerPrivacy::Off;
                Some(Analysis::from_wire(
                    analysis_wire,
                    AnalysisContext {
                        n_features: features.n_features(),
                        has_binary_label: !task.is_regression(),
                        epsilon: privacy.customer_epsilon,
                        delta: privacy.delta,
                        aggregation: &aggregation,
                        min_participants: wire.min_participants,
                    },
                )?)
            }
        };
        // An analysis runs one round per release.
        let rounds = match &analysis {
            Some(analysis) => analysis.release_lengths().len() as u32,
            None => wire.rounds,
        };
        let spec = JobSpec {
            name,
            label: LabelSpec {
                task,
                cutoff,
                horizon_days: wire.horizon_days,
            },
            features,
            model,
            training: LocalTraining {
                local_epochs: training_wire.local_epochs as usize,
                batch_size: training_wire.batch_size as usize,
                learning_rate: training_wire.learning_rate,
                optimizer,
            },
            rounds,
            min_participants: wire.min_participants,
            max_participants: wire.max_participants,
            timeouts,
            strategy,
            holdout_fraction,
            seed: wire.seed,
            aggregation,
            privacy,
            privacy_audit: privacy_audit_from_wire(wire.privacy_audit.as_ref())?,
            analysis,
        };
        spec.model_spec()
            .validate()
            .map_err(|e| invalid("model", e.to_string()))?;
        spec.plan().validate().map_err(|error| match error {
            PlanError::SecureParameter {
                field: "min_participants",
                ..
            } => invalid("min_participants", error.to_string()),
            PlanError::SecureParameter { field, .. } => {
                invalid(secure_field_name(field), error.to_string())
            }
            PlanError::PartnerPrivacy(_) => invalid("privacy.partners", error.to_string()),
            other => invalid("plan", other.to_string()),
        })?;
        Ok(spec)
    }

    /// The wire form; `from_wire(to_wire(spec)) == spec`.
    pub fn to_wire(&self) -> v1::JobSpec {
        let (model_kind, hidden) = match &self.model {
            ModelKind::LogisticRegression => ("logistic_regression", Vec::new()),
            ModelKind::Mlp { hidden } => ("mlp", hidden.iter().map(|h| *h as u32).collect()),
        };
        let millis = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        let (kind, proximal_mu, server_learning_rate, beta1, beta2, tau) = match self.strategy {
            Strategy::FedAvg => ("fedavg", 0.0, 0.0, 0.0, 0.0, 0.0),
            Strategy::FedProx { proximal_mu } => ("fedprox", proximal_mu, 0.0, 0.0, 0.0, 0.0),
            Strategy::FedAdam {
                server_learning_rate,
                beta1,
                beta2,
                tau,
            } => ("fedadam", 0.0, server_learning_rate, beta1, beta2, tau),
        };
        v1::JobSpec {
            name: self.name.clone(),
            task: self.label.task.as_str().to_owned(),
            cutoff: self.label.cutoff.format("%Y-%m-%d").to_string(),
            horizon_days: self.label.horizon_days,
            features: self
                .features
                .features
                .iter()
                .map(|f| f.as_str().to_owned())
                .collect(),
            recent_window_days: self.features.recent_window_days,
            model: Some(v1::ModelSpec {
                kind: model_kind.to_owned(),
                hidden,
            }),
            training: Some(v1::TrainingSpec {
                local_epochs: self.training.local_epochs as u32,
                batch_size: self.training.batch_size as u32,
                learning_rate: self.training.learning_rate,
                optimizer: match self.training.optimizer {
                    OptimizerKind::Sgd => "sgd",
                    OptimizerKind::Adam => "adam",
                }
                .to_owned(),
            }),
            rounds: self.rounds,
            min_participants: self.min_participants,
            max_participants: self.max_participants,
            timeouts: Some(v1::PhaseTimeouts {
                feature_stats_ms: millis(self.timeouts.feature_stats),
                train_ms: millis(self.timeouts.train),
                evaluate_ms: millis(self.timeouts.evaluate),
                wait_for_nodes_ms: millis(self.timeouts.wait_for_nodes),
            }),
            strategy: Some(v1::Strategy {
                kind: kind.to_owned(),
                proximal_mu,
                server_learning_rate,
                beta1,
                beta2,
                tau,
            }),
            holdout_fraction: Some(self.holdout_fraction),
            seed: self.seed,
            aggregation: Some(match &self.aggregation {
                AggregationMode::Plain => v1::Aggregation {
                    mode: "plain".to_owned(),
                    max_weight: match self.privacy.partners {
                        veil_federation::PartnerPrivacy::Central { max_weight, .. } => max_weight,
                        _ => 0.0,
                    },
                    ..Default::default()
                },
                AggregationMode::Secure(settings) => v1::Aggregation {
                    mode: "secure".to_owned(),
                    clip_range: f64::from(settings.clip_range),
                    modulus_bits: settings.modulus_bits,
                    max_weight: settings.max_weight,
                    dropout_rate: settings.dropout_rate,
                    step_timeout_ms: millis(settings.step_timeout),
                    collusion_fraction: settings.collusion_fraction,
                    security_bits: settings.security_bits,
                },
            }),
            privacy: Some(self.privacy.to_wire()),
            privacy_audit: self.privacy_audit.as_ref().map(|audit| v1::PrivacyAudit {
                partner: audit.partner.clone(),
                commitment: audit.commitment.to_vec(),
            }),
            analysis: self.analysis.as_ref().map(Analysis::to_wire),
        }
    }
}

/// The coordinator's half of an analysis job: each release's parameters and
/// the result, derived from the released sums in the public scaling.
impl veil_federation::ReleaseDirector for JobSpec {
    fn release_parameters(&self, index: usize, released: &[&[f64]]) -> Result<Vec<f64>, String> {
        let analysis = self
            .analysis
            .as_ref()
            .ok_or("a training job has no releases")?;
        analysis.release_parameters(index, released, &self.features.public_scaling(), self.seed)
    }

    fn result_parameters(&self, released: &[&[f64]]) -> Result<Vec<f32>, String> {
        let analysis = self
            .analysis
            .as_ref()
            .ok_or("a training job has no releases")?;
        Ok(analysis
            .outcome(released, &self.features.public_scaling(), self.seed)?
            .result_parameters())
    }
}

/// Default per-coordinate clip of weight-normalised deltas: local training
/// moves a parameter by far less than 1 per round at the learning rates Veil
/// accepts, and the encoding's resolution is 2 * clip / 2^value_bits.
pub const DEFAULT_CLIP_RANGE: f32 = 1.0;
/// Default modulus: 32 bits, one `u32` per parameter on the wire.
pub const DEFAULT_MODULUS_BITS: u32 = 32;
/// Default weight cap: above the largest partner's training split in the
/// intended deployments; larger partners are weighted as if this size.
pub const DEFAULT_MAX_WEIGHT: f64 = 100_000.0;
/// Default expected dropout fraction.
pub const DEFAULT_DROPOUT_RATE: f64 = 0.1;
/// Default deadline of each protocol step after the first.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(30);

fn aggregation_from_wire(
    wire: Option<&v1::Aggregation>,
    name: &str,
    seed: u64,
) -> Result<AggregationMode, JobSpecError> {
    let default = v1::Aggregation::default();
    let wire = wire.unwrap_or(&default);
    match wire.mode.as_str() {
        "plain" => Ok(AggregationMode::Plain),
        "secure" | "" => {
            let or = |value: f64, default: f64| if value == 0.0 { default } else { value };
            let settings = SecureSettings {
                clip_range: or(wire.clip_range, f64::from(DEFAULT_CLIP_RANGE)) as f32,
                modulus_bits: if wire.modulus_bits == 0 {
                    DEFAULT_MODULUS_BITS
                } else {
                    wire.modulus_bits
                },
                max_weight: or(wire.max_weight, DEFAULT_MAX_WEIGHT),
                dropout_rate: or(wire.dropout_rate, DEFAULT_DROPOUT_RATE),
                step_timeout: if wire.step_timeout_ms == 0 {
                    DEFAULT_STEP_TIMEOUT
                } else {
                    Duration::from_millis(u64::from(wire.step_timeout_ms))
                },
                graph_seed: graph_seed(name, seed),
                collusion_fraction: or(wire.collusion_fraction, DEFAULT_COLLUSION_FRACTION),
                security_bits: if wire.security_bits == 0 {
                    DEFAULT_SECURITY_BITS
                } else {
                    wire.security_bits
                },
            };
            Ok(AggregationMode::Secure(settings))
        }
        other => Err(invalid(
            "aggregation.mode",
            format!("unknown mode '{other}'; expected secure or plain"),
        )),
    }
}

/// The job-file name of a secure-aggregation plan field.
fn secure_field_name(field: &str) -> &'static str {
    match field {
        "clip_range" => "aggregation.clip_range",
        "modulus_bits" => "aggregation.modulus_bits",
        "max_weight" => "aggregation.max_weight",
        "dropout_rate" => "aggregation.dropout_rate",
        "step_timeout_ms" => "aggregation.step_timeout_secs",
        "collusion_fraction" => "aggregation.collusion_fraction",
        "security_bits" => "aggregation.security_bits",
        _ => "aggregation",
    }
}

/// The job's public neighbour-graph seed. It is fixed by what the operator
/// submits, before any cohort exists, and every node can recompute it.
fn graph_seed(name: &str, seed: u64) -> [u8; 32] {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(b"veil job graph seed v1");
    context.update(&seed.to_le_bytes());
    context.update(name.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

fn strategy_from_wire(wire: Option<&v1::Strategy>) -> Result<Strategy, JobSpecError> {
    let Some(wire) = wire else {
        return Ok(Strategy::FedAvg);
    };
    let or = |value: f64, default: f64| if value == 0.0 { default } else { value };
    match wire.kind.as_str() {
        "fedavg" | "" => Ok(Strategy::FedAvg),
        "fedprox" => Ok(Strategy::FedProx {
            proximal_mu: or(wire.proximal_mu, 0.01),
        }),
        "fedadam" => Ok(Strategy::FedAdam {
            server_learning_rate: or(wire.server_learning_rate, 0.01),
            beta1: or(wire.beta1, 0.9),
            beta2: or(wire.beta2, 0.99),
            tau: or(wire.tau, 1e-3),
        }),
        other => Err(invalid(
            "strategy.kind",
            format!("unknown strategy '{other}'; expected fedavg, fedprox or fedadam"),
        )),
    }
}
