//! The durable ledger: one SQLite file per side (coordinator, or a partner's
//! node), one row per charge, written in a transaction that is on disk before
//! `record` returns.
//!
//! Mechanism parameters are columns, not a JSON blob, so an auditor can query
//! the file with the `sqlite3` shell, and REAL columns keep every f64 bit for
//! bit (a text round trip might not).

use std::path::Path;

use veil_privacy_accounting::{DiscreteEncoding, DistributedDiscreteGaussian};
use veil_sqlite_db::rusqlite::{
    self, Connection, OptionalExtension, Row, TransactionBehavior, params,
};
use veil_sqlite_db::{Schema, open};

use crate::charge::{
    Charge, Mechanism, PrivacyUnit, RecordOutcome, Release, TrustModel, outcome_against,
};
use crate::error::LedgerError;

/// The ledger's schema. Append migrations; never edit a published one.
const LEDGER_SCHEMA: Schema = Schema {
    component: "privacy ledger",
    // "VLDG": marks the file as a Veil ledger.
    application_id: 0x564c_4447,
    migrations: &[
        r"
        CREATE TABLE charges (
            job_id             TEXT    NOT NULL,
            round              INTEGER NOT NULL CHECK (round >= 0),
            partner_id         TEXT    NOT NULL,
            unit               TEXT    NOT NULL CHECK (unit IN ('customer', 'partner')),
            dataset_id         TEXT    NOT NULL,
            trust_model        TEXT    NOT NULL,
            mechanism          TEXT    NOT NULL,
            clip_norm          REAL    NOT NULL,
            sampling_rate      REAL,
            noise_multiplier   REAL,
            steps              INTEGER,
            granularity        REAL,
            dimension          INTEGER,
            rounding_beta      REAL,
            node_sigma         REAL,
            min_survivors      INTEGER,
            delta              REAL    NOT NULL,
            epsilon_rdp        REAL    NOT NULL,
            epsilon_pld        REAL,
            recorded_at_unix_s INTEGER NOT NULL,
            PRIMARY KEY (job_id, round, partner_id, unit)
        ) STRICT;
        CREATE INDEX charges_by_partner
            ON charges (partner_id, dataset_id, unit, recorded_at_unix_s);
    ",
        r"
        ALTER TABLE charges ADD COLUMN statistics_releases INTEGER;
        ALTER TABLE charges ADD COLUMN statistics_noise_multiplier REAL;
    ",
        r"
        CREATE TABLE round_guarantees (
            job_id    TEXT    NOT NULL,
            round     INTEGER NOT NULL CHECK (round >= 0),
            guarantee TEXT    NOT NULL,
            PRIMARY KEY (job_id, round)
        ) STRICT;
    ",
        // The final evaluation is charged under its own key: the release
        // joins the primary key, so the table is rebuilt (SQLite cannot
        // alter a key). Existing rows were all round releases.
        r"
        CREATE TABLE charges_by_release (
            job_id             TEXT    NOT NULL,
            round              INTEGER NOT NULL CHECK (round >= 0),
            partner_id         TEXT    NOT NULL,
            unit               TEXT    NOT NULL CHECK (unit IN ('customer', 'partner')),
            release            TEXT    NOT NULL DEFAULT 'round'
                                       CHECK (release IN ('round', 'final_evaluation')),
            dataset_id         TEXT    NOT NULL,
            trust_model        TEXT    NOT NULL,
            mechanism          TEXT    NOT NULL,
            clip_norm          REAL    NOT NULL,
            sampling_rate      REAL,
            noise_multiplier   REAL,
            steps              INTEGER,
            granularity        REAL,
            dimension          INTEGER,
            rounding_beta      REAL,
            node_sigma         REAL,
            min_survivors      INTEGER,
            delta              REAL    NOT NULL,
            epsilon_rdp        REAL    NOT NULL,
            epsilon_pld        REAL,
            recorded_at_unix_s INTEGER NOT NULL,
            statistics_releases INTEGER,
            statistics_noise_multiplier REAL,
            PRIMARY KEY (job_id, round, partner_id, unit, release)
        ) STRICT;
        INSERT INTO charges_by_release (
            job_id, round, partner_id, unit, release, dataset_id, trust_model, mechanism,
            clip_norm, sampling_rate, noise_multiplier, steps, granularity, dimension,
            rounding_beta, node_sigma, min_survivors, delta, epsilon_rdp, epsilon_pld,
            recorded_at_unix_s, statistics_releases, statistics_noise_multiplier)
        SELECT
            job_id, round, partner_id, unit, 'round', dataset_id, trust_model, mechanism,
            clip_norm, sampling_rate, noise_multiplier, steps, granularity, dimension,
            rounding_beta, node_sigma, min_survivors, delta, epsilon_rdp, epsilon_pld,
            recorded_at_unix_s, statistics_releases, statistics_noise_multiplier
        FROM charges;
        DROP TABLE charges;
        ALTER TABLE charges_by_release RENAME TO charges;
        CREATE INDEX charges_by_partner
            ON charges (partner_id, dataset_id, unit, recorded_at_unix_s);
    ",
    ],
};

const COLUMNS: &str = "job_id, round, partner_id, unit, dataset_id, trust_model, mechanism, \
    clip_norm, sampling_rate, noise_multiplier, steps, granularity, dimension, rounding_beta, \
    node_sigma, min_survivors, delta, epsilon_rdp, epsilon_pld, recorded_at_unix_s, \
    statistics_releases, statistics_noise_multiplier, release";

/// A privacy ledger kept in one SQLite file.
pub struct SqliteLedger {
    /// One connection: every write is a short immediate transaction, and the
    /// caller serialises access (`&mut self`), so no pool is needed.
    connection: Connection,
}

fn release_from_name(name: &str) -> rusqlite::Result<Release> {
    [Release::Round, Release::FinalEvaluation]
        .into_iter()
        .find(|release| release.name() == name)
        .ok_or_else(|| corrupt(format!("unknown release {name:?}")))
}

fn trust_model_name(trust_model: TrustModel) -> &'static str {
    match trust_model {
        TrustModel::LocalDpSgd => "local_dp_sgd",
        TrustModel::Distributed => "distributed",
        TrustModel::Central => "central",
    }
}

fn to_i64(value: u64, field: &str) -> Result<i64, LedgerError> {
    i64::try_from(value)
        .map_err(|_| LedgerError::CorruptRow(format!("{field} {value} does not fit in SQLite")))
}

fn corrupt(message: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, message.into())
}

fn required<T>(value: Option<T>, column: &str, kind: &str) -> rusqlite::Result<T> {
    value.ok_or_else(|| corrupt(format!("{kind} row without {column}")))
}

fn non_negative(value: i64, column: &str) -> rusqlite::Result<u64> {
    u64::try_from(value).map_err(|_| corrupt(format!("negative {column} {value}")))
}

fn charge_from_row(row: &Row<'_>) -> rusqlite::Result<Charge> {
    let unit = match row.get::<_, String>("unit")?.as_str() {
        "customer" => PrivacyUnit::Customer,
        "partner" => PrivacyUnit::Partner,
        other => return Err(corrupt(format!("unknown unit {other:?}"))),
    };
    let trust_model = match row.get::<_, String>("trust_model")?.as_str() {
        "local_dp_sgd" => TrustModel::LocalDpSgd,
        "distributed" => TrustModel::Distributed,
        "central" => TrustModel::Central,
        other => return Err(corrupt(format!("unknown trust model {other:?}"))),
    };
    let kind: String = row.get("mechanism")?;
    let clip_norm: f64 = row.get("clip_norm")?;
    let real = |column: &str| -> rusqlite::Result<f64> {
        required(row.get::<_, Option<f64>>(column)?, column, &kind)
    };
    let integer = |column: &str| -> rusqlite::Result<u64> {
        non_negative(
            required(row.get::<_, Option<i64>>(column)?, column, &kind)?,
            column,
        )
    };
    let mechanism = match kind.as_str() {
        "poisson_subsampled_gaussian" => Mechanism::PoissonSubsampledGaussian {
            sampling_rate: real("sampling_rate")?,
            noise_multiplier: real("noise_multiplier")?,
            steps: integer("steps")?,
            clip_norm,
        },
        "dp_sgd_with_statistics" => Mechanism::DpSgdWithStatistics {
            sampling_rate: real("sampling_rate")?,
            noise_multiplier: real("noise_multiplier")?,
            steps: integer("steps")?,
            clip_norm,
            statistics_releases: integer("statistics_releases")?,
            statistics_noise_multiplier: real("statistics_noise_multiplier")?,
        },
        "distributed_discrete_gaussian" => {
            Mechanism::DistributedDiscreteGaussian(DistributedDiscreteGaussian {
                encoding: DiscreteEncoding {
                    clip_norm,
                    granularity: real("granularity")?,
                    dimension: integer("dimension")?,
                    rounding_beta: real("rounding_beta")?,
                },
                node_sigma: real("node_sigma")?,
                min_survivors: integer("min_survivors")?,
            })
        }
        "gaussian" => Mechanism::Gaussian {
            noise_multiplier: real("noise_multiplier")?,
            clip_norm,
        },
        other => return Err(corrupt(format!("unknown mechanism {other:?}"))),
    };
    Ok(Charge {
        job_id: row.get("job_id")?,
        round: non_negative(row.get("round")?, "round")?,
        partner_id: row.get("partner_id")?,
        dataset_id: row.get("dataset_id")?,
        unit,
        release: release_from_name(&row.get::<_, String>("release")?)?,
        trust_model,
        mechanism,
        delta: row.get("delta")?,
        epsilon_rdp: row.get("epsilon_rdp")?,
        epsilon_pld: row.get("epsilon_pld")?,
        recorded_at_unix_s: row.get("recorded_at_unix_s")?,
    })
}

/// Mechanism parameters as nullable columns, in `COLUMNS` order.
struct MechanismColumns {
    sampling_rate: Option<f64>,
    noise_multiplier: Option<f64>,
    steps: Option<i64>,
    granularity: Option<f64>,
    dimension: Option<i64>,
    rounding_beta: Option<f64>,
    node_sigma: Option<f64>,
    min_survivors: Option<i64>,
    statistics_releases: Option<i64>,
    statistics_noise_multiplier: Option<f64>,
}

fn mechanism_columns(mechanism: &Mechanism) -> Result<MechanismColumns, LedgerError> {
    let none = MechanismColumns {
        sampling_rate: None,
        noise_multiplier: None,
        steps: None,
        granularity: None,
        dimension: None,
        rounding_beta: None,
        node_sigma: None,
        min_survivors: None,
        statistics_releases: None,
        statistics_noise_multiplier: None,
    };
    Ok(match *mechanism {
        Mechanism::PoissonSubsampledGaussian {
            sampling_rate,
            noise_multiplier,
            steps,
            ..
        } => MechanismColumns {
            sampling_rate: Some(sampling_rate),
            noise_multiplier: Some(noise_multiplier),
            steps: Some(to_i64(steps, "steps")?),
            ..none
        },
        Mechanism::DpSgdWithStatistics {
            sampling_rate,
            noise_multiplier,
            steps,
            statistics_releases,
            statistics_noise_multiplier,
            ..
        } => MechanismColumns {
            sampling_rate: Some(sampling_rate),
            noise_multiplier: Some(noise_multiplier),
            steps: Some(to_i64(steps, "steps")?),
            statistics_releases: Some(to_i64(statistics_releases, "statistics_releases")?),
            statistics_noise_multiplier: Some(statistics_noise_multiplier),
            ..none
        },
        Mechanism::DistributedDiscreteGaussian(distributed) => MechanismColumns {
            granularity: Some(distributed.encoding.granularity),
            dimension: Some(to_i64(distributed.encoding.dimension, "dimension")?),
            rounding_beta: Some(distributed.encoding.rounding_beta),
            node_sigma: Some(distributed.node_sigma),
            min_survivors: Some(to_i64(distributed.min_survivors, "min_survivors")?),
            ..none
        },
        Mechanism::Gaussian {
            noise_multiplier, ..
        } => MechanismColumns {
            noise_multiplier: Some(noise_multiplier),
            ..none
        },
    })
}

impl SqliteLedger {
    /// Opens (creating if needed) the ledger at `path`: WAL, synchronous
    /// FULL, migrated to the current schema.
    pub fn open(path: &Path) -> Result<Self, LedgerError> {
        let (connection, _migrated) = open(path, &LEDGER_SCHEMA)?;
        Ok(Self { connection })
    }

    /// Records `charge`, durably, before returning. The identical charge
    /// again returns [`RecordOutcome::AlreadyRecorded`] and changes nothing;
    /// a different charge under the same key is
    /// [`LedgerError::ConflictingCharge`].
    pub fn record(&mut self, charge: &Charge) -> Result<RecordOutcome, LedgerError> {
        charge.validate()?;
        let columns = mechanism_columns(&charge.mechanism)?;
        let round = to_i64(charge.round, "round")?;
        // Immediate: take the write lock before reading, so two processes
        // recording the same key cannot both see it absent.
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let existing = transaction
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM charges \
                     WHERE job_id = ?1 AND round = ?2 AND partner_id = ?3 AND unit = ?4 \
                     AND release = ?5"
                ),
                params![
                    charge.job_id,
                    round,
                    charge.partner_id,
                    charge.unit.name(),
                    charge.release.name()
                ],
                charge_from_row,
            )
            .optional()?;
        if let Some(existing) = existing {
            return outcome_against(&existing, charge);
        }
        transaction.execute(
            &format!(
                "INSERT INTO charges ({COLUMNS}) VALUES \
                 (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23)"
            ),
            params![
                charge.job_id,
                round,
                charge.partner_id,
                charge.unit.name(),
                charge.dataset_id,
                trust_model_name(charge.trust_model),
                charge.mechanism.kind(),
                charge.mechanism.clip_norm(),
                columns.sampling_rate,
                columns.noise_multiplier,
                columns.steps,
                columns.granularity,
                columns.dimension,
                columns.rounding_beta,
                columns.node_sigma,
                columns.min_survivors,
                charge.delta,
                charge.epsilon_rdp,
                charge.epsilon_pld,
                charge.recorded_at_unix_s,
                columns.statistics_releases,
                columns.statistics_noise_multiplier,
                charge.release.name(),
            ],
        )?;
        transaction.commit()?;
        Ok(RecordOutcome::Recorded)
    }

    fn select(&self, filter: &str, value: Option<&str>) -> Result<Vec<Charge>, LedgerError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM charges {filter} \
             ORDER BY partner_id, job_id, round, unit, release = 'final_evaluation'"
        );
        let mut statement = self.connection.prepare(&sql)?;
        let rows = match value {
            Some(value) => statement.query_map([value], charge_from_row)?,
            None => statement.query_map([], charge_from_row)?,
        };
        let charges = rows.collect::<Result<Vec<_>, _>>()?;
        for charge in &charges {
            charge
                .validate()
                .map_err(|error| LedgerError::CorruptRow(format!("{}: {error}", charge.key())))?;
        }
        Ok(charges)
    }

    /// Every charge of one partner, across jobs.
    pub fn charges_for_partner(&self, partner_id: &str) -> Result<Vec<Charge>, LedgerError> {
        self.select("WHERE partner_id = ?1", Some(partner_id))
    }

    /// Every charge of one job, across partners.
    pub fn charges_for_job(&self, job_id: &str) -> Result<Vec<Charge>, LedgerError> {
        self.select("WHERE job_id = ?1", Some(job_id))
    }

    /// Records the secure-aggregation guarantee a round's training phase had
    /// ("tolerates 1 colluder and 0 dropouts", "42.5 security bits, …"),
    /// beside the round's charges. The first record of a round stands.
    pub fn record_guarantee(
        &mut self,
        job_id: &str,
        round: u64,
        guarantee: &str,
    ) -> Result<(), LedgerError> {
        let round = to_i64(round, "round")?;
        self.connection.execute(
            "INSERT OR IGNORE INTO round_guarantees (job_id, round, guarantee) VALUES (?1, ?2, ?3)",
            params![job_id, round, guarantee],
        )?;
        Ok(())
    }

    /// The guarantees recorded for a job's rounds, by round.
    pub fn guarantees_for_job(&self, job_id: &str) -> Result<Vec<(u64, String)>, LedgerError> {
        let mut statement = self.connection.prepare(
            "SELECT round, guarantee FROM round_guarantees WHERE job_id = ?1 ORDER BY round",
        )?;
        let rows = statement.query_map(params![job_id], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
        })?;
        let mut guarantees = Vec::new();
        for row in rows {
            let (round, guarantee) = row?;
            guarantees.push((u64::try_from(round).unwrap_or(0), guarantee));
        }
        Ok(guarantees)
    }

    /// Every charge.
    pub fn all_charges(&self) -> Result<Vec<Charge>, LedgerError> {
        self.select("", None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::charge::ChargeSpec;

    /// A ledger written before the final evaluation had its own key: the
    /// first three migrations, and one round charge in them.
    fn ledger_before_releases(path: &Path) {
        const BEFORE: Schema = Schema {
            migrations: LEDGER_SCHEMA.migrations.split_at(3).0,
            ..LEDGER_SCHEMA
        };
        let (connection, _) = open(path, &BEFORE).expect("old schema");
        connection
            .execute(
                "INSERT INTO charges (job_id, round, partner_id, unit, dataset_id, trust_model, \
                 mechanism, clip_norm, sampling_rate, noise_multiplier, steps, delta, epsilon_rdp, \
                 epsilon_pld, recorded_at_unix_s) VALUES ('job-1', 3, 'bank-a', 'customer', \
                 'bank-a', 'local_dp_sgd', 'poisson_subsampled_gaussian', 1.0, 0.05, 1.0, 20, \
                 1e-5, 0.5, 0.4, 1767225600)",
                [],
            )
            .expect("old row");
    }

    fn final_evaluation(round: u64) -> Charge {
        let spec = ChargeSpec {
            job_id: "job-1".to_owned(),
            round,
            partner_id: "bank-a".to_owned(),
            dataset_id: "bank-a".to_owned(),
            unit: PrivacyUnit::Customer,
            release: Release::FinalEvaluation,
            trust_model: TrustModel::LocalDpSgd,
            mechanism: Mechanism::Gaussian {
                noise_multiplier: 5.0,
                clip_norm: 7f64.sqrt(),
            },
            delta: 1e-5,
        };
        Charge::new(spec, 1_767_225_700).expect("valid charge")
    }

    #[test]
    fn old_rows_become_round_releases_and_the_final_evaluation_gets_its_own_key() {
        let folder = tempfile::tempdir().expect("temp dir");
        let path = folder.path().join("ledger.sqlite");
        ledger_before_releases(&path);
        let mut ledger = SqliteLedger::open(&path).expect("migrates");
        let old = ledger.all_charges().expect("reads");
        assert_eq!(old.len(), 1);
        assert_eq!(old[0].release, Release::Round);
        assert_eq!(old[0].epsilon_pld, Some(0.4));
        // Same job, round, partner and unit: a different release, so a
        // separate charge, not a conflict and not a skipped duplicate.
        let evaluation = final_evaluation(3);
        assert!(matches!(
            ledger.record(&evaluation),
            Ok(RecordOutcome::Recorded)
        ));
        assert!(matches!(
            ledger.record(&evaluation),
            Ok(RecordOutcome::AlreadyRecorded)
        ));
        let conflicting = Charge {
            mechanism: Mechanism::Gaussian {
                noise_multiplier: 4.0,
                clip_norm: 7f64.sqrt(),
            },
            ..evaluation.clone()
        };
        assert!(matches!(
            ledger.record(&conflicting),
            Err(LedgerError::ConflictingCharge { .. })
        ));
        drop(ledger);
        let reopened = SqliteLedger::open(&path).expect("reopens");
        let all = reopened.charges_for_job("job-1").expect("reads");
        assert_eq!(all.len(), 2);
        assert!(all[1].same_charge_as(&evaluation), "{all:?}");
        assert_eq!(
            all[1].key().to_string(),
            "job job-1 round 3 partner bank-a unit Customer release final_evaluation"
        );
    }
}
