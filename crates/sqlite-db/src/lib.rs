//! Opening a SQLite file the way every durable Veil store needs it, and
//! bringing its schema up to date with forward-only migrations.
//!
//! [`open`] sets write-ahead logging, `synchronous = FULL` (a committed
//! transaction survives power loss, not only a crash of the process), a busy
//! timeout (a second process waits instead of failing at once) and foreign
//! keys, then runs the component's [`Schema`] migrations. A database written
//! by a newer Veil, or by another component, is refused with a clear error
//! rather than misread.
//!
//! This crate knows no tables: each component (the privacy ledger, job
//! stores) owns its schema and queries. It does not pool connections.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

pub use rusqlite;

/// How long a connection waits for another writer's lock before giving up.
/// Ledger writes are single small transactions, so seconds of contention mean
/// something is wrong, and failing then is better than hanging a round.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema of one component: an identifier stamped into the file's
/// `application_id`, and its migrations in order. Migration `i` (0-based)
/// takes the database from `user_version = i` to `i + 1`; published
/// migrations are never edited, only appended to.
#[derive(Debug, Clone, Copy)]
pub struct Schema {
    /// Human-readable component name, used in errors.
    pub component: &'static str,
    /// Stamped into SQLite's `application_id` header field so one component
    /// never opens another's file. Must not be zero (zero means "unset").
    pub application_id: i32,
    /// SQL batches, applied in order, each in its own transaction.
    pub migrations: &'static [&'static str],
}

/// What [`open`] did to the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    /// `user_version` found on opening.
    pub from_version: u32,
    /// `user_version` now (the number of migrations of the schema).
    pub to_version: u32,
}

/// Why a database could not be opened or migrated.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite refused an operation.
    #[error("sqlite error on {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// SQLite's own error.
        #[source]
        source: rusqlite::Error,
    },
    /// The file's schema is newer than this program knows: it was written by
    /// a newer Veil. Downgrading could misread or corrupt it.
    #[error(
        "{path} has {component} schema version {found}, newer than the {supported} this program knows; upgrade Veil"
    )]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// Component whose schema was expected.
        component: &'static str,
        /// `user_version` in the file.
        found: u32,
        /// Migrations this program has.
        supported: u32,
    },
    /// The file belongs to another component (or another program).
    #[error("{path} is not a {component} database (application_id {found}, expected {expected})")]
    WrongApplication {
        /// The database file.
        path: PathBuf,
        /// Component whose schema was expected.
        component: &'static str,
        /// `application_id` in the file.
        found: i32,
        /// The schema's `application_id`.
        expected: i32,
    },
    /// The file system refused write-ahead logging (for example a network
    /// file system), so the durability this crate promises is unavailable.
    #[error("{path} could not be switched to WAL mode (journal_mode is {mode})")]
    NoWal {
        /// The database file.
        path: PathBuf,
        /// The journal mode SQLite kept.
        mode: String,
    },
    /// A schema with `application_id` 0, which SQLite uses for "unset".
    #[error("schema {0} has application_id 0, which means unset")]
    InvalidSchema(&'static str),
}

/// The most memory SQLite's page cache takes per connection, in KiB.
pub const PAGE_CACHE_KIB: i64 = 512;

/// Opens (creating if needed) the database at `path` with durable settings
/// and brings it to the latest version of `schema`.
pub fn open(path: &Path, schema: &Schema) -> Result<(Connection, Migrated), DbError> {
    if schema.application_id == 0 {
        return Err(DbError::InvalidSchema(schema.component));
    }
    let sqlite = |source| DbError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let mut connection = Connection::open(path).map_err(sqlite)?;
    connection.busy_timeout(BUSY_TIMEOUT).map_err(sqlite)?;
    let mode: String = connection
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(sqlite)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(DbError::NoWal {
            path: path.to_path_buf(),
            mode,
        });
    }
    // FULL, not NORMAL: in WAL mode NORMAL can lose the last commits on power
    // loss, and a ledger that forgets a charge would let a budget be spent twice.
    connection
        .pragma_update(None, "synchronous", "FULL")
        .map_err(sqlite)?;
    connection
        .pragma_update(None, "foreign_keys", true)
        .map_err(sqlite)?;
    // SQLite's own page cache, per connection (negative: KiB). Its default,
    // 2 MiB, fills as the files grow, so a long-running coordinator's memory
    // grows job after job until every connection's cache is full. Veil's
    // files are read by key (a job, a partner, a round) and the operating
    // system caches the file itself, so a smaller bound costs little.
    connection
        .pragma_update(None, "cache_size", -PAGE_CACHE_KIB)
        .map_err(sqlite)?;
    let migrated = migrate(&mut connection, path, schema)?;
    Ok((connection, migrated))
}

fn read_pragma<T: rusqlite::types::FromSql>(
    connection: &Connection,
    name: &str,
) -> rusqlite::Result<T> {
    connection.pragma_query_value(None, name, |row| row.get(0))
}

/// Applies the pending migrations of `schema`, each in an immediate
/// transaction that also bumps `user_version`, so a crash leaves the database
/// at a whole version. `path` is only used in errors.
pub fn migrate(
    connection: &mut Connection,
    path: &Path,
    schema: &Schema,
) -> Result<Migrated, DbError> {
    let sqlite = |source| DbError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let supported = u32::try_from(schema.migrations.len()).unwrap_or(u32::MAX);
    // Check and stamp identity under the write lock, so two processes opening
    // a new file at once cannot both think it is theirs to initialise.
    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite)?;
    let found_version: u32 = read_pragma(&transaction, "user_version").map_err(sqlite)?;
    let application_id: i32 = read_pragma(&transaction, "application_id").map_err(sqlite)?;
    let is_new = found_version == 0 && application_id == 0;
    if !is_new && application_id != schema.application_id {
        return Err(DbError::WrongApplication {
            path: path.to_path_buf(),
            component: schema.component,
            found: application_id,
            expected: schema.application_id,
        });
    }
    if found_version > supported {
        return Err(DbError::NewerSchema {
            path: path.to_path_buf(),
            component: schema.component,
            found: found_version,
            supported,
        });
    }
    if is_new {
        transaction
            .pragma_update(None, "application_id", schema.application_id)
            .map_err(sqlite)?;
    }
    transaction.commit().map_err(sqlite)?;
    if found_version as usize >= schema.migrations.len() {
        return Ok(Migrated {
            from_version: found_version,
            to_version: supported,
        });
    }
    // SQLite's procedure for schema changes it cannot make in place (a new
    // CHECK, a rebuilt table): foreign keys off outside the transaction, so
    // dropping a parent table does not cascade into its children, and a
    // `foreign_key_check` inside it before the commit. Back on afterwards,
    // whatever happened.
    connection
        .pragma_update(None, "foreign_keys", false)
        .map_err(sqlite)?;
    let applied = apply_migrations(connection, schema, found_version).map_err(sqlite);
    connection
        .pragma_update(None, "foreign_keys", true)
        .map_err(sqlite)?;
    applied?;
    Ok(Migrated {
        from_version: found_version,
        to_version: supported,
    })
}

/// Applies migrations `from..` of `schema`, each in its own immediate
/// transaction that checks foreign keys before it commits.
fn apply_migrations(
    connection: &mut Connection,
    schema: &Schema,
    from: u32,
) -> Result<(), rusqlite::Error> {
    for (index, sql) in schema.migrations.iter().enumerate().skip(from as usize) {
        let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Another process may have migrated while we waited for the lock.
        let current: u32 = read_pragma(&transaction, "user_version")?;
        if current as usize > index {
            continue;
        }
        transaction.execute_batch(sql)?;
        let violations: i64 =
            transaction.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |row| {
                row.get(0)
            })?;
        if violations > 0 {
            // Rolled back when the transaction drops.
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY),
                Some(format!(
                    "migration {} leaves {violations} rows whose foreign key matches nothing",
                    index + 1
                )),
            ));
        }
        let next_version = u32::try_from(index + 1).unwrap_or(u32::MAX);
        transaction.pragma_update(None, "user_version", next_version)?;
        transaction.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOTES_V1: &[&str] = &["CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);"];
    const NOTES_V2: &[&str] = &[
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);",
        "CREATE TABLE tags (note_id INTEGER NOT NULL REFERENCES notes(id), tag TEXT NOT NULL);",
    ];

    fn schema(migrations: &'static [&'static str]) -> Schema {
        Schema {
            component: "notes",
            application_id: 0x5645_494c,
            migrations,
        }
    }

    fn database() -> (tempfile::TempDir, PathBuf) {
        let directory = tempfile::tempdir().unwrap_or_else(|error| panic!("tempdir: {error}"));
        let path = directory.path().join("notes.sqlite");
        (directory, path)
    }

    #[test]
    fn a_new_file_is_durable_and_fully_migrated() -> Result<(), DbError> {
        let (_directory, path) = database();
        let (connection, migrated) = open(&path, &schema(NOTES_V2))?;
        assert_eq!(
            migrated,
            Migrated {
                from_version: 0,
                to_version: 2
            }
        );
        let check = |name: &str| -> rusqlite::Result<String> {
            connection
                .pragma_query_value(None, name, |row| row.get::<_, rusqlite::types::Value>(0))
                .map(|value| format!("{value:?}"))
        };
        let sqlite = |source| DbError::Sqlite {
            path: path.clone(),
            source,
        };
        assert_eq!(check("journal_mode").map_err(sqlite)?, "Text(\"wal\")");
        // SQLite reports synchronous FULL as 2 and foreign_keys ON as 1.
        assert_eq!(check("synchronous").map_err(sqlite)?, "Integer(2)");
        assert_eq!(check("foreign_keys").map_err(sqlite)?, "Integer(1)");
        assert_eq!(
            check("cache_size").map_err(sqlite)?,
            format!("Integer({})", -PAGE_CACHE_KIB)
        );
        assert_eq!(check("user_version").map_err(sqlite)?, "Integer(2)");
        // Foreign keys are enforced: a tag for a missing note is refused.
        let orphan = connection.execute("INSERT INTO tags (note_id, tag) VALUES (42, 'x')", []);
        assert!(orphan.is_err());
        Ok(())
    }

    #[test]
    fn reopening_applies_only_the_new_migrations_and_keeps_data() -> Result<(), DbError> {
        let (_directory, path) = database();
        {
            let (connection, migrated) = open(&path, &schema(NOTES_V1))?;
            assert_eq!(
                migrated,
                Migrated {
                    from_version: 0,
                    to_version: 1
                }
            );
            connection
                .execute("INSERT INTO notes (id, body) VALUES (1, 'kept')", [])
                .map_err(|source| DbError::Sqlite {
                    path: path.clone(),
                    source,
                })?;
        }
        let (connection, migrated) = open(&path, &schema(NOTES_V2))?;
        assert_eq!(
            migrated,
            Migrated {
                from_version: 1,
                to_version: 2
            }
        );
        let body: String = connection
            .query_row("SELECT body FROM notes WHERE id = 1", [], |row| row.get(0))
            .map_err(|source| DbError::Sqlite {
                path: path.clone(),
                source,
            })?;
        assert_eq!(body, "kept");
        let (_again, migrated) = open(&path, &schema(NOTES_V2))?;
        assert_eq!(
            migrated,
            Migrated {
                from_version: 2,
                to_version: 2
            }
        );
        Ok(())
    }

    #[test]
    fn a_database_from_a_newer_version_is_refused() -> Result<(), DbError> {
        let (_directory, path) = database();
        drop(open(&path, &schema(NOTES_V2))?);
        match open(&path, &schema(NOTES_V1)) {
            Err(DbError::NewerSchema {
                found: 2,
                supported: 1,
                component: "notes",
                ..
            }) => Ok(()),
            other => panic!("expected NewerSchema, got {other:?}"),
        }
    }

    #[test]
    fn another_components_database_is_refused() -> Result<(), DbError> {
        let (_directory, path) = database();
        drop(open(&path, &schema(NOTES_V1))?);
        let other = Schema {
            component: "other",
            application_id: 7,
            migrations: NOTES_V1,
        };
        match open(&path, &other) {
            Err(DbError::WrongApplication {
                found: 0x5645_494c,
                expected: 7,
                ..
            }) => Ok(()),
            other => panic!("expected WrongApplication, got {other:?}"),
        }
    }

    #[test]
    fn a_failing_migration_leaves_the_previous_version() -> Result<(), DbError> {
        const BROKEN: &[&str] = &[
            "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);",
            "CREATE TABLE half (id INTEGER); THIS IS NOT SQL;",
        ];
        let (_directory, path) = database();
        assert!(matches!(
            open(&path, &schema(BROKEN)),
            Err(DbError::Sqlite { .. })
        ));
        // Version 1 was committed; the broken second batch left nothing behind.
        let (connection, migrated) = open(&path, &schema(NOTES_V1))?;
        assert_eq!(
            migrated,
            Migrated {
                from_version: 1,
                to_version: 1
            }
        );
        let half_exists: i64 = connection
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'half'",
                [],
                |row| row.get(0),
            )
            .map_err(|source| DbError::Sqlite {
                path: path.clone(),
                source,
            })?;
        assert_eq!(half_exists, 0);
        Ok(())
    }

    #[test]
    fn a_schema_without_an_application_id_is_refused() {
        let (_directory, path) = database();
        let unset = Schema {
            component: "unset",
            application_id: 0,
            migrations: NOTES_V1,
        };
        assert!(matches!(
            open(&path, &unset),
            Err(DbError::InvalidSchema("unset"))
        ));
    }
}
