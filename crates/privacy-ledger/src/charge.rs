//! What one round costs one partner: the [`Charge`], its idempotency key, and
//! the rule that makes recording it twice harmless.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use veil_privacy_accounting::{Accountant, AccountingError, DistributedDiscreteGaussian, DpEvent};

use crate::error::LedgerError;

/// Whose privacy a charge spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrivacyUnit {
    /// One customer of a partner (DP-SGD at the partner; one record each).
    Customer,
    /// The partner as a whole (DP-FedAvg over partners' updates).
    Partner,
}

impl PrivacyUnit {
    /// Short stable name, as stored, audited and displayed.
    pub fn name(self) -> &'static str {
        match self {
            PrivacyUnit::Customer => "customer",
            PrivacyUnit::Partner => "partner",
        }
    }
}

/// Which release of a round a charge pays for. A round releases its
/// aggregate update; the job's last round also releases the evaluation of
/// the final model, which is charged under its own key so that an auditor
/// sees it and a node can refuse it on its own.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Release {
    /// The round's training release: its noised update (and, before the
    /// final evaluation had its own key, any statistics priced with it).
    #[default]
    Round,
    /// The noised evaluation statistics of the final model, released once
    /// after the last round by the nodes whose updates are in it.
    FinalEvaluation,
}

impl Release {
    /// Short stable name, as stored and displayed.
    pub fn name(self) -> &'static str {
        match self {
            Self::Round => "round",
            Self::FinalEvaluation => "final_evaluation",
        }
    }
}

/// Who adds the noise, and so whom the guarantee holds against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrustModel {
    /// The partner's own node adds noise (DP-SGD during training, Gaussian
    /// noise on the statistics it releases): private even against the
    /// coordinator and the other partners.
    LocalDpSgd,
    /// Every node adds discrete noise before secure aggregation: the sum is
    /// private against a curious coordinator as long as `t` nodes are honest.
    Distributed,
    /// The coordinator adds noise to the aggregate: private against
    /// everyone who sees the model, but the coordinator is trusted.
    Central,
}

/// The noise mechanism of one round, with everything the privacy claim
/// depends on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Mechanism {
    /// DP-SGD or sampled central DP: `steps` Poisson-subsampled Gaussian steps.
    PoissonSubsampledGaussian {
        /// Poisson sampling probability per step, in `(0, 1]`.
        sampling_rate: f64,
        /// Noise standard deviation over the clip norm.
        noise_multiplier: f64,
        /// Steps in this round.
        steps: u64,
        /// ℓ2 clip norm of each example's (or update's) contribution.
        clip_norm: f64,
    },
    /// Distributed discrete Gaussian through secure aggregation (one release
    /// per round; partner sampling not credited).
    DistributedDiscreteGaussian(DistributedDiscreteGaussian),
    /// DP-SGD (as `PoissonSubsampledGaussian`) plus `statistics_releases`
    /// Gaussian releases (as ledgers written before the final evaluation had
    /// its own [`Release`] priced it: read back, never produced now) of the node's additive statistics (feature sums,
    /// training and evaluation sums) over all its customers, each with noise
    /// `statistics_noise_multiplier` times its per-customer sensitivity.
    DpSgdWithStatistics {
        /// Poisson sampling probability per step, in `(0, 1]`.
        sampling_rate: f64,
        /// Noise standard deviation over the clip norm.
        noise_multiplier: f64,
        /// Steps in this round.
        steps: u64,
        /// ℓ2 clip norm of each example's gradient.
        clip_norm: f64,
        /// Noisy statistics releases priced in this round.
        statistics_releases: u64,
        /// Noise of each release over its sensitivity.
        statistics_noise_multiplier: f64,
    },
    /// One Gaussian release over all data, no sampling: central noise on
    /// the aggregate, or a node's noise on the statistics it releases.
    Gaussian {
        /// Noise standard deviation over the clip norm.
        noise_multiplier: f64,
        /// ℓ2 clip norm of each contribution.
        clip_norm: f64,
    },
}

impl Mechanism {
    /// Adds one round of this mechanism to `accountant`.
    pub fn compose_into(&self, accountant: &mut Accountant) -> Result<(), AccountingError> {
        match *self {
            Self::PoissonSubsampledGaussian {
                sampling_rate,
                noise_multiplier,
                steps,
                ..
            } => accountant.compose(DpEvent::PoissonSampledGaussian {
                sampling_rate,
                noise_multiplier,
                steps,
            }),
            Self::DpSgdWithStatistics {
                sampling_rate,
                noise_multiplier,
                steps,
                statistics_releases,
                statistics_noise_multiplier,
                ..
            } => {
                accountant.compose(DpEvent::PoissonSampledGaussian {
                    sampling_rate,
                    noise_multiplier,
                    steps,
                })?;
                if statistics_releases == 0 {
                    return Ok(());
                }
                // k Gaussian releases of multiplier z compose exactly to one
                // of multiplier z/√k (Gaussian DP adds in quadrature).
                accountant.compose(DpEvent::Gaussian {
                    noise_multiplier: statistics_noise_multiplier
                        / (statistics_releases as f64).sqrt(),
                })
            }
            Self::DistributedDiscreteGaussian(mechanism) => {
                accountant.compose(DpEvent::DistributedDiscreteGaussian {
                    mechanism,
                    rounds: 1,
                })
            }
            Self::Gaussian {
                noise_multiplier, ..
            } => accountant.compose(DpEvent::Gaussian { noise_multiplier }),
        }
    }

    /// Short stable name, as stored and displayed.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::PoissonSubsampledGaussian { .. } => "poisson_subsampled_gaussian",
            Self::DpSgdWithStatistics { .. } => "dp_sgd_with_statistics",
            Self::DistributedDiscreteGaussian(_) => "distributed_discrete_gaussian",
            Self::Gaussian { .. } => "gaussian",
        }
    }

    /// The ℓ2 clip norm, in model units.
    pub fn clip_norm(&self) -> f64 {
        match self {
            Self::PoissonSubsampledGaussian { clip_norm, .. }
            | Self::DpSgdWithStatistics { clip_norm, .. }
            | Self::Gaussian { clip_norm, .. } => *clip_norm,
            Self::DistributedDiscreteGaussian(mechanism) => mechanism.encoding.clip_norm,
        }
    }

    /// Noise over sensitivity. For the distributed mechanism this is the
    /// summed noise of `t` nodes over the rounded sensitivity, `√t·σ/Δ₂`.
    pub fn noise_multiplier(&self) -> Result<f64, LedgerError> {
        match self {
            Self::PoissonSubsampledGaussian {
                noise_multiplier, ..
            }
            | Self::DpSgdWithStatistics {
                noise_multiplier, ..
            }
            | Self::Gaussian {
                noise_multiplier, ..
            } => Ok(*noise_multiplier),
            Self::DistributedDiscreteGaussian(mechanism) => {
                Ok(mechanism.effective_noise_multiplier()?)
            }
        }
    }

    /// Sampling probability per step (1 where nothing is sampled or sampling
    /// is not credited).
    pub fn sampling_rate(&self) -> f64 {
        match self {
            Self::PoissonSubsampledGaussian { sampling_rate, .. }
            | Self::DpSgdWithStatistics { sampling_rate, .. } => *sampling_rate,
            Self::DistributedDiscreteGaussian(_) | Self::Gaussian { .. } => 1.0,
        }
    }

    /// Noisy releases in this round.
    pub fn steps(&self) -> u64 {
        match self {
            Self::PoissonSubsampledGaussian { steps, .. }
            | Self::DpSgdWithStatistics { steps, .. } => *steps,
            Self::DistributedDiscreteGaussian(_) | Self::Gaussian { .. } => 1,
        }
    }

    /// Whether this mechanism is how `trust_model` adds noise. A distributed
    /// discrete Gaussian calibrated for one survivor is a node's own
    /// discrete Gaussian: local noise (an analysis under plain aggregation).
    /// A Gaussian under the distributed model is the sum of `t` nodes'
    /// discrete Gaussians on integer counts accounted as one Gaussian of
    /// `√t·σ` (basket-rules levels: no rounding, so no `+√d` growth).
    fn fits(&self, trust_model: TrustModel) -> bool {
        matches!(
            (trust_model, self),
            (
                TrustModel::LocalDpSgd,
                Self::PoissonSubsampledGaussian { .. }
                    | Self::DpSgdWithStatistics { .. }
                    | Self::Gaussian { .. }
            ) | (
                TrustModel::LocalDpSgd,
                Self::DistributedDiscreteGaussian(DistributedDiscreteGaussian {
                    min_survivors: 1,
                    ..
                })
            ) | (
                TrustModel::Distributed,
                Self::DistributedDiscreteGaussian(_) | Self::Gaussian { .. }
            ) | (
                TrustModel::Central,
                Self::Gaussian { .. } | Self::PoissonSubsampledGaussian { .. }
            )
        )
    }
}

/// What identifies a charge: one partner, one privacy unit, one release of
/// one round of one job. A replayed round has the same key, which is why it
/// is never charged twice.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ChargeKey {
    /// The job.
    pub job_id: String,
    /// The round within the job.
    pub round: u64,
    /// The partner charged.
    pub partner_id: String,
    /// The privacy unit charged.
    pub unit: PrivacyUnit,
    /// Which of the round's releases.
    #[serde(default)]
    pub release: Release,
}

impl std::fmt::Display for ChargeKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "job {} round {} partner {} unit {:?}",
            self.job_id, self.round, self.partner_id, self.unit
        )?;
        match self.release {
            Release::Round => Ok(()),
            other => write!(formatter, " release {}", other.name()),
        }
    }
}

/// A charge before it is priced and time-stamped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChargeSpec {
    /// The job.
    pub job_id: String,
    /// The round within the job.
    pub round: u64,
    /// The partner charged.
    pub partner_id: String,
    /// The partner's dataset used (caps are per dataset).
    pub dataset_id: String,
    /// The privacy unit charged.
    pub unit: PrivacyUnit,
    /// Which of the round's releases this pays for.
    #[serde(default)]
    pub release: Release,
    /// Who added the noise.
    pub trust_model: TrustModel,
    /// The noise mechanism.
    pub mechanism: Mechanism,
    /// δ at which this round's own ε is reported.
    pub delta: f64,
}

/// One round's privacy cost to one partner in one unit, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Charge {
    /// The job.
    pub job_id: String,
    /// The round within the job.
    pub round: u64,
    /// The partner charged.
    pub partner_id: String,
    /// The partner's dataset used (caps are per dataset).
    pub dataset_id: String,
    /// The privacy unit charged.
    pub unit: PrivacyUnit,
    /// Which of the round's releases this pays for.
    #[serde(default)]
    pub release: Release,
    /// Who added the noise.
    pub trust_model: TrustModel,
    /// The noise mechanism.
    pub mechanism: Mechanism,
    /// δ at which this round's own ε is reported.
    pub delta: f64,
    /// This round's ε alone by RDP, at `delta`. Informative: budgets are
    /// always recomputed by composing mechanisms, never by adding these.
    pub epsilon_rdp: f64,
    /// This round's ε alone by PLD, at `delta`; `None` where the PLD
    /// accountant gives no bound (distributed discrete Gaussian).
    pub epsilon_pld: Option<f64>,
    /// When the charge was recorded (UNIX seconds, UTC), passed in by the
    /// caller; decides which cap period it falls in.
    pub recorded_at_unix_s: i64,
}

/// What recording a charge did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordOutcome {
    /// The charge is new and now recorded.
    Recorded,
    /// The identical charge was already recorded; nothing changed.
    AlreadyRecorded,
}

impl Charge {
    /// Validates `spec`, prices the round alone, and stamps the time.
    pub fn new(spec: ChargeSpec, recorded_at_unix_s: i64) -> Result<Self, LedgerError> {
        validate_spec(&spec)?;
        let mut accountant = Accountant::new();
        spec.mechanism.compose_into(&mut accountant)?;
        let report = accountant.epsilon(spec.delta)?;
        Ok(Self {
            job_id: spec.job_id,
            round: spec.round,
            partner_id: spec.partner_id,
            dataset_id: spec.dataset_id,
            unit: spec.unit,
            release: spec.release,
            trust_model: spec.trust_model,
            mechanism: spec.mechanism,
            delta: spec.delta,
            epsilon_rdp: report.epsilon_rdp,
            epsilon_pld: report.epsilon_pld.is_finite().then_some(report.epsilon_pld),
            recorded_at_unix_s,
        })
    }

    /// The idempotency key.
    pub fn key(&self) -> ChargeKey {
        ChargeKey {
            job_id: self.job_id.clone(),
            round: self.round,
            partner_id: self.partner_id.clone(),
            unit: self.unit,
            release: self.release,
        }
    }

    /// The charge without its price and time stamp.
    pub fn spec(&self) -> ChargeSpec {
        ChargeSpec {
            job_id: self.job_id.clone(),
            round: self.round,
            partner_id: self.partner_id.clone(),
            dataset_id: self.dataset_id.clone(),
            unit: self.unit,
            release: self.release,
            trust_model: self.trust_model,
            mechanism: self.mechanism,
            delta: self.delta,
        }
    }

    /// Whether `other` is the same charge: equal in everything that defines
    /// the privacy cost. The time stamp differs between a round and its replay
    /// (and between coordinator and node), and the ε fields are derived, so
    /// neither takes part.
    pub fn same_charge_as(&self, other: &Self) -> bool {
        self.spec() == other.spec()
    }

    /// Checks a charge that did not come through [`Charge::new`] (read back,
    /// deserialised, or received).
    pub fn validate(&self) -> Result<(), LedgerError> {
        validate_spec(&self.spec())?;
        self.mechanism.compose_into(&mut Accountant::new())?;
        Ok(())
    }
}

fn validate_spec(spec: &ChargeSpec) -> Result<(), LedgerError> {
    for (field, value) in [
        ("job_id", &spec.job_id),
        ("partner_id", &spec.partner_id),
        ("dataset_id", &spec.dataset_id),
    ] {
        if value.trim().is_empty() {
            return Err(LedgerError::InvalidCharge {
                field,
                reason: "must not be empty",
            });
        }
    }
    if !(spec.delta > 0.0 && spec.delta < 1.0) {
        return Err(LedgerError::InvalidCharge {
            field: "delta",
            reason: "must be in (0, 1)",
        });
    }
    if !(spec.mechanism.clip_norm().is_finite() && spec.mechanism.clip_norm() > 0.0) {
        return Err(LedgerError::InvalidCharge {
            field: "clip_norm",
            reason: "must be positive",
        });
    }
    if !spec.mechanism.fits(spec.trust_model) {
        return Err(LedgerError::InvalidCharge {
            field: "trust_model",
            reason: "does not add noise with this mechanism",
        });
    }
    Ok(())
}

/// Charges by key, enforcing idempotency in memory exactly as the store does
/// on disk: the identical charge twice is a no-op, a different one under the
/// same key is refused.
#[derive(Debug, Clone, Default)]
pub(crate) struct ChargeSet<'a> {
    /// Charges by key; borrowed because sets are built per query.
    by_key: BTreeMap<ChargeKey, &'a Charge>,
}

/// The idempotency rule shared by [`ChargeSet`] and the SQLite store.
pub(crate) fn outcome_against(
    existing: &Charge,
    new: &Charge,
) -> Result<RecordOutcome, LedgerError> {
    if existing.same_charge_as(new) {
        Ok(RecordOutcome::AlreadyRecorded)
    } else {
        Err(LedgerError::ConflictingCharge {
            key: Box::new(new.key()),
        })
    }
}

impl<'a> ChargeSet<'a> {
    /// Adds a charge under the idempotency rule.
    pub(crate) fn insert(&mut self, charge: &'a Charge) -> Result<RecordOutcome, LedgerError> {
        match self.by_key.get(&charge.key()) {
            Some(existing) => outcome_against(existing, charge),
            None => {
                self.by_key.insert(charge.key(), charge);
                Ok(RecordOutcome::Recorded)
            }
        }
    }

    /// The distinct charges, in key order.
    pub(crate) fn charges(&self) -> impl Iterator<Item = &'a Charge> + '_ {
        self.by_key.values().copied()
    }
}
