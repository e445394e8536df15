//! One source's path from raw rows to de-identified, validated rows: check the row's shape,
//! de-identify it (pseudonyms, PII redaction, the declared level-0 generalisation) *before*
//! reading any value, then parse the typed columns, and a profile row's attributes, from the
//! de-identified values of that row alone. Bad rows go to the rejects file with identifiers
//! redacted; too many rejects abort the load.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use veil_behaviour_features::{
    CustomerProfile, REDACTED, RowError, Transaction, WHOLE_RECORD_COLUMN, create_owner_only,
    parse_amount, parse_timestamp,
};
use veil_de_identification::{
    ColumnPolicy, ColumnRole, DeidPolicy, DeidRecord, Deidentifier, GeneralisationPolicy,
    PseudonymKey, QuasiIdentifierTuple, SUPPRESSED_VALUE,
};

use crate::config::{DeidSettings, SourceConfig, UndeclaredColumns};
use crate::error::PartnerDataError;
use crate::grouping::TransactionGroups;
use crate::profile::{ProfileAttribute, is_profile_attribute, profile_from_record};
use crate::report::SourceReport;
use crate::source::{RowBuffer, recycle, with_reader};

/// How many row errors a report keeps verbatim; the rest are counted and in the rejects file.
pub const MAX_SAMPLE_ERRORS: usize = 10;

/// Which table a source is; it decides which roles are required and what is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SourceKind {
    /// One row per purchase.
    Transactions,
    /// One row per customer.
    Profile,
}

/// What a transaction source produced.
pub(crate) struct TransactionRows {
    /// Accepted transactions by pseudonymised customer id.
    pub(crate) grouped: HashMap<String, Vec<Transaction>>,
    /// The category dictionary: the value of each code, in code order.
    pub(crate) category_names: Vec<String>,
}

/// What a profile source produced: every accepted customer's profile, final for training, and
/// what the k-anonymity measurement needs.
pub(crate) struct ProfileRows {
    /// Each accepted row's profile, by pseudonymised customer id, read from that row alone.
    pub(crate) profiles: HashMap<String, CustomerProfile>,
    /// The accepted rows' quasi-identifier tuples, for the k-anonymity measurement.
    pub(crate) tuples: Vec<QuasiIdentifierTuple>,
    /// The engine, which holds the value dictionaries the measurement needs.
    pub(crate) deidentifier: Deidentifier,
}

/// Rows of either kind.
pub(crate) enum SourceRows {
    /// See [`TransactionRows`].
    Transactions(TransactionRows),
    /// See [`ProfileRows`]; boxed because the engine it carries is large.
    Profile(Box<ProfileRows>),
}

/// Output positions (in the de-identified record) of the columns that are read back.
struct Plan {
    header: Vec<String>,
    customer_id: usize,
    timestamp: Option<usize>,
    amount: Option<usize>,
    category: Option<usize>,
    channel: Option<usize>,
    /// Quasi-identifiers whose values must parse (ages, birth dates): output position, input
    /// position, column name.
    parsed_quasi_identifiers: Vec<(usize, usize, String)>,
    /// Quasi-identifiers that profile features read.
    profile_attributes: Vec<ProfileAttribute>,
    /// Output positions of identifier columns, redacted in the rejects file.
    identifiers: Vec<usize>,
    /// Output column names, for the rejects file.
    output_names: Vec<String>,
}

/// Reads one source through de-identification. `local_ids` receives pseudonym → raw customer
/// id pairs when given, for local outputs such as the score file; nothing else keeps raw ids.
pub(crate) fn read_source(
    kind: SourceKind,
    config: &SourceConfig,
    settings: &DeidSettings,
    mut local_ids: Option<&mut HashMap<String, String>>,
) -> Result<(SourceRows, SourceReport), PartnerDataError> {
    let input = config.describe();
    if !(0.0..=1.0).contains(&config.max_reject_fraction) {
        return Err(PartnerDataError::InvalidRejectFraction {
            input,
            value: config.max_reject_fraction,
        });
    }
    let key = PseudonymKey::load_or_create(&settings.key_path).map_err(|error| {
        PartnerDataError::Deid {
            input: "pseudonymisation key".to_owned(),
            error,
        }
    })?;
    with_reader(&config.input, |reader| {
        let header = reader.header().to_vec();
        let policy = policy_for_header(kind, config, settings, &header)?;
        let deidentifier =
            Deidentifier::new(policy.clone(), key).map_err(|error| PartnerDataError::Deid {
                input: input.clone(),
                error,
            })?;
        let plan = plan(kind, config, &policy, &deidentifier, header)?;
        let customer_input = plan
            .header
            .iter()
            .position(|name| *name == config.customer_id)
            .unwrap_or_default();
        let mut run = Run {
            input: input.clone(),
            plan,
            deidentifier,
            rejects: match &config.rejects_path {
                Some(path) => Some(RejectsWriter::create(path)?),
                None => None,
            },
            report: SourceReport::new(input.clone(), config.rejects_path.clone()),
        };
        if let Some(rejects) = run.rejects.as_mut() {
            rejects.write_header(&run.plan.output_names)?;
        }
        let mut row = RowBuffer::default();
        let mut record = DeidRecord::default();
        let mut spare_values = Vec::new();
        let mut grouped = TransactionGroups::default();
        let mut profiles = HashMap::new();
        let mut seen_profiles: HashMap<String, u64> = HashMap::new();
        let mut tuples = Vec::new();
        let mut categories = CodeBook::default();
        let mut channels = CodeBook::default();
        while reader.read_row(&mut row)? {
            run.report.rows_read += 1;
            if let Some(lines) = row.unclosed_quote_lines {
                let message = format!(
                    "a quoted field opened in this row is never closed and runs to the end of \
                     the input, holding {lines} more line(s) that look like rows; add the \
                     missing closing quote"
                );
                run.reject(row.location, WHOLE_RECORD_COLUMN, message, None)?;
                continue;
            }
            if row.len() != run.plan.header.len() {
                let message = format!(
                    "expected {} fields as in the header, found {}",
                    run.plan.header.len(),
                    row.len()
                );
                run.reject(row.location, WHOLE_RECORD_COLUMN, message, None)?;
                continue;
            }
            if let Some(position) = row.invalid_utf8_field {
                let column = run.plan.header.get(position).cloned().unwrap_or_default();
                // The usual cause is a GBK export read as UTF-8, so the message says how to declare it.
                let message = "not valid UTF-8; if the file is GBK-encoded, set encoding = \"gbk\"";
                run.reject(row.location, &column, message.to_owned(), None)?;
                continue;
            }
            let mut values = recycle(std::mem::take(&mut spare_values));
            row.values_into(&mut values);
            let raw_customer_id = values.get(customer_input).copied().flatten();
            run.deidentifier
                .process_record_into(&values, &mut record)
                .map_err(|error| PartnerDataError::Deid {
                    input: input.clone(),
                    error,
                })?;
            let Some(customer) = output(&record, run.plan.customer_id) else {
                let column = config.customer_id.clone();
                run.reject(
                    row.location,
                    &column,
                    "customer id is empty".to_owned(),
                    Some(&record),
                )?;
                continue;
            };
            match kind {
                SourceKind::Transactions => {
                    match run.parse_transaction(&record, &mut categories, &mut channels) {
                        Ok(transaction) => {
                            let first_of_customer = grouped.push(customer, transaction);
                            // The local id is recorded with a customer's first accepted row, so
                            // later rows need no second lookup.
                            if first_of_customer
                                && let (Some(ids), Some(raw)) =
                                    (local_ids.as_deref_mut(), raw_customer_id)
                            {
                                ids.insert(customer.to_owned(), raw.trim().to_owned());
                            }
                            run.report.rows_accepted += 1;
                        }
                        Err((column, message)) => {
                            run.reject(row.location, &column, message, Some(&record))?;
                        }
                    }
                }
                SourceKind::Profile => {
                    if let Some(first) = seen_profiles.get(customer) {
                        let message = format!("duplicate customer id; first seen on row {first}");
                        let column = config.customer_id.clone();
                        run.reject(row.location, &column, message, Some(&record))?;
                        continue;
                    }
                    if let Some((column, message)) = run.unparsed_quasi_identifier(&record, &values)
                    {
                        run.reject(row.location, &column, message, Some(&record))?;
                        continue;
                    }
                    seen_profiles.insert(customer.to_owned(), row.location);
                    // The profile is final here, from this row alone: no later pass recodes or
                    // drops it because of other customers' rows.
                    profiles.insert(
                        customer.to_owned(),
                        profile_from_record(&record, &run.plan.profile_attributes),
                    );
                    tuples.push(record.quasi_identifiers.clone());
                    run.report.rows_accepted += 1;
                }
            }
            // Rows that were rejected above skip this and leave the next row one allocation.
            spare_values = recycle(values);
        }
        run.finish(config.max_reject_fraction)?;
        let Run {
            deidentifier,
            report,
            ..
        } = run;
        let rows = match kind {
            SourceKind::Transactions => SourceRows::Transactions(TransactionRows {
                grouped: grouped.into_histories(),
                category_names: categories.names(),
            }),
            SourceKind::Profile => SourceRows::Profile(Box::new(ProfileRows {
                profiles,
                tuples,
                deidentifier,
            })),
        };
        Ok((rows, report))
    })
}

/// The value at an output position, if present.
fn output(record: &DeidRecord, position: usize) -> Option<&str> {
    record.values.get(position).and_then(Option::as_deref)
}

/// The de-identification policy for the input's header: declared roles in header order, and
/// undeclared columns refused or dropped as configured.
fn policy_for_header(
    kind: SourceKind,
    config: &SourceConfig,
    settings: &DeidSettings,
    header: &[String],
) -> Result<DeidPolicy, PartnerDataError> {
    let input = config.describe();
    for (index, name) in header.iter().enumerate() {
        if header
            .get(..index)
            .is_some_and(|before| before.contains(name))
        {
            return Err(PartnerDataError::Config {
                input,
                reason: format!("column '{name}' appears twice in the header"),
            });
        }
    }
    for (column, role) in &config.columns {
        if !header.contains(column) {
            return Err(PartnerDataError::MissingColumn {
                input,
                column: column.clone(),
                role: role_name(role).to_owned(),
                found: header.to_vec(),
            });
        }
    }
    let config_error = |reason: String| PartnerDataError::Config {
        input: input.clone(),
        reason,
    };
    if config.columns.get(&config.customer_id) != Some(&ColumnRole::Identifier) {
        return Err(config_error(format!(
            "the customer id column '{}' must be declared as \"identifier\"",
            config.customer_id
        )));
    }
    let count = |wanted: fn(&ColumnRole) -> bool| {
        config.columns.values().filter(|role| wanted(role)).count()
    };
    if kind == SourceKind::Transactions {
        if count(|role| matches!(role, ColumnRole::Timestamp)) != 1
            || count(|role| matches!(role, ColumnRole::Amount)) != 1
        {
            return Err(config_error(
                "a transaction log needs exactly one \"timestamp\" and one \"amount\" column"
                    .to_owned(),
            ));
        }
        if count(|role| matches!(role, ColumnRole::QuasiIdentifier(_) | ColumnRole::Sensitive)) > 0
        {
            return Err(config_error(
                "quasi-identifiers and sensitive attributes belong in the profile table, one row \
                 per customer, where k-anonymity is measured; declare them there"
                    .to_owned(),
            ));
        }
        for (what, column) in [("category", &config.category), ("channel", &config.channel)] {
            if let Some(column) = column
                && config.columns.get(column) != Some(&ColumnRole::Feature)
            {
                return Err(config_error(format!(
                    "the {what} column '{column}' must be declared as \"feature\""
                )));
            }
        }
    }
    let mut columns = Vec::with_capacity(header.len());
    for name in header {
        let role = match (config.columns.get(name), config.undeclared_columns) {
            (Some(role), _) => role.clone(),
            (None, UndeclaredColumns::Drop) => ColumnRole::Drop,
            (None, UndeclaredColumns::Error) => {
                return Err(PartnerDataError::UndeclaredColumn {
                    input,
                    column: name.clone(),
                });
            }
        };
        columns.push(ColumnPolicy {
            name: name.clone(),
            role,
        });
    }
    let policy = DeidPolicy {
        columns,
        k: settings.k,
        l: settings.l,
    };
    policy.validate().map_err(|error| PartnerDataError::Deid {
        input: input.clone(),
        error,
    })?;
    Ok(policy)
}

fn role_name(role: &ColumnRole) -> &'static str {
    match role {
        ColumnRole::Identifier => "identifier",
        ColumnRole::QuasiIdentifier(_) => "quasi_identifier",
        ColumnRole::Sensitive => "sensitive",
        ColumnRole::Feature => "feature",
        ColumnRole::Timestamp => "timestamp",
        ColumnRole::Amount => "amount",
        ColumnRole::Text => "text",
        ColumnRole::Drop => "drop",
    }
}

fn plan(
    kind: SourceKind,
    config: &SourceConfig,
    policy: &DeidPolicy,
    deidentifier: &Deidentifier,
    header: Vec<String>,
) -> Result<Plan, PartnerDataError> {
    let outputs = deidentifier.output_columns();
    let position = |name: &str| outputs.iter().position(|column| column.name == name);
    let position_of_role =
        |wanted: fn(&ColumnRole) -> bool| outputs.iter().position(|column| wanted(&column.role));
    let customer_id = position(&config.customer_id).ok_or_else(|| PartnerDataError::Config {
        input: config.describe(),
        reason: format!("customer id column '{}' is dropped", config.customer_id),
    })?;
    let parsed_quasi_identifiers = policy
        .columns
        .iter()
        .enumerate()
        .filter(|(_, column)| {
            matches!(
                column.role,
                ColumnRole::QuasiIdentifier(
                    GeneralisationPolicy::AgeBand { .. } | GeneralisationPolicy::BirthDateToYear
                )
            )
        })
        .filter_map(|(input_position, column)| {
            position(&column.name)
                .map(|output_position| (output_position, input_position, column.name.clone()))
        })
        .collect();
    let profile_attributes = policy
        .columns
        .iter()
        .filter_map(|column| match &column.role {
            ColumnRole::QuasiIdentifier(rule) if is_profile_attribute(rule) => {
                position(&column.name).map(|output_position| ProfileAttribute {
                    output_position,
                    rule: rule.clone(),
                })
            }
            _ => None,
        })
        .collect();
    let is_transactions = kind == SourceKind::Transactions;
    Ok(Plan {
        header,
        customer_id,
        timestamp: position_of_role(|role| matches!(role, ColumnRole::Timestamp))
            .filter(|_| is_transactions),
        amount: position_of_role(|role| matches!(role, ColumnRole::Amount))
            .filter(|_| is_transactions),
        category: config.category.as_deref().and_then(position),
        channel: config.channel.as_deref().and_then(position),
        parsed_quasi_identifiers,
        profile_attributes,
        identifiers: outputs
            .iter()
            .enumerate()
            .filter(|(_, column)| column.role == ColumnRole::Identifier)
            .map(|(index, _)| index)
            .collect(),
        output_names: outputs.iter().map(|column| column.name.clone()).collect(),
    })
}

/// Dictionary codes for category and channel values. Codes only need to be equal for equal
/// values within one load; values past the 65,535th distinct one share the last code, which a
/// real category or channel column never reaches.
#[derive(Default)]
struct CodeBook {
    /// The first values seen, in code order. A category or channel column has a handful of
    /// values, and comparing a cell with them is cheaper than hashing it.
    first_values: Vec<Box<str>>,
    /// Codes of the values after the first [`SCANNED_CODES`]; it stops growing when the codes
    /// run out, since every later value gets the last code anyway.
    other_codes: HashMap<Box<str>, u16>,
}

/// How many values a [`CodeBook`] compares each cell with before it hashes.
const SCANNED_CODES: usize = 16;

impl CodeBook {
    /// Each code's value, in code order. The shared last code of an
    /// overflowing column names no value (it stays out of the list).
    fn names(&self) -> Vec<String> {
        let mut others: Vec<(&u16, &Box<str>)> = self
            .other_codes
            .iter()
            .map(|(value, code)| (code, value))
            .collect();
        others.sort_unstable();
        self.first_values
            .iter()
            .chain(others.into_iter().map(|(_, value)| value))
            .map(|value| value.to_string())
            .collect()
    }

    fn code(&mut self, value: &str) -> u16 {
        let as_code = |index: usize| u16::try_from(index).unwrap_or(u16::MAX);
        if let Some(index) = self.first_values.iter().position(|known| **known == *value) {
            return as_code(index);
        }
        if self.first_values.len() < SCANNED_CODES {
            self.first_values.push(value.into());
            return as_code(self.first_values.len() - 1);
        }
        if let Some(code) = self.other_codes.get(value) {
            return *code;
        }
        let code = as_code(SCANNED_CODES + self.other_codes.len());
        if code < u16::MAX {
            self.other_codes.insert(value.into(), code);
        }
        code
    }
}

/// The state of one source's load.
struct Run {
    input: String,
    plan: Plan,
    deidentifier: Deidentifier,
    rejects: Option<RejectsWriter>,
    report: SourceReport,
}

impl Run {
    fn reject(
        &mut self,
        location: u64,
        column: &str,
        message: String,
        record: Option<&DeidRecord>,
    ) -> Result<(), PartnerDataError> {
        self.report.rows_rejected += 1;
        if let Some(rejects) = self.rejects.as_mut() {
            rejects.write(
                location,
                column,
                &message,
                record,
                &self.plan.identifiers,
                self.plan.output_names.len(),
            )?;
        }
        if self.report.sample_errors.len() < MAX_SAMPLE_ERRORS {
            self.report.sample_errors.push(RowError {
                file: PathBuf::from(&self.input),
                row: location,
                column: column.to_owned(),
                message,
            });
        }
        Ok(())
    }

    /// Parses a transaction from its de-identified values, or names the bad column.
    fn parse_transaction(
        &self,
        record: &DeidRecord,
        categories: &mut CodeBook,
        channels: &mut CodeBook,
    ) -> Result<Transaction, (String, String)> {
        let name = |position: Option<usize>| {
            position
                .and_then(|position| self.plan.output_names.get(position))
                .cloned()
                .unwrap_or_default()
        };
        let text = |position: Option<usize>| {
            position
                .and_then(|position| output(record, position))
                .unwrap_or("")
        };
        let unix_seconds = parse_timestamp(text(self.plan.timestamp))
            .map_err(|error| (name(self.plan.timestamp), error.to_string()))?;
        let amount = parse_amount(text(self.plan.amount))
            .map_err(|message| (name(self.plan.amount), message))?;
        let mut transaction = Transaction::new(unix_seconds, amount);
        transaction.category = self
            .plan
            .category
            .and_then(|position| output(record, position))
            .map(|value| categories.code(value));
        transaction.channel = self
            .plan
            .channel
            .and_then(|position| output(record, position))
            .map(|value| channels.code(value));
        Ok(transaction)
    }

    /// An age or birth date that was given but could not be read (generalised to `*` at level
    /// 0) is a bad value, not a silently suppressed one.
    fn unparsed_quasi_identifier(
        &self,
        record: &DeidRecord,
        values: &[Option<&str>],
    ) -> Option<(String, String)> {
        self.plan
            .parsed_quasi_identifiers
            .iter()
            .find(|(output_position, input_position, _)| {
                values.get(*input_position).copied().flatten().is_some()
                    && output(record, *output_position) == Some(SUPPRESSED_VALUE)
            })
            .map(|(_, _, column)| {
                (
                    column.clone(),
                    "cannot read the value as an age (whole years, at most 130) or a date \
                     (YYYY-MM-DD, YYYY/MM/DD or YYYYMMDD)"
                        .to_owned(),
                )
            })
    }

    fn finish(&mut self, max_reject_fraction: f64) -> Result<(), PartnerDataError> {
        if let Some(rejects) = self.rejects.as_mut() {
            rejects.flush()?;
        }
        if self.report.rows_read == 0 {
            return Err(PartnerDataError::NoRows {
                input: self.input.clone(),
            });
        }
        // Counts are far below 2^52, so the conversion to f64 is exact.
        let rejected_fraction = self.report.rows_rejected as f64 / self.report.rows_read as f64;
        if rejected_fraction > max_reject_fraction {
            return Err(PartnerDataError::TooManyRejects {
                input: self.input.clone(),
                rejected: self.report.rows_rejected,
                read: self.report.rows_read,
                threshold: max_reject_fraction,
            });
        }
        self.report.deid = Some(self.deidentifier.report());
        Ok(())
    }
}

/// Writes rejected rows as `row,column,error,<de-identified fields>`, identifiers redacted.
/// Fields come from the de-identified record, so PII in free text is already removed; rows
/// rejected before de-identification (wrong shape, bad encoding) get empty fields.
struct RejectsWriter {
    path: PathBuf,
    writer: csv::Writer<BufWriter<File>>,
    fields: Vec<String>,
}

impl RejectsWriter {
    fn create(path: &Path) -> Result<Self, PartnerDataError> {
        // Rejected rows are partner rows (identifiers redacted, the rest not): owner-only.
        let file = create_owner_only(path).map_err(|error| PartnerDataError::RejectsFile {
            path: path.to_owned(),
            error: error.into(),
        })?;
        Ok(Self {
            path: path.to_owned(),
            writer: csv::Writer::from_writer(BufWriter::new(file)),
            fields: Vec::new(),
        })
    }

    fn error(&self, error: csv::Error) -> PartnerDataError {
        PartnerDataError::RejectsFile {
            path: self.path.clone(),
            error,
        }
    }

    fn write_header(&mut self, output_names: &[String]) -> Result<(), PartnerDataError> {
        self.fields.clear();
        self.fields
            .extend(["row", "column", "error"].map(str::to_owned));
        self.fields.extend(output_names.iter().cloned());
        let result = self.writer.write_record(&self.fields);
        result.map_err(|error| self.error(error))
    }

    fn write(
        &mut self,
        location: u64,
        column: &str,
        message: &str,
        record: Option<&DeidRecord>,
        identifiers: &[usize],
        n_outputs: usize,
    ) -> Result<(), PartnerDataError> {
        self.fields.clear();
        self.fields.push(location.to_string());
        self.fields.push(column.to_owned());
        self.fields.push(message.to_owned());
        for position in 0..n_outputs {
            let value = match record {
                Some(_) if identifiers.contains(&position) => REDACTED,
                Some(record) => output(record, position).unwrap_or(""),
                None => "",
            };
            self.fields.push(value.to_owned());
        }
        let result = self.writer.write_record(&self.fields);
        result.map_err(|error| self.error(error))
    }

    fn flush(&mut self) -> Result<(), PartnerDataError> {
        let result = self.writer.flush();
        result.map_err(|error| self.error(error.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_get_equal_codes_before_and_after_the_scanned_ones() {
        let mut book = CodeBook::default();
        let values: Vec<String> = (0..40).map(|index| format!("category {index}")).collect();
        let codes: Vec<u16> = values.iter().map(|value| book.code(value)).collect();
        assert_eq!(codes, (0..40).collect::<Vec<u16>>());
        for (value, code) in values.iter().zip(&codes) {
            assert_eq!(book.code(value), *code, "{value}");
        }
        // The dictionary names every code, in code order.
        assert_eq!(book.names(), values);
    }

    #[test]
    fn codes_saturate_and_the_book_stops_growing() {
        let mut book = CodeBook::default();
        for index in 0..70_000 {
            book.code(&index.to_string());
        }
        assert_eq!(book.code("69999"), u16::MAX);
        assert_eq!(book.code("65534"), 65_534);
        assert_eq!(book.code("20"), 20);
        assert_eq!(book.first_values.len() + book.other_codes.len(), 65_535);
    }
}
