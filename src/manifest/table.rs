//! CSV job tables: a whole CSV manifest, or a table a YAML manifest `include:`s.
//!
//! A table streams: rows are read one at a time from a buffered file and each becomes a
//! finished job at once, so a 100,000-row table holds no more than the jobs. Real
//! exports are expected: a UTF-8 byte order mark, CRLF line ends, quoted cells with
//! commas, quotes and line breaks.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::rc::Rc;

use csv::{ByteRecord, ErrorKind, ReaderBuilder};
use serde_json::Value as Json;

use crate::request::{Field, FieldValue, Kind, did_you_mean, field_names};

use super::job::{Draft, Gatherer, diag};
use super::{Origin, Upgrade};

/// What a header names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    Id,
    Field(Field),
    /// `image_url_1` .. `image_url_3`: one image each.
    ImageN(usize),
    Upgrade,
    KeepOriginal,
    /// The id of the job whose video this row's job continues.
    Extend,
    /// A column that could not be understood (already reported).
    Ignore,
}

const MAX_IMAGE_COLUMNS: usize = 3;

/// Every column name a table accepts besides request fields, for suggestions.
const OTHER_COLUMNS: [&str; 7] = [
    "id",
    "upgrade",
    "keep_original",
    "extend",
    "image_url_1",
    "image_url_2",
    "image_url_3",
];

fn column_for(name: &str) -> Option<Column> {
    let lower = name.to_ascii_lowercase();
    if let Some(f) = Field::from_name(name).or_else(|| {
        Field::ALL
            .into_iter()
            .find(|f| f.api_name().eq_ignore_ascii_case(name))
    }) {
        return Some(Column::Field(f));
    }
    match lower.as_str() {
        "id" => Some(Column::Id),
        "upgrade" => Some(Column::Upgrade),
        "keep_original" => Some(Column::KeepOriginal),
        "extend" => Some(Column::Extend),
        _ => lower
            .strip_prefix("image_url_")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| (1..=MAX_IMAGE_COLUMNS).contains(n))
            .map(Column::ImageN),
    }
}

/// Where a table's rows go, and what they inherit.
pub(crate) struct TableInput<'a> {
    /// The path as shown in messages.
    pub path: &'a Path,
    pub defaults: Option<&'a Draft>,
    pub extra: &'a BTreeMap<String, Json>,
}

/// Reads every row of the table at `input.path` into `out`. `Err` only when the file
/// cannot be opened at all (the caller says where it was named).
pub(crate) fn read(input: &TableInput<'_>, out: &mut Gatherer) -> Result<(), std::io::Error> {
    let file = File::open(input.path)?;
    let file_len = file.metadata().map_or(0, |m| m.len());
    let mut buf = BufReader::with_capacity(64 * 1024, file);
    // csv does not skip a byte order mark; spreadsheet exports often start with one.
    if buf.fill_buf()?.starts_with(b"\xEF\xBB\xBF") {
        buf.consume(3);
    }
    let newlines = Rc::new(RefCell::new(VecDeque::new()));
    let mut lines = Lines {
        newlines: Rc::clone(&newlines),
        passed: 0,
    };
    let counting = CountingReader {
        inner: buf,
        offset: 0,
        newlines,
        quoting: Quoting::FieldStart,
    };
    let mut rdr = ReaderBuilder::new()
        .flexible(false)
        .has_headers(true)
        .from_reader(counting);
    let at = |line: Option<u64>| Origin {
        file: input.path.to_path_buf(),
        line: line.and_then(|l| usize::try_from(l).ok()),
        column: None,
    };

    let headers = match rdr.byte_headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            out.error(diag(at(Some(1)), None, None, csv_message(&e)));
            return Ok(());
        }
    };
    // A European spreadsheet export separates cells with `;`: the whole header
    // reads as one cell. Say so, rather than call it an unknown column.
    if headers.len() == 1
        && let Some(only) = headers.get(0)
        && only.contains(&b';')
    {
        out.error(diag(
            at(Some(1)),
            None,
            None,
            format!(
                "the header `{}` is separated by semicolons (`;`), as spreadsheets set to a \
                 European locale export it; veo-batch reads comma-separated tables: export \
                 again with `,` as the field delimiter",
                String::from_utf8_lossy(only)
                    .chars()
                    .take(120)
                    .collect::<String>()
            ),
        ));
        return Ok(());
    }
    let columns = read_header(&headers, &at(Some(1)), out);
    if columns.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = headers
        .iter()
        .map(|h| String::from_utf8_lossy(h).trim().to_owned())
        .collect();

    let mut rec = ByteRecord::new();
    let mut last_line = Some(1);
    let mut rows_read: u64 = 0;
    loop {
        match rdr.read_byte_record(&mut rec) {
            Ok(false) => {
                // csv takes an unclosed quote at the end of the file as the end of
                // the cell, which would silently swallow every later row into one
                // prompt: refuse it.
                if rdr.get_ref().quoting == Quoting::Quoted {
                    out.error(diag(
                        at(last_line),
                        None,
                        None,
                        "a quoted cell is never closed: the rest of the file would be read \
                         into it (add the missing `\"`)"
                            .to_owned(),
                    ));
                }
                break;
            }
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map(|p| lines.line_at(p.byte()));
                let fatal = !matches!(e.kind(), ErrorKind::UnequalLengths { .. });
                out.error(diag(at(line), None, None, csv_message(&e)));
                if fatal {
                    break;
                }
                continue;
            }
        }
        let origin = at(rec.position().map(|p| lines.line_at(p.byte())));
        last_line = origin.line.and_then(|l| u64::try_from(l).ok());
        if rec.iter().all(|c| c.iter().all(u8::is_ascii_whitespace)) {
            continue;
        }
        rows_read += 1;
        if rows_read == SIZING_ROWS
            && let Some(at) = rec.position()
        {
            out.reserve_rows(estimate_rows(rows_read, at.byte(), file_len));
        }
        let draft = read_row(&rec, &columns, &names, origin, input, out);
        out.finish(draft);
    }
    Ok(())
}

/// Rows read before the rest of a table's rows are estimated from their length.
const SIZING_ROWS: u64 = 32;

/// How many rows a table of `len` bytes holds in all, when the first `rows` of them
/// start before byte `at` (the header included, so a slight overestimate). The
/// jobs and the id table are sized for it at once: growing them a doubling at a
/// time copied every job again, a fifth of reading 100,000 rows.
fn estimate_rows(rows: u64, at: u64, len: u64) -> usize {
    let per_row = (at / rows.max(1)).max(1);
    usize::try_from(len / per_row + 1).unwrap_or(0)
}

/// Passes bytes through, noting where each line ends. csv's own line numbers are one
/// short after a CRLF line end (it counts the `\n` into the next record), so lines
/// are counted here from byte offsets instead; only offsets not yet passed are kept.
struct CountingReader<R> {
    inner: R,
    offset: u64,
    newlines: Rc<RefCell<VecDeque<u64>>>,
    /// Where the bytes passed so far leave csv's quoting, to see an unclosed quote.
    quoting: Quoting,
}

/// csv's quoting rules (`"` opens a quoted cell only at its start; `""` inside is
/// a literal quote), reduced to what tells whether the file ends inside a quote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quoting {
    FieldStart,
    Unquoted,
    Quoted,
    QuoteInQuoted,
}

impl Quoting {
    fn step(self, b: u8) -> Quoting {
        use Quoting::*;
        match (self, b) {
            (FieldStart, b'"') => Quoted,
            (FieldStart | Unquoted | QuoteInQuoted, b',' | b'\n' | b'\r') => FieldStart,
            (FieldStart | Unquoted, _) => Unquoted,
            (Quoted, b'"') => QuoteInQuoted,
            (Quoted, _) => Quoted,
            (QuoteInQuoted, b'"') => Quoted,
            (QuoteInQuoted, _) => Unquoted,
        }
    }
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut q = self.newlines.borrow_mut();
        let bytes = &buf[..n];
        let mut i = 0;
        while i < bytes.len() {
            // Runs of bytes that leave the quoting as it is, and are no line end, are
            // skipped whole, not byte by byte.
            let next = match self.quoting {
                Quoting::Quoted => bytes[i..].iter().position(|&b| b == b'"' || b == b'\n'),
                Quoting::Unquoted => bytes[i..]
                    .iter()
                    .position(|&b| matches!(b, b',' | b'\n' | b'\r')),
                Quoting::FieldStart | Quoting::QuoteInQuoted => Some(0),
            };
            let Some(skip) = next else { break };
            i += skip;
            let b = bytes[i];
            self.quoting = self.quoting.step(b);
            if b == b'\n' {
                q.push_back(self.offset + i as u64);
            }
            i += 1;
        }
        self.offset += n as u64;
        Ok(n)
    }
}

struct Lines {
    newlines: Rc<RefCell<VecDeque<u64>>>,
    passed: u64,
}

impl Lines {
    /// The 1-based line of the record starting at byte `at` (a record that csv says
    /// starts on the `\n` of a CRLF starts on the next line).
    fn line_at(&mut self, at: u64) -> u64 {
        let mut q = self.newlines.borrow_mut();
        while q.front().is_some_and(|&nl| nl <= at) {
            q.pop_front();
            self.passed += 1;
        }
        self.passed + 1
    }
}

fn csv_message(e: &csv::Error) -> String {
    match e.kind() {
        ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!(
            "this row has {len} cells but the header has {expected_len} \
             (quote cells that contain commas or line breaks)"
        ),
        ErrorKind::Io(io) => format!("cannot read the file: {}", super::io_message(io)),
        _ => {
            let s = e.to_string();
            let s = s.strip_prefix("CSV error: ").unwrap_or(&s);
            format!("not a readable CSV table: {s}")
        }
    }
}

/// Maps every header to a column; reports unknown, duplicate and conflicting ones.
fn read_header(headers: &ByteRecord, at: &Origin, out: &mut Gatherer) -> Vec<Column> {
    let mut columns = Vec::with_capacity(headers.len());
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for (i, raw) in headers.iter().enumerate() {
        let Ok(name) = std::str::from_utf8(raw) else {
            let msg = format!(
                "the name of column {} is not valid UTF-8 (save the file as UTF-8)",
                i + 1
            );
            out.error(diag(at.clone(), None, None, msg));
            columns.push(Column::Ignore);
            continue;
        };
        let name = name.trim();
        if name.is_empty() {
            let msg = format!("column {} has no name in the header row", i + 1);
            out.error(diag(at.clone(), None, None, msg));
            columns.push(Column::Ignore);
            continue;
        }
        let Some(col) = column_for(name) else {
            let candidates = field_names().chain(OTHER_COLUMNS);
            let msg = match did_you_mean(name, candidates) {
                Some(s) => format!("unknown column (did you mean {s}?)"),
                None => "unknown column (columns are request fields like prompt, imageUrls, \
                         model, aspect_ratio, seeds, or id, upgrade, keep_original, extend, image_url_1..3)"
                    .to_owned(),
            };
            out.error(diag(at.clone(), None, Some(name), msg));
            columns.push(Column::Ignore);
            continue;
        };
        let key = match col {
            Column::Field(f) => f.api_name().to_owned(),
            Column::ImageN(n) => format!("image_url_{n}"),
            Column::Id => "id".into(),
            Column::Upgrade => "upgrade".into(),
            Column::KeepOriginal => "keep_original".into(),
            Column::Extend => "extend".into(),
            Column::Ignore => String::new(),
        };
        if let Some(first) = seen.get(&key) {
            let msg = format!("the same column as {first:?}; keep one of them");
            out.error(diag(at.clone(), None, Some(name), msg));
            columns.push(Column::Ignore);
            continue;
        }
        seen.insert(key, name.to_owned());
        columns.push(col);
    }
    let has_list = columns.contains(&Column::Field(Field::ImageUrls));
    let has_n = columns.iter().any(|c| matches!(c, Column::ImageN(_)));
    if has_list && has_n {
        let list = Field::ImageUrls.api_name();
        out.error(diag(
            at.clone(),
            None,
            Some(list),
            format!("use either an {list} column or image_url_1..3 columns, not both"),
        ));
    }
    columns
}

/// One row into a draft; cell problems are reported and mark the draft bad.
fn read_row(
    rec: &ByteRecord,
    columns: &[Column],
    names: &[String],
    origin: Origin,
    input: &TableInput<'_>,
    out: &mut Gatherer,
) -> Draft {
    // Where each value was written matters only to place a default's problem apart
    // from the row's; every value of a row is at the row (the draft's own place, where
    // problems fall back to), so without defaults the copies are not made.
    let places = input.defaults.is_some();
    let mut d = Draft {
        derive_id: true,
        ..Draft::default()
    };
    // The id first, so that problems in other cells can name the job.
    let mut cells: Vec<(Column, &str, &str)> = Vec::with_capacity(columns.len());
    for (i, (col, raw)) in columns.iter().zip(rec.iter()).enumerate() {
        let name = names.get(i).map_or("", String::as_str);
        if *col == Column::Ignore {
            continue;
        }
        match std::str::from_utf8(raw) {
            Ok(text) => cells.push((*col, name, text)),
            Err(e) => {
                let msg = format!(
                    "is not valid UTF-8 at byte {} of the cell (save the file as UTF-8)",
                    e.valid_up_to() + 1
                );
                out.error(diag(origin.clone(), None, Some(name), msg));
                if let Column::Field(f) = col {
                    d.bad_fields.push(*f);
                }
                d.bad = true;
            }
        }
    }
    // Kept as written: a stray space is reported, not silently changed.
    let id = cells
        .iter()
        .find(|(c, _, _)| *c == Column::Id)
        .map(|(_, _, text)| *text)
        .filter(|text| !text.trim().is_empty())
        .map(str::to_owned);
    if id.is_some() && places {
        d.id_at = Some(origin.clone());
    }
    let job = id.as_deref();
    let mut images_n: Vec<String> = Vec::new();
    for (col, name, text) in cells {
        let raw_text = text;
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let mut fail = |msg: String| {
            out.error(diag(origin.clone(), job, Some(name), msg));
            if let Column::Field(f) = col {
                d.bad_fields.push(f);
            }
            d.bad = true;
        };
        match col {
            Column::Id | Column::Ignore => {}
            Column::ImageN(_) => images_n.push(text.to_owned()),
            Column::Upgrade => match upgrade_value(text) {
                Some(u) => {
                    d.upgrade = Some(u);
                    d.upgrade_at = Some(origin.clone());
                }
                None => fail(upgrade_refused(text)),
            },
            Column::KeepOriginal => match parse_bool(text) {
                Some(b) => d.keep_original = Some(b),
                None => fail(bool_message(text)),
            },
            Column::Extend => {
                d.extend = Some(text.to_owned());
                d.extend_at = Some(origin.clone());
            }
            Column::Field(f) => {
                if places {
                    d.field_at.insert(f, origin.clone());
                }
                let value = match f.kind() {
                    // Free text keeps its spaces; the rules decide on blanks.
                    Kind::Text => Ok(FieldValue::Text(raw_text.to_owned())),
                    Kind::Token => Ok(FieldValue::Text(text.to_owned())),
                    Kind::Urls => {
                        let urls: Vec<String> = text
                            .split('|')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned)
                            .collect();
                        if places {
                            d.image_at = vec![origin.clone(); urls.len()];
                        }
                        Ok(FieldValue::Urls(urls))
                    }
                    Kind::Int => text
                        .parse::<i64>()
                        .map(FieldValue::Int)
                        .map_err(|_| format!("{text:?} is not an integer ({})", f.int_range())),
                    Kind::Bool => parse_bool(text)
                        .map(FieldValue::Bool)
                        .ok_or_else(|| bool_message(text)),
                };
                if let Err(msg) = value.and_then(|v| d.raw.set(f, v)) {
                    fail(msg);
                }
            }
        }
    }
    if !images_n.is_empty() {
        if places {
            d.image_at = vec![origin.clone(); images_n.len()];
            d.field_at.insert(Field::ImageUrls, origin.clone());
        }
        d.raw.image_urls = Some(images_n);
    }
    d.id = id;
    d.at = origin;
    if let Some(defaults) = input.defaults {
        d.apply_defaults(defaults);
    }
    for (k, v) in input.extra {
        d.raw.extra.entry(k.clone()).or_insert_with(|| v.clone());
    }
    d
}

/// true/false (any case), yes/no, 1/0.
pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" => Some(true),
        "false" | "no" | "0" => Some(false),
        _ => None,
    }
}

fn bool_message(text: &str) -> String {
    format!("{text:?} is not a boolean (true, false, yes, no, 1 or 0)")
}

/// The `upgrade` values: an [`Upgrade`] in any case, or `none` to cancel a default.
pub(crate) fn upgrade_value(s: &str) -> Option<Option<Upgrade>> {
    match s.trim().to_ascii_lowercase().as_str() {
        "none" => Some(None),
        other => Upgrade::parse(other).map(Some),
    }
}

/// Why `text` is not an `upgrade` value, with the values that are.
pub(crate) fn upgrade_refused(text: &str) -> String {
    format!("{text:?} is not allowed ({} or none)", Upgrade::ALLOWED)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn rows_are_estimated_from_the_first_ones() {
        // 32 rows of 60 bytes after a 40-byte header, in a file of 6,000,040 bytes.
        let estimate = estimate_rows(32, 40 + 31 * 60, 6_000_040);
        assert!((100_000..=105_000).contains(&estimate), "{estimate}");
        // Nothing read yet, or an empty file: no division by zero, a small answer.
        assert_eq!(estimate_rows(0, 0, 0), 1);
        assert!(estimate_rows(32, 0, 100) <= 101);
    }

    /// Reads `bytes` through a [`CountingReader`] in pieces of the given sizes.
    fn count(bytes: &[u8], pieces: &[usize]) -> (Quoting, Vec<u64>) {
        let newlines = Rc::new(RefCell::new(VecDeque::new()));
        let mut r = CountingReader {
            inner: bytes,
            offset: 0,
            newlines: Rc::clone(&newlines),
            quoting: Quoting::FieldStart,
        };
        let mut buf = [0u8; 64];
        for size in pieces.iter().cycle() {
            match r.read(&mut buf[..(*size).clamp(1, 64)]) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let lines = newlines.borrow().iter().copied().collect();
        (r.quoting, lines)
    }

    proptest! {
        /// The skipping reader ends in the quoting state, and finds the line ends,
        /// that stepping every byte does.
        #[test]
        fn skipping_is_stepping(
            bytes in prop::collection::vec(
                prop::sample::select(vec![b'a', b' ', b',', b'"', b'\n', b'\r']),
                0..200,
            ),
            pieces in prop::collection::vec(1usize..64, 1..5),
        ) {
            let quoting = bytes.iter().fold(Quoting::FieldStart, |q, b| q.step(*b));
            let lines: Vec<u64> = bytes
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .map(|(i, _)| i as u64)
                .collect();
            prop_assert_eq!(count(&bytes, &pieces), (quoting, lines));
        }
    }
}
