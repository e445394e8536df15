//! Server time of the console's heaviest pages for the size, a job
//! of 1,000 rounds with 100 partners: the job page (1,000 round rows of 100
//! contributors) and the privacy page (100,000 ledger charges composed into
//! 100 lines of 100 points, and the per-year table). Reading the charges
//! from SQLite and TLS are not included.
//!
//! The privacy page is measured three ways: every partner with the same
//! mechanism (the earlier measurement's case), every partner with its own
//! sampling rate (partners' datasets differ in size, so each line has its
//! own RDP curve) from a cold cache, and the same with the curves the server
//! keeps between requests.
//!
//! `cargo bench -p veil-console --bench pages`

use std::collections::BTreeMap;

use criterion::{Criterion, criterion_group, criterion_main};
use veil_console::pages::{self, JobPage, JobSummary, PrivacyPage, RoundRow, Viewer};
use veil_console::privacy::{job_charts, yearly_spend};
use veil_console::token::ConsoleRole;
use veil_privacy_accounting::RdpCurves;
use veil_privacy_ledger::{Budget, Charge, JobBudget, Mechanism, PrivacyUnit, Release, TrustModel};

const ROUNDS: u32 = 1000;
const PARTNERS: usize = 100;
/// 2024-06-01 00:00:00 UTC.
const RECORDED_AT: i64 = 1_717_200_000;

fn partners() -> Vec<String> {
    (0..PARTNERS)
        .map(|index| format!("partner-{index:03}"))
        .collect()
}

fn viewer() -> Viewer {
    Viewer {
        name: "olivia".to_owned(),
        role: ConsoleRole::Operator,
        csrf_token: "00".to_owned(),
    }
}

fn job_page() -> JobPage {
    JobPage {
        summary: JobSummary {
            id: "job-1".to_owned(),
            state: "succeeded".to_owned(),
            completed_rounds: ROUNDS,
            total_rounds: ROUNDS,
            current: None,
            failure: None,
        },
        spec: (0..30)
            .map(|field| (format!("field {field}"), format!("value {field}")))
            .collect(),
        rounds: (1..=ROUNDS)
            .map(|round| RoundRow {
                round,
                contributors: partners(),
                dropped: Vec::new(),
                declined: Vec::new(),
                secure_guarantee: Some("tolerates 3 colluders and 10 dropouts".to_owned()),
                abandoned: None,
            })
            .collect(),
    }
}

/// One charge per partner and round; `sampling_rate(partner)` decides
/// whether partners share a mechanism.
fn charges(sampling_rate: impl Fn(usize) -> f64) -> Vec<Charge> {
    partners()
        .into_iter()
        .enumerate()
        .flat_map(|(index, partner)| {
            let mechanism = Mechanism::PoissonSubsampledGaussian {
                sampling_rate: sampling_rate(index),
                noise_multiplier: 1.1,
                steps: 100,
                clip_norm: 1.0,
            };
            (1..=u64::from(ROUNDS)).map(move |round| Charge {
                job_id: "job-1".to_owned(),
                round,
                partner_id: partner.clone(),
                dataset_id: partner.clone(),
                unit: PrivacyUnit::Customer,
                release: Release::Round,
                trust_model: TrustModel::LocalDpSgd,
                mechanism,
                delta: 1e-5,
                epsilon_rdp: 0.01,
                epsilon_pld: None,
                recorded_at_unix_s: RECORDED_AT + round as i64,
            })
        })
        .collect()
}

fn budget() -> JobBudget {
    let budget = Budget {
        epsilon: 8.0,
        delta: 1e-5,
    };
    JobBudget {
        job_id: "job-1".to_owned(),
        customer: budget,
        partner: budget,
    }
}

/// What the server does for `/privacy`: compose, then render.
fn privacy_page(charges: &[Charge], curves: &mut RdpCurves) -> String {
    let page = PrivacyPage {
        charts: job_charts("job-1", &budget(), charges, curves),
        years: yearly_spend(charges, &BTreeMap::new(), curves),
        refusals: Vec::new(),
    };
    pages::privacy(&viewer(), &page)
}

fn page_benchmarks(criterion: &mut Criterion) {
    let viewer = viewer();
    let job = job_page();
    let mut group = criterion.benchmark_group("console_1000_rounds_100_partners");
    group.sample_size(10);
    group.bench_function("job_page", |bencher| {
        bencher.iter(|| pages::job(&viewer, std::hint::black_box(&job)))
    });

    let shared = charges(|_| 0.01);
    group.bench_function("privacy_page_shared_mechanism", |bencher| {
        bencher.iter(|| privacy_page(std::hint::black_box(&shared), &mut RdpCurves::default()))
    });
    // Sampling rates 0.005 to 0.0149: a distinct mechanism per partner.
    let distinct = charges(|index| 0.005 + index as f64 * 1e-4);
    group.bench_function("privacy_page_distinct_mechanisms_cold", |bencher| {
        bencher.iter(|| privacy_page(std::hint::black_box(&distinct), &mut RdpCurves::default()))
    });
    let mut curves = RdpCurves::default();
    group.bench_function("privacy_page_distinct_mechanisms_warm", |bencher| {
        bencher.iter(|| privacy_page(std::hint::black_box(&distinct), &mut curves))
    });
    group.finish();

    let html = privacy_page(&distinct, &mut curves);
    let job_html = pages::job(&viewer, &job);
    eprintln!(
        "page sizes: job {} KiB, privacy {} KiB",
        job_html.len() / 1024,
        html.len() / 1024
    );
}

criterion_group!(benches, page_benchmarks);
criterion_main!(benches);
