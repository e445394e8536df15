//! Per-customer behaviour features at a cutoff date, and the examples built from them.
//!
//! Only transactions on or before the cutoff day (UTC) are used, so features never see the
//! label window. Days are whole UTC day numbers; "the last `W` days" means the cutoff day and
//! the `W - 1` days before it. With `n` transactions on or before the cutoff, amounts `a_i`,
//! first and last purchase days `first` and `last`, and `W = recent_window_days`:
//!
//! | Feature | Formula |
//! |---|---|
//! | `recency_days` | `cutoff - last` (0 if the customer bought on the cutoff day) |
//! | `frequency` | `ln(1 + n)` |
//! | `monetary` | `ln(1 + Σ a_i)` |
//! | `avg_basket` | `ln(1 + Σ a_i / n)` |
//! | `tenure_days` | `cutoff - first` |
//! | `mean_inter_purchase_days` | `(last - first) / (n - 1)`, or `tenure_days` when `n = 1` |
//! | `recent_count` | `ln(1 + c_r)`, `c_r` = transactions in the last `W` days |
//! | `recent_spend` | `ln(1 + s_r)`, `s_r` = spend in the last `W` days |
//! | `count_trend` | `(c_r - c_p) / (c_r + c_p + 1)`, `c_p` = transactions in the `W` days before those |
//! | `spend_trend` | `(s_r - s_p) / (s_r + s_p + 1)`, `s_p` = spend in the `W` days before those |
//!
//! Besides these standard features, which [`FeatureSpec::standard`] computes, a job may ask
//! for features of the product mix, the channel mix and the de-identified customer profile
//! (see `docs/features.md`). Over the `n_c` transactions up to the cutoff that carry a
//! category (`n_h` for channel), with `n_k` of them in category (channel) `k`:
//!
//! | Feature | Formula |
//! |---|---|
//! | `category_concentration` | `Σ_k (n_k / n_c)²` (1 = one category only), 0 when `n_c = 0` |
//! | `distinct_categories` | `ln(1 + number of categories bought)` |
//! | `top_channel_share` | `max_k n_k / n_h`, 0 when `n_h = 0` |
//! | `distinct_channels` | `ln(1 + number of channels used)` |
//! | `profile_age` | age from the generalised profile: the band's middle, else cutoff year − birth year (middle of the generalised year or decade); 0 when unknown |
//! | `profile_age_known` | 1 when `profile_age` is known, else 0 |
//! | `gender_female` | 1 female, 0 male, 0.5 unknown or suppressed |
//!
//! Counts and amounts are heavy-tailed, so they go through `ln(1 + x)`: federated scaling by a
//! pooled mean and standard deviation ([`crate::FeatureSums`]) then behaves, and one partner's
//! big spenders do not dominate the pooled statistics. Trends lie in `(-1, 1)`.

use std::fmt;
use std::str::FromStr;

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};

use crate::ingest::{CustomerProfile, Gender, Transaction, TransactionLog};
use crate::labels::{LabelSpec, TaskKind};
use crate::timestamp::day_number;

/// One behaviour feature; see the module docs for each formula.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureName {
    /// Days from the last purchase to the cutoff.
    RecencyDays,
    /// `ln(1 + number of purchases)`.
    Frequency,
    /// `ln(1 + total spend)`.
    Monetary,
    /// `ln(1 + mean purchase amount)`.
    AvgBasket,
    /// Days from the first purchase to the cutoff.
    TenureDays,
    /// Mean days between consecutive purchases (tenure for a single purchase).
    MeanInterPurchaseDays,
    /// `ln(1 + purchases in the recent window)`.
    RecentCount,
    /// `ln(1 + spend in the recent window)`.
    RecentSpend,
    /// Relative change in purchase count between the previous and the recent window.
    CountTrend,
    /// Relative change in spend between the previous and the recent window.
    SpendTrend,
    /// Herfindahl index of the customer's purchases over product categories.
    CategoryConcentration,
    /// `ln(1 + distinct product categories bought)`.
    DistinctCategories,
    /// Share of purchases through the customer's most used sales channel.
    TopChannelShare,
    /// `ln(1 + distinct sales channels used)`.
    DistinctChannels,
    /// Age from the generalised profile (0 when unknown).
    ProfileAge,
    /// Whether the profile's age is known (1) or not (0).
    ProfileAgeKnown,
    /// 1 female, 0 male, 0.5 unknown, from the generalised profile.
    GenderFemale,
}

impl FeatureName {
    /// Every feature, in the order of [`FeatureSpec::standard`].
    pub const ALL: &'static [FeatureName] = &[
        FeatureName::RecencyDays,
        FeatureName::Frequency,
        FeatureName::Monetary,
        FeatureName::AvgBasket,
        FeatureName::TenureDays,
        FeatureName::MeanInterPurchaseDays,
        FeatureName::RecentCount,
        FeatureName::RecentSpend,
        FeatureName::CountTrend,
        FeatureName::SpendTrend,
    ];

    /// The product-mix, channel-mix and profile features, which a job must ask for by name.
    pub const MIX_AND_PROFILE: &'static [FeatureName] = &[
        FeatureName::CategoryConcentration,
        FeatureName::DistinctCategories,
        FeatureName::TopChannelShare,
        FeatureName::DistinctChannels,
        FeatureName::ProfileAge,
        FeatureName::ProfileAgeKnown,
        FeatureName::GenderFemale,
    ];

    /// Every feature there is: [`FeatureName::ALL`] then [`FeatureName::MIX_AND_PROFILE`].
    pub fn every() -> impl Iterator<Item = FeatureName> {
        Self::ALL.iter().chain(Self::MIX_AND_PROFILE).copied()
    }

    /// The snake_case name used in configs, reports and on the wire.
    pub fn as_str(&self) -> &'static str {
        match self {
            FeatureName::RecencyDays => "recency_days",
            FeatureName::Frequency => "frequency",
            FeatureName::Monetary => "monetary",
            FeatureName::AvgBasket => "avg_basket",
            FeatureName::TenureDays => "tenure_days",
            FeatureName::MeanInterPurchaseDays => "mean_inter_purchase_days",
            FeatureName::RecentCount => "recent_count",
            FeatureName::RecentSpend => "recent_spend",
            FeatureName::CountTrend => "count_trend",
            FeatureName::SpendTrend => "spend_trend",
            FeatureName::CategoryConcentration => "category_concentration",
            FeatureName::DistinctCategories => "distinct_categories",
            FeatureName::TopChannelShare => "top_channel_share",
            FeatureName::DistinctChannels => "distinct_channels",
            FeatureName::ProfileAge => "profile_age",
            FeatureName::ProfileAgeKnown => "profile_age_known",
            FeatureName::GenderFemale => "gender_female",
        }
    }
}

impl fmt::Display for FeatureName {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// A feature name that is not one of [`FeatureName::every`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown feature '{name}'; valid features: {}", valid_feature_names())]
pub struct UnknownFeatureError {
    /// The name that was given.
    pub name: String,
}

fn valid_feature_names() -> String {
    FeatureName::every()
        .map(|feature| feature.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl FromStr for FeatureName {
    type Err = UnknownFeatureError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        FeatureName::every()
            .find(|feature| feature.as_str() == name)
            .ok_or_else(|| UnknownFeatureError {
                name: name.to_owned(),
            })
    }
}

/// Which features to compute, in which column order, and the recent-window length.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureSpec {
    /// Feature columns, in order.
    pub features: Vec<FeatureName>,
    /// Length in days of the recent window (and of the previous window the trends compare with).
    pub recent_window_days: u32,
}

impl FeatureSpec {
    /// All features with a 30-day recent window.
    pub fn standard() -> Self {
        Self {
            features: FeatureName::ALL.to_vec(),
            recent_window_days: 30,
        }
    }

    /// Number of feature columns.
    pub fn n_features(&self) -> usize {
        self.features.len()
    }

    /// A scaling that depends on no data: each feature's typical centre and
    /// spread from its definition ([`FeatureName::public_centre_and_spread`]).
    /// Used when feature statistics may not be released (customer-level DP),
    /// where inputs of roughly unit scale are all training needs.
    pub fn public_scaling(&self) -> crate::Scaling {
        let (mean, std) = self
            .features
            .iter()
            .map(|feature| feature.public_centre_and_spread())
            .unzip();
        crate::Scaling { mean, std }
    }
}

impl FeatureName {
    /// A centre and spread fixed from the formula alone (ranges of `ln(1+x)`
    /// of retail counts and spends, day counts of a one-to-two-year history,
    /// shares and trends on their bounded ranges), never from data.
    pub fn public_centre_and_spread(self) -> (f64, f64) {
        match self {
            FeatureName::RecencyDays => (60.0, 60.0),
            FeatureName::Frequency => (2.0, 1.0),
            FeatureName::Monetary => (5.0, 2.0),
            FeatureName::AvgBasket => (3.5, 1.5),
            FeatureName::TenureDays => (200.0, 150.0),
            FeatureName::MeanInterPurchaseDays => (40.0, 40.0),
            FeatureName::RecentCount => (0.7, 0.7),
            FeatureName::RecentSpend => (2.5, 2.5),
            FeatureName::CountTrend | FeatureName::SpendTrend => (0.0, 0.5),
            FeatureName::CategoryConcentration => (0.5, 0.3),
            FeatureName::DistinctCategories => (1.2, 0.6),
            FeatureName::TopChannelShare => (0.7, 0.25),
            FeatureName::DistinctChannels => (0.9, 0.4),
            FeatureName::ProfileAge => (45.0, 15.0),
            FeatureName::ProfileAgeKnown | FeatureName::GenderFemale => (0.5, 0.5),
        }
    }
}

/// One customer's features and, for training rows, label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerRow {
    /// The partner's customer id; it stays inside the partner's node.
    pub customer_id: String,
    /// Transformed, unscaled feature values in [`FeatureSpec::features`] order.
    pub features: Vec<f32>,
    /// The label for training and evaluation rows, `None` for scoring rows.
    pub label: Option<f32>,
}

/// Rows for training/evaluation: every customer with >=1 transaction up to the cutoff, with its label.
pub fn build_examples(
    log: &TransactionLog,
    label: &LabelSpec,
    spec: &FeatureSpec,
) -> Vec<CustomerRow> {
    let cutoff_day = day_number(label.cutoff);
    let label_last_day = cutoff_day + i64::from(label.horizon_days);
    let cutoff_year = f64::from(label.cutoff.year());
    log.customers_with_profiles()
        .filter_map(|(customer_id, transactions, profile)| {
            let history_length = history_length(transactions, cutoff_day);
            let history = transactions.get(..history_length)?;
            let features = customer_features(history, profile, cutoff_day, cutoff_year, spec)?;
            let after_cutoff = transactions.get(history_length..).unwrap_or_default();
            let value = label_value(label.task, after_cutoff, label_last_day);
            Some(CustomerRow {
                customer_id: customer_id.to_owned(),
                features,
                label: Some(value),
            })
        })
        .collect()
}

/// Rows for scoring: same features, label None, for every customer with >=1 transaction up to `cutoff`.
pub fn build_scoring_rows(
    log: &TransactionLog,
    cutoff: NaiveDate,
    spec: &FeatureSpec,
) -> Vec<CustomerRow> {
    let cutoff_day = day_number(cutoff);
    let cutoff_year = f64::from(cutoff.year());
    log.customers_with_profiles()
        .filter_map(|(customer_id, transactions, profile)| {
            let history = transactions.get(..history_length(transactions, cutoff_day))?;
            let features = customer_features(history, profile, cutoff_day, cutoff_year, spec)?;
            Some(CustomerRow {
                customer_id: customer_id.to_owned(),
                features,
                label: None,
            })
        })
        .collect()
}

/// How many of the time-sorted transactions fall on or before the cutoff day.
fn history_length(transactions: &[Transaction], cutoff_day: i64) -> usize {
    transactions.partition_point(|transaction| transaction.day() <= cutoff_day)
}

/// The label from the transactions after the cutoff day (time-sorted).
fn label_value(task: TaskKind, after_cutoff: &[Transaction], label_last_day: i64) -> f32 {
    let in_window = after_cutoff
        .iter()
        .take_while(|transaction| transaction.day() <= label_last_day);
    match task {
        TaskKind::Churn => f32::from(u8::from(in_window.count() == 0)),
        TaskKind::Propensity => f32::from(u8::from(in_window.count() > 0)),
        TaskKind::Spend => in_window.map(|transaction| transaction.amount).sum::<f64>() as f32,
    }
}

/// Everything the features are computed from, gathered in one pass over the history.
struct HistorySummary {
    n_transactions: u64,
    total_spend: f64,
    first_day: i64,
    last_day: i64,
    recent_count: u64,
    recent_spend: f64,
    previous_count: u64,
    previous_spend: f64,
}

/// Summarises a non-empty, time-sorted history ending on or before `cutoff_day`.
fn summarise(
    history: &[Transaction],
    cutoff_day: i64,
    recent_window_days: i64,
) -> Option<HistorySummary> {
    let first_day = history.first()?.day();
    let last_day = history.last()?.day();
    // Days strictly after these bounds belong to the recent and previous windows respectively.
    let recent_after = cutoff_day - recent_window_days;
    let previous_after = recent_after - recent_window_days;
    let mut summary = HistorySummary {
        n_transactions: 0,
        total_spend: 0.0,
        first_day,
        last_day,
        recent_count: 0,
        recent_spend: 0.0,
        previous_count: 0,
        previous_spend: 0.0,
    };
    for transaction in history {
        let day = transaction.day();
        summary.n_transactions += 1;
        summary.total_spend += transaction.amount;
        if day > recent_after {
            summary.recent_count += 1;
            summary.recent_spend += transaction.amount;
        } else if day > previous_after {
            summary.previous_count += 1;
            summary.previous_spend += transaction.amount;
        }
    }
    Some(summary)
}

/// How purchases spread over the codes of one attribute (category or channel).
struct MixSummary {
    /// Purchases carrying a code.
    coded: u64,
    /// Distinct codes.
    distinct: u64,
    /// Purchases with the most frequent code.
    top: u64,
    /// `Σ_k n_k²`, for the concentration index.
    sum_of_squares: f64,
}

impl MixSummary {
    /// Counts codes by sorting a small copy: histories are short, so this beats a hash map.
    fn of(codes: impl Iterator<Item = Option<u16>>) -> MixSummary {
        let mut codes: Vec<u16> = codes.flatten().collect();
        codes.sort_unstable();
        let mut summary = MixSummary {
            coded: codes.len() as u64,
            distinct: 0,
            top: 0,
            sum_of_squares: 0.0,
        };
        for run in codes.chunk_by(|left, right| left == right) {
            let count = run.len() as u64;
            summary.distinct += 1;
            summary.top = summary.top.max(count);
            summary.sum_of_squares += (count * count) as f64;
        }
        summary
    }

    fn concentration(&self) -> f64 {
        if self.coded == 0 {
            0.0
        } else {
            self.sum_of_squares / (self.coded * self.coded) as f64
        }
    }

    fn top_share(&self) -> f64 {
        if self.coded == 0 {
            0.0
        } else {
            self.top as f64 / self.coded as f64
        }
    }
}

/// The profile's age at the cutoff: the generalised age band's middle, else the cutoff year
/// minus the generalised birth year.
fn profile_age(profile: Option<&CustomerProfile>, cutoff_year: f64) -> Option<f64> {
    let profile = profile?;
    profile
        .age_years
        .map(f64::from)
        .or_else(|| profile.birth_year.map(|year| cutoff_year - f64::from(year)))
}

/// The feature vector of one customer, or `None` when the history is empty.
fn customer_features(
    history: &[Transaction],
    profile: Option<&CustomerProfile>,
    cutoff_day: i64,
    cutoff_year: f64,
    spec: &FeatureSpec,
) -> Option<Vec<f32>> {
    let summary = summarise(history, cutoff_day, i64::from(spec.recent_window_days))?;
    let wants = |features: &[FeatureName]| spec.features.iter().any(|f| features.contains(f));
    // The mixes cost a sort per customer, so they are only computed when asked for.
    let category_mix = wants(&[
        FeatureName::CategoryConcentration,
        FeatureName::DistinctCategories,
    ])
    .then(|| MixSummary::of(history.iter().map(|transaction| transaction.category)));
    let channel_mix = wants(&[FeatureName::TopChannelShare, FeatureName::DistinctChannels])
        .then(|| MixSummary::of(history.iter().map(|transaction| transaction.channel)));
    let age = profile_age(profile, cutoff_year);
    // Counts stay far below 2^52, so converting them to f64 is exact.
    let n_transactions = summary.n_transactions as f64;
    let tenure_days = (cutoff_day - summary.first_day) as f64;
    let value = |feature: FeatureName| -> f64 {
        match feature {
            FeatureName::RecencyDays => (cutoff_day - summary.last_day) as f64,
            FeatureName::Frequency => n_transactions.ln_1p(),
            FeatureName::Monetary => summary.total_spend.ln_1p(),
            FeatureName::AvgBasket => (summary.total_spend / n_transactions).ln_1p(),
            FeatureName::TenureDays => tenure_days,
            FeatureName::MeanInterPurchaseDays if summary.n_transactions > 1 => {
                (summary.last_day - summary.first_day) as f64 / (n_transactions - 1.0)
            }
            FeatureName::MeanInterPurchaseDays => tenure_days,
            FeatureName::RecentCount => (summary.recent_count as f64).ln_1p(),
            FeatureName::RecentSpend => summary.recent_spend.ln_1p(),
            FeatureName::CountTrend => {
                relative_change(summary.recent_count as f64, summary.previous_count as f64)
            }
            FeatureName::SpendTrend => {
                relative_change(summary.recent_spend, summary.previous_spend)
            }
            FeatureName::CategoryConcentration => {
                category_mix.as_ref().map_or(0.0, MixSummary::concentration)
            }
            FeatureName::DistinctCategories => category_mix
                .as_ref()
                .map_or(0.0, |mix| (mix.distinct as f64).ln_1p()),
            FeatureName::TopChannelShare => channel_mix.as_ref().map_or(0.0, MixSummary::top_share),
            FeatureName::DistinctChannels => channel_mix
                .as_ref()
                .map_or(0.0, |mix| (mix.distinct as f64).ln_1p()),
            FeatureName::ProfileAge => age.unwrap_or(0.0),
            FeatureName::ProfileAgeKnown => f64::from(u8::from(age.is_some())),
            FeatureName::GenderFemale => match profile.and_then(|profile| profile.gender) {
                Some(Gender::Female) => 1.0,
                Some(Gender::Male) => 0.0,
                None => 0.5,
            },
        }
    };
    Some(
        spec.features
            .iter()
            .map(|feature| value(*feature) as f32)
            .collect(),
    )
}

/// `(recent - previous) / (recent + previous + 1)`: bounded in (-1, 1) and 0 for no activity.
fn relative_change(recent: f64, previous: f64) -> f64 {
    (recent - previous) / (recent + previous + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_scaling_covers_every_feature_with_a_positive_spread() {
        let spec = FeatureSpec {
            features: FeatureName::every().collect(),
            recent_window_days: 30,
        };
        let scaling = spec.public_scaling();
        assert_eq!(scaling.mean.len(), spec.n_features());
        assert!(
            scaling
                .std
                .iter()
                .all(|spread| *spread > 0.0 && spread.is_finite())
        );
        // A bounded feature's centre lies inside its range.
        let (centre, _) = FeatureName::TopChannelShare.public_centre_and_spread();
        assert!((0.0..=1.0).contains(&centre));
    }
    use crate::timestamp::SECONDS_PER_DAY;

    fn date(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .unwrap_or_else(|error| panic!("{text}: {error}"))
    }

    /// A log from `(customer, "YYYY-MM-DD", hour, amount)` tuples.
    fn log(rows: &[(&str, &str, i64, f64)]) -> TransactionLog {
        TransactionLog::from_transactions(rows.iter().map(|(customer, day, hour, amount)| {
            let unix_seconds = day_number(date(day)) * SECONDS_PER_DAY + hour * 3600;
            (
                customer.to_string(),
                Transaction::new(unix_seconds, *amount),
            )
        }))
    }

    /// Features are f32 computed from f64; 1e-5 relative covers the f32 rounding of values up
    /// to a few thousand, and the expected values are written from exact formulas.
    fn assert_close(actual: &[f32], expected: &[f64], context: &str) {
        assert_eq!(actual.len(), expected.len(), "{context}");
        for (index, (actual_value, expected_value)) in actual.iter().zip(expected).enumerate() {
            let tolerance = 1e-5 * expected_value.abs().max(1.0);
            assert!(
                (f64::from(*actual_value) - expected_value).abs() <= tolerance,
                "{context}: feature {} is {actual_value}, expected {expected_value}",
                FeatureName::ALL.get(index).map_or("?", FeatureName::as_str),
            );
        }
    }

    fn check_features(
        rows: &[(&str, &str, i64, f64)],
        cutoff: &str,
        window: u32,
        expected: &[(&str, [f64; 10])],
    ) {
        let spec = FeatureSpec {
            features: FeatureName::ALL.to_vec(),
            recent_window_days: window,
        };
        let scoring = build_scoring_rows(&log(rows), date(cutoff), &spec);
        let ids: Vec<&str> = scoring.iter().map(|row| row.customer_id.as_str()).collect();
        let expected_ids: Vec<&str> = expected.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, expected_ids, "customers with history up to {cutoff}");
        for (row, (id, values)) in scoring.iter().zip(expected) {
            assert_eq!(row.label, None);
            assert_close(&row.features, values, id);
        }
    }

    #[test]
    fn feature_values_on_hand_written_logs() {
        let ln = |value: f64| value.ln_1p();
        // Cutoff 2024-03-31, 10-day windows: recent = 03-22..03-31, previous = 03-12..03-21.
        check_features(
            &[
                // a: purchases on 01-01, 03-15 (previous window), 03-25 and 03-31 (recent), and
                // one after the cutoff that must be ignored.
                ("a", "2024-01-01", 9, 10.0),
                ("a", "2024-03-15", 9, 20.0),
                ("a", "2024-03-25", 9, 30.0),
                ("a", "2024-03-31", 23, 40.0),
                ("a", "2024-04-01", 0, 1000.0),
                // b: a single purchase exactly at the start of the recent window.
                ("b", "2024-03-22", 0, 5.0),
                // c: only after the cutoff, so not an example.
                ("c", "2024-04-02", 12, 7.0),
                // d: two purchases, both before the previous window, same day.
                ("d", "2024-02-01", 8, 2.0),
                ("d", "2024-02-01", 18, 4.0),
            ],
            "2024-03-31",
            10,
            &[
                (
                    "a",
                    [
                        0.0,
                        ln(4.0),
                        ln(100.0),
                        ln(25.0),
                        90.0,
                        90.0 / 3.0,
                        ln(2.0),
                        ln(70.0),
                        1.0 / 4.0,
                        50.0 / 91.0,
                    ],
                ),
                (
                    "b",
                    [
                        9.0,
                        ln(1.0),
                        ln(5.0),
                        ln(5.0),
                        9.0,
                        9.0,
                        ln(1.0),
                        ln(5.0),
                        1.0 / 2.0,
                        5.0 / 6.0,
                    ],
                ),
                (
                    "d",
                    [
                        59.0,
                        ln(2.0),
                        ln(6.0),
                        ln(3.0),
                        59.0,
                        0.0,
                        0.0,
                        0.0,
                        0.0,
                        0.0,
                    ],
                ),
            ],
        );
        // The day before the recent window is the last day of the previous window.
        check_features(
            &[("e", "2024-03-21", 0, 8.0), ("e", "2024-03-11", 0, 1.0)],
            "2024-03-31",
            10,
            &[(
                "e",
                [
                    10.0,
                    ln(2.0),
                    ln(9.0),
                    ln(4.5),
                    20.0,
                    10.0,
                    0.0,
                    0.0,
                    -1.0 / 2.0,
                    -8.0 / 9.0,
                ],
            )],
        );
    }

    #[test]
    fn feature_selection_follows_spec_order() {
        let rows = [("a", "2024-03-01", 0, 9.0)];
        let spec = FeatureSpec {
            features: vec![FeatureName::TenureDays, FeatureName::Monetary],
            recent_window_days: 30,
        };
        let scoring = build_scoring_rows(&log(&rows), date("2024-03-05"), &spec);
        assert_eq!(scoring.len(), 1);
        assert_close(&scoring[0].features, &[4.0, 10.0_f64.ln()], "a");
        assert_eq!(FeatureSpec::standard().n_features(), FeatureName::ALL.len());
        assert_eq!(FeatureSpec::standard().recent_window_days, 30);
    }

    fn check_label(task: TaskKind, after_cutoff: &[(&str, f64)], expected: f32) {
        // Cutoff 2024-03-31 with a 30-day horizon: the window is 04-01 ..= 04-30.
        let mut rows = vec![("x", "2024-03-01", 12, 1.0)];
        rows.extend(
            after_cutoff
                .iter()
                .map(|(day, amount)| ("x", *day, 23, *amount)),
        );
        let label = LabelSpec {
            task,
            cutoff: date("2024-03-31"),
            horizon_days: 30,
        };
        let examples = build_examples(&log(&rows), &label, &FeatureSpec::standard());
        assert_eq!(examples.len(), 1);
        assert_eq!(
            examples[0].label,
            Some(expected),
            "{task} with {after_cutoff:?}"
        );
    }

    #[test]
    fn label_semantics_at_window_boundaries() {
        use TaskKind::{Churn, Propensity, Spend};
        // First day of the window counts.
        check_label(Churn, &[("2024-04-01", 3.0)], 0.0);
        check_label(Propensity, &[("2024-04-01", 3.0)], 1.0);
        // Last day of the window counts, even late in the day.
        check_label(Churn, &[("2024-04-30", 3.0)], 0.0);
        check_label(Propensity, &[("2024-04-30", 3.0)], 1.0);
        // The day after the window does not.
        check_label(Churn, &[("2024-05-01", 3.0)], 1.0);
        check_label(Propensity, &[("2024-05-01", 3.0)], 0.0);
        check_label(Churn, &[], 1.0);
        check_label(Propensity, &[], 0.0);
        // Spend sums exactly the window.
        check_label(
            Spend,
            &[
                ("2024-04-01", 3.0),
                ("2024-04-30", 4.5),
                ("2024-05-01", 100.0),
            ],
            7.5,
        );
        check_label(Spend, &[], 0.0);
    }

    #[test]
    fn purchases_on_the_cutoff_day_are_history_not_label() {
        let rows = [("x", "2024-03-01", 0, 1.0), ("x", "2024-03-31", 23, 2.0)];
        let label = LabelSpec {
            task: TaskKind::Churn,
            cutoff: date("2024-03-31"),
            horizon_days: 30,
        };
        let examples = build_examples(&log(&rows), &label, &FeatureSpec::standard());
        assert_eq!(examples[0].label, Some(1.0));
        assert_close(&examples[0].features[..2], &[0.0, 3.0_f64.ln()], "x");
        // A customer whose first purchase is inside the label window is not an example.
        let late = [("y", "2024-04-01", 0, 1.0)];
        assert!(build_examples(&log(&late), &label, &FeatureSpec::standard()).is_empty());
    }

    #[test]
    fn unknown_feature_names_are_named_with_the_valid_ones() {
        for feature in FeatureName::ALL {
            assert_eq!(feature.as_str().parse::<FeatureName>(), Ok(*feature));
            let json = serde_json::to_string(feature).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", feature.as_str()));
        }
        let error = "recency".parse::<FeatureName>().map(|_| ()).unwrap_err();
        assert_eq!(error.name, "recency");
        let message = error.to_string();
        assert!(message.contains("'recency'"), "{message}");
        for feature in FeatureName::ALL {
            assert!(message.contains(feature.as_str()), "{message}");
        }
    }
}
