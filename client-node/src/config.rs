//! The node's one configuration file: who it is, where the coordinator is,
//! where its data lives and how it is de-identified.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Deserializer, Serialize};
use veil_behaviour_features::CsvSource;
use veil_partner_data::PartnerDataConfig;
use veil_pki::MemberFiles;
use veil_privacy_audit::canary::{AuditKit, AuditSeed};

use crate::identity::default_state_dir;
use crate::policy::NodePolicy;

/// An audit kit as the node holds it. The file is read when an audit job
/// naming this node arrives, so a partner installs a kit without a restart.
#[derive(Debug, Clone)]
pub struct InstalledKit {
    /// The auditor's seed (its `Debug` never shows it).
    pub seed: AuditSeed,
    /// SHA-256 of the seed: the audit job must name it.
    pub commitment: [u8; 32],
    /// How many canaries the kit asks for.
    pub canaries: usize,
}

impl InstalledKit {
    /// Reads and checks a kit file.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read privacy audit kit {}", path.display()))?;
        let kit: AuditKit = toml::from_str(&text)
            .with_context(|| format!("privacy audit kit {}", path.display()))?;
        let seed = kit
            .audit_seed()
            .with_context(|| format!("privacy audit kit {}", path.display()))?;
        Ok(Self {
            commitment: seed.commitment(),
            seed,
            canaries: usize::try_from(kit.canaries)
                .with_context(|| format!("privacy audit kit {}: canaries", path.display()))?,
        })
    }
}

/// A node configuration, read from TOML.
///
/// The `[data]` section is a [`PartnerDataConfig`]: the transaction log and an optional
/// customer profile table (CSV, Parquet or PostgreSQL), the role of every column, and the
/// de-identification settings (see its documentation and `docs/de-identification.md`):
///
/// ```toml
/// node_id = "retailer-a"
/// coordinator = "http://127.0.0.1:50051"
///
/// [data.transactions]
/// format = "csv"
/// path = "data/retailer-a.csv"
/// customer_id = "cust"
/// rejects_path = "data/retailer-a.rejects.csv"
/// [data.transactions.columns]
/// cust = "identifier"
/// ts = "timestamp"
/// amount = "amount"
///
/// [data.deid]
/// key_path = "state/pseudonym.key"
/// report_dir = "state/deid-report"
/// k = 5
/// ```
///
/// The older form, a single CSV file with `path`, `rejects_path`, `max_reject_fraction`,
/// `delimiter` and `[data.columns]` directly under `[data]`, is still read; it is converted as
/// described at `impl From<CsvSource> for PartnerDataConfig`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's identity at the coordinator.
    pub node_id: String,
    /// The coordinator's address, `http://host:port`.
    pub coordinator: String,
    /// The partner's data sources and their de-identification.
    #[serde(deserialize_with = "data_section")]
    pub data: PartnerDataConfig,
    /// Where the node keeps its identity key and other durable state
    /// (default: `<node_id>.state` next to the config file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
    /// The partner's policy.
    #[serde(default)]
    pub policy: NodePolicy,
    /// The node's mTLS folder: `ca.pem`, `<node_id>.pem` and
    /// `<node_id>-key.pem`, as `coordinator ca issue` writes them. The
    /// certificate's key is also the node's secure-aggregation identity,
    /// `ca.pem` authenticates its peers, and `revoked.txt` (when present, a
    /// copy of the federation's revocation list) withdraws peers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_dir: Option<PathBuf>,
    /// Run without `tls_dir`: plaintext to the coordinator and peers' keys
    /// taken as relayed. For local development only; without this flag a
    /// node with no `tls_dir` refuses to start.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_dev: bool,
    /// An auditor's privacy-test kit (`coordinator audit privacy-test`
    /// writes it; the auditor hands it over out of band). With
    /// `policy.allow_privacy_audits`, the node adds the kit's canaries to its
    /// training rows in the one audit job whose commitment matches the kit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy_audit_kit: Option<PathBuf>,
}

/// Reads `[data]` in the current form when it has a `transactions` table, else in the older
/// single-file form.
fn data_section<'de, D: Deserializer<'de>>(deserializer: D) -> Result<PartnerDataConfig, D::Error> {
    let table = toml::Table::deserialize(deserializer)?;
    if table.contains_key("transactions") {
        PartnerDataConfig::deserialize(table).map_err(serde::de::Error::custom)
    } else {
        CsvSource::deserialize(table)
            .map(PartnerDataConfig::from)
            .map_err(serde::de::Error::custom)
    }
}

impl NodeConfig {
    /// The state folder: as configured, or `<node_id>.state` in the working
    /// folder for configs built in code.
    pub fn state_dir(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| default_state_dir(Path::new("."), &self.node_id))
    }

    /// The node's TLS files, when mTLS is configured.
    pub fn tls_files(&self) -> Option<MemberFiles> {
        self.tls_dir
            .as_ref()
            .map(|dir| MemberFiles::in_folder(dir, &self.node_id))
    }

    /// Reads a configuration file; relative paths (data, rejects, key, reports,
    /// state) are taken relative to the file's folder, so a config can travel
    /// with its data.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read node config {}", path.display()))?;
        let mut config: NodeConfig =
            toml::from_str(&text).with_context(|| format!("node config {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.data.resolve_paths(base);
        config.tls_dir = config.tls_dir.map(|dir| base.join(dir));
        config.privacy_audit_kit = config.privacy_audit_kit.map(|kit| base.join(kit));
        config.state_dir = Some(match &config.state_dir {
            Some(dir) if dir.is_absolute() => dir.clone(),
            Some(dir) => base.join(dir),
            None => default_state_dir(base, &config.node_id),
        });
        Ok(config)
    }

    /// The audit kit's path, when one is named; a kit without the policy's
    /// consent is an error, so it cannot be mistaken for a running audit.
    pub fn audit_kit_path(&self) -> anyhow::Result<Option<&Path>> {
        match &self.privacy_audit_kit {
            Some(path) if !self.policy.allow_privacy_audits => anyhow::bail!(
                "node '{}': privacy_audit_kit {} is set but policy.allow_privacy_audits is false",
                self.node_id,
                path.display()
            ),
            other => Ok(other.as_deref()),
        }
    }

    /// The configuration as TOML, in the current form, for writing a config file.
    pub fn to_toml(&self) -> anyhow::Result<String> {
        toml::to_string(self).context("serialising the node config")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_and_current_forms_both_read_and_round_trip() {
        let folder = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let legacy = folder.path().join("legacy.toml");
        std::fs::write(
            &legacy,
            "node_id = \"a\"\ncoordinator = \"http://127.0.0.1:1\"\n[data]\npath = \"a.csv\"\nrejects_path = \"a.rejects.csv\"\n[data.columns]\ncustomer_id = \"cust\"\n",
        )
        .unwrap_or_else(|error| panic!("{error}"));
        let config = NodeConfig::read(&legacy).unwrap_or_else(|error| panic!("{error:#}"));
        assert_eq!(config.data.transactions.customer_id, "cust");
        assert_eq!(
            config.data.deid.key_path,
            folder.path().join("a.pseudonym.key")
        );
        let current = folder.path().join("current.toml");
        std::fs::write(
            &current,
            config.to_toml().unwrap_or_else(|error| panic!("{error:#}")),
        )
        .unwrap_or_else(|error| panic!("{error}"));
        let reread = NodeConfig::read(&current).unwrap_or_else(|error| panic!("{error:#}"));
        assert_eq!(reread.data, config.data);
    }
}
