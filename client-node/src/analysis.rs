//! The node's side of analysis jobs (segments, RFM): each release computed
//! from the partner's de-identified customers at the coordinator's public
//! parameters, with the node's share of the noise added; and the local
//! commands that apply a finished analysis to the partner's own customers
//! (`client-node segment`, `client-node rfm`), whose files are the only
//! place raw customer ids meet a segment. The node's state machine has
//! already checked the round and priced the release, and sends it at most
//! once.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use chrono::NaiveDate;
use rand_core::CryptoRng;
use veil_behaviour_features::{CustomerRow, TransactionLog, build_scoring_rows};
use veil_job::JobSpec;
use veil_job::analysis::{Analysis, Rfm};
use veil_job::export::ExportedModel;
use veil_node_protocol::PhaseReply;
use veil_partner_data::{PartnerDataConfig, load_partner_data_with_local_ids};
use veil_segmentation::rfm::{RfmSegmentTable, RfmValues, local_rfm_histograms};
use veil_segmentation::{Points, Request, node_release};

use crate::score::write_owner_only_csv;

/// A label counts as positive at or above this value (labels are 0 or 1).
const POSITIVE_LABEL: f32 = 0.5;

/// This node's vector for release `round - 1` of `spec`'s analysis, noised
/// with its share from `rng` (a cryptographic generator keyed by the OS).
/// `customers` are the job's rows (every customer with history up to the
/// cutoff, labelled by the task), `log` the de-identified transactions.
pub fn release_reply<R: CryptoRng>(
    spec: &JobSpec,
    round: u32,
    parameters: &[f64],
    customers: &[&CustomerRow],
    log: &TransactionLog,
    rng: &mut R,
) -> anyhow::Result<PhaseReply> {
    let analysis = spec
        .analysis
        .as_ref()
        .context("a release task for a job that is not an analysis")?;
    let index = (round as usize)
        .checked_sub(1)
        .context("release rounds start at 1")?;
    if let Analysis::LifetimeValue(lifetime) = analysis {
        let statistics =
            crate::lifetime::release_statistics(lifetime, spec, index, parameters, log, rng)?;
        return Ok(PhaseReply {
            weight: 1.0,
            statistics,
            vector: Vec::new(),
        });
    }
    if let Analysis::BasketRules(rules) = analysis {
        return crate::basket::release_reply(rules, spec.label.cutoff, index, parameters, log, rng);
    }
    let release = analysis
        .release(index)
        .with_context(|| format!("round {round} is not one of the analysis' releases"))?;
    let vector = match analysis {
        Analysis::Segment(segment) => {
            let config = &segment.config;
            let d = config.n_features;
            if parameters.len() % d != 0 {
                bail!(
                    "release {round}: {} centroid values are not whole centroids of {d} features",
                    parameters.len()
                );
            }
            let request = Request {
                release: index,
                centroids: parameters.chunks_exact(d).map(<[f64]>::to_vec).collect(),
            };
            let rows: Vec<Vec<f64>> = customers
                .iter()
                .map(|row| row.features.iter().map(|&value| f64::from(value)).collect())
                .collect();
            let points =
                Points::from_original(&rows, &spec.features.public_scaling(), config.box_bound)?;
            let labels: Option<Vec<bool>> = config.with_label.then(|| {
                customers
                    .iter()
                    .map(|row| row.label.is_some_and(|label| label >= POSITIVE_LABEL))
                    .collect()
            });
            node_release(
                config,
                &segment.plan,
                &request,
                &points,
                labels.as_deref(),
                rng,
            )?
        }
        Analysis::Rfm(rfm) => {
            if !parameters.is_empty() {
                bail!(
                    "an RFM release takes no parameters, got {}",
                    parameters.len()
                );
            }
            let values: Vec<RfmValues> = rfm_values(log, spec.label.cutoff)
                .into_iter()
                .map(|(_, values)| values)
                .collect();
            let mut histograms = local_rfm_histograms(&values, &rfm.bins, release)?;
            release.add_noise(&mut histograms, rng)?;
            histograms
        }
        Analysis::LifetimeValue(_) => unreachable!("answered above"),
        Analysis::BasketRules(_) => unreachable!("answered above"),
    };
    Ok(PhaseReply {
        weight: 1.0,
        statistics: release.to_statistics(&vector),
        vector: Vec::new(),
    })
}

/// Each customer's RFM values as of the cutoff (the last day of history):
/// days since the last purchase, purchases counted as distinct purchase
/// days (several rows on one day are one purchase), and total spend.
/// Customers without a purchase up to the cutoff are left out.
pub fn rfm_values(log: &TransactionLog, cutoff: NaiveDate) -> Vec<(String, RfmValues)> {
    let cutoff_day = i64::from(cutoff.to_epoch_days());
    log.customers()
        .filter_map(|(customer, transactions)| {
            let history: Vec<_> = transactions
                .iter()
                .filter(|transaction| transaction.day() <= cutoff_day)
                .collect();
            let last_day = history.iter().map(|transaction| transaction.day()).max()?;
            let mut days: Vec<i64> = history
                .iter()
                .map(|transaction| transaction.day())
                .collect();
            days.sort_unstable();
            days.dedup();
            Some((
                customer.to_owned(),
                RfmValues {
                    recency_days: (cutoff_day - last_day) as f64,
                    frequency: days.len() as f64,
                    monetary: history.iter().map(|transaction| transaction.amount).sum(),
                },
            ))
        })
        .collect()
}

/// What a local segment or RFM run wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalAssignment {
    /// Customers written.
    pub customers: usize,
    /// Customers per segment (index or RFM name), for the summary line.
    pub per_segment: BTreeMap<String, usize>,
    /// Rows rejected while reading the partner's data.
    pub rows_rejected: u64,
}

/// Reads an analysis result file and refuses one of another kind.
fn read_result(model_path: &Path, wanted: &str) -> anyhow::Result<ExportedModel> {
    let model = ExportedModel::read(model_path)?;
    match &model.spec.analysis {
        Some(analysis) if analysis.kind_name() == wanted => Ok(model),
        Some(analysis) => bail!(
            "{} is the result of a {} job, not a {wanted} job",
            model_path.display(),
            analysis.kind_name()
        ),
        None => bail!(
            "{} is a trained model, not the result of a {wanted} job (use `client-node score`)",
            model_path.display()
        ),
    }
}

/// Reads a segment-naming table (`[[segments]] name = "champions"
/// recency = [5, 5] frequency = [4, 5]`, every (R, F) pair covered once),
/// or the standard one when no file is given.
pub fn rfm_segment_table(path: Option<&Path>) -> anyhow::Result<RfmSegmentTable> {
    let Some(path) = path else {
        return Ok(RfmSegmentTable::standard());
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let table: RfmSegmentTable =
        toml::from_str(&text).with_context(|| format!("segment table {}", path.display()))?;
    table
        .validate()
        .with_context(|| format!("segment table {}", path.display()))?;
    Ok(table)
}

/// Assigns every customer of the partner (with history up to the job's
/// cutoff) to its nearest segment of the fitted `k`, and writes
/// `customer_id,segment,distance` to `output` (owner-only: it pairs raw ids
/// with segments). Nothing is sent anywhere.
pub fn segment_customers(
    model_path: &Path,
    k: Option<usize>,
    data: &PartnerDataConfig,
    output: &Path,
) -> anyhow::Result<LocalAssignment> {
    let model = read_result(model_path, "segment")?;
    let Some(Analysis::Segment(segment)) = &model.spec.analysis else {
        bail!("{} is not a segmentation result", model_path.display());
    };
    let k_values = &segment.config.k_values;
    let position = match k {
        Some(k) => k_values
            .iter()
            .position(|&fitted| fitted == k)
            .with_context(|| format!("--k {k}: the job fitted k = {k_values:?}"))?,
        None if k_values.len() == 1 => 0,
        None => bail!("the job fitted k = {k_values:?}; choose one with --k"),
    };
    let scaling = model.spec.features.public_scaling();
    let models = segment.models(&model.parameters, &scaling)?;
    let (data, local_ids) = load_partner_data_with_local_ids(data)
        .with_context(|| format!("loading {}", data.describe()))?;
    let rows = build_scoring_rows(&data.log, model.spec.label.cutoff, &model.spec.features);
    let mut per_segment = BTreeMap::new();
    let mut records = Vec::with_capacity(rows.len());
    for (index, row) in rows.iter().enumerate() {
        let features: Vec<f64> = row.features.iter().map(|&value| f64::from(value)).collect();
        let assignment = models[position].assign(index, &features)?;
        *per_segment
            .entry(assignment.segment.to_string())
            .or_insert(0) += 1;
        let customer_id = local_ids.get(&row.customer_id).unwrap_or(&row.customer_id);
        records.push([
            customer_id.clone(),
            assignment.segment.to_string(),
            format!("{:.6}", assignment.distance),
        ]);
    }
    write_owner_only_csv(output, &["customer_id", "segment", "distance"], &records)?;
    Ok(LocalAssignment {
        customers: records.len(),
        per_segment,
        rows_rejected: data.report.rows_rejected(),
    })
}

/// Scores every customer of the partner 1–5 on recency, frequency and
/// monetary value against the federation's shared cut points, names its
/// standard RFM segment, and writes
/// `customer_id,recency_days,frequency,monetary,r,f,m,segment` (owner-only).
pub fn rfm_customers(
    model_path: &Path,
    table: &RfmSegmentTable,
    data: &PartnerDataConfig,
    output: &Path,
) -> anyhow::Result<LocalAssignment> {
    table.validate()?;
    let model = read_result(model_path, "rfm")?;
    let cuts = Rfm::cut_points(&model.parameters)?;
    let (data, local_ids) = load_partner_data_with_local_ids(data)
        .with_context(|| format!("loading {}", data.describe()))?;
    let mut per_segment = BTreeMap::new();
    let mut records = Vec::new();
    for (customer, values) in rfm_values(&data.log, model.spec.label.cutoff) {
        let score = cuts.score(&values);
        let name = table.name(&score).unwrap_or("unnamed").to_owned();
        *per_segment.entry(name.clone()).or_insert(0) += 1;
        let customer_id = local_ids.get(&customer).unwrap_or(&customer);
        records.push([
            customer_id.clone(),
            format!("{}", values.recency_days),
            format!("{}", values.frequency),
            format!("{:.2}", values.monetary),
            score.recency.to_string(),
            score.frequency.to_string(),
            score.monetary.to_string(),
            name,
        ]);
    }
    write_owner_only_csv(
        output,
        &[
            "customer_id",
            "recency_days",
            "frequency",
            "monetary",
            "r",
            "f",
            "m",
            "segment",
        ],
        &records,
    )?;
    Ok(LocalAssignment {
        customers: records.len(),
        per_segment,
        rows_rejected: data.report.rows_rejected(),
    })
}
