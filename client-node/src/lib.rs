//! The partner side of Veil: a node that dials out to the coordinator,
//! prepares behaviour features from the partner's own transaction log,
//! trains locally and sends back only model deltas and additive statistics.
//! It also scores the partner's customers with an exported model.
//!
//! Raw customer ids never leave this crate's process: they are used only to
//! group transactions, to split the local holdout, and to label the local
//! score file. What this crate does *not* do: feature formulas
//! (`veil-behaviour-features`), training (`veil-models`), the node's decisions about
//! what may leave (`veil-node-protocol`'s state machine), round decisions
//! (the coordinator's engine).

pub mod analysis;
pub mod basket;
pub mod config;
pub mod data;
pub mod identity;
pub mod lifetime;
pub mod local;
pub mod memory_store;
pub mod node;
pub mod policy;
pub mod receipts;
pub mod score;
mod transport;
pub mod wire;
