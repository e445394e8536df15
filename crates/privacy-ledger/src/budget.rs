//! Spending against limits: composing charges into ε, job budgets (the
//! coordinator's limit), partner caps per dataset per period (the node's own
//! limit), projections before a round, and the refusals they produce.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, NaiveDate};
use serde::{Deserialize, Serialize};
use veil_privacy_accounting::Accountant;

use crate::charge::{Charge, ChargeSet, PrivacyUnit};
use crate::error::LedgerError;

/// A privacy budget (ε, δ).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    /// ε not to exceed.
    pub epsilon: f64,
    /// δ at which ε is measured.
    pub delta: f64,
}

impl Budget {
    /// Refuses budgets that are not a usable (ε, δ).
    pub fn validate(&self) -> Result<(), LedgerError> {
        if !(self.epsilon.is_finite() && self.epsilon >= 0.0) {
            return Err(LedgerError::InvalidBudget(
                "epsilon must be finite and >= 0",
            ));
        }
        if !(self.delta > 0.0 && self.delta < 1.0) {
            return Err(LedgerError::InvalidBudget("delta must be in (0, 1)"));
        }
        Ok(())
    }
}

/// What a job declares it may spend, per partner, for each privacy unit.
/// No `Default`: every job must state its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobBudget {
    /// The job.
    pub job_id: String,
    /// Per partner, customer-level.
    pub customer: Budget,
    /// Per partner, partner-level.
    pub partner: Budget,
}

impl JobBudget {
    /// The budget for one unit.
    pub fn for_unit(&self, unit: PrivacyUnit) -> Budget {
        match unit {
            PrivacyUnit::Customer => self.customer,
            PrivacyUnit::Partner => self.partner,
        }
    }
}

/// How a cap's period is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// 1 January 00:00:00 UTC to the next 1 January.
    CalendarYear,
}

/// A half-open time window `[start, end)` in UNIX seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PeriodWindow {
    /// First second in the window.
    pub start_unix_s: i64,
    /// First second after the window.
    pub end_unix_s: i64,
}

impl PeriodWindow {
    /// Whether `unix_s` falls in the window.
    pub fn contains(&self, unix_s: i64) -> bool {
        (self.start_unix_s..self.end_unix_s).contains(&unix_s)
    }
}

fn start_of_year(year: i32, at: i64) -> Result<i64, LedgerError> {
    NaiveDate::from_ymd_opt(year, 1, 1)
        .and_then(|date| date.and_hms_opt(0, 0, 0))
        .map(|start| start.and_utc().timestamp())
        .ok_or(LedgerError::TimeOutOfRange(at))
}

impl Period {
    /// The period containing `unix_s` (UTC).
    pub fn window_containing(&self, unix_s: i64) -> Result<PeriodWindow, LedgerError> {
        match self {
            Self::CalendarYear => {
                let year = DateTime::from_timestamp(unix_s, 0)
                    .ok_or(LedgerError::TimeOutOfRange(unix_s))?
                    .year();
                let next = year
                    .checked_add(1)
                    .ok_or(LedgerError::TimeOutOfRange(unix_s))?;
                Ok(PeriodWindow {
                    start_unix_s: start_of_year(year, unix_s)?,
                    end_unix_s: start_of_year(next, unix_s)?,
                })
            }
        }
    }
}

/// A node's own policy for one dataset and unit, composed across all jobs.
/// No `Default`: every partner must state its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartnerCap {
    /// The dataset the cap protects.
    pub dataset_id: String,
    /// How spending is grouped in time.
    pub period: Period,
    /// ε not to exceed within one period.
    pub epsilon: f64,
    /// δ at which ε is measured.
    pub delta: f64,
    /// The privacy unit capped.
    pub unit: PrivacyUnit,
}

impl PartnerCap {
    /// The cap as a budget.
    pub fn budget(&self) -> Budget {
        Budget {
            epsilon: self.epsilon,
            delta: self.delta,
        }
    }
}

/// Which charges a limit applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Scope {
    /// One partner's charges in one unit within one job.
    Job {
        /// The job.
        job_id: String,
        /// The partner.
        partner_id: String,
        /// The unit.
        unit: PrivacyUnit,
    },
    /// One partner's charges on one dataset in one unit within a period,
    /// across all jobs.
    Period {
        /// The partner.
        partner_id: String,
        /// The dataset.
        dataset_id: String,
        /// The unit.
        unit: PrivacyUnit,
        /// The period.
        window: PeriodWindow,
    },
}

impl Scope {
    /// Whether `charge` counts against this scope.
    pub fn contains(&self, charge: &Charge) -> bool {
        match self {
            Self::Job {
                job_id,
                partner_id,
                unit,
            } => {
                charge.job_id == *job_id && charge.partner_id == *partner_id && charge.unit == *unit
            }
            Self::Period {
                partner_id,
                dataset_id,
                unit,
                window,
            } => {
                charge.partner_id == *partner_id
                    && charge.dataset_id == *dataset_id
                    && charge.unit == *unit
                    && window.contains(charge.recorded_at_unix_s)
            }
        }
    }
}

/// ε spent by a set of charges at one δ.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spent {
    /// The tightest valid bound: `min(epsilon_rdp, epsilon_pld)`.
    pub epsilon: f64,
    /// RDP accountant.
    pub epsilon_rdp: f64,
    /// PLD accountant; `None` where it gives no bound (distributed rounds).
    pub epsilon_pld: Option<f64>,
    /// The δ all three are measured at.
    pub delta: f64,
    /// Why an ε above is absent or not finite (JSON `null`): a report must
    /// never show a null ε without saying why. Absent when all are finite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Composes `charges` (distinct keys; an identical repeat counts once, a
/// conflicting one is an error) with the accountant and reports ε at `delta`.
pub fn compose<'a>(
    charges: impl IntoIterator<Item = &'a Charge>,
    delta: f64,
) -> Result<Spent, LedgerError> {
    let mut distinct = ChargeSet::default();
    for charge in charges {
        distinct.insert(charge)?;
    }
    compose_distinct(&distinct, delta)
}

/// ε of `charges` (distinct keys, as [`compose`]) at `delta` by the RDP
/// accountant alone: a valid upper bound without the PLD accountant's FFTs,
/// cheap enough to recompute after every round (the ε gauges, the series).
pub fn compose_rdp<'a>(
    charges: impl IntoIterator<Item = &'a Charge>,
    delta: f64,
) -> Result<f64, LedgerError> {
    let mut distinct = ChargeSet::default();
    for charge in charges {
        distinct.insert(charge)?;
    }
    compose_rdp_distinct(&distinct, delta)
}

fn compose_rdp_distinct(charges: &ChargeSet<'_>, delta: f64) -> Result<f64, LedgerError> {
    let mut accountant = Accountant::new();
    for charge in charges.charges() {
        charge.mechanism.compose_into(&mut accountant)?;
    }
    Ok(accountant.epsilon_rdp(delta)?)
}

/// A spend known only by its RDP bound.
fn rdp_only(epsilon_rdp: f64, delta: f64) -> Spent {
    Spent {
        epsilon: epsilon_rdp,
        epsilon_rdp,
        epsilon_pld: None,
        delta,
        reason: Some(
            "the RDP bound already fits the limit, so the PLD accountant was not run".to_owned(),
        ),
    }
}

fn compose_distinct(charges: &ChargeSet<'_>, delta: f64) -> Result<Spent, LedgerError> {
    let mut accountant = Accountant::new();
    for charge in charges.charges() {
        charge.mechanism.compose_into(&mut accountant)?;
    }
    let report = accountant.epsilon(delta)?;
    Ok(Spent {
        epsilon: report.epsilon,
        epsilon_rdp: report.epsilon_rdp,
        epsilon_pld: report.epsilon_pld.is_finite().then_some(report.epsilon_pld),
        delta,
        reason: report.reason(),
    })
}

/// What a round would do to one limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Projection {
    /// The charges the limit applies to.
    pub scope: Scope,
    /// Spent before the planned charges.
    pub epsilon_before: Spent,
    /// Spent if the planned charges are recorded.
    pub epsilon_after: Spent,
    /// The limit.
    pub limit: Budget,
    /// `epsilon_after.epsilon > limit.epsilon`.
    pub would_exceed: bool,
}

/// Projects the planned charges onto the existing ones within `scope`.
/// Planned charges already recorded (a replayed round) count once; charges
/// outside the scope are ignored. When the RDP bound of the result already
/// fits the limit, both figures are RDP bounds (the PLD accountant is run
/// only for a projection that the RDP bound does not settle).
pub fn project(
    existing: &[Charge],
    planned: &[Charge],
    scope: &Scope,
    limit: Budget,
) -> Result<Projection, LedgerError> {
    limit.validate()?;
    let mut before = ChargeSet::default();
    for charge in existing.iter().filter(|charge| scope.contains(charge)) {
        before.insert(charge)?;
    }
    let mut after = before.clone();
    for charge in planned.iter().filter(|charge| scope.contains(charge)) {
        after.insert(charge)?;
    }
    // The RDP bound is a valid upper bound on ε. When it already fits the
    // limit, the PLD accountant's tighter figure cannot change the answer,
    // and it costs far more (nodes project at every phase, against a ledger
    // that grows with every job), so only a projection near or over the
    // limit pays for it.
    let rdp_after = compose_rdp_distinct(&after, limit.delta)?;
    let (epsilon_before, epsilon_after) = if rdp_after <= limit.epsilon {
        (
            rdp_only(compose_rdp_distinct(&before, limit.delta)?, limit.delta),
            rdp_only(rdp_after, limit.delta),
        )
    } else {
        (
            compose_distinct(&before, limit.delta)?,
            compose_distinct(&after, limit.delta)?,
        )
    };
    Ok(Projection {
        scope: scope.clone(),
        would_exceed: epsilon_after.epsilon > limit.epsilon,
        epsilon_before,
        epsilon_after,
        limit,
    })
}

/// Which side refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refuser {
    /// The coordinator, enforcing the job budget.
    Coordinator,
    /// The partner's node, enforcing its own cap.
    Partner,
}

/// A refusal to run (coordinator) or join (node) a round: an event for the
/// operator, the partner and the auditor, not a log line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetRefusal {
    /// Who refused.
    pub who: Refuser,
    /// The job whose round was refused.
    pub job_id: String,
    /// The round refused.
    pub round: u64,
    /// The partner whose budget would be exceeded.
    pub partner_id: String,
    /// The unit whose budget would be exceeded.
    pub unit: PrivacyUnit,
    /// The limit's scope (job, or dataset and period).
    pub scope: Scope,
    /// ε already spent in the scope.
    pub spent: f64,
    /// ε the scope would reach with this round.
    pub planned: f64,
    /// The limit; `None` when the node holds no cap for the dataset and
    /// unit, which it treats as a cap of zero (fail closed).
    pub limit: Option<Budget>,
}

impl std::fmt::Display for BudgetRefusal {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let who = match self.who {
            Refuser::Coordinator => "coordinator",
            Refuser::Partner => "partner",
        };
        match self.limit {
            Some(limit) => write!(
                formatter,
                "{who} refused job {} round {} for partner {} ({:?}): ε would reach {:.4} of {:.4} at δ={:e} (spent {:.4})",
                self.job_id,
                self.round,
                self.partner_id,
                self.unit,
                self.planned,
                limit.epsilon,
                limit.delta,
                self.spent
            ),
            None => write!(
                formatter,
                "{who} refused job {} round {} for partner {} ({:?}): no cap is declared for this dataset and unit",
                self.job_id, self.round, self.partner_id, self.unit
            ),
        }
    }
}

/// The round a set of planned charges belongs to (their largest round).
fn planned_round<'a>(planned: impl Iterator<Item = &'a Charge>) -> u64 {
    planned.map(|charge| charge.round).max().unwrap_or(0)
}

/// The coordinator's check before a round: for every partner and unit with a
/// planned charge, would the job's budget be exceeded? Returns one refusal
/// per (partner, unit) that would exceed; empty means the round may start.
pub fn check_job_budget(
    budget: &JobBudget,
    existing: &[Charge],
    planned: &[Charge],
) -> Result<Vec<BudgetRefusal>, LedgerError> {
    let mut targets = BTreeSet::new();
    for charge in planned {
        if charge.job_id != budget.job_id {
            return Err(LedgerError::WrongJob {
                expected: budget.job_id.clone(),
                found: charge.job_id.clone(),
            });
        }
        targets.insert((charge.partner_id.clone(), charge.unit));
    }
    let mut refusals = Vec::new();
    for (partner_id, unit) in targets {
        let scope = Scope::Job {
            job_id: budget.job_id.clone(),
            partner_id: partner_id.clone(),
            unit,
        };
        let projection = project(existing, planned, &scope, budget.for_unit(unit))?;
        if projection.would_exceed {
            refusals.push(BudgetRefusal {
                who: Refuser::Coordinator,
                job_id: budget.job_id.clone(),
                round: planned_round(planned.iter().filter(|charge| scope.contains(charge))),
                partner_id,
                unit,
                scope,
                spent: projection.epsilon_before.epsilon,
                planned: projection.epsilon_after.epsilon,
                limit: Some(projection.limit),
            });
        }
    }
    Ok(refusals)
}

/// The node's check before joining a round, whatever the coordinator says:
/// every planned charge must fit the partner's cap for its dataset and unit
/// in the period it falls in. A planned charge with no matching cap is
/// refused (fail closed). Returns the refusals; empty means the node may join.
pub fn check_partner_caps(
    caps: &[PartnerCap],
    existing: &[Charge],
    planned: &[Charge],
) -> Result<Vec<BudgetRefusal>, LedgerError> {
    let mut refusals = Vec::new();
    let mut checked: Vec<(Scope, u64, u64)> = Vec::new();
    for charge in planned {
        let matching: Vec<&PartnerCap> = caps
            .iter()
            .filter(|cap| cap.dataset_id == charge.dataset_id && cap.unit == charge.unit)
            .collect();
        if matching.is_empty() {
            refusals.push(BudgetRefusal {
                who: Refuser::Partner,
                job_id: charge.job_id.clone(),
                round: charge.round,
                partner_id: charge.partner_id.clone(),
                unit: charge.unit,
                scope: Scope::Job {
                    job_id: charge.job_id.clone(),
                    partner_id: charge.partner_id.clone(),
                    unit: charge.unit,
                },
                spent: 0.0,
                planned: charge
                    .epsilon_rdp
                    .min(charge.epsilon_pld.unwrap_or(f64::INFINITY)),
                limit: None,
            });
            continue;
        }
        for cap in matching {
            let scope = Scope::Period {
                partner_id: charge.partner_id.clone(),
                dataset_id: cap.dataset_id.clone(),
                unit: cap.unit,
                window: cap.period.window_containing(charge.recorded_at_unix_s)?,
            };
            // Several planned charges can share a scope; project it once.
            let checked_key = (scope.clone(), cap.epsilon.to_bits(), cap.delta.to_bits());
            if checked.contains(&checked_key) {
                continue;
            }
            checked.push(checked_key);
            let projection = project(existing, planned, &scope, cap.budget())?;
            if projection.would_exceed {
                refusals.push(BudgetRefusal {
                    who: Refuser::Partner,
                    job_id: charge.job_id.clone(),
                    round: charge.round,
                    partner_id: charge.partner_id.clone(),
                    unit: charge.unit,
                    scope,
                    spent: projection.epsilon_before.epsilon,
                    planned: projection.epsilon_after.epsilon,
                    limit: Some(projection.limit),
                });
            }
        }
    }
    Ok(refusals)
}
