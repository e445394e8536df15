//! The node's one configuration file: who it is, where the coordinator is,
//! and where its data lives.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;
use veil_features::CsvSource;

use crate::identity::default_state_dir;
use crate::policy::NodePolicy;

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
    /// Where the node keeps its identity key and other durable state
    /// (default: `<node_id>.state` next to the config file).
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// The partner's policy.
    #[serde(default)]
    pub policy: NodePolicy,
}

impl NodeConfig {
    /// The state folder: as configured, or `<node_id>.state` in the working
    /// folder for configs built in code.
    pub fn state_dir(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| default_state_dir(Path::new("."), &self.node_id))
    }

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
        config.state_dir = Some(match &config.state_dir {
            Some(dir) => resolve(base, dir),
            None => default_state_dir(base, &config.node_id),
        });
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
