//! The privacy page's figures from the ledger's charges: each partner's
//! cumulative ε after each of its charges in a job (the chart), and ε per
//! partner and calendar year across jobs (the scope of a partner's own cap).
//! Pure: the server reads the charges and the audit log; this composes.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike};
use veil_privacy_accounting::{Accountant, RdpCurves};
use veil_privacy_ledger::{Charge, JobBudget, PrivacyUnit};

use crate::pages::{EpsilonLine, EpsilonPoint, PrivacyChart, YearSpend};

/// Points drawn per partner line at most: a long job's line shows an evenly
/// spaced selection of its charges (and always the last), so the page stays
/// small enough to load and draw.
pub const MAX_POINTS_PER_LINE: usize = 100;

/// The mechanism of a charge, in words.
fn mechanism_text(charge: &Charge) -> String {
    match charge.mechanism.noise_multiplier() {
        Ok(sigma) => format!(
            "{} (noise multiplier {sigma:.3}, clip {}, {:?})",
            charge.mechanism.kind(),
            charge.mechanism.clip_norm(),
            charge.trust_model
        ),
        Err(_) => charge.mechanism.kind().to_owned(),
    }
}

/// One job's charts, one per privacy unit: each partner's cumulative ε (RDP
/// at the job budget's δ, as `veil-ledger report` draws it) after each of
/// its charges. `curves` keeps each mechanism's RDP curve for the next call:
/// the server holds one for its lifetime, since mechanisms never change.
pub fn job_charts(
    job: &str,
    budget: &JobBudget,
    charges: &[Charge],
    curves: &mut RdpCurves,
) -> Vec<PrivacyChart> {
    let groups = group_by(charges, |charge| (charge.unit, charge.partner_id.as_str()));
    let lines = across_threads(groups, curves, |((unit, partner), group), curves| {
        let delta = budget.for_unit(unit).delta;
        (unit, partner_line(partner, group, delta, curves))
    });
    let mut by_unit: BTreeMap<PrivacyUnit, Vec<EpsilonLine>> = BTreeMap::new();
    for (unit, line) in lines {
        by_unit.entry(unit).or_default().push(line);
    }
    by_unit
        .into_iter()
        .map(|(unit, lines)| PrivacyChart {
            job: job.to_owned(),
            unit: unit.name().to_owned(),
            budget: Some(budget.for_unit(unit).epsilon),
            lines,
        })
        .collect()
}

/// One partner's line: its charges composed in order, ε evaluated at the
/// points drawn.
fn partner_line(
    partner: &str,
    mut group: Vec<&Charge>,
    delta: f64,
    curves: &mut RdpCurves,
) -> EpsilonLine {
    // The ledger report's order: by round, then release (usually the
    // ledger's order already).
    if !group.is_sorted_by_key(|charge| (charge.round, charge.release)) {
        group.sort_by_key(|charge| (charge.round, charge.release));
    }
    let mut accountant = Accountant::new();
    let charges = group.len();
    // Every charge is composed; ε is evaluated only where a point is drawn.
    let stride = charges.div_ceil(MAX_POINTS_PER_LINE).max(1);
    let mut points: Vec<EpsilonPoint> = Vec::with_capacity(charges.min(MAX_POINTS_PER_LINE));
    // A charge the accountant refuses leaves every later total unbounded.
    let mut unbounded = false;
    // The text of the last mechanism described: a line's charges mostly
    // share one, and formatting it per point would cost more than ε.
    let mut described: Option<(&Charge, String)> = None;
    for (index, charge) in group.into_iter().enumerate() {
        unbounded |= charge.mechanism.compose_into(&mut accountant).is_err();
        if (index + 1) % stride != 0 && index + 1 != charges {
            continue;
        }
        let epsilon = composed_epsilon(&accountant, unbounded, delta, curves);
        let mechanism = match &described {
            Some((previous, text))
                if previous.mechanism == charge.mechanism
                    && previous.trust_model == charge.trust_model =>
            {
                text.clone()
            }
            _ => {
                let text = mechanism_text(charge);
                described = Some((charge, text.clone()));
                text
            }
        };
        points.push(EpsilonPoint {
            round: charge.round,
            release: charge.release.name().to_owned(),
            epsilon,
            charge: charge.epsilon_rdp,
            mechanism,
        });
    }
    EpsilonLine {
        partner: partner.to_owned(),
        points,
        charges,
    }
}

/// `work` applied to every group, in order, on as many threads as the
/// machine has cores: partners' lines are independent, and composing a
/// hundred partners' thousand charges, each mechanism's RDP curve computed
/// once, is most of a privacy page's time. Each thread works from a clone of
/// `curves` (shared, reference-counted curves); what they computed is kept.
fn across_threads<G: Send, R: Send>(
    groups: Vec<G>,
    curves: &mut RdpCurves,
    work: impl Fn(G, &mut RdpCurves) -> R + Sync,
) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |cores| cores.get())
        .min(groups.len());
    if threads <= 1 {
        return groups
            .into_iter()
            .map(|group| work(group, curves))
            .collect();
    }
    let per_thread = groups.len().div_ceil(threads);
    let mut batches: Vec<Vec<G>> = Vec::with_capacity(threads);
    for group in groups {
        match batches.last_mut() {
            Some(batch) if batch.len() < per_thread => batch.push(group),
            _ => batches.push(vec![group]),
        }
    }
    let work = &work;
    let finished: Vec<(Vec<R>, RdpCurves)> = std::thread::scope(|scope| {
        let handles: Vec<_> = batches
            .into_iter()
            .map(|batch| {
                let mut own = curves.clone();
                scope.spawn(move || {
                    let results: Vec<R> = batch
                        .into_iter()
                        .map(|group| work(group, &mut own))
                        .collect();
                    (results, own)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| match handle.join() {
                Ok(finished) => finished,
                // A panic in pure arithmetic is a bug here; carry it on.
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    });
    let mut results = Vec::new();
    for (batch, computed) in finished {
        results.extend(batch);
        curves.absorb(computed);
    }
    results
}

/// The RDP ε of what `accountant` composed, at `delta`; unbounded once a
/// charge was refused (every later total is then unbounded too) or when the
/// conversion fails.
fn composed_epsilon(
    accountant: &Accountant,
    unbounded: bool,
    delta: f64,
    curves: &mut RdpCurves,
) -> f64 {
    if unbounded {
        return f64::INFINITY;
    }
    accountant
        .epsilon_rdp_cached(delta, curves)
        .unwrap_or(f64::INFINITY)
}

/// The calendar year (UTC) of a UNIX time, if it has one.
pub fn year_of(unix_s: i64) -> Option<i32> {
    DateTime::from_timestamp(unix_s, 0).map(|time| time.year())
}

/// [`year_of`] for many times: the last year's window is kept, since a
/// ledger's charges mostly fall in one year.
#[derive(Default)]
struct YearOf {
    /// The last year found, with its first second and the first second after.
    last: Option<(i32, i64, i64)>,
}

impl YearOf {
    fn year(&mut self, unix_s: i64) -> Option<i32> {
        if let Some((year, start, end)) = self.last
            && (start..end).contains(&unix_s)
        {
            return Some(year);
        }
        let window = veil_privacy_ledger::Period::CalendarYear
            .window_containing(unix_s)
            .ok()?;
        let year = year_of(unix_s)?;
        self.last = Some((year, window.start_unix_s, window.end_unix_s));
        Some(year)
    }
}

/// `items` grouped by `key`, in key order, each group in the items' order.
/// Ledgers return a partner's charges together, so each item's key is
/// compared with the previous one's and the map is searched only when it
/// changes: grouping 100,000 charges is then a scan, not 100,000 searches.
fn group_by<'a, T, K: Ord>(items: &'a [T], key: impl Fn(&'a T) -> K) -> Vec<(K, Vec<&'a T>)> {
    let mut groups: BTreeMap<K, Vec<&'a T>> = BTreeMap::new();
    let mut run: Option<(K, Vec<&'a T>)> = None;
    for item in items {
        let item_key = key(item);
        match &mut run {
            Some((current, members)) if *current == item_key => members.push(item),
            _ => {
                if let Some((current, members)) = run.replace((item_key, vec![item])) {
                    groups.entry(current).or_default().extend(members);
                }
            }
        }
    }
    if let Some((current, members)) = run {
        groups.entry(current).or_default().extend(members);
    }
    groups.into_iter().collect()
}

/// ε per partner, dataset, privacy unit and calendar year (UTC), composed
/// across every job: the scope of a partner's own yearly cap
/// (`Scope::Period`), so the figure is what the partner's node composes
/// against its cap, by the RDP accountant at the smallest δ charged (smaller
/// δ, larger ε). `cap_declines` holds, per partner and year, how many phases
/// the partner's node declined because its cap would be exceeded.
pub fn yearly_spend(
    charges: &[Charge],
    cap_declines: &BTreeMap<(String, i32), usize>,
    curves: &mut RdpCurves,
) -> Vec<YearSpend> {
    let mut years = YearOf::default();
    // A time outside chrono's range cannot be in any cap period.
    let dated: Vec<(i32, &Charge)> = charges
        .iter()
        .filter_map(|charge| Some((years.year(charge.recorded_at_unix_s)?, charge)))
        .collect();
    let groups = group_by(&dated, |(year, charge)| {
        (
            *year,
            charge.partner_id.as_str(),
            charge.dataset_id.as_str(),
            charge.unit,
        )
    });
    let mut rows: Vec<YearSpend> = across_threads(
        groups,
        curves,
        |((year, partner, dataset, unit), group), curves| {
            let delta = group
                .iter()
                .map(|(_, charge)| charge.delta)
                .fold(f64::INFINITY, f64::min);
            let mut accountant = Accountant::new();
            let mut unbounded = false;
            let mut jobs = std::collections::BTreeSet::new();
            for (_, charge) in &group {
                unbounded |= charge.mechanism.compose_into(&mut accountant).is_err();
                jobs.insert(charge.job_id.as_str());
            }
            let epsilon = composed_epsilon(&accountant, unbounded, delta, curves);
            YearSpend {
                year,
                partner: partner.to_owned(),
                dataset: dataset.to_owned(),
                unit: unit.name().to_owned(),
                epsilon,
                delta,
                jobs: jobs.len(),
                charges: group.len(),
                cap_declines: cap_declines
                    .get(&(partner.to_owned(), year))
                    .copied()
                    .unwrap_or(0),
            }
        },
    );
    // Newest year first, then partner.
    rows.sort_by(|a, b| b.year.cmp(&a.year).then_with(|| a.partner.cmp(&b.partner)));
    rows
}

#[cfg(test)]
mod tests {
    use veil_privacy_ledger::{Budget, Mechanism, Release, TrustModel};

    use super::*;

    /// 2024-01-01 00:00:00 UTC.
    const START_OF_2024: i64 = 1_704_067_200;

    fn charge(job: &str, partner: &str, round: u64, at: i64, sampling_rate: f64) -> Charge {
        Charge {
            job_id: job.to_owned(),
            round,
            partner_id: partner.to_owned(),
            dataset_id: partner.to_owned(),
            unit: PrivacyUnit::Customer,
            release: Release::Round,
            trust_model: TrustModel::LocalDpSgd,
            mechanism: Mechanism::PoissonSubsampledGaussian {
                sampling_rate,
                noise_multiplier: 1.1,
                steps: 100,
                clip_norm: 1.0,
            },
            delta: 1e-5,
            epsilon_rdp: 0.01,
            epsilon_pld: None,
            recorded_at_unix_s: at,
        }
    }

    fn budget(job: &str) -> JobBudget {
        let budget = Budget {
            epsilon: 8.0,
            delta: 1e-5,
        };
        JobBudget {
            job_id: job.to_owned(),
            customer: budget,
            partner: budget,
        }
    }

    /// Grouping keeps each group in the items' order whether or not the
    /// items come grouped.
    #[test]
    fn grouping_gives_key_order_and_keeps_each_groups_order() {
        let items = [("b", 1), ("b", 2), ("a", 3), ("b", 4), ("a", 5), ("c", 6)];
        let groups = group_by(&items, |(key, _)| *key);
        let flat: Vec<(&str, Vec<i32>)> = groups
            .into_iter()
            .map(|(key, members)| (key, members.iter().map(|(_, value)| *value).collect()))
            .collect();
        assert_eq!(
            flat,
            [("a", vec![3, 5]), ("b", vec![1, 2, 4]), ("c", vec![6])]
        );
    }

    #[test]
    fn years_are_found_across_year_boundaries_in_any_order() {
        let mut years = YearOf::default();
        for at in [
            START_OF_2024,
            START_OF_2024 - 1,
            START_OF_2024 + 100,
            START_OF_2024 + 366 * 86_400,
            START_OF_2024 + 366 * 86_400 - 1,
            i64::MAX,
        ] {
            assert_eq!(years.year(at), year_of(at), "{at}");
        }
        assert_eq!(years.year(START_OF_2024), Some(2024));
        assert_eq!(years.year(START_OF_2024 - 1), Some(2023));
    }

    /// The chart's ε is the ledger report's: the same composition, checked
    /// against `veil_privacy_ledger::compose_rdp` of the charges so far.
    #[test]
    fn each_point_is_the_composition_of_the_charges_up_to_it() {
        let charges: Vec<Charge> = (1..=250)
            .flat_map(|round| {
                [
                    charge("job-1", "bank-a", round, START_OF_2024, 0.01),
                    charge("job-1", "shop-b", round, START_OF_2024, 0.02),
                ]
            })
            .collect();
        let mut curves = RdpCurves::default();
        let charts = job_charts("job-1", &budget("job-1"), &charges, &mut curves);
        // The partners' lines are composed on separate threads; the curves
        // they computed come back, and a second page from them is the same.
        let again = job_charts("job-1", &budget("job-1"), &charges, &mut curves);
        assert_eq!(format!("{again:?}"), format!("{charts:?}"));
        assert_eq!(charts.len(), 1);
        let lines = &charts[0].lines;
        assert_eq!(lines.len(), 2);
        for line in lines {
            assert_eq!(line.charges, 250);
            // Every third charge (250 / 100 rounded up) and the last.
            let rounds: Vec<u64> = line.points.iter().map(|point| point.round).collect();
            let expected: Vec<u64> = (1..=250)
                .filter(|round| round % 3 == 0)
                .chain([250])
                .collect();
            assert_eq!(rounds, expected);
            for point in &line.points {
                let so_far = charges.iter().filter(|charge| {
                    charge.partner_id == line.partner && charge.round <= point.round
                });
                let expected = veil_privacy_ledger::compose_rdp(so_far, 1e-5).unwrap();
                assert_eq!(point.epsilon.to_bits(), expected.to_bits(), "{point:?}");
            }
        }
    }

    /// A partner's year composes its charges of every job in that year and
    /// no other, as its node's cap does.
    #[test]
    fn a_year_composes_every_job_of_that_year_and_counts_cap_declines() {
        let late_2024 = START_OF_2024 + 365 * 86_400 - 1;
        let early_2025 = START_OF_2024 + 366 * 86_400;
        let charges = vec![
            charge("job-1", "bank-a", 1, START_OF_2024, 0.01),
            charge("job-2", "bank-a", 1, late_2024, 0.02),
            charge("job-2", "bank-a", 2, early_2025, 0.02),
            charge("job-2", "shop-b", 1, late_2024, 0.02),
        ];
        let declines = BTreeMap::from([(("bank-a".to_owned(), 2025), 2)]);
        let rows = yearly_spend(&charges, &declines, &mut RdpCurves::default());
        let summary: Vec<(i32, &str, usize, usize, usize)> = rows
            .iter()
            .map(|row| {
                (
                    row.year,
                    row.partner.as_str(),
                    row.jobs,
                    row.charges,
                    row.cap_declines,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (2025, "bank-a", 1, 1, 2),
                (2024, "bank-a", 2, 2, 0),
                (2024, "shop-b", 1, 1, 0)
            ]
        );
        let bank_2024 = veil_privacy_ledger::compose_rdp(&charges[..2], 1e-5).unwrap();
        assert_eq!(rows[1].epsilon.to_bits(), bank_2024.to_bits());
        assert_eq!(rows[1].delta, 1e-5);
    }
}
