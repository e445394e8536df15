//! The coordinator's durable job state: every job's latest
//! [`JobSnapshot`](veil_federation::JobSnapshot) and a checkpoint of each
//! version of its global model, in one SQLite file, so that a coordinator
//! killed at any point resumes every job from its last committed phase.
//!
//! [`SqliteJobStore`] implements the engine's
//! [`JobStore`](veil_federation::store::JobStore): the coordinator calls
//! `save` with the engine's snapshot after each committed transition and, on
//! start-up, hands `load_all` to
//! [`Engine::restore`](veil_federation::Engine::restore). The job descriptor
//! is opaque here and stored through the caller's [`DescriptorCodec`].
//!
//! # Schema (version 1)
//!
//! The file is opened by `veil-sqlite-db` (WAL, `synchronous = FULL`, foreign
//! keys, `application_id` "VJOB", forward-only migrations by `user_version`).
//!
//! | table | key | holds |
//! | --- | --- | --- |
//! | `jobs` | `job_id` | descriptor (caller's codec), plan (CBOR), `state` and `failure_reason`, `cursor_round` and `cursor_phase`, `model_version`, feature statistics (f64 LE blob), pending training record (CBOR), `updated_at_unix_ms` |
//! | `optimizer_states` | `job_id` | server optimiser state (CBOR; FedAdam moments) |
//! | `model_checkpoints` | `job_id, model_version` | the global model (f32 LE blob), one row per version ever committed |
//! | `rounds` | `job_id, round` | each completed round's record (CBOR) and the model version it ended with |
//! | view `round_checkpoints` | | `rounds` joined with the model each round produced |
//!
//! A snapshot is the `jobs` row, its optimiser state, the checkpoint at
//! `jobs.model_version` and its `rounds` in order. Every committed model
//! version stays, so each round's model can be read back
//! ([`SqliteJobStore::model_checkpoint`]); a model of 10^6 parameters costs
//! 4 MB per round.
//!
//! # Transactions and crashes
//!
//! Each `save` is one `BEGIN IMMEDIATE … COMMIT`: the job row, the optimiser
//! state, the new checkpoint, and the round records, with checkpoints and
//! rounds the snapshot no longer has removed. SQLite's WAL makes the commit
//! atomic and `synchronous = FULL` makes it durable before `save` returns.
//! Killed before the commit record reaches the WAL, the file holds the
//! previous snapshot, whole; killed after, the new one. `load_all` reads in
//! one read transaction, so it never sees half a save either.
//!
//! Encoding happens before the write lock is taken; blobs that did not
//! change (the model, two saves in three) are compared, not rewritten, and an
//! optimiser state equal to the last committed one is not even re-encoded.
//!
//! What this crate does *not* do: it decides nothing about when to save (the
//! coordinator saves at each engine event), keeps no privacy ledger
//! (`veil-privacy-ledger`) and no audit log (`veil-audit-log`), and does not open files
//! itself (`veil-sqlite-db`). `docs/coordinator-state.md` also says how the
//! schema maps onto PostgreSQL for operators who need high availability.

mod codec;
mod encoding;
mod error;
mod schema;
mod store;

pub use codec::{DescriptorCodec, DescriptorDecodeError};
pub use error::JobStoreError;
pub use store::SqliteJobStore;
pub use veil_sqlite_db::Migrated;
