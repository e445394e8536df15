//! The SecAgg+ neighbour graph (Bell et al. 2020) and the choice of its degree
//! k and threshold t from the cohort size, dropout rate and security parameter.
//!
//! The graph is a Harary graph H(k, n) under a pseudorandom permutation: the
//! cohort is shuffled with a ChaCha20 stream keyed by the job's public graph
//! seed, placed on a ring, and each node is joined to the k/2 nearest nodes on
//! each side. Every party derives the same graph from public data, so the
//! coordinator cannot choose who neighbours whom. When k = n - 1 the graph is
//! complete, which is plain SecAgg (Bonawitz et al. 2017).

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

/// Why graph parameters could not be chosen.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GraphError {
    /// Fewer than two clients cannot be aggregated securely.
    #[error("need at least 2 clients, got {n_clients}")]
    TooFewClients {
        /// The cohort size.
        n_clients: usize,
    },
    /// Rates must be in [0, 1) and together leave some honest survivors.
    #[error(
        "dropout rate {dropout_rate} and corrupt fraction {corrupt_fraction} must be in [0, 1) with a sum below 1"
    )]
    InvalidRates {
        /// The expected fraction of clients dropping out.
        dropout_rate: f64,
        /// The assumed fraction of clients colluding with the coordinator.
        corrupt_fraction: f64,
    },
}

/// What the parameters must achieve.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphRequirements {
    /// n, the cohort size.
    pub n_clients: usize,
    /// δ, the fraction of clients expected to drop out during a round.
    pub dropout_rate: f64,
    /// γ, the fraction of clients assumed to collude with the coordinator.
    pub corrupt_fraction: f64,
    /// σ: the adversary learns a secret with probability at most 2^-σ.
    pub security_bits: u32,
    /// η: a round fails for lack of shares with probability at most 2^-η.
    pub correctness_bits: u32,
}

/// The chosen degree and threshold, with the bounds they achieve.
#[derive(Debug, Clone, PartialEq)]
pub struct NeighbourParameters {
    /// k, neighbours per client.
    pub neighbour_count: usize,
    /// t, the reconstruction threshold.
    pub reconstruction_threshold: usize,
    /// -log2 of the bound on the adversary learning a secret (or splitting the graph).
    pub security_bits_achieved: f64,
    /// -log2 of the bound on the round failing for lack of surviving neighbours.
    pub correctness_bits_achieved: f64,
}

/// Natural log of P[Binomial(trials, probability) >= at_least].
fn log_binomial_upper_tail(
    trials: usize,
    probability: f64,
    at_least: usize,
    log_factorials: &[f64],
) -> f64 {
    if at_least == 0 {
        return 0.0;
    }
    if at_least > trials || probability <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if probability >= 1.0 {
        return 0.0;
    }
    let log_factorial = |m: usize| log_factorials.get(m).copied().unwrap_or(f64::INFINITY);
    let terms: Vec<f64> = (at_least..=trials)
        .map(|i| {
            log_factorial(trials) - log_factorial(i) - log_factorial(trials - i)
                + i as f64 * probability.ln()
                + (trials - i) as f64 * (1.0 - probability).ln()
        })
        .collect();
    let largest = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    largest
        + terms
            .iter()
            .map(|term| (term - largest).exp())
            .sum::<f64>()
            .ln()
}

/// Chooses the smallest k (and for it the smallest t) meeting the requirements,
/// following the analysis of Bell et al. 2020 (Section 3) with these bounds,
/// each a union bound over the n clients:
/// - security: n * P[Bin(k, γ) >= t] <= 2^-σ (corrupt neighbours alone never hold t shares),
///   and for a sparse graph n^2/2 * (γ + δ)^k <= 2^-σ (honest survivors stay connected,
///   which in a ring Harary graph needs two runs of k/2 removed nodes);
/// - correctness: n * P[Bin(k, δ) > k - t] <= 2^-η (at least t neighbours survive);
/// - and always 2t > k, so an active coordinator cannot gather t shares of both
///   secrets of one client from two disjoint groups of honest neighbours.
///
/// When no sparse k works, the complete graph is returned with the largest
/// majority threshold meeting the correctness bound (or the smallest majority
/// if none does), and the achieved bits say how far short it falls.
pub fn choose_neighbour_parameters(
    requirements: &GraphRequirements,
) -> Result<NeighbourParameters, GraphError> {
    let GraphRequirements {
        n_clients,
        dropout_rate,
        corrupt_fraction,
        security_bits,
        correctness_bits,
    } = *requirements;
    if n_clients < 2 {
        return Err(GraphError::TooFewClients { n_clients });
    }
    let rates_valid = (0.0..1.0).contains(&dropout_rate)
        && (0.0..1.0).contains(&corrupt_fraction)
        && dropout_rate + corrupt_fraction < 1.0;
    if !rates_valid {
        return Err(GraphError::InvalidRates {
            dropout_rate,
            corrupt_fraction,
        });
    }
    let mut log_factorials = Vec::with_capacity(n_clients + 1);
    let mut running = 0.0f64;
    log_factorials.push(0.0);
    for m in 1..=n_clients {
        running += (m as f64).ln();
        log_factorials.push(running);
    }
    let ln2 = std::f64::consts::LN_2;
    let log_n = (n_clients as f64).ln();
    let evaluate = |k: usize, t: usize, sparse: bool| -> (f64, f64) {
        let secret_leak = log_n + log_binomial_upper_tail(k, corrupt_fraction, t, &log_factorials);
        let disconnect = if sparse {
            2.0 * log_n - ln2 + k as f64 * (dropout_rate + corrupt_fraction).ln()
        } else {
            f64::NEG_INFINITY
        };
        let security = -secret_leak.max(disconnect) / ln2;
        // Fewer than t survivors means more than k - t dropped.
        let starve = log_n + log_binomial_upper_tail(k, dropout_rate, k - t + 1, &log_factorials);
        (security, -starve / ln2)
    };
    let candidates = (2..n_clients - 1)
        .step_by(2)
        .map(|k| (k, true))
        .chain(std::iter::once((n_clients - 1, false)));
    for (k, sparse) in candidates {
        for t in (k / 2 + 1)..=k {
            let (security, correctness) = evaluate(k, t, sparse);
            if security >= f64::from(security_bits) {
                if correctness >= f64::from(correctness_bits) {
                    return Ok(NeighbourParameters {
                        neighbour_count: k,
                        reconstruction_threshold: t,
                        security_bits_achieved: security,
                        correctness_bits_achieved: correctness,
                    });
                }
                // Larger t only makes correctness worse for this k.
                break;
            }
        }
    }
    // Small cohorts: the complete graph, with the largest threshold that still
    // meets the correctness bound (the most security dropouts allow), or the
    // smallest majority when even that misses it.
    let k = n_clients - 1;
    let t = ((k / 2 + 1)..=k)
        .rev()
        .find(|&t| evaluate(k, t, false).1 >= f64::from(correctness_bits))
        .unwrap_or(k / 2 + 1);
    let (security, correctness) = evaluate(k, t, false);
    Ok(NeighbourParameters {
        neighbour_count: k,
        reconstruction_threshold: t,
        security_bits_achieved: security,
        correctness_bits_achieved: correctness,
    })
}

/// Who masks with and shares secrets to whom, by cohort position.
///
/// Only the ring order is stored (O(n) memory, not O(n k)): neighbours are the
/// nodes within k/2 ring slots, computed on demand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighbourGraph {
    /// k / 2 for a sparse graph; `None` for the complete graph.
    half_degree: Option<usize>,
    /// `node_at_slot[p]` is the cohort position placed at ring slot p.
    node_at_slot: Vec<usize>,
    /// `slot_of_node[i]` is the ring slot of cohort position i.
    slot_of_node: Vec<usize>,
}

impl NeighbourGraph {
    /// Derives the graph for `n_clients` sorted cohort members. `neighbour_count`
    /// must be `n - 1` or even (checked by `ProtocolParams`); `context` (the
    /// parameter fingerprint) makes graphs of different jobs independent even
    /// when they reuse a seed.
    pub fn new(
        n_clients: usize,
        neighbour_count: usize,
        graph_seed: &[u8; 32],
        context: &[u8; 32],
    ) -> Self {
        let identity: Vec<usize> = (0..n_clients).collect();
        if neighbour_count + 1 >= n_clients {
            return NeighbourGraph {
                half_degree: None,
                node_at_slot: identity.clone(),
                slot_of_node: identity,
            };
        }
        let mut key_material = Vec::with_capacity(96);
        key_material.extend_from_slice(b"veil-secagg neighbour graph v1");
        key_material.extend_from_slice(graph_seed);
        key_material.extend_from_slice(context);
        let digest = ring::digest::digest(&ring::digest::SHA256, &key_material);
        let mut key = [0u8; 32];
        key.copy_from_slice(digest.as_ref());
        let mut rng = ChaCha20Rng::from_seed(key);
        // Fisher-Yates shuffle of the ring order.
        let mut node_at_slot = identity;
        for slot in (1..n_clients).rev() {
            let other = uniform_below(&mut rng, slot + 1);
            node_at_slot.swap(slot, other);
        }
        let mut slot_of_node = vec![0usize; n_clients];
        for (slot, &node) in node_at_slot.iter().enumerate() {
            if let Some(entry) = slot_of_node.get_mut(node) {
                *entry = slot;
            }
        }
        NeighbourGraph {
            half_degree: Some(neighbour_count / 2),
            node_at_slot,
            slot_of_node,
        }
    }

    /// The cohort positions of a node's neighbours, sorted; empty for an unknown position.
    pub fn neighbours_of(&self, cohort_index: usize) -> Vec<usize> {
        let n = self.node_at_slot.len();
        let Some(&slot) = self.slot_of_node.get(cohort_index) else {
            return Vec::new();
        };
        let mut neighbours: Vec<usize> = match self.half_degree {
            None => (0..n).filter(|&other| other != cohort_index).collect(),
            Some(half) => (1..=half)
                .flat_map(|offset| [(slot + offset) % n, (slot + n - offset) % n])
                .filter_map(|neighbour_slot| self.node_at_slot.get(neighbour_slot).copied())
                .collect(),
        };
        neighbours.sort_unstable();
        neighbours
    }

    /// Whether two cohort positions are neighbours.
    pub fn are_neighbours(&self, left: usize, right: usize) -> bool {
        let n = self.node_at_slot.len();
        let (Some(&left_slot), Some(&right_slot)) =
            (self.slot_of_node.get(left), self.slot_of_node.get(right))
        else {
            return false;
        };
        if left == right {
            return false;
        }
        match self.half_degree {
            None => true,
            Some(half) => {
                let gap = left_slot.abs_diff(right_slot);
                gap.min(n - gap) <= half
            }
        }
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.node_at_slot.len()
    }

    /// Whether the graph has no nodes.
    pub fn is_empty(&self) -> bool {
        self.node_at_slot.is_empty()
    }
}

/// A uniform integer in [0, bound) by rejection, so the shuffle is unbiased.
fn uniform_below(rng: &mut ChaCha20Rng, bound: usize) -> usize {
    let bound = bound as u64;
    let zone = u64::MAX - (u64::MAX % bound);
    loop {
        let candidate = rng.next_u64();
        if candidate < zone {
            return (candidate % bound) as usize;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn graph_is_symmetric_and_regular(n in 3usize..60, k_half in 1usize..10, seed in any::<[u8; 32]>()) {
            let k = (2 * k_half).min(n - 1);
            let graph = NeighbourGraph::new(n, k, &seed, &[0u8; 32]);
            for node in 0..n {
                let list = graph.neighbours_of(node);
                prop_assert_eq!(list.len(), k);
                prop_assert!(!list.contains(&node));
                for &other in &list {
                    prop_assert!(graph.are_neighbours(other, node));
                }
            }
        }
    }

    #[test]
    fn small_cohorts_use_the_complete_graph() {
        let requirements = GraphRequirements {
            n_clients: 10,
            dropout_rate: 0.1,
            corrupt_fraction: 0.0,
            security_bits: 40,
            correctness_bits: 20,
        };
        let chosen = choose_neighbour_parameters(&requirements).unwrap();
        assert_eq!(chosen.neighbour_count, 9);
        assert!(chosen.reconstruction_threshold * 2 > chosen.neighbour_count);
    }

    #[test]
    fn large_cohorts_use_a_logarithmic_degree() {
        let requirements = GraphRequirements {
            n_clients: 10_000,
            dropout_rate: 0.1,
            corrupt_fraction: 0.05,
            security_bits: 40,
            correctness_bits: 20,
        };
        let chosen = choose_neighbour_parameters(&requirements).unwrap();
        assert!(
            chosen.neighbour_count < 200,
            "k = {}",
            chosen.neighbour_count
        );
        assert!(chosen.security_bits_achieved >= 40.0);
        assert!(chosen.correctness_bits_achieved >= 20.0);
    }
}
