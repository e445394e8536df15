//! The SQLite job store against the engine: every snapshot a job goes
//! through reads back equal, saves replace, checkpoints accumulate, a failed
//! save leaves the previous snapshot, and damaged rows are named errors.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{
    FEDADAM, Federation, NameCodec, TestJob, engine_config, model, plan, round_record,
    synthetic_snapshot,
};
use veil_federation::store::{JobStore, MemoryStore};
use veil_federation::{
    AggregationMode, Engine, JobSnapshot, JobState, PartnerPrivacy, Phase, SecureSettings, Strategy,
};
use veil_job_store::{JobStoreError, Migrated, SqliteJobStore};
use veil_sqlite_db::rusqlite::Connection;

fn temporary_store() -> (tempfile::TempDir, PathBuf, SqliteJobStore<TestJob>) {
    let directory = tempfile::tempdir().unwrap_or_else(|error| panic!("tempdir: {error}"));
    let path = directory.path().join("coordinator.sqlite");
    let store = open(&path);
    (directory, path, store)
}

fn open(path: &Path) -> SqliteJobStore<TestJob> {
    SqliteJobStore::open(path, NameCodec).unwrap_or_else(|error| panic!("open: {error}"))
}

fn load(store: &SqliteJobStore<TestJob>) -> Vec<JobSnapshot<TestJob>> {
    store
        .load_all()
        .unwrap_or_else(|error| panic!("load_all: {error}"))
}

fn save(store: &mut SqliteJobStore<TestJob>, snapshot: &JobSnapshot<TestJob>) {
    store
        .save(snapshot)
        .unwrap_or_else(|error| panic!("save {}: {error}", snapshot.id));
}

/// A raw connection for the tests that tamper with the file.
fn raw(path: &Path) -> Connection {
    Connection::open(path).unwrap_or_else(|error| panic!("raw open: {error}"))
}

fn execute(path: &Path, sql: &str) {
    raw(path)
        .execute_batch(sql)
        .unwrap_or_else(|error| panic!("{sql}: {error}"));
}

/// Where a snapshot is in the job's life, to check that every phase was seen.
fn position(snapshot: &JobSnapshot<TestJob>) -> String {
    match &snapshot.state {
        JobState::Running => format!("running {:?}", snapshot.cursor),
        other => format!("{other:?}"),
    }
}

#[test]
fn every_snapshot_a_job_goes_through_reads_back_equal() {
    let (_directory, _path, mut store) = temporary_store();
    let mut memory = MemoryStore::new();
    let mut positions = BTreeSet::new();
    let mut saw_pending_train = false;
    let mut saves = 0;
    let mut commit = |snapshot: JobSnapshot<TestJob>| {
        save(&mut store, &snapshot);
        memory
            .save(&snapshot)
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(
            load(&store),
            vec![snapshot.clone()],
            "after saving {}",
            position(&snapshot)
        );
        // A finished job's history is read back alone too (the engine
        // releases it once stored), from either store.
        let rounds =
            JobStore::rounds(&store, &snapshot.id).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(rounds, snapshot.history);
        assert_eq!(
            memory.rounds(&snapshot.id).unwrap_or_default(),
            snapshot.history
        );
        positions.insert(position(&snapshot));
        saw_pending_train |= snapshot.pending_train.is_some();
        saves += 1;
    };
    let mut federation = Federation::new(Engine::new(engine_config()), 3);
    let job = federation.start(plan(16, 3, 3, FEDADAM), "fedadam job", &mut commit);
    assert_eq!(federation.run(&job, 100, &mut commit), JobState::Succeeded);
    for expected in [
        "Pending",
        "running (0, FeatureStats)",
        "running (1, Train)",
        "running (1, Evaluate)",
        "running (3, Evaluate)",
        "Succeeded",
    ] {
        assert!(
            positions.contains(expected),
            "no snapshot at {expected}: {positions:?}"
        );
    }
    assert!(
        saw_pending_train,
        "no snapshot between a round's two phases"
    );
    assert!(saves > 10);
    // The SQLite store agrees with the in-memory one the engine was built with.
    assert_eq!(load(&store), memory.load_all().unwrap_or_default());
    assert!(
        JobStore::rounds(&store, "job-unknown")
            .unwrap_or_else(|error| panic!("{error}"))
            .is_empty()
    );
}

#[test]
fn failed_cancelled_and_secure_jobs_read_back_equal() {
    let (_directory, _path, mut store) = temporary_store();
    let mut commit = |snapshot: JobSnapshot<TestJob>| save(&mut store, &snapshot);
    // One of three nodes replies to a job that needs two: the feature phase
    // fails once its attempts are used up.
    let mut federation = Federation::new(Engine::new(engine_config()), 3);
    federation.honest = 1;
    let failed = federation.start(plan(4, 2, 2, Strategy::FedAvg), "starved", &mut commit);
    let state = federation.run(&failed, 100, &mut commit);
    assert!(matches!(state, JobState::Failed { .. }), "{state:?}");
    let mut central_plan = plan(4, 2, 2, Strategy::FedProx { proximal_mu: 0.01 });
    central_plan.partner_privacy = PartnerPrivacy::Central {
        noise_multiplier: 0.8,
        clip_norm: 1.5,
        max_weight: 200.0,
    };
    let cancelled = federation.start(central_plan, "cancelled", &mut commit);
    federation
        .engine
        .cancel_job(&cancelled, federation.now)
        .unwrap_or_else(|error| panic!("{error}"));
    federation.commit_events(&mut commit);
    let mut secure_plan = plan(4, 2, 3, Strategy::FedAvg);
    secure_plan.aggregation = AggregationMode::Secure(SecureSettings {
        clip_range: 0.5,
        modulus_bits: 24,
        max_weight: 1000.0,
        dropout_rate: 0.1,
        step_timeout: Duration::from_millis(2500),
        graph_seed: [7; 32],
        collusion_fraction: 0.2,
        security_bits: 40,
    });
    secure_plan.partner_privacy = PartnerPrivacy::Distributed {
        noise_multiplier: 1.1,
        clip_norm: 0.5,
    };
    let secure = federation
        .engine
        .submit_job(
            secure_plan,
            TestJob {
                name: "secure".to_owned(),
            },
            model(4, 0),
            federation.now,
        )
        .unwrap_or_else(|error| panic!("{error}"));
    federation.commit_events(&mut commit);
    let expected: Vec<_> = [&failed, &cancelled, &secure]
        .into_iter()
        .map(|job| {
            federation
                .engine
                .snapshot(job)
                .unwrap_or_else(|error| panic!("{error}"))
        })
        .collect();
    assert_eq!(load(&store), expected);
    assert!(matches!(expected[0].state, JobState::Failed { .. }));
    assert_eq!(expected[1].state, JobState::Cancelled);
    assert_eq!(expected[2].state, JobState::Pending);
}

#[test]
fn sums_that_overflowed_to_infinity_read_back() {
    let (_directory, _path, mut store) = temporary_store();
    let mut snapshot = synthetic_snapshot("job-1", 8, 2);
    snapshot.history[1].train_weight = f64::INFINITY;
    snapshot.history[1].evaluate_statistics = vec![f64::NEG_INFINITY, -0.0];
    snapshot.feature_statistics = Some(Arc::new(vec![f64::INFINITY, 1e-310]));
    save(&mut store, &snapshot);
    assert_eq!(load(&store), vec![snapshot]);
}

#[test]
fn saves_replace_the_snapshot_and_keep_every_model_checkpoint() {
    let (_directory, _path, mut store) = temporary_store();
    for completed in 0..=5 {
        save(&mut store, &synthetic_snapshot("job-7", 32, completed));
    }
    let other = synthetic_snapshot("job-8", 16, 1);
    save(&mut store, &other);
    assert_eq!(
        load(&store),
        vec![synthetic_snapshot("job-7", 32, 5), other.clone()]
    );
    let versions = store.model_versions("job-7").unwrap_or_default();
    assert_eq!(versions, vec![0, 1, 2, 3, 4, 5]);
    for version in versions {
        let checkpoint = store.model_checkpoint("job-7", version).unwrap_or_default();
        assert_eq!(
            checkpoint,
            Some(model(32, version)),
            "model version {version}"
        );
    }
    assert_eq!(store.model_checkpoint("job-7", 6).unwrap_or_default(), None);

    // Saving an earlier snapshot (a reused id, a rewound job) replaces the
    // stored one exactly: later rounds and model versions go with it.
    let rewound = synthetic_snapshot("job-7", 32, 2);
    save(&mut store, &rewound);
    assert_eq!(load(&store), vec![rewound, other]);
    assert_eq!(
        store.model_versions("job-7").unwrap_or_default(),
        vec![0, 1, 2]
    );

    // The same version saved with a different model overwrites the checkpoint.
    let mut changed = synthetic_snapshot("job-7", 32, 2);
    changed.global = Arc::new(vec![9.0; 32]);
    save(&mut store, &changed);
    assert_eq!(
        store.model_checkpoint("job-7", 2).unwrap_or_default(),
        Some(vec![9.0; 32])
    );
    assert_eq!(load(&store)[0], changed);
}

#[test]
fn a_reopened_store_resumes_the_job_to_the_result_of_an_uninterrupted_run() {
    let job_plan = plan(12, 4, 3, FEDADAM);
    let mut uninterrupted = Federation::new(Engine::new(engine_config()), 3);
    let mut ignore = |_: JobSnapshot<TestJob>| {};
    let job = uninterrupted.start(job_plan.clone(), "resumed", &mut ignore);
    assert_eq!(
        uninterrupted.run(&job, 100, &mut ignore),
        JobState::Succeeded
    );
    let expected = uninterrupted
        .engine
        .snapshot(&job)
        .unwrap_or_else(|error| panic!("{error}"));

    let (_directory, path, mut store) = temporary_store();
    let mut first = Federation::new(Engine::new(engine_config()), 3);
    let mut commit = |snapshot: JobSnapshot<TestJob>| save(&mut store, &snapshot);
    let job = first.start(job_plan, "resumed", &mut commit);
    // Run until two rounds are committed, then "crash": drop everything.
    for _ in 0..100 {
        if first
            .engine
            .status(&job)
            .map(|status| status.completed_rounds)
            .unwrap_or(0)
            >= 2
        {
            break;
        }
        first.tick(&mut commit);
    }
    drop(first);
    drop(store);

    let store = open(&path);
    assert_eq!(
        store.migrated(),
        Migrated {
            from_version: 2,
            to_version: 2
        }
    );
    let snapshots = load(&store);
    assert_eq!(snapshots.len(), 1);
    assert_eq!(snapshots[0].history.len(), 2);
    let mut second = Federation::new(Engine::restore(engine_config(), snapshots), 3);
    let mut ignore = |_: JobSnapshot<TestJob>| {};
    assert_eq!(second.run(&job, 100, &mut ignore), JobState::Succeeded);
    let resumed = second
        .engine
        .snapshot(&job)
        .unwrap_or_else(|error| panic!("{error}"));
    // Same replies, same order of aggregation: the same model and history,
    // bit for bit, whether or not the coordinator restarted.
    assert_eq!(resumed, expected);
}

#[test]
fn a_new_or_empty_file_is_migrated_from_version_zero() {
    let directory = tempfile::tempdir().unwrap_or_else(|error| panic!("tempdir: {error}"));
    let fresh = directory.path().join("fresh.sqlite");
    let store = open(&fresh);
    assert_eq!(
        store.migrated(),
        Migrated {
            from_version: 0,
            to_version: 2
        }
    );
    assert_eq!(load(&store), Vec::new());
    let empty = directory.path().join("empty.sqlite");
    std::fs::write(&empty, b"").unwrap_or_else(|error| panic!("{error}"));
    let store = open(&empty);
    assert_eq!(
        store.migrated(),
        Migrated {
            from_version: 0,
            to_version: 2
        }
    );
    assert_eq!(load(&store), Vec::new());
}

#[test]
fn a_save_that_fails_half_way_leaves_the_previous_snapshot() {
    let (_directory, path, mut store) = temporary_store();
    for completed in 0..=3 {
        save(&mut store, &synthetic_snapshot("job-3", 64, completed));
    }
    let before = synthetic_snapshot("job-3", 64, 3);
    // The job row, optimiser state and checkpoint are written before the
    // round records; refusing round 4 fails the save after all of those.
    execute(
        &path,
        "CREATE TRIGGER refuse_round_4 BEFORE INSERT ON rounds WHEN NEW.round = 4
         BEGIN SELECT RAISE(ABORT, 'simulated failure'); END;",
    );
    let error = store
        .save(&synthetic_snapshot("job-3", 64, 4))
        .err()
        .map(|error| error.message)
        .unwrap_or_default();
    assert!(
        error.contains("saving job 'job-3': writing a round record"),
        "{error}"
    );
    assert!(error.contains("simulated failure"), "{error}");
    assert_eq!(load(&store), vec![before.clone()]);
    assert_eq!(
        store.model_versions("job-3").unwrap_or_default(),
        vec![0, 1, 2, 3]
    );

    // A writer that dies with its transaction open leaves nothing either.
    {
        let writer = raw(&path);
        writer
            .execute_batch(
                "BEGIN IMMEDIATE;
                 UPDATE jobs SET state = 'cancelled', model_version = 99;
                 DELETE FROM rounds;",
            )
            .unwrap_or_else(|error| panic!("{error}"));
    }
    assert_eq!(load(&store), vec![before]);
}

#[test]
fn a_history_out_of_round_order_is_refused_before_writing() {
    let (_directory, _path, mut store) = temporary_store();
    let mut snapshot = synthetic_snapshot("job-2", 4, 3);
    snapshot.history.swap(1, 2);
    match store.save_snapshot(&snapshot) {
        Err(JobStoreError::InvalidSnapshot { job, reason }) => {
            assert_eq!(job, "job-2");
            assert!(reason.contains("round 2 after round 3"), "{reason}");
        }
        other => panic!("expected InvalidSnapshot, got {other:?}"),
    }
    assert_eq!(load(&store), Vec::new());
}

/// Damages the stored `job-5` with `sql` and checks that loading fails with
/// an error naming the job and containing `expected`.
fn check_corruption(sql: &str, expected: &str) {
    let (_directory, path, mut store) = temporary_store();
    let mut snapshot = synthetic_snapshot("job-5", 8, 2);
    snapshot.pending_train = Some(round_record(3));
    snapshot.cursor = (3, Phase::Evaluate);
    save(&mut store, &snapshot);
    save(&mut store, &synthetic_snapshot("job-6", 8, 1));
    execute(
        &path,
        &format!("PRAGMA ignore_check_constraints = ON; {sql}"),
    );
    let message = store
        .load_all()
        .err()
        .map(|error| error.message)
        .unwrap_or_default();
    assert!(message.contains("job 'job-5'"), "{sql}: {message}");
    assert!(message.contains(expected), "{sql}: {message}");
}

#[test]
fn damaged_rows_are_errors_naming_the_job_and_the_part() {
    let job = "WHERE job_id = 'job-5'";
    let cases = [
        (format!("UPDATE jobs SET plan = x'ff00' {job}"), "plan"),
        (
            format!("UPDATE jobs SET descriptor = x'c328' {job}"),
            "descriptor",
        ),
        (
            format!("UPDATE jobs SET state = 'paused' {job}"),
            "unknown state 'paused'",
        ),
        (
            format!("UPDATE jobs SET failure_reason = 'x' {job}"),
            "state 'running' with a failure reason",
        ),
        (
            format!("UPDATE jobs SET cursor_phase = 'rest' {job}"),
            "cursor phase 'rest'",
        ),
        (
            format!("UPDATE jobs SET cursor_round = -1 {job}"),
            "cursor round -1",
        ),
        (
            format!("UPDATE jobs SET model_version = 7 {job}"),
            "no checkpoint of its model version 7",
        ),
        (
            format!("UPDATE jobs SET feature_statistics = x'0102' {job}"),
            "feature statistics",
        ),
        (
            format!("UPDATE jobs SET pending_train = x'a1' {job}"),
            "pending training record",
        ),
        (
            format!("DELETE FROM optimizer_states {job}"),
            "no optimiser state",
        ),
        (
            format!("UPDATE optimizer_states SET state = x'00' {job}"),
            "optimiser state",
        ),
        (
            format!("UPDATE model_checkpoints SET parameters = substr(parameters, 1, 30) {job}"),
            "not a whole number of f32s",
        ),
        (
            format!("UPDATE model_checkpoints SET parameters = x'0000803f' {job}"),
            "has 1 parameters, its plan says 8",
        ),
        (
            format!("UPDATE rounds SET record = x'ff' {job} AND round = 2"),
            "round 2",
        ),
        (
            format!("UPDATE rounds SET round = 9 {job} AND round = 2"),
            "the record stored as round 9 is for round 2",
        ),
    ];
    for (sql, expected) in cases {
        check_corruption(&sql, expected);
    }
}

#[test]
fn a_file_of_another_component_is_refused() {
    let directory = tempfile::tempdir().unwrap_or_else(|error| panic!("tempdir: {error}"));
    let path = directory.path().join("ledger.sqlite");
    execute(
        &path,
        "PRAGMA application_id = 1447838791; CREATE TABLE charges (x);",
    );
    match SqliteJobStore::<TestJob>::open(&path, NameCodec) {
        Err(JobStoreError::Open(error)) => {
            assert!(
                error
                    .to_string()
                    .contains("not a coordinator job store database"),
                "{error}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}
