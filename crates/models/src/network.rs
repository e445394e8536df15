//! The burn network behind every `ModelSpec`: its config, its module, the one forward step and
//! loss shared by training and evaluation, and conversion to and from the flat parameter vector.

use burn::module::Param;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{log_sigmoid, relu, sigmoid};

use crate::spec::{LayerShape, layer_shapes};
use crate::{ModelError, ModelSpec, OutputKind};

/// Burn configuration of a dense network with ReLU hidden layers and one output unit.
#[derive(Config, Debug)]
pub struct NetworkConfig {
    /// Features per input row.
    pub n_inputs: usize,
    /// Widths of the hidden layers; empty for logistic regression.
    pub hidden: Vec<usize>,
}

/// A dense network: `layers` applied in order, ReLU between them, no activation on the output
/// (the sigmoid of binary models lives in the loss and in `predict`, where it can be fused with
/// the logarithm for numerical stability).
#[derive(Module, Debug)]
pub struct Network {
    /// Dense layers in flat-layout order, each with a bias.
    layers: Vec<Linear>,
}

impl NetworkConfig {
    /// The config of the network a spec describes.
    pub fn from_spec(spec: &ModelSpec) -> Self {
        Self::new(spec.n_inputs, spec.hidden_widths().to_vec())
    }

    /// A network with burn's default (lazy) initialisation. Callers in this crate overwrite the
    /// parameters with `Network::load_flat` before use, and because burn initialises parameters
    /// lazily that default initialisation is never computed.
    pub fn init(&self, device: &Device) -> Network {
        let layers = self
            .layer_shapes()
            .iter()
            .map(|layer| LinearConfig::new(layer.n_inputs, layer.n_outputs).init(device))
            .collect();
        Network { layers }
    }

    /// The dense layers in flat-layout order.
    pub fn layer_shapes(&self) -> Vec<LayerShape> {
        layer_shapes(self.n_inputs, &self.hidden)
    }
}

impl Network {
    /// Replaces every parameter with the values from the flat vector (layout in `spec.rs`).
    /// The new parameters live on the device of the existing ones and require gradients.
    pub fn load_flat(self, parameters: &[f32]) -> Result<Self, ModelError> {
        let expected: usize = self
            .layers
            .iter()
            .map(|layer| layer_shape(layer).parameter_count())
            .sum();
        if parameters.len() != expected {
            return Err(ModelError::ParameterLength {
                expected,
                actual: parameters.len(),
            });
        }
        let mut remaining = parameters;
        let mut layers = Vec::with_capacity(self.layers.len());
        for layer in self.layers {
            let shape = layer_shape(&layer);
            let device = layer.weight.lazy_device();
            let weight_count = shape.n_inputs * shape.n_outputs;
            let length_error = ModelError::ParameterLength {
                expected,
                actual: parameters.len(),
            };
            let (weight_values, rest) = remaining
                .split_at_checked(weight_count)
                .ok_or_else(|| length_error.clone())?;
            let (bias_values, rest) = rest.split_at_checked(shape.n_outputs).ok_or(length_error)?;
            remaining = rest;
            let weight = Tensor::<2>::from_data(
                TensorData::new(weight_values.to_vec(), [shape.n_inputs, shape.n_outputs]),
                &device,
            );
            let bias = Tensor::<1>::from_data(
                TensorData::new(bias_values.to_vec(), [shape.n_outputs]),
                &device,
            );
            layers.push(Linear {
                weight: Param::from_tensor(weight),
                bias: Some(Param::from_tensor(bias)),
            });
        }
        Ok(Self { layers })
    }

    /// Reads every parameter back into one flat vector (layout in `spec.rs`).
    pub fn to_flat(&self) -> Result<Vec<f32>, ModelError> {
        let mut parameters = Vec::new();
        for layer in &self.layers {
            parameters.extend(read_values(layer.weight.val())?);
            if let Some(bias) = &layer.bias {
                parameters.extend(read_values(bias.val())?);
            }
        }
        Ok(parameters)
    }

    /// The forward step shared by training and evaluation: raw outputs (logits for binary
    /// models), shape `[rows, 1]`.
    pub fn forward(&self, input: Tensor<2>) -> Tensor<2> {
        self.forward_keeping_layer_inputs(input).1
    }

    /// The same forward step, also returning the input of every layer (the data, then each
    /// hidden ReLU activation), which DP-SGD needs to form per-example gradients without autodiff.
    pub(crate) fn forward_keeping_layer_inputs(
        &self,
        input: Tensor<2>,
    ) -> (Vec<Tensor<2>>, Tensor<2>) {
        let last_index = self.layers.len().saturating_sub(1);
        let mut layer_inputs = Vec::with_capacity(self.layers.len());
        let mut activations = input;
        for (index, layer) in self.layers.iter().enumerate() {
            let outputs = layer.forward(activations.clone());
            layer_inputs.push(activations);
            activations = if index == last_index {
                outputs
            } else {
                relu(outputs)
            };
        }
        (layer_inputs, activations)
    }

    /// The dense layers in flat-layout order.
    pub(crate) fn layers(&self) -> &[Linear] {
        &self.layers
    }

    /// Iterates over the parameter tensors, weight then bias per layer, as FedProx needs them.
    pub(crate) fn parameter_tensors(&self) -> Vec<Tensor<2>> {
        let mut tensors = Vec::with_capacity(self.layers.len() * 2);
        for layer in &self.layers {
            tensors.push(layer.weight.val());
            if let Some(bias) = &layer.bias {
                tensors.push(bias.val().unsqueeze_dim(0));
            }
        }
        tensors
    }
}

/// The shape of a layer, read without forcing burn's lazy initialisation.
fn layer_shape(layer: &Linear) -> LayerShape {
    let shape = layer.weight.lazy_shape();
    LayerShape {
        n_inputs: shape.as_slice().first().copied().unwrap_or(0),
        n_outputs: shape.as_slice().get(1).copied().unwrap_or(0),
    }
}

/// Per-row loss summed over the batch then divided by its length: binary cross-entropy on
/// logits, or squared error. Shared by training and evaluation so they measure the same thing.
pub(crate) fn mean_loss(output: OutputKind, outputs: Tensor<2>, labels: Tensor<2>) -> Tensor<1> {
    match output {
        // BCE(z, y) = -y log σ(z) - (1 - y) log σ(-z) = -log σ(-z) - y z, written with one
        // log-sigmoid so large |z| neither overflows nor loses precision.
        OutputKind::Binary => {
            let negative_log = log_sigmoid(outputs.clone().neg()).neg();
            (negative_log - outputs * labels).mean()
        }
        OutputKind::Regression => (outputs - labels).square().mean(),
    }
}

/// The derivative of each row's loss with respect to its raw output, shape `[rows, 1]`: the
/// backward step of `mean_loss` per row (without the division by the batch length), kept next
/// to it so the two cannot drift apart.
pub(crate) fn output_error(output: OutputKind, outputs: Tensor<2>, labels: Tensor<2>) -> Tensor<2> {
    match output {
        // d/dz [-log σ(-z) - y z] = σ(z) - y.
        OutputKind::Binary => sigmoid(outputs) - labels,
        // d/dz (z - y)² = 2 (z - y).
        OutputKind::Regression => (outputs - labels).mul_scalar(2.0),
    }
}

/// Copies a tensor's values out in row-major order.
pub(crate) fn read_values<const D: usize>(tensor: Tensor<D>) -> Result<Vec<f32>, ModelError> {
    tensor
        .try_into_data()
        .map_err(|error| ModelError::Backend(format!("{error:?}")))?
        .try_into_vec::<f32>()
        .map_err(|error| ModelError::Backend(format!("{error:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ModelKind;

    #[test]
    fn flat_to_module_to_flat_is_identity() {
        for kind in [
            ModelKind::LogisticRegression,
            ModelKind::Mlp { hidden: vec![5, 3] },
        ] {
            let spec = ModelSpec {
                kind,
                n_inputs: 4,
                output: OutputKind::Binary,
            };
            let flat = spec.initial_parameters(11);
            for device in [Device::flex(), Device::flex().autodiff()] {
                let network = NetworkConfig::from_spec(&spec)
                    .init(&device)
                    .load_flat(&flat);
                assert_eq!(
                    network.and_then(|network| network.to_flat()),
                    Ok(flat.clone())
                );
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]

        #[test]
        fn any_spec_round_trips_through_the_module(
            n_inputs in 1usize..8,
            hidden in proptest::collection::vec(1usize..8, 0..3),
            seed in proptest::prelude::any::<u64>(),
        ) {
            let spec = ModelSpec {
                kind: ModelKind::Mlp { hidden },
                n_inputs,
                output: OutputKind::Regression,
            };
            let flat = spec.initial_parameters(seed);
            let network = NetworkConfig::from_spec(&spec).init(&Device::flex()).load_flat(&flat);
            proptest::prop_assert_eq!(network.and_then(|network| network.to_flat()), Ok(flat));
        }
    }

    #[test]
    fn load_flat_rejects_the_wrong_length() {
        let spec = ModelSpec {
            kind: ModelKind::Mlp { hidden: vec![2] },
            n_inputs: 3,
            output: OutputKind::Regression,
        };
        let network = NetworkConfig::from_spec(&spec).init(&Device::flex());
        assert!(matches!(
            network.load_flat(&[0.0; 4]),
            Err(ModelError::ParameterLength {
                expected: 11,
                actual: 4
            })
        ));
    }

    #[test]
    fn forward_matches_a_hand_computed_network() {
        // One input, one hidden ReLU unit with weight 2 and bias -1, output weight 3 bias 0.5.
        let spec = ModelSpec {
            kind: ModelKind::Mlp { hidden: vec![1] },
            n_inputs: 1,
            output: OutputKind::Regression,
        };
        let device = Device::flex();
        let network = NetworkConfig::from_spec(&spec)
            .init(&device)
            .load_flat(&[2.0, -1.0, 3.0, 0.5]);
        let input = Tensor::<2>::from_data(TensorData::new(vec![0.0f32, 2.0], [2, 1]), &device);
        let outputs = network.and_then(|network| read_values(network.forward(input)));
        // relu(2*0-1)=0 → 0.5; relu(2*2-1)=3 → 9.5. Small integers are exact in f32.
        assert_eq!(outputs, Ok(vec![0.5, 9.5]));
    }
}
