//! Hand-written detectors for personal data in free text: emails, phone numbers, Chinese resident
//! ID numbers, bank card numbers, IPv4 and IPv6 addresses.
//!
//! The scanner is a few linear passes over the bytes with no regular expressions and no
//! allocation unless something is found, because it runs on every kept cell of every row.
//! All detectors only ever match ASCII, so every reported range lies on `char` boundaries.

use std::borrow::Cow;
use std::net::Ipv6Addr;
use std::ops::Range;

use serde::{Deserialize, Serialize};

/// The kinds of personal data the scanner recognises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PiiKind {
    /// An email address such as `name@example.com`.
    Email,
    /// A mainland China mobile number or an international `+` number.
    Phone,
    /// An 18-character Chinese resident identity card number with a valid checksum.
    ResidentId,
    /// A Luhn-valid payment card number.
    BankCard,
    /// A dotted-quad IPv4 address.
    Ipv4,
    /// An IPv6 address in any textual form `std` accepts.
    Ipv6,
}

impl PiiKind {
    /// Every kind, in the order used by reports.
    pub const ALL: [PiiKind; 6] = [
        PiiKind::Email,
        PiiKind::Phone,
        PiiKind::ResidentId,
        PiiKind::BankCard,
        PiiKind::Ipv4,
        PiiKind::Ipv6,
    ];

    /// The text that replaces a hit of this kind in redacted output.
    pub fn placeholder(self) -> &'static str {
        match self {
            PiiKind::Email => "[EMAIL]",
            PiiKind::Phone => "[PHONE]",
            PiiKind::ResidentId => "[ID_NUMBER]",
            PiiKind::BankCard => "[CARD]",
            PiiKind::Ipv4 => "[IPV4]",
            PiiKind::Ipv6 => "[IPV6]",
        }
    }

    /// The snake_case name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            PiiKind::Email => "email",
            PiiKind::Phone => "phone",
            PiiKind::ResidentId => "resident_id",
            PiiKind::BankCard => "bank_card",
            PiiKind::Ipv4 => "ipv4",
            PiiKind::Ipv6 => "ipv6",
        }
    }
}

/// One detected piece of personal data. It carries the position only, never the value, so a hit
/// can be logged or counted without leaking what was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PiiHit {
    /// What was found.
    pub kind: PiiKind,
    /// Where it is in the scanned text, in bytes.
    pub byte_range: Range<usize>,
}

/// Number of hits of each kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PiiCounts {
    /// Email addresses found.
    pub email: u64,
    /// Phone numbers found.
    pub phone: u64,
    /// Resident ID numbers found.
    pub resident_id: u64,
    /// Bank card numbers found.
    pub bank_card: u64,
    /// IPv4 addresses found.
    pub ipv4: u64,
    /// IPv6 addresses found.
    pub ipv6: u64,
}

impl PiiCounts {
    /// The count for one kind.
    pub fn get(&self, kind: PiiKind) -> u64 {
        match kind {
            PiiKind::Email => self.email,
            PiiKind::Phone => self.phone,
            PiiKind::ResidentId => self.resident_id,
            PiiKind::BankCard => self.bank_card,
            PiiKind::Ipv4 => self.ipv4,
            PiiKind::Ipv6 => self.ipv6,
        }
    }

    /// Counts one more hit of `kind`.
    pub fn record(&mut self, kind: PiiKind) {
        *self.get_mut(kind) += 1;
    }

    /// Adds every count of `other` to this one.
    pub fn add(&mut self, other: &PiiCounts) {
        for kind in PiiKind::ALL {
            *self.get_mut(kind) += other.get(kind);
        }
    }

    /// Total hits of all kinds.
    pub fn total(&self) -> u64 {
        PiiKind::ALL.iter().map(|kind| self.get(*kind)).sum()
    }

    fn get_mut(&mut self, kind: PiiKind) -> &mut u64 {
        match kind {
            PiiKind::Email => &mut self.email,
            PiiKind::Phone => &mut self.phone,
            PiiKind::ResidentId => &mut self.resident_id,
            PiiKind::BankCard => &mut self.bank_card,
            PiiKind::Ipv4 => &mut self.ipv4,
            PiiKind::Ipv6 => &mut self.ipv6,
        }
    }
}

/// Finds all personal data in `text`, sorted by position and never overlapping (where two
/// detectors claim overlapping bytes, the longer match wins).
pub fn scan(text: &str) -> Vec<PiiHit> {
    let mut scratch = ScanScratch::default();
    scan_into(text, &mut scratch);
    scratch.hits
}

/// Replaces every hit with its placeholder (`[EMAIL]`, `[PHONE]`...) and counts hits per kind.
/// The result is re-scanned until it holds no detectable PII, so fragments that only look like
/// PII once their neighbour is redacted are removed (and counted) too.
pub fn redact(text: &str) -> (String, PiiCounts) {
    let mut scratch = ScanScratch::default();
    let mut counts = PiiCounts::default();
    let redacted = redact_reusing(text, &mut scratch, &mut counts).into_owned();
    (redacted, counts)
}

/// [`redact`] for the per-row path: reuses the scanner buffers, adds to existing counts and
/// borrows the input when nothing was found.
pub(crate) fn redact_reusing<'text>(
    text: &'text str,
    scratch: &mut ScanScratch,
    counts: &mut PiiCounts,
) -> Cow<'text, str> {
    scan_into(text, scratch);
    if scratch.hits.is_empty() {
        return Cow::Borrowed(text);
    }
    let mut redacted = replace_hits(text, &scratch.hits, counts);
    // Removing a hit can leave neighbours that now look like PII on their own ("0::a" before a
    // phone number reads as an IPv6 address once the number is gone). Redacting again until
    // nothing is found makes the output free of detectable PII (checked by the property tests);
    // the bound keeps the cost predictable on adversarial input.
    for _ in 0..MAX_EXTRA_REDACTION_PASSES {
        scan_into(&redacted, scratch);
        if scratch.hits.is_empty() {
            break;
        }
        redacted = replace_hits(&redacted, &scratch.hits, counts);
    }
    Cow::Owned(redacted)
}

/// Upper bound on re-scans of already redacted text.
const MAX_EXTRA_REDACTION_PASSES: usize = 3;

fn replace_hits(text: &str, hits: &[PiiHit], counts: &mut PiiCounts) -> String {
    let mut redacted = String::with_capacity(text.len());
    let mut cursor = 0;
    for hit in hits {
        // Ranges always start and end on ASCII bytes, so `get` succeeds; the fallback only keeps
        // the function total.
        redacted.push_str(text.get(cursor..hit.byte_range.start).unwrap_or_default());
        redacted.push_str(hit.kind.placeholder());
        counts.record(hit.kind);
        cursor = hit.byte_range.end;
    }
    redacted.push_str(text.get(cursor..).unwrap_or_default());
    redacted
}

/// Buffers the scanner reuses from one cell to the next, so scanning allocates nothing unless
/// PII is found.
#[derive(Debug, Default)]
pub(crate) struct ScanScratch {
    /// Hits of the last scan, in order.
    hits: Vec<PiiHit>,
    /// Digit groups of the number being classified.
    groups: Vec<DigitGroup>,
}

pub(crate) fn scan_into(text: &str, scratch: &mut ScanScratch) {
    scratch.hits.clear();
    let possible = PossibleDetectors::of(text.as_bytes());
    if possible.email || possible.numbers || possible.ipv6 {
        run_detectors(text, possible, scratch);
    }
}

/// Runs the detectors `possible` allows (the others are known not to match), adding to the
/// scratch's hits. Kept out of line so the common path through [`scan_into`], where nothing can
/// match, stays small.
#[inline(never)]
fn run_detectors(text: &str, possible: PossibleDetectors, scratch: &mut ScanScratch) {
    let ScanScratch { hits, groups } = scratch;
    let bytes = text.as_bytes();
    if possible.email {
        find_emails(bytes, hits);
    }
    if possible.numbers {
        find_numbers(bytes, groups, hits);
    }
    if possible.ipv6 {
        find_ipv6(text, hits);
    }
    if hits.len() > 1 {
        resolve_overlaps(hits);
    }
}

/// Which detectors can possibly match a text, from cheap passes over its bytes, so typical
/// cells (timestamps, amounts, categories) skip the detectors altogether. Each condition is
/// necessary for its detectors to report anything, so skipping never changes the hits (a
/// property test compares with running every detector):
/// - an email needs an `@`;
/// - a phone, resident ID or card number is one run of digit groups joined by spaces, dashes,
///   parentheses or a leading `+`, holding at least 8 digits (a `+` number), 10 (a North
///   American number, which needs its parentheses) or 11 (a mainland mobile; cards and IDs need
///   more); an IPv4 address needs four digits and three dots;
/// - an IPv6 address needs `::` or six colons.
#[derive(Clone, Copy, Debug, PartialEq)]
struct PossibleDetectors {
    email: bool,
    numbers: bool,
    ipv6: bool,
}

impl PossibleDetectors {
    /// Every detector; what the scan would run without the pre-filter.
    #[cfg(test)]
    const ALL: PossibleDetectors = PossibleDetectors {
        email: true,
        numbers: true,
        ipv6: true,
    };

    fn of(bytes: &[u8]) -> PossibleDetectors {
        // One pass that most cells need alone (categories, amounts, quantities); the further
        // passes run only on cells that might still hold a number or an IPv6 address.
        let mut classes = 0u8;
        let mut digits = 0usize;
        for byte in bytes {
            let class = BYTE_CLASSES[usize::from(*byte)];
            classes |= class;
            digits += usize::from(class & CLASS_DIGIT != 0);
        }
        let fewest_digits_of_a_number = if classes & CLASS_PHONE_MARK != 0 {
            MIN_DIGITS_MARKED_PHONE
        } else {
            MIN_DIGITS_UNMARKED_NUMBER
        };
        let count = |wanted: u8| bytes.iter().filter(|byte| **byte == wanted).count();
        let ipv4 = digits >= 4 && classes & CLASS_DOT != 0 && count(b'.') >= 3;
        let numbers = ipv4
            || (digits >= fewest_digits_of_a_number
                && most_digits_in_one_run(bytes) >= fewest_digits_of_a_number);
        let ipv6 = classes & CLASS_COLON != 0
            && (count(b':') >= 6 || bytes.windows(2).any(|pair| pair == b"::"));
        PossibleDetectors {
            email: classes & CLASS_AT != 0,
            numbers,
            ipv6,
        }
    }
}

/// The most digits in one stretch of bytes that a digit run can span (digits and the bytes
/// that may join their groups); every number the digit detectors match lies in one stretch.
fn most_digits_in_one_run(bytes: &[u8]) -> usize {
    let mut run_digits = 0usize;
    let mut most_run_digits = 0usize;
    // Branch-free; the count is reset with a mask rather than a multiplication to keep its
    // dependency chain short.
    for byte in bytes {
        let class = BYTE_CLASSES[usize::from(*byte)];
        let keep_run = 0usize.wrapping_sub(usize::from(class & CLASS_IN_RUN != 0));
        run_digits = (run_digits + usize::from(class & CLASS_DIGIT != 0)) & keep_run;
        most_run_digits = most_run_digits.max(run_digits);
    }
    most_run_digits
}

/// Fewest digits of a number written with a `+` (8, see [`is_phone`]) or an opening
/// parenthesis (10, see [`is_north_american_phone`]).
const MIN_DIGITS_MARKED_PHONE: usize = 8;

/// Fewest digits of any other number: a mainland mobile's 11 (cards have 13, IDs 17).
const MIN_DIGITS_UNMARKED_NUMBER: usize = 11;

const CLASS_AT: u8 = 1;
const CLASS_DIGIT: u8 = 2;
const CLASS_COLON: u8 = 4;
const CLASS_DOT: u8 = 8;
/// Bytes that may sit between the digit groups of one number: space, dash, parentheses, `+`.
const CLASS_JOINER: u8 = 16;
/// Bytes that do not end a stretch a digit run can span.
const CLASS_IN_RUN: u8 = CLASS_DIGIT | CLASS_JOINER;
/// Bytes that allow the shorter phone layouts: `+` and `(`.
const CLASS_PHONE_MARK: u8 = 32;

/// For each byte value, its classes for [`PossibleDetectors::of`].
static BYTE_CLASSES: [u8; 256] = {
    let mut classes = [0u8; 256];
    classes[b'@' as usize] = CLASS_AT;
    classes[b':' as usize] = CLASS_COLON;
    classes[b'.' as usize] = CLASS_DOT;
    classes[b' ' as usize] = CLASS_JOINER;
    classes[b'-' as usize] = CLASS_JOINER;
    classes[b')' as usize] = CLASS_JOINER;
    classes[b'(' as usize] = CLASS_JOINER | CLASS_PHONE_MARK;
    classes[b'+' as usize] = CLASS_JOINER | CLASS_PHONE_MARK;
    let mut digit = b'0';
    while digit <= b'9' {
        classes[digit as usize] = CLASS_DIGIT;
        digit += 1;
    }
    classes
};

fn byte_at(bytes: &[u8], index: usize) -> Option<u8> {
    bytes.get(index).copied()
}

fn byte_before(bytes: &[u8], index: usize) -> Option<u8> {
    index
        .checked_sub(1)
        .and_then(|previous| byte_at(bytes, previous))
}

fn is_digit_at(bytes: &[u8], index: usize) -> bool {
    byte_at(bytes, index).is_some_and(|byte| byte.is_ascii_digit())
}

/// Sorts hits by start and keeps, among overlapping hits, the longest.
fn resolve_overlaps(hits: &mut Vec<PiiHit>) {
    hits.sort_unstable_by(|left, right| {
        left.byte_range
            .start
            .cmp(&right.byte_range.start)
            .then(right.byte_range.end.cmp(&left.byte_range.end))
    });
    let mut kept: Vec<PiiHit> = Vec::with_capacity(hits.len());
    for hit in hits.drain(..) {
        match kept.last_mut() {
            Some(last) if hit.byte_range.start < last.byte_range.end => {
                if hit.byte_range.len() > last.byte_range.len() {
                    *last = hit;
                }
            }
            _ => kept.push(hit),
        }
    }
    *hits = kept;
}

// ---------------------------------------------------------------------------------------------
// Email addresses.

fn is_email_local_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn is_email_domain_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-')
}

fn find_emails(bytes: &[u8], hits: &mut Vec<PiiHit>) {
    for (at, _) in bytes.iter().enumerate().filter(|(_, byte)| **byte == b'@') {
        let mut start = at;
        while byte_before(bytes, start).is_some_and(is_email_local_byte) {
            start -= 1;
        }
        while start < at && byte_at(bytes, start) == Some(b'.') {
            start += 1;
        }
        if start == at {
            continue;
        }
        let mut end = at + 1;
        while byte_at(bytes, end).is_some_and(is_email_domain_byte) {
            end += 1;
        }
        // A sentence may end right after the address: "write to a@b.com."
        while end > at + 1 && matches!(byte_before(bytes, end), Some(b'.' | b'-')) {
            end -= 1;
        }
        // The top-level domain is alphabetic, so digits glued to it start the next token:
        // "a@qq.com13800138000" is an address followed by a phone number.
        if let Some(last_dot) = bytes
            .get(at + 1..end)
            .and_then(|domain| domain.iter().rposition(|byte| *byte == b'.'))
        {
            let top_level_start = at + 1 + last_dot + 1;
            let alphabetic = bytes
                .get(top_level_start..end)
                .unwrap_or_default()
                .iter()
                .take_while(|byte| byte.is_ascii_alphabetic())
                .count();
            end = top_level_start + alphabetic;
        }
        let domain = bytes.get(at + 1..end).unwrap_or_default();
        if is_plausible_domain(domain) {
            hits.push(PiiHit {
                kind: PiiKind::Email,
                byte_range: start..end,
            });
        }
    }
}

fn is_plausible_domain(domain: &[u8]) -> bool {
    let mut labels = 0;
    let mut last_label: &[u8] = &[];
    for label in domain.split(|byte| *byte == b'.') {
        if label.is_empty()
            || label.len() > 63
            || label.first() == Some(&b'-')
            || label.last() == Some(&b'-')
        {
            return false;
        }
        labels += 1;
        last_label = label;
    }
    labels >= 2 && last_label.len() >= 2 && last_label.iter().all(u8::is_ascii_alphabetic)
}

// ---------------------------------------------------------------------------------------------
// Digit-based detectors: IPv4, resident ID, phone, bank card.

/// One run of digits inside a separated number such as `6222 0212 3456 7890`.
#[derive(Clone, Copy, Debug)]
struct DigitGroup {
    /// First digit.
    start: usize,
    /// One past the last digit.
    end: usize,
    /// Whether the digits are enclosed in parentheses, as an area code in `+1 (415) 555-0132`
    /// or a trunk prefix in `+44 (0)20 7946 0958`; a hit then includes the parentheses.
    parenthesised: bool,
}

impl DigitGroup {
    /// Where a hit that begins with this group starts: at the `(` if there is one.
    fn outer_start(&self) -> usize {
        self.start - usize::from(self.parenthesised)
    }

    /// Where a hit that ends with this group ends: after the `)` if there is one.
    fn outer_end(&self) -> usize {
        self.end + usize::from(self.parenthesised)
    }
}

/// Longest digit string that may stand in parentheses inside a phone number (an area code).
const MAX_PARENTHESISED_DIGITS: usize = 4;

/// If `bytes[open]` is `(` followed by 1 to [`MAX_PARENTHESISED_DIGITS`] digits and `)`, the
/// digit group inside.
fn parenthesised_group_at(bytes: &[u8], open: usize) -> Option<DigitGroup> {
    if byte_at(bytes, open) != Some(b'(') {
        return None;
    }
    let start = open + 1;
    let mut end = start;
    while is_digit_at(bytes, end) {
        end += 1;
    }
    let length = end - start;
    ((1..=MAX_PARENTHESISED_DIGITS).contains(&length) && byte_at(bytes, end) == Some(b')'))
        .then_some(DigitGroup {
            start,
            end,
            parenthesised: true,
        })
}

/// Longest digit string any digit detector accepts (a 19-digit card); longer spans are skipped
/// without being examined.
const MAX_USEFUL_DIGITS: usize = 19;

fn find_numbers(bytes: &[u8], groups: &mut Vec<DigitGroup>, hits: &mut Vec<PiiHit>) {
    let mut index = 0;
    while index < bytes.len() {
        let byte = byte_at(bytes, index).unwrap_or_default();
        let starts_with_plus = byte == b'+' && is_digit_at(bytes, index + 1);
        let starts_with_parenthesis = parenthesised_group_at(bytes, index).is_some();
        if !(byte.is_ascii_digit() || starts_with_plus || starts_with_parenthesis)
            || is_digit_at(bytes, index.wrapping_sub(1))
        {
            index += 1;
            continue;
        }
        if byte.is_ascii_digit()
            && let Some(end) = match_ipv4(bytes, index)
        {
            hits.push(PiiHit {
                kind: PiiKind::Ipv4,
                byte_range: index..end,
            });
            index = end;
            continue;
        }
        let run = read_digit_run(bytes, index, groups);
        // Digits glued to a decimal point belong to a decimal number or a version string, not to
        // an identifier: "1380013800.5", "v2.13800138000".
        let part_of_decimal = (byte_before(bytes, index) == Some(b'.')
            && is_digit_at(bytes, index.wrapping_sub(2)))
            || (byte_at(bytes, run.end) == Some(b'.') && is_digit_at(bytes, run.end + 1));
        if !part_of_decimal {
            classify_digit_run(bytes, &run, groups, hits);
        }
        index = run.end.max(index + 1);
    }
}

/// A maximal number starting at one position: an optional `+`, digit groups joined by single
/// spaces or dashes, and an optional trailing `X` (the resident ID check character).
///
/// Numbers written the way phone numbers are (starting with `+` or with a parenthesised group)
/// may also hold parenthesised groups: `+1 (415) 555-0132`, `(415) 555-0132`,
/// `+44 (0)20 7946 0958`. Other numbers may not, so `qty (2) 4111...` keeps its parts apart.
struct DigitRun {
    start: usize,
    end: usize,
    starts_with_plus: bool,
    ends_with_x: bool,
}

fn read_digit_run(bytes: &[u8], start: usize, groups: &mut Vec<DigitGroup>) -> DigitRun {
    groups.clear();
    let starts_with_plus = byte_at(bytes, start) == Some(b'+');
    let phone_layout = starts_with_plus || byte_at(bytes, start) == Some(b'(');
    let mut position = start + usize::from(starts_with_plus);
    loop {
        let group = match parenthesised_group_at(bytes, position).filter(|_| phone_layout) {
            Some(group) => group,
            None => {
                let group_start = position;
                while is_digit_at(bytes, position) {
                    position += 1;
                }
                DigitGroup {
                    start: group_start,
                    end: position,
                    parenthesised: false,
                }
            }
        };
        groups.push(group);
        position = group.outer_end();
        let separator = matches!(byte_at(bytes, position), Some(b' ' | b'-'));
        let after_separator = position + usize::from(separator);
        // A closing parenthesis may be followed directly by digits ("(0)20"), and an opening
        // one may follow digits directly ("+1(415)").
        let continues_with_digits =
            (separator || group.parenthesised) && is_digit_at(bytes, after_separator);
        let continues_with_parenthesis =
            phone_layout && parenthesised_group_at(bytes, after_separator).is_some();
        if continues_with_digits || continues_with_parenthesis {
            position = after_separator;
        } else {
            break;
        }
    }
    // The check character X may be followed by anything but another letter (which would make
    // it part of a word): "11010519491231002X13800138000" is an ID number, then a phone number.
    let ends_with_x = matches!(byte_at(bytes, position), Some(b'X' | b'x'))
        && !byte_at(bytes, position + 1).is_some_and(|byte| byte.is_ascii_alphabetic());
    DigitRun {
        start,
        end: position + usize::from(ends_with_x),
        starts_with_plus,
        ends_with_x,
    }
}

/// Finds detector matches among contiguous spans of the run's groups, preferring the longest
/// span at each starting group, so `qty 2 138 0013 8000` still yields the phone number.
fn classify_digit_run(bytes: &[u8], run: &DigitRun, groups: &[DigitGroup], hits: &mut Vec<PiiHit>) {
    let mut first = 0;
    while first < groups.len() {
        let mut matched = None;
        let mut digit_total = 0;
        let mut last_candidate = first;
        for (offset, group) in groups.iter().enumerate().skip(first) {
            digit_total += group.end - group.start;
            if digit_total > MAX_USEFUL_DIGITS {
                break;
            }
            last_candidate = offset;
        }
        for last in (first..=last_candidate).rev() {
            let span = groups.get(first..=last).unwrap_or_default();
            let with_plus = run.starts_with_plus && first == 0;
            let with_x = run.ends_with_x && last + 1 == groups.len();
            if let Some(kind) = classify_span(bytes, span, with_plus, with_x) {
                matched = Some((last, kind, with_plus, with_x));
                break;
            }
        }
        match matched {
            Some((last, kind, with_plus, with_x)) => {
                let start = if with_plus {
                    run.start
                } else {
                    groups
                        .get(first)
                        .map_or(run.start, |group| group.outer_start())
                };
                let end = groups.get(last).map_or(run.end, |group| group.outer_end())
                    + usize::from(with_x && kind == PiiKind::ResidentId);
                hits.push(PiiHit {
                    kind,
                    byte_range: start..end,
                });
                first = last + 1;
            }
            None => first += 1,
        }
    }
}

fn classify_span(
    bytes: &[u8],
    span: &[DigitGroup],
    with_plus: bool,
    with_x: bool,
) -> Option<PiiKind> {
    let mut digits = [0u8; MAX_USEFUL_DIGITS];
    let mut count = 0;
    for group in span {
        for byte in bytes.get(group.start..group.end).unwrap_or_default() {
            *digits.get_mut(count)? = byte - b'0';
            count += 1;
        }
    }
    let digits = digits.get(..count)?;
    if !with_plus && has_resident_id_layout(span, with_x) && is_resident_id(digits, with_x) {
        return Some(PiiKind::ResidentId);
    }
    if with_x {
        return None;
    }
    let area_code_in_parentheses = span
        .first()
        .is_some_and(|group| group.parenthesised && group.end - group.start == 3);
    if is_phone(digits, with_plus) || (area_code_in_parentheses && is_north_american_phone(digits))
    {
        return Some(PiiKind::Phone);
    }
    if !with_plus && is_bank_card(digits) {
        return Some(PiiKind::BankCard);
    }
    None
}

/// Resident ID numbers are written unbroken, or split after the region code and the birth date
/// (`440305 19880315 123X`), the layout printed on many forms. Other splits are not accepted,
/// so a run of unrelated numbers does not add up to an ID.
fn has_resident_id_layout(span: &[DigitGroup], with_x: bool) -> bool {
    let length = |group: &DigitGroup| (group.end - group.start, group.parenthesised);
    match span {
        [single] => !single.parenthesised,
        [region, birth_date, rest] => {
            let last_length = if with_x { 3 } else { 4 };
            (length(region), length(birth_date), length(rest))
                == ((6, false), (8, false), (last_length, false))
        }
        _ => false,
    }
}

/// Mainland mobile numbers `1[3-9]` + 9 digits, bare or after `+86` / `0086`; or any `+` number
/// of 8 to 15 digits (E.164 allows at most 15). Bare international numbers without `+` are not
/// recognised: without the prefix they are indistinguishable from amounts and order numbers.
fn is_phone(digits: &[u8], with_plus: bool) -> bool {
    let mainland = match (with_plus, digits) {
        (true, [8, 6, rest @ ..]) => rest,
        (false, [0, 0, 8, 6, rest @ ..]) => rest,
        (false, rest) => rest,
        (true, _) => &[],
    };
    if let [1, second, ..] = mainland
        && mainland.len() == 11
        && (3..=9).contains(second)
    {
        return true;
    }
    with_plus && (8..=15).contains(&digits.len()) && digits.first() != Some(&0)
}

/// A North American number written `(NXX) NXX-XXXX`: ten digits whose area code and exchange
/// both start with 2-9. Only the parenthesised layout is recognised, because the same ten
/// digits without it are as likely an order or account number.
fn is_north_american_phone(digits: &[u8]) -> bool {
    matches!(digits, [2..=9, _, _, 2..=9, _, _, _, _, _, _])
}

/// Luhn-valid 13 to 19 digits whose issuer prefix belongs to a card network (American Express,
/// JCB and Diners 3, Visa 4, Mastercard 51-55 and 2221-2720, UnionPay 62, Discover and Maestro 6).
fn is_bank_card(digits: &[u8]) -> bool {
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let issuer_plausible = match digits {
        [3..=6, ..] => true,
        [a, b, c, d, ..] => {
            let prefix =
                u32::from(*a) * 1000 + u32::from(*b) * 100 + u32::from(*c) * 10 + u32::from(*d);
            (2221..=2720).contains(&prefix)
        }
        _ => false,
    };
    issuer_plausible && luhn_valid(digits)
}

/// The Luhn checksum used by payment cards: doubling every second digit from the right.
pub(crate) fn luhn_valid(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(position, digit)| {
            let digit = u32::from(*digit);
            if position % 2 == 1 {
                let doubled = digit * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                digit
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Province-level codes that start a valid resident ID (GB/T 2260), including Hong Kong, Macau
/// and Taiwan residence permits.
const PROVINCE_CODES: [u8; 35] = [
    11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46, 50, 51, 52,
    53, 54, 61, 62, 63, 64, 65, 71, 81, 82, 83,
];

/// 17 digits plus a check character (a digit, or `X` for 10): a known province code, a real
/// calendar birth date between 1900 and 2099 in positions 7-14, and the ISO 7064 MOD 11-2
/// checksum of GB 11643.
fn is_resident_id(digits: &[u8], with_x: bool) -> bool {
    let (body, check_value) = match (digits.len(), with_x) {
        (18, false) => match digits.split_last() {
            Some((check, body)) => (body, u32::from(*check)),
            None => return false,
        },
        (17, true) => (digits, 10),
        _ => return false,
    };
    let province = match body {
        [a, b, ..] => a * 10 + b,
        _ => return false,
    };
    if !PROVINCE_CODES.contains(&province) {
        return false;
    }
    let number = |range: Range<usize>| {
        body.get(range).map(|slice| {
            slice
                .iter()
                .fold(0u32, |value, digit| value * 10 + u32::from(*digit))
        })
    };
    let (Some(year), Some(month), Some(day)) = (number(6..10), number(10..12), number(12..14))
    else {
        return false;
    };
    let year_plausible = (1900..=2099).contains(&year);
    let year = i32::try_from(year).unwrap_or_default();
    if !year_plausible || chrono::NaiveDate::from_ymd_opt(year, month, day).is_none() {
        return false;
    }
    resident_id_check_value(body) == Some(check_value)
}

/// The expected check value (0-10, where 10 is written `X`) of the first 17 digits.
pub(crate) fn resident_id_check_value(body: &[u8]) -> Option<u32> {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    // Position i of (sum mod 11) holds the check value that makes the whole number ≡ 1 (mod 11).
    const CHECK_VALUES: [u32; 11] = [1, 0, 10, 9, 8, 7, 6, 5, 4, 3, 2];
    if body.len() != WEIGHTS.len() {
        return None;
    }
    let sum: u32 = body
        .iter()
        .zip(WEIGHTS)
        .map(|(digit, weight)| u32::from(*digit) * weight)
        .sum();
    CHECK_VALUES.get((sum % 11) as usize).copied()
}

/// A dotted quad of decimal octets 0-255 not glued to letters, digits or further dots, so
/// version strings (`1.2.3`, `v1.2.3.4`, `1.2.3.4.5`) do not match.
fn match_ipv4(bytes: &[u8], start: usize) -> Option<usize> {
    if byte_before(bytes, start).is_some_and(|byte| byte.is_ascii_alphanumeric() || byte == b'.') {
        return None;
    }
    let mut position = start;
    for octet_index in 0..4 {
        let octet_start = position;
        let mut value = 0u32;
        while is_digit_at(bytes, position) && position - octet_start < 3 {
            value = value * 10 + u32::from(byte_at(bytes, position).unwrap_or(b'0') - b'0');
            position += 1;
        }
        if position == octet_start || is_digit_at(bytes, position) || value > 255 {
            return None;
        }
        if octet_index < 3 {
            if byte_at(bytes, position) != Some(b'.') {
                return None;
            }
            position += 1;
        }
    }
    let next = byte_at(bytes, position);
    if next.is_some_and(|byte| byte.is_ascii_alphanumeric())
        || (next == Some(b'.') && is_digit_at(bytes, position + 1))
    {
        return None;
    }
    Some(position)
}

// ---------------------------------------------------------------------------------------------
// IPv6 addresses.

fn is_ipv6_token_byte(byte: u8) -> bool {
    byte.is_ascii_hexdigit() || byte == b':' || byte == b'.'
}

/// Tokens of hex digits, colons and dots that stand alone (not inside a word such as
/// `std::fmt`), contain at least two colons and parse as an IPv6 address. Clock times and MAC
/// addresses contain colons but do not parse.
fn find_ipv6(text: &str, hits: &mut Vec<PiiHit>) {
    let bytes = text.as_bytes();
    let mut index = 0;
    while index < bytes.len() {
        if !byte_at(bytes, index).is_some_and(is_ipv6_token_byte) {
            index += 1;
            continue;
        }
        let standalone = !byte_before(bytes, index)
            .is_some_and(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b':' | b'.'));
        let mut end = index;
        let mut colons = 0;
        while let Some(byte) = byte_at(bytes, end).filter(|byte| is_ipv6_token_byte(*byte)) {
            colons += usize::from(byte == b':');
            end += 1;
        }
        let followed_by_word =
            byte_at(bytes, end).is_some_and(|byte| byte.is_ascii_alphanumeric() || byte == b'_');
        // Without `::` an address has eight groups (seven colons), or six groups and a trailing
        // IPv4 part (six colons); checking this first keeps clock times away from the parser.
        let may_be_address = colons >= 6
            || (colons >= 2
                && bytes
                    .get(index..end)
                    .is_some_and(|token| token.windows(2).any(|pair| pair == b"::")));
        if standalone && may_be_address && !followed_by_word {
            // Trailing sentence punctuation is not part of the address.
            let mut candidate_end = end;
            while matches!(byte_before(bytes, candidate_end), Some(b'.')) {
                candidate_end -= 1;
            }
            let candidate = text.get(index..candidate_end).unwrap_or_default();
            let parses = |candidate: &str| candidate.parse::<Ipv6Addr>().is_ok();
            let matched_end = if parses(candidate) {
                Some(candidate_end)
            } else if let Some(without_colon) = candidate.strip_suffix(':')
                && !without_colon.ends_with(':')
                && parses(without_colon)
            {
                Some(candidate_end - 1)
            } else {
                None
            };
            if let Some(matched_end) = matched_end
                && is_plausible_ipv6_text(text.get(index..matched_end).unwrap_or_default())
            {
                hits.push(PiiHit {
                    kind: PiiKind::Ipv6,
                    byte_range: index..matched_end,
                });
            }
        }
        index = end.max(index + 1);
    }
}

/// Parsing alone accepts fragments like `1::` or `::a` that appear when text around a number is
/// redacted, so an address needs two non-empty groups, or must be `::` followed by one decimal
/// group (the loopback `::1`). Bare prefixes such as `fe80::` are therefore not reported.
fn is_plausible_ipv6_text(candidate: &str) -> bool {
    let mut groups = candidate.split(':').filter(|group| !group.is_empty());
    match (groups.next(), groups.next()) {
        (Some(_), Some(_)) => true,
        (Some(only), None) => {
            candidate.starts_with("::") && only.bytes().all(|byte| byte.is_ascii_digit())
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_accepts_the_classic_test_number_and_rejects_a_changed_digit() {
        let digits = |text: &str| text.bytes().map(|byte| byte - b'0').collect::<Vec<_>>();
        assert!(luhn_valid(&digits("4111111111111111")));
        assert!(!luhn_valid(&digits("4111111111111112")));
    }

    #[test]
    fn overlapping_hits_keep_the_longest() {
        let mut hits = vec![
            PiiHit {
                kind: PiiKind::Phone,
                byte_range: 0..11,
            },
            PiiHit {
                kind: PiiKind::Email,
                byte_range: 0..18,
            },
            PiiHit {
                kind: PiiKind::Ipv4,
                byte_range: 20..27,
            },
        ];
        resolve_overlaps(&mut hits);
        assert_eq!(
            hits,
            vec![
                PiiHit {
                    kind: PiiKind::Email,
                    byte_range: 0..18
                },
                PiiHit {
                    kind: PiiKind::Ipv4,
                    byte_range: 20..27
                },
            ]
        );
    }

    /// Texts made of pieces that are, or nearly are, PII of every kind, in every layout the
    /// detectors know, plus the timestamps and amounts the pre-filter exists to skip.
    fn pii_like_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        proptest::collection::vec(
            prop_oneof![
                proptest::sample::select(vec![
                    "0",
                    "1",
                    "8",
                    "X",
                    " ",
                    "-",
                    "+",
                    ".",
                    ":",
                    "::",
                    "@",
                    "(",
                    ")",
                    "a",
                    "f",
                    "com",
                    "+86 ",
                    "0086",
                    "(415) ",
                    "555-0132",
                    "13800138000",
                    "138 0013 8000",
                    "4111 1111 1111 1111",
                    "11010519491231002X",
                    "440305 19880315 123",
                    "192.168.",
                    "1.2",
                    "2001:db8",
                    "fe80::",
                    "@qq.com",
                    "2023-01-01T00:02:27",
                    "36.79",
                    "电话",
                ])
                .prop_map(str::to_owned),
                "[0-9 .:+()-]{0,6}",
                "\\PC{0,3}",
            ],
            0..16,
        )
        .prop_map(|parts| parts.concat())
    }

    proptest::proptest! {
        #[test]
        fn the_pre_filter_never_hides_a_hit(text in pii_like_text()) {
            let mut filtered = ScanScratch::default();
            scan_into(&text, &mut filtered);
            let mut unfiltered = ScanScratch::default();
            run_detectors(&text, PossibleDetectors::ALL, &mut unfiltered);
            proptest::prop_assert_eq!(filtered.hits, unfiltered.hits, "{:?}", text);
        }
    }

    #[test]
    fn typical_cells_skip_every_detector() {
        let none = PossibleDetectors {
            email: false,
            numbers: false,
            ipv6: false,
        };
        for cell in [
            "2023-01-01T00:02:27",
            "2024-03-05 14:22:01.750",
            "36.79",
            "1",
            "store",
        ] {
            assert_eq!(PossibleDetectors::of(cell.as_bytes()), none, "{cell:?}");
        }
        let numbers = |cell: &str| PossibleDetectors::of(cell.as_bytes()).numbers;
        assert!(numbers("call 138 0013 8000"));
        assert!(numbers("+44 20 7946"));
        assert!(numbers("at 10.0.0.1"));
        assert!(!numbers("order 2024-000123"));
    }

    #[test]
    fn counts_add_per_kind() {
        let mut total = PiiCounts::default();
        let mut other = PiiCounts::default();
        other.record(PiiKind::Phone);
        other.record(PiiKind::Phone);
        other.record(PiiKind::Ipv6);
        total.add(&other);
        total.add(&other);
        assert_eq!(total.phone, 4);
        assert_eq!(total.ipv6, 2);
        assert_eq!(total.total(), 6);
    }
}
