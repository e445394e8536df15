//! The partner node's protocol decisions as a sans-IO state machine
//! ([`NodeMachine`]): for every task the coordinator hands out it checks the
//! job against the pinned spec and the partner's policy, authenticates the
//! cohort from certificates, recomputes the secure-aggregation parameters,
//! enforces one release per phase, and says which durable records (charges,
//! releases, the stored reply) must be written before anything leaves.
//!
//! What it does *not* do: no IO and no clock (`now` and the ledger's charges
//! are passed in; `client-node` writes the records, talks gRPC and trains);
//! no training or evaluation (`veil-models`, called by `client-node`); the
//! coordinator's side of rounds lives in `veil-federation`'s engine.

pub mod machine;
pub mod memory;
pub mod policy;
pub mod task;
pub mod trust;

pub use machine::{Decision, MachineIdentity, NodeMachine, Outgoing};
pub use memory::{NodeMemory, PhaseKey, Record};
pub use policy::{NodePolicy, PolicyRefusal};
pub use task::{MemberCredential, NodeTask, PhaseReply, SecureRequest};
pub use trust::{CohortRefusal, PeerTrust, RememberedCredentials};
