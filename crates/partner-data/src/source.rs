//! Streaming row readers for every input format: CSV (any delimiter, sniffed or configured;
//! UTF-8 with or without a byte-order mark; GBK decoded on the fly), Parquet through the record
//! API, and PostgreSQL through `COPY ... TO STDOUT` read as CSV. Each holds one row at a time,
//! so memory does not grow with the input.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::ops::Range;

use encoding_rs::{DecoderResult, GBK};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::{Field, Row};

use crate::config::{Input, TextEncoding};
use crate::error::PartnerDataError;

/// Delimiters tried when none is configured, in order of preference on a tie.
const SNIFFED_DELIMITERS: [u8; 4] = [b',', b';', b'\t', b'|'];

/// Lines of the file's start that the delimiter sniffer looks at.
const SNIFF_LINES: usize = 20;

/// Buffer size of the readers: large enough to sniff the delimiter from, small enough to keep
/// memory flat.
const BUFFER_BYTES: usize = 256 * 1024;

/// One row read from a source: its fields as text in one buffer, plus where it was.
#[derive(Debug, Default)]
pub(crate) struct RowBuffer {
    /// The concatenated field texts.
    text: String,
    /// Byte range of each field in `text`; `None` for a SQL/Parquet null.
    fields: Vec<Option<Range<usize>>>,
    /// The first field that was not valid UTF-8, by position; the row is rejected for it.
    pub(crate) invalid_utf8_field: Option<usize>,
    /// Set on the last row of a CSV input when a quoted field runs to the end of the input and
    /// holds this many further lines that look like rows: the closing quote is most likely
    /// missing and the rows after it were swallowed, so the row is rejected rather than loaded.
    pub(crate) unclosed_quote_lines: Option<u64>,
    /// Line (CSV, header = line 1) or 1-based data row number (Parquet) for messages.
    pub(crate) location: u64,
}

impl RowBuffer {
    fn clear(&mut self) {
        self.text.clear();
        self.fields.clear();
        self.invalid_utf8_field = None;
        self.unclosed_quote_lines = None;
    }

    fn push(&mut self, value: Option<&str>) {
        self.fields.push(value.map(|value| {
            let start = self.text.len();
            self.text.push_str(value);
            start..self.text.len()
        }));
    }

    /// Appends a CSV record's fields. The whole record is checked as UTF-8 in one pass rather
    /// than field by field; a field of a valid record is then valid on its own exactly when it
    /// starts and ends on character boundaries (a character cannot straddle two fields in the
    /// input, since delimiters are ASCII, but the concatenation could join two broken halves).
    fn push_csv_record(&mut self, record: &csv::ByteRecord) {
        let Ok(text) = std::str::from_utf8(record.as_slice()) else {
            for (index, field) in record.iter().enumerate() {
                match std::str::from_utf8(field) {
                    Ok(text) => self.push(Some(text)),
                    Err(_) => {
                        self.invalid_utf8_field.get_or_insert(index);
                        self.push(None);
                    }
                }
            }
            return;
        };
        let offset = self.text.len();
        self.text.push_str(text);
        for index in 0..record.len() {
            let field = record.range(index).filter(|range| {
                text.is_char_boundary(range.start) && text.is_char_boundary(range.end)
            });
            match field {
                Some(range) => self
                    .fields
                    .push(Some(offset + range.start..offset + range.end)),
                None => {
                    self.invalid_utf8_field.get_or_insert(index);
                    self.fields.push(None);
                }
            }
        }
    }

    /// Number of fields in the row.
    pub(crate) fn len(&self) -> usize {
        self.fields.len()
    }

    /// Replaces `values` with the field texts, empty fields and nulls as `None`. The caller
    /// keeps the vector from row to row (see [`recycle`]), so this allocates nothing.
    pub(crate) fn values_into<'row>(&'row self, values: &mut Vec<Option<&'row str>>) {
        values.clear();
        values.extend(self.fields.iter().map(|range| {
            range
                .as_ref()
                .and_then(|range| self.text.get(range.clone()))
                .filter(|value| !is_blank(value))
        }));
    }
}

/// Whether a field holds only whitespace. Most fields start with a visible ASCII character,
/// which settles it without decoding any character.
fn is_blank(value: &str) -> bool {
    match value.as_bytes().first() {
        Some(byte) if byte.is_ascii_graphic() => false,
        _ => value.trim().is_empty(),
    }
}

/// Empties a vector of borrowed field texts and returns it free of the borrow, so one
/// allocation serves every row: collecting an emptied vector into one of the same layout
/// reuses its buffer.
pub(crate) fn recycle<'any>(mut values: Vec<Option<&str>>) -> Vec<Option<&'any str>> {
    values.clear();
    values.into_iter().map(|_| None).collect()
}

/// A source of rows with a header.
pub(crate) trait RowReader {
    /// Column names, in field order.
    fn header(&self) -> &[String];
    /// Reads the next row into `row`; `false` at the end.
    fn read_row(&mut self, row: &mut RowBuffer) -> Result<bool, PartnerDataError>;
}

/// Opens `input` and hands its reader to `consume`. A callback rather than a returned reader,
/// because the PostgreSQL copy stream borrows its connection.
pub(crate) fn with_reader<T>(
    input: &Input,
    consume: impl FnOnce(&mut dyn RowReader) -> Result<T, PartnerDataError>,
) -> Result<T, PartnerDataError> {
    let name = input.describe();
    match input {
        Input::Csv {
            path,
            delimiter,
            encoding,
        } => {
            let file = File::open(path).map_err(|error| PartnerDataError::Open {
                input: name.clone(),
                error,
            })?;
            let mut reader = CsvRows::new(name, file, *delimiter, *encoding)?;
            consume(&mut reader)
        }
        Input::Parquet { path } => {
            let file = File::open(path).map_err(|error| PartnerDataError::Open {
                input: name.clone(),
                error,
            })?;
            let mut reader = ParquetRows::new(name, file)?;
            consume(&mut reader)
        }
        Input::Postgres { url, table, query } => {
            let select = match (table, query) {
                (Some(table), None) => format!("SELECT * FROM {}", quote_table_name(table)),
                (None, Some(query)) => query.trim().trim_end_matches(';').to_owned(),
                _ => {
                    return Err(PartnerDataError::Config {
                        input: name,
                        reason: "a postgres source needs exactly one of `table` or `query`"
                            .to_owned(),
                    });
                }
            };
            let postgres_error = |error| PartnerDataError::Postgres {
                input: name.clone(),
                error,
            };
            let mut client =
                postgres::Client::connect(url, postgres::NoTls).map_err(postgres_error)?;
            let copy = client
                .copy_out(&format!(
                    "COPY ({select}) TO STDOUT WITH (FORMAT csv, HEADER true)"
                ))
                .map_err(postgres_error)?;
            // COPY writes UTF-8 when the client encoding is UTF-8, which the driver sets.
            let mut reader = CsvRows::new(name.clone(), copy, Some(','), TextEncoding::Utf8)?;
            consume(&mut reader)
        }
    }
}

/// Quotes each dot-separated part of a table name as a SQL identifier, so a configured name
/// can never inject SQL.
fn quote_table_name(table: &str) -> String {
    table
        .split('.')
        .map(|part| format!("\"{}\"", part.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(".")
}

/// CSV rows from any byte stream.
struct CsvRows<R: Read> {
    input: String,
    reader: csv::Reader<BufReader<DecodedText<R>>>,
    header: Vec<String>,
    delimiter: u8,
    record: csv::ByteRecord,
    /// A record read ahead to learn whether the previous one was the last (only done after a
    /// record with a multi-line field, see [`RowBuffer::unclosed_quote_lines`]).
    peeked: Option<csv::ByteRecord>,
}

impl<R: Read> CsvRows<R> {
    fn new(
        input: String,
        stream: R,
        delimiter: Option<char>,
        encoding: TextEncoding,
    ) -> Result<Self, PartnerDataError> {
        let decoded = DecodedText::new(stream, encoding);
        let mut buffered = BufReader::with_capacity(BUFFER_BYTES, decoded);
        let read_error = |error: io::Error| PartnerDataError::Read {
            input: input.clone(),
            error: error.into(),
        };
        let start = buffered.fill_buf().map_err(read_error)?;
        if start.iter().all(|byte| byte.is_ascii_whitespace()) {
            return Err(PartnerDataError::EmptyFile { input });
        }
        let delimiter = match delimiter {
            Some(delimiter) => ascii_delimiter(delimiter)?,
            None => sniff_delimiter(start).ok_or_else(|| PartnerDataError::UnknownDelimiter {
                input: input.clone(),
            })?,
        };
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .has_headers(true)
            // Field counts are checked per row so one short row is a rejection, not an abort.
            .flexible(true)
            .from_reader(buffered);
        let header = reader
            .byte_headers()
            .map_err(|error| PartnerDataError::Read {
                input: input.clone(),
                error,
            })?
            .iter()
            .map(|name| String::from_utf8_lossy(name).trim().to_owned())
            .collect::<Vec<_>>();
        if header.iter().all(String::is_empty) {
            return Err(PartnerDataError::EmptyFile { input });
        }
        Ok(Self {
            input,
            reader,
            header,
            delimiter,
            record: csv::ByteRecord::new(),
            peeked: None,
        })
    }
}

impl<R: Read> RowReader for CsvRows<R> {
    fn header(&self) -> &[String] {
        &self.header
    }

    fn read_row(&mut self, row: &mut RowBuffer) -> Result<bool, PartnerDataError> {
        let read_error = |input: &str, error| PartnerDataError::Read {
            input: input.to_owned(),
            error,
        };
        match self.peeked.take() {
            Some(peeked) => self.record = peeked,
            None => {
                let more = self
                    .reader
                    .read_byte_record(&mut self.record)
                    .map_err(|error| read_error(&self.input, error))?;
                if !more {
                    return Ok(false);
                }
            }
        }
        row.clear();
        row.location = self.record.position().map_or(0, csv::Position::line);
        row.push_csv_record(&self.record);
        // The csv crate accepts a quoted field left open at the end of the input, which would
        // load every following row as part of one field. Only a record with a line break inside
        // a field can be such a case, so only then is the next record read ahead.
        if self.record.as_slice().contains(&b'\n') {
            let mut next = csv::ByteRecord::new();
            let more = self
                .reader
                .read_byte_record(&mut next)
                .map_err(|error| read_error(&self.input, error))?;
            if more {
                self.peeked = Some(next);
            } else {
                let swallowed =
                    swallowed_row_lines(&self.record, self.delimiter, self.header.len());
                row.unclosed_quote_lines = (swallowed > 0).then_some(swallowed);
            }
        }
        Ok(true)
    }
}

/// Lines inside the record's fields, after a line break, that hold as many delimiters as a row
/// of `n_columns` fields: rows that an unclosed quote has swallowed.
fn swallowed_row_lines(record: &csv::ByteRecord, delimiter: u8, n_columns: usize) -> u64 {
    if n_columns < 2 {
        return 0;
    }
    let looks_like_row =
        |line: &[u8]| line.iter().filter(|byte| **byte == delimiter).count() + 1 >= n_columns;
    record
        .iter()
        .flat_map(|field| field.split(|byte| *byte == b'\n').skip(1))
        .filter(|line| looks_like_row(line))
        .count() as u64
}

fn ascii_delimiter(delimiter: char) -> Result<u8, PartnerDataError> {
    match u8::try_from(delimiter) {
        Ok(byte) if byte.is_ascii() && !matches!(byte, b'"' | b'\n' | b'\r') => Ok(byte),
        _ => Err(PartnerDataError::InvalidDelimiter { delimiter }),
    }
}

/// Picks the candidate delimiter that splits the header into the most fields (outside quotes)
/// while most of the following sampled lines agree with the header's count; a few malformed
/// rows in the sample do not change the verdict. Returns `None` when no candidate qualifies.
pub fn sniff_delimiter(sample: &[u8]) -> Option<u8> {
    let mut lines: Vec<&[u8]> = sample.split(|byte| *byte == b'\n').collect();
    // The last piece may be cut off by the sample's end, unless the sample is the whole file.
    if lines.len() > 1 {
        lines.pop();
    }
    let lines: Vec<&[u8]> = lines
        .into_iter()
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
        .take(SNIFF_LINES)
        .collect();
    let count_outside_quotes = |line: &[u8], delimiter: u8| {
        let mut quoted = false;
        let mut count = 0usize;
        for byte in line {
            if *byte == b'"' {
                quoted = !quoted;
            } else if *byte == delimiter && !quoted {
                count += 1;
            }
        }
        count
    };
    let mut best: Option<(u8, usize)> = None;
    for delimiter in SNIFFED_DELIMITERS {
        let mut counts = lines
            .iter()
            .map(|line| count_outside_quotes(line, delimiter));
        let Some(header_count) = counts.next() else {
            continue;
        };
        let (agreeing, others) = counts.fold((0usize, 0usize), |(agreeing, others), count| {
            if count == header_count {
                (agreeing + 1, others)
            } else {
                (agreeing, others + 1)
            }
        });
        if header_count > 0
            && agreeing >= others
            && best.is_none_or(|(_, best_count)| header_count > best_count)
        {
            best = Some((delimiter, header_count));
        }
    }
    best.map(|(delimiter, _)| delimiter)
}

/// A byte stream converted to UTF-8: UTF-8 input passes through with its byte-order mark
/// removed (invalid bytes are caught per field later, so the row and column can be named);
/// GBK input is decoded strictly, and a malformed sequence fails the read with its byte offset.
struct DecodedText<R: Read> {
    inner: R,
    decoder: Option<encoding_rs::Decoder>,
    encoding_name: &'static str,
    /// Undecoded input.
    pending: Vec<u8>,
    pending_start: usize,
    /// Whether `inner` is exhausted.
    finished: bool,
    /// Whether the decoder has flushed its last character: `encoding_rs` panics if a finished
    /// decoder is called again, and a reader may well be read again after its end.
    decoder_finished: bool,
    /// Whether the UTF-8 byte-order mark check has been done.
    bom_checked: bool,
    /// Bytes of the input consumed so far, for error positions.
    consumed: u64,
    /// Line breaks among the decoded bytes so far, so a decoding error names its line (GBK
    /// never uses 0x0A inside a multi-byte character, so counting bytes is exact).
    decoded_line_breaks: u64,
}

impl<R: Read> DecodedText<R> {
    fn new(inner: R, encoding: TextEncoding) -> Self {
        let (decoder, encoding_name) = match encoding {
            TextEncoding::Utf8 => (None, "UTF-8"),
            // `new_decoder` sniffs a byte-order mark and switches to UTF-8 when it finds one.
            TextEncoding::Gbk => (Some(GBK.new_decoder()), GBK.name()),
        };
        Self {
            inner,
            decoder,
            encoding_name,
            pending: Vec::with_capacity(BUFFER_BYTES),
            pending_start: 0,
            finished: false,
            decoder_finished: false,
            bom_checked: false,
            consumed: 0,
            decoded_line_breaks: 0,
        }
    }

    fn refill(&mut self) -> io::Result<()> {
        if self.pending_start > 0 {
            self.pending.drain(..self.pending_start);
            self.pending_start = 0;
        }
        let old_length = self.pending.len();
        self.pending.resize(old_length + BUFFER_BYTES, 0);
        let read = loop {
            match self.inner.read(&mut self.pending[old_length..]) {
                Ok(read) => break read,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    self.pending.truncate(old_length);
                    return Err(error);
                }
            }
        };
        self.pending.truncate(old_length + read);
        self.finished = read == 0;
        Ok(())
    }
}

impl<R: Read> Read for DecodedText<R> {
    fn read(&mut self, output: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.decoder.is_none()
                && self.bom_checked
                && self.pending_start >= self.pending.len()
            {
                // UTF-8 passes through unchanged, so once the byte-order mark is settled and
                // nothing is left over, the input is read straight into the caller's buffer.
                let read = loop {
                    match self.inner.read(output) {
                        Ok(read) => break read,
                        Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                        Err(error) => return Err(error),
                    }
                };
                self.consumed += read as u64;
                self.finished = read == 0;
                return Ok(read);
            }
            if self.pending_start >= self.pending.len() && !self.finished {
                self.refill()?;
            }
            if !self.bom_checked && self.decoder.is_none() {
                // Wait for three bytes (or the end) before deciding about the byte-order mark.
                if self.pending.len() - self.pending_start < 3 && !self.finished {
                    self.refill()?;
                    continue;
                }
                if self.pending.get(self.pending_start..self.pending_start + 3)
                    == Some(&[0xEF, 0xBB, 0xBF][..])
                {
                    self.pending_start += 3;
                    self.consumed += 3;
                }
                self.bom_checked = true;
            }
            let available = self.pending.get(self.pending_start..).unwrap_or_default();
            if self.decoder_finished {
                return Ok(0);
            }
            let Some(decoder) = self.decoder.as_mut() else {
                let copied = available.len().min(output.len());
                output[..copied].copy_from_slice(&available[..copied]);
                self.pending_start += copied;
                self.consumed += copied as u64;
                return Ok(copied);
            };
            if available.is_empty() && self.finished && output.len() < 4 {
                // The decoder may still hold a partial sequence only at end of input, and
                // flushing needs room for one character.
                return Ok(0);
            }
            let (result, read, written) =
                decoder.decode_to_utf8_without_replacement(available, output, self.finished);
            let line_breaks = available
                .get(..read)
                .unwrap_or_default()
                .iter()
                .filter(|byte| **byte == b'\n')
                .count();
            self.decoded_line_breaks += line_breaks as u64;
            self.pending_start += read;
            self.consumed += read as u64;
            match result {
                DecoderResult::Malformed(bad_bytes, _) => {
                    let offset = self.consumed.saturating_sub(u64::from(bad_bytes));
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "not valid {} at byte {offset} (line {})",
                            self.encoding_name,
                            self.decoded_line_breaks + 1
                        ),
                    ));
                }
                DecoderResult::InputEmpty | DecoderResult::OutputFull => {
                    if self.finished && matches!(result, DecoderResult::InputEmpty) {
                        // Called with `last`: everything is decoded and flushed.
                        self.decoder_finished = true;
                    }
                    if written > 0 || (self.finished && self.pending_start >= self.pending.len()) {
                        return Ok(written);
                    }
                }
            }
        }
    }
}

/// Rows of a Parquet file, read row group by row group through the record API.
struct ParquetRows {
    input: String,
    header: Vec<String>,
    rows: parquet::record::reader::RowIter<'static>,
    read: u64,
    /// The reader panicked on a malformed page: it is not asked again.
    failed: bool,
}

impl ParquetRows {
    fn new(input: String, file: File) -> Result<Self, PartnerDataError> {
        let file_length = file
            .metadata()
            .map_err(|error| PartnerDataError::Open {
                input: input.clone(),
                error,
            })?
            .len();
        let reader =
            SerializedFileReader::new(file).map_err(|error| PartnerDataError::ParquetFooter {
                input: input.clone(),
                error,
            })?;
        check_parquet_layout(reader.metadata(), file_length).map_err(|reason| {
            PartnerDataError::ParquetLayout {
                input: input.clone(),
                reason,
            }
        })?;
        let header = reader
            .metadata()
            .file_metadata()
            .schema()
            .get_fields()
            .iter()
            .map(|field| field.name().to_owned())
            .collect();
        if reader.metadata().file_metadata().num_rows() == 0 {
            return Err(PartnerDataError::NoRows { input });
        }
        Ok(Self {
            input,
            header,
            rows: reader.into_iter(),
            read: 0,
            failed: false,
        })
    }
}

/// Bytes at a Parquet file's end that are not data: the footer length and the closing magic.
const PARQUET_TAIL_BYTES: u64 = 8;

/// Checks the footer against the file before any page is read. The `parquet` crate trusts
/// these numbers: it reserves a column chunk's declared size before reading it (an abort, not
/// an error, when the size is absurd) and asserts that offsets are not negative (a panic). A
/// chunk must lie inside the file, before the footer, with sizes and counts that are not
/// negative.
fn check_parquet_layout(metadata: &ParquetMetaData, file_length: u64) -> Result<(), String> {
    let data_end = file_length.saturating_sub(PARQUET_TAIL_BYTES);
    if metadata.file_metadata().num_rows() < 0 {
        return Err(format!(
            "the file declares {} rows",
            metadata.file_metadata().num_rows()
        ));
    }
    for (group_index, group) in metadata.row_groups().iter().enumerate() {
        if group.num_rows() < 0 {
            return Err(format!(
                "row group {group_index} declares {} rows",
                group.num_rows()
            ));
        }
        for column in group.columns() {
            let start = column
                .dictionary_page_offset()
                .unwrap_or(column.data_page_offset());
            let described = || {
                format!(
                    "row group {group_index}, column `{}`",
                    column.column_path().string()
                )
            };
            let (Ok(start), Ok(length), true) = (
                u64::try_from(start),
                u64::try_from(column.compressed_size()),
                column.uncompressed_size() >= 0,
            ) else {
                return Err(format!(
                    "{} declares a negative offset or size (offset {start}, {} bytes compressed, \
                     {} bytes uncompressed)",
                    described(),
                    column.compressed_size(),
                    column.uncompressed_size()
                ));
            };
            if start.checked_add(length).is_none_or(|end| end > data_end) {
                return Err(format!(
                    "{} declares bytes {start}..{} but the file's data ends at byte {data_end} \
                     ({file_length} bytes in all)",
                    described(),
                    start.saturating_add(length)
                ));
            }
        }
    }
    Ok(())
}

impl ParquetRows {
    fn malformed(&self) -> PartnerDataError {
        PartnerDataError::ParquetPageMalformed {
            input: self.input.clone(),
            row: self.read + 1,
        }
    }
}

impl RowReader for ParquetRows {
    fn header(&self) -> &[String] {
        &self.header
    }

    fn read_row(&mut self, row: &mut RowBuffer) -> Result<bool, PartnerDataError> {
        // The reader decodes pages as rows are asked for, and some malformed pages make it
        // panic (an assertion in its bit reader) rather than return an error. A partner's
        // file must never take the node down, so the panic is caught here and the file
        // refused; the iterator is not used again after it (`failed`).
        if self.failed {
            return Err(self.malformed());
        }
        let rows = &mut self.rows;
        let next = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rows.next())) {
            Ok(next) => next,
            Err(_) => {
                self.failed = true;
                return Err(self.malformed());
            }
        };
        let Some(next) = next else {
            return Ok(false);
        };
        let next: Row = next.map_err(|error| PartnerDataError::Parquet {
            input: self.input.clone(),
            error,
        })?;
        self.read += 1;
        row.clear();
        row.location = self.read;
        for (index, (_, field)) in next.get_column_iter().enumerate() {
            match field_text(field) {
                FieldText::Text(text) => row.push(Some(&text)),
                FieldText::Null => row.push(None),
                FieldText::NotUtf8 => {
                    row.invalid_utf8_field.get_or_insert(index);
                    row.push(None);
                }
            }
        }
        Ok(true)
    }
}

enum FieldText {
    Text(String),
    Null,
    NotUtf8,
}

/// A Parquet value as the text the CSV path would have seen: strings as they are, dates as
/// `YYYY-MM-DD`, timestamps as RFC 3339 UTC, numbers in Rust's shortest round-trip form.
fn field_text(field: &Field) -> FieldText {
    let from_micros = |micros: i64| {
        chrono::DateTime::from_timestamp_micros(micros)
            .map(|time| time.format("%Y-%m-%dT%H:%M:%S%.fZ").to_string())
    };
    let text = match field {
        Field::Null => return FieldText::Null,
        Field::Str(text) => text.clone(),
        Field::Bytes(bytes) => match std::str::from_utf8(bytes.data()) {
            Ok(text) => text.to_owned(),
            Err(_) => return FieldText::NotUtf8,
        },
        Field::Bool(value) => value.to_string(),
        Field::Byte(value) => value.to_string(),
        Field::Short(value) => value.to_string(),
        Field::Int(value) => value.to_string(),
        Field::Long(value) => value.to_string(),
        Field::UByte(value) => value.to_string(),
        Field::UShort(value) => value.to_string(),
        Field::UInt(value) => value.to_string(),
        Field::ULong(value) => value.to_string(),
        Field::Float(value) => value.to_string(),
        Field::Double(value) => value.to_string(),
        Field::Date(days) => match chrono::NaiveDate::from_num_days_from_ce_opt(
            days.saturating_add(EPOCH_DAYS_FROM_CE),
        ) {
            Some(date) => date.format("%Y-%m-%d").to_string(),
            None => return FieldText::Null,
        },
        Field::TimestampMillis(millis) => match from_micros(millis.saturating_mul(1000)) {
            Some(text) => text,
            None => return FieldText::Null,
        },
        Field::TimestampMicros(micros) => match from_micros(*micros) {
            Some(text) => text,
            None => return FieldText::Null,
        },
        other => other.to_string(),
    };
    FieldText::Text(text)
}

/// Days from 0001-01-01 (chrono's day 1 of the common era) to 1970-01-01, Parquet's day 0.
const EPOCH_DAYS_FROM_CE: i32 = 719_163;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffing_picks_the_consistent_delimiter() {
        let check = |sample: &str, expected: Option<u8>| {
            assert_eq!(sniff_delimiter(sample.as_bytes()), expected, "{sample:?}")
        };
        check("a,b,c\n1,2,3\n4,5,6\n", Some(b','));
        check("a;b;c\n1,5;2;3\n4;5;6\n", Some(b';'));
        check("a\tb\n\"x\ty\"\t2\n", Some(b'\t'));
        check("a|b\n1|2\n", Some(b'|'));
        // A comma inside quotes does not count.
        check("name;note\nx;\"a, b\"\n", Some(b';'));
        check("single\n1\n2\n", None);
        // One short row does not outvote the rest.
        check("a,b,c\n1,2\n1,2,3\n4,5,6\n", Some(b','));
        // A delimiter that only the header has is not one.
        check("a;b\n1\n2\n", None);
    }

    #[test]
    fn a_gbk_reader_read_again_after_its_end_returns_nothing() {
        // Found by the csv_ingestion fuzz target: a reader asked for more after it had
        // returned its end called the finished GBK decoder again, which panics.
        let (gbk, _, _) = GBK.encode("客户,金额\n张三,10\n");
        let mut reader = DecodedText::new(&gbk[..], TextEncoding::Gbk);
        let mut text = String::new();
        reader.read_to_string(&mut text).unwrap();
        assert_eq!(text, "客户,金额\n张三,10\n");
        let mut more = [0u8; 16];
        for _ in 0..3 {
            assert_eq!(reader.read(&mut more).unwrap(), 0);
        }
    }

    #[test]
    fn gbk_is_decoded_and_utf8_bom_removed() {
        let decode = |bytes: &[u8], encoding| {
            let mut text = String::new();
            DecodedText::new(bytes, encoding)
                .read_to_string(&mut text)
                .map(|_| text)
        };
        let (gbk, _, _) = GBK.encode("客户,金额\n张三,10\n");
        assert_eq!(
            decode(&gbk, TextEncoding::Gbk).ok().as_deref(),
            Some("客户,金额\n张三,10\n")
        );
        assert_eq!(
            decode(b"\xEF\xBB\xBFa,b\n", TextEncoding::Utf8)
                .ok()
                .as_deref(),
            Some("a,b\n")
        );
        let error = decode(b"ab\x81\x20cd", TextEncoding::Gbk)
            .err()
            .map(|error| error.to_string());
        assert_eq!(error.as_deref(), Some("not valid GBK at byte 2 (line 1)"));
        let error = decode(b"a,b\n\xc4\xe3,1\nc,\x81\x20\n", TextEncoding::Gbk)
            .err()
            .map(|error| error.to_string());
        assert_eq!(error.as_deref(), Some("not valid GBK at byte 11 (line 3)"));
    }

    #[test]
    fn fields_are_checked_as_utf8_one_by_one_and_blank_ones_are_missing() {
        let check = |fields: Vec<&[u8]>, values: &[Option<&str>], invalid: Option<usize>| {
            let record = csv::ByteRecord::from(fields);
            let mut row = RowBuffer::default();
            row.push_csv_record(&record);
            let mut found = Vec::new();
            row.values_into(&mut found);
            assert_eq!(
                (found.as_slice(), row.invalid_utf8_field),
                (values, invalid)
            );
        };
        check(
            vec![
                b"a",
                "café".as_bytes(),
                b" \t",
                "\u{3000}".as_bytes(),
                "\u{3000}x".as_bytes(),
            ],
            &[Some("a"), Some("café"), None, None, Some("\u{3000}x")],
            None,
        );
        // "é" split over two fields: the row's bytes joined are valid UTF-8, neither field is.
        check(
            vec![b"x", b"caf\xC3", b"\xA9", b"y"],
            &[Some("x"), None, None, Some("y")],
            Some(1),
        );
        check(
            vec![b"ok", b"\xFF", b"ok"],
            &[Some("ok"), None, Some("ok")],
            Some(1),
        );
    }

    #[test]
    fn table_names_are_quoted() {
        assert_eq!(quote_table_name("crm.customers"), "\"crm\".\"customers\"");
        assert_eq!(quote_table_name("a\"b"), "\"a\"\"b\"");
    }
}
