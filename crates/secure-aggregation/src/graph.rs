//! The SecAgg+ neighbour graph (Bell et al. 2020) and the choice of its degree
//! k and threshold t from the cohort size, dropout rate, collusion rate and
//! security parameter.
//!
//! The graph is a Harary graph H(k, n) under a pseudorandom permutation: the
//! cohort is shuffled with a ChaCha20 stream keyed by the job's public graph
//! seed, placed on a ring, and each node is joined to the k/2 nearest nodes on
//! each side. Every party derives the same graph from public data, so the
//! coordinator cannot choose who neighbours whom. When k = n - 1 the graph is
//! complete, which is plain SecAgg (Bonawitz et al. 2017).
//!
//! The threshold must resist a split view: an active coordinator with c
//! corrupt neighbours of a victim can show one survivor list (victim dropped)
//! to one half of the victim's honest neighbours and another (victim alive) to
//! the other half. Each half, topped up by the c corrupt neighbours, yields t
//! shares of a different secret, the mask key and the self-mask seed, once
//! 2t - k <= c, and the two together unmask the victim's input. The consistency
//! check does not stop this, because each half collects its t signatures from
//! itself and the corrupt neighbours. So t is chosen with 2t - k above the
//! number of corrupt neighbours, statistically for sparse graphs and
//! deterministically for the complete graph.

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

/// Why graph parameters could not be chosen or were refused.
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
    /// No sparse graph meets the statistical bounds, and on the complete graph
    /// no threshold both defeats a split view by the colluders (2t - k > c)
    /// and survives the expected dropouts (t <= k - dropouts).
    #[error(
        "a cohort of {n_clients} cannot tolerate {colluders} colluding partners and {dropouts_needed} dropouts: it needs 2t − {neighbour_count} > {colluders} with t ≤ {max_threshold}"
    )]
    CollusionUnachievable {
        /// n, the cohort size.
        n_clients: usize,
        /// c = ceil(γ·n), the colluding cohort members to tolerate.
        colluders: usize,
        /// floor(δ·n), the dropouts the round must survive.
        dropouts_needed: usize,
        /// k = n - 1, the complete graph's degree.
        neighbour_count: usize,
        /// The largest threshold that survives `dropouts_needed` dropouts.
        max_threshold: usize,
    },
    /// The degree and threshold a node was sent are not the ones its own
    /// requirements give, for example a coordinator downgrading t.
    #[error(
        "the requirements give k = {expected_k} and t = {expected_t}, but the round uses k = {got_k} and t = {got_t}"
    )]
    ParametersMismatch {
        /// The degree recomputed from the requirements.
        expected_k: usize,
        /// The threshold recomputed from the requirements.
        expected_t: usize,
        /// The degree the node was sent.
        got_k: usize,
        /// The threshold the node was sent.
        got_t: usize,
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

/// What a choice of degree and threshold guarantees.
#[derive(Debug, Clone, PartialEq)]
pub enum Guarantee {
    /// Sparse graph: adversary success ≤ 2^-security_bits, failure ≤ 2^-correctness_bits.
    Statistical {
        /// -log2 of the bound on the adversary learning a client's input.
        security_bits: f64,
        /// -log2 of the bound on the round failing for lack of shares.
        correctness_bits: f64,
    },
    /// Complete graph: holds for any `colluders` corrupt members and any `dropouts` dropouts.
    Deterministic {
        /// Corrupt cohort members that cannot unmask an honest input, even by a split view.
        colluders: usize,
        /// Clients that may drop out, at any phase, without the round failing.
        dropouts: usize,
    },
}

impl std::fmt::Display for Guarantee {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Guarantee::Statistical {
                security_bits,
                correctness_bits,
            } => write!(
                formatter,
                "{security_bits:.1} security bits, {correctness_bits:.1} correctness bits"
            ),
            Guarantee::Deterministic {
                colluders,
                dropouts,
            } => {
                let plural = |count: usize| if count == 1 { "" } else { "s" };
                write!(
                    formatter,
                    "tolerates {colluders} colluder{} and {dropouts} dropout{}",
                    plural(colluders),
                    plural(dropouts)
                )
            }
        }
    }
}

/// The chosen degree and threshold, with the bounds they achieve.
#[derive(Debug, Clone, PartialEq)]
pub struct NeighbourParameters {
    /// k, neighbours per client.
    pub neighbour_count: usize,
    /// t, the reconstruction threshold.
    pub reconstruction_threshold: usize,
    /// -log2 of the bound on the adversary learning a secret by a split view (or
    /// splitting the graph). For the complete graph it is infinite, since all c
    /// colluders are neighbours and 2t − k > c: `guarantee` says what holds.
    pub security_bits_achieved: f64,
    /// -log2 of the bound on the round failing for lack of surviving neighbours.
    pub correctness_bits_achieved: f64,
    /// What the round is guaranteed to withstand.
    pub guarantee: Guarantee,
    /// How many colluding cohort members the round's noise calibration must assume away:
    /// c for the complete graph; for sparse graphs ceil(γ·n).
    pub tolerated_colluders: usize,
}

impl NeighbourParameters {
    /// t minus tolerated colluders, at least 1: how many honest inputs a released sum is guaranteed to hold
    /// (distributed DP noise is calibrated for this many, not t).
    pub fn honest_contributor_floor(&self) -> usize {
        self.reconstruction_threshold
            .saturating_sub(self.tolerated_colluders)
            .max(1)
    }
}

/// Slack for float products such as 0.1 · 30 = 3.0000000000000004, which must
/// count as 3 colluders, not 4. Rates given to more than nine decimals of a
/// client are not meaningful, so nothing real is lost.
const COUNT_SLACK: f64 = 1e-9;

/// c = ceil(γ·n), the colluding cohort members to tolerate.
fn colluders_to_tolerate(n_clients: usize, corrupt_fraction: f64) -> usize {
    (corrupt_fraction * n_clients as f64 - COUNT_SLACK)
        .ceil()
        .max(0.0) as usize
}

/// floor(δ·n), the dropouts a complete-graph round must survive.
fn expected_dropouts(n_clients: usize, dropout_rate: f64) -> usize {
    (dropout_rate * n_clients as f64 + COUNT_SLACK)
        .floor()
        .max(0.0) as usize
}

/// `tails[m]` is the natural log of P[Binomial(trials, probability) >= m], for
/// m in 0..=trials + 1, computed in log space so that tails far below f64's
/// range (large k, small p) still compare correctly. `probability` is in [0, 1).
fn log_binomial_upper_tails(trials: usize, probability: f64, log_factorials: &[f64]) -> Vec<f64> {
    let mut tails = vec![f64::NEG_INFINITY; trials + 2];
    if probability <= 0.0 {
        // All mass sits at zero; 0 * ln(0) would otherwise be NaN.
        if let Some(first) = tails.first_mut() {
            *first = 0.0;
        }
        return tails;
    }
    let log_factorial = |m: usize| log_factorials.get(m).copied().unwrap_or(f64::INFINITY);
    let (log_p, log_q) = (probability.ln(), (1.0 - probability).ln());
    let mut running = f64::NEG_INFINITY;
    for successes in (0..=trials).rev() {
        let term =
            log_factorial(trials) - log_factorial(successes) - log_factorial(trials - successes)
                + successes as f64 * log_p
                + (trials - successes) as f64 * log_q;
        running = log_add(running, term);
        if let Some(tail) = tails.get_mut(successes) {
            *tail = running;
        }
    }
    tails
}

/// `tails[m]` is the natural log of P[X >= m] for m in 0..=draws + 1, where X
/// is hypergeometric: the number of marked items among `draws` taken without
/// replacement from `population` items of which `marked` are marked. Computed
/// in log space like [`log_binomial_upper_tails`]; `marked` and `draws` are at
/// most `population`, which is below `log_factorials.len()`.
fn log_hypergeometric_upper_tails(
    population: usize,
    marked: usize,
    draws: usize,
    log_factorials: &[f64],
) -> Vec<f64> {
    let log_factorial = |m: usize| log_factorials.get(m).copied().unwrap_or(f64::INFINITY);
    let log_choose = |total: usize, chosen: usize| {
        log_factorial(total) - log_factorial(chosen) - log_factorial(total.saturating_sub(chosen))
    };
    let unmarked = population.saturating_sub(marked);
    let mut tails = vec![f64::NEG_INFINITY; draws + 2];
    // X ranges over max(0, draws - unmarked) ..= min(draws, marked): above it
    // the tails stay -inf (no mass), below it they are 0 (all the mass).
    let lowest = draws.saturating_sub(unmarked);
    let highest = draws.min(marked);
    let mut running = f64::NEG_INFINITY;
    for successes in (0..=draws).rev() {
        if (lowest..=highest).contains(&successes) {
            let term = log_choose(marked, successes) + log_choose(unmarked, draws - successes)
                - log_choose(population, draws);
            running = log_add(running, term);
        }
        if let Some(tail) = tails.get_mut(successes) {
            *tail = if successes < lowest { 0.0 } else { running };
        }
    }
    tails
}

/// ln(e^a + e^b) without overflow, treating -inf as zero mass.
fn log_add(a: f64, b: f64) -> f64 {
    let (high, low) = if a >= b { (a, b) } else { (b, a) };
    if low == f64::NEG_INFINITY {
        return high;
    }
    high + (low - high).exp().ln_1p()
}

/// Chooses the smallest k, and for it the smallest t, meeting the requirements.
///
/// Sparse graphs (k even, k < n - 1) follow the analysis of Bell et al. 2020
/// (Section 3), each bound a union bound over the n clients:
/// - split view: n · P[Hyp(n − 1, c, k) ≥ 2t − k] ≤ 2^-σ with c = ceil(γ·n),
///   so no honest client has 2t − k corrupt neighbours (this implies the same
///   bound for t, corrupt neighbours alone never holding t shares, since
///   2t − k ≤ t). The count is hypergeometric, not binomial: the ring order is
///   a uniformly random permutation, so an honest client's k neighbours are a
///   uniformly random k-subset of the other n − 1 members, of whom at most c
///   collude (the threat model's fraction γ, the same c the noise calibration
///   assumes). Bin(k, γ) treats neighbours as independent draws, which
///   overstates the spread when k is a large part of n (up to forcing the
///   complete graph when a sparse one is safe), and understates the tail a
///   little when c / (n − 1) > γ. The tail grows with c, so fewer colluders
///   only help, and the union is over all n members rather than the n − c
///   honest ones, so it also holds when fewer than c collude;
/// - disconnection: n²/2 · (γ + δ)^k ≤ 2^-σ (honest survivors stay connected,
///   which in a ring Harary graph needs two runs of k/2 removed nodes);
/// - correctness: n · P[Bin(k, δ) > k − t] ≤ 2^-η (at least t neighbours survive);
/// - and k/2 < t ≤ k.
///
/// Only when no sparse k meets these does it take the complete graph k = n − 1,
/// whose guarantee is deterministic: with c = ceil(γ·n) colluders it takes the
/// smallest t with 2t − k > c (the most dropout tolerance), which tolerates
/// k − t dropouts, because every survivor needs t surviving neighbours besides
/// itself. If that t exceeds k, or k − t is below floor(δ·n), it fails with
/// [`GraphError::CollusionUnachievable`] rather than return a weaker threshold.
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
    let log2_n = (n_clients as f64).log2();
    let security_target = f64::from(security_bits);
    let correctness_target = f64::from(correctness_bits);
    let tolerated_colluders = colluders_to_tolerate(n_clients, corrupt_fraction);
    // An honest client's neighbours are drawn from the n − 1 other members, of
    // whom at most c (and never more than all of them) collude.
    let other_members = n_clients - 1;
    let colluding_others = tolerated_colluders.min(other_members);
    // Bits of the split-view and starvation bounds for degree k and threshold t,
    // from that degree's binomial tails.
    let split_view_bits = |corrupt_tails: &[f64], k: usize, t: usize| -> f64 {
        let at_least = (2 * t).saturating_sub(k);
        -(log2_n
            + corrupt_tails
                .get(at_least)
                .copied()
                .unwrap_or(f64::NEG_INFINITY)
                / ln2)
    };
    let correctness_bits_for = |dropout_tails: &[f64], k: usize, t: usize| -> f64 {
        // Fewer than t survivors means more than k - t dropped.
        -(log2_n
            + dropout_tails
                .get(k - t + 1)
                .copied()
                .unwrap_or(f64::NEG_INFINITY)
                / ln2)
    };

    for k in (2..n_clients.saturating_sub(1)).step_by(2) {
        let disconnect_bits =
            -(2.0 * log2_n - 1.0 + k as f64 * (dropout_rate + corrupt_fraction).log2());
        if disconnect_bits < security_target {
            // The disconnection bound only improves with k.
            continue;
        }
        let corrupt_tails =
            log_hypergeometric_upper_tails(other_members, colluding_others, k, &log_factorials);
        let dropout_tails = log_binomial_upper_tails(k, dropout_rate, &log_factorials);
        // Security improves with t and correctness worsens, so the smallest t
        // meeting security is the only candidate worth checking for correctness.
        let Some(t) =
            ((k / 2 + 1)..=k).find(|&t| split_view_bits(&corrupt_tails, k, t) >= security_target)
        else {
            continue;
        };
        let correctness = correctness_bits_for(&dropout_tails, k, t);
        if correctness >= correctness_target {
            let security = split_view_bits(&corrupt_tails, k, t).min(disconnect_bits);
            return Ok(NeighbourParameters {
                neighbour_count: k,
                reconstruction_threshold: t,
                security_bits_achieved: security,
                correctness_bits_achieved: correctness,
                guarantee: Guarantee::Statistical {
                    security_bits: security,
                    correctness_bits: correctness,
                },
                tolerated_colluders,
            });
        }
    }

    // The complete graph: every other member is a neighbour, so at most c of a
    // victim's neighbours are corrupt and the split view fails outright when
    // 2t − k > c. The smallest such t leaves the most room for dropouts.
    let k = n_clients - 1;
    let colluders = tolerated_colluders;
    let dropouts_needed = expected_dropouts(n_clients, dropout_rate);
    let max_threshold = k.saturating_sub(dropouts_needed);
    let t = (k + colluders) / 2 + 1;
    if t > max_threshold {
        return Err(GraphError::CollusionUnachievable {
            n_clients,
            colluders,
            dropouts_needed,
            neighbour_count: k,
            max_threshold,
        });
    }
    // All n − 1 others are neighbours, so exactly the c colluders are: the
    // split-view tail is 0 above c and these bits are infinite, as the
    // deterministic guarantee says.
    let corrupt_tails =
        log_hypergeometric_upper_tails(other_members, colluding_others, k, &log_factorials);
    let dropout_tails = log_binomial_upper_tails(k, dropout_rate, &log_factorials);
    Ok(NeighbourParameters {
        neighbour_count: k,
        reconstruction_threshold: t,
        security_bits_achieved: split_view_bits(&corrupt_tails, k, t),
        correctness_bits_achieved: correctness_bits_for(&dropout_tails, k, t),
        guarantee: Guarantee::Deterministic {
            colluders,
            dropouts: k - t,
        },
        tolerated_colluders,
    })
}

/// What a node runs before joining a round: recomputes the choice from the
/// job's requirements and refuses a degree or threshold that differs, so a
/// coordinator cannot quietly lower t (or thin the graph) to enable a split
/// view. Returns the parameters, with their guarantee, when they match.
pub fn check_neighbour_parameters(
    requirements: &GraphRequirements,
    neighbour_count: usize,
    reconstruction_threshold: usize,
) -> Result<NeighbourParameters, GraphError> {
    let expected = choose_neighbour_parameters(requirements)?;
    if expected.neighbour_count != neighbour_count
        || expected.reconstruction_threshold != reconstruction_threshold
    {
        return Err(GraphError::ParametersMismatch {
            expected_k: expected.neighbour_count,
            expected_t: expected.reconstruction_threshold,
            got_k: neighbour_count,
            got_t: reconstruction_threshold,
        });
    }
    Ok(expected)
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

    fn requirements(
        n_clients: usize,
        dropout_rate: f64,
        corrupt_fraction: f64,
        security_bits: u32,
        correctness_bits: u32,
    ) -> GraphRequirements {
        GraphRequirements {
            n_clients,
            dropout_rate,
            corrupt_fraction,
            security_bits,
            correctness_bits,
        }
    }

    /// The choice for n clients at σ = 40, η = 20, as (k, t, guarantee) or the error.
    fn check(
        n_clients: usize,
        dropout_rate: f64,
        corrupt_fraction: f64,
        expected: Result<(usize, usize, Guarantee), GraphError>,
    ) {
        let chosen = choose_neighbour_parameters(&requirements(
            n_clients,
            dropout_rate,
            corrupt_fraction,
            40,
            20,
        ))
        .map(|chosen| {
            (
                chosen.neighbour_count,
                chosen.reconstruction_threshold,
                chosen.guarantee,
            )
        });
        assert_eq!(
            chosen, expected,
            "n = {n_clients}, δ = {dropout_rate}, γ = {corrupt_fraction}"
        );
    }

    #[test]
    fn small_cohorts_use_the_complete_graph_with_a_deterministic_guarantee() {
        // Without collusion the complete graph needs only a majority.
        check(
            10,
            0.1,
            0.0,
            Ok((
                9,
                5,
                Guarantee::Deterministic {
                    colluders: 0,
                    dropouts: 4,
                },
            )),
        );
        // Three partners, one colluding: t = 2 defeats the split view (2·2 − 2 > 1),
        // and with t = 2 every survivor needs both others alive, so no dropout is
        // tolerated; floor(0.1 · 3) = 0 are expected.
        check(
            3,
            0.1,
            0.2,
            Ok((
                2,
                2,
                Guarantee::Deterministic {
                    colluders: 1,
                    dropouts: 0,
                },
            )),
        );
        // c = 2 colluders: 2t − 9 > 2 gives t = 6, leaving k − t = 3 dropouts.
        check(
            10,
            0.1,
            0.2,
            Ok((
                9,
                6,
                Guarantee::Deterministic {
                    colluders: 2,
                    dropouts: 3,
                },
            )),
        );
        // 0.1 · 30 is 3.0000000000000004 in f64 but still 3 colluders.
        check(
            30,
            0.1,
            0.1,
            Ok((
                29,
                17,
                Guarantee::Deterministic {
                    colluders: 3,
                    dropouts: 12,
                },
            )),
        );
    }

    #[test]
    fn unachievable_collusion_is_an_error_naming_the_numbers() {
        let expected = GraphError::CollusionUnachievable {
            n_clients: 3,
            colluders: 2,
            dropouts_needed: 0,
            neighbour_count: 2,
            max_threshold: 2,
        };
        check(3, 0.1, 0.5, Err(expected.clone()));
        assert_eq!(
            expected.to_string(),
            "a cohort of 3 cannot tolerate 2 colluding partners and 0 dropouts: it needs 2t − 2 > 2 with t ≤ 2"
        );
        // Two colluders among ten are tolerable, but not together with 5 dropouts:
        // t = 6 leaves room for only 3.
        check(
            10,
            0.45,
            0.2,
            Err(GraphError::CollusionUnachievable {
                n_clients: 10,
                colluders: 2,
                dropouts_needed: 4,
                neighbour_count: 9,
                max_threshold: 5,
            }),
        );
    }

    /// Whether a coordinator with `corrupt_neighbours` of a victim's k neighbours
    /// can gather t shares of both of the victim's secrets by showing the victim
    /// dropped to one group of honest neighbours and alive to the other.
    fn split_view_succeeds(k: usize, t: usize, corrupt_neighbours: usize) -> bool {
        let honest = k.saturating_sub(corrupt_neighbours);
        (0..=honest).any(|first_group| {
            first_group + corrupt_neighbours >= t
                && (honest - first_group) + corrupt_neighbours >= t
        })
    }

    #[test]
    fn complete_graph_threshold_defeats_a_split_view_by_its_colluders() {
        for n in 2..=40 {
            for percent in [0, 5, 10, 20, 25, 30, 40] {
                let corrupt_fraction = f64::from(percent) / 100.0;
                let Ok(chosen) =
                    choose_neighbour_parameters(&requirements(n, 0.0, corrupt_fraction, 40, 20))
                else {
                    continue;
                };
                if chosen.neighbour_count != n - 1 {
                    continue;
                }
                let (k, t, c) = (
                    chosen.neighbour_count,
                    chosen.reconstruction_threshold,
                    chosen.tolerated_colluders,
                );
                assert!(2 * t > k + c, "n = {n}: 2t − k = {} ≤ c = {c}", 2 * t - k);
                assert!(
                    !split_view_succeeds(k, t, c),
                    "n = {n}, k = {k}, t = {t}, c = {c}"
                );
                // The attack works as soon as 2t − k ≤ c, which is why t is not lower.
                let weaker = (k + c) / 2;
                if weaker * 2 > k {
                    assert!(split_view_succeeds(k, weaker, c), "n = {n}, t = {weaker}");
                }
            }
        }
    }

    #[test]
    fn large_cohorts_use_a_logarithmic_degree() {
        let chosen = choose_neighbour_parameters(&requirements(10_000, 0.1, 0.05, 40, 20)).unwrap();
        assert!(
            chosen.neighbour_count < 200,
            "k = {}",
            chosen.neighbour_count
        );
        assert!(chosen.security_bits_achieved >= 40.0);
        assert!(chosen.correctness_bits_achieved >= 20.0);
        assert!(matches!(chosen.guarantee, Guarantee::Statistical { .. }));
        assert_eq!(chosen.tolerated_colluders, 500);
    }

    #[test]
    fn nodes_refuse_a_downgraded_threshold() {
        let requirements = requirements(100, 0.1, 0.2, 40, 20);
        let expected = choose_neighbour_parameters(&requirements).unwrap();
        assert_ne!(
            (expected.neighbour_count, expected.reconstruction_threshold),
            (4, 3)
        );
        assert_eq!(
            check_neighbour_parameters(&requirements, 4, 3),
            Err(GraphError::ParametersMismatch {
                expected_k: expected.neighbour_count,
                expected_t: expected.reconstruction_threshold,
                got_k: 4,
                got_t: 3,
            })
        );
        let message = check_neighbour_parameters(&requirements, 4, 3)
            .unwrap_err()
            .to_string();
        assert!(message.contains("k = 4 and t = 3"), "{message}");
        assert_eq!(
            check_neighbour_parameters(
                &requirements,
                expected.neighbour_count,
                expected.reconstruction_threshold
            ),
            Ok(expected)
        );
        // Errors in the requirements surface as themselves.
        assert_eq!(
            check_neighbour_parameters(&super::tests::requirements(1, 0.1, 0.2, 40, 20), 0, 1),
            Err(GraphError::TooFewClients { n_clients: 1 })
        );
    }

    #[test]
    fn guarantees_display_their_numbers() {
        let deterministic = |colluders, dropouts| {
            Guarantee::Deterministic {
                colluders,
                dropouts,
            }
            .to_string()
        };
        assert_eq!(deterministic(1, 1), "tolerates 1 colluder and 1 dropout");
        assert_eq!(deterministic(2, 0), "tolerates 2 colluders and 0 dropouts");
        let statistical = Guarantee::Statistical {
            security_bits: 40.26,
            correctness_bits: 21.0,
        };
        assert_eq!(
            statistical.to_string(),
            "40.3 security bits, 21.0 correctness bits"
        );
    }

    #[test]
    fn honest_contributor_floor_subtracts_the_colluders() {
        let chosen = choose_neighbour_parameters(&requirements(10, 0.1, 0.2, 40, 20)).unwrap();
        assert_eq!(chosen.honest_contributor_floor(), 6 - 2);
        // A sparse graph may have fewer neighbours than colluders; the floor stays 1.
        let sparse = choose_neighbour_parameters(&requirements(10_000, 0.1, 0.05, 40, 20)).unwrap();
        assert_eq!(sparse.honest_contributor_floor(), 1);
    }

    /// A plain reference for the proptest, independent of the chooser's
    /// log-space tails: the binomial pmf term by term in f64, then suffix sums,
    /// so `tails[m]` = P[Bin(k, p) ≥ m]. Terms below f64's range underflow to
    /// zero, which cannot matter against targets no smaller than 2^-64 / 2000.
    fn reference_tails(k: usize, p: f64) -> Vec<f64> {
        let mut log_factorial = vec![0.0f64; k + 1];
        for m in 1..=k {
            log_factorial[m] = log_factorial[m - 1] + (m as f64).ln();
        }
        let log_choose = |i: usize| log_factorial[k] - log_factorial[i] - log_factorial[k - i];
        let pmf: Vec<f64> = (0..=k)
            .map(|i| {
                if p == 0.0 {
                    if i == 0 { 1.0 } else { 0.0 }
                } else {
                    (log_choose(i) + i as f64 * p.ln() + (k - i) as f64 * (1.0 - p).ln()).exp()
                }
            })
            .collect();
        let mut tails = vec![0.0; k + 2];
        for m in (0..=k).rev() {
            tails[m] = tails[m + 1] + pmf[m];
        }
        tails
    }

    /// The same for the hypergeometric count of marked items among `draws`
    /// from `population` with `marked` marked: `tails[m]` = P[Hyp ≥ m].
    fn reference_hypergeometric_tails(population: usize, marked: usize, draws: usize) -> Vec<f64> {
        let mut log_factorial = vec![0.0f64; population + 1];
        for m in 1..=population {
            log_factorial[m] = log_factorial[m - 1] + (m as f64).ln();
        }
        let log_choose = |total: usize, i: usize| {
            log_factorial[total] - log_factorial[i] - log_factorial[total - i]
        };
        let unmarked = population - marked;
        let pmf: Vec<f64> = (0..=draws)
            .map(|i| {
                if i > marked || draws - i > unmarked {
                    0.0
                } else {
                    (log_choose(marked, i) + log_choose(unmarked, draws - i)
                        - log_choose(population, draws))
                    .exp()
                }
            })
            .collect();
        let mut tails = vec![0.0; draws + 2];
        for m in (0..=draws).rev() {
            tails[m] = tails[m + 1] + pmf[m];
        }
        tails
    }

    #[test]
    fn hypergeometric_tails_match_a_count_by_hand() {
        // 6 members, 2 colluding, 3 neighbours: C(6, 3) = 20 neighbour sets, of
        // which C(4, 3) = 4 hold no colluder and C(4, 1) = 4 hold both.
        let log_factorials: Vec<f64> = (0..=6u32)
            .scan(0.0f64, |running, m| {
                *running += f64::from(m.max(1)).ln();
                Some(*running)
            })
            .collect();
        let tails: Vec<f64> = log_hypergeometric_upper_tails(6, 2, 3, &log_factorials)
            .into_iter()
            .map(f64::exp)
            .collect();
        let expected = [1.0, 0.8, 0.2, 0.0, 0.0];
        for (m, (got, want)) in tails.iter().zip(expected).enumerate() {
            // Log-space sums of three terms: exact to a few ulps.
            assert!(
                (got - want).abs() < 1e-12,
                "P[X ≥ {m}] = {got}, expected {want}"
            );
        }
        // Drawing everyone: exactly the marked ones, so P[X ≥ 2] = 1 and P[X ≥ 3] = 0.
        let all = log_hypergeometric_upper_tails(6, 2, 6, &log_factorials);
        assert!(
            all[2].abs() < 1e-12 && all[3] == f64::NEG_INFINITY,
            "{all:?}"
        );
        // Fewer unmarked than draws: at least 5 − 2 = 3 marked ones, at most 4.
        let forced = log_hypergeometric_upper_tails(6, 4, 5, &log_factorials);
        assert_eq!(forced[2], 0.0);
        assert!(forced[3].abs() < 1e-12, "{forced:?}");
        assert_eq!(forced[5], f64::NEG_INFINITY);
    }

    #[test]
    fn a_sparse_graph_needs_only_the_exact_colluder_count() {
        // n = 100, δ = 10%, γ = 20% (c = 20): treating the 70 neighbours as
        // independent Bin(70, 0.2) draws would ask 2t − k ≥ 33 and force the
        // complete graph (99, 60); drawn from the 99 others holding 20
        // colluders, 2t − k ≥ 22 already meets 2^-40, and t = 46 still leaves
        // 2^-20 correctness.
        let chosen = choose_neighbour_parameters(&requirements(100, 0.1, 0.2, 40, 20)).unwrap();
        assert_eq!(
            (chosen.neighbour_count, chosen.reconstruction_threshold),
            (70, 46)
        );
        assert!(matches!(chosen.guarantee, Guarantee::Statistical { .. }));
        assert!(chosen.security_bits_achieved >= 40.0);
        assert!(chosen.correctness_bits_achieved >= 20.0);
        assert_eq!(chosen.tolerated_colluders, 20);
        let binomial = reference_tails(70, 0.2);
        assert!(100.0 * binomial[2 * 46 - 70] > 2f64.powi(-40));
        let exact = reference_hypergeometric_tails(99, 20, 70);
        assert!(100.0 * exact[2 * 46 - 70] <= 2f64.powi(-40));
        assert!(100.0 * exact[2 * 45 - 70] > 2f64.powi(-40));
    }

    /// Relative slack between the chooser's log-space arithmetic and the
    /// reference's linear sums: both are accurate to ~1e-12 relative, far
    /// inside this, and no real decision hinges on the ninth digit.
    const TOLERANCE: f64 = 1e-9;

    /// Every t in (k/2, k] of a sparse degree k meeting all three bounds, by
    /// brute force, with `colluders` the exact integer ceil(γ·n).
    fn sparse_thresholds_meeting_bounds(
        requirements: &GraphRequirements,
        k: usize,
        colluders: usize,
        strict: bool,
    ) -> Vec<usize> {
        let GraphRequirements {
            n_clients: n,
            dropout_rate,
            corrupt_fraction,
            security_bits,
            correctness_bits,
        } = *requirements;
        // `strict` demands the bound with the tolerance against the chooser
        // (for what it returned); otherwise with the tolerance in its favour
        // (for what it skipped).
        let slack = if strict {
            1.0 + TOLERANCE
        } else {
            1.0 - TOLERANCE
        };
        let security_target = 2f64.powi(-(security_bits as i32)) * slack;
        let correctness_target = 2f64.powi(-(correctness_bits as i32)) * slack;
        let n_f = n as f64;
        let disconnect = n_f * n_f / 2.0 * (dropout_rate + corrupt_fraction).powi(k as i32);
        let fits = |value: f64, target: f64| {
            if strict {
                value <= target
            } else {
                value < target
            }
        };
        if !fits(disconnect, security_target) {
            return Vec::new();
        }
        let corrupt = reference_hypergeometric_tails(n - 1, colluders.min(n - 1), k);
        let dropout = reference_tails(k, dropout_rate);
        ((k / 2 + 1)..=k)
            .filter(|&t| {
                fits(n_f * corrupt[2 * t - k], security_target)
                    && fits(n_f * corrupt[t], security_target)
                    && fits(n_f * dropout[k - t + 1], correctness_target)
            })
            .collect()
    }

    fn cohort_size() -> impl Strategy<Value = usize> {
        prop_oneof![4 => 2usize..=25, 2 => 26usize..=200, 1 => 201usize..2000]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        // The chooser's (k, t) meets every bound, recomputed by brute force; it
        // is the smallest sparse k that does, or the complete graph only when no
        // sparse k does; and it errs only when the complete graph has no t.
        #[test]
        fn chosen_parameters_meet_every_bound(
            n in cohort_size(),
            dropout_permille in 0usize..=450,
            corrupt_permille in 0usize..=450,
            security_bits in 20u32..=64,
            correctness_bits in 10u32..=40,
        ) {
            let dropout_rate = dropout_permille as f64 / 1000.0;
            let corrupt_fraction = corrupt_permille as f64 / 1000.0;
            let required = requirements(
                n, dropout_rate, corrupt_fraction, security_bits, correctness_bits,
            );
            let chosen = choose_neighbour_parameters(&required);
            // Exact integer versions of ceil(γ·n) and floor(δ·n).
            let colluders = (corrupt_permille * n).div_ceil(1000);
            let dropouts_needed = dropout_permille * n / 1000;
            let complete = n - 1;
            let sparse_works = |k: usize| {
                !sparse_thresholds_meeting_bounds(&required, k, colluders, false).is_empty()
            };
            let chosen_k = chosen.as_ref().map_or(complete, |chosen| chosen.neighbour_count);
            for smaller in (2..chosen_k.min(complete)).step_by(2) {
                prop_assert!(!sparse_works(smaller), "sparse k = {smaller} works but was skipped");
            }
            match chosen {
                Ok(chosen) if chosen.neighbour_count < complete => {
                    let k = chosen.neighbour_count;
                    prop_assert!(k % 2 == 0);
                    let valid = sparse_thresholds_meeting_bounds(&required, k, colluders, true);
                    prop_assert_eq!(valid.first().copied(), Some(chosen.reconstruction_threshold));
                    let statistical = matches!(chosen.guarantee, Guarantee::Statistical { .. });
                    prop_assert!(statistical);
                    prop_assert!(chosen.security_bits_achieved >= f64::from(security_bits));
                    prop_assert!(chosen.correctness_bits_achieved >= f64::from(correctness_bits));
                    prop_assert_eq!(chosen.tolerated_colluders, colluders);
                }
                Ok(chosen) => {
                    let (k, t) = (chosen.neighbour_count, chosen.reconstruction_threshold);
                    prop_assert!(2 * t > k + colluders, "split view open: t = {t}, c = {colluders}");
                    prop_assert!(t <= k);
                    prop_assert!(k - t >= dropouts_needed);
                    // The smallest such t: one less would open the split view or lose the majority.
                    prop_assert!(2 * (t - 1) <= k + colluders);
                    prop_assert_eq!(chosen.guarantee, Guarantee::Deterministic { colluders, dropouts: k - t });
                    prop_assert_eq!(chosen.tolerated_colluders, colluders);
                }
                Err(GraphError::CollusionUnachievable {
                    n_clients, colluders: reported_colluders, dropouts_needed: reported_dropouts, neighbour_count, max_threshold,
                }) => {
                    prop_assert_eq!(
                        (n_clients, reported_colluders, reported_dropouts, neighbour_count, max_threshold),
                        (n, colluders, dropouts_needed, complete, complete.saturating_sub(dropouts_needed))
                    );
                    let workable = ((complete / 2 + 1)..=complete)
                        .find(|&t| 2 * t > complete + colluders && complete - t >= dropouts_needed);
                    prop_assert_eq!(workable, None);
                }
                Err(other) => prop_assert!(false, "unexpected error {other}"),
            }
        }
    }
}
