//! k-anonymity and distinct l-diversity over quasi-identifier tuples, in two forms:
//!
//! - [`measure`]: the equivalence classes of the declared (level-0) generalisation, reported and
//!   nothing else. This is what rows that feed training get: a record's generalised values depend
//!   on that record alone, and no record is dropped because of the others, so adding or removing
//!   one customer changes no other customer's data (the adjacency DP-SGD is charged for).
//! - [`enforce`]: Sweeney's Datafly heuristic with global recoding, for a row-level export only:
//!   while too many records sit in classes that fail k or l, generalise one more level the
//!   quasi-identifier column with the most distinct values; then suppress the records still
//!   failing. Its levels and suppressions are chosen from the whole table, so it must never
//!   shape training data.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::DeidError;
use crate::generalise::{generalise_at_level, top_level};
use crate::policy::GeneralisationPolicy;

/// The quasi-identifier and sensitive values of one record, as compact ids into the dictionaries
/// of the [`crate::Deidentifier`] that produced it. Holding ids instead of strings is what lets
/// the pass keep a million records in memory cheaply; the raw values never leave the engine.
/// The default value (row 0, no ids) only serves as a placeholder in a reused [`DeidRecord`]:
/// the pass refuses it unless the engine has no quasi-identifier or sensitive column.
///
/// [`DeidRecord`]: crate::DeidRecord
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QuasiIdentifierTuple {
    /// Position of the record in the input stream, to join the pass's result back to the row.
    pub row_index: u64,
    /// Dictionary ids: one per quasi-identifier column, then one per sensitive column.
    pub(crate) value_ids: Box<[u32]>,
}

/// The final quasi-identifier values of one record that survived the export pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeptQuasiIdentifiers {
    /// Position of the record in the input stream.
    pub row_index: u64,
    /// Generalised values, one per quasi-identifier column in policy order; they replace the
    /// level-0 values of the record's output in the exported row. Shared, because few distinct
    /// values exist after generalisation.
    pub values: Vec<Arc<str>>,
}

/// Whether a k-anonymity report describes data as it is or data that was made k-anonymous.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KAnonymityMode {
    /// The classes of the declared generalisation were measured; nothing was generalised
    /// further and nothing was suppressed. Rows that feed training are only ever measured.
    Measured,
    /// The pass generalised columns further (global recoding) and suppressed failing records,
    /// as a row-level export must.
    EnforcedForExport,
}

/// How far one quasi-identifier column was generalised.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GeneralisationLevel {
    /// Column name.
    pub column: String,
    /// Level reached (0 = the configured coarsening).
    pub level: usize,
    /// Level at which every value is `*`.
    pub top_level: usize,
}

/// What a k-anonymity measurement or pass found. Holds counts and column names only, never values.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KAnonymityReport {
    /// Whether the classes were only measured or made to meet the targets.
    pub mode: KAnonymityMode,
    /// The k the policy asks for.
    pub k_required: usize,
    /// The distinct l the policy asks for, if any.
    pub l_required: Option<usize>,
    /// Size of the smallest released equivalence class (for a measurement: of the smallest class,
    /// which may be below `k_required`); `None` when nothing was released.
    pub k_achieved: Option<u64>,
    /// Fewest distinct values of any sensitive column within any released class; `None` when
    /// there is no sensitive column or nothing was released.
    pub l_achieved: Option<u64>,
    /// Records submitted to the measurement or pass.
    pub records_in: u64,
    /// Records released.
    pub records_kept: u64,
    /// Records withheld because their class still failed k or l after generalisation; always 0
    /// for a measurement.
    pub records_suppressed: u64,
    /// Number of released equivalence classes.
    pub equivalence_classes: u64,
    /// Released class size → number of classes of that size.
    pub class_size_histogram: BTreeMap<u64, u64>,
    /// Generalisation level reached by each quasi-identifier column; all 0 for a measurement.
    pub generalisation_levels: Vec<GeneralisationLevel>,
}

impl KAnonymityReport {
    /// Whether the classes reached the required k and, when one is required, l. An empty input
    /// has no class to single anyone out of, so it meets any target.
    pub fn meets_targets(&self) -> bool {
        let k_met = self
            .k_achieved
            .is_none_or(|achieved| achieved >= self.k_required as u64);
        let l_met = match (self.l_required, self.l_achieved) {
            (Some(required), Some(achieved)) => achieved >= required as u64,
            _ => true,
        };
        k_met && l_met
    }
}

/// The targets, taken from the policy.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Targets {
    pub(crate) k: usize,
    pub(crate) l: Option<usize>,
}

/// One quasi-identifier column as the pass sees it: its rule and the distinct raw values seen.
pub(crate) struct QuasiIdentifierDomain<'engine> {
    pub(crate) column: &'engine str,
    pub(crate) rule: &'engine GeneralisationPolicy,
    pub(crate) raw_values: &'engine [String],
}

/// One column's generalisation at a given level: raw id → generalised id → generalised value.
struct LevelTable {
    generalised_ids: Vec<u32>,
    values: Vec<Arc<str>>,
}

impl LevelTable {
    fn build(domain: &QuasiIdentifierDomain<'_>, level: usize) -> LevelTable {
        let mut ids_by_value: HashMap<String, u32> = HashMap::new();
        let mut values = Vec::new();
        let generalised_ids = domain
            .raw_values
            .iter()
            .map(|raw| {
                let generalised = generalise_at_level(raw, domain.rule, level);
                *ids_by_value.entry(generalised).or_insert_with_key(|value| {
                    values.push(Arc::from(value.as_str()));
                    // Dictionary sizes are bounded by the u32 ids the engine hands out.
                    u32::try_from(values.len() - 1).unwrap_or(u32::MAX)
                })
            })
            .collect();
        LevelTable {
            generalised_ids,
            values,
        }
    }

    fn generalised_id(&self, raw_id: u32) -> u32 {
        // Tuples are validated against the dictionaries before the pass, so the id is in range.
        self.generalised_ids
            .get(raw_id as usize)
            .copied()
            .unwrap_or_default()
    }
}

/// The equivalence classes of the tuples at the current levels.
struct Classes {
    class_of_record: Vec<u32>,
    sizes: Vec<u64>,
}

/// Measures the classes of the declared generalisation (level 0 of every column) without
/// changing or dropping any record. `sensitive_value_counts` holds the dictionary size of each
/// sensitive column.
pub(crate) fn measure(
    domains: &[QuasiIdentifierDomain<'_>],
    sensitive_value_counts: &[usize],
    tuples: &[QuasiIdentifierTuple],
    targets: Targets,
) -> Result<KAnonymityReport, DeidError> {
    validate_tuples(domains, sensitive_value_counts, tuples)?;
    let tables: Vec<LevelTable> = domains
        .iter()
        .map(|domain| LevelTable::build(domain, 0))
        .collect();
    let classes = assign_classes(tuples, &tables);
    let nothing_fails = vec![false; classes.sizes.len()];
    Ok(summarise(
        Summary {
            domains,
            has_sensitive_columns: !sensitive_value_counts.is_empty(),
            tuples,
            classes: &classes,
            failing: &nothing_fails,
            levels: &vec![0; domains.len()],
            targets,
            mode: KAnonymityMode::Measured,
        },
        tuples.len() as u64,
    ))
}

/// Runs the Datafly pass for a row-level export. `sensitive_value_counts` holds the dictionary
/// size of each sensitive column.
pub(crate) fn enforce(
    domains: &[QuasiIdentifierDomain<'_>],
    sensitive_value_counts: &[usize],
    tuples: Vec<QuasiIdentifierTuple>,
    targets: Targets,
    max_suppression_fraction: f64,
) -> Result<(Vec<KeptQuasiIdentifiers>, KAnonymityReport), DeidError> {
    // The negated comparison also rejects NaN.
    if !(0.0..=1.0).contains(&max_suppression_fraction) {
        return Err(DeidError::InvalidSuppressionFraction {
            value: max_suppression_fraction,
        });
    }
    validate_tuples(domains, sensitive_value_counts, &tuples)?;
    let record_count = tuples.len() as u64;
    // Flooring keeps the limit conservative: never more suppression than the caller allows.
    let suppression_limit = (max_suppression_fraction * record_count as f64).floor() as u64;
    let top_levels: Vec<usize> = domains
        .iter()
        .map(|domain| top_level(domain.rule))
        .collect();
    let mut levels = vec![0usize; domains.len()];
    let mut tables: Vec<LevelTable> = domains
        .iter()
        .map(|domain| LevelTable::build(domain, 0))
        .collect();
    let l_for_loop = targets
        .l
        .filter(|l| *l > 1 && !sensitive_value_counts.is_empty());
    let (classes, failing) = loop {
        let classes = assign_classes(&tuples, &tables);
        let diversity =
            l_for_loop.map(|_| min_distinct_sensitive(&tuples, domains.len(), &classes));
        let failing: Vec<bool> = classes
            .sizes
            .iter()
            .enumerate()
            .map(|(class, size)| {
                let too_small = *size < targets.k as u64;
                let not_diverse = match (&diversity, l_for_loop) {
                    (Some(diversity), Some(l)) => {
                        diversity.get(class).copied().unwrap_or_default() < l as u64
                    }
                    _ => false,
                };
                too_small || not_diverse
            })
            .collect();
        let failing_records: u64 = classes
            .sizes
            .iter()
            .zip(&failing)
            .filter(|(_, failing)| **failing)
            .map(|(size, _)| size)
            .sum();
        if failing_records <= suppression_limit {
            break (classes, failing);
        }
        // Datafly: the column with the most distinct values contributes most to small classes.
        let next_column = (0..domains.len())
            .filter(|column| levels.get(*column) < top_levels.get(*column))
            .max_by_key(|column| tables.get(*column).map_or(0, |table| table.values.len()));
        let Some(column) = next_column else {
            return Err(DeidError::SuppressionAboveLimit {
                suppressed: failing_records,
                total: record_count,
                limit: suppression_limit,
            });
        };
        if let (Some(level), Some(table), Some(domain)) = (
            levels.get_mut(column),
            tables.get_mut(column),
            domains.get(column),
        ) {
            *level += 1;
            *table = LevelTable::build(domain, *level);
        }
    };

    let mut kept = Vec::with_capacity(tuples.len());
    let mut kept_class_of_record = Vec::with_capacity(tuples.len());
    for (tuple, class) in tuples.iter().zip(&classes.class_of_record) {
        if failing.get(*class as usize).copied().unwrap_or(true) {
            continue;
        }
        let values = tables
            .iter()
            .zip(tuple.value_ids.iter())
            .map(|(table, raw_id)| {
                let generalised = table.generalised_id(*raw_id) as usize;
                table
                    .values
                    .get(generalised)
                    .cloned()
                    .unwrap_or_else(|| Arc::from("*"))
            })
            .collect();
        kept.push(KeptQuasiIdentifiers {
            row_index: tuple.row_index,
            values,
        });
        kept_class_of_record.push(*class);
    }

    let report = summarise(
        Summary {
            domains,
            has_sensitive_columns: !sensitive_value_counts.is_empty(),
            tuples: &tuples,
            classes: &classes,
            failing: &failing,
            levels: &levels,
            targets,
            mode: KAnonymityMode::EnforcedForExport,
        },
        kept.len() as u64,
    );
    Ok((kept, report))
}

/// What [`summarise`] reads: the classes at the final levels and which of them are withheld.
struct Summary<'pass, 'engine> {
    domains: &'pass [QuasiIdentifierDomain<'engine>],
    has_sensitive_columns: bool,
    tuples: &'pass [QuasiIdentifierTuple],
    classes: &'pass Classes,
    failing: &'pass [bool],
    levels: &'pass [usize],
    targets: Targets,
    mode: KAnonymityMode,
}

/// The report over the classes that are not failing (for a measurement: all of them).
fn summarise(summary: Summary<'_, '_>, records_kept: u64) -> KAnonymityReport {
    let Summary {
        domains,
        has_sensitive_columns,
        tuples,
        classes,
        failing,
        levels,
        targets,
        mode,
    } = summary;
    let record_count = tuples.len() as u64;
    let mut class_size_histogram = BTreeMap::new();
    for (size, failing) in classes.sizes.iter().zip(failing) {
        if !failing {
            *class_size_histogram.entry(*size).or_insert(0u64) += 1;
        }
    }
    let l_achieved = if !has_sensitive_columns || records_kept == 0 {
        None
    } else {
        let diversity = min_distinct_sensitive(tuples, domains.len(), classes);
        diversity
            .iter()
            .zip(failing)
            .filter(|(_, failing)| !**failing)
            .map(|(distinct, _)| *distinct)
            .min()
    };
    KAnonymityReport {
        mode,
        k_required: targets.k,
        l_required: targets.l,
        k_achieved: class_size_histogram.keys().next().copied(),
        l_achieved,
        records_in: record_count,
        records_kept,
        records_suppressed: record_count - records_kept,
        equivalence_classes: class_size_histogram.values().sum(),
        class_size_histogram,
        generalisation_levels: domains
            .iter()
            .zip(levels)
            .map(|(domain, level)| GeneralisationLevel {
                column: domain.column.to_owned(),
                level: *level,
                top_level: top_level(domain.rule),
            })
            .collect(),
    }
}

fn validate_tuples(
    domains: &[QuasiIdentifierDomain<'_>],
    sensitive_value_counts: &[usize],
    tuples: &[QuasiIdentifierTuple],
) -> Result<(), DeidError> {
    let dictionary_sizes: Vec<usize> = domains
        .iter()
        .map(|domain| domain.raw_values.len())
        .chain(sensitive_value_counts.iter().copied())
        .collect();
    for tuple in tuples {
        let fits = tuple.value_ids.len() == dictionary_sizes.len()
            && tuple
                .value_ids
                .iter()
                .zip(&dictionary_sizes)
                .all(|(id, size)| (*id as usize) < *size);
        if !fits {
            return Err(DeidError::ForeignQuasiIdentifierTuple {
                row_index: tuple.row_index,
            });
        }
    }
    Ok(())
}

/// Groups records by their generalised quasi-identifier values. Each record's class key is built
/// as a mixed-radix number over the columns' generalised ids; when the radix would overflow
/// 64 bits the partial keys are renumbered densely first, so any number of columns works.
fn assign_classes(tuples: &[QuasiIdentifierTuple], tables: &[LevelTable]) -> Classes {
    let mut keys = vec![0u64; tuples.len()];
    let mut radix: u64 = 1;
    for (column, table) in tables.iter().enumerate() {
        let cardinality = table.values.len().max(1) as u64;
        if radix.checked_mul(cardinality).is_none() {
            radix = renumber_densely(&mut keys, radix).max(1);
        }
        for (key, tuple) in keys.iter_mut().zip(tuples) {
            let raw_id = tuple.value_ids.get(column).copied().unwrap_or_default();
            *key = *key * cardinality + u64::from(table.generalised_id(raw_id));
        }
        radix = radix.saturating_mul(cardinality);
    }
    let class_count = renumber_densely(&mut keys, radix);
    let mut sizes = vec![0u64; class_count as usize];
    let class_of_record: Vec<u32> = keys
        .iter()
        .map(|key| {
            if let Some(size) = sizes.get_mut(*key as usize) {
                *size += 1;
            }
            *key as u32
        })
        .collect();
    Classes {
        class_of_record,
        sizes,
    }
}

/// Replaces each key by a dense number 0..n in order of first appearance and returns n. Keys
/// below `radix` use a lookup table when it is small, which avoids hashing in the common case.
fn renumber_densely(keys: &mut [u64], radix: u64) -> u64 {
    const UNASSIGNED: u32 = u32::MAX;
    let mut next: u32 = 0;
    let table_limit = (keys.len() as u64).saturating_mul(4).max(1 << 16);
    if radix <= table_limit {
        let mut table = vec![UNASSIGNED; radix as usize];
        for key in keys.iter_mut() {
            if let Some(slot) = table.get_mut(*key as usize) {
                if *slot == UNASSIGNED {
                    *slot = next;
                    next += 1;
                }
                *key = u64::from(*slot);
            }
        }
    } else {
        let mut assigned: HashMap<u64, u32> = HashMap::with_capacity(keys.len().min(1 << 20));
        for key in keys.iter_mut() {
            let dense = *assigned.entry(*key).or_insert_with(|| {
                next += 1;
                next - 1
            });
            *key = u64::from(dense);
        }
    }
    u64::from(next)
}

/// For each class, the fewest distinct values any sensitive column takes within it.
fn min_distinct_sensitive(
    tuples: &[QuasiIdentifierTuple],
    quasi_identifier_count: usize,
    classes: &Classes,
) -> Vec<u64> {
    let sensitive_count = tuples.first().map_or(0, |tuple| {
        tuple.value_ids.len().saturating_sub(quasi_identifier_count)
    });
    let mut minimum = vec![u64::MAX; classes.sizes.len()];
    let mut pairs: Vec<u64> = Vec::with_capacity(tuples.len());
    for sensitive in 0..sensitive_count {
        pairs.clear();
        pairs.extend(
            tuples
                .iter()
                .zip(&classes.class_of_record)
                .map(|(tuple, class)| {
                    let value = tuple
                        .value_ids
                        .get(quasi_identifier_count + sensitive)
                        .copied()
                        .unwrap_or_default();
                    (u64::from(*class) << 32) | u64::from(value)
                }),
        );
        pairs.sort_unstable();
        pairs.dedup();
        let mut distinct = vec![0u64; classes.sizes.len()];
        for pair in &pairs {
            if let Some(count) = distinct.get_mut((pair >> 32) as usize) {
                *count += 1;
            }
        }
        for (minimum, distinct) in minimum.iter_mut().zip(distinct) {
            *minimum = (*minimum).min(distinct);
        }
    }
    minimum
}
