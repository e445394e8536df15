//! The generated files load cleanly through the node's ingestion (`veil-partner-data`), give sane
//! and different churn rates per partner, and make churn learnable but not trivially so.

use veil_behaviour_features::{
    CsvSource, CustomerRow, FeatureSpec, FeatureSums, LabelSpec, Scaling, TaskKind, build_examples,
    split_holdout,
};
use veil_partner_data::load_partner_data_with_local_ids;
use veil_synth_data::{SynthConfig, write_partner_files};

/// Churn examples of each demo partner, in config order, with the generated (raw) customer ids
/// put back in place of the pseudonyms so the tests can check the generator's ids.
fn demo_examples(n_partners: usize, seed: u64) -> (SynthConfig, Vec<Vec<CustomerRow>>) {
    let config = SynthConfig::demo(n_partners, seed);
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("tempdir: {error}"));
    let paths = write_partner_files(&config, dir.path()).unwrap_or_else(|error| panic!("{error}"));
    let label = LabelSpec {
        task: TaskKind::Churn,
        cutoff: config.suggested_cutoff(),
        horizon_days: config.suggested_horizon_days(),
    };
    let examples = paths
        .iter()
        .map(|path| {
            let (data, raw_ids) = load_partner_data_with_local_ids(&CsvSource::new(path).into())
                .unwrap_or_else(|error| panic!("{error}"));
            assert_eq!(
                data.report.rows_rejected(),
                0,
                "{:?}",
                data.report.sample_errors()
            );
            let mut rows = build_examples(&data.log, &label, &FeatureSpec::standard());
            for row in &mut rows {
                row.customer_id = raw_ids[&row.customer_id].clone();
            }
            rows
        })
        .collect();
    (config, examples)
}

fn churn_rate(rows: &[CustomerRow]) -> f64 {
    let churned = rows.iter().filter(|row| row.label == Some(1.0)).count();
    churned as f64 / rows.len().max(1) as f64
}

/// A plain logistic regression fitted by full-batch gradient descent on standardised features;
/// enough to measure how learnable the label is, not a production model.
struct LogisticModel {
    scaling: Scaling,
    weights: Vec<f64>,
    bias: f64,
}

fn standardised(scaling: &Scaling, row: &CustomerRow) -> Vec<f64> {
    let mut features = row.features.clone();
    scaling.apply(&mut features);
    features.into_iter().map(f64::from).collect()
}

fn fit(rows: &[CustomerRow]) -> LogisticModel {
    let n_features = FeatureSpec::standard().n_features();
    let scaling = Scaling::from_sums(&FeatureSums::from_rows(rows, n_features))
        .unwrap_or_else(|error| panic!("{error}"));
    let inputs: Vec<(Vec<f64>, f64)> = rows
        .iter()
        .map(|row| {
            (
                standardised(&scaling, row),
                f64::from(row.label.unwrap_or(0.0)),
            )
        })
        .collect();
    let mut weights = vec![0.0; n_features];
    let mut bias = 0.0;
    let learning_rate = 0.5;
    for _ in 0..400 {
        let mut weight_gradient = vec![0.0; n_features];
        let mut bias_gradient = 0.0;
        for (features, label) in &inputs {
            let error = predict_raw(&weights, bias, features) - label;
            for (gradient, value) in weight_gradient.iter_mut().zip(features) {
                *gradient += error * value;
            }
            bias_gradient += error;
        }
        let scale = learning_rate / inputs.len() as f64;
        for (weight, gradient) in weights.iter_mut().zip(&weight_gradient) {
            *weight -= scale * gradient;
        }
        bias -= scale * bias_gradient;
    }
    LogisticModel {
        scaling,
        weights,
        bias,
    }
}

fn predict_raw(weights: &[f64], bias: f64, features: &[f64]) -> f64 {
    let logit: f64 = bias
        + weights
            .iter()
            .zip(features)
            .map(|(weight, value)| weight * value)
            .sum::<f64>();
    1.0 / (1.0 + (-logit).exp())
}

/// Area under the ROC curve by the rank-sum formula, with tied scores sharing their mean rank.
fn auc(model: &LogisticModel, rows: &[CustomerRow]) -> f64 {
    let mut scored: Vec<(f64, bool)> = rows
        .iter()
        .map(|row| {
            let score = predict_raw(
                &model.weights,
                model.bias,
                &standardised(&model.scaling, row),
            );
            (score, row.label == Some(1.0))
        })
        .collect();
    scored.sort_by(|left, right| left.0.total_cmp(&right.0));
    let mut positive_rank_sum = 0.0;
    let mut start = 0;
    while start < scored.len() {
        let end = (start..scored.len())
            .find(|index| scored[*index].0 != scored[start].0)
            .unwrap_or(scored.len());
        let mean_rank = (start + 1 + end) as f64 / 2.0;
        positive_rank_sum += mean_rank
            * scored[start..end]
                .iter()
                .filter(|(_, positive)| *positive)
                .count() as f64;
        start = end;
    }
    let n_positive = scored.iter().filter(|(_, positive)| *positive).count() as f64;
    let n_negative = scored.len() as f64 - n_positive;
    (positive_rank_sum - n_positive * (n_positive + 1.0) / 2.0) / (n_positive * n_negative)
}

#[test]
fn churn_rates_are_sane_and_differ_between_partners() {
    let (config, examples) = demo_examples(6, 2024);
    let rates: Vec<f64> = examples.iter().map(|rows| churn_rate(rows)).collect();
    for ((partner, rows), rate) in config.partners.iter().zip(&examples).zip(&rates) {
        eprintln!(
            "{}: {} examples, churn rate {rate:.3}",
            partner.name,
            rows.len()
        );
    }
    for ((partner, rows), rate) in config.partners.iter().zip(&examples).zip(&rates) {
        // Customers who left before the data starts never appear, but most customers do.
        assert!(
            rows.len() as f64 > 0.5 * partner.n_customers as f64,
            "{}",
            partner.name
        );
        assert!(
            (0.10..=0.60).contains(rate),
            "{}: churn rate {rate}",
            partner.name
        );
    }
    let spread = rates.iter().copied().fold(f64::MIN, f64::max)
        - rates.iter().copied().fold(f64::MAX, f64::min);
    assert!(spread > 0.1, "churn rates barely differ: {rates:?}");
}

#[test]
fn customer_ids_look_like_partner_ids_and_are_distinct_across_partners() {
    let (config, examples) = demo_examples(3, 5);
    let mut all_ids = std::collections::HashSet::new();
    for (partner, rows) in config.partners.iter().zip(&examples) {
        let prefix = format!("C-{}-", partner.id_code);
        for row in rows {
            let number = row.customer_id.strip_prefix(&prefix).unwrap_or_default();
            assert!(
                number.len() == 6 && number.bytes().all(|byte| byte.is_ascii_digit()),
                "{}",
                row.customer_id
            );
            assert!(
                all_ids.insert(row.customer_id.clone()),
                "duplicate id {}",
                row.customer_id
            );
        }
    }
}

#[test]
fn churn_is_learnable_but_not_trivial_and_pooling_helps() {
    let (_, examples) = demo_examples(3, 7);
    let salt = b"learnability";
    let splits: Vec<(Vec<CustomerRow>, Vec<CustomerRow>)> = examples
        .into_iter()
        .map(|rows| split_holdout(rows, 0.3, salt))
        .collect();
    let pooled_train: Vec<CustomerRow> = splits
        .iter()
        .flat_map(|(train, _)| train.iter().cloned())
        .collect();
    let pooled_holdout: Vec<CustomerRow> = splits
        .iter()
        .flat_map(|(_, holdout)| holdout.iter().cloned())
        .collect();

    let pooled_model = fit(&pooled_train);
    let pooled_auc = auc(&pooled_model, &pooled_holdout);
    eprintln!("pooled model, pooled holdout AUC {pooled_auc:.3}");

    // The smallest partner alone, judged on the other partners' holdout rows.
    let (small_train, _) = &splits[2];
    let others_holdout: Vec<CustomerRow> = splits[..2]
        .iter()
        .flat_map(|(_, holdout)| holdout.iter().cloned())
        .collect();
    let small_model = fit(small_train);
    let small_auc = auc(&small_model, &others_holdout);
    let pooled_on_others = auc(&pooled_model, &others_holdout);
    eprintln!(
        "on the larger partners' holdout: small-partner model {small_auc:.3}, pooled model {pooled_on_others:.3}"
    );
    assert!(
        (0.75..=0.88).contains(&pooled_auc),
        "pooled AUC {pooled_auc}"
    );
    assert!(
        pooled_on_others > small_auc,
        "pooling did not help: {pooled_on_others} <= {small_auc}"
    );
}
