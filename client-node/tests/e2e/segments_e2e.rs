//! Shared customer segments end to end over real gRPC on 127.0.0.1: four
//! nodes run a federated DP k-means job through secure aggregation, every
//! release is charged once in both ledgers and they reconcile, the exported
//! result's centroids serve the pooled customers about as well as
//! centralised k-means on the same rows, a partner assigns its own customers
//! locally with its own raw ids, and an RFM job gives every partner the same
//! cut points.

use std::path::PathBuf;
use std::time::Duration;

use client_node::config::NodeConfig;
use rand_core::SeedableRng;
use veil_behaviour_features::build_examples;
use veil_job::analysis::Analysis;
use veil_job::file::{JobFile, RfmSection, SegmentSection};
use veil_segmentation::baseline::kmeans_plus_plus;
use veil_segmentation::{Points, kmeans_cost};
use veil_wire::v1;

use crate::support;

const NODES: usize = 4;
const CUTOFF: &str = "2024-10-02";
const EPSILON: f64 = 1.0;
const DELTA: f64 = 1e-6;

fn segment_job() -> JobFile {
    let mut job = veil_job::standard_job(CUTOFF, 90);
    job.name = "shared-segments".to_owned();
    job.max_participants = NODES as u32;
    job.model = None;
    job.training = None;
    job.features.names = ["recency_days", "frequency", "monetary", "tenure_days"]
        .map(str::to_owned)
        .to_vec();
    job.privacy = Default::default();
    job.privacy.customer_epsilon = Some(EPSILON);
    job.privacy.delta = Some(DELTA);
    job.aggregation.step_timeout_secs = Some(5.0);
    job.timeouts.feature_stats_secs = Some(30.0);
    job.segment = Some(SegmentSection {
        k: vec![3, 5],
        iterations: Some(4),
        radius: None,
        damping: None,
        seeding_cells: None,
        seeding_radius: None,
        box_bound: None,
        cost_bound: None,
        with_label: true,
    });
    job
}

/// Every partner's customers as the nodes see them in the job: de-identified,
/// in the public scaling, clamped to the box.
fn pooled_points(configs: &[NodeConfig], spec: &veil_job::JobSpec, box_bound: f64) -> Points {
    let mut rows: Vec<Vec<f64>> = Vec::new();
    for config in configs {
        let (log, _) = client_node::data::load_partner_data(&config.data).unwrap();
        rows.extend(
            build_examples(&log, &spec.label, &spec.features)
                .into_iter()
                .map(|row| row.features.iter().map(|&v| f64::from(v)).collect()),
        );
    }
    Points::from_original(&rows, &spec.features.public_scaling(), box_bound).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_job_releases_only_charged_noised_sums_and_finds_useful_segments() {
    let _machine = support::whole_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let synth = veil_synth_data::SynthConfig::demo(NODES, 23);
    let files: Vec<PathBuf> = veil_synth_data::write_partner_files(&synth, dir.path()).unwrap();
    let coordinator_state = dir.path().join("coordinator.state");
    let coordinator = support::Coordinator::start(coordinator_state.clone()).await;
    let configs: Vec<NodeConfig> = files
        .iter()
        .enumerate()
        .map(|(index, file)| {
            support::dev_node_config(index, &coordinator.address, file, dir.path())
        })
        .collect();
    let nodes = support::start_nodes(configs.clone()).await;
    let mut operator = coordinator.operator().await;

    let wire = segment_job().to_wire();
    let spec = veil_job::JobSpec::from_wire(&wire).unwrap();
    let Some(Analysis::Segment(segment)) = spec.analysis.clone() else {
        panic!("a segment job");
    };
    let releases = segment.plan.releases().len() as u32;
    assert_eq!(
        releases,
        1 + 2 * 5,
        "seeding, then 4 steps and a profile per k"
    );
    let (job_id, status, transcript) =
        support::run_job_to_end(&mut operator, wire, Duration::from_secs(300)).await;
    assert_eq!(
        v1::JobState::try_from(status.state),
        Ok(v1::JobState::Succeeded),
        "{status:?}\n{transcript}"
    );
    assert_eq!(status.completed_rounds, releases, "{transcript}");

    // The result: every k's centroids, exported like a model.
    let exported = coordinator::operator::fetch_model(&mut operator, &job_id)
        .await
        .unwrap();
    let model_path = dir.path().join("segments.veil");
    exported.write(&model_path).unwrap();
    let models = segment
        .models(&exported.parameters, &spec.features.public_scaling())
        .unwrap();
    assert_eq!(models.iter().map(|m| m.k()).collect::<Vec<_>>(), vec![3, 5]);

    // Useful on the pooled customers: the federated centroids cost little
    // more than centralised k-means++ (best of 10) on the very same rows,
    // which sees every customer exactly and spends no privacy. The job fits
    // k = 3 and k = 5 for the operator to choose from: the better of the
    // two is within 1.3 times the centralised cost at its k, and neither is
    // worse than 2 times. (Measured over 19 runs: k = 3 at 1.003-1.030 in
    // most runs but 1.67-1.75 in about one in six, a poor local optimum of
    // the noised Lloyd steps; k = 5 at 1.02-1.28 in every run.)
    let points = pooled_points(&configs, &spec, segment.config.box_bound);
    let result = exported.parameters.clone();
    let d = segment.config.n_features;
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(5);
    let mut offset = 0;
    let mut ratios = Vec::new();
    for k in [3usize, 5] {
        let federated: Vec<Vec<f64>> = result[offset..offset + k * d]
            .chunks_exact(d)
            .map(|c| c.iter().map(|&v| f64::from(v)).collect())
            .collect();
        offset += k * d;
        let central = kmeans_plus_plus(&points, k, 10, &mut rng);
        let ratio = kmeans_cost(&points, &federated) / kmeans_cost(&points, &central);
        println!(
            "k = {k} over {} pooled customers: federated cost / centralised cost = {ratio:.3}",
            points.len()
        );
        assert!(
            ratio <= 2.0,
            "federated k-means cost ratio {ratio:.3} at k = {k}"
        );
        ratios.push(ratio);
    }
    let best = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    assert!(best <= 1.3, "federated k-means cost ratios {ratios:.3?}");

    // A partner assigns its own customers locally, by their raw ids.
    let out = dir.path().join("node-0-segments.csv");
    let assigned =
        client_node::analysis::segment_customers(&model_path, Some(3), &configs[0].data, &out)
            .unwrap();
    let text = std::fs::read_to_string(&out).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("customer_id,segment,distance"));
    let ids: Vec<&str> = lines.map(|line| line.split(',').next().unwrap()).collect();
    assert_eq!(ids.len(), assigned.customers);
    assert!(assigned.customers > 100, "{assigned:?}");
    let raw_ids = std::fs::read_to_string(&files[0]).unwrap();
    assert!(
        ids.iter().all(|id| raw_ids.contains(id)),
        "every id written is one of the partner's own"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&out).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "segment file mode {mode:o}");
    }
    // The scoring command refuses a segmentation result by name.
    let refused = client_node::score::score(
        &model_path,
        &configs[0].data,
        client_node::score::ScoringCutoff::AsTrained,
        &dir.path().join("scores.csv"),
    )
    .unwrap_err();
    assert!(
        format!("{refused:#}").contains("client-node segment"),
        "{refused:#}"
    );

    coordinator.stop().await;
    for node in nodes {
        node.abort();
    }

    // Every release was charged once per partner, in both ledgers, and
    // they agree; the composed spend is within the job's ε.
    support::assert_each_release_charged_once(
        &coordinator_state,
        dir.path(),
        NODES,
        &job_id,
        releases,
        (EPSILON, DELTA),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rfm_job_gives_every_partner_the_same_cut_points() {
    let _machine = support::whole_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let synth = veil_synth_data::SynthConfig::demo(NODES, 29);
    let files: Vec<PathBuf> = veil_synth_data::write_partner_files(&synth, dir.path()).unwrap();
    let coordinator = support::Coordinator::start(dir.path().join("coordinator.state")).await;
    let configs: Vec<NodeConfig> = files
        .iter()
        .enumerate()
        .map(|(index, file)| {
            support::dev_node_config(index, &coordinator.address, file, dir.path())
        })
        .collect();
    let nodes = support::start_nodes(configs.clone()).await;
    let mut operator = coordinator.operator().await;
    let mut job = segment_job();
    job.name = "rfm".to_owned();
    job.segment = None;
    job.rfm = Some(RfmSection::default());
    let (job_id, status, transcript) =
        support::run_job_to_end(&mut operator, job.to_wire(), Duration::from_secs(120)).await;
    assert_eq!(
        v1::JobState::try_from(status.state),
        Ok(v1::JobState::Succeeded),
        "{status:?}\n{transcript}"
    );
    let exported = coordinator::operator::fetch_model(&mut operator, &job_id)
        .await
        .unwrap();
    let model_path = dir.path().join("rfm.veil");
    exported.write(&model_path).unwrap();
    let cuts = veil_job::analysis::Rfm::cut_points(&exported.parameters).unwrap();
    // Within the stated error of the pooled quintiles: each cut point has
    // between 20% ± the bound of all customers below it.
    let spec = veil_job::JobSpec::from_wire(&job.to_wire()).unwrap();
    let Some(Analysis::Rfm(rfm)) = &spec.analysis else {
        panic!("an RFM job");
    };
    let release = rfm.plan.release(0).unwrap();
    let bound = veil_segmentation::rfm::quantile_rank_error(release, rfm.bins.recency.len() - 1);
    let cutoff = chrono::NaiveDate::parse_from_str(CUTOFF, "%Y-%m-%d").unwrap();
    let mut pooled: Vec<veil_segmentation::rfm::RfmValues> = Vec::new();
    for config in &configs {
        let (log, _) = client_node::data::load_partner_data(&config.data).unwrap();
        pooled.extend(
            client_node::analysis::rfm_values(&log, cutoff)
                .into_iter()
                .map(|(_, values)| values),
        );
    }
    let n = pooled.len() as f64;
    for (level, cut) in [0.2, 0.4, 0.6, 0.8].iter().zip(cuts.frequency) {
        // Customers strictly below and at or below the cut (bins are whole purchases).
        let below = pooled.iter().filter(|v| v.frequency < cut).count() as f64;
        let at_or_below = pooled.iter().filter(|v| v.frequency <= cut).count() as f64;
        assert!(
            below <= level * n + bound + 1.0 && at_or_below + bound + 1.0 >= level * n,
            "frequency cut {cut} at level {level}: {below}..{at_or_below} of {n} below (bound {bound:.0})"
        );
    }
    // Every partner scores against those same cut points, locally.
    for (index, config) in configs.iter().enumerate() {
        let out = dir.path().join(format!("node-{index}-rfm.csv"));
        let scored = client_node::analysis::rfm_customers(
            &model_path,
            &veil_segmentation::rfm::RfmSegmentTable::standard(),
            &config.data,
            &out,
        )
        .unwrap();
        assert!(scored.customers > 0);
        assert!(
            scored.per_segment.keys().any(|name| name == "champions"),
            "{:?}",
            scored.per_segment
        );
    }
    coordinator.stop().await;
    for node in nodes {
        node.abort();
    }
}
