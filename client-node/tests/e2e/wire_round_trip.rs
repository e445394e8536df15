//! The two directions of every wire conversion agree: what the coordinator
//! writes (`coordinator::convert`, `JobSpec::to_wire`) the node reads back
//! (`client_node::wire`, `JobSpec::from_wire`) unchanged, for random secure
//! tasks and random valid job files.

use std::sync::Arc;

use proptest::prelude::*;
use veil_federation::secure::{CohortMember, SecureStep, SecureTask};
use veil_job::JobSpec;
use veil_secure_aggregation::{NodeId, ProtocolParams};
use veil_wire::v1;

const STEPS: [SecureStep; 6] = [
    SecureStep::AdvertiseKeys,
    SecureStep::ShareKeys,
    SecureStep::MaskedInput,
    SecureStep::ConsistencyCheck,
    SecureStep::Unmask,
    SecureStep::ContinuationInput,
];

/// Valid protocol parameters: a cohort of 2–12 distinct nodes, a full or an even sparse graph,
/// and a threshold above half the neighbours.
fn protocol_params() -> impl Strategy<Value = ProtocolParams> {
    (2usize..=12, any::<[u8; 32]>(), 1u32..=32, 1usize..=5000)
        .prop_flat_map(|(size, seed, bits, length)| {
            let mut counts = vec![size - 1];
            counts.extend((2..size.saturating_sub(1)).filter(|k| k % 2 == 0));
            (
                Just((size, seed, bits, length)),
                proptest::sample::select(counts),
            )
        })
        .prop_flat_map(|((size, seed, bits, length), neighbours)| {
            let thresholds = (neighbours / 2 + 1)..=neighbours;
            (Just((size, seed, bits, length, neighbours)), thresholds)
        })
        .prop_map(|((size, seed, bits, length, neighbours), threshold)| {
            let cohort = (0..size)
                .map(|index| NodeId::new(format!("partner-{index:02}")).unwrap())
                .collect();
            ProtocolParams::new(cohort, seed, neighbours, threshold, bits, length).unwrap()
        })
}

fn secure_task() -> impl Strategy<Value = SecureTask> {
    (
        protocol_params(),
        proptest::sample::select(STEPS.to_vec()),
        1u32..10,
        proptest::collection::vec(any::<u8>(), 0..200),
        any::<[u8; 32]>(),
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(params, step, attempt, payload, key, certificate)| {
            let members = params
                .cohort()
                .iter()
                .map(|node| CohortMember {
                    node: node.as_str().to_owned(),
                    identity_key: key,
                    certificate_der: Arc::new(certificate.clone()),
                })
                .collect();
            SecureTask {
                step,
                attempt,
                params: Arc::new(params),
                members: Arc::new(members),
                payload: Arc::new(payload),
            }
        })
}

fn standard_wire_spec() -> v1::JobSpec {
    veil_job::standard_job("2024-10-02", 90).to_wire()
}

proptest! {
    #[test]
    fn secure_tasks_read_back_as_the_coordinator_wrote_them(task in secure_task()) {
        let wire = v1::Task {
            job_id: "job-1".to_owned(),
            round: 3,
            phase: v1::Phase::Train as i32,
            spec: Some(standard_wire_spec()),
            secure: Some(coordinator::convert::secure_task_to_wire(&task)),
            ..Default::default()
        };
        let read = client_node::wire::task_from_wire(&wire).unwrap();
        let secure = read.secure.expect("the secure part survives");
        let params = &task.params;
        prop_assert_eq!(secure.step, task.step);
        prop_assert_eq!(secure.attempt, task.attempt);
        let cohort: Vec<&str> = params.cohort().iter().map(NodeId::as_str).collect();
        prop_assert_eq!(secure.cohort.iter().map(String::as_str).collect::<Vec<_>>(), cohort);
        prop_assert_eq!(&secure.graph_seed, params.graph_seed());
        prop_assert_eq!(secure.neighbour_count, params.neighbour_count());
        prop_assert_eq!(secure.reconstruction_threshold, params.reconstruction_threshold());
        prop_assert_eq!(secure.modulus_bits, params.modulus_bits());
        prop_assert_eq!(secure.vector_length, params.vector_length());
        prop_assert_eq!(secure.members.len(), task.members.len());
        for (read, written) in secure.members.iter().zip(task.members.iter()) {
            prop_assert_eq!(&read.node_id, &written.node);
            prop_assert_eq!(&read.claimed_key[..], &written.identity_key[..]);
            prop_assert_eq!(&read.certificate_der, written.certificate_der.as_ref());
        }
        prop_assert_eq!(&secure.payload, task.payload.as_ref());
        prop_assert_eq!(read.round, 3);
        prop_assert_eq!(read.phase, veil_federation::Phase::Train);
    }

    #[test]
    fn job_specs_survive_the_wire_both_ways(
        rounds in 1u32..40,
        participants in (1u32..6, 0u32..4),
        holdout in proptest::option::of(0.0f64..0.9),
        seed in any::<u64>(),
        hidden in proptest::collection::vec(1u32..200, 0..3),
        mode in proptest::sample::select(vec!["secure", "plain"]),
        customers in proptest::sample::select(vec!["dp-sgd", "off"]),
        train_secs in 1.0f64..1000.0,
        wait_for_nodes in proptest::option::of(1.0f64..1000.0),
    ) {
        let mut file = veil_job::standard_job("2024-10-02", 90);
        file.rounds = rounds;
        // Secure aggregation needs a cohort of at least three.
        let min_participants = if mode == "secure" { participants.0.max(3) } else { participants.0 };
        file.min_participants = min_participants;
        file.max_participants = min_participants + participants.1;
        file.holdout_fraction = holdout;
        file.seed = seed;
        if hidden.is_empty() {
            file.model_mut().kind = "logistic_regression".to_owned();
        }
        file.model_mut().hidden = hidden;
        file.aggregation.mode = Some(mode.to_owned());
        file.privacy.customers = Some(customers.to_owned());
        file.privacy.customer_epsilon = Some(1000.0);
        file.timeouts.train_secs = Some(train_secs);
        file.timeouts.wait_for_nodes_secs = wait_for_nodes;
        let written = file.to_wire();
        let spec = JobSpec::from_wire(&written)
            .map_err(|error| TestCaseError::fail(error.to_string()))?;
        let rewritten = spec.to_wire();
        let reread = JobSpec::from_wire(&rewritten).unwrap();
        prop_assert_eq!(&reread, &spec);
        prop_assert_eq!(reread.to_wire(), rewritten);
    }
}
