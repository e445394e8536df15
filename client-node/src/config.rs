//! The node's one configuration file: who it is, where the coordinator is,
//! and where its data lives.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;
use veil_features::CsvSource;

/// A node configuration, read from TOML.
///
/// ```toml
/// node_id = "retailer-a"
/// coordinator = "http://127.0.0.1:50051"
///
/// [data]
/// path = "data/retailer-a.csv"
/// rejects_path = "data/retailer-a.rejects.csv"
/// max_reject_fraction = 0.05
/// [data.columns]
/// customer_id = "cust"
/// timestamp = "ts"
/// amount = "amount"
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's identity at the coordinator.
    pub node_id: String,
    /// The coordinator's address, `http://host:port`.
    pub coordinator: String,
    /// The partner's transaction log.
    pub data: CsvSource,
}

impl NodeConfig {
    /// Reads a configuration file; relative data paths are taken relative to
    /// the file's folder, so a config can travel with its data.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read node config {}", path.display()))?;
        let mut config: NodeConfig =
            toml::from_str(&text).with_context(|| format!("node config {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.data.path = resolve(base, &config.data.path);
        config.data.rejects_path = config.data.rejects_path.as_ref().map(|p| resolve(base, p));
        Ok(config)
    }
}

fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_owned()
    } else {
        base.join(path)
    }
}
