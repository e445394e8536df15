//! From purchase rows to baskets: one basket per customer in a window, or one
//! per purchase day, over the public [`Vocabulary`]. Rows naming an item
//! outside it are counted as rejects and dropped. Customer keys are used only
//! to group rows here and never appear in the result.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::error::RulesError;
use crate::vocabulary::{ItemId, Vocabulary};

/// What one basket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BasketGrouping {
    /// Everything a customer bought in the window is one basket.
    CustomerWindow,
    /// Each purchase day of a customer is one basket. A customer contributes
    /// at most `max_days_per_customer` baskets (the most recent days in the
    /// window), which bounds how often one customer can count towards one
    /// itemset and so enters the sensitivity.
    PurchaseDay {
        /// Most baskets kept per customer.
        max_days_per_customer: u32,
    },
}

impl BasketGrouping {
    /// The most baskets one customer can contribute: `m` in the sensitivity.
    pub fn max_baskets_per_customer(&self) -> u32 {
        match self {
            Self::CustomerWindow => 1,
            Self::PurchaseDay {
                max_days_per_customer,
            } => *max_days_per_customer,
        }
    }
}

/// How to build baskets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BasketConfig {
    /// Customer window or purchase day.
    pub grouping: BasketGrouping,
    /// First day of the window (days since 1970-01-01), inclusive.
    pub first_day: i64,
    /// Last day of the window, inclusive.
    pub last_day: i64,
}

/// One purchase row as the partner's data holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurchaseRow<'a> {
    /// The customer's key (local only: used to group, never kept).
    pub customer: &'a str,
    /// Purchase day, in days since 1970-01-01.
    pub day: i64,
    /// The raw item name (category or product) as the partner spells it.
    pub item: &'a str,
}

/// What happened to the rows, for the partner's own report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BasketReport {
    /// Rows read.
    pub rows: u64,
    /// Rows whose item is not in the vocabulary.
    pub rejected_unknown_item: u64,
    /// Rows outside the window.
    pub rejected_outside_window: u64,
    /// Rows with an empty customer key.
    pub rejected_missing_customer: u64,
    /// Customers with at least one basket.
    pub customers: u64,
    /// Baskets kept.
    pub baskets: u64,
    /// Purchase-day baskets dropped because a customer had more days than
    /// `max_days_per_customer`.
    pub baskets_over_cap: u64,
}

/// A partner's baskets, grouped by (anonymous) customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Baskets {
    /// Per customer, per basket, its sorted distinct item ids. Customers are
    /// in an order that depends only on their keys, never on row order.
    customers: Vec<Vec<Vec<ItemId>>>,
    /// Size of the vocabulary the ids index.
    vocabulary_len: usize,
    /// `m`: the most baskets any customer may have here.
    max_baskets_per_customer: u32,
    /// What happened to the rows.
    report: BasketReport,
}

impl Baskets {
    /// Groups rows into baskets. Fails only on an invalid configuration;
    /// bad rows are counted in the [`BasketReport`], not fatal.
    pub fn build<'a, I>(
        rows: I,
        vocabulary: &Vocabulary,
        config: &BasketConfig,
    ) -> Result<Self, RulesError>
    where
        I: IntoIterator<Item = PurchaseRow<'a>>,
    {
        if config.first_day > config.last_day {
            return Err(RulesError::InvalidWindow {
                first_day: config.first_day,
                last_day: config.last_day,
            });
        }
        let max_baskets = config.grouping.max_baskets_per_customer();
        if max_baskets == 0 {
            return Err(RulesError::ZeroBound {
                what: "max_days_per_customer",
            });
        }
        let window_day = |day: i64| match config.grouping {
            BasketGrouping::CustomerWindow => 0,
            BasketGrouping::PurchaseDay { .. } => day,
        };
        let mut report = BasketReport::default();
        let mut by_customer: HashMap<String, BTreeMap<i64, BTreeSet<ItemId>>> = HashMap::new();
        for row in rows {
            report.rows += 1;
            if row.customer.is_empty() {
                report.rejected_missing_customer += 1;
                continue;
            }
            if row.day < config.first_day || row.day > config.last_day {
                report.rejected_outside_window += 1;
                continue;
            }
            let Some(item) = vocabulary.lookup(row.item) else {
                report.rejected_unknown_item += 1;
                continue;
            };
            let days = match by_customer.get_mut(row.customer) {
                Some(days) => days,
                None => by_customer.entry(row.customer.to_owned()).or_default(),
            };
            days.entry(window_day(row.day)).or_default().insert(item);
        }
        let mut keyed: Vec<(String, BTreeMap<i64, BTreeSet<ItemId>>)> =
            by_customer.into_iter().collect();
        keyed.sort_unstable_by(|left, right| left.0.cmp(&right.0));
        let mut customers = Vec::with_capacity(keyed.len());
        for (_, days) in keyed {
            let total = days.len();
            let keep = total.min(max_baskets as usize);
            report.baskets_over_cap += (total - keep) as u64;
            // The most recent days: recency is what cross-sell acts on.
            let baskets: Vec<Vec<ItemId>> = days
                .into_values()
                .skip(total - keep)
                .map(|items| items.into_iter().collect())
                .collect();
            report.baskets += baskets.len() as u64;
            customers.push(baskets);
        }
        report.customers = customers.len() as u64;
        Ok(Self {
            customers,
            vocabulary_len: vocabulary.len(),
            max_baskets_per_customer: max_baskets,
            report,
        })
    }

    /// What happened to the rows.
    pub fn report(&self) -> &BasketReport {
        &self.report
    }

    /// `m`: the most baskets one customer contributes.
    pub fn max_baskets_per_customer(&self) -> u32 {
        self.max_baskets_per_customer
    }

    /// Size of the vocabulary the item ids index.
    pub fn vocabulary_len(&self) -> usize {
        self.vocabulary_len
    }

    /// Per customer, per basket, the sorted item ids.
    pub fn customers(&self) -> &[Vec<Vec<ItemId>>] {
        &self.customers
    }

    /// Every basket, customer after customer.
    pub fn iter_baskets(&self) -> impl Iterator<Item = &[ItemId]> {
        self.customers
            .iter()
            .flat_map(|baskets| baskets.iter().map(Vec::as_slice))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row<'a>(customer: &'a str, day: i64, item: &'a str) -> PurchaseRow<'a> {
        PurchaseRow {
            customer,
            day,
            item,
        }
    }

    #[test]
    fn rows_become_baskets_and_bad_rows_become_rejects() {
        let vocabulary = Vocabulary::declared(["a", "b", "c"]).unwrap_or_else(|_| unreachable!());
        let rows = [
            row("x", 1, "b"),
            row("x", 1, "a"),
            row("x", 2, "c"),
            row("x", 3, "a"),
            row("y", 2, "zzz"),
            row("y", 9, "a"),
            row("", 2, "a"),
            row("z", 2, "c"),
        ];
        let window = BasketConfig {
            grouping: BasketGrouping::CustomerWindow,
            first_day: 0,
            last_day: 5,
        };
        let Ok(baskets) = Baskets::build(rows, &vocabulary, &window) else {
            unreachable!("valid configuration");
        };
        assert_eq!(baskets.customers(), &[vec![vec![0, 1, 2]], vec![vec![2]]]);
        assert_eq!(
            *baskets.report(),
            BasketReport {
                rows: 8,
                rejected_unknown_item: 1,
                rejected_outside_window: 1,
                rejected_missing_customer: 1,
                customers: 2,
                baskets: 2,
                baskets_over_cap: 0,
            }
        );
        let by_day = BasketConfig {
            grouping: BasketGrouping::PurchaseDay {
                max_days_per_customer: 2,
            },
            ..window
        };
        let Ok(baskets) = Baskets::build(rows, &vocabulary, &by_day) else {
            unreachable!("valid configuration");
        };
        // Customer x bought on days 1, 2 and 3; the two most recent are kept.
        assert_eq!(
            baskets.customers(),
            &[vec![vec![2], vec![0]], vec![vec![2]]]
        );
        assert_eq!(baskets.report().baskets_over_cap, 1);
        assert_eq!(baskets.max_baskets_per_customer(), 2);
    }

    #[test]
    fn invalid_configurations_are_refused() {
        let vocabulary = Vocabulary::declared(["a"]).unwrap_or_else(|_| unreachable!());
        let inverted = BasketConfig {
            grouping: BasketGrouping::CustomerWindow,
            first_day: 5,
            last_day: 4,
        };
        assert_eq!(
            Baskets::build([], &vocabulary, &inverted),
            Err(RulesError::InvalidWindow {
                first_day: 5,
                last_day: 4
            })
        );
        let zero_days = BasketConfig {
            grouping: BasketGrouping::PurchaseDay {
                max_days_per_customer: 0,
            },
            first_day: 0,
            last_day: 4,
        };
        assert_eq!(
            Baskets::build([], &vocabulary, &zero_days),
            Err(RulesError::ZeroBound {
                what: "max_days_per_customer"
            })
        );
    }
}
