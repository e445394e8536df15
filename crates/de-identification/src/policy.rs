//! The de-identification policy: which role each column plays, how each quasi-identifier is
//! generalised, and the k / l targets the generalised data is measured against.
//!
//! The policy is read from the node configuration with serde. It deliberately has no `Default`:
//! every deployment must decide its own k and its own generalisation rules.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::error::DeidError;

/// What a column is, and therefore what de-identification does to it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnRole {
    /// A direct identifier (customer id, email, phone): replaced by a keyed pseudonym.
    Identifier,
    /// An attribute that could re-identify in combination (age, postcode...): generalised row by
    /// row by its declared rule, which never looks at other rows; k-anonymity of the result is
    /// measured and reported, not enforced on rows that feed training.
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

/// How a quasi-identifier is coarsened. Level 0 is the configured coarsening: fixed bands,
/// prefixes and maps declared here, applied to each row on its own, and the only level rows that
/// feed training ever get. Each rule also defines coarser levels, ending in `*` (value
/// suppressed), which only [`crate::Deidentifier::enforce_k_anonymity_for_export`] uses.
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
#[serde(try_from = "DeidPolicyFields")]
pub struct DeidPolicy {
    /// Every input column with its role, in the order records present their values. An input column
    /// without an entry is an error, never silently passed through.
    pub columns: Vec<ColumnPolicy>,
    /// The smallest equivalence class over the generalised quasi-identifiers that the partner
    /// wants. [`crate::Deidentifier::measure_k_anonymity`] reports whether the declared
    /// generalisation reaches it; only a row-level export enforces it.
    pub k: usize,
    /// Minimum number of distinct values of every sensitive column within each class (distinct
    /// l-diversity), measured like `k`; `None` states no target.
    pub l: Option<usize>,
}

/// Message for a policy that still sets the suppression limit of the old training path.
const REMOVED_SUPPRESSION_LIMIT: &str = "`max_suppression_fraction` is no longer part of the \
    de-identification policy: rows that feed training are never suppressed, because suppressing a \
    customer because of other customers' rows would break the one-customer adjacency DP-SGD is \
    charged for (docs/de-identification.md, section 6). Remove the key; to reach k, coarsen the \
    quasi-identifiers' own rules (`width`, `length`, `to_region`). A row-level export passes its \
    limit to `enforce_k_anonymity_for_export`.";

/// The policy as written, so a key that was removed can be refused with an explanation rather
/// than the bare "unknown field" of `deny_unknown_fields`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeidPolicyFields {
    columns: Vec<ColumnPolicy>,
    k: usize,
    #[serde(default)]
    l: Option<usize>,
    #[serde(default)]
    max_suppression_fraction: Option<serde::de::IgnoredAny>,
}

impl TryFrom<DeidPolicyFields> for DeidPolicy {
    type Error = &'static str;

    fn try_from(fields: DeidPolicyFields) -> Result<Self, Self::Error> {
        if fields.max_suppression_fraction.is_some() {
            return Err(REMOVED_SUPPRESSION_LIMIT);
        }
        Ok(DeidPolicy {
            columns: fields.columns,
            k: fields.k,
            l: fields.l,
        })
    }
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
