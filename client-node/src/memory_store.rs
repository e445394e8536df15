//! The node's durable memory in its state folder: the records its state
//! machine returns (spec pins, stored replies, releases, contributions,
//! refusals) in `node-memory.sqlite`, and charges in its privacy ledger.
//! Thin: it writes what it is given and replays it at start-up.

use std::path::Path;

use thiserror::Error;
use veil_federation::{DeclineCode, Phase};
use veil_node_protocol::{NodeMemory, PhaseKey, PhaseReply, Record};
use veil_privacy_ledger::{LedgerError, SqliteLedger};
use veil_sqlite_db::rusqlite::{self, OptionalExtension, params};
use veil_sqlite_db::{DbError, Schema, open};

const MEMORY_SCHEMA: Schema = Schema {
    component: "veil node memory",
    application_id: 0x564e_4d45,
    migrations: &[
        "CREATE TABLE spec_pins (job_id TEXT PRIMARY KEY, digest BLOB NOT NULL);
         CREATE TABLE replies (job_id TEXT NOT NULL, round INTEGER NOT NULL, phase TEXT NOT NULL,
             reply BLOB NOT NULL, PRIMARY KEY (job_id, round, phase));
         CREATE TABLE releases (job_id TEXT NOT NULL, round INTEGER NOT NULL, phase TEXT NOT NULL,
             attempt INTEGER NOT NULL, PRIMARY KEY (job_id, round, phase));
         CREATE TABLE contributions (job_id TEXT NOT NULL, round INTEGER NOT NULL,
             PRIMARY KEY (job_id, round));
         CREATE TABLE refusals (id INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL,
             round INTEGER NOT NULL, phase TEXT NOT NULL, code TEXT NOT NULL,
             at_unix_seconds INTEGER NOT NULL);",
    ],
};

/// Why the node's memory could not be read or written.
#[derive(Debug, Error)]
pub enum MemoryStoreError {
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Db(#[from] DbError),
    /// SQLite refused a query.
    #[error("node memory: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The privacy ledger refused a charge (a conflict, or IO).
    #[error("privacy ledger: {0}")]
    Ledger(#[from] LedgerError),
    /// A stored row does not read back.
    #[error("node memory: corrupt {what} row for job '{job_id}'")]
    Corrupt {
        /// Which table.
        what: &'static str,
        /// Its job.
        job_id: String,
    },
}

/// A refusal as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRefusal {
    /// The phase refused.
    pub key: PhaseKey,
    /// The code sent.
    pub code: String,
}

/// The node's memory file and its ledger.
pub struct MemoryStore {
    connection: rusqlite::Connection,
    /// The partner's own copy of every privacy charge it accepted.
    pub ledger: SqliteLedger,
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::FeatureStats => "feature-stats",
        Phase::Train => "train",
        Phase::Evaluate => "evaluate",
        Phase::Release => "release",
    }
}

fn phase_from_name(name: &str) -> Option<Phase> {
    match name {
        "feature-stats" => Some(Phase::FeatureStats),
        "train" => Some(Phase::Train),
        "evaluate" => Some(Phase::Evaluate),
        "release" => Some(Phase::Release),
        _ => None,
    }
}

impl MemoryStore {
    /// Opens (creating) `node-memory.sqlite` and `ledger.sqlite` in `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Self, MemoryStoreError> {
        let (connection, _) = open(&state_dir.join("node-memory.sqlite"), &MEMORY_SCHEMA)?;
        let ledger = SqliteLedger::open(&state_dir.join("ledger.sqlite"))?;
        Ok(Self { connection, ledger })
    }

    /// Writes `records` durably, in order; charges go to the ledger. A reply
    /// or release already stored is never overwritten.
    pub fn commit(&mut self, records: &[Record]) -> Result<(), MemoryStoreError> {
        for record in records {
            match record {
                Record::PinSpec { job_id, digest } => {
                    self.connection.execute(
                        "INSERT OR IGNORE INTO spec_pins (job_id, digest) VALUES (?1, ?2)",
                        params![job_id, digest.as_slice()],
                    )?;
                }
                Record::StoreReply { key, reply } => {
                    self.connection.execute(
                        "INSERT OR IGNORE INTO replies (job_id, round, phase, reply) VALUES (?1, ?2, ?3, ?4)",
                        params![key.job_id, key.round, phase_name(key.phase), reply.to_bytes()],
                    )?;
                }
                Record::Released { key, attempt } => {
                    self.connection.execute(
                        "INSERT OR IGNORE INTO releases (job_id, round, phase, attempt) VALUES (?1, ?2, ?3, ?4)",
                        params![key.job_id, key.round, phase_name(key.phase), attempt],
                    )?;
                }
                Record::Contributed { job_id, round } => {
                    self.connection.execute(
                        "INSERT OR IGNORE INTO contributions (job_id, round) VALUES (?1, ?2)",
                        params![job_id, round],
                    )?;
                }
                Record::Charge(charge) => {
                    self.ledger.record(charge)?;
                }
                Record::Guarantee {
                    job_id,
                    round,
                    guarantee,
                } => {
                    self.ledger
                        .record_guarantee(job_id, u64::from(*round), guarantee)?;
                }
                Record::Refusal {
                    key,
                    code,
                    at_unix_seconds,
                } => {
                    self.connection.execute(
                        "INSERT INTO refusals (job_id, round, phase, code, at_unix_seconds) VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![
                            key.job_id,
                            key.round,
                            phase_name(key.phase),
                            code.as_str(),
                            i64::try_from(*at_unix_seconds).unwrap_or(i64::MAX)
                        ],
                    )?;
                }
            }
        }
        Ok(())
    }

    /// Replays everything stored into a [`NodeMemory`].
    pub fn load(&self) -> Result<NodeMemory, MemoryStoreError> {
        let mut memory = NodeMemory::default();
        let mut statement = self
            .connection
            .prepare("SELECT job_id, digest FROM spec_pins")?;
        for row in statement.query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, Vec<u8>>(1)?))
        })? {
            let (job_id, digest) = row?;
            let digest: [u8; 32] = digest.try_into().map_err(|_| MemoryStoreError::Corrupt {
                what: "spec pin",
                job_id: job_id.clone(),
            })?;
            memory.apply(&Record::PinSpec { job_id, digest });
        }
        let mut statement = self
            .connection
            .prepare("SELECT job_id, round, phase, reply FROM replies")?;
        for row in statement.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, u32>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, Vec<u8>>(3)?,
            ))
        })? {
            let (job_id, round, phase, bytes) = row?;
            let corrupt = || MemoryStoreError::Corrupt {
                what: "reply",
                job_id: job_id.clone(),
            };
            let phase = phase_from_name(&phase).ok_or_else(corrupt)?;
            let reply = PhaseReply::from_bytes(&bytes).ok_or_else(corrupt)?;
            memory.apply(&Record::StoreReply {
                key: PhaseKey {
                    job_id: job_id.clone(),
                    round,
                    phase,
                },
                reply,
            });
        }
        let mut statement = self
            .connection
            .prepare("SELECT job_id, round, phase, attempt FROM releases")?;
        for row in statement.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, u32>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, u32>(3)?,
            ))
        })? {
            let (job_id, round, phase, attempt) = row?;
            let phase = phase_from_name(&phase).ok_or_else(|| MemoryStoreError::Corrupt {
                what: "release",
                job_id: job_id.clone(),
            })?;
            memory.apply(&Record::Released {
                key: PhaseKey {
                    job_id,
                    round,
                    phase,
                },
                attempt,
            });
        }
        let mut statement = self
            .connection
            .prepare("SELECT job_id, round FROM contributions")?;
        for row in statement.query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, u32>(1)?))
        })? {
            let (job_id, round) = row?;
            memory.apply(&Record::Contributed { job_id, round });
        }
        Ok(memory)
    }

    /// Every refusal recorded, oldest first.
    pub fn refusals(&self) -> Result<Vec<RecordedRefusal>, MemoryStoreError> {
        let mut statement = self
            .connection
            .prepare("SELECT job_id, round, phase, code FROM refusals ORDER BY id")?;
        let rows = statement.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, u32>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
            ))
        })?;
        let mut refusals = Vec::new();
        for row in rows {
            let (job_id, round, phase, code) = row?;
            let phase = phase_from_name(&phase).ok_or_else(|| MemoryStoreError::Corrupt {
                what: "refusal",
                job_id: job_id.clone(),
            })?;
            refusals.push(RecordedRefusal {
                key: PhaseKey {
                    job_id,
                    round,
                    phase,
                },
                code,
            });
        }
        Ok(refusals)
    }

    /// The attempt in which a phase's input left, if it did.
    pub fn released_attempt(&self, key: &PhaseKey) -> Result<Option<u32>, MemoryStoreError> {
        Ok(self
            .connection
            .query_row(
                "SELECT attempt FROM releases WHERE job_id = ?1 AND round = ?2 AND phase = ?3",
                params![key.job_id, key.round, phase_name(key.phase)],
                |row| row.get(0),
            )
            .optional()?)
    }
}

/// Decline codes are stored by name; this keeps the two lists in step.
pub fn decline_code_from_name(name: &str) -> Option<DeclineCode> {
    DeclineCode::ALL
        .into_iter()
        .find(|code| code.as_str() == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_replay_into_the_same_memory_after_reopening() {
        let folder = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let key = PhaseKey {
            job_id: "job-1".to_owned(),
            round: 2,
            phase: Phase::Train,
        };
        let records = vec![
            Record::PinSpec {
                job_id: "job-1".to_owned(),
                digest: [9; 32],
            },
            Record::StoreReply {
                key: key.clone(),
                reply: PhaseReply {
                    weight: 3.0,
                    statistics: vec![1.5],
                    vector: vec![0.25, -0.5],
                },
            },
            Record::Released {
                key: key.clone(),
                attempt: 2,
            },
            Record::Contributed {
                job_id: "job-1".to_owned(),
                round: 2,
            },
            Record::Refusal {
                key: key.clone(),
                code: DeclineCode::AlreadyReleased,
                at_unix_seconds: 7,
            },
        ];
        let mut expected = NodeMemory::default();
        for record in &records {
            expected.apply(record);
        }
        {
            let mut store =
                MemoryStore::open(folder.path()).unwrap_or_else(|error| panic!("{error}"));
            store
                .commit(&records)
                .unwrap_or_else(|error| panic!("{error}"));
            // A second reply for the same phase never replaces the first.
            store
                .commit(&[Record::StoreReply {
                    key: key.clone(),
                    reply: PhaseReply {
                        weight: 99.0,
                        statistics: Vec::new(),
                        vector: Vec::new(),
                    },
                }])
                .unwrap_or_else(|error| panic!("{error}"));
        }
        let store = MemoryStore::open(folder.path()).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(
            store.load().unwrap_or_else(|error| panic!("{error}")),
            expected
        );
        let refusals = store.refusals().unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(refusals.len(), 1);
        assert_eq!(
            decline_code_from_name(&refusals[0].code),
            Some(DeclineCode::AlreadyReleased)
        );
        assert_eq!(
            store
                .released_attempt(&key)
                .unwrap_or_else(|error| panic!("{error}")),
            Some(2)
        );
    }
}
