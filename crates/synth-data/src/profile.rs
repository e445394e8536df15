//! Partner profiles and the demo configuration: who the synthetic partners are and how their
//! customers behave.

use chrono::{Days, NaiveDate};

/// How a partner's export writes timestamps; partners differ so ingestion is exercised on
/// several accepted formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampStyle {
    /// `2024-03-05T14:22:01`
    IsoLocal,
    /// `2024-03-05 14:22:01`
    IsoSpace,
    /// `2024-03-05T14:22:01Z`
    Rfc3339Utc,
}

/// One synthetic partner and its customers' behaviour.
#[derive(Debug, Clone)]
pub struct PartnerProfile {
    /// Name of the partner, also the output file stem; letters, digits, `-` and `_` only.
    pub name: String,
    /// Short code inside customer ids (`C-<code>-000123`), distinct per partner.
    pub id_code: String,
    /// Number of customers generated.
    pub n_customers: usize,
    /// Added to every customer's log churn hazard: higher means more churn.
    pub churn_bias: f64,
    /// Typical amount of one purchase, in currency units.
    pub spend_level: f64,
    /// Relative amplitude of the yearly purchase-rate cycle, in `[0, 1)`.
    pub seasonality: f64,
    /// Day of the year (1–366) when purchases peak.
    pub seasonal_peak_day: u32,
    /// Purchases per day of an average-engagement customer.
    pub base_purchase_rate: f64,
    /// How strongly engagement lowers the churn hazard; differs by partner so the feature to
    /// churn relationship shifts between partners.
    pub engagement_effect: f64,
    /// Days over which a churning customer's purchase rate fades before stopping.
    pub disengagement_days: f64,
    /// Chance that a churned customer comes back after a pause.
    pub reactivation_probability: f64,
    /// Share of purchases made online (the rest split between app and store).
    pub online_share: f64,
    /// Timestamp format of the export.
    pub timestamp_style: TimestampStyle,
}

/// Everything needed to regenerate the same files byte for byte.
#[derive(Debug, Clone)]
pub struct SynthConfig {
    /// Seed of the ChaCha stream; each partner uses its own stream of it.
    pub seed: u64,
    /// First day with transactions.
    pub start: NaiveDate,
    /// Last day with transactions (inclusive).
    pub end: NaiveDate,
    /// The partners, in output order.
    pub partners: Vec<PartnerProfile>,
}

/// Label window of the demo, in days.
const DEMO_HORIZON_DAYS: u32 = 90;

/// The demo partners' distinguishing parameters; the demo cycles through these rows.
struct DemoPartner {
    name: &'static str,
    id_code: &'static str,
    n_customers: usize,
    churn_bias: f64,
    spend_level: f64,
    seasonality: f64,
    seasonal_peak_day: u32,
    purchases_per_year: f64,
    engagement_effect: f64,
    disengagement_days: f64,
    reactivation_probability: f64,
    online_share: f64,
    timestamp_style: TimestampStyle,
}

const DEMO_PARTNERS: &[DemoPartner] = &[
    DemoPartner {
        name: "northwind-grocers",
        id_code: "NWG",
        n_customers: 4000,
        churn_bias: 0.0,
        spend_level: 35.0,
        seasonality: 0.15,
        seasonal_peak_day: 350,
        purchases_per_year: 15.0,
        engagement_effect: 1.0,
        disengagement_days: 45.0,
        reactivation_probability: 0.8,
        online_share: 0.2,
        timestamp_style: TimestampStyle::IsoLocal,
    },
    DemoPartner {
        name: "harbour-bank",
        id_code: "HBK",
        n_customers: 1500,
        churn_bias: 0.5,
        spend_level: 120.0,
        seasonality: 0.05,
        seasonal_peak_day: 15,
        purchases_per_year: 7.0,
        engagement_effect: 0.6,
        disengagement_days: 75.0,
        reactivation_probability: 0.7,
        online_share: 0.7,
        timestamp_style: TimestampStyle::Rfc3339Utc,
    },
    DemoPartner {
        name: "summit-outdoor",
        id_code: "SMO",
        n_customers: 600,
        churn_bias: -0.7,
        spend_level: 80.0,
        seasonality: 0.6,
        seasonal_peak_day: 180,
        purchases_per_year: 7.0,
        engagement_effect: 1.4,
        disengagement_days: 40.0,
        reactivation_probability: 0.9,
        online_share: 0.4,
        timestamp_style: TimestampStyle::IsoSpace,
    },
    DemoPartner {
        name: "lumen-beauty",
        id_code: "LUB",
        n_customers: 2500,
        churn_bias: 0.3,
        spend_level: 25.0,
        seasonality: 0.3,
        seasonal_peak_day: 330,
        purchases_per_year: 9.0,
        engagement_effect: 0.8,
        disengagement_days: 50.0,
        reactivation_probability: 0.8,
        online_share: 0.5,
        timestamp_style: TimestampStyle::IsoLocal,
    },
    DemoPartner {
        name: "copper-electronics",
        id_code: "CPE",
        n_customers: 1000,
        churn_bias: 0.5,
        spend_level: 300.0,
        seasonality: 0.45,
        seasonal_peak_day: 335,
        purchases_per_year: 3.5,
        engagement_effect: 0.5,
        disengagement_days: 90.0,
        reactivation_probability: 0.85,
        online_share: 0.6,
        timestamp_style: TimestampStyle::Rfc3339Utc,
    },
    DemoPartner {
        name: "meadow-pharmacy",
        id_code: "MDP",
        n_customers: 800,
        churn_bias: -0.5,
        spend_level: 20.0,
        seasonality: 0.1,
        seasonal_peak_day: 30,
        purchases_per_year: 12.0,
        engagement_effect: 1.2,
        disengagement_days: 35.0,
        reactivation_probability: 0.75,
        online_share: 0.1,
        timestamp_style: TimestampStyle::IsoSpace,
    },
];

impl SynthConfig {
    /// n partners that differ in size (e.g. 4000, 1500, 600 customers...), churn rate, spend level and seasonality.
    ///
    /// Two years of data, 2023-01-01 to 2024-12-31. Beyond the six built-in partners the
    /// profiles repeat with a numbered name and id code, so ids stay distinct.
    pub fn demo(n_partners: usize, seed: u64) -> Self {
        let partners = (0..n_partners)
            .map(|index| {
                // The table is a non-empty constant, so the modulo index is always in range.
                let template = &DEMO_PARTNERS[index % DEMO_PARTNERS.len()];
                let repeat = index / DEMO_PARTNERS.len();
                let (name, id_code) = if repeat == 0 {
                    (template.name.to_owned(), template.id_code.to_owned())
                } else {
                    (
                        format!("{}-{}", template.name, repeat + 1),
                        format!("{}{}", template.id_code, repeat + 1),
                    )
                };
                PartnerProfile {
                    name,
                    id_code,
                    n_customers: template.n_customers,
                    churn_bias: template.churn_bias,
                    spend_level: template.spend_level,
                    seasonality: template.seasonality,
                    seasonal_peak_day: template.seasonal_peak_day,
                    base_purchase_rate: template.purchases_per_year / 365.0,
                    engagement_effect: template.engagement_effect,
                    disengagement_days: template.disengagement_days,
                    reactivation_probability: template.reactivation_probability,
                    online_share: template.online_share,
                    timestamp_style: template.timestamp_style,
                }
            })
            .collect();
        Self {
            seed,
            start: NaiveDate::from_ymd_opt(2023, 1, 1).unwrap_or_default(),
            end: NaiveDate::from_ymd_opt(2024, 12, 31).unwrap_or_default(),
            partners,
        }
    }

    /// Suggested label window for the demo: cutoff a few months before `end`, horizon 90 days.
    ///
    /// The cutoff is `end - horizon`, so the label window `(cutoff, cutoff + horizon]` ends
    /// exactly on the last day of data.
    pub fn suggested_cutoff(&self) -> NaiveDate {
        self.end
            .checked_sub_days(Days::new(u64::from(self.suggested_horizon_days())))
            .unwrap_or(self.start)
    }

    /// Suggested label window length in days (90).
    pub fn suggested_horizon_days(&self) -> u32 {
        DEMO_HORIZON_DAYS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_partners_differ_and_ids_stay_distinct() {
        let config = SynthConfig::demo(8, 1);
        assert_eq!(config.partners.len(), 8);
        let mut codes: Vec<&str> = config
            .partners
            .iter()
            .map(|partner| partner.id_code.as_str())
            .collect();
        let mut names: Vec<&str> = config
            .partners
            .iter()
            .map(|partner| partner.name.as_str())
            .collect();
        codes.sort_unstable();
        codes.dedup();
        names.sort_unstable();
        names.dedup();
        assert_eq!(codes.len(), 8);
        assert_eq!(names.len(), 8);
        assert_eq!(config.partners[6].name, "northwind-grocers-2");
        assert_eq!(config.partners[6].id_code, "NWG2");
        let sizes: Vec<usize> = config
            .partners
            .iter()
            .take(3)
            .map(|partner| partner.n_customers)
            .collect();
        assert_eq!(sizes, [4000, 1500, 600]);
    }

    #[test]
    fn suggested_window_ends_on_the_last_day() {
        let config = SynthConfig::demo(3, 1);
        assert_eq!(config.suggested_horizon_days(), 90);
        assert_eq!(
            config.suggested_cutoff(),
            NaiveDate::from_ymd_opt(2024, 10, 2).unwrap_or_default()
        );
    }
}
