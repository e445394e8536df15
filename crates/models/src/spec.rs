//! What a model is: its architecture, output kind, flat parameter layout and initial parameters.
//!
//! The flat parameter vector is the unit that travels through clipping, noising and secure
//! aggregation, so its layout is fixed here and nowhere else:
//!
//! for each dense layer in order (input side first, the single-output layer last),
//! the weight matrix row-major with shape `[layer_inputs, layer_outputs]` (one row per input
//! unit, burn's `LinearLayout::Row`), followed by the bias vector of length `layer_outputs`.
//!
//! Logistic regression is the degenerate case of one layer `[n_inputs, 1]`.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::ModelError;

/// Largest model this crate accepts. Partners train on commodity CPUs next to their data, and a
/// flat vector this large is already 200 MB per update; anything bigger is almost certainly a typo.
pub const MAX_PARAMETER_COUNT: usize = 50_000_000;

/// The architecture of the network, without its input width.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ModelKind {
    /// One dense layer straight to the output.
    LogisticRegression,
    /// Dense layers with ReLU activations of the given widths, then a dense output layer.
    Mlp {
        /// Widths of the hidden layers, input side first.
        hidden: Vec<usize>,
    },
}

/// What the single output unit means and which loss trains it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum OutputKind {
    /// sigmoid + binary cross-entropy
    Binary,
    /// identity + mean squared error
    Regression,
}

/// A complete model description: enough to size, initialise and run the flat parameter vector.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelSpec {
    /// The architecture.
    pub kind: ModelKind,
    /// Features per example row.
    pub n_inputs: usize,
    /// What the output means.
    pub output: OutputKind,
}

/// Shape of one dense layer in the flat layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerShape {
    /// Units feeding the layer (rows of its weight matrix).
    pub n_inputs: usize,
    /// Units the layer produces (columns of its weight matrix, and the bias length).
    pub n_outputs: usize,
}

impl LayerShape {
    /// Values this layer occupies in the flat vector: weight then bias.
    /// Saturating so that an absurd spec yields a huge count that `validate` rejects, not a wrap.
    pub fn parameter_count(&self) -> usize {
        self.n_inputs
            .saturating_mul(self.n_outputs)
            .saturating_add(self.n_outputs)
    }
}

impl ModelSpec {
    /// The hidden widths, empty for logistic regression.
    pub fn hidden_widths(&self) -> &[usize] {
        match &self.kind {
            ModelKind::LogisticRegression => &[],
            ModelKind::Mlp { hidden } => hidden,
        }
    }

    /// The dense layers in flat-layout order.
    pub fn layer_shapes(&self) -> Vec<LayerShape> {
        layer_shapes(self.n_inputs, self.hidden_widths())
    }

    /// Length of the flat parameter vector. The flat layout (documented) is: for each layer in
    /// order, weight row-major then bias. See the module documentation for the exact shapes.
    pub fn parameter_count(&self) -> usize {
        self.layer_shapes().iter().fold(0usize, |total, layer| {
            total.saturating_add(layer.parameter_count())
        })
    }

    /// Validates: n_inputs > 0, hidden sizes > 0 and not absurd (cap total params at 50M).
    /// Errors name the bad field.
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.n_inputs == 0 {
            return Err(ModelError::InvalidSpec {
                field: "n_inputs".to_owned(),
                reason: "must be at least 1".to_owned(),
            });
        }
        if let Some(position) = self.hidden_widths().iter().position(|width| *width == 0) {
            return Err(ModelError::InvalidSpec {
                field: format!("hidden[{position}]"),
                reason: "hidden layers need at least 1 unit".to_owned(),
            });
        }
        let parameter_count = self.parameter_count();
        if parameter_count > MAX_PARAMETER_COUNT {
            let field = if self.hidden_widths().is_empty() {
                "n_inputs"
            } else {
                "hidden"
            };
            return Err(ModelError::InvalidSpec {
                field: field.to_owned(),
                reason: format!(
                    "model would have {parameter_count} parameters, the cap is {MAX_PARAMETER_COUNT}"
                ),
            });
        }
        Ok(())
    }

    /// Deterministic initial parameters (Xavier/Glorot-uniform for weights, zero bias) from a
    /// seed, pure Rust, no burn needed.
    ///
    /// The coordinator calls this once per job so every partner starts from the same vector;
    /// ChaCha8 keeps the stream identical across platforms and rand versions' default RNGs.
    /// Call `validate` first: an absurd spec would allocate its (huge) parameter count here.
    pub fn initial_parameters(&self, seed: u64) -> Vec<f32> {
        let mut generator = ChaCha8Rng::seed_from_u64(seed);
        let mut parameters = Vec::with_capacity(self.parameter_count());
        for layer in self.layer_shapes() {
            // Glorot & Bengio (2010): U(-a, a) with a = sqrt(6 / (fan_in + fan_out)) keeps the
            // activation variance roughly constant through the layers.
            let fan_sum = (layer.n_inputs + layer.n_outputs) as f64;
            let limit = (6.0 / fan_sum).sqrt() as f32;
            let weight_count = layer.n_inputs * layer.n_outputs;
            parameters.extend((0..weight_count).map(|_| generator.random_range(-limit..=limit)));
            parameters.extend(std::iter::repeat_n(0.0f32, layer.n_outputs));
        }
        parameters
    }

    /// Checks that `parameters` fits this spec and holds only finite values.
    pub(crate) fn check_parameters(
        &self,
        parameters: &[f32],
        input: &'static str,
    ) -> Result<(), ModelError> {
        let expected = self.parameter_count();
        if parameters.len() != expected {
            return Err(ModelError::ParameterLength {
                expected,
                actual: parameters.len(),
            });
        }
        check_finite(parameters, input)
    }
}

/// The dense layers of a network with `n_inputs` inputs, the given hidden widths and one output,
/// in flat-layout order. Shared by the spec (sizes, initialisation) and the burn network config.
pub(crate) fn layer_shapes(n_inputs: usize, hidden_widths: &[usize]) -> Vec<LayerShape> {
    let mut widths = Vec::with_capacity(hidden_widths.len() + 2);
    widths.push(n_inputs);
    widths.extend_from_slice(hidden_widths);
    widths.push(1);
    widths
        .windows(2)
        .filter_map(|pair| match pair {
            [n_inputs, n_outputs] => Some(LayerShape {
                n_inputs: *n_inputs,
                n_outputs: *n_outputs,
            }),
            _ => None,
        })
        .collect()
}

/// Rejects NaN and infinities, naming the input and the first bad position.
pub(crate) fn check_finite(values: &[f32], input: &'static str) -> Result<(), ModelError> {
    match values.iter().position(|value| !value.is_finite()) {
        Some(index) => Err(ModelError::NonFinite {
            input,
            index,
            value: values.get(index).copied().unwrap_or(f32::NAN),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mlp(n_inputs: usize, hidden: Vec<usize>) -> ModelSpec {
        ModelSpec {
            kind: ModelKind::Mlp { hidden },
            n_inputs,
            output: OutputKind::Binary,
        }
    }

    #[test]
    fn parameter_count_follows_the_layer_shapes() {
        let logistic = ModelSpec {
            kind: ModelKind::LogisticRegression,
            n_inputs: 10,
            output: OutputKind::Binary,
        };
        assert_eq!(logistic.parameter_count(), 11);
        // 10*64+64 + 64*32+32 + 32*1+1
        assert_eq!(mlp(10, vec![64, 32]).parameter_count(), 704 + 2080 + 33);
    }

    #[test]
    fn validate_names_the_bad_field() {
        let check = |spec: ModelSpec, expected_field: &str| match spec.validate() {
            Err(ModelError::InvalidSpec { field, .. }) => assert_eq!(field, expected_field),
            other => panic!("expected InvalidSpec for {expected_field}, got {other:?}"),
        };
        check(mlp(0, vec![4]), "n_inputs");
        check(mlp(3, vec![4, 0]), "hidden[1]");
        check(mlp(3, vec![100_000, 100_000]), "hidden");
        check(mlp(3, vec![usize::MAX, usize::MAX]), "hidden");
        assert_eq!(mlp(3, vec![4, 2]).validate(), Ok(()));
    }

    #[test]
    fn initial_parameters_are_deterministic_glorot_with_zero_bias() {
        let spec = mlp(10, vec![64, 32]);
        let first = spec.initial_parameters(7);
        assert_eq!(first, spec.initial_parameters(7));
        assert_ne!(first, spec.initial_parameters(8));
        assert_eq!(first.len(), spec.parameter_count());
        let limit = (6.0f32 / 74.0).sqrt();
        let (weights, rest) = first.split_at(640);
        assert!(weights.iter().all(|w| w.abs() <= limit));
        assert!(rest.iter().take(64).all(|b| *b == 0.0));
    }
}
