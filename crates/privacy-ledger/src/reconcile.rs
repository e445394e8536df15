//! Comparing the coordinator's copy of a partner's charges with the node's
//! own copy, key by key.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::charge::{Charge, ChargeKey};

/// The same key priced differently on the two sides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mismatch {
    /// The contested key.
    pub key: ChargeKey,
    /// The coordinator's charge.
    pub coordinator: Charge,
    /// The node's charge.
    pub node: Charge,
}

/// Where two ledgers disagree. Empty lists mean they agree.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReconcileReport {
    /// Charges the coordinator holds and the node does not.
    pub missing_on_node: Vec<Charge>,
    /// Charges the node holds and the coordinator does not.
    pub missing_on_coordinator: Vec<Charge>,
    /// Keys both hold with different charges.
    pub mismatched: Vec<Mismatch>,
}

impl ReconcileReport {
    /// Whether the two ledgers agree on every key.
    pub fn is_consistent(&self) -> bool {
        self.missing_on_node.is_empty()
            && self.missing_on_coordinator.is_empty()
            && self.mismatched.is_empty()
    }
}

fn by_key(charges: &[Charge]) -> BTreeMap<ChargeKey, &Charge> {
    charges
        .iter()
        .map(|charge| (charge.key(), charge))
        .collect()
}

/// Compares two ledgers by key. Pass the coordinator's charges for the
/// node's partner only (`SqliteLedger::charges_for_partner`), or every other
/// partner's charges show up as missing on the node. Time stamps differ
/// between sides by design and are not compared (see
/// [`Charge::same_charge_as`]).
pub fn reconcile(coordinator_charges: &[Charge], node_charges: &[Charge]) -> ReconcileReport {
    let coordinator = by_key(coordinator_charges);
    let node = by_key(node_charges);
    let mut report = ReconcileReport::default();
    for (key, coordinator_charge) in &coordinator {
        match node.get(key) {
            None => report.missing_on_node.push((*coordinator_charge).clone()),
            Some(node_charge) if !coordinator_charge.same_charge_as(node_charge) => {
                report.mismatched.push(Mismatch {
                    key: key.clone(),
                    coordinator: (*coordinator_charge).clone(),
                    node: (*node_charge).clone(),
                });
            }
            Some(_) => {}
        }
    }
    report.missing_on_coordinator = node
        .iter()
        .filter(|(key, _)| !coordinator.contains_key(key))
        .map(|(_, charge)| (*charge).clone())
        .collect();
    report
}
