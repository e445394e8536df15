//! Local training: mini-batch SGD or Adam with autodiff on the flex CPU backend, optionally with
//! the FedProx proximal term pulling the weights towards the global model.

use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer, SgdConfig};
use burn::prelude::*;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::network::{Network, NetworkConfig, mean_loss};
use crate::{Dataset, ModelError, ModelSpec, OutputKind};

/// Which burn-optim optimiser updates the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum OptimizerKind {
    /// Plain stochastic gradient descent, no momentum.
    Sgd,
    /// Adam with PyTorch's defaults (beta 0.9 / 0.999, epsilon 1e-8).
    Adam,
}

/// How one partner trains one round. No `Default`: every job must choose these values.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainingConfig {
    /// Full passes over the local data.
    pub epochs: usize,
    /// Rows per gradient step; the last batch of an epoch may be smaller.
    pub batch_size: usize,
    /// Optimiser step size.
    pub learning_rate: f64,
    /// The optimiser.
    pub optimizer: OptimizerKind,
    /// FedProx proximal coefficient mu; 0 disables. Adds (mu/2)*||w - w_global||^2 to the loss.
    pub proximal_mu: f64,
    /// shuffling seed
    pub seed: u64,
}

impl TrainingConfig {
    /// Rejects configurations that cannot train: zero epochs or batch size, non-positive or
    /// non-finite learning rate, negative or non-finite mu.
    pub fn validate(&self) -> Result<(), ModelError> {
        let invalid = |field: &'static str, reason: &str| {
            Err(ModelError::InvalidTrainingConfig {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.epochs == 0 {
            return invalid("epochs", "must be at least 1");
        }
        if self.batch_size == 0 {
            return invalid("batch_size", "must be at least 1");
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return invalid("learning_rate", "must be finite and positive");
        }
        if !(self.proximal_mu.is_finite() && self.proximal_mu >= 0.0) {
            return invalid("proximal_mu", "must be finite and non-negative");
        }
        Ok(())
    }
}

/// The result of one local training run.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOutcome {
    /// The trained flat parameter vector, same layout as the global one.
    pub parameters: Vec<f32>,
    /// Example-weighted mean data loss (without the proximal term) over the last epoch, each
    /// batch measured just before its own update step.
    pub mean_training_loss: f64,
    /// Distinct local examples trained on (rows, not rows times epochs), the FedAvg weight.
    pub examples: usize,
}

/// Local training starting from `global` (the flat vector), real burn training with autodiff on
/// the flex CPU backend.
pub fn train(
    spec: &ModelSpec,
    global: &[f32],
    data: &Dataset,
    config: &TrainingConfig,
) -> Result<TrainOutcome, ModelError> {
    spec.validate()?;
    config.validate()?;
    spec.check_parameters(global, "global")?;
    check_dataset(spec, data)?;
    let n_rows = data.n_rows();
    if n_rows == 0 {
        return Err(ModelError::EmptyDataset);
    }

    let training_device = Device::flex().autodiff();
    // Data tensors live on the plain device: they need no gradients, and burn treats a plain
    // tensor combined with an autodiff one as a constant, so slicing them records no graph.
    let data_device = Device::flex();
    let mut network = NetworkConfig::from_spec(spec)
        .init(&training_device)
        .load_flat(global)?;
    let proximal = ProximalTerm::new(config.proximal_mu, &network);
    let mut optimizer = new_optimizer(config.optimizer);

    let rows: Vec<&[f32]> = data.features.chunks_exact(data.n_features).collect();
    let mut order: Vec<usize> = (0..n_rows).collect();
    let mut shuffler = ChaCha8Rng::seed_from_u64(config.seed);
    let mut last_epoch_loss = 0.0f64;
    for _ in 0..config.epochs {
        order.shuffle(&mut shuffler);
        // One copy of the data per epoch in shuffled order, so each batch is a contiguous
        // zero-copy slice of one tensor instead of a fresh allocation or a gather.
        let mut shuffled_features = Vec::with_capacity(data.features.len());
        let mut shuffled_labels = Vec::with_capacity(n_rows);
        for row in &order {
            if let (Some(features), Some(label)) = (rows.get(*row), data.labels.get(*row)) {
                shuffled_features.extend_from_slice(features);
                shuffled_labels.push(*label);
            }
        }
        let features = Tensor::<2>::from_data(
            TensorData::new(shuffled_features, [n_rows, data.n_features]),
            &data_device,
        );
        let labels =
            Tensor::<2>::from_data(TensorData::new(shuffled_labels, [n_rows, 1]), &data_device);

        let mut epoch_loss_sum = 0.0f64;
        for start in (0..n_rows).step_by(config.batch_size) {
            let batch_rows = config.batch_size.min(n_rows - start);
            let batch_features = features.clone().narrow(0, start, batch_rows);
            let batch_labels = labels.clone().narrow(0, start, batch_rows);
            let data_loss = mean_loss(spec.output, network.forward(batch_features), batch_labels);
            let loss = proximal.add_to(data_loss.clone(), &network);
            let gradients = GradientsParams::from_grads(loss.backward(), &network);
            network = optimizer.step(config.learning_rate, network, gradients);
            let batch_loss = data_loss
                .try_into_scalar::<f32>()
                .map_err(|error| ModelError::Backend(format!("{error:?}")))?;
            epoch_loss_sum += f64::from(batch_loss) * batch_rows as f64;
        }
        last_epoch_loss = epoch_loss_sum / n_rows as f64;
    }

    Ok(TrainOutcome {
        parameters: trained_parameters(&network)?,
        mean_training_loss: last_epoch_loss,
        examples: n_rows,
    })
}

/// The burn-optim optimiser for `kind`, shared by ordinary and DP-SGD training.
pub(crate) fn new_optimizer(kind: OptimizerKind) -> ModuleOptimizer {
    match kind {
        OptimizerKind::Sgd => SgdConfig::new().init(),
        OptimizerKind::Adam => AdamConfig::new().with_epsilon(1e-8).init(),
    }
}

/// Reads the trained flat vector back, refusing a diverged run instead of shipping NaNs.
pub(crate) fn trained_parameters(network: &Network) -> Result<Vec<f32>, ModelError> {
    let parameters = network.to_flat()?;
    if let Some(index) = parameters.iter().position(|value| !value.is_finite()) {
        return Err(ModelError::TrainingDiverged {
            index,
            value: parameters.get(index).copied().unwrap_or(f32::NAN),
        });
    }
    Ok(parameters)
}

/// Checks that a dataset fits a spec: consistent shapes, finite values, the right feature
/// count and, for binary models, labels in [0, 1].
pub(crate) fn check_dataset(spec: &ModelSpec, data: &Dataset) -> Result<(), ModelError> {
    data.check()?;
    if data.n_features != spec.n_inputs {
        return Err(ModelError::FeatureCount {
            expected: spec.n_inputs,
            actual: data.n_features,
        });
    }
    if spec.output == OutputKind::Binary
        && let Some(row) = data
            .labels
            .iter()
            .position(|label| !(0.0..=1.0).contains(label))
    {
        return Err(ModelError::LabelOutOfRange {
            row,
            value: data.labels.get(row).copied().unwrap_or(f32::NAN),
        });
    }
    Ok(())
}

/// The FedProx term (mu/2)·||w − w_global||², kept as part of the differentiated loss.
pub(crate) struct ProximalTerm {
    /// mu / 2, precomputed.
    half_mu: f64,
    /// The global parameters, detached and on the plain device so they act as constants.
    global_parameters: Vec<Tensor<2>>,
}

impl ProximalTerm {
    pub(crate) fn new(mu: f64, network: &Network) -> Self {
        let global_parameters = if mu > 0.0 {
            network
                .parameter_tensors()
                .into_iter()
                .map(|tensor| tensor.detach().without_autodiff())
                .collect()
        } else {
            Vec::new()
        };
        Self {
            half_mu: mu / 2.0,
            global_parameters,
        }
    }

    /// Adds the term's gradient mu·(w − w_global) to `gradients`, which are ordered and shaped
    /// like `Network::parameter_tensors`; with mu = 0 it returns them unchanged. For training
    /// that computes its gradients without autodiff (DP-SGD).
    pub(crate) fn add_gradient(
        &self,
        gradients: Vec<Tensor<2>>,
        network: &Network,
    ) -> Vec<Tensor<2>> {
        if self.global_parameters.is_empty() {
            return gradients;
        }
        let mu = 2.0 * self.half_mu;
        gradients
            .into_iter()
            .zip(network.parameter_tensors())
            .zip(&self.global_parameters)
            .map(|((gradient, current), global)| {
                gradient + (current - global.clone()).mul_scalar(mu)
            })
            .collect()
    }

    /// Adds the proximal term to `loss`; with mu = 0 it adds nothing and records no graph.
    fn add_to(&self, loss: Tensor<1>, network: &Network) -> Tensor<1> {
        if self.global_parameters.is_empty() {
            return loss;
        }
        let squared_distance = network
            .parameter_tensors()
            .into_iter()
            .zip(&self.global_parameters)
            .map(|(current, global)| (current - global.clone()).square().sum())
            .reduce(|total, term| total + term);
        match squared_distance {
            Some(distance) => loss + distance.mul_scalar(self.half_mu),
            None => loss,
        }
    }
}
