//! Customer-level differentially private local training: DP-SGD (Abadi et al. 2016) with
//! Poisson subsampling, per-example ℓ2 clipping and Gaussian noise, where one customer is one
//! row.
//!
//! Per-example gradients are never materialised one backward pass at a time. For a dense layer
//! the gradient of example i's loss with respect to the weight is the outer product
//! `a_i ⊗ δ_i` of the layer's input and the loss derivative at its output, and with respect to
//! the bias it is `δ_i`, so
//!
//! `||g_i||² = Σ_layers (||a_i||² + 1) · ||δ_i||²`
//!
//! (the "ghost norm", Goodfellow 2015; Li et al. 2022), and the sum of the clipped gradients is
//! `Aᵀ · diag(c) · Δ` per layer. One forward and one manual backward pass over the batch give
//! every `a_i` and `δ_i` exactly, with no autodiff graph.
//!
//! The privacy guarantee is that of the Poisson-subsampled Gaussian mechanism with sampling
//! rate q and noise multiplier σ, composed over [`DpSgdOutcome::steps`] steps; this crate
//! reports those three numbers and `veil-privacy-accounting` turns them into ε.

use burn::nn::Linear;
use burn::optim::GradientsParams;
use burn::prelude::*;
use rand::CryptoRng;
use veil_dp_noise::Gaussian;

use crate::network::{Network, NetworkConfig, mean_loss, output_error};
use crate::train::{ProximalTerm, check_dataset, new_optimizer, trained_parameters};
use crate::{Dataset, ModelError, ModelSpec, OutputKind, TrainOutcome, TrainingConfig};

/// Clipping aims at `clip_norm` times this factor. The per-example norms are computed in f32,
/// with a relative error far below 1e-5 for networks this crate accepts in practice; aiming
/// 2⁻¹² (about 2.4e-4) lower guarantees that no clipped gradient exceeds `clip_norm`, the
/// sensitivity the accountant assumes, at a negligible cost in signal.
const CLIP_SAFETY_FACTOR: f64 = 1.0 - 1.0 / 4096.0;

/// The DP-SGD settings of one job. No `Default`: the noise, clip norm and sampling rate decide
/// the privacy guarantee together with the number of steps, so every job must choose them.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DpSgdConfig {
    /// σ: the standard deviation of the Gaussian noise on each coordinate of the summed clipped
    /// gradients, in units of `clip_norm`. Zero disables the noise and with it the privacy
    /// guarantee (the accountant refuses it); it exists for ablations and tests.
    pub noise_multiplier: f64,
    /// C: the ℓ2 bound on each customer's gradient, the sensitivity of each step's sum.
    pub clip_norm: f64,
    /// q: the probability that a row joins a given step's batch, independently of every other
    /// row and step. The expected batch size is q·N.
    pub sampling_rate: f64,
}

impl DpSgdConfig {
    /// Rejects settings that cannot train or cannot be accounted: a negative or non-finite
    /// noise multiplier, a non-positive or non-finite clip norm, a sampling rate outside (0, 1].
    pub fn validate(&self) -> Result<(), ModelError> {
        let invalid = |field: &'static str, reason: &str| {
            Err(ModelError::InvalidDpSgdConfig {
                field,
                reason: reason.to_owned(),
            })
        };
        if !(self.noise_multiplier.is_finite() && self.noise_multiplier >= 0.0) {
            return invalid("noise_multiplier", "must be finite and non-negative");
        }
        if !(self.clip_norm.is_finite() && self.clip_norm > 0.0) {
            return invalid("clip_norm", "must be finite and positive");
        }
        if !(self.sampling_rate > 0.0 && self.sampling_rate <= 1.0) {
            return invalid("sampling_rate", "must be in (0, 1]");
        }
        Ok(())
    }

    /// Steps per local epoch, round(1/q) and at least 1, so that an epoch samples each row once
    /// in expectation. Only meaningful for a validated config.
    pub fn steps_per_epoch(&self) -> u64 {
        (1.0 / self.sampling_rate).round().max(1.0) as u64
    }
}

/// The result of one DP-SGD run: the trained model and what the accountant needs.
///
/// The caller composes `DpEvent::PoissonSampledGaussian { sampling_rate, noise_multiplier,
/// steps }` for this run. `training.parameters` is covered by that guarantee;
/// `training.mean_training_loss` and `training.examples` are computed from the raw data and are
/// not, so they must not leave the partner in a DP job without their own accounting.
#[derive(Debug, Clone, PartialEq)]
pub struct DpSgdOutcome {
    /// Parameters, last-epoch mean loss over the sampled rows (0 if none was sampled) and the
    /// number of local rows.
    pub training: TrainOutcome,
    /// Noisy gradient steps taken, including steps whose sampled batch was empty.
    pub steps: u64,
    /// q, the Poisson sampling rate of every step.
    pub sampling_rate: f64,
    /// σ, the noise multiplier of every step.
    pub noise_multiplier: f64,
}

/// DP-SGD local training starting from `global`: `config.epochs` × `dp.steps_per_epoch()`
/// steps, each on a Poisson sample of the rows, with the mean of the clipped per-example
/// gradients plus noise `N(0, (σC)²)`, divided by the expected batch size q·N, fed to the
/// configured optimiser (the FedProx gradient, which depends on no row, is added after the
/// noise).
///
/// `config.batch_size` and `config.seed` are not used: the batches are drawn from `rng`, which
/// also supplies the noise and must therefore be cryptographic (use
/// `veil_dp_noise::production_rng`; tests may seed a ChaCha generator). The row count N is
/// treated as public, as in Opacus.
pub fn train_dp_sgd<R: CryptoRng>(
    spec: &ModelSpec,
    global: &[f32],
    data: &Dataset,
    config: &TrainingConfig,
    dp: &DpSgdConfig,
    rng: &mut R,
) -> Result<DpSgdOutcome, ModelError> {
    spec.validate()?;
    config.validate()?;
    dp.validate()?;
    spec.check_parameters(global, "global")?;
    check_dataset(spec, data)?;
    let n_rows = data.n_rows();
    if n_rows == 0 {
        return Err(ModelError::EmptyDataset);
    }

    // The gradients are computed by hand on a plain copy of the network each step; the network
    // itself lives on the autodiff device only because burn-optim's step requires it.
    let data_device = Device::flex();
    let mut network = NetworkConfig::from_spec(spec)
        .init(&data_device.clone().autodiff())
        .load_flat(global)?;
    let proximal = ProximalTerm::new(config.proximal_mu, &network);
    let mut optimizer = new_optimizer(config.optimizer);
    let noise = if dp.noise_multiplier > 0.0 {
        Some(
            Gaussian::new(dp.noise_multiplier * dp.clip_norm).map_err(|error| {
                ModelError::InvalidDpSgdConfig {
                    field: "noise_multiplier",
                    reason: format!("noise_multiplier × clip_norm is unusable: {error}"),
                }
            })?,
        )
    } else {
        None
    };
    let expected_batch_size = dp.sampling_rate * n_rows as f64;
    let steps_per_epoch = dp.steps_per_epoch();

    let mut steps = 0u64;
    let mut last_epoch_loss = 0.0f64;
    for _ in 0..config.epochs {
        let mut epoch_loss_sum = 0.0f64;
        let mut epoch_rows = 0usize;
        for _ in 0..steps_per_epoch {
            let current = network.valid();
            let batch = poisson_sample(n_rows, dp.sampling_rate, rng);
            let gradient_sums = if batch.is_empty() {
                current
                    .parameter_tensors()
                    .iter()
                    .map(Tensor::zeros_like)
                    .collect()
            } else {
                let (features, labels) = gather_rows(data, &batch, &data_device);
                let step =
                    clipped_gradient_sum(&current, spec.output, features, labels, dp.clip_norm);
                epoch_loss_sum += read_scalar(step.loss_sum)?;
                epoch_rows += batch.len();
                step.gradient_sums
            };
            let private_gradients: Vec<Tensor<2>> = gradient_sums
                .into_iter()
                .map(|sum| {
                    let noisy = match &noise {
                        Some(gaussian) => sum.clone() + gaussian_like(&sum, gaussian, rng),
                        None => sum,
                    };
                    noisy.div_scalar(expected_batch_size)
                })
                .collect();
            let gradients = proximal.add_gradient(private_gradients, &current);
            let gradients = register_gradients(current.layers(), gradients);
            network = optimizer.step(config.learning_rate, network, gradients);
            steps += 1;
        }
        last_epoch_loss = if epoch_rows == 0 {
            0.0
        } else {
            epoch_loss_sum / epoch_rows as f64
        };
    }

    Ok(DpSgdOutcome {
        training: TrainOutcome {
            parameters: trained_parameters(&network)?,
            mean_training_loss: last_epoch_loss,
            examples: n_rows,
        },
        steps,
        sampling_rate: dp.sampling_rate,
        noise_multiplier: dp.noise_multiplier,
    })
}

/// One batch's clipped per-example gradients, summed, and its summed loss.
pub(crate) struct ClippedStep {
    /// Σ_i c_i·g_i per parameter tensor, ordered and shaped like `Network::parameter_tensors`.
    pub(crate) gradient_sums: Vec<Tensor<2>>,
    /// Σ_i loss_i (unclipped), for monitoring.
    pub(crate) loss_sum: Tensor<1>,
}

/// The sum over the batch of each example's loss gradient clipped to ℓ2 norm `clip_norm`, from
/// one forward and one manual backward pass (see the module documentation).
pub(crate) fn clipped_gradient_sum(
    network: &Network,
    output: OutputKind,
    features: Tensor<2>,
    labels: Tensor<2>,
    clip_norm: f64,
) -> ClippedStep {
    let batch_rows = features.dims()[0];
    let backward = per_example_backward(network, output, features, labels.clone());
    let loss_sum = mean_loss(output, backward.outputs, labels).mul_scalar(batch_rows as f64);
    let layers = network.layers();
    let (layer_inputs, errors) = (backward.layer_inputs, backward.errors);

    let squared_norms = layer_inputs
        .iter()
        .zip(&errors)
        .map(|(input, error)| {
            input.clone().square().sum_dim(1).add_scalar(1.0) * error.clone().square().sum_dim(1)
        })
        .reduce(|total, layer| total + layer);
    let gradient_sums = match squared_norms {
        Some(squared_norms) => {
            // c_i = min(1, C'/||g_i||): exactly 1 for every gradient already inside the bound.
            let target = clip_norm * CLIP_SAFETY_FACTOR;
            let factors = squared_norms
                .sqrt()
                .clamp_min(target)
                .recip()
                .mul_scalar(target);
            let mut sums = Vec::with_capacity(layers.len() * 2);
            for (input, error) in layer_inputs.into_iter().zip(errors) {
                let scaled = error * factors.clone();
                sums.push(input.transpose().matmul(scaled.clone()));
                sums.push(scaled.sum_dim(0));
            }
            sums
        }
        None => Vec::new(),
    };
    ClippedStep {
        gradient_sums,
        loss_sum,
    }
}

/// One forward and one manual backward pass over a batch: every layer's input `a_i` and the
/// loss derivative `δ_i` at its output, per example (see the module documentation).
struct PerExampleBackward {
    layer_inputs: Vec<Tensor<2>>,
    errors: Vec<Tensor<2>>,
    outputs: Tensor<2>,
}

fn per_example_backward(
    network: &Network,
    output: OutputKind,
    features: Tensor<2>,
    labels: Tensor<2>,
) -> PerExampleBackward {
    let (layer_inputs, outputs) = network.forward_keeping_layer_inputs(features);
    let layers = network.layers();
    // δ of every layer, computed from the output backwards: δ_{l-1} = (δ_l W_lᵀ) ⊙ relu'(z_{l-1}),
    // where relu'(z) is 1 exactly where the layer's input (the ReLU output) is positive.
    let mut errors = Vec::with_capacity(layers.len());
    let mut error = output_error(output, outputs.clone(), labels);
    for (layer, input) in layers.iter().zip(&layer_inputs).skip(1).rev() {
        let active = input.clone().greater_elem(0.0).float();
        let propagated = error.clone().matmul(layer.weight.val().transpose()) * active;
        errors.push(error);
        error = propagated;
    }
    errors.push(error);
    errors.reverse();
    PerExampleBackward {
        layer_inputs,
        errors,
        outputs,
    }
}

/// For every row of `data`, how far `step` moves the parameters against that row's own loss
/// gradient at `parameters`: `⟨−step, ∇ℓ_i⟩ / ‖∇ℓ_i‖` (0 for a zero gradient). A row that
/// trained in the step that produced `step` pushed it down its gradient, so its alignment is
/// positive in expectation; this is the white-box membership score an empirical privacy audit
/// uses (docs/privacy-audit.md). Computed for all rows at once with the ghost-norm identities:
/// `⟨ΔW, a δᵀ⟩ = aᵀ ΔW δ` per layer, no per-example gradient materialised.
pub fn gradient_alignments(
    spec: &ModelSpec,
    parameters: &[f32],
    step: &[f32],
    data: &Dataset,
) -> Result<Vec<f64>, ModelError> {
    spec.validate()?;
    spec.check_parameters(parameters, "parameters")?;
    spec.check_parameters(step, "step")?;
    check_dataset(spec, data)?;
    if data.n_rows() == 0 {
        return Ok(Vec::new());
    }
    let device = Device::flex();
    let network = NetworkConfig::from_spec(spec)
        .init(&device)
        .load_flat(parameters)?;
    let direction = NetworkConfig::from_spec(spec)
        .init(&device)
        .load_flat(step)?;
    let (features, labels) = gather_rows(data, &(0..data.n_rows()).collect::<Vec<_>>(), &device);
    let backward = per_example_backward(&network, spec.output, features, labels);
    let mut dot: Option<Tensor<2>> = None;
    let mut squared_norm: Option<Tensor<2>> = None;
    for ((input, error), layer) in backward
        .layer_inputs
        .into_iter()
        .zip(backward.errors)
        .zip(direction.layers())
    {
        let mut layer_dot = (input.clone().matmul(layer.weight.val()) * error.clone()).sum_dim(1);
        if let Some(bias) = &layer.bias {
            let bias = bias.val().unsqueeze_dim::<2>(0);
            layer_dot = layer_dot + (error.clone() * bias).sum_dim(1);
        }
        let layer_norm = input.square().sum_dim(1).add_scalar(1.0) * error.square().sum_dim(1);
        dot = Some(match dot {
            Some(total) => total + layer_dot,
            None => layer_dot,
        });
        squared_norm = Some(match squared_norm {
            Some(total) => total + layer_norm,
            None => layer_norm,
        });
    }
    let (Some(dot), Some(squared_norm)) = (dot, squared_norm) else {
        return Ok(vec![0.0; data.n_rows()]);
    };
    let dots = crate::network::read_values(dot)?;
    let norms = crate::network::read_values(squared_norm)?;
    Ok(dots
        .iter()
        .zip(&norms)
        .map(|(dot, squared)| {
            let norm = f64::from(*squared).sqrt();
            if norm > 0.0 {
                -f64::from(*dot) / norm
            } else {
                0.0
            }
        })
        .collect())
}

/// The indices of a Poisson sample: each of `n_rows` rows independently with probability
/// `sampling_rate`. Draws the gaps between chosen rows from the geometric distribution instead
/// of one Bernoulli per row, so a step costs O(q·N) random numbers instead of O(N).
pub(crate) fn poisson_sample<R: CryptoRng>(
    n_rows: usize,
    sampling_rate: f64,
    rng: &mut R,
) -> Vec<usize> {
    if sampling_rate >= 1.0 {
        return (0..n_rows).collect();
    }
    // P(gap ≥ k) = P(U ≤ (1-q)^k) = (1-q)^k, the number of rows skipped before the next pick.
    let log_skip_probability = (-sampling_rate).ln_1p();
    let mut chosen = Vec::with_capacity((sampling_rate * n_rows as f64 * 1.2) as usize + 8);
    let mut next_row = 0usize;
    loop {
        let gap = (uniform_open_closed(rng).ln() / log_skip_probability).floor();
        let remaining = n_rows.saturating_sub(next_row);
        if gap >= remaining as f64 {
            return chosen;
        }
        next_row += gap as usize;
        chosen.push(next_row);
        next_row += 1;
    }
}

/// Uniform on (0, 1] with 53 random bits: never 0, so its logarithm is finite.
fn uniform_open_closed<R: CryptoRng>(rng: &mut R) -> f64 {
    ((rng.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// The chosen rows as a `[rows, features]` tensor and their labels as `[rows, 1]`.
fn gather_rows(data: &Dataset, rows: &[usize], device: &Device) -> (Tensor<2>, Tensor<2>) {
    let mut features = Vec::with_capacity(rows.len() * data.n_features);
    let mut labels = Vec::with_capacity(rows.len());
    for row in rows {
        let start = row * data.n_features;
        if let (Some(values), Some(label)) = (
            data.features.get(start..start + data.n_features),
            data.labels.get(*row),
        ) {
            features.extend_from_slice(values);
            labels.push(*label);
        }
    }
    let n_gathered = labels.len();
    (
        Tensor::from_data(
            TensorData::new(features, [n_gathered, data.n_features]),
            device,
        ),
        Tensor::from_data(TensorData::new(labels, [n_gathered, 1]), device),
    )
}

/// Independent `N(0, σ²)` noise in the shape of `like`, from the cryptographic generator.
fn gaussian_like<R: CryptoRng>(like: &Tensor<2>, gaussian: &Gaussian, rng: &mut R) -> Tensor<2> {
    let shape = like.dims();
    let mut noise = vec![0.0f32; shape[0] * shape[1]];
    gaussian.add_to(&mut noise, rng);
    Tensor::from_data(TensorData::new(noise, shape), &like.device())
}

/// Hands the gradients (ordered like `Network::parameter_tensors`) to burn-optim, keyed by the
/// parameter ids of `layers`; biases go back to their rank-1 shape.
fn register_gradients(layers: &[Linear], gradients: Vec<Tensor<2>>) -> GradientsParams {
    let mut registered = GradientsParams::new();
    let mut gradients = gradients.into_iter();
    for layer in layers {
        if let Some(weight_gradient) = gradients.next() {
            registered.register(layer.weight.id, weight_gradient);
        }
        if let (Some(bias), Some(bias_gradient)) = (&layer.bias, gradients.next()) {
            let n_outputs = bias_gradient.dims()[1];
            registered.register(bias.id, bias_gradient.reshape([n_outputs]));
        }
    }
    registered
}

fn read_scalar(tensor: Tensor<1>) -> Result<f64, ModelError> {
    tensor
        .try_into_scalar::<f32>()
        .map(f64::from)
        .map_err(|error| ModelError::Backend(format!("{error:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ModelKind;
    use crate::network::read_values;
    use rand::{Rng, SeedableRng};
    use rand_chacha::{ChaCha8Rng, ChaCha20Rng};
    use veil_dp_noise::clip_l2;

    /// Rows whose feature scales vary over two orders of magnitude, so that with a clip norm
    /// of 1 some per-example gradients are clipped and others are not.
    fn rows_of_mixed_scale(n_rows: usize, n_features: usize, output: OutputKind) -> Dataset {
        let mut generator = ChaCha8Rng::seed_from_u64(5);
        let mut features = Vec::with_capacity(n_rows * n_features);
        let mut labels = Vec::with_capacity(n_rows);
        for _ in 0..n_rows {
            let scale = 10f32.powf(generator.random_range(-1.5f32..1.0));
            features.extend((0..n_features).map(|_| scale * generator.random_range(-1.0f32..1.0)));
            labels.push(match output {
                OutputKind::Binary => f32::from(generator.random_bool(0.4)),
                OutputKind::Regression => generator.random_range(-2.0f32..2.0),
            });
        }
        Dataset {
            features,
            labels,
            n_features,
        }
    }

    fn flatten(tensors: Vec<Tensor<2>>) -> Vec<f32> {
        tensors
            .into_iter()
            .flat_map(|tensor| read_values(tensor).unwrap_or_default())
            .collect()
    }

    /// The reference: one autodiff backward pass per example, each gradient clipped by
    /// `veil_dp_noise::clip_l2`, then summed. Also returns how many were clipped.
    fn naive_clipped_sum(
        spec: &ModelSpec,
        parameters: &[f32],
        data: &Dataset,
        clip_norm: f64,
    ) -> (Vec<f32>, usize) {
        let network = NetworkConfig::from_spec(spec)
            .init(&Device::flex().autodiff())
            .load_flat(parameters)
            .unwrap_or_else(|error| panic!("{error}"));
        let mut total = vec![0.0f32; spec.parameter_count()];
        let mut n_clipped = 0;
        for (row, label) in data
            .features
            .chunks_exact(data.n_features)
            .zip(&data.labels)
        {
            let features = Tensor::<2>::from_data(
                TensorData::new(row.to_vec(), [1, data.n_features]),
                &Device::flex(),
            );
            let labels =
                Tensor::<2>::from_data(TensorData::new(vec![*label], [1, 1]), &Device::flex());
            let gradients = mean_loss(spec.output, network.forward(features), labels).backward();
            let mut gradient = Vec::with_capacity(total.len());
            for layer in network.layers() {
                let weight = layer.weight.val().grad(&gradients);
                let bias = layer
                    .bias
                    .as_ref()
                    .and_then(|bias| bias.val().grad(&gradients));
                match (weight, bias) {
                    (Some(weight), Some(bias)) => {
                        gradient.extend(read_values(weight).unwrap_or_default());
                        gradient.extend(read_values(bias).unwrap_or_default());
                    }
                    _ => panic!("autodiff returned no gradient for a layer"),
                }
            }
            let norm = clip_l2(&mut gradient, clip_norm * CLIP_SAFETY_FACTOR)
                .unwrap_or_else(|error| panic!("{error}"));
            if norm > clip_norm * CLIP_SAFETY_FACTOR {
                n_clipped += 1;
            }
            for (sum, value) in total.iter_mut().zip(&gradient) {
                *sum += value;
            }
        }
        (total, n_clipped)
    }

    #[test]
    fn gradient_alignments_equal_one_backward_pass_per_example() {
        let n_rows = 24;
        let mut generator = ChaCha8Rng::seed_from_u64(11);
        for (kind, output) in [
            (ModelKind::LogisticRegression, OutputKind::Binary),
            (ModelKind::Mlp { hidden: vec![7, 5] }, OutputKind::Binary),
            (ModelKind::Mlp { hidden: vec![6] }, OutputKind::Regression),
        ] {
            let spec = ModelSpec {
                kind,
                n_inputs: 4,
                output,
            };
            let parameters = spec.initial_parameters(3);
            let step: Vec<f32> = (0..spec.parameter_count())
                .map(|_| generator.random_range(-0.1f32..0.1))
                .collect();
            let data = rows_of_mixed_scale(n_rows, spec.n_inputs, output);
            let alignments = gradient_alignments(&spec, &parameters, &step, &data)
                .unwrap_or_else(|error| panic!("{error}"));
            assert_eq!(alignments.len(), n_rows);
            for (row, alignment) in alignments.iter().enumerate() {
                let one = Dataset {
                    features: data.features[row * 4..row * 4 + 4].to_vec(),
                    labels: vec![data.labels[row]],
                    n_features: 4,
                };
                let (gradient, _) = naive_clipped_sum(&spec, &parameters, &one, 1e12);
                let norm = gradient
                    .iter()
                    .map(|g| f64::from(*g).powi(2))
                    .sum::<f64>()
                    .sqrt();
                let dot: f64 = gradient
                    .iter()
                    .zip(&step)
                    .map(|(g, s)| f64::from(*g) * f64::from(*s))
                    .sum();
                let expected = -dot / norm;
                assert!(
                    (alignment - expected).abs() <= 1e-4 * (1.0 + expected.abs()),
                    "{spec:?} row {row}: {alignment} against {expected}"
                );
            }
        }
    }

    #[test]
    fn the_ghost_clipped_sum_equals_one_backward_pass_per_example() {
        let n_rows = 48;
        for (kind, output) in [
            (ModelKind::LogisticRegression, OutputKind::Binary),
            (ModelKind::LogisticRegression, OutputKind::Regression),
            (ModelKind::Mlp { hidden: vec![7, 5] }, OutputKind::Binary),
            (ModelKind::Mlp { hidden: vec![6] }, OutputKind::Regression),
        ] {
            let spec = ModelSpec {
                kind,
                n_inputs: 4,
                output,
            };
            let parameters = spec.initial_parameters(3);
            let data = rows_of_mixed_scale(n_rows, spec.n_inputs, output);
            let clip_norm = 1.0;
            let (expected, n_clipped) = naive_clipped_sum(&spec, &parameters, &data, clip_norm);
            assert!(
                n_clipped > 0 && n_clipped < n_rows,
                "{spec:?}: the data should mix clipped and unclipped examples, {n_clipped} clipped"
            );

            let network = NetworkConfig::from_spec(&spec)
                .init(&Device::flex())
                .load_flat(&parameters)
                .unwrap_or_else(|error| panic!("{error}"));
            let all_rows: Vec<usize> = (0..n_rows).collect();
            let (features, labels) = gather_rows(&data, &all_rows, &Device::flex());
            let step = clipped_gradient_sum(&network, output, features, labels, clip_norm);
            let actual = flatten(step.gradient_sums);
            assert_eq!(actual.len(), expected.len());
            // Both sides sum 48 f32 vectors of norm at most 1 in different orders; their
            // rounding differences are around 1e-6, far inside 1e-4.
            for (index, (a, e)) in actual.iter().zip(&expected).enumerate() {
                assert!(
                    (a - e).abs() < 1e-4,
                    "{spec:?} coordinate {index}: {a} vs {e}"
                );
            }
        }
    }

    #[test]
    fn poisson_batches_have_the_expected_size_and_every_row_its_chance() {
        let (n_rows, sampling_rate, n_steps) = (200usize, 0.05, 20_000usize);
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        let mut inclusions = vec![0usize; n_rows];
        let mut total_batch_size = 0usize;
        for _ in 0..n_steps {
            let batch = poisson_sample(n_rows, sampling_rate, &mut rng);
            assert!(
                batch.windows(2).all(|pair| pair[0] < pair[1]),
                "indices sorted, no repeats"
            );
            total_batch_size += batch.len();
            for row in batch {
                inclusions[row] += 1;
            }
        }
        // The mean of n_steps Binomial(N, q) batch sizes: standard error
        // sqrt(N q (1-q) / steps) ≈ 0.022; five of them.
        let mean_batch_size = total_batch_size as f64 / n_steps as f64;
        let expected = sampling_rate * n_rows as f64;
        let standard_error = (expected * (1.0 - sampling_rate) / n_steps as f64).sqrt();
        assert!(
            (mean_batch_size - expected).abs() < 5.0 * standard_error,
            "mean batch size {mean_batch_size}, expected {expected}"
        );
        // Each row is in Binomial(steps, q) batches: mean 1000, sd ≈ 30.8. 5.5 sd for every
        // one of the 200 rows, so an off-by-one at either end of the range would show.
        let per_row_mean = sampling_rate * n_steps as f64;
        let per_row_sd = (per_row_mean * (1.0 - sampling_rate)).sqrt();
        for (row, count) in inclusions.iter().enumerate() {
            assert!(
                (*count as f64 - per_row_mean).abs() < 5.5 * per_row_sd,
                "row {row} sampled {count} times, expected about {per_row_mean}"
            );
        }
        assert_eq!(poisson_sample(5, 1.0, &mut rng), vec![0, 1, 2, 3, 4]);
    }
}
