//! The node's side of a basket-rules job: the partner's baskets from its
//! de-identified transactions over the job's public vocabulary, and each
//! level's capped itemset counts with the node's share of the noise. The
//! node's state machine has already checked the round and priced the
//! release; this only computes it.

use anyhow::Context;
use chrono::NaiveDate;
use rand_core::CryptoRng;
use veil_basket_rules::{BasketConfig, Baskets, PurchaseRow, local_counts};
use veil_behaviour_features::TransactionLog;
use veil_job::basket_analysis::{BasketRules, candidates_from_parameters};
use veil_node_protocol::PhaseReply;

/// The partner's baskets: purchases of the job's window up to the cutoff,
/// each category code named by the loader's dictionary and kept only when
/// the name is in the job's vocabulary (codes differ between partners;
/// names are what the job declares). Rows without a category are dropped.
pub fn partner_baskets(
    job: &BasketRules,
    log: &TransactionLog,
    cutoff: NaiveDate,
) -> anyhow::Result<Baskets> {
    // Without a category column every basket would be empty, and the job
    // would "succeed" with no rules: refuse with what to fix instead.
    if log.category_name(0).is_none() {
        anyhow::bail!(
            "this partner's data has no product categories: a basket-rules job needs the node's data source to map a category column (`category = \"...\"`)"
        );
    }
    let last_day = i64::from(cutoff.to_epoch_days());
    let config = BasketConfig {
        grouping: job.grouping,
        first_day: last_day - i64::from(job.window_days) + 1,
        last_day,
    };
    let rows = log.customers().flat_map(|(customer, transactions)| {
        transactions.iter().filter_map(move |transaction| {
            let item = log.category_name(transaction.category?)?;
            Some(PurchaseRow {
                customer,
                day: transaction.day(),
                item,
            })
        })
    });
    Baskets::build(rows, &job.vocabulary, &config).context("the partner's baskets")
}

/// This node's vector for level `index + 1`: the capped counts of the
/// coordinator's candidates (padded with zeros to the release's fixed
/// length), noised with this node's share from `rng` (a cryptographic
/// generator keyed by the OS), then a noiseless `1` so the sum counts the
/// noise shares.
pub fn release_reply<R: CryptoRng>(
    job: &BasketRules,
    cutoff: NaiveDate,
    index: usize,
    parameters: &[f64],
    log: &TransactionLog,
    rng: &mut R,
) -> anyhow::Result<PhaseReply> {
    let candidates = candidates_from_parameters(job, index, parameters)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("release {}: the coordinator's candidates", index + 1))?;
    let cap = *job
        .miner
        .itemset_caps
        .get(index)
        .with_context(|| format!("release {} is not one of the job's levels", index + 1))?;
    let noise = job
        .noise
        .release(index)
        .with_context(|| format!("release {} has no noise in the plan", index + 1))?;
    let baskets = partner_baskets(job, log, cutoff)?;
    let mut counts = local_counts(&baskets, &candidates, cap, rng)?;
    counts.resize(job.count_len(index), 0);
    noise.add_node_noise(&mut counts, rng)?;
    let mut statistics: Vec<f64> = counts.iter().map(|&count| count as f64).collect();
    statistics.push(1.0);
    Ok(PhaseReply {
        weight: 1.0,
        statistics,
        vector: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use veil_basket_rules::Vocabulary;
    use veil_behaviour_features::Transaction;
    use veil_job::file::JobFile;

    use super::*;

    const JOB: &str = r#"
name = "cross-sell"
min_participants = 1
max_participants = 1

[task]
kind = "churn"
cutoff = "2024-06-30"
horizon_days = 90

[basket_rules]
items = ["apparel", "grocery", "home"]
min_support = 0.1
window_days = 30

[aggregation]
mode = "plain"
"#;

    fn purchase(day: NaiveDate, category: u16) -> Transaction {
        let unix_seconds = i64::from(day.to_epoch_days()) * 86_400 + 3_600;
        let mut transaction = Transaction::new(unix_seconds, 10.0);
        transaction.category = Some(category);
        transaction
    }

    #[test]
    fn baskets_name_the_partners_codes_by_its_dictionary_and_drop_unknown_items() {
        let spec = veil_job::JobSpec::from_wire(&JobFile::parse(JOB).expect("parses").to_wire())
            .expect("valid");
        let Some(veil_job::analysis::Analysis::BasketRules(job)) = &spec.analysis else {
            unreachable!("a basket-rules job");
        };
        let cutoff = spec.label.cutoff;
        let day = |offset: i64| {
            cutoff
                .checked_sub_signed(chrono::Duration::days(offset))
                .expect("a date")
        };
        // This partner's codes: 0 = home, 1 = toys (not in the vocabulary),
        // 2 = grocery; the job's ids are apparel 0, grocery 1, home 2.
        let log = TransactionLog::from_transactions([
            ("a".to_owned(), purchase(day(1), 0)),
            ("a".to_owned(), purchase(day(2), 1)),
            ("a".to_owned(), purchase(day(3), 2)),
            ("b".to_owned(), purchase(day(1), 2)),
            // Outside the 30-day window.
            ("b".to_owned(), purchase(day(40), 0)),
            // After the cutoff.
            ("c".to_owned(), purchase(day(-1), 0)),
        ])
        .with_category_names(vec!["home".into(), "toys".into(), "grocery".into()]);
        let baskets = partner_baskets(job, &log, cutoff).expect("baskets");
        assert_eq!(baskets.customers(), &[vec![vec![1, 2]], vec![vec![1]]]);
        assert_eq!(baskets.report().rejected_unknown_item, 1);
        assert_eq!(baskets.report().rejected_outside_window, 2);
        assert_eq!(
            job.vocabulary,
            Vocabulary::declared(["apparel", "grocery", "home"]).expect("valid")
        );
        // Data without a category column is refused with what to fix, not
        // mined into an empty rule set.
        let uncategorised = TransactionLog::from_transactions([(
            "a".to_owned(),
            Transaction::new(i64::from(day(1).to_epoch_days()) * 86_400, 10.0),
        )]);
        let refused = partner_baskets(job, &uncategorised, cutoff).map(|_| ());
        assert!(
            refused
                .as_ref()
                .is_err_and(|error| error.to_string().contains("map a category column")),
            "{refused:?}"
        );
    }
}
