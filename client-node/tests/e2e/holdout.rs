//! `holdout_fraction`: absent means the default 0.2, 0 means no holdout (a
//! partner that keeps its own evaluation set trains on every customer), on
//! real generated partner data through the node's own data path; and a
//! node with nothing held out evaluates to empty statistics instead of
//! running the model on an empty batch.

use client_node::data::{JobRows, load_partner_data, to_dataset};
use veil_job::JobSpec;

fn spec_with(holdout: Option<f64>) -> JobSpec {
    let mut file = veil_job::standard_job("2024-10-02", 90);
    file.holdout_fraction = holdout;
    JobSpec::from_wire(&file.to_wire()).unwrap()
}

#[test]
fn zero_holds_out_nobody_and_absent_holds_out_a_fifth() {
    let dir = tempfile::tempdir().unwrap();
    let synth = veil_synth_data::SynthConfig::demo(1, 5);
    let files = veil_synth_data::write_partner_files(&synth, dir.path()).unwrap();
    let config: veil_partner_data::PartnerDataConfig =
        veil_behaviour_features::CsvSource::new(files[0].clone()).into();
    let (log, _) = load_partner_data(&config).unwrap();

    let none = spec_with(Some(0.0));
    assert_eq!(none.holdout_fraction, 0.0);
    let rows = JobRows::prepare(&log, &none);
    assert!(rows.holdout.is_empty());
    let customers = rows.train.len();
    assert!(customers > 100, "{customers}");

    let default = spec_with(None);
    assert_eq!(default.holdout_fraction, 0.2);
    let rows = JobRows::prepare(&log, &default);
    assert_eq!(rows.train.len() + rows.holdout.len(), customers);
    let share = rows.holdout.len() as f64 / customers as f64;
    // A salted hash split: the share is binomial around 0.2 (σ ≈ 0.01 for
    // about 1300 customers), so 0.15..0.25 is five standard deviations.
    assert!((0.15..0.25).contains(&share), "{share}");

    // Nothing held out: the evaluation is empty, not an error.
    let model = none.model_spec();
    let n_features = none.features.n_features();
    let scaling = veil_behaviour_features::Scaling {
        mean: vec![0.0; n_features],
        std: vec![1.0; n_features],
    };
    let empty = to_dataset(&[], &scaling, n_features).unwrap();
    let parameters = model.initial_parameters(1);
    let stats = veil_models::evaluate(&model, &parameters, &empty).unwrap();
    assert_eq!(stats.count, 0);

    let mut refused = veil_job::standard_job("2024-10-02", 90);
    refused.holdout_fraction = Some(1.0);
    let refused = refused.to_wire();
    let error = JobSpec::from_wire(&refused).unwrap_err();
    assert_eq!(error.field, "holdout_fraction", "{error}");
}
