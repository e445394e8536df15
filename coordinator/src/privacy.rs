//! The coordinator's privacy ledger and budget gate: before a training round
//! runs, its projected charges (and, for the last round, the final
//! evaluation's) must fit every partner's job budget, or the round is refused
//! (an engine event, not a log line); when a round's aggregate is committed,
//! its charges are written durably *before* the new model can be read, so no
//! released model is ever missing from the ledger. The final evaluation is
//! charged the same way, under its own key, when its sum is decoded.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use veil_federation::{Engine, EngineEvent, EventKind, JobId, NodeId, Phase};
use veil_job::{JobSpec, RoundParty, phase_charges};
use veil_metrics::Histogram;
use veil_privacy_ledger::{
    BudgetRefusal, Charge, PrivacyUnit, SqliteLedger, check_job_budget, compose_rdp,
};

/// What the guard did about one event, for the audit trail.
#[derive(Debug, Default)]
pub(crate) struct PrivacyOutcome {
    /// The round was refused for these partners and units.
    pub(crate) refusals: Vec<BudgetRefusal>,
    /// A round was committed with these charges, recorded before release.
    pub(crate) charged: Vec<Charge>,
    /// The nodes whose inputs the completed (or abandoned) phase's sum
    /// holds: a training round's contributors, or the final evaluation's.
    pub(crate) contributors: Vec<NodeId>,
}

/// What one partner has spent of one job in one privacy unit, for
/// `status` and `watch`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PartnerSpend {
    pub(crate) partner: String,
    pub(crate) unit: PrivacyUnit,
    /// Composed over the job's charges in the ledger so far, at the job's δ.
    pub(crate) spent: f64,
    /// What the job's whole plan spends (every round and the final evaluation).
    pub(crate) planned: f64,
    /// The job's budget in that unit.
    pub(crate) budget: f64,
}

/// The ledger and what it needs to remember between events.
pub(crate) struct PrivacyGuard {
    ledger: SqliteLedger,
    /// Seconds per ledger write, for the `ledger_write` metric.
    write_latency: Histogram,
    /// The nodes invited to the training phase under way, per job and round.
    invited: HashMap<(JobId, u32), Vec<NodeId>>,
    /// Each job's composed spend, with the number of its charges it was
    /// composed from. Composing takes the PLD accountant tens of milliseconds
    /// and `watch` asks for a status at every event, so a job's spend is
    /// composed again only when a charge was added (charges are only ever
    /// added, so their count tells).
    spend_cache: HashMap<String, (usize, Vec<PartnerSpend>)>,
    /// Each job's whole plan, composed once: a job's spec never changes.
    plan_cache: HashMap<String, Vec<veil_job::PlannedSpend>>,
}

/// Jobs whose composed spend and plan are cached at most: the jobs being
/// watched now, with room to spare (an ended job leaves the caches when it
/// ends, and comes back only while someone reads its status). Beyond it the
/// caches start again, so a coordinator that runs jobs for months does not
/// keep every job's figures (a cache miss only composes again).
const CACHED_JOBS: usize = 16;

/// Inserts into a per-job cache, emptying it first when it is full.
fn bounded_insert<V>(cache: &mut HashMap<String, V>, job: &str, value: V) {
    if cache.len() >= CACHED_JOBS && !cache.contains_key(job) {
        cache.clear();
    }
    cache.insert(job.to_owned(), value);
}

impl PrivacyGuard {
    /// Opens (or creates) the ledger file.
    pub(crate) fn open(path: &Path, write_latency: Histogram) -> anyhow::Result<Self> {
        let ledger = SqliteLedger::open(path)
            .with_context(|| format!("coordinator privacy ledger {}", path.display()))?;
        Ok(Self {
            ledger,
            write_latency,
            invited: HashMap::new(),
            spend_cache: HashMap::new(),
            plan_cache: HashMap::new(),
        })
    }

    /// Each partner's spend of `job` so far, per unit, against the plan and
    /// the budget. Partners appear once the ledger holds a charge of theirs.
    pub(crate) fn job_spend(
        &mut self,
        spec: &JobSpec,
        job: &str,
    ) -> anyhow::Result<Vec<PartnerSpend>> {
        let charges = self.ledger.charges_for_job(job)?;
        if let Some((composed_from, spend)) = self.spend_cache.get(job)
            && *composed_from == charges.len()
        {
            return Ok(spend.clone());
        }
        let planned = match self.plan_cache.get(job) {
            Some(planned) => planned.clone(),
            None => {
                let planned = veil_job::planned_spend(spec)?;
                bounded_insert(&mut self.plan_cache, job, planned.clone());
                planned
            }
        };
        let spend = Self::compose_spend(spec, &planned, &charges)?;
        bounded_insert(&mut self.spend_cache, job, (charges.len(), spend.clone()));
        Ok(spend)
    }

    fn compose_spend(
        spec: &JobSpec,
        planned: &[veil_job::PlannedSpend],
        charges: &[Charge],
    ) -> anyhow::Result<Vec<PartnerSpend>> {
        let mut by_partner: BTreeMap<(String, PrivacyUnit), Vec<&Charge>> = BTreeMap::new();
        for charge in charges {
            by_partner
                .entry((charge.partner_id.clone(), charge.unit))
                .or_default()
                .push(charge);
        }
        by_partner
            .into_iter()
            .map(|((partner, unit), charges)| {
                let plan = planned.iter().find(|plan| plan.unit == unit);
                Ok(PartnerSpend {
                    spent: veil_privacy_ledger::compose(charges, spec.privacy.delta)?.epsilon,
                    planned: plan.map_or(f64::NAN, |plan| plan.epsilon),
                    budget: plan.map_or(f64::NAN, |plan| plan.budget),
                    partner,
                    unit,
                })
            })
            .collect()
    }

    /// Reacts to one engine event while the engine is still locked, so a
    /// refusal lands before any task of the round is handed out and a charge
    /// lands before the round's model can be fetched.
    pub(crate) fn observe(
        &mut self,
        engine: &mut Engine<JobSpec>,
        event: &EngineEvent,
        now: std::time::Instant,
    ) -> PrivacyOutcome {
        let mut outcome = PrivacyOutcome::default();
        let job = &event.job;
        match &event.kind {
            EventKind::PhaseOpened {
                round,
                phase,
                invited,
                ..
            } => {
                self.invited.insert((job.clone(), *round), invited.clone());
                let (reason, refusals) = match self
                    .budget_refusals(engine, job, *phase, *round, invited)
                {
                    Ok(refusals) if refusals.is_empty() => return outcome,
                    Ok(refusals) => (
                        refusals
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join("; "),
                        refusals,
                    ),
                    // Fail closed: a round that cannot be priced does not run.
                    Err(error) => (format!("the round cannot be priced: {error:#}"), Vec::new()),
                };
                tracing::warn!(job = %job, round, %reason, "refusing round: privacy budget");
                let refused = match phase {
                    Phase::Train => engine.refuse_round(job, *round, reason, now),
                    // Nothing can be released before the feature statistics,
                    // and an analysis cannot skip a release it builds on.
                    Phase::FeatureStats | Phase::Release => {
                        engine.fail_job(job, format!("privacy budget: {reason}"), now)
                    }
                    // Planned with the last round's training, so only a
                    // ledger changed behind the job's back gets here: the
                    // evaluation must not run uncharged.
                    Phase::Evaluate => engine.fail_job(
                        job,
                        format!("privacy budget of the final evaluation: {reason}"),
                        now,
                    ),
                };
                if let Err(error) = refused {
                    tracing::error!(job = %job, round, %error, "could not refuse the round");
                }
                outcome.refusals = refusals;
            }
            EventKind::PhaseCompleted {
                round,
                phase,
                dropped,
                ..
            } => {
                let Some(invited) = self.invited.remove(&(job.clone(), *round)) else {
                    return outcome;
                };
                let contributors: Vec<NodeId> = invited
                    .iter()
                    .filter(|node| !dropped.contains(node))
                    .cloned()
                    .collect();
                let charged =
                    self.charge(engine, job, *phase, *round, invited.len(), &contributors);
                // The guarantee the round's secure aggregation had, beside
                // its charges (informational: a failure is logged).
                let guarantee = engine
                    .snapshot(job)
                    .ok()
                    .and_then(|snapshot| snapshot.pending_train)
                    .filter(|record| record.round == *round)
                    .and_then(|record| record.secure_guarantee);
                if let (Phase::Train, Some(guarantee)) = (*phase, guarantee) {
                    if let Err(error) =
                        self.ledger
                            .record_guarantee(job, u64::from(*round), &guarantee)
                    {
                        tracing::error!(job = %job, round, %error, "round guarantee not recorded");
                    }
                }
                outcome.contributors = contributors;
                match charged {
                    Ok(charged) => outcome.charged = charged,
                    Err(error) => stop_uncharged(engine, job, *round, &error, now),
                }
            }
            EventKind::PhaseAbandoned {
                round,
                phase,
                released,
                cohort,
                ..
            } => {
                // The released inputs left even though no sum was released
                // from them: charged as the nodes charged themselves.
                self.invited.remove(&(job.clone(), *round));
                match self.charge(engine, job, *phase, *round, *cohort as usize, released) {
                    Ok(charged) => {
                        outcome.charged = charged;
                        outcome.contributors = released.clone();
                    }
                    Err(error) => stop_uncharged(engine, job, *round, &error, now),
                }
            }
            EventKind::Succeeded | EventKind::Failed { .. } | EventKind::Cancelled => {
                self.invited
                    .retain(|(invited_job, _), _| invited_job != job);
                // Its spend is composed no more while it runs; a later
                // status composes it once more.
                self.spend_cache.remove(job);
                self.plan_cache.remove(job);
            }
            _ => {}
        }
        outcome
    }

    /// The partners and units whose job budget the round would exceed.
    fn budget_refusals(
        &self,
        engine: &Engine<JobSpec>,
        job: &str,
        phase: Phase,
        round: u32,
        invited: &[NodeId],
    ) -> anyhow::Result<Vec<BudgetRefusal>> {
        let spec = engine.descriptor(job)?;
        let existing = self.ledger.charges_for_job(job)?;
        let mut planned = planned_charges(spec, job, phase, round, invited, invited.len())?;
        // The last round's training is refused up front if the final
        // evaluation it leads to would not fit, rather than train a model
        // that can then not be evaluated.
        if phase == Phase::Train && round == spec.rounds {
            planned.extend(planned_charges(
                spec,
                job,
                Phase::Evaluate,
                round,
                invited,
                invited.len(),
            )?);
        }
        let planned = planned
            .into_iter()
            .filter(|charge| !existing.iter().any(|old| old.key() == charge.key()))
            .collect::<Vec<_>>();
        let budget = spec.privacy.job_budget(job);
        Ok(check_job_budget(&budget, &existing, &planned)?)
    }

    fn charge(
        &mut self,
        engine: &Engine<JobSpec>,
        job: &str,
        phase: Phase,
        round: u32,
        cohort: usize,
        contributors: &[NodeId],
    ) -> anyhow::Result<Vec<Charge>> {
        let spec = engine.descriptor(job)?;
        let charges = planned_charges(spec, job, phase, round, contributors, cohort)?;
        for charge in &charges {
            let started = Instant::now();
            self.ledger.record(charge)?;
            self.write_latency.observe(started.elapsed().as_secs_f64());
        }
        Ok(charges)
    }

    /// Every charge of `job` in the ledger, for the console's charts.
    pub(crate) fn charges_for_job(&self, job: &str) -> anyhow::Result<Vec<Charge>> {
        Ok(self.ledger.charges_for_job(job)?)
    }

    /// ε each partner has spent in `job` so far, per unit: the RDP bound at
    /// the job budget's δ, as `veil-ledger report` plots it.
    pub(crate) fn epsilon_spent_rdp(
        &self,
        engine: &Engine<JobSpec>,
        job: &str,
    ) -> anyhow::Result<Vec<(NodeId, PrivacyUnit, f64)>> {
        let budget = engine.descriptor(job)?.privacy.job_budget(job);
        let charges = self.ledger.charges_for_job(job)?;
        let mut groups: BTreeMap<(&str, PrivacyUnit), Vec<&Charge>> = BTreeMap::new();
        for charge in &charges {
            groups
                .entry((charge.partner_id.as_str(), charge.unit))
                .or_default()
                .push(charge);
        }
        groups
            .into_iter()
            .map(|((partner, unit), group)| {
                let epsilon = compose_rdp(group, budget.for_unit(unit).delta)?;
                Ok((partner.to_owned(), unit, epsilon))
            })
            .collect()
    }
}

/// A round whose charges could not be recorded: the job stops, so the
/// round's model never goes out uncharged.
fn stop_uncharged(
    engine: &mut Engine<JobSpec>,
    job: &str,
    round: u32,
    error: &anyhow::Error,
    now: std::time::Instant,
) {
    let reason = format!("round {round}: privacy charge not recorded: {error:#}");
    tracing::error!(job = %job, round, %reason);
    if let Err(error) = engine.fail_job(job, reason, now) {
        tracing::error!(job = %job, %error, "could not stop the job");
    }
}

/// The charges of one phase for `partners`, priced as every node prices them.
fn planned_charges(
    spec: &JobSpec,
    job: &str,
    phase: Phase,
    round: u32,
    partners: &[NodeId],
    cohort: usize,
) -> anyhow::Result<Vec<Charge>> {
    let now = unix_seconds();
    let mut charges = Vec::new();
    for partner in partners {
        let party = RoundParty {
            job_id: job,
            round,
            partner_id: partner,
            dataset_id: partner,
            cohort,
        };
        for spec in phase_charges(spec, phase, party)? {
            charges.push(Charge::new(spec, now)?);
        }
    }
    Ok(charges)
}

fn unix_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64)
}
