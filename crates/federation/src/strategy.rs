//! Aggregation strategies: how the weighted mean of the nodes' deltas becomes
//! the next global model.
//!
//! FedAvg and FedProx update the server model identically (FedProx differs
//! only in the proximal term each node adds to its local loss); FedAdam
//! (Reddi et al. 2021, "Adaptive Federated Optimization") treats the mean
//! delta as a pseudo-gradient for a server-side Adam step.

use crate::plan::PlanError;

/// The job's aggregation strategy.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Strategy {
    /// Weighted federated averaging.
    FedAvg,
    /// FedAvg on the server; nodes add `proximal_mu / 2 * ||w - w_global||^2`.
    FedProx {
        /// Proximal coefficient sent to the nodes.
        proximal_mu: f64,
    },
    /// Server-side Adam on the mean delta.
    FedAdam {
        /// Server step size.
        server_learning_rate: f64,
        /// First-moment decay.
        beta1: f64,
        /// Second-moment decay.
        beta2: f64,
        /// Adaptivity floor added to the root of the second moment.
        tau: f64,
    },
}

impl Strategy {
    /// The proximal coefficient nodes must apply (0 for other strategies).
    pub fn proximal_mu(&self) -> f64 {
        match self {
            Strategy::FedProx { proximal_mu } => *proximal_mu,
            _ => 0.0,
        }
    }

    /// A stable lowercase name, as used in job files.
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::FedAvg => "fedavg",
            Strategy::FedProx { .. } => "fedprox",
            Strategy::FedAdam { .. } => "fedadam",
        }
    }

    pub(crate) fn validate(&self) -> Result<(), PlanError> {
        let check = |field: &'static str, value: f64, ok: bool, expected: &'static str| {
            if ok && value.is_finite() {
                Ok(())
            } else {
                Err(PlanError::StrategyParameter {
                    field,
                    value,
                    expected,
                })
            }
        };
        match *self {
            Strategy::FedAvg => Ok(()),
            Strategy::FedProx { proximal_mu } => {
                check("proximal_mu", proximal_mu, proximal_mu >= 0.0, ">= 0")
            }
            Strategy::FedAdam {
                server_learning_rate,
                beta1,
                beta2,
                tau,
            } => {
                check(
                    "server_learning_rate",
                    server_learning_rate,
                    server_learning_rate > 0.0,
                    "> 0",
                )?;
                check("beta1", beta1, (0.0..1.0).contains(&beta1), "[0, 1)")?;
                check("beta2", beta2, (0.0..1.0).contains(&beta2), "[0, 1)")?;
                check("tau", tau, tau > 0.0, "> 0")
            }
        }
    }
}

/// Server-side optimiser state of one job; persisted with the job's snapshot.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ServerOptimizer {
    strategy: Strategy,
    /// FedAdam first moment; empty for other strategies.
    first_moment: Vec<f64>,
    /// FedAdam second moment; empty for other strategies.
    second_moment: Vec<f64>,
}

impl ServerOptimizer {
    /// Fresh state for a model of `parameter_count` values.
    pub fn new(strategy: Strategy, parameter_count: usize) -> Self {
        let moments = match strategy {
            Strategy::FedAdam { .. } => parameter_count,
            _ => 0,
        };
        Self {
            strategy,
            first_moment: vec![0.0; moments],
            second_moment: vec![0.0; moments],
        }
    }

    /// Values of state held (FedAdam's two moments; none for other strategies).
    pub fn retained_values(&self) -> usize {
        self.first_moment.len() + self.second_moment.len()
    }

    /// Drops the state of a job that has ended: it takes no more steps.
    pub(crate) fn release(&mut self) {
        self.first_moment = Vec::new();
        self.second_moment = Vec::new();
    }

    /// Applies one aggregated step: `mean_delta` is the weighted mean of the
    /// nodes' `local - global` deltas.
    pub fn apply(&mut self, global: &mut [f32], mean_delta: &[f64]) {
        debug_assert_eq!(global.len(), mean_delta.len());
        match self.strategy {
            Strategy::FedAvg | Strategy::FedProx { .. } => {
                for (weight, delta) in global.iter_mut().zip(mean_delta) {
                    *weight = (f64::from(*weight) + delta) as f32;
                }
            }
            Strategy::FedAdam {
                server_learning_rate,
                beta1,
                beta2,
                tau,
            } => {
                let moments = self
                    .first_moment
                    .iter_mut()
                    .zip(self.second_moment.iter_mut());
                for ((weight, delta), (first, second)) in
                    global.iter_mut().zip(mean_delta).zip(moments)
                {
                    *first = beta1 * *first + (1.0 - beta1) * delta;
                    *second = beta2 * *second + (1.0 - beta2) * delta * delta;
                    let step = server_learning_rate * *first / (second.sqrt() + tau);
                    *weight = (f64::from(*weight) + step) as f32;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fedavg_adds_the_mean_delta() {
        let mut optimizer = ServerOptimizer::new(Strategy::FedAvg, 2);
        let mut global = vec![1.0_f32, -1.0];
        optimizer.apply(&mut global, &[0.5, 0.25]);
        assert_eq!(global, vec![1.5, -0.75]);
    }

    #[test]
    fn fedadam_first_step_moves_by_about_the_learning_rate() {
        // With zero-initialised moments, the first Adam step is
        // lr * (1-b1) d / (sqrt(1-b2) |d| + tau): for |d| >> tau this is
        // lr * (1-b1)/sqrt(1-b2) in the direction of d.
        let strategy = Strategy::FedAdam {
            server_learning_rate: 0.1,
            beta1: 0.9,
            beta2: 0.99,
            tau: 1e-9,
        };
        let mut optimizer = ServerOptimizer::new(strategy, 2);
        let mut global = vec![0.0_f32, 0.0];
        optimizer.apply(&mut global, &[2.0, -3.0]);
        let expected = 0.1 * (1.0 - 0.9) / (1.0_f64 - 0.99).sqrt();
        assert!((f64::from(global[0]) - expected).abs() < 1e-6);
        assert!((f64::from(global[1]) + expected).abs() < 1e-6);
    }

    #[test]
    fn invalid_parameters_are_named() {
        let strategy = Strategy::FedAdam {
            server_learning_rate: 0.1,
            beta1: 1.5,
            beta2: 0.99,
            tau: 1e-3,
        };
        assert_eq!(
            strategy.validate(),
            Err(PlanError::StrategyParameter {
                field: "beta1",
                value: 1.5,
                expected: "[0, 1)"
            })
        );
    }
}
