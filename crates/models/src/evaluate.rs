//! Inference and evaluation: predictions, additive evaluation statistics that can be summed
//! across partners (and through secure aggregation). The metrics a marketer reads from them
//! (and the exact AUC on pooled scores) live in `veil-scoring-evaluation`.

use burn::prelude::*;

use crate::network::{NetworkConfig, read_values};
use crate::spec::check_finite;
use crate::train::check_dataset;
use crate::{Dataset, ModelError, ModelSpec, OutputKind};

/// Number of equal-width score buckets over [0, 1] in the binary histograms.
pub const EVAL_BUCKETS: usize = 1000;

/// Rows pushed through the network at once during inference, so that memory stays bounded
/// (64k rows × 64 hidden units × 4 bytes = 16 MB of activations) whatever the caller passes.
const INFERENCE_CHUNK_ROWS: usize = 65_536;

/// Scalar sums at the start of `to_vector`, before the two histograms.
const SCALAR_FIELDS: usize = 6;

/// Additive evaluation statistics, so they can be summed across partners (and later through
/// secure aggregation). Every field is a count or a sum, so the statistics of a union of datasets
/// are the field-wise sums of the statistics of its parts.
///
/// For binary models the errors compare the predicted probability with the label (so
/// `squared_error_sum / count` is the Brier score); a label of 0.5 or more counts as positive.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalStats {
    /// Examples evaluated.
    pub count: u64,
    /// Sum of per-example losses (binary cross-entropy or squared error).
    pub loss_sum: f64,
    /// Sum of (prediction − label)².
    pub squared_error_sum: f64,
    /// Sum of |prediction − label|.
    pub absolute_error_sum: f64,
    /// Sum of labels, for R² (label mean) and class balance.
    pub label_sum: f64,
    /// Sum of squared labels, for R² (label variance).
    pub label_square_sum: f64,
    /// Binary only: counts of positive / negative examples per score bucket, EVAL_BUCKETS
    /// equal-width buckets over [0,1]. Empty for regression.
    pub positive_histogram: Vec<u64>,
    /// Binary only: see `positive_histogram`.
    pub negative_histogram: Vec<u64>,
}

impl EvalStats {
    /// Statistics of no examples, with histograms sized for the output kind.
    pub fn empty(output: OutputKind) -> Self {
        let buckets = histogram_buckets(output);
        Self {
            count: 0,
            loss_sum: 0.0,
            squared_error_sum: 0.0,
            absolute_error_sum: 0.0,
            label_sum: 0.0,
            label_square_sum: 0.0,
            positive_histogram: vec![0; buckets],
            negative_histogram: vec![0; buckets],
        }
    }

    /// Adds `other` into `self`. Fails if the histograms differ in size (binary merged with
    /// regression statistics).
    pub fn merge(&mut self, other: &EvalStats) -> Result<(), ModelError> {
        for (mine, theirs) in [
            (&self.positive_histogram, &other.positive_histogram),
            (&self.negative_histogram, &other.negative_histogram),
        ] {
            if mine.len() != theirs.len() {
                return Err(ModelError::StatsShape {
                    expected: mine.len(),
                    actual: theirs.len(),
                });
            }
        }
        self.count = self.count.saturating_add(other.count);
        self.loss_sum += other.loss_sum;
        self.squared_error_sum += other.squared_error_sum;
        self.absolute_error_sum += other.absolute_error_sum;
        self.label_sum += other.label_sum;
        self.label_square_sum += other.label_square_sum;
        for (mine, theirs) in [
            (&mut self.positive_histogram, &other.positive_histogram),
            (&mut self.negative_histogram, &other.negative_histogram),
        ] {
            for (bucket, added) in mine.iter_mut().zip(theirs) {
                *bucket = bucket.saturating_add(*added);
            }
        }
        Ok(())
    }

    /// Mean per-example loss, `None` without examples.
    pub fn mean_loss(&self) -> Option<f64> {
        (self.count > 0).then(|| self.loss_sum / self.count as f64)
    }

    /// AUC from the merged histograms (ties within a bucket count half). `None` unless both
    /// classes are present.
    pub fn auc(&self) -> Option<f64> {
        let as_counts = |histogram: &[u64]| -> Vec<f64> {
            histogram.iter().map(|count| *count as f64).collect()
        };
        veil_scoring_evaluation::histogram_auc(
            &as_counts(&self.positive_histogram),
            &as_counts(&self.negative_histogram),
        )
    }

    /// Root mean squared error, `None` without examples.
    pub fn rmse(&self) -> Option<f64> {
        (self.count > 0).then(|| (self.squared_error_sum / self.count as f64).sqrt())
    }

    /// Coefficient of determination 1 − SSE/SST, `None` without examples or when the labels do
    /// not vary (SST = 0).
    pub fn r_squared(&self) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let total_sum_of_squares =
            self.label_square_sum - self.label_sum * self.label_sum / self.count as f64;
        (total_sum_of_squares > 0.0).then(|| 1.0 - self.squared_error_sum / total_sum_of_squares)
    }

    /// Flattened to f64s in a fixed documented order (and back), so it can travel as a vector
    /// through an aggregation protocol.
    ///
    /// Order: `count, loss_sum, squared_error_sum, absolute_error_sum, label_sum,
    /// label_square_sum`, then the `positive_histogram` buckets from score 0 upwards, then the
    /// `negative_histogram` buckets (none for regression). Length `6 + 2 * EVAL_BUCKETS` for
    /// binary models, 6 for regression.
    pub fn to_vector(&self) -> Vec<f64> {
        let mut vector = Vec::with_capacity(SCALAR_FIELDS + 2 * self.positive_histogram.len());
        vector.extend([
            self.count as f64,
            self.loss_sum,
            self.squared_error_sum,
            self.absolute_error_sum,
            self.label_sum,
            self.label_square_sum,
        ]);
        vector.extend(self.positive_histogram.iter().map(|count| *count as f64));
        vector.extend(self.negative_histogram.iter().map(|count| *count as f64));
        vector
    }

    /// Inverse of `to_vector`. Counts are rounded to the nearest integer, because a vector that
    /// went through fixed-point aggregation can come back with sub-unit rounding error; a count
    /// below zero (noise of a private release) reads as zero; any non-finite value is rejected.
    pub fn from_vector(output: OutputKind, vector: &[f64]) -> Result<Self, ModelError> {
        let buckets = histogram_buckets(output);
        let expected = SCALAR_FIELDS + 2 * buckets;
        if vector.len() != expected {
            return Err(ModelError::StatsShape {
                expected,
                actual: vector.len(),
            });
        }
        if let Some(index) = vector.iter().position(|value| !value.is_finite()) {
            return Err(ModelError::StatsValue {
                index,
                value: vector.get(index).copied().unwrap_or(f64::NAN),
            });
        }
        // A noisy sum (a differentially private release) can dip below zero
        // where the true count is small: it reads as zero.
        let to_count = |index: usize, value: f64| {
            let rounded = value.round().max(0.0);
            if rounded > u64::MAX as f64 {
                Err(ModelError::StatsValue { index, value })
            } else {
                Ok(rounded as u64)
            }
        };
        let (scalars, histograms) = vector.split_at(SCALAR_FIELDS);
        let [
            count,
            loss_sum,
            squared_error_sum,
            absolute_error_sum,
            label_sum,
            label_square_sum,
        ] = <[f64; SCALAR_FIELDS]>::try_from(scalars).map_err(|_| ModelError::StatsShape {
            expected,
            actual: vector.len(),
        })?;
        let counts = histograms
            .iter()
            .enumerate()
            .map(|(offset, value)| to_count(SCALAR_FIELDS + offset, *value))
            .collect::<Result<Vec<u64>, ModelError>>()?;
        let (positive_histogram, negative_histogram) = counts.split_at(buckets);
        Ok(Self {
            count: to_count(0, count)?,
            loss_sum,
            squared_error_sum,
            absolute_error_sum,
            label_sum,
            label_square_sum,
            positive_histogram: positive_histogram.to_vec(),
            negative_histogram: negative_histogram.to_vec(),
        })
    }

    /// Adds one example given the network's raw output (logit or value) and
    /// its label, clamped by `bounds` if given.
    fn add_example(
        &mut self,
        output: OutputKind,
        raw_output: f32,
        label: f32,
        bounds: Option<ExampleBounds>,
    ) {
        let mut raw_output = f64::from(raw_output);
        let mut label = f64::from(label);
        if let Some(bounds) = bounds {
            match output {
                OutputKind::Binary => label = label.clamp(0.0, 1.0),
                OutputKind::Regression => {
                    raw_output = raw_output.clamp(-bounds.value_bound, bounds.value_bound);
                    label = label.clamp(-bounds.value_bound, bounds.value_bound);
                }
            }
        }
        let (prediction, mut loss) = match output {
            OutputKind::Binary => (sigmoid(raw_output), binary_cross_entropy(raw_output, label)),
            OutputKind::Regression => (raw_output, (raw_output - label).powi(2)),
        };
        if let (Some(bounds), OutputKind::Binary) = (bounds, output) {
            loss = loss.min(bounds.binary_loss_bound);
        }
        let error = prediction - label;
        self.count += 1;
        self.loss_sum += loss;
        self.squared_error_sum += error * error;
        self.absolute_error_sum += error.abs();
        self.label_sum += label;
        self.label_square_sum += label * label;
        if output == OutputKind::Binary {
            // Truncation maps [k/1000, (k+1)/1000) to bucket k; the clamp puts a score of
            // exactly 1.0 in the top bucket.
            let bucket = ((prediction * EVAL_BUCKETS as f64) as usize).min(EVAL_BUCKETS - 1);
            let histogram = if label >= 0.5 {
                &mut self.positive_histogram
            } else {
                &mut self.negative_histogram
            };
            if let Some(slot) = histogram.get_mut(bucket) {
                *slot += 1;
            }
        }
    }
}

/// Histogram size for an output kind: regression carries no histograms.
fn histogram_buckets(output: OutputKind) -> usize {
    match output {
        OutputKind::Binary => EVAL_BUCKETS,
        OutputKind::Regression => 0,
    }
}

fn sigmoid(logit: f64) -> f64 {
    1.0 / (1.0 + (-logit).exp())
}

/// Binary cross-entropy from a logit, the same formula as the training loss:
/// softplus(z) − y·z, with softplus written to avoid overflow for large |z|.
fn binary_cross_entropy(logit: f64, label: f64) -> f64 {
    let softplus = logit.max(0.0) + (-logit.abs()).exp().ln_1p();
    softplus - label * logit
}

/// Raw network outputs (logits for binary models), one per row, via the same forward step as
/// training.
fn raw_outputs(
    spec: &ModelSpec,
    parameters: &[f32],
    features: &[f32],
) -> Result<Vec<f32>, ModelError> {
    spec.validate()?;
    spec.check_parameters(parameters, "parameters")?;
    if !features.len().is_multiple_of(spec.n_inputs) {
        return Err(ModelError::PartialRow {
            n_features: spec.n_inputs,
            actual: features.len(),
        });
    }
    check_finite(features, "features")?;
    let device = Device::flex();
    let network = NetworkConfig::from_spec(spec)
        .init(&device)
        .load_flat(parameters)?;
    let mut outputs = Vec::with_capacity(features.len() / spec.n_inputs);
    for chunk in features.chunks(INFERENCE_CHUNK_ROWS * spec.n_inputs) {
        let chunk_rows = chunk.len() / spec.n_inputs;
        let input = Tensor::<2>::from_data(
            TensorData::new(chunk.to_vec(), [chunk_rows, spec.n_inputs]),
            &device,
        );
        outputs.extend(read_values(network.forward(input))?);
    }
    Ok(outputs)
}

/// The model's raw outputs, one per row: logits for binary models (before the
/// sigmoid, so confident predictions keep their order where probabilities
/// round to 1 in f32), values for regression. Membership attacks rank by them.
pub fn predict_raw(
    spec: &ModelSpec,
    parameters: &[f32],
    features: &[f32],
) -> Result<Vec<f32>, ModelError> {
    raw_outputs(spec, parameters, features)
}

/// Probabilities (Binary) or values (Regression), one per row.
pub fn predict(
    spec: &ModelSpec,
    parameters: &[f32],
    features: &[f32],
) -> Result<Vec<f32>, ModelError> {
    let outputs = raw_outputs(spec, parameters, features)?;
    Ok(match spec.output {
        OutputKind::Binary => outputs
            .into_iter()
            .map(|logit| sigmoid(f64::from(logit)) as f32)
            .collect(),
        OutputKind::Regression => outputs,
    })
}

/// Evaluation statistics of the model on a labelled dataset.
pub fn evaluate(
    spec: &ModelSpec,
    parameters: &[f32],
    data: &Dataset,
) -> Result<EvalStats, ModelError> {
    evaluate_with(spec, parameters, data, None)
}

/// What one example may add to clamped evaluation statistics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExampleBounds {
    /// Regression predictions and labels are clamped to `[-bound, bound]`.
    pub value_bound: f64,
    /// A binary example's cross-entropy counts at most this much.
    pub binary_loss_bound: f64,
}

/// [`evaluate`] with every example's contribution bounded, for a
/// differentially private release: binary labels are clamped to `[0, 1]`
/// and losses to `binary_loss_bound`; regression predictions and labels to
/// `±value_bound`.
pub fn evaluate_clamped(
    spec: &ModelSpec,
    parameters: &[f32],
    data: &Dataset,
    bounds: ExampleBounds,
) -> Result<EvalStats, ModelError> {
    evaluate_with(spec, parameters, data, Some(bounds))
}

fn evaluate_with(
    spec: &ModelSpec,
    parameters: &[f32],
    data: &Dataset,
    bounds: Option<ExampleBounds>,
) -> Result<EvalStats, ModelError> {
    check_dataset(spec, data)?;
    let mut stats = EvalStats::empty(spec.output);
    // A partner that holds out no customers evaluates nothing; the model
    // is not run on an empty batch.
    if data.labels.is_empty() {
        return Ok(stats);
    }
    let outputs = raw_outputs(spec, parameters, &data.features)?;
    for (raw_output, label) in outputs.iter().zip(&data.labels) {
        stats.add_example(spec.output, *raw_output, *label, bounds);
    }
    Ok(stats)
}
