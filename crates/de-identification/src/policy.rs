//! The de-identification policy: which role each column plays, and the k / l / suppression targets.
//!
//! The policy is read from the node configuration with serde. It deliberately has no `Default`:
//! every deployment must decide its own k and suppression limit.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::error::DeidError;

/// What a column is, and therefore what de-identification does to it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnRole {
    /// A direct identifier (customer id, email, phone): replaced by a keyed pseudonym.
    Identifier,
    /// An attribute that could re-identify in combination (age, postcode...): generalised, then
    /// held to k-anonymity.
    QuasiIdentifier(GeneralisationPolicy),
    /// The attribute the model learns or an auditor protects (churned, segment): kept, PII-redacted,
    /// and checked for l-diversity within each equivalence class.
    Sensitive,
    /// A numeric or categorical behaviour feature: kept, PII-redacted.
    Feature,
    /// An event time: kept, PII-redacted; time coarsening belongs to feature extraction.
    Timestamp,
    /// A monetary amount: kept, PII-redacted.
    Amount,
    /// Free text (notes, merchant descriptions): PII-redacted.
    Text,
    /// Removed from the output entirely.
    Drop,
}

/// How a quasi-identifier is coarsened. Each rule defines a hierarchy of levels: level 0 is the
/// configured coarsening and each further level is coarser, ending in `*` (value suppressed).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum GeneralisationPolicy {
    /// Integer ages become bands `lo-hi` of `width` years; each level up doubles the width.
    AgeBand {
        /// Band width in years at level 0.
        width: u32,
    },
    /// A birth date (`YYYY-MM-DD`, `YYYY/MM/DD` or `YYYYMMDD`) becomes its year, then its decade.
    BirthDateToYear,
    /// Gender is kept as given (trimmed) or suppressed outright.
    Gender {
        /// Suppress the value at level 0 instead of keeping it.
        suppress: bool,
    },
    /// A postcode is cut to its first `length` characters; each level up removes one more.
    PostcodePrefix {
        /// Number of leading characters kept at level 0.
        length: usize,
    },
    /// A city is kept, or mapped to its region through `region_map`.
    City {
        /// Map to the region at level 0 instead of keeping the city.
        to_region: bool,
        /// City name (trimmed, exact) to region name; cities absent from the map become `*`
        /// whenever the region is used.
        #[serde(default)]
        region_map: BTreeMap<String, String>,
    },
}

/// One input column and its role.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnPolicy {
    /// Column name as it appears in the input header.
    pub name: String,
    /// What de-identification does to the column.
    pub role: ColumnRole,
}

/// The whole de-identification configuration for one data source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeidPolicy {
    /// Every input column with its role, in the order records present their values. An input column
    /// without an entry is an error, never silently passed through.
    pub columns: Vec<ColumnPolicy>,
    /// Minimum size of every released equivalence class over the quasi-identifiers.
    pub k: usize,
    /// Minimum number of distinct values of every sensitive column within each released class
    /// (distinct l-diversity); `None` skips the check.
    #[serde(default)]
    pub l: Option<usize>,
    /// Largest fraction of records the k-anonymity pass may suppress. Generalisation continues
    /// until the records still failing k (or l) fit within it; if even full generalisation cannot
    /// get there, the job is rejected with [`DeidError::SuppressionAboveLimit`].
    pub max_suppression_fraction: f64,
}

impl DeidPolicy {
    /// Checks the policy for values that would make de-identification meaningless or ambiguous.
    pub fn validate(&self) -> Result<(), DeidError> {
        if self.columns.is_empty() {
            return Err(DeidError::EmptyPolicy);
        }
        if self.k == 0 {
            return Err(DeidError::ZeroK);
        }
        if self.l == Some(0) {
            return Err(DeidError::ZeroL);
        }
        // The negated comparison also rejects NaN.
        if !(0.0..=1.0).contains(&self.max_suppression_fraction) {
            return Err(DeidError::InvalidSuppressionFraction {
                value: self.max_suppression_fraction,
            });
        }
        let mut seen = HashSet::with_capacity(self.columns.len());
        for column in &self.columns {
            if !seen.insert(column.name.as_str()) {
                return Err(DeidError::DuplicateColumn {
                    column: column.name.clone(),
                });
            }
            if let ColumnRole::QuasiIdentifier(rule) = &column.role {
                validate_generalisation(&column.name, rule)?;
            }
        }
        Ok(())
    }

    /// Returns a copy of the policy with its columns in the order of `header`, so records read
    /// from a file can be passed straight to the engine. Every header column needs a role and
    /// every policy column must be present.
    pub fn reordered_for_header(&self, header: &[&str]) -> Result<DeidPolicy, DeidError> {
        let mut columns = Vec::with_capacity(header.len());
        for name in header {
            let column = self
                .columns
                .iter()
                .find(|column| column.name == *name)
                .ok_or_else(|| DeidError::ColumnWithoutRole {
                    column: (*name).to_owned(),
                })?;
            columns.push(column.clone());
        }
        if let Some(missing) = self
            .columns
            .iter()
            .find(|column| !header.contains(&column.name.as_str()))
        {
            return Err(DeidError::ColumnMissingFromInput {
                column: missing.name.clone(),
            });
        }
        let reordered = DeidPolicy {
            columns,
            k: self.k,
            l: self.l,
            max_suppression_fraction: self.max_suppression_fraction,
        };
        reordered.validate()?;
        Ok(reordered)
    }
}

fn validate_generalisation(column: &str, rule: &GeneralisationPolicy) -> Result<(), DeidError> {
    let invalid = |reason| {
        Err(DeidError::InvalidGeneralisation {
            column: column.to_owned(),
            reason,
        })
    };
    match rule {
        GeneralisationPolicy::AgeBand { width: 0 } => invalid("age band width must be at least 1"),
        GeneralisationPolicy::PostcodePrefix { length: 0 } => {
            invalid("postcode prefix length must be at least 1; use the Drop role to remove it")
        }
        GeneralisationPolicy::City {
            to_region: true,
            region_map,
        } if region_map.is_empty() => invalid("mapping cities to regions needs a region_map"),
        _ => Ok(()),
    }
}
