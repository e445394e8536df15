//! Customer summaries as `lifetimes.utils.summary_data_from_transaction_data`
//! computes them with `freq="D"`: frequency, recency and age counted in
//! purchase days, and the mean spend per repeat purchase day.

use crate::error::LifetimeValueError;

/// One dated purchase row of one customer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Purchase {
    /// Day of the purchase as a day number (for example days since the Unix
    /// epoch); only differences between days matter.
    pub day: i64,
    /// Amount spent, at least 0.
    pub amount: f64,
}

/// One transaction row with its customer, as `lifetimes` takes them.
#[derive(Debug, Clone, PartialEq)]
pub struct Transaction<K> {
    /// Whose purchase it is.
    pub customer: K,
    /// Day number of the purchase.
    pub day: i64,
    /// Amount spent, at least 0.
    pub amount: f64,
}

/// What BG/NBD and Gamma-Gamma need to know about one customer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CustomerSummary {
    /// `x`: purchase days after the first one (repeat purchases).
    pub frequency: u32,
    /// `t_x`: days from the first to the last purchase day (0 when `x = 0`).
    pub recency_days: u32,
    /// `T`: days from the first purchase day to the end of observation.
    pub age_days: u32,
    /// Mean spend per repeat purchase day (the spend of each day summed, the
    /// first day left out); 0 when `x = 0`, as `lifetimes` fills it.
    pub mean_spend: f64,
}

impl CustomerSummary {
    /// Summarises one customer's purchases up to and including
    /// `observation_end_day` (lifetimes' `observation_period_end`); later
    /// purchases are ignored. `None` when none is on or before that day, so the
    /// customer does not exist yet at the cutoff. Several rows on one day are
    /// one purchase whose spend is their sum.
    pub fn from_purchases(
        purchases: &[Purchase],
        observation_end_day: i64,
    ) -> Result<Option<Self>, LifetimeValueError> {
        for (row, purchase) in purchases.iter().enumerate() {
            check_amount(row, purchase.amount)?;
        }
        let mut days: Vec<(i64, f64)> = purchases
            .iter()
            .filter(|purchase| purchase.day <= observation_end_day)
            .map(|purchase| (purchase.day, purchase.amount))
            .collect();
        days.sort_by_key(|&(day, _)| day);
        Ok(summarise_sorted_days(&days, observation_end_day))
    }

    /// Checks the rules every summary from a transaction log obeys; fits call
    /// it on each input so a hand-made summary cannot poison a likelihood.
    pub(crate) fn validate(&self, index: usize) -> Result<(), LifetimeValueError> {
        let invalid = |reason| Err(LifetimeValueError::InvalidSummary { index, reason });
        if self.recency_days > self.age_days {
            return invalid("recency exceeds age");
        }
        if self.frequency == 0 && self.recency_days != 0 {
            return invalid("a customer without repeat purchases has recency 0");
        }
        if self.frequency > 0 && self.frequency > self.recency_days {
            return invalid("more repeat purchase days than days between first and last purchase");
        }
        if !(self.mean_spend.is_finite() && self.mean_spend >= 0.0) {
            return invalid("mean spend must be a finite number at least 0");
        }
        Ok(())
    }
}

fn check_amount(row: usize, amount: f64) -> Result<(), LifetimeValueError> {
    if !amount.is_finite() {
        return Err(LifetimeValueError::NonFiniteAmount { row, amount });
    }
    if amount < 0.0 {
        return Err(LifetimeValueError::NegativeAmount { row, amount });
    }
    Ok(())
}

/// The summary of `(day, amount)` rows sorted by day, all on or before the
/// cutoff; `None` for no rows.
fn summarise_sorted_days(days: &[(i64, f64)], observation_end_day: i64) -> Option<CustomerSummary> {
    let (first_day, _) = *days.first()?;
    let (last_day, _) = *days.last()?;
    let mut purchase_days: u32 = 0;
    let mut repeat_spend = 0.0;
    let mut previous_day = None;
    for &(day, amount) in days {
        if previous_day != Some(day) {
            purchase_days = purchase_days.saturating_add(1);
            previous_day = Some(day);
        }
        if day != first_day {
            repeat_spend += amount;
        }
    }
    let frequency = purchase_days - 1;
    let day_count = |from: i64, to: i64| u32::try_from(to - from).unwrap_or(u32::MAX);
    Some(CustomerSummary {
        frequency,
        recency_days: day_count(first_day, last_day),
        age_days: day_count(first_day, observation_end_day),
        mean_spend: if frequency == 0 {
            0.0
        } else {
            repeat_spend / f64::from(frequency)
        },
    })
}

/// Summarises a whole transaction table as
/// `summary_data_from_transaction_data(..., freq="D", observation_period_end=...)`
/// does: one summary per customer with a purchase on or before
/// `observation_end_day`, sorted by customer. Rows may come in any order.
/// Every amount must be finite and at least 0, including those after the
/// cutoff (a bad row is a bad file, whatever its date).
pub fn summarise_transactions<K: Ord + Clone>(
    transactions: &[Transaction<K>],
    observation_end_day: i64,
) -> Result<Vec<(K, CustomerSummary)>, LifetimeValueError> {
    for (row, transaction) in transactions.iter().enumerate() {
        check_amount(row, transaction.amount)?;
    }
    let mut order: Vec<usize> = (0..transactions.len())
        .filter(|&row| transactions[row].day <= observation_end_day)
        .collect();
    order.sort_unstable_by(|&left, &right| {
        let (left, right) = (&transactions[left], &transactions[right]);
        left.customer
            .cmp(&right.customer)
            .then(left.day.cmp(&right.day))
    });
    let mut summaries = Vec::new();
    let mut days: Vec<(i64, f64)> = Vec::new();
    let mut start = 0;
    while start < order.len() {
        let customer = &transactions[order[start]].customer;
        let mut end = start;
        days.clear();
        while end < order.len() && transactions[order[end]].customer == *customer {
            let transaction = &transactions[order[end]];
            days.push((transaction.day, transaction.amount));
            end += 1;
        }
        if let Some(summary) = summarise_sorted_days(&days, observation_end_day) {
            summaries.push((customer.clone(), summary));
        }
        start = end;
    }
    Ok(summaries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(customer: &'static str, day: i64, amount: f64) -> Transaction<&'static str> {
        Transaction {
            customer,
            day,
            amount,
        }
    }

    #[test]
    fn purchase_days_not_rows_are_counted() {
        // Customer a: two rows on day 0, one on day 3, two on day 10, one after the cutoff.
        let rows = [
            row("a", 10, 4.0),
            row("a", 0, 1.0),
            row("b", 5, 7.0),
            row("a", 3, 2.0),
            row("a", 0, 9.0),
            row("a", 10, 6.0),
            row("a", 30, 100.0),
            row("c", 21, 1.0),
        ];
        let summaries = summarise_transactions(&rows, 20);
        assert_eq!(
            summaries,
            Ok(vec![
                (
                    "a",
                    CustomerSummary {
                        frequency: 2,
                        recency_days: 10,
                        age_days: 20,
                        // Repeat days 3 (2.0) and 10 (4.0 + 6.0): mean 6.
                        mean_spend: 6.0,
                    }
                ),
                (
                    "b",
                    CustomerSummary {
                        frequency: 0,
                        recency_days: 0,
                        age_days: 15,
                        mean_spend: 0.0,
                    }
                ),
            ])
        );
        // The per-customer entry point agrees.
        let purchases: Vec<Purchase> = rows
            .iter()
            .filter(|r| r.customer == "a")
            .map(|r| Purchase {
                day: r.day,
                amount: r.amount,
            })
            .collect();
        assert_eq!(
            CustomerSummary::from_purchases(&purchases, 20).map(|s| s.map(|s| s.mean_spend)),
            Ok(Some(6.0))
        );
        assert_eq!(
            CustomerSummary::from_purchases(&purchases[..0], 20),
            Ok(None)
        );
    }

    #[test]
    fn bad_amounts_name_their_row() {
        let rows = [row("a", 1, 1.0), row("a", 2, f64::NAN)];
        assert!(matches!(
            summarise_transactions(&rows, 5),
            Err(LifetimeValueError::NonFiniteAmount { row: 1, amount }) if amount.is_nan()
        ));
        let rows = [row("a", 1, 1.0), row("b", 2, 1.0), row("a", 9, -3.0)];
        assert_eq!(
            summarise_transactions(&rows, 5),
            Err(LifetimeValueError::NegativeAmount {
                row: 2,
                amount: -3.0
            })
        );
        let purchases = [Purchase {
            day: 0,
            amount: f64::INFINITY,
        }];
        assert_eq!(
            CustomerSummary::from_purchases(&purchases, 5),
            Err(LifetimeValueError::NonFiniteAmount {
                row: 0,
                amount: f64::INFINITY
            })
        );
    }

    #[test]
    fn impossible_summaries_are_refused() {
        let valid = CustomerSummary {
            frequency: 2,
            recency_days: 5,
            age_days: 9,
            mean_spend: 3.0,
        };
        assert_eq!(valid.validate(0), Ok(()));
        for (summary, reason) in [
            (
                CustomerSummary {
                    recency_days: 10,
                    ..valid
                },
                "recency exceeds age",
            ),
            (
                CustomerSummary {
                    frequency: 0,
                    ..valid
                },
                "a customer without repeat purchases has recency 0",
            ),
            (
                CustomerSummary {
                    frequency: 6,
                    ..valid
                },
                "more repeat purchase days than days between first and last purchase",
            ),
            (
                CustomerSummary {
                    mean_spend: f64::NAN,
                    ..valid
                },
                "mean spend must be a finite number at least 0",
            ),
        ] {
            assert_eq!(
                summary.validate(7),
                Err(LifetimeValueError::InvalidSummary { index: 7, reason })
            );
        }
    }
}
