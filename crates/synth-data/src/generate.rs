//! The generative model of one partner's customers and the CSV writer for its transactions.

use std::f64::consts::TAU;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Datelike, NaiveDate, Timelike};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::SynthError;
use crate::profile::{PartnerProfile, SynthConfig, TimestampStyle};

/// Header of every generated file.
pub(crate) const HEADER: &str = "customer_id,timestamp,amount,quantity,category,channel";

/// Product categories; every customer has a favourite one.
pub const CATEGORIES: &[&str] = &[
    "grocery",
    "apparel",
    "electronics",
    "home",
    "beauty",
    "sports",
    "books",
    "toys",
];

/// Sales channels, indexed by [`Channel`].
const CHANNELS: &[&str] = &["online", "app", "store"];

/// Daily churn hazard of an average customer before the partner's bias (a mean customer
/// lifetime of a few years), tuned with the other constants for demo churn rates of roughly
/// 15–50% and a pooled logistic-regression AUC around 0.8.
const BASE_DAILY_HAZARD: f64 = 1.0 / 1000.0;

/// Length of the periods over which a customer's purchase rate is bursty, in days.
const BURST_PERIOD_DAYS: f64 = 45.0;

/// Log-scale spread of the per-period burst multiplier; bursts make a quiet month a weaker
/// sign of churn, as in real purchase data.
const BURST_SPREAD: f64 = 1.0;

/// Cap on the burst multiplier, which bounds the thinning envelope.
const MAX_BURST: f64 = 5.0;

/// Spread of the churn hazard that no observed behaviour explains; it keeps churn from being
/// trivially predictable.
const HIDDEN_HAZARD_SPREAD: f64 = 1.2;

/// How strongly engagement raises the purchase rate (log scale).
const ENGAGEMENT_RATE_EFFECT: f64 = 0.6;

/// Customer-to-customer purchase-rate spread not explained by engagement (log scale).
const RATE_NOISE: f64 = 0.35;

/// How far before the data start the earliest customers joined, in days.
const EARLIEST_JOIN_BEFORE_START_DAYS: f64 = 365.0;

/// The latest join is this many days before the end, so nearly every customer has history
/// before the demo cutoff.
const LATEST_JOIN_BEFORE_END_DAYS: f64 = 100.0;

/// A won-back customer buys at this fraction of their earlier rate.
const REACTIVATED_RATE_FACTOR: f64 = 0.85;

/// Mean pause before a churned customer is won back, in days.
const MEAN_REACTIVATION_PAUSE_DAYS: f64 = 90.0;

/// Most activity spells per customer (one initial plus win-backs).
const MAX_SPELLS: usize = 12;

/// A churning customer's purchase rate fades by `exp(-FADE_STRENGTH)` over the fade period.
const FADE_STRENGTH: f64 = 1.5;

/// Chance a purchase is in the customer's favourite category.
const FAVOURITE_CATEGORY_SHARE: f64 = 0.6;

/// Chance a non-online purchase goes through the app rather than a store.
const APP_SHARE_OF_OFFLINE: f64 = 0.3;

/// Average length of a year in days, for the seasonal cycle.
const DAYS_PER_YEAR: f64 = 365.25;

const SECONDS_PER_DAY: f64 = 86_400.0;

/// One generated purchase, kept compact because benchmark files have millions of them.
struct SyntheticTransaction {
    unix_seconds: i64,
    customer_number: u32,
    amount_cents: u64,
    quantity: u8,
    category: u8,
    channel: u8,
}

/// One customer's latent traits, drawn once.
struct Customer {
    number: u32,
    /// Purchases per day at the seasonal mean, before any fade.
    purchase_rate: f64,
    /// Daily churn hazard.
    daily_hazard: f64,
    /// Day (relative to the data start) the customer joined; may be before the start.
    join_day: f64,
    /// Typical purchase amount.
    basket: f64,
    favourite_category: u8,
}

/// Writes one CSV per partner (`<dir>/<partner name>.csv`, columns customer_id,timestamp,amount,quantity,category,channel), returns the paths.
pub fn write_partner_files(config: &SynthConfig, dir: &Path) -> Result<Vec<PathBuf>, SynthError> {
    std::fs::create_dir_all(dir).map_err(|source| SynthError::Io {
        path: Some(dir.to_path_buf()),
        source,
    })?;
    let mut paths = Vec::with_capacity(config.partners.len());
    for (partner_index, partner) in config.partners.iter().enumerate() {
        check_partner_name(&partner.name)?;
        let path = dir.join(format!("{}.csv", partner.name));
        let to_error = |source| SynthError::Io {
            path: Some(path.clone()),
            source,
        };
        let file = File::create(&path).map_err(to_error)?;
        match write_partner_csv(config, partner_index, file) {
            Ok(()) => {}
            Err(SynthError::Io { path: None, source }) => return Err(to_error(source)),
            Err(other) => return Err(other),
        }
        paths.push(path);
    }
    Ok(paths)
}

/// Writes one partner's transactions as CSV, sorted by time, to `out`. The same config always
/// produces the same bytes, whatever the other partners are.
pub fn write_partner_csv(
    config: &SynthConfig,
    partner_index: usize,
    out: impl Write,
) -> Result<(), SynthError> {
    if config.start >= config.end {
        return Err(SynthError::InvalidDateRange {
            start: config.start,
            end: config.end,
        });
    }
    let partner = config
        .partners
        .get(partner_index)
        .ok_or(SynthError::NoSuchPartner {
            index: partner_index,
            n_partners: config.partners.len(),
        })?;
    check_partner_name(&partner.name)?;
    let transactions = generate_partner(config, partner_index, partner);
    let mut writer = BufWriter::new(out);
    write_rows(&mut writer, partner, &transactions)
        .and_then(|()| writer.flush())
        .map_err(|source| SynthError::Io { path: None, source })
}

fn check_partner_name(name: &str) -> Result<(), SynthError> {
    let usable = !name.is_empty()
        && name
            .chars()
            .all(|character| character.is_ascii_alphanumeric() || matches!(character, '-' | '_'));
    if usable {
        Ok(())
    } else {
        Err(SynthError::InvalidPartnerName {
            name: name.to_owned(),
        })
    }
}

fn write_rows(
    writer: &mut impl Write,
    partner: &PartnerProfile,
    transactions: &[SyntheticTransaction],
) -> std::io::Result<()> {
    writeln!(writer, "{HEADER}")?;
    for transaction in transactions {
        write!(
            writer,
            "C-{}-{:06},",
            partner.id_code, transaction.customer_number
        )?;
        write_timestamp(writer, transaction.unix_seconds, partner.timestamp_style)?;
        let category = CATEGORIES
            .get(usize::from(transaction.category))
            .copied()
            .unwrap_or("other");
        let channel = CHANNELS
            .get(usize::from(transaction.channel))
            .copied()
            .unwrap_or("store");
        writeln!(
            writer,
            ",{}.{:02},{},{category},{channel}",
            transaction.amount_cents / 100,
            transaction.amount_cents % 100,
            transaction.quantity,
        )?;
    }
    Ok(())
}

/// Formats by hand rather than through chrono's formatter, which is several times slower and
/// dominates writing million-row benchmark files.
fn write_timestamp(
    writer: &mut impl Write,
    unix_seconds: i64,
    style: TimestampStyle,
) -> std::io::Result<()> {
    let date_time = DateTime::from_timestamp(unix_seconds, 0)
        .unwrap_or_default()
        .naive_utc();
    let separator = if style == TimestampStyle::IsoSpace {
        ' '
    } else {
        'T'
    };
    let zone = if style == TimestampStyle::Rfc3339Utc {
        "Z"
    } else {
        ""
    };
    write!(
        writer,
        "{:04}-{:02}-{:02}{separator}{:02}:{:02}:{:02}{zone}",
        date_time.year(),
        date_time.month(),
        date_time.day(),
        date_time.hour(),
        date_time.minute(),
        date_time.second(),
    )
}

/// Generates every purchase of one partner, sorted by time (ties by customer).
fn generate_partner(
    config: &SynthConfig,
    partner_index: usize,
    partner: &PartnerProfile,
) -> Vec<SyntheticTransaction> {
    let mut rng = ChaCha20Rng::seed_from_u64(config.seed);
    // Each partner reads its own ChaCha stream, so its file does not depend on the others.
    rng.set_stream(partner_index as u64);
    let timeline = Timeline::new(config.start, config.end, partner);
    let mut transactions = Vec::new();
    for customer_index in 0..partner.n_customers {
        let number = u32::try_from(customer_index + 1).unwrap_or(u32::MAX);
        let customer = draw_customer(&mut rng, partner, &timeline, number);
        simulate_customer(&mut rng, partner, &timeline, &customer, &mut transactions);
    }
    transactions.sort_unstable_by_key(|transaction| {
        (transaction.unix_seconds, transaction.customer_number)
    });
    transactions
}

/// The data period in days since its start, with the partner's seasonal cycle.
struct Timeline {
    n_days: f64,
    start_unix_seconds: i64,
    /// Day of the year of the data start, minus the peak day, so the cycle is a cosine of
    /// `(day + phase_offset)`.
    phase_offset: f64,
    seasonality: f64,
}

impl Timeline {
    fn new(start: NaiveDate, end: NaiveDate, partner: &PartnerProfile) -> Self {
        let start_unix_seconds = start.and_time(chrono::NaiveTime::MIN).and_utc().timestamp();
        Self {
            n_days: ((end - start).num_days() + 1) as f64,
            start_unix_seconds,
            phase_offset: f64::from(start.ordinal()) - f64::from(partner.seasonal_peak_day),
            seasonality: partner.seasonality.clamp(0.0, 0.95),
        }
    }

    fn seasonal_factor(&self, day: f64) -> f64 {
        1.0 + self.seasonality * (TAU * (day + self.phase_offset) / DAYS_PER_YEAR).cos()
    }

    fn unix_seconds(&self, day: f64) -> i64 {
        self.start_unix_seconds + (day * SECONDS_PER_DAY) as i64
    }
}

fn draw_customer(
    rng: &mut ChaCha20Rng,
    partner: &PartnerProfile,
    timeline: &Timeline,
    number: u32,
) -> Customer {
    let engagement = standard_normal(rng);
    let hidden_hazard = standard_normal(rng);
    let rate_noise = standard_normal(rng);
    let basket_noise = standard_normal(rng);
    let latest_join = timeline.n_days - LATEST_JOIN_BEFORE_END_DAYS;
    Customer {
        number,
        purchase_rate: partner.base_purchase_rate
            * (ENGAGEMENT_RATE_EFFECT * engagement + RATE_NOISE * rate_noise).exp(),
        daily_hazard: BASE_DAILY_HAZARD
            * (partner.churn_bias - partner.engagement_effect * engagement
                + HIDDEN_HAZARD_SPREAD * hidden_hazard)
                .exp(),
        join_day: -EARLIEST_JOIN_BEFORE_START_DAYS
            + rng.random::<f64>() * (latest_join + EARLIEST_JOIN_BEFORE_START_DAYS),
        basket: partner.spend_level * (0.2 * engagement + 0.4 * basket_noise).exp(),
        favourite_category: rng.random_range(0..CATEGORIES.len() as u8),
    }
}

/// Runs the customer's activity spells: buy until churn (fading out before it), then maybe
/// come back after a pause at a lower rate.
fn simulate_customer(
    rng: &mut ChaCha20Rng,
    partner: &PartnerProfile,
    timeline: &Timeline,
    customer: &Customer,
    transactions: &mut Vec<SyntheticTransaction>,
) {
    let mut spell_start = customer.join_day;
    let mut purchase_rate = customer.purchase_rate;
    for _ in 0..MAX_SPELLS {
        let churn_day = spell_start + exponential(rng, customer.daily_hazard);
        let spell = Spell {
            purchase_rate,
            start_day: spell_start,
            churn_day,
        };
        simulate_spell(rng, partner, timeline, customer, &spell, transactions);
        if churn_day >= timeline.n_days
            || !rng.random_bool(partner.reactivation_probability.clamp(0.0, 1.0))
        {
            break;
        }
        spell_start = churn_day + exponential(rng, 1.0 / MEAN_REACTIVATION_PAUSE_DAYS);
        purchase_rate *= REACTIVATED_RATE_FACTOR;
    }
}

/// One period of activity, from joining or a win-back until churning.
struct Spell {
    /// Purchases per day at the seasonal mean, before bursts and fading.
    purchase_rate: f64,
    /// Day the spell starts (relative to the data start; may be negative).
    start_day: f64,
    /// Day the customer stops buying; may be after the data ends.
    churn_day: f64,
}

/// Purchases in one spell by thinning a Poisson process at the peak rate: candidates arrive
/// at the peak rate and each is kept with probability (rate now / peak rate).
fn simulate_spell(
    rng: &mut ChaCha20Rng,
    partner: &PartnerProfile,
    timeline: &Timeline,
    customer: &Customer,
    spell: &Spell,
    transactions: &mut Vec<SyntheticTransaction>,
) {
    let Spell {
        purchase_rate,
        start_day: spell_start,
        churn_day,
    } = *spell;
    let peak_rate = purchase_rate * (1.0 + timeline.seasonality) * MAX_BURST;
    let fade_days = partner.disengagement_days.max(1.0);
    let fade_start = churn_day - fade_days;
    let spell_end = churn_day.min(timeline.n_days);
    let mut day = spell_start.max(0.0);
    let mut burst_period = f64::NEG_INFINITY;
    let mut burst = 1.0;
    loop {
        day += exponential(rng, peak_rate);
        if day >= spell_end {
            break;
        }
        let fade = if day > fade_start {
            (-FADE_STRENGTH * (day - fade_start) / fade_days).exp()
        } else {
            1.0
        };
        let period = (day / BURST_PERIOD_DAYS).floor();
        if period != burst_period {
            // The -spread²/2 keeps the mean multiplier near 1.
            burst = (BURST_SPREAD * standard_normal(rng) - BURST_SPREAD * BURST_SPREAD / 2.0)
                .exp()
                .min(MAX_BURST);
            burst_period = period;
        }
        let acceptance = timeline.seasonal_factor(day) * fade * burst
            / ((1.0 + timeline.seasonality) * MAX_BURST);
        if rng.random::<f64>() < acceptance {
            transactions.push(draw_purchase(rng, partner, timeline, customer, day));
        }
    }
}

fn draw_purchase(
    rng: &mut ChaCha20Rng,
    partner: &PartnerProfile,
    timeline: &Timeline,
    customer: &Customer,
    day: f64,
) -> SyntheticTransaction {
    // The -0.125 keeps the mean purchase at the customer's basket size (lognormal with sigma 0.5).
    let amount = customer.basket * (0.5 * standard_normal(rng) - 0.125).exp();
    let amount_cents = (amount * 100.0).round().max(50.0) as u64;
    let mut quantity = 1u8;
    while quantity < 9 && rng.random_bool(0.35) {
        quantity += 1;
    }
    let category = if rng.random_bool(FAVOURITE_CATEGORY_SHARE) {
        customer.favourite_category
    } else {
        rng.random_range(0..CATEGORIES.len() as u8)
    };
    let channel = if rng.random_bool(partner.online_share.clamp(0.0, 1.0)) {
        0
    } else if rng.random_bool(APP_SHARE_OF_OFFLINE) {
        1
    } else {
        2
    };
    SyntheticTransaction {
        unix_seconds: timeline.unix_seconds(day),
        customer_number: customer.number,
        amount_cents,
        quantity,
        category,
        channel,
    }
}

/// Box–Muller transform; `1 - u` keeps the logarithm's argument in (0, 1].
fn standard_normal(rng: &mut ChaCha20Rng) -> f64 {
    let radius = (-2.0 * (1.0 - rng.random::<f64>()).ln()).sqrt();
    radius * (TAU * rng.random::<f64>()).cos()
}

/// Exponential waiting time with the given rate per day; infinite for a zero rate.
fn exponential(rng: &mut ChaCha20Rng, rate: f64) -> f64 {
    if rate <= 0.0 {
        return f64::INFINITY;
    }
    -(1.0 - rng.random::<f64>()).ln() / rate
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv_bytes(config: &SynthConfig, partner_index: usize) -> Vec<u8> {
        let mut bytes = Vec::new();
        write_partner_csv(config, partner_index, &mut bytes)
            .unwrap_or_else(|error| panic!("{error}"));
        bytes
    }

    #[test]
    fn same_seed_gives_identical_bytes_and_another_seed_does_not() {
        let config = SynthConfig::demo(3, 42);
        for partner_index in 0..3 {
            assert_eq!(
                csv_bytes(&config, partner_index),
                csv_bytes(&config, partner_index)
            );
        }
        assert_ne!(
            csv_bytes(&config, 2),
            csv_bytes(&SynthConfig::demo(3, 43), 2)
        );
        // A partner's file does not depend on how many other partners there are.
        assert_eq!(
            csv_bytes(&config, 2),
            csv_bytes(&SynthConfig::demo(5, 42), 2)
        );
    }

    #[test]
    fn rows_have_the_documented_shape() {
        let config = SynthConfig::demo(3, 7);
        let text = String::from_utf8(csv_bytes(&config, 1)).unwrap_or_default();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some(HEADER));
        let first = lines.next().unwrap_or_default();
        let fields: Vec<&str> = first.split(',').collect();
        assert_eq!(fields.len(), 6, "{first}");
        assert!(fields[0].starts_with("C-HBK-"), "{first}");
        assert!(
            fields[1].ends_with('Z'),
            "harbour-bank writes RFC 3339: {first}"
        );
        assert!(lines.all(|line| line.split(',').count() == 6));
    }

    #[test]
    fn errors_are_typed() {
        let config = SynthConfig::demo(1, 1);
        assert!(matches!(
            write_partner_csv(&config, 1, Vec::new()),
            Err(SynthError::NoSuchPartner {
                index: 1,
                n_partners: 1
            })
        ));
        let mut bad_name = config.clone();
        bad_name.partners[0].name = "../escape".to_owned();
        assert!(matches!(
            write_partner_csv(&bad_name, 0, Vec::new()),
            Err(SynthError::InvalidPartnerName { .. })
        ));
        let mut reversed = config;
        reversed.end = reversed.start;
        assert!(matches!(
            write_partner_csv(&reversed, 0, Vec::new()),
            Err(SynthError::InvalidDateRange { .. })
        ));
    }

    #[test]
    fn seasonal_factor_peaks_on_the_peak_day() {
        let config = SynthConfig::demo(3, 1);
        let partner = &config.partners[2];
        let timeline = Timeline::new(config.start, config.end, partner);
        // Day index of the peak day in the first year: ordinal - 1 days after 1 January.
        let peak = f64::from(partner.seasonal_peak_day) - 1.0;
        // Exact cosine at zero phase; 1e-9 absorbs the rounding of TAU * 0 / 365.25 paths.
        assert!((timeline.seasonal_factor(peak) - (1.0 + partner.seasonality)).abs() < 1e-9);
        assert!(timeline.seasonal_factor(peak + 182.0) < 1.0 - partner.seasonality * 0.99);
    }
}
