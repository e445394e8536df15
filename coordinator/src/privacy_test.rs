//! `coordinator audit privacy-test`: the auditor's empirical privacy audit of
//! a job (docs/privacy-audit.md). It makes (or reads) the kit the audited
//! partner installs, submits the job naming the partner and the commitment
//! to the kit's seed, waits for it, fetches the final model and every
//! round's global model, runs two membership attacks on every canary
//! (black-box on the final model, white-box on the round-by-round updates
//! the coordinator saw), turns each attack's guesses into lower bounds on ε
//! and records them in the coordinator's audit log.
//!
//! What this module does not do: insert canaries (the partner's node), or
//! the statistics (`veil-privacy-audit`).

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;
use veil_job::JobSpec;
use veil_job::export::ExportedModel;
use veil_models::Dataset;
use veil_privacy_audit::canary::{AuditKit, AuditSeed, Canary, commitment_hex, generate_canaries};
use veil_privacy_audit::{AuditLevel, BoundMethod, GuessGrid, audit_scores};
use veil_privacy_ledger::PrivacyUnit;
use veil_wire::v1;

use crate::operator::{self, OperatorClient};

/// The black-box attack: the canary's log-likelihood margin under the
/// exported model.
pub const BLACK_BOX_ATTACK: &str = "black-box-loss";

/// The white-box attack: how far the rounds' aggregated updates moved the
/// model down each canary's own loss gradient.
pub const WHITE_BOX_ATTACK: &str = "white-box-gradient-alignment";

/// What one privacy test is asked to do.
#[derive(Debug, Clone)]
pub struct PrivacyTestConfig {
    /// The audited partner's node id.
    pub partner: String,
    /// The kit file: read when it exists, else created with `canaries`.
    pub kit_path: std::path::PathBuf,
    /// Canaries of a new kit; must match an existing kit's when given.
    pub canaries: Option<u64>,
    /// Confidence of the lower bounds.
    pub confidence: f64,
    /// Longest wait for the job to finish.
    pub deadline: Duration,
}

/// The outcome, printed as text or JSON and recorded in the audit log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrivacyTestReport {
    /// The audited job.
    pub job_id: String,
    /// The audited partner.
    pub partner: String,
    /// SHA-256 of the seed, hex.
    pub commitment: String,
    /// The attack scored.
    pub attack: String,
    /// Canaries randomised.
    pub canaries: u64,
    /// Guesses in the one-run bound's best guess set.
    pub guesses: u64,
    /// Correct guesses in that set.
    pub correct: u64,
    /// Canaries guessed "in" and "out" in that set.
    pub k_plus: usize,
    /// Canaries guessed "out".
    pub k_minus: usize,
    /// δ of the bounds (the job's).
    pub delta: f64,
    /// Confidence of the bounds.
    pub confidence: f64,
    /// Steinke, Nasr and Jagielski's one-run lower bound on ε.
    pub epsilon_lower: f64,
    /// The Gaussian f-DP refinement (valid for Gaussian-shaped mechanisms).
    pub epsilon_lower_gaussian: f64,
    /// The accountant's customer-level ε for the job; `None` without DP-SGD.
    pub epsilon_upper: Option<f64>,
    /// Whether a lower bound exceeds the upper bound: an implementation bug
    /// (or the rare failure the confidence allows).
    pub bound_violated: bool,
}

/// Both attacks' reports for one audited job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrivacyTestOutcome {
    /// The final model's canary margins.
    pub black_box: PrivacyTestReport,
    /// The rounds' updates against the canaries' gradients.
    pub white_box: PrivacyTestReport,
}

impl PrivacyTestOutcome {
    /// Both reports, black-box first.
    pub fn reports(&self) -> [&PrivacyTestReport; 2] {
        [&self.black_box, &self.white_box]
    }

    /// Whether either attack's lower bound exceeds the accountant's ε.
    pub fn bound_violated(&self) -> bool {
        self.reports().iter().any(|report| report.bound_violated)
    }

    /// The largest one-run lower bound of the two attacks.
    pub fn epsilon_lower(&self) -> f64 {
        self.black_box
            .epsilon_lower
            .max(self.white_box.epsilon_lower)
    }

    /// Both reports for people.
    pub fn to_text(&self) -> String {
        format!(
            "{}
{}",
            self.black_box.to_text(),
            self.white_box.to_text()
        )
    }
}

impl PrivacyTestReport {
    /// The report for people.
    pub fn to_text(&self) -> String {
        let upper = self.epsilon_upper.map_or_else(
            || "none (the job trains without DP-SGD)".to_owned(),
            |upper| format!("{upper:.3}"),
        );
        let mut text = format!(
            "privacy test of job {} at partner {} ({} canaries, attack {})\n\
             ε_lower (one run, {:.0}% confidence, δ = {}): {:.3}  [{} of {} guesses correct; {} in, {} out]\n\
             ε_lower (Gaussian f-DP): {:.3}\n\
             ε_upper (accountant, customer-level): {upper}\n",
            self.job_id,
            self.partner,
            self.canaries,
            self.attack,
            self.confidence * 100.0,
            self.delta,
            self.epsilon_lower,
            self.correct,
            self.guesses,
            self.k_plus,
            self.k_minus,
            self.epsilon_lower_gaussian,
        );
        if self.bound_violated {
            text.push_str(
                "LOWER BOUND ABOVE THE ACCOUNTANT'S ε: the job leaks more than it claims. Stop and investigate (docs/privacy-audit.md).\n",
            );
        }
        text
    }
}

/// Reads the kit at `config.kit_path`, or creates it (owner-only) when absent.
pub fn kit_for(config: &PrivacyTestConfig) -> anyhow::Result<(AuditSeed, u64)> {
    let path = &config.kit_path;
    if path.exists() {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read privacy audit kit {}", path.display()))?;
        let kit: AuditKit = toml::from_str(&text)
            .with_context(|| format!("privacy audit kit {}", path.display()))?;
        if let Some(canaries) = config.canaries.filter(|canaries| *canaries != kit.canaries) {
            bail!(
                "privacy audit kit {} holds {} canaries, --canaries says {canaries}",
                path.display(),
                kit.canaries
            );
        }
        let seed = kit
            .audit_seed()
            .with_context(|| format!("privacy audit kit {}", path.display()))?;
        return Ok((seed, kit.canaries));
    }
    let canaries = config.canaries.with_context(|| {
        format!(
            "{} does not exist: give --canaries to create it",
            path.display()
        )
    })?;
    if canaries < 2 {
        bail!("--canaries must be at least 2, got {canaries}");
    }
    let seed = AuditSeed::generate()?;
    let text = toml::to_string(&AuditKit::new(&seed, canaries)).context("serialising the kit")?;
    let mut file = veil_behaviour_features::create_owner_only(path)
        .with_context(|| format!("cannot create privacy audit kit {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write privacy audit kit {}", path.display()))?;
    Ok((seed, canaries))
}

/// `spec` turned into a privacy test of `partner` under `seed`'s commitment.
pub fn audit_job(
    mut spec: v1::JobSpec,
    partner: &str,
    seed: &AuditSeed,
) -> anyhow::Result<v1::JobSpec> {
    let parsed = JobSpec::from_wire(&spec).context("the job spec is invalid")?;
    if parsed.label.task.is_regression() {
        bail!("privacy tests need a binary task (churn or propensity): canary labels are 0 or 1");
    }
    spec.privacy_audit = Some(v1::PrivacyAudit {
        partner: partner.to_owned(),
        commitment: seed.commitment().to_vec(),
    });
    Ok(spec)
}

/// The audited job's canaries, after checking that `spec` is the privacy
/// test `seed` commits to.
fn job_canaries(
    job_id: &str,
    spec: &JobSpec,
    seed: &AuditSeed,
    canaries: u64,
) -> anyhow::Result<Vec<Canary>> {
    let Some(audit) = spec.privacy_audit.as_ref() else {
        bail!("job {job_id} is not a privacy test");
    };
    if audit.commitment != seed.commitment() {
        bail!(
            "job {job_id} names commitment {}, not this kit's",
            commitment_hex(&audit.commitment)
        );
    }
    let count = usize::try_from(canaries).context("too many canaries")?;
    Ok(generate_canaries(seed, count, spec.model_spec().n_inputs)?)
}

/// Every canary's features, row after row, as a model reads them.
fn canary_dataset(canaries: &[Canary], n_inputs: usize) -> anyhow::Result<Dataset> {
    Ok(Dataset::new(
        canaries
            .iter()
            .flat_map(|canary| canary.features.iter().copied())
            .collect(),
        canaries.iter().map(|canary| canary.label).collect(),
        n_inputs,
    )?)
}

/// The black-box attack: each canary's log-likelihood margin under the
/// model (its label's logit, sign-corrected), so a canary the model fits
/// scores high and is guessed "in"; then the best bounds over the standard
/// guess grid, one-run and Gaussian.
pub fn black_box_audit(
    model: &ExportedModel,
    seed: &AuditSeed,
    canaries: u64,
    confidence: f64,
) -> anyhow::Result<PrivacyTestReport> {
    let spec = &model.spec;
    let canaries = job_canaries(&model.job_id, spec, seed, canaries)?;
    let model_spec = spec.model_spec();
    let features: Vec<f32> = canaries
        .iter()
        .flat_map(|canary| canary.features.iter().copied())
        .collect();
    let logits = veil_models::predict_raw(&model_spec, &model.parameters, &features)?;
    let scores: Vec<f64> = logits
        .iter()
        .zip(&canaries)
        .map(|(logit, canary)| {
            let logit = f64::from(*logit);
            if canary.label > 0.5 { logit } else { -logit }
        })
        .collect();
    bound_report(
        &model.job_id,
        spec,
        &canaries,
        &scores,
        BLACK_BOX_ATTACK,
        confidence,
    )
}

/// The white-box attack on what the coordinator legitimately sees: for each
/// round, the aggregated update `θ_{r+1} − θ_r` projected on each canary's
/// own loss gradient at `θ_r` (unit length), negated and summed over rounds.
/// A canary that trained pushed every round's update down its gradient (by
/// up to the clip norm per step in DP-SGD), so its sum is positive in
/// expectation; an excluded canary's is the data's and the noise's
/// projection on a direction they do not favour. `history` is every global
/// model, initial first.
pub fn white_box_audit(
    job_id: &str,
    spec: &JobSpec,
    history: &[Vec<f32>],
    seed: &AuditSeed,
    canaries: u64,
    confidence: f64,
) -> anyhow::Result<PrivacyTestReport> {
    let canaries = job_canaries(job_id, spec, seed, canaries)?;
    let model_spec = spec.model_spec();
    let dataset = canary_dataset(&canaries, model_spec.n_inputs)?;
    if history.len() < 2 {
        bail!("job {job_id} has no aggregated update to attack");
    }
    let mut scores = vec![0.0f64; canaries.len()];
    for pair in history.windows(2) {
        let [before, after] = pair else { continue };
        let update: Vec<f32> = after.iter().zip(before).map(|(a, b)| a - b).collect();
        let alignments = veil_models::gradient_alignments(&model_spec, before, &update, &dataset)?;
        for (score, alignment) in scores.iter_mut().zip(alignments) {
            *score += alignment;
        }
    }
    bound_report(
        job_id,
        spec,
        &canaries,
        &scores,
        WHITE_BOX_ATTACK,
        confidence,
    )
}

/// One attack's scores turned into the best bounds over the standard guess
/// grid, one-run and Gaussian, beside the accountant's ε.
fn bound_report(
    job_id: &str,
    spec: &JobSpec,
    canaries: &[Canary],
    scores: &[f64],
    attack: &str,
    confidence: f64,
) -> anyhow::Result<PrivacyTestReport> {
    let Some(audit) = spec.privacy_audit.as_ref() else {
        bail!("job {job_id} is not a privacy test");
    };
    let included: Vec<bool> = canaries.iter().map(|canary| canary.included).collect();
    let grid = GuessGrid::standard(canaries.len())?;
    let level = AuditLevel::new(spec.privacy.delta, confidence)?;
    let one_run = audit_scores(scores, &included, &grid, &level, BoundMethod::OneRun)?;
    let gaussian = audit_scores(scores, &included, &grid, &level, BoundMethod::GaussianFdp)?;
    let epsilon_upper = customer_epsilon_upper(spec)?;
    let epsilon_lower = one_run.bound.epsilon_lower;
    let epsilon_lower_gaussian = gaussian.bound.epsilon_lower;
    Ok(PrivacyTestReport {
        job_id: job_id.to_owned(),
        partner: audit.partner.clone(),
        commitment: commitment_hex(&audit.commitment),
        attack: attack.to_owned(),
        canaries: one_run.bound.canaries,
        guesses: one_run.bound.guesses,
        correct: one_run.bound.correct,
        k_plus: one_run.k_plus,
        k_minus: one_run.k_minus,
        delta: spec.privacy.delta,
        confidence,
        epsilon_lower,
        epsilon_lower_gaussian,
        epsilon_upper,
        bound_violated: epsilon_upper
            .is_some_and(|upper| epsilon_lower.max(epsilon_lower_gaussian) > upper),
    })
}

/// The accountant's customer-level ε for the whole job (every round and the
/// final evaluation) at the job's δ: what the ledger charges when the job
/// completes. `None` when the job trains without DP-SGD.
fn customer_epsilon_upper(spec: &JobSpec) -> anyhow::Result<Option<f64>> {
    if spec.privacy.customers.is_none() {
        return Ok(None);
    }
    let planned = veil_job::planned_spend(spec).context("the job's privacy cannot be planned")?;
    Ok(planned
        .iter()
        .find(|spend| spend.unit == PrivacyUnit::Customer)
        .map(|spend| spend.epsilon))
}

/// The whole test against a coordinator: submit, start, wait (at most
/// `config.deadline`), fetch, attack, record.
pub async fn run_privacy_test(
    client: &mut OperatorClient,
    job_file: &Path,
    config: &PrivacyTestConfig,
) -> anyhow::Result<PrivacyTestOutcome> {
    run_privacy_test_of(client, operator::read_job_file(job_file)?, config).await
}

/// [`run_privacy_test`] of a job already read.
pub async fn run_privacy_test_of(
    client: &mut OperatorClient,
    job: v1::JobSpec,
    config: &PrivacyTestConfig,
) -> anyhow::Result<PrivacyTestOutcome> {
    let (seed, canaries) = kit_for(config)?;
    let spec = audit_job(job, &config.partner, &seed)?;
    let job_id = operator::submit(client, spec).await?;
    operator::start(client, &job_id).await?;
    let status = tokio::time::timeout(config.deadline, operator::watch(client, &job_id, |_| {}))
        .await
        .with_context(|| {
            format!(
                "job {job_id} did not finish within {} s",
                config.deadline.as_secs()
            )
        })??;
    if v1::JobState::try_from(status.state) != Ok(v1::JobState::Succeeded) {
        bail!(
            "job {job_id} ended unsuccessfully: {}",
            status.failure_reason
        );
    }
    let model = operator::fetch_model(client, &job_id).await?;
    let history = operator::fetch_model_history(client, &job_id).await?;
    let black_box = black_box_audit(&model, &seed, canaries, config.confidence)?;
    let white_box = white_box_audit(
        &job_id,
        &model.spec,
        &history,
        &seed,
        canaries,
        config.confidence,
    )?;
    let outcome = PrivacyTestOutcome {
        black_box,
        white_box,
    };
    for report in outcome.reports() {
        record(client, report).await?;
    }
    Ok(outcome)
}

/// Records the report in the coordinator's audit log.
async fn record(client: &mut OperatorClient, report: &PrivacyTestReport) -> anyhow::Result<()> {
    client
        .record_privacy_audit(v1::PrivacyAuditResult {
            job_id: report.job_id.clone(),
            attack: report.attack.clone(),
            canaries: report.canaries,
            guesses: report.guesses,
            correct: report.correct,
            delta: report.delta,
            confidence: report.confidence,
            epsilon_lower: report.epsilon_lower,
            epsilon_lower_gaussian: report.epsilon_lower_gaussian,
            epsilon_upper: report.epsilon_upper,
        })
        .await
        .map_err(|status| {
            anyhow::anyhow!(
                "the audit log did not record the result of {}: {}",
                report.job_id,
                status.message()
            )
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_existing_kit_is_reused_and_a_new_one_is_owner_only() {
        let folder = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let config = PrivacyTestConfig {
            partner: "retailer-a".to_owned(),
            kit_path: folder.path().join("kits/audit.toml"),
            canaries: Some(100),
            confidence: 0.95,
            deadline: Duration::from_secs(1),
        };
        let (seed, canaries) = kit_for(&config).unwrap_or_else(|error| panic!("{error:#}"));
        assert_eq!(canaries, 100);
        let (again, _) = kit_for(&PrivacyTestConfig {
            canaries: None,
            ..config.clone()
        })
        .unwrap_or_else(|error| panic!("{error:#}"));
        assert_eq!(seed, again);
        let mismatch = kit_for(&PrivacyTestConfig {
            canaries: Some(50),
            ..config.clone()
        })
        .map(|_| ())
        .unwrap_err();
        assert!(format!("{mismatch:#}").contains("holds 100 canaries"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&config.kit_path)
                .map(|metadata| metadata.permissions().mode())
                .unwrap_or_default();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
