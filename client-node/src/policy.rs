//! The partner's policy: defined (and enforced) by the node's state machine
//! in `veil-node-protocol`; re-exported here for the node's configuration.

pub use veil_node_protocol::NodePolicy;
