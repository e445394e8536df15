//! What a node's data sources are and what every column is: the `[data]` section of the node
//! configuration, and its conversion from the older transactions-only [`CsvSource`] form.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use veil_behaviour_features::CsvSource;
use veil_de_identification::ColumnRole;

/// Default largest share of rejected rows before a load is aborted.
pub const DEFAULT_MAX_REJECT_FRACTION: f64 = 0.1;

/// Everything a node needs to read and de-identify its partner's data.
///
/// ```toml
/// [data.transactions]
/// format = "csv"             # csv | parquet | postgres
/// path = "transactions.csv"
/// encoding = "utf-8"         # or "gbk"; a UTF-8 byte-order mark is skipped either way
/// # delimiter = ";"          # sniffed from the first lines when absent
/// customer_id = "cust"
/// category = "category"
/// channel = "channel"
/// rejects_path = "transactions.rejects.csv"
/// max_reject_fraction = 0.05
/// [data.transactions.columns]
/// cust = "identifier"
/// ts = "timestamp"
/// amount = "amount"
/// category = "feature"
/// channel = "feature"
/// memo = "text"
/// till_id = "drop"
///
/// [data.profile]
/// format = "postgres"
/// url = "postgresql://veil@127.0.0.1:5432/crm"
/// table = "customers"        # or: query = "SELECT ..."
/// customer_id = "customer_id"
/// [data.profile.columns]
/// customer_id = "identifier"
/// email = "identifier"
/// age = { quasi_identifier = { kind = "age_band", width = 10 } }
/// postcode = { quasi_identifier = { kind = "postcode_prefix", length = 3 } }
/// segment = "sensitive"
/// notes = "text"
///
/// [data.deid]
/// key_path = "state/pseudonym.key"
/// report_dir = "state/deid-report"
/// k = 5                      # reported against, not enforced: nothing is suppressed
/// l = 2
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerDataConfig {
    /// The transaction log: one row per purchase.
    pub transactions: SourceConfig,
    /// The optional customer profile table: one row per customer, joined on the pseudonymised
    /// customer id.
    #[serde(default)]
    pub profile: Option<SourceConfig>,
    /// The pseudonymisation key, the report location and the k-anonymity targets to report.
    pub deid: DeidSettings,
}

/// Where the key and reports live, and the k-anonymity targets the report measures the declared
/// generalisation against. There is no default k: every deployment chooses its own.
///
/// Nothing here suppresses or recodes rows: every profile row that is accepted feeds training
/// with its declared generalisation (see `docs/de-identification.md`, section 6). The former
/// `max_suppression_fraction` key is refused with an explanation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "DeidSettingsFields")]
pub struct DeidSettings {
    /// The partner's pseudonymisation key (32 bytes, mode 0600), created on first run. It never
    /// leaves the node; see `docs/de-identification.md` for rotation.
    pub key_path: PathBuf,
    /// Folder for `deid-report.json`, `deid-report.txt` and `deid-auditor-summary.txt`.
    pub report_dir: PathBuf,
    /// Smallest equivalence class over the profile's generalised quasi-identifiers that the
    /// partner wants; the report says whether the declared rules reach it. It is not enforced,
    /// because dropping or recoding customers according to the rest of the table would make one
    /// customer's data depend on others'; coarsen the rules to reach it.
    pub k: usize,
    /// Distinct values of every sensitive column wanted within each class, reported like `k`;
    /// `None` states no target.
    pub l: Option<usize>,
}

/// Message for a configuration that still sets the suppression limit of the old training path.
const REMOVED_SUPPRESSION_LIMIT: &str = "[data.deid] max_suppression_fraction is no longer read: \
    profile rows that feed training are never suppressed or recoded, because doing so according to \
    other customers' rows would break the one-customer adjacency customer-level DP-SGD is charged \
    for. Remove the key. `k` and `l` are still read and reported (deid-report); to reach k, \
    coarsen the quasi-identifier rules in [data.profile.columns] (age_band `width`, \
    postcode_prefix `length`, city `to_region`). See docs/de-identification.md, section 6.";

/// The settings as written, so the removed key is refused with an explanation rather than the
/// bare "unknown field" of `deny_unknown_fields`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeidSettingsFields {
    key_path: PathBuf,
    report_dir: PathBuf,
    k: usize,
    #[serde(default)]
    l: Option<usize>,
    #[serde(default)]
    max_suppression_fraction: Option<serde::de::IgnoredAny>,
}

impl TryFrom<DeidSettingsFields> for DeidSettings {
    type Error = &'static str;

    fn try_from(fields: DeidSettingsFields) -> Result<Self, Self::Error> {
        if fields.max_suppression_fraction.is_some() {
            return Err(REMOVED_SUPPRESSION_LIMIT);
        }
        Ok(DeidSettings {
            key_path: fields.key_path,
            report_dir: fields.report_dir,
            k: fields.k,
            l: fields.l,
        })
    }
}

/// One input table and the role of each of its columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceConfig {
    /// Where the rows come from.
    #[serde(flatten)]
    pub input: Input,
    /// The column holding the customer id the sources are joined on; it must have the
    /// `identifier` role and is replaced by its keyed pseudonym before anything else sees it.
    pub customer_id: String,
    /// For the transaction log: the `feature` column holding the product category, if any.
    #[serde(default)]
    pub category: Option<String>,
    /// For the transaction log: the `feature` column holding the sales channel, if any.
    #[serde(default)]
    pub channel: Option<String>,
    /// Role of every column (`identifier`, `quasi_identifier`, `sensitive`, `feature`,
    /// `timestamp`, `amount`, `text` or `drop`).
    pub columns: BTreeMap<String, ColumnRole>,
    /// What to do with columns of the input that `columns` does not name.
    #[serde(default)]
    pub undeclared_columns: UndeclaredColumns,
    /// Where rejected rows are written, with identifiers redacted and PII removed.
    #[serde(default)]
    pub rejects_path: Option<PathBuf>,
    /// Abort when more than this fraction of rows is rejected.
    #[serde(default = "default_max_reject_fraction")]
    pub max_reject_fraction: f64,
}

fn default_max_reject_fraction() -> f64 {
    DEFAULT_MAX_REJECT_FRACTION
}

/// How columns missing from [`SourceConfig::columns`] are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UndeclaredColumns {
    /// The load fails, naming the column: nothing passes through without a declared role.
    #[default]
    Error,
    /// The column is dropped and listed as dropped in the report. Used for the older config
    /// form, which named only the columns it read.
    Drop,
}

/// Where one table's rows come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "format", rename_all = "snake_case", deny_unknown_fields)]
pub enum Input {
    /// A delimited text file with a header row.
    Csv {
        /// The file.
        path: PathBuf,
        /// Field separator; sniffed from the first lines when absent.
        #[serde(default)]
        delimiter: Option<char>,
        /// Character encoding of the file.
        #[serde(default)]
        encoding: TextEncoding,
    },
    /// A Parquet file; top-level columns are read by name.
    Parquet {
        /// The file.
        path: PathBuf,
    },
    /// A PostgreSQL table or query, streamed with `COPY ... TO STDOUT`.
    Postgres {
        /// A libpq-style connection URL or key-value string. It is never printed, since it may
        /// carry a password.
        url: String,
        /// A table name, optionally schema-qualified (`crm.customers`).
        #[serde(default)]
        table: Option<String>,
        /// A `SELECT` query, instead of `table`.
        #[serde(default)]
        query: Option<String>,
    },
}

/// Character encodings accepted for CSV files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TextEncoding {
    /// UTF-8, with or without a byte-order mark.
    #[default]
    #[serde(alias = "utf8")]
    Utf8,
    /// GBK (decoded as its superset GB18030 by the WHATWG rules); a file that starts with a
    /// UTF-8 byte-order mark is read as UTF-8.
    Gbk,
}

impl Input {
    /// A description for messages: the file path, or the table for a database. Never the URL.
    pub fn describe(&self) -> String {
        match self {
            Input::Csv { path, .. } | Input::Parquet { path } => path.display().to_string(),
            Input::Postgres {
                table: Some(table), ..
            } => format!("PostgreSQL table {table}"),
            Input::Postgres { .. } => "PostgreSQL query".to_owned(),
        }
    }

    fn resolve_paths(&mut self, base: &Path) {
        match self {
            Input::Csv { path, .. } | Input::Parquet { path } => *path = resolve(base, path),
            Input::Postgres { .. } => {}
        }
    }
}

impl SourceConfig {
    /// See [`Input::describe`].
    pub fn describe(&self) -> String {
        self.input.describe()
    }
}

impl PartnerDataConfig {
    /// A description of the transaction source for messages.
    pub fn describe(&self) -> String {
        self.transactions.describe()
    }

    /// Makes every relative path relative to `base` (the folder of the config file), so a
    /// config can travel with its data.
    pub fn resolve_paths(&mut self, base: &Path) {
        for source in std::iter::once(&mut self.transactions).chain(self.profile.as_mut()) {
            source.input.resolve_paths(base);
            source.rejects_path = source.rejects_path.as_ref().map(|path| resolve(base, path));
        }
        self.deid.key_path = resolve(base, &self.deid.key_path);
        self.deid.report_dir = resolve(base, &self.deid.report_dir);
    }
}

fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_owned()
    } else {
        base.join(path)
    }
}

/// The older form: one comma-separated (or `delimiter`-separated) UTF-8 transaction file
/// with a column mapping. Its customer id becomes the pseudonymised identifier, its
/// timestamp and amount keep their roles, quantity, category and channel are features, and
/// every other column is dropped. The key and reports sit next to the data file
/// (`<stem>.pseudonym.key`, `<stem>.deid/`). Without quasi-identifiers there are no
/// equivalence classes to measure, so k = 1 states that honestly rather than pretending.
impl From<CsvSource> for PartnerDataConfig {
    fn from(source: CsvSource) -> Self {
        let mapping = &source.columns;
        let mut columns = BTreeMap::new();
        columns.insert(mapping.customer_id.clone(), ColumnRole::Identifier);
        columns.insert(mapping.timestamp.clone(), ColumnRole::Timestamp);
        columns.insert(mapping.amount.clone(), ColumnRole::Amount);
        for feature in [&mapping.quantity, &mapping.category, &mapping.channel]
            .into_iter()
            .flatten()
        {
            columns.insert(feature.clone(), ColumnRole::Feature);
        }
        let stem = source
            .path
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_else(|| "partner".to_owned());
        let folder = source
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        PartnerDataConfig {
            transactions: SourceConfig {
                input: Input::Csv {
                    path: source.path.clone(),
                    delimiter: Some(source.delimiter),
                    encoding: TextEncoding::Utf8,
                },
                customer_id: mapping.customer_id.clone(),
                category: mapping.category.clone(),
                channel: mapping.channel.clone(),
                columns,
                undeclared_columns: UndeclaredColumns::Drop,
                rejects_path: source.rejects_path.clone(),
                max_reject_fraction: source.max_reject_fraction,
            },
            profile: None,
            deid: DeidSettings {
                key_path: folder.join(format!("{stem}.pseudonym.key")),
                report_dir: folder.join(format!("{stem}.deid")),
                k: 1,
                l: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_config_parses_from_toml() {
        let text = r#"
            [transactions]
            format = "csv"
            path = "tx.csv"
            encoding = "gbk"
            customer_id = "cust"
            category = "cat"
            [transactions.columns]
            cust = "identifier"
            ts = "timestamp"
            amount = "amount"
            cat = "feature"

            [profile]
            format = "postgres"
            url = "host=127.0.0.1"
            table = "customers"
            customer_id = "id"
            [profile.columns]
            id = "identifier"
            age = { quasi_identifier = { kind = "age_band", width = 10 } }

            [deid]
            key_path = "key"
            report_dir = "reports"
            k = 5
        "#;
        let mut config: PartnerDataConfig =
            toml::from_str(text).unwrap_or_else(|error| panic!("{error}"));
        config.resolve_paths(Path::new("/etc/veil"));
        assert_eq!(
            config.transactions.input,
            Input::Csv {
                path: PathBuf::from("/etc/veil/tx.csv"),
                delimiter: None,
                encoding: TextEncoding::Gbk
            }
        );
        assert_eq!(
            config
                .profile
                .as_ref()
                .map(SourceConfig::describe)
                .as_deref(),
            Some("PostgreSQL table customers")
        );
        assert_eq!(config.deid.key_path, PathBuf::from("/etc/veil/key"));
        assert_eq!(config.transactions.max_reject_fraction, 0.1);
    }

    #[test]
    fn the_removed_suppression_limit_is_refused_naming_what_replaces_it() {
        let text = r#"
            key_path = "key"
            report_dir = "reports"
            k = 5
            max_suppression_fraction = 0.05
        "#;
        let error = toml::from_str::<DeidSettings>(text).map(|_| ());
        let message = format!("{error:?}");
        for expected in [
            "max_suppression_fraction is no longer read",
            "never suppressed",
            "age_band `width`",
            "postcode_prefix `length`",
        ] {
            assert!(message.contains(expected), "{expected:?} in {message}");
        }
        // Without the key the same settings load, and a typo is still an unknown field.
        let without = text.replace("max_suppression_fraction = 0.05", "");
        let settings: DeidSettings =
            toml::from_str(&without).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!((settings.k, settings.l), (5, None));
        let typo = text.replace("max_suppression_fraction = 0.05", "ell = 2");
        let error = toml::from_str::<DeidSettings>(&typo).map(|_| ());
        assert!(format!("{error:?}").contains("ell"), "{error:?}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let text = r#"
            format = "parquet"
            path = "x.parquet"
            delimeter = ";"
            customer_id = "id"
            [columns]
            id = "identifier"
        "#;
        let error = toml::from_str::<SourceConfig>(text).map(|_| ());
        assert!(
            format!("{error:?}").contains("delimeter"),
            "a misspelt key must be named: {error:?}"
        );
    }

    #[test]
    fn legacy_csv_source_converts_with_roles_and_local_key() {
        let mut source = CsvSource::new("/data/partner-a.csv");
        source.columns.channel = Some("channel".to_owned());
        let config = PartnerDataConfig::from(source);
        assert_eq!(
            config.transactions.columns.get("customer_id"),
            Some(&ColumnRole::Identifier)
        );
        assert_eq!(
            config.transactions.columns.get("channel"),
            Some(&ColumnRole::Feature)
        );
        assert_eq!(
            config.transactions.undeclared_columns,
            UndeclaredColumns::Drop
        );
        assert_eq!(
            config.deid.key_path,
            PathBuf::from("/data/partner-a.pseudonym.key")
        );
    }
}
