//! The job store's SQLite schema: its identity and forward-only migrations.
//!
//! Queryable facts (state, cursor, versions, round numbers) are columns so an
//! operator can inspect a file with the `sqlite3` shell; engine structures
//! (plan, round records, optimiser state) are CBOR; vectors of model size are
//! raw little-endian blobs.

use veil_sqlite_db::Schema;

/// The job store's schema. Append migrations; never edit a published one.
pub(crate) const JOB_STORE_SCHEMA: Schema = Schema {
    component: "coordinator job store",
    // "VJOB": marks the file as a Veil coordinator job store.
    application_id: 0x564a_4f42,
    migrations: &[r"
        -- One row per job: the latest committed snapshot, less the vectors of
        -- model size, which live in their own tables so that a save whose
        -- model did not change does not rewrite it.
        CREATE TABLE jobs (
            job_id             TEXT    PRIMARY KEY NOT NULL,
            -- The caller's descriptor, in the caller's codec.
            descriptor         BLOB    NOT NULL,
            -- veil_federation::JobPlan, CBOR.
            plan               BLOB    NOT NULL,
            state              TEXT    NOT NULL
                CHECK (state IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
            failure_reason     TEXT
                CHECK ((state = 'failed') = (failure_reason IS NOT NULL)),
            cursor_round       INTEGER NOT NULL CHECK (cursor_round >= 0),
            cursor_phase       TEXT    NOT NULL
                CHECK (cursor_phase IN ('feature-stats', 'train', 'evaluate')),
            -- The global model is model_checkpoints(job_id, model_version).
            model_version      INTEGER NOT NULL CHECK (model_version >= 0),
            -- Summed feature statistics, f64 little-endian; NULL before round 0 completes.
            feature_statistics BLOB,
            -- Training sums of the current round (veil_federation::RoundRecord, CBOR),
            -- kept between its training and evaluation phases.
            pending_train      BLOB,
            updated_at_unix_ms INTEGER NOT NULL
        ) STRICT;

        -- Server optimiser state (FedAdam moments are two f64 vectors of model size).
        CREATE TABLE optimizer_states (
            job_id             TEXT    PRIMARY KEY NOT NULL
                REFERENCES jobs (job_id) ON DELETE CASCADE,
            -- veil_federation::ServerOptimizer, CBOR.
            state              BLOB    NOT NULL
        ) STRICT;

        -- Every committed version of each job's global model: version 0 is the
        -- initial model, version v the model after the v-th aggregation.
        CREATE TABLE model_checkpoints (
            job_id             TEXT    NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
            model_version      INTEGER NOT NULL CHECK (model_version >= 0),
            -- f32 little-endian.
            parameters         BLOB    NOT NULL,
            saved_at_unix_ms   INTEGER NOT NULL,
            PRIMARY KEY (job_id, model_version)
        ) STRICT;

        -- Completed rounds, in order; the history of the snapshot.
        CREATE TABLE rounds (
            job_id             TEXT    NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
            round              INTEGER NOT NULL CHECK (round >= 0),
            -- The global model version the round ended with (what it evaluated).
            model_version      INTEGER NOT NULL CHECK (model_version >= 0),
            -- veil_federation::RoundRecord, CBOR.
            record             BLOB    NOT NULL,
            saved_at_unix_ms   INTEGER NOT NULL,
            PRIMARY KEY (job_id, round)
        ) STRICT;

        -- Each completed round with the model it produced.
        CREATE VIEW round_checkpoints AS
            SELECT rounds.job_id, rounds.round, rounds.model_version,
                   model_checkpoints.parameters, rounds.record
            FROM rounds
            JOIN model_checkpoints USING (job_id, model_version);
    "],
};
