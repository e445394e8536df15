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
    migrations: &[
        r"
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
    ",
        // Analysis jobs: a job's cursor may be at a release phase. SQLite cannot
        // change a CHECK in place, so the table is rebuilt (the migration runner
        // turns foreign keys off around migrations, so the rebuild does not
        // cascade into the tables that reference jobs, and checks them after).
        r"
        CREATE TABLE jobs_v2 (
            job_id             TEXT    PRIMARY KEY NOT NULL,
            descriptor         BLOB    NOT NULL,
            plan               BLOB    NOT NULL,
            state              TEXT    NOT NULL
                CHECK (state IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
            failure_reason     TEXT
                CHECK ((state = 'failed') = (failure_reason IS NOT NULL)),
            cursor_round       INTEGER NOT NULL CHECK (cursor_round >= 0),
            cursor_phase       TEXT    NOT NULL
                CHECK (cursor_phase IN ('feature-stats', 'train', 'evaluate', 'release')),
            model_version      INTEGER NOT NULL CHECK (model_version >= 0),
            feature_statistics BLOB,
            pending_train      BLOB,
            updated_at_unix_ms INTEGER NOT NULL
        ) STRICT;
        INSERT INTO jobs_v2 SELECT * FROM jobs;
        DROP VIEW round_checkpoints;
        DROP TABLE jobs;
        ALTER TABLE jobs_v2 RENAME TO jobs;
        CREATE VIEW round_checkpoints AS
            SELECT rounds.job_id, rounds.round, rounds.model_version,
                   model_checkpoints.parameters, rounds.record
            FROM rounds
            JOIN model_checkpoints USING (job_id, model_version);
    ",
    ],
};

#[cfg(test)]
mod tests {
    use veil_sqlite_db::{Migrated, Schema, open};

    use super::JOB_STORE_SCHEMA;

    /// A file written by the first schema: one running job with a model
    /// checkpoint and a completed round, which the rebuild of `jobs` must
    /// neither lose nor cascade into.
    fn first_version_file(path: &std::path::Path) {
        let first = Schema {
            migrations: &JOB_STORE_SCHEMA.migrations[..1],
            ..JOB_STORE_SCHEMA
        };
        let (connection, migrated) = open(path, &first).expect("version 1");
        assert_eq!(migrated.to_version, 1);
        connection
            .execute_batch(
                "INSERT INTO jobs VALUES ('job-1', x'00', x'01', 'running', NULL, 2, 'train', 1, NULL, NULL, 5);
                 INSERT INTO model_checkpoints VALUES ('job-1', 0, x'0000803f', 5);
                 INSERT INTO model_checkpoints VALUES ('job-1', 1, x'00000040', 6);
                 INSERT INTO rounds VALUES ('job-1', 1, 1, x'a0', 6);",
            )
            .expect("rows of version 1");
    }

    #[test]
    fn the_release_migration_keeps_every_job_checkpoint_and_round() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("coordinator.sqlite");
        first_version_file(&path);
        let (connection, migrated) = open(&path, &JOB_STORE_SCHEMA).expect("migrates");
        assert_eq!(
            migrated,
            Migrated {
                from_version: 1,
                to_version: 2
            }
        );
        let count = |table: &str| -> i64 {
            connection
                .query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
                    row.get(0)
                })
                .expect("count")
        };
        assert_eq!(count("jobs"), 1);
        assert_eq!(count("model_checkpoints"), 2, "no cascade from the rebuild");
        assert_eq!(count("rounds"), 1);
        assert_eq!(count("round_checkpoints"), 1, "the view is back");
        let foreign_keys: i64 = connection
            .query_row("PRAGMA foreign_keys", [], |row| row.get(0))
            .expect("pragma");
        assert_eq!(foreign_keys, 1, "foreign keys are on again");
        connection
            .execute(
                "UPDATE jobs SET cursor_phase = 'release' WHERE job_id = 'job-1'",
                [],
            )
            .expect("a release cursor is allowed now");
        let refused = connection.execute(
            "UPDATE jobs SET cursor_phase = 'dancing' WHERE job_id = 'job-1'",
            [],
        );
        assert!(refused.is_err(), "the CHECK still holds");
        let orphan = connection.execute("INSERT INTO rounds VALUES ('job-9', 1, 1, x'a0', 6)", []);
        assert!(orphan.is_err(), "foreign keys are enforced again");
    }
}
