//! A job's differential privacy, in one place for the coordinator and every
//! node: the customer-level DP-SGD settings, the partner-level noise, the job
//! budget, and the exact charges a round costs each partner. Both sides price
//! a round with [`round_charges`], so their ledgers agree by construction.

use veil_federation::secure::cohort_threshold;
use veil_federation::{AggregationMode, PartnerPrivacy, ReplyEncoding};
use veil_models::DpSgdConfig;
use veil_privacy_ledger::{
    Budget, ChargeSpec, JobBudget, Mechanism, PrivacyUnit, Release, TrustModel,
};
use veil_wire::v1;

use crate::spec::{JobSpecError, invalid};

/// Default DP-SGD noise multiplier σ.
pub const DEFAULT_CUSTOMER_NOISE_MULTIPLIER: f64 = 1.0;
/// Default per-customer gradient clip norm C.
pub const DEFAULT_CUSTOMER_CLIP_NORM: f64 = 1.0;
/// Default Poisson sampling rate q.
pub const DEFAULT_CUSTOMER_SAMPLING_RATE: f64 = 0.05;
/// Default partner-level noise multiplier z.
pub const DEFAULT_PARTNER_NOISE_MULTIPLIER: f64 = 1.0;
/// Default ℓ2 bound of a partner's weight-normalised update.
pub const DEFAULT_UPDATE_CLIP_NORM: f64 = 1.0;
/// Default δ.
pub const DEFAULT_DELTA: f64 = 1e-5;
/// Default per-partner budget of each unit.
pub const DEFAULT_EPSILON: f64 = 10.0;
/// Default noise multiplier of released statistics: a release costs about
/// what 25 DP-SGD steps at σ = 1, q = 0.01 cost, and the noise stays small
/// against sums over thousands of customers.
pub const DEFAULT_STATISTICS_NOISE_MULTIPLIER: f64 = 5.0;
/// Default clamp of regression labels and predictions in released
/// evaluation statistics.
pub const DEFAULT_STATISTICS_VALUE_BOUND: f64 = 12.0;

/// Customer-level noise of the statistics a node releases besides its model
/// update (see `crate::statistics::ReleaseNoise`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StatisticsPrivacy {
    /// Noise over per-customer sensitivity of every release.
    pub noise_multiplier: f64,
    /// Values are clamped to `[-value_bound, value_bound]` before summing.
    pub value_bound: f64,
}

/// The privacy settings of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct PrivacySpec {
    /// Customer-level DP-SGD at every node; `None` only when the job says
    /// `customers = "off"`.
    pub customers: Option<DpSgdConfig>,
    /// Noise of the released statistics; present exactly when `customers` is.
    pub statistics: Option<StatisticsPrivacy>,
    /// Partner-level noise of each round's aggregate.
    pub partners: PartnerPrivacy,
    /// δ of every ε in the job.
    pub delta: f64,
    /// Customer-level ε per partner for the whole job.
    pub customer_epsilon: f64,
    /// Partner-level ε per partner for the whole job.
    pub partner_epsilon: f64,
}

impl PrivacySpec {
    /// Parses and validates the wire form; `aggregation` decides the
    /// partner-level default and `max_weight` the central-mode weight cap.
    pub(crate) fn from_wire(
        wire: Option<&v1::Privacy>,
        aggregation: &AggregationMode,
        max_weight: f64,
    ) -> Result<Self, JobSpecError> {
        let default = v1::Privacy::default();
        let wire = wire.unwrap_or(&default);
        let or = |value: f64, default: f64| if value == 0.0 { default } else { value };
        let customers = match wire.customers.as_str() {
            "dp-sgd" | "" => {
                let config = DpSgdConfig {
                    noise_multiplier: or(
                        wire.customer_noise_multiplier,
                        DEFAULT_CUSTOMER_NOISE_MULTIPLIER,
                    ),
                    clip_norm: or(wire.customer_clip_norm, DEFAULT_CUSTOMER_CLIP_NORM),
                    sampling_rate: or(wire.customer_sampling_rate, DEFAULT_CUSTOMER_SAMPLING_RATE),
                };
                config
                    .validate()
                    .map_err(|error| invalid("privacy.customer_*", error.to_string()))?;
                if config.noise_multiplier <= 0.0 {
                    return Err(invalid(
                        "privacy.customer_noise_multiplier",
                        "must be > 0; say customers = \"off\" to train without DP-SGD",
                    ));
                }
                Some(config)
            }
            "off" => None,
            other => {
                return Err(invalid(
                    "privacy.customers",
                    format!("unknown mode '{other}'; expected dp-sgd or off"),
                ));
            }
        };
        let noise_multiplier = or(
            wire.partner_noise_multiplier,
            DEFAULT_PARTNER_NOISE_MULTIPLIER,
        );
        let clip_norm = or(wire.update_clip_norm, DEFAULT_UPDATE_CLIP_NORM);
        // Partner-level DP is sound only when nothing else leaves exactly:
        // without customer-level DP, feature sums, example counts and
        // evaluation statistics travel as exact sums, so the job may not
        // claim a partner-level ε (and defaults to none).
        if customers.is_none() && matches!(wire.partners.as_str(), "distributed" | "central") {
            return Err(invalid(
                "privacy.partners",
                "partner-level DP needs customers = \"dp-sgd\": without it feature sums, example counts and evaluation statistics leave un-noised; say partners = \"off\"",
            ));
        }
        let partners = match (wire.partners.as_str(), aggregation) {
            ("", _) if customers.is_none() => PartnerPrivacy::Off,
            ("distributed", _) | ("", AggregationMode::Secure(_)) => PartnerPrivacy::Distributed {
                noise_multiplier,
                clip_norm,
            },
            ("central", _) | ("", AggregationMode::Plain) => PartnerPrivacy::Central {
                noise_multiplier,
                clip_norm,
                max_weight,
            },
            ("off", _) => PartnerPrivacy::Off,
            (other, _) => {
                return Err(invalid(
                    "privacy.partners",
                    format!("unknown mode '{other}'; expected distributed, central or off"),
                ));
            }
        };
        let statistics = match customers {
            None => None,
            Some(_) => {
                let statistics = StatisticsPrivacy {
                    noise_multiplier: or(
                        wire.statistics_noise_multiplier,
                        DEFAULT_STATISTICS_NOISE_MULTIPLIER,
                    ),
                    value_bound: or(wire.statistics_value_bound, DEFAULT_STATISTICS_VALUE_BOUND),
                };
                for (field, value) in [
                    (
                        "privacy.statistics_noise_multiplier",
                        statistics.noise_multiplier,
                    ),
                    ("privacy.statistics_value_bound", statistics.value_bound),
                ] {
                    if !(value > 0.0 && value.is_finite()) {
                        return Err(invalid(field, "must be a finite number > 0"));
                    }
                }
                Some(statistics)
            }
        };
        let delta = or(wire.delta, DEFAULT_DELTA);
        if !(delta > 0.0 && delta < 1.0) {
            return Err(invalid("privacy.delta", "must be in (0, 1)"));
        }
        let customer_epsilon = or(wire.customer_epsilon, DEFAULT_EPSILON);
        let partner_epsilon = or(wire.partner_epsilon, DEFAULT_EPSILON);
        for (field, epsilon) in [
            ("privacy.customer_epsilon", customer_epsilon),
            ("privacy.partner_epsilon", partner_epsilon),
        ] {
            if !(epsilon > 0.0 && !epsilon.is_nan()) {
                return Err(invalid(field, "must be > 0 (inf for no limit)"));
            }
        }
        Ok(PrivacySpec {
            customers,
            statistics,
            partners,
            delta,
            customer_epsilon,
            partner_epsilon,
        })
    }

    /// The wire form.
    pub(crate) fn to_wire(&self) -> v1::Privacy {
        let customers = self.customers.as_ref();
        let (partners, noise_multiplier, clip_norm) = match self.partners {
            PartnerPrivacy::Off => ("off", 0.0, 0.0),
            PartnerPrivacy::Distributed {
                noise_multiplier,
                clip_norm,
            } => ("distributed", noise_multiplier, clip_norm),
            PartnerPrivacy::Central {
                noise_multiplier,
                clip_norm,
                ..
            } => ("central", noise_multiplier, clip_norm),
        };
        v1::Privacy {
            customers: if customers.is_some() { "dp-sgd" } else { "off" }.to_owned(),
            customer_noise_multiplier: customers.map_or(0.0, |c| c.noise_multiplier),
            customer_clip_norm: customers.map_or(0.0, |c| c.clip_norm),
            customer_sampling_rate: customers.map_or(0.0, |c| c.sampling_rate),
            partners: partners.to_owned(),
            partner_noise_multiplier: noise_multiplier,
            update_clip_norm: clip_norm,
            delta: self.delta,
            customer_epsilon: self.customer_epsilon,
            partner_epsilon: self.partner_epsilon,
            statistics_noise_multiplier: self.statistics.map_or(0.0, |s| s.noise_multiplier),
            statistics_value_bound: self.statistics.map_or(0.0, |s| s.value_bound),
        }
    }

    /// The budget the coordinator enforces for `job_id`.
    pub fn job_budget(&self, job_id: &str) -> JobBudget {
        JobBudget {
            job_id: job_id.to_owned(),
            customer: Budget {
                epsilon: self.customer_epsilon,
                delta: self.delta,
            },
            partner: Budget {
                epsilon: self.partner_epsilon,
                delta: self.delta,
            },
        }
    }

    /// DP-SGD steps per round: every local epoch is `round(1/q)` Poisson steps.
    pub fn customer_steps_per_round(&self, local_epochs: usize) -> u64 {
        self.customers
            .as_ref()
            .map_or(0, |dp| local_epochs as u64 * dp.steps_per_epoch())
    }
}

/// Who the round is priced for.
#[derive(Debug, Clone, Copy)]
pub struct RoundParty<'a> {
    /// The job id the coordinator assigned.
    pub job_id: &'a str,
    /// The training round, from 1.
    pub round: u32,
    /// The partner's node id.
    pub partner_id: &'a str,
    /// The dataset the partner trains on (caps are per dataset).
    pub dataset_id: &'a str,
    /// Nodes invited to the round's secure cohort (t derives from it).
    pub cohort: usize,
}

impl RoundParty<'_> {
    /// This party's charge for one release of its round.
    fn charge(
        &self,
        (unit, release): (PrivacyUnit, Release),
        trust_model: TrustModel,
        mechanism: Mechanism,
        delta: f64,
    ) -> ChargeSpec {
        ChargeSpec {
            job_id: self.job_id.to_owned(),
            round: u64::from(self.round),
            partner_id: self.partner_id.to_owned(),
            dataset_id: self.dataset_id.to_owned(),
            unit,
            release,
            trust_model,
            mechanism,
            delta,
        }
    }
}

/// The charges a partner must have recorded before its reply to `phase`
/// leaves: a training round's [`round_charges`]; after the last round, the
/// final evaluation's own [`final_evaluation_charge`]; nothing for the
/// feature statistics (scaled publicly under customer-level DP) or the
/// evaluations of earlier rounds (empty under customer-level DP).
pub fn phase_charges(
    spec: &crate::JobSpec,
    phase: veil_federation::Phase,
    party: RoundParty<'_>,
) -> Result<Vec<ChargeSpec>, JobSpecError> {
    match phase {
        veil_federation::Phase::Train => round_charges(spec, party),
        veil_federation::Phase::Evaluate => {
            Ok(final_evaluation_charge(spec, party).into_iter().collect())
        }
        veil_federation::Phase::FeatureStats => Ok(Vec::new()),
        veil_federation::Phase::Release => Ok(vec![analysis_release_charge(spec, party)?]),
    }
}

/// The customer-level charge of an analysis' release `party.round - 1`:
/// the plan's distributed discrete Gaussian, calibrated for the `t` honest
/// inputs of the smallest cohort. A secure cohort whose threshold falls
/// below that `t` is refused: its sum would hold less noise than charged.
pub fn analysis_release_charge(
    spec: &crate::JobSpec,
    party: RoundParty<'_>,
) -> Result<ChargeSpec, JobSpecError> {
    let analysis = spec
        .analysis
        .as_ref()
        .ok_or_else(|| invalid("analysis", "a training job has no release phases"))?;
    let (mechanism, min_survivors) = (party.round as usize)
        .checked_sub(1)
        .and_then(|index| analysis.release_mechanism(index))
        .ok_or_else(|| {
            invalid(
                "analysis",
                format!(
                    "round {} is not one of the job's {} releases",
                    party.round, spec.rounds
                ),
            )
        })?;
    let trust_model = match &spec.aggregation {
        AggregationMode::Secure(settings) => {
            if party.cohort > 0 {
                let threshold = cohort_threshold(party.cohort, settings)
                    .map_err(|error| invalid("aggregation", error))?;
                if (threshold as u64) < min_survivors {
                    return Err(invalid(
                        "min_participants",
                        format!(
                            "a cohort of {} guarantees {threshold} honest inputs, below the {} the release's noise is calibrated for",
                            party.cohort, min_survivors
                        ),
                    ));
                }
            }
            TrustModel::Distributed
        }
        // Each node's own noise covers the whole release.
        AggregationMode::Plain => TrustModel::LocalDpSgd,
    };
    Ok(party.charge(
        (PrivacyUnit::Customer, Release::Round),
        trust_model,
        mechanism,
        spec.privacy.delta,
    ))
}

/// Every charge the whole job costs one partner if it takes part in every
/// round: each round's [`round_charges`] and the final evaluation. What a
/// budget is planned against before the job starts.
pub fn job_charges(
    spec: &crate::JobSpec,
    party: RoundParty<'_>,
) -> Result<Vec<ChargeSpec>, JobSpecError> {
    let mut charges = Vec::new();
    if spec.analysis.is_some() {
        for round in 1..=spec.rounds {
            charges.push(analysis_release_charge(
                spec,
                RoundParty { round, ..party },
            )?);
        }
        return Ok(charges);
    }
    for round in 1..=spec.rounds {
        let party = RoundParty { round, ..party };
        charges.extend(round_charges(spec, party)?);
        charges.extend(final_evaluation_charge(spec, party));
    }
    Ok(charges)
}

/// What a whole job spends per partner in one privacy unit, planned from
/// its spec before it runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlannedSpend {
    /// The privacy unit.
    pub unit: PrivacyUnit,
    /// ε composed over every round and the final evaluation, at the job's δ.
    pub epsilon: f64,
    /// The job's own budget in that unit.
    pub budget: f64,
}

/// The ε the whole job spends per partner that takes part in every round
/// and the final evaluation (the most any partner can spend), for each unit
/// the job protects. Priced for a cohort of `min_participants`: every
/// partner-level mechanism is calibrated to the same ε for any cohort.
pub fn planned_spend(spec: &crate::JobSpec) -> Result<Vec<PlannedSpend>, JobSpecError> {
    let party = RoundParty {
        job_id: "planned",
        round: 1,
        partner_id: "partner",
        dataset_id: "partner",
        cohort: spec.min_participants as usize,
    };
    let charges = job_charges(spec, party)?
        .into_iter()
        .map(|charge| veil_privacy_ledger::Charge::new(charge, 0))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| invalid("privacy", error.to_string()))?;
    let mut planned = Vec::new();
    for (unit, budget) in [
        (PrivacyUnit::Customer, spec.privacy.customer_epsilon),
        (PrivacyUnit::Partner, spec.privacy.partner_epsilon),
    ] {
        let of_unit: Vec<&veil_privacy_ledger::Charge> = charges
            .iter()
            .filter(|charge| charge.unit == unit)
            .collect();
        if of_unit.is_empty() {
            continue;
        }
        let spent = veil_privacy_ledger::compose(of_unit, spec.privacy.delta)
            .map_err(|error| invalid("privacy", error.to_string()))?;
        planned.push(PlannedSpend {
            unit,
            epsilon: spent.epsilon,
            budget,
        });
    }
    Ok(planned)
}

/// Refuses a job whose own plan exceeds its budget, naming the numbers, so
/// a job is refused at submission rather than stopped part-way. Returns
/// the plan of a job that fits.
pub fn check_planned_budget(spec: &crate::JobSpec) -> Result<Vec<PlannedSpend>, JobSpecError> {
    let planned = planned_spend(spec)?;
    for spend in &planned {
        // A non-finite plan (NaN from a broken accountant input) never fits.
        if !(spend.epsilon <= spend.budget) {
            let (field, unit) = match spend.unit {
                PrivacyUnit::Customer => ("privacy.customer_epsilon", "customer"),
                PrivacyUnit::Partner => ("privacy.partner_epsilon", "partner"),
            };
            return Err(invalid(
                field,
                format!(
                    "the job would spend {unit}-level ε = {:.3} per partner (δ = {}) over its {} rounds and final evaluation, above its budget of {}; add noise, cut rounds or raise the budget",
                    spend.epsilon, spec.privacy.delta, spec.rounds, spend.budget
                ),
            ));
        }
    }
    Ok(planned)
}

/// The customer-level charge of the final model's evaluation: one Gaussian
/// release of the evaluation statistics, noised at the node with the job's
/// statistics noise multiplier, over the statistics' per-customer ℓ2
/// sensitivity. `None` for any round but the last, and when the job has no
/// customer-level DP (then nothing it releases is claimed private).
pub fn final_evaluation_charge(spec: &crate::JobSpec, party: RoundParty<'_>) -> Option<ChargeSpec> {
    if party.round != spec.rounds {
        return None;
    }
    let statistics = spec.privacy.statistics?;
    let sensitivity = crate::statistics::ReleaseNoise::evaluation(
        spec.model_spec().output,
        statistics.value_bound,
    )
    .sensitivity();
    Some(party.charge(
        (PrivacyUnit::Customer, Release::FinalEvaluation),
        TrustModel::LocalDpSgd,
        Mechanism::Gaussian {
            noise_multiplier: statistics.noise_multiplier,
            clip_norm: sensitivity,
        },
        spec.privacy.delta,
    ))
}

/// The customer-level charge of one round for one partner: its DP-SGD
/// steps. `None` when the job has no customer-level DP.
pub fn customer_round_charge(spec: &crate::JobSpec, party: RoundParty<'_>) -> Option<ChargeSpec> {
    let privacy = &spec.privacy;
    let dp = privacy.customers.as_ref()?;
    Some(party.charge(
        (PrivacyUnit::Customer, Release::Round),
        TrustModel::LocalDpSgd,
        Mechanism::PoissonSubsampledGaussian {
            sampling_rate: dp.sampling_rate,
            noise_multiplier: dp.noise_multiplier,
            steps: privacy.customer_steps_per_round(spec.training.local_epochs),
            clip_norm: dp.clip_norm,
        },
        privacy.delta,
    ))
}

/// The charges one training round costs one partner: customer-level DP-SGD
/// (local trust) and partner-level noise (distributed or central). Nothing
/// for units the job leaves unprotected.
pub fn round_charges(
    spec: &crate::JobSpec,
    party: RoundParty<'_>,
) -> Result<Vec<ChargeSpec>, JobSpecError> {
    let privacy = &spec.privacy;
    let charge = |unit, trust_model, mechanism| {
        party.charge(
            (unit, Release::Round),
            trust_model,
            mechanism,
            privacy.delta,
        )
    };
    let mut charges: Vec<ChargeSpec> = customer_round_charge(spec, party).into_iter().collect();
    match privacy.partners {
        PartnerPrivacy::Off => {}
        PartnerPrivacy::Central {
            noise_multiplier,
            clip_norm,
            ..
        } => charges.push(charge(
            PrivacyUnit::Partner,
            TrustModel::Central,
            Mechanism::Gaussian {
                noise_multiplier,
                clip_norm,
            },
        )),
        PartnerPrivacy::Distributed { .. } => {
            let AggregationMode::Secure(settings) = &spec.aggregation else {
                return Err(invalid(
                    "privacy.partners",
                    "distributed noise needs secure aggregation",
                ));
            };
            let plan = spec.plan();
            let shape = plan.reply_shape(party.round, veil_federation::Phase::Train);
            // The same encoding the nodes and the coordinator build for this
            // cohort: its mechanism is exactly the noise the nodes add.
            let encoding = ReplyEncoding::new(
                shape.vector_len,
                shape.statistics_len,
                party.cohort,
                settings,
                &privacy.partners,
            )
            .map_err(|error| invalid("privacy.partners", error.to_string()))?;
            let mechanism = encoding.distributed.ok_or_else(|| {
                invalid(
                    "privacy.partners",
                    "the encoding carries no distributed noise",
                )
            })?;
            debug_assert_eq!(
                cohort_threshold(party.cohort, settings).ok(),
                Some(mechanism.min_survivors as usize)
            );
            charges.push(charge(
                PrivacyUnit::Partner,
                TrustModel::Distributed,
                Mechanism::DistributedDiscreteGaussian(mechanism),
            ));
        }
    }
    Ok(charges)
}
