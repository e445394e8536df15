//! The streaming de-identification engine: per-row work in `process_record`, whose output is
//! final for training, then a k-anonymity measurement over the quasi-identifier tuples the rows
//! produced (or, for a row-level export only, a pass that enforces it).

use std::collections::{BTreeMap, HashMap};

use crate::error::DeidError;
use crate::generalise::generalise;
use crate::k_anonymity::{
    self, KAnonymityReport, KeptQuasiIdentifiers, QuasiIdentifierDomain, QuasiIdentifierTuple,
    Targets,
};
use crate::key::{PseudonymKey, push_pseudonym};
use crate::policy::{ColumnRole, DeidPolicy, GeneralisationPolicy};
use crate::report::DeidReport;
use crate::scanner::{PiiCounts, ScanScratch, redact_reusing};

/// One column of the engine's output (dropped columns are absent).
#[derive(Clone, Debug, PartialEq)]
pub struct OutputColumn {
    /// Column name, as in the policy.
    pub name: String,
    /// The role that decided what was done to it.
    pub role: ColumnRole,
}

/// The de-identified form of one input record. The default value is an empty record to pass to
/// [`Deidentifier::process_record_into`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeidRecord {
    /// Position of the record in the input stream.
    pub row_index: u64,
    /// One value per [`Deidentifier::output_columns`] entry. Quasi-identifier columns hold their
    /// declared (level-0) generalisation, computed from this record alone; these values are final
    /// for training. A row-level export must not release them before
    /// [`Deidentifier::enforce_k_anonymity_for_export`] has coarsened or suppressed them.
    pub values: Vec<Option<String>>,
    /// What the k-anonymity measurement (or an export's pass) needs from this record.
    pub quasi_identifiers: QuasiIdentifierTuple,
}

/// What the engine does with one input column.
enum ColumnTreatment {
    Drop,
    Pseudonymise,
    /// Index into `quasi_identifier_columns`.
    Generalise(usize),
    /// Index into `sensitive_columns`, for the columns that also feed l-diversity.
    Redact(Option<usize>),
}

/// Interned distinct values of one column, so tuples can carry small ids instead of strings.
#[derive(Default)]
struct ValueDictionary {
    ids: HashMap<String, u32>,
    values: Vec<String>,
    /// Level-0 generalisation of each value, computed once per distinct value rather than per row.
    level_zero: Vec<String>,
}

impl ValueDictionary {
    fn intern(&mut self, value: &str, rule: Option<&GeneralisationPolicy>) -> u32 {
        if let Some(id) = self.ids.get(value) {
            return *id;
        }
        // Ids are u32 to keep tuples small; 4 billion distinct values in one column would mean the
        // column is an identifier, and saturating merely merges the excess into one value.
        let id = u32::try_from(self.values.len()).unwrap_or(u32::MAX);
        self.ids.insert(value.to_owned(), id);
        self.values.push(value.to_owned());
        if let Some(rule) = rule {
            self.level_zero.push(generalise(value, rule));
        }
        id
    }

    fn level_zero(&self, id: u32) -> Option<&str> {
        self.level_zero.get(id as usize).map(String::as_str)
    }
}

struct QuasiIdentifierColumn {
    name: String,
    rule: GeneralisationPolicy,
    dictionary: ValueDictionary,
}

/// The de-identification engine for one data source and one key.
///
/// It is sans-IO: records come in as string slices and leave as owned strings, so the node can
/// feed it from CSV, Parquet or a database cursor alike.
pub struct Deidentifier {
    /// The validated policy; its column order is the order of every record's values.
    policy: DeidPolicy,
    /// The partner's secret for pseudonyms. Every row's identifiers are keyed afresh, with no
    /// cache of earlier rows: ring's HMAC on CPUs with SHA extensions costs less than looking
    /// a raw id up in a table of a log's customers, whose lookups miss the processor caches (the
    /// ingest benchmark ran about a quarter slower with such a cache), and no raw identifier
    /// outlives its row.
    key: PseudonymKey,
    /// Treatment of each input column, in policy order.
    treatments: Vec<ColumnTreatment>,
    /// The columns that appear in the output, in policy order.
    output_columns: Vec<OutputColumn>,
    /// Quasi-identifier columns with their value dictionaries; only distinct values are held.
    quasi_identifier_columns: Vec<QuasiIdentifierColumn>,
    /// Sensitive columns' value dictionaries, for the l-diversity check.
    sensitive_columns: Vec<ValueDictionary>,
    /// PII hits per input column (all zero for identifier and dropped columns, which are not scanned).
    pii_counts_per_column: Vec<PiiCounts>,
    /// Records seen so far, including rejected ones, so row indices match input positions.
    rows_seen: u64,
    /// Records refused (for example because of a wrong number of values).
    rows_rejected: u64,
    /// The report of the last k-anonymity measurement or export pass, for [`Deidentifier::report`].
    last_k_anonymity: Option<KAnonymityReport>,
    /// Reused scanner buffers, so the per-row path does not allocate for them.
    scan_scratch: ScanScratch,
    /// Reused buffer for normalised identifiers.
    normalisation_buffer: String,
}

impl Deidentifier {
    /// Builds an engine after validating the policy. Records must present their values in the
    /// order of `policy.columns` (see [`DeidPolicy::reordered_for_header`]).
    pub fn new(policy: DeidPolicy, key: PseudonymKey) -> Result<Deidentifier, DeidError> {
        policy.validate()?;
        let mut treatments = Vec::with_capacity(policy.columns.len());
        let mut output_columns = Vec::with_capacity(policy.columns.len());
        let mut quasi_identifier_columns = Vec::new();
        let mut sensitive_columns = Vec::new();
        for column in &policy.columns {
            let treatment = match &column.role {
                ColumnRole::Drop => ColumnTreatment::Drop,
                ColumnRole::Identifier => ColumnTreatment::Pseudonymise,
                ColumnRole::QuasiIdentifier(rule) => {
                    quasi_identifier_columns.push(QuasiIdentifierColumn {
                        name: column.name.clone(),
                        rule: rule.clone(),
                        dictionary: ValueDictionary::default(),
                    });
                    ColumnTreatment::Generalise(quasi_identifier_columns.len() - 1)
                }
                ColumnRole::Sensitive => {
                    sensitive_columns.push(ValueDictionary::default());
                    ColumnTreatment::Redact(Some(sensitive_columns.len() - 1))
                }
                ColumnRole::Feature
                | ColumnRole::Timestamp
                | ColumnRole::Amount
                | ColumnRole::Text => ColumnTreatment::Redact(None),
            };
            if !matches!(treatment, ColumnTreatment::Drop) {
                output_columns.push(OutputColumn {
                    name: column.name.clone(),
                    role: column.role.clone(),
                });
            }
            treatments.push(treatment);
        }
        Ok(Deidentifier {
            pii_counts_per_column: vec![PiiCounts::default(); policy.columns.len()],
            policy,
            key,
            treatments,
            output_columns,
            quasi_identifier_columns,
            sensitive_columns,
            rows_seen: 0,
            rows_rejected: 0,
            last_k_anonymity: None,
            scan_scratch: ScanScratch::default(),
            normalisation_buffer: String::new(),
        })
    }

    /// The columns of every [`DeidRecord::values`], in order.
    pub fn output_columns(&self) -> &[OutputColumn] {
        &self.output_columns
    }

    /// Names of the quasi-identifier columns, in the order of [`KeptQuasiIdentifiers::values`].
    pub fn quasi_identifier_column_names(&self) -> Vec<&str> {
        self.quasi_identifier_columns
            .iter()
            .map(|column| column.name.as_str())
            .collect()
    }

    /// De-identifies one record given in policy column order: drops, pseudonymises identifiers,
    /// redacts PII from every other kept value, and generalises quasi-identifiers to level 0.
    /// Missing values (`None`) stay missing, except quasi-identifiers which become `*`.
    pub fn process_record(&mut self, record: &[Option<&str>]) -> Result<DeidRecord, DeidError> {
        let mut output = DeidRecord::default();
        self.process_record_into(record, &mut output)?;
        Ok(output)
    }

    /// [`Deidentifier::process_record`] into a record the caller keeps from row to row, so a
    /// streaming load reuses its value strings instead of allocating a record per row. Whatever
    /// `output` held is overwritten; on an error it is left as it was.
    pub fn process_record_into(
        &mut self,
        record: &[Option<&str>],
        output: &mut DeidRecord,
    ) -> Result<(), DeidError> {
        let row_index = self.rows_seen;
        self.rows_seen += 1;
        if record.len() != self.treatments.len() {
            self.rows_rejected += 1;
            return Err(DeidError::RecordLength {
                row_index,
                expected: self.treatments.len(),
                found: record.len(),
            });
        }
        let quasi_identifier_count = self.quasi_identifier_columns.len();
        let id_count = quasi_identifier_count + self.sensitive_columns.len();
        output.row_index = row_index;
        output.quasi_identifiers.row_index = row_index;
        let value_ids = &mut output.quasi_identifiers.value_ids;
        if value_ids.len() == id_count {
            value_ids.fill(0);
        } else {
            *value_ids = vec![0u32; id_count].into_boxed_slice();
        }
        output.values.resize(self.output_columns.len(), None);
        let mut slots = output.values.iter_mut();
        for ((treatment, value), counts) in self
            .treatments
            .iter()
            .zip(record)
            .zip(self.pii_counts_per_column.iter_mut())
        {
            if matches!(treatment, ColumnTreatment::Drop) {
                continue;
            }
            // There is one slot per output column, that is per treatment other than Drop.
            let Some(slot) = slots.next() else { break };
            match treatment {
                // Skipped above: a dropped column has no slot.
                ColumnTreatment::Drop => {}
                ColumnTreatment::Pseudonymise => {
                    match value.filter(|value| !value.trim().is_empty()) {
                        Some(value) => {
                            let tag = self.key.tag(value, &mut self.normalisation_buffer);
                            push_pseudonym(&tag, reused(slot));
                        }
                        None => *slot = None,
                    }
                }
                ColumnTreatment::Generalise(quasi_identifier) => {
                    let redacted =
                        redact_reusing(value.unwrap_or_default(), &mut self.scan_scratch, counts);
                    match self.quasi_identifier_columns.get_mut(*quasi_identifier) {
                        Some(column) => {
                            let id = column.dictionary.intern(&redacted, Some(&column.rule));
                            if let Some(id_slot) = value_ids.get_mut(*quasi_identifier) {
                                *id_slot = id;
                            }
                            match column.dictionary.level_zero(id) {
                                Some(generalised) => reused(slot).push_str(generalised),
                                None => *slot = None,
                            }
                        }
                        None => *slot = None,
                    }
                }
                ColumnTreatment::Redact(sensitive) => {
                    let redacted =
                        value.map(|value| redact_reusing(value, &mut self.scan_scratch, counts));
                    if let Some(sensitive) = sensitive
                        && let Some(dictionary) = self.sensitive_columns.get_mut(*sensitive)
                    {
                        // A missing sensitive value counts as one more value, "missing".
                        let id = dictionary.intern(redacted.as_deref().unwrap_or_default(), None);
                        if let Some(id_slot) = value_ids.get_mut(quasi_identifier_count + sensitive)
                        {
                            *id_slot = id;
                        }
                    }
                    match redacted {
                        Some(redacted) => reused(slot).push_str(&redacted),
                        None => *slot = None,
                    }
                }
            }
        }
        Ok(())
    }

    /// Measures k-anonymity (and distinct l-diversity) of the declared generalisation over the
    /// tuples of the records that feed training, and keeps the result for
    /// [`Deidentifier::report`]. Nothing is generalised further and nothing is suppressed, so
    /// each record's values stay exactly what [`Deidentifier::process_record`] gave it: no
    /// customer's training data depends on another customer's row. A report whose k is below the
    /// target says the declared bands are too fine for this data; the remedy is coarser rules in
    /// the policy, not data-dependent recoding.
    pub fn measure_k_anonymity(
        &mut self,
        tuples: &[QuasiIdentifierTuple],
    ) -> Result<KAnonymityReport, DeidError> {
        let sensitive_value_counts = self.sensitive_value_counts();
        let report = k_anonymity::measure(
            &self.domains(),
            &sensitive_value_counts,
            tuples,
            self.targets(),
        )?;
        self.last_k_anonymity = Some(report.clone());
        Ok(report)
    }

    /// Enforces k-anonymity (and distinct l-diversity when the policy sets l) over the tuples of
    /// records to be exported row by row, by generalising quasi-identifier columns further
    /// (global recoding, Datafly) and suppressing what still fails. Returns the final
    /// quasi-identifier values of the exported records, in input order; records absent from the
    /// result are suppressed and must not be exported.
    ///
    /// Never use it for rows that feed training: the levels and the suppressed records are
    /// chosen from the whole table, so one customer's row can change another customer's values
    /// or remove them, which breaks the one-customer adjacency of DP-SGD. Use
    /// [`Deidentifier::measure_k_anonymity`] there.
    ///
    /// Fails with [`DeidError::InvalidSuppressionFraction`] unless `max_suppression_fraction` is
    /// within [0, 1], and with [`DeidError::SuppressionAboveLimit`] when even full
    /// generalisation leaves more failing records than that fraction: the export must then not
    /// happen.
    pub fn enforce_k_anonymity_for_export(
        &mut self,
        tuples: Vec<QuasiIdentifierTuple>,
        max_suppression_fraction: f64,
    ) -> Result<(Vec<KeptQuasiIdentifiers>, KAnonymityReport), DeidError> {
        let sensitive_value_counts = self.sensitive_value_counts();
        let (kept, report) = k_anonymity::enforce(
            &self.domains(),
            &sensitive_value_counts,
            tuples,
            self.targets(),
            max_suppression_fraction,
        )?;
        self.last_k_anonymity = Some(report.clone());
        Ok((kept, report))
    }

    fn domains(&self) -> Vec<QuasiIdentifierDomain<'_>> {
        self.quasi_identifier_columns
            .iter()
            .map(|column| QuasiIdentifierDomain {
                column: &column.name,
                rule: &column.rule,
                raw_values: &column.dictionary.values,
            })
            .collect()
    }

    fn sensitive_value_counts(&self) -> Vec<usize> {
        self.sensitive_columns
            .iter()
            .map(|dictionary| dictionary.values.len())
            .collect()
    }

    fn targets(&self) -> Targets {
        Targets {
            k: self.policy.k,
            l: self.policy.l,
        }
    }

    /// Everything done so far, as counts and column names only.
    pub fn report(&self) -> DeidReport {
        let names_with = |wanted: fn(&ColumnRole) -> bool| -> Vec<String> {
            self.policy
                .columns
                .iter()
                .filter(|column| wanted(&column.role))
                .map(|column| column.name.clone())
                .collect()
        };
        let pii_hits_per_column: BTreeMap<String, PiiCounts> = self
            .policy
            .columns
            .iter()
            .zip(&self.pii_counts_per_column)
            .filter(|(column, _)| !matches!(column.role, ColumnRole::Drop | ColumnRole::Identifier))
            .map(|(column, counts)| (column.name.clone(), *counts))
            .collect();
        DeidReport {
            rows_processed: self.rows_seen - self.rows_rejected,
            rows_rejected: self.rows_rejected,
            columns_dropped: names_with(|role| matches!(role, ColumnRole::Drop)),
            columns_pseudonymised: names_with(|role| matches!(role, ColumnRole::Identifier)),
            columns_generalised: names_with(|role| matches!(role, ColumnRole::QuasiIdentifier(_))),
            columns_scanned: pii_hits_per_column.keys().cloned().collect(),
            pii_hits_per_column,
            k_anonymity: self.last_k_anonymity.clone(),
        }
    }
}

/// The slot's string, emptied, keeping its allocation when there is one.
fn reused(slot: &mut Option<String>) -> &mut String {
    let value = slot.get_or_insert_with(String::new);
    value.clear();
    value
}

impl std::fmt::Debug for Deidentifier {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The dictionaries hold raw quasi-identifier values, so they are deliberately not printed.
        formatter
            .debug_struct("Deidentifier")
            .field("columns", &self.policy.columns.len())
            .field("rows_seen", &self.rows_seen)
            .finish_non_exhaustive()
    }
}
