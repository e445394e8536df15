//! The operator's job file (TOML) and its translation to the wire spec.
//!
//! Omitted fields take documented defaults; validation happens once, in
//! [`crate::JobSpec::from_wire`], for files and wire messages alike.

use serde::Deserialize;
use veil_wire::v1;

/// A job file as written by an operator.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFile {
    /// Job name.
    pub name: String,
    /// Training rounds (an analysis runs one round per release and leaves
    /// this out).
    #[serde(default)]
    pub rounds: u32,
    /// Minimum replies per phase.
    pub min_participants: u32,
    /// Maximum invitees per phase.
    pub max_participants: u32,
    /// Held-out fraction per node (default 0.2).
    #[serde(default)]
    pub holdout_fraction: Option<f64>,
    /// Seed for the initial model and shuffling (default 0).
    #[serde(default)]
    pub seed: u64,
    /// The label.
    pub task: TaskSection,
    /// The features (default: all, 30-day window).
    #[serde(default)]
    pub features: FeaturesSection,
    /// The model (required for training; an analysis has none).
    #[serde(default)]
    pub model: Option<ModelSection>,
    /// Local training (required for training; an analysis has none).
    #[serde(default)]
    pub training: Option<TrainingSection>,
    /// Aggregation strategy (default fedavg).
    #[serde(default)]
    pub strategy: StrategySection,
    /// Phase deadlines (defaults 60 s, 600 s, 60 s).
    #[serde(default)]
    pub timeouts: TimeoutsSection,
    /// Aggregation mode and its parameters.
    #[serde(default)]
    pub aggregation: AggregationSection,
    /// Differential privacy and the job's budget.
    #[serde(default)]
    pub privacy: PrivacySection,
    /// A segmentation job instead of training (docs/segments.md).
    #[serde(default)]
    pub segment: Option<SegmentSection>,
    /// An RFM job instead of training (docs/segments.md).
    #[serde(default)]
    pub rfm: Option<RfmSection>,
    /// A lifetime-value job instead of training (docs/lifetime-value.md).
    #[serde(default)]
    pub lifetime_value: Option<LifetimeValueSection>,
    /// A basket-rules job instead of training (docs/basket-rules.md).
    #[serde(default)]
    pub basket_rules: Option<BasketRulesSection>,
}

/// `[lifetime_value]`: BG/NBD and Gamma-Gamma from one noised histogram;
/// omitted settings take the defaults of `veil_job::lifetime_analysis`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifetimeValueSection {
    /// The public range of a customer's mean spend per repeat purchase.
    pub min_spend: f64,
    /// Its upper end.
    pub max_spend: f64,
    /// Days after the cutoff whose purchases check the fit.
    #[serde(default)]
    pub holdout_days: Option<u32>,
    /// The calibration window the age bins cover, in days.
    #[serde(default)]
    pub window_days: Option<u32>,
    /// Age and recency bins over the window.
    #[serde(default)]
    pub age_bins: Option<u32>,
    /// Log-spaced mean-spend bins.
    #[serde(default)]
    pub spend_bins: Option<u32>,
}

/// `[basket_rules]`: cross-sell rules over a declared item vocabulary;
/// omitted settings take the defaults of `veil_job::basket_analysis`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasketRulesSection {
    /// The public item vocabulary (category names), in id order.
    pub items: Vec<String>,
    /// An itemset is frequent when its noised share of baskets is at least this.
    pub min_support: f64,
    /// Rules keep a noised confidence of at least this.
    #[serde(default)]
    pub min_confidence: f64,
    /// Largest itemset mined (one release per level).
    #[serde(default)]
    pub max_itemset_size: Option<u32>,
    /// Itemsets one customer adds per level: one value, or one per level.
    #[serde(default)]
    pub itemset_caps: Vec<u32>,
    /// Candidate slots of each level after the first.
    #[serde(default)]
    pub max_candidates: Option<u32>,
    /// `"customer"` (one basket per customer over the window, the default)
    /// or `"day"` (one per purchase day).
    #[serde(default)]
    pub baskets: Option<String>,
    /// With `baskets = "day"`: a customer's most recent days counted.
    #[serde(default)]
    pub max_days_per_customer: Option<u32>,
    /// Baskets hold the purchases of this many days up to the cutoff.
    #[serde(default)]
    pub window_days: Option<u32>,
    /// Rules kept, highest lift first.
    #[serde(default)]
    pub top_n: Option<u32>,
}

/// `[segment]`: federated DP k-means; omitted settings take the defaults
/// of `veil_job::analysis`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentSection {
    /// The numbers of segments to fit (one or more; each gets its noised cost).
    pub k: Vec<u32>,
    /// Lloyd steps per k.
    #[serde(default)]
    pub iterations: Option<u32>,
    /// ℓ2 clip of a customer's offset from its centroid, in scaled units.
    #[serde(default)]
    pub radius: Option<f64>,
    /// Share of the noised mean offset a centroid moves by, in (0, 1].
    #[serde(default)]
    pub damping: Option<f64>,
    /// Public cells of the DP seeding histogram.
    #[serde(default)]
    pub seeding_cells: Option<u32>,
    /// Offset clip of the seeding histogram.
    #[serde(default)]
    pub seeding_radius: Option<f64>,
    /// Clamp of scaled features.
    #[serde(default)]
    pub box_bound: Option<f64>,
    /// Cap of a customer's distance in the released cost.
    #[serde(default)]
    pub cost_bound: Option<f64>,
    /// Whether each segment reports the rate of the task's label.
    #[serde(default)]
    pub with_label: bool,
}

/// `[rfm]`: public bin edges of each field; omitted ones are the standard bins.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RfmSection {
    /// Recency edges, in days.
    #[serde(default)]
    pub recency_edges: Vec<f64>,
    /// Frequency edges, in purchases.
    #[serde(default)]
    pub frequency_edges: Vec<f64>,
    /// Monetary edges, in currency units.
    #[serde(default)]
    pub monetary_edges: Vec<f64>,
}

/// `[privacy]`: DP-SGD for customers and distributed noise for partners by
/// default; see docs/differential-privacy.md.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacySection {
    /// "dp-sgd" (default) or "off".
    #[serde(default)]
    pub customers: Option<String>,
    /// DP-SGD σ.
    #[serde(default)]
    pub customer_noise_multiplier: Option<f64>,
    /// DP-SGD per-customer clip norm.
    #[serde(default)]
    pub customer_clip_norm: Option<f64>,
    /// DP-SGD Poisson sampling rate.
    #[serde(default)]
    pub customer_sampling_rate: Option<f64>,
    /// "distributed" (default with secure aggregation), "central" or "off".
    #[serde(default)]
    pub partners: Option<String>,
    /// Partner-level noise multiplier z.
    #[serde(default)]
    pub partner_noise_multiplier: Option<f64>,
    /// ℓ2 bound of each weight-normalised update.
    #[serde(default)]
    pub update_clip_norm: Option<f64>,
    /// δ of every ε.
    #[serde(default)]
    pub delta: Option<f64>,
    /// Customer-level ε budget per partner for the job.
    #[serde(default)]
    pub customer_epsilon: Option<f64>,
    /// Partner-level ε budget per partner for the job.
    #[serde(default)]
    pub partner_epsilon: Option<f64>,
    /// Noise multiplier of the released statistics (with DP-SGD).
    #[serde(default)]
    pub statistics_noise_multiplier: Option<f64>,
    /// Clamp of regression labels and predictions in the released evaluation.
    #[serde(default)]
    pub statistics_value_bound: Option<f64>,
}

/// `[task]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSection {
    /// churn, propensity or spend.
    pub kind: String,
    /// YYYY-MM-DD: the LAST day of history. Features see transactions on or
    /// before this day; the label window is the `horizon_days` after it.
    pub cutoff: String,
    /// Label window after the cutoff.
    pub horizon_days: u32,
}

/// `[features]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeaturesSection {
    /// Feature names; empty means all.
    #[serde(default)]
    pub names: Vec<String>,
    /// Recent-activity window in days.
    #[serde(default)]
    pub recent_window_days: Option<u32>,
}

/// `[model]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// logistic_regression or mlp.
    pub kind: String,
    /// Hidden layer sizes of an MLP.
    #[serde(default)]
    pub hidden: Vec<u32>,
}

/// `[training]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingSection {
    /// Local epochs per round.
    pub local_epochs: u32,
    /// Batch size.
    pub batch_size: u32,
    /// Learning rate.
    pub learning_rate: f64,
    /// sgd or adam.
    #[serde(default)]
    pub optimizer: Option<String>,
}

/// `[strategy]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StrategySection {
    /// fedavg, fedprox or fedadam.
    #[serde(default)]
    pub kind: Option<String>,
    /// FedProx mu.
    #[serde(default)]
    pub proximal_mu: Option<f64>,
    /// FedAdam step size.
    #[serde(default)]
    pub server_learning_rate: Option<f64>,
    /// FedAdam beta1.
    #[serde(default)]
    pub beta1: Option<f64>,
    /// FedAdam beta2.
    #[serde(default)]
    pub beta2: Option<f64>,
    /// FedAdam tau.
    #[serde(default)]
    pub tau: Option<f64>,
}

/// `[aggregation]`: secure by default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregationSection {
    /// "secure" (default) or "plain".
    #[serde(default)]
    pub mode: Option<String>,
    /// Per-coordinate clip of weight-normalised deltas.
    #[serde(default)]
    pub clip_range: Option<f64>,
    /// Bits of the secure-aggregation modulus.
    #[serde(default)]
    pub modulus_bits: Option<u32>,
    /// Example-count cap when weighting updates.
    #[serde(default)]
    pub max_weight: Option<f64>,
    /// Expected dropout fraction.
    #[serde(default)]
    pub dropout_rate: Option<f64>,
    /// Deadline of each protocol step after the first, in seconds.
    #[serde(default)]
    pub step_timeout_secs: Option<f64>,
    /// Fraction of each cohort that may collude with the coordinator.
    #[serde(default)]
    pub collusion_fraction: Option<f64>,
    /// Security parameter s (bits) of sparse SecAgg+ graphs.
    #[serde(default)]
    pub security_bits: Option<u32>,
}

/// `[timeouts]`, in seconds.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsSection {
    /// Feature-statistics phase.
    #[serde(default)]
    pub feature_stats_secs: Option<f64>,
    /// Training phase.
    #[serde(default)]
    pub train_secs: Option<f64>,
    /// Evaluation phase.
    #[serde(default)]
    pub evaluate_secs: Option<f64>,
    /// How long the job waits for enough nodes before it fails (default
    /// 600).
    #[serde(default)]
    pub wait_for_nodes_secs: Option<f64>,
}

impl JobFile {
    /// Parses TOML text; the error names the line and field.
    pub fn parse(text: &str) -> Result<Self, toml::de::Error> {
        let file: Self = toml::from_str(text)?;
        let analyses = [
            file.segment.is_some(),
            file.rfm.is_some(),
            file.lifetime_value.is_some(),
            file.basket_rules.is_some(),
        ];
        if analyses.into_iter().filter(|&given| given).count() > 1 {
            return Err(<toml::de::Error as serde::de::Error>::custom(
                "a job is one analysis: give only one of [segment], [rfm], [lifetime_value] and [basket_rules]",
            ));
        }
        if let Some(baskets) = file
            .basket_rules
            .as_ref()
            .and_then(|rules| rules.baskets.as_deref())
            && !matches!(baskets, "customer" | "day")
        {
            return Err(<toml::de::Error as serde::de::Error>::custom(format!(
                "basket_rules.baskets is \"customer\" or \"day\", not {baskets:?}"
            )));
        }
        Ok(file)
    }

    /// The `[model]` section, to edit a job in code; an analysis file gets
    /// a logistic regression to edit.
    pub fn model_mut(&mut self) -> &mut ModelSection {
        self.model.get_or_insert_with(|| ModelSection {
            kind: "logistic_regression".to_owned(),
            hidden: Vec::new(),
        })
    }

    /// The `[training]` section, to edit a job in code; an analysis file
    /// gets one epoch of plain SGD to edit.
    pub fn training_mut(&mut self) -> &mut TrainingSection {
        self.training.get_or_insert_with(|| TrainingSection {
            local_epochs: 1,
            batch_size: 32,
            learning_rate: 0.1,
            optimizer: None,
        })
    }

    /// The wire spec this file describes (not yet validated).
    pub fn to_wire(&self) -> v1::JobSpec {
        let millis = |secs: Option<f64>| {
            secs.map_or(0, |s| (s * 1000.0).clamp(1.0, f64::from(u32::MAX)) as u32)
        };
        v1::JobSpec {
            name: self.name.clone(),
            task: self.task.kind.clone(),
            cutoff: self.task.cutoff.clone(),
            horizon_days: self.task.horizon_days,
            features: self.features.names.clone(),
            recent_window_days: self.features.recent_window_days.unwrap_or(0),
            model: self.model.as_ref().map(|model| v1::ModelSpec {
                kind: model.kind.clone(),
                hidden: model.hidden.clone(),
            }),
            training: self.training.as_ref().map(|training| v1::TrainingSpec {
                local_epochs: training.local_epochs,
                batch_size: training.batch_size,
                learning_rate: training.learning_rate,
                optimizer: training.optimizer.clone().unwrap_or_default(),
            }),
            rounds: self.rounds,
            min_participants: self.min_participants,
            max_participants: self.max_participants,
            timeouts: Some(v1::PhaseTimeouts {
                feature_stats_ms: millis(self.timeouts.feature_stats_secs),
                train_ms: millis(self.timeouts.train_secs),
                evaluate_ms: millis(self.timeouts.evaluate_secs),
                wait_for_nodes_ms: millis(self.timeouts.wait_for_nodes_secs),
            }),
            strategy: Some(v1::Strategy {
                kind: self.strategy.kind.clone().unwrap_or_default(),
                proximal_mu: self.strategy.proximal_mu.unwrap_or(0.0),
                server_learning_rate: self.strategy.server_learning_rate.unwrap_or(0.0),
                beta1: self.strategy.beta1.unwrap_or(0.0),
                beta2: self.strategy.beta2.unwrap_or(0.0),
                tau: self.strategy.tau.unwrap_or(0.0),
            }),
            holdout_fraction: self.holdout_fraction,
            seed: self.seed,
            aggregation: Some(v1::Aggregation {
                mode: self.aggregation.mode.clone().unwrap_or_default(),
                clip_range: self.aggregation.clip_range.unwrap_or(0.0),
                modulus_bits: self.aggregation.modulus_bits.unwrap_or(0),
                max_weight: self.aggregation.max_weight.unwrap_or(0.0),
                dropout_rate: self.aggregation.dropout_rate.unwrap_or(0.0),
                step_timeout_ms: millis(self.aggregation.step_timeout_secs),
                collusion_fraction: self.aggregation.collusion_fraction.unwrap_or(0.0),
                security_bits: self.aggregation.security_bits.unwrap_or(0),
            }),
            privacy: Some(v1::Privacy {
                customers: self.privacy.customers.clone().unwrap_or_default(),
                customer_noise_multiplier: self.privacy.customer_noise_multiplier.unwrap_or(0.0),
                customer_clip_norm: self.privacy.customer_clip_norm.unwrap_or(0.0),
                customer_sampling_rate: self.privacy.customer_sampling_rate.unwrap_or(0.0),
                partners: self.privacy.partners.clone().unwrap_or_default(),
                partner_noise_multiplier: self.privacy.partner_noise_multiplier.unwrap_or(0.0),
                update_clip_norm: self.privacy.update_clip_norm.unwrap_or(0.0),
                delta: self.privacy.delta.unwrap_or(0.0),
                customer_epsilon: self.privacy.customer_epsilon.unwrap_or(0.0),
                partner_epsilon: self.privacy.partner_epsilon.unwrap_or(0.0),
                statistics_noise_multiplier: self
                    .privacy
                    .statistics_noise_multiplier
                    .unwrap_or(0.0),
                statistics_value_bound: self.privacy.statistics_value_bound.unwrap_or(0.0),
            }),
            // A job file never names canaries: only `coordinator audit privacy-test` does.
            privacy_audit: None,
            analysis: self.analysis_to_wire(),
        }
    }

    fn analysis_to_wire(&self) -> Option<v1::Analysis> {
        if let Some(lifetime) = &self.lifetime_value {
            return Some(v1::Analysis {
                kind: Some(v1::analysis::Kind::LifetimeValue(v1::LifetimeValue {
                    holdout_days: lifetime.holdout_days.unwrap_or(0),
                    window_days: lifetime.window_days.unwrap_or(0),
                    min_spend: lifetime.min_spend,
                    max_spend: lifetime.max_spend,
                    age_bins: lifetime.age_bins.unwrap_or(0),
                    spend_bins: lifetime.spend_bins.unwrap_or(0),
                })),
            });
        }
        if let Some(rules) = &self.basket_rules {
            return Some(v1::Analysis {
                kind: Some(v1::analysis::Kind::BasketRules(v1::BasketRules {
                    items: rules.items.clone(),
                    max_itemset_size: rules.max_itemset_size.unwrap_or(0),
                    min_support: rules.min_support,
                    min_confidence: rules.min_confidence,
                    itemset_caps: rules.itemset_caps.clone(),
                    max_candidates: rules.max_candidates.unwrap_or(0),
                    per_purchase_day: rules.baskets.as_deref() == Some("day"),
                    max_days_per_customer: rules.max_days_per_customer.unwrap_or(0),
                    window_days: rules.window_days.unwrap_or(0),
                    top_n: rules.top_n.unwrap_or(0),
                })),
            });
        }
        let kind = match (&self.segment, &self.rfm) {
            (Some(segment), _) => v1::analysis::Kind::Segment(v1::Segmentation {
                k_values: segment.k.clone(),
                iterations: segment.iterations.unwrap_or(0),
                radius: segment.radius.unwrap_or(0.0),
                damping: segment.damping.unwrap_or(0.0),
                seeding_cells: segment.seeding_cells.unwrap_or(0),
                seeding_radius: segment.seeding_radius.unwrap_or(0.0),
                box_bound: segment.box_bound.unwrap_or(0.0),
                cost_bound: segment.cost_bound.unwrap_or(0.0),
                with_label: segment.with_label,
            }),
            (None, Some(rfm)) => v1::analysis::Kind::Rfm(v1::Rfm {
                recency_edges: rfm.recency_edges.clone(),
                frequency_edges: rfm.frequency_edges.clone(),
                monetary_edges: rfm.monetary_edges.clone(),
            }),
            (None, None) => return None,
        };
        Some(v1::Analysis { kind: Some(kind) })
    }
}
