//! `coordinator rules JOB --out rules.csv` and the report's rules table: a
//! finished basket-rules job's association rules, derived again from the
//! noised sums in the job store (post-processing only, like the report).

use std::path::Path;

use anyhow::{Context, bail};
use veil_basket_rules::{itemset_labels, write_rules_csv};
use veil_federation::JobState;
use veil_job::analysis::{Analysis, AnalysisOutcome};
use veil_job::basket_analysis::{BasketOutcome, BasketRules};

use crate::report::{analysis_outcome, job_snapshot};

/// Writes `job_id`'s rules as CSV to `out`: antecedent, consequent, then
/// support, confidence and lift, each with its interval for the DP noise.
/// Returns how many rules were written.
pub fn write_rules(state_dir: &Path, job_id: &str, out: &Path) -> anyhow::Result<usize> {
    let snapshot = job_snapshot(state_dir, job_id)?;
    let spec = &snapshot.descriptor;
    let Some(analysis @ Analysis::BasketRules(job)) = &spec.analysis else {
        bail!("job {job_id} is not a basket-rules job");
    };
    if snapshot.state != JobState::Succeeded {
        bail!("job {job_id} has not succeeded; its rules exist once every level is released");
    }
    let AnalysisOutcome::BasketRules(outcome) =
        analysis_outcome(spec, analysis, &snapshot.history)?
    else {
        bail!("job {job_id}'s releases do not make basket rules");
    };
    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    write_rules_csv(file, &outcome.rules, &job.vocabulary)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(outcome.rules.len())
}

/// The report's rows: items by name, each estimate with its interval.
pub(crate) fn report_rules(
    job: &BasketRules,
    outcome: &BasketOutcome,
) -> anyhow::Result<Vec<veil_report::Rule>> {
    outcome
        .rules
        .iter()
        .map(|rule| {
            Ok(veil_report::Rule {
                antecedent: itemset_labels(&rule.antecedent, &job.vocabulary)?,
                consequent: itemset_labels(&rule.consequent, &job.vocabulary)?,
                support: report_estimate(&rule.support),
                confidence: report_estimate(&rule.confidence),
                lift: report_estimate(&rule.lift),
            })
        })
        .collect()
}

/// A rule metric's estimate as the report shows every estimate.
fn report_estimate(estimate: &veil_basket_rules::Estimate) -> veil_scoring_evaluation::Estimate {
    veil_scoring_evaluation::Estimate {
        value: estimate.value,
        lower: estimate.low,
        upper: estimate.high,
    }
}
