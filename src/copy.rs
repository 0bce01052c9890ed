//! COPY data split into rows, each with its sharding key, for a `COPY … FROM STDIN` that
//! sends every row to its shard. Fed the client's CopyData bytes in whatever pieces they
//! come (a row may span messages, a message many rows), it hands out the header (which
//! every shard gets), each complete row with its key, and the binary trailer; it keeps
//! only the row in progress, so memory stays bounded whatever the input's size. Text
//! (rows end at a newline; fields split at the delimiter), CSV (quotes may hold
//! delimiters and newlines) and binary (length-prefixed fields) are read as PostgreSQL's
//! `COPY FROM` reads them. Pure: unit tests feed it bytes.

use pgcat_parser::cross_shard::{CopyFormat, CopyKind};

use crate::wire::messages::PgError;

/// The signature that starts binary COPY data.
const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// What the splitter found in the data.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// The header line (text, CSV) or the binary header: every shard gets it.
    Header(&'a [u8]),
    /// A row and its key.
    Row(i64, &'a [u8]),
    /// The end of the data (binary trailer, or text's `\.` line): every shard gets it.
    End(&'a [u8]),
}

/// The rows of one COPY's data.
pub struct Splitter {
    format: CopyFormat,
    /// The key's position among a row's fields.
    key: usize,
    /// The header has yet to come.
    header: bool,
    /// Bytes of the row in progress (after the last complete one).
    pending: Vec<u8>,
    /// The end of the data was seen: anything after it is ignored, as PostgreSQL does.
    ended: bool,
    /// Rows handed out, for error messages (PostgreSQL counts lines from 1).
    rows: u64,
}

impl Splitter {
    pub fn new(format: CopyFormat, key: usize) -> Splitter {
        let header = format.header || format.kind == CopyKind::Binary;
        Splitter {
            format,
            key,
            header,
            pending: Vec::new(),
            ended: false,
            rows: 0,
        }
    }

    /// Takes the next bytes of the data; `each` gets every piece completed by them.
    pub fn feed(&mut self, data: &[u8], mut each: impl FnMut(Piece<'_>)) -> Result<(), PgError> {
        if self.ended {
            return Ok(());
        }
        self.pending.extend_from_slice(data);
        let mut at = 0;
        while let Some(len) = self.next_len(&self.pending[at..])? {
            let piece = &self.pending[at..at + len];
            at += len;
            if self.header {
                self.header = false;
                each(Piece::Header(piece));
                continue;
            }
            if self.is_end(piece) {
                self.ended = true;
                each(Piece::End(piece));
                break;
            }
            self.rows += 1;
            let key = self.key_of(piece)?;
            each(Piece::Row(key, piece));
        }
        if self.ended {
            self.pending.clear();
        } else {
            self.pending.drain(..at);
        }
        Ok(())
    }

    /// The data is complete: a last text or CSV row without its newline is handed out; a
    /// binary row cut short is an error.
    pub fn finish(&mut self, mut each: impl FnMut(Piece<'_>)) -> Result<(), PgError> {
        if self.ended || self.pending.is_empty() {
            return Ok(());
        }
        if self.format.kind == CopyKind::Binary {
            return Err(bad("the binary COPY data ends inside a row (no trailer)"));
        }
        let last = std::mem::take(&mut self.pending);
        if self.header {
            self.header = false;
            each(Piece::Header(&last));
            return Ok(());
        }
        if self.is_end(&last) {
            each(Piece::End(&last));
            return Ok(());
        }
        self.rows += 1;
        let key = self.key_of(&last)?;
        each(Piece::Row(key, &last));
        Ok(())
    }

    /// The length of the complete piece at the start of `data`, if it is all there.
    fn next_len(&self, data: &[u8]) -> Result<Option<usize>, PgError> {
        match self.format.kind {
            CopyKind::Text => Ok(memchr::memchr(b'\n', data).map(|i| i + 1)),
            CopyKind::Csv => Ok(csv_row_len(data, self.format.quote, self.format.escape)),
            CopyKind::Binary if self.header => binary_header_len(data),
            CopyKind::Binary => binary_row_len(data),
        }
    }

    /// The end of the data: the binary trailer, or text's `\.` line.
    fn is_end(&self, piece: &[u8]) -> bool {
        match self.format.kind {
            CopyKind::Binary => piece == [0xff, 0xff],
            CopyKind::Text | CopyKind::Csv => trim_newline(piece) == b"\\.",
        }
    }

    /// The sharding key of a row.
    fn key_of(&self, row: &[u8]) -> Result<i64, PgError> {
        let field = match self.format.kind {
            CopyKind::Binary => binary_field(row, self.key),
            CopyKind::Text => text_field(trim_newline(row), self.key, self.format.delimiter)
                .filter(|f| *f != self.format.null.as_bytes())
                .map(|f| f.to_vec()),
            CopyKind::Csv => csv_field(trim_newline(row), self.key, &self.format),
        };
        let Some(field) = field else {
            return Err(bad(&format!(
                "row {} has no sharding key (a NULL, or fewer columns than the key's position)",
                self.rows
            )));
        };
        let key = match self.format.kind {
            CopyKind::Binary => pgcat_parser::bind_param_as_i64(&field, true),
            _ => pgcat_parser::bind_param_as_i64(&field, false),
        };
        key.ok_or_else(|| {
            bad(&format!(
                "row {}: the sharding key {:?} is not an integer",
                self.rows,
                String::from_utf8_lossy(&field)
            ))
        })
    }
}

fn bad(message: &str) -> PgError {
    PgError::error(
        "22P04",
        format!("cannot split the COPY data between shards: {message}"),
    )
    .with_hint("Nothing was loaded on any shard.")
}

fn trim_newline(row: &[u8]) -> &[u8] {
    let row = row.strip_suffix(b"\n").unwrap_or(row);
    row.strip_suffix(b"\r").unwrap_or(row)
}

/// Field `i` of a text-format row (escapes are not undone: a key has none).
fn text_field(row: &[u8], i: usize, delimiter: u8) -> Option<&[u8]> {
    row.split(|b| *b == delimiter).nth(i)
}

/// The length of the CSV row at the start of `data` (a newline inside quotes is data).
fn csv_row_len(data: &[u8], quote: u8, escape: u8) -> Option<usize> {
    let mut quoted = false;
    let mut i = 0;
    while i < data.len() {
        let b = data[i];
        if quoted && b == escape && escape != quote && data.get(i + 1) == Some(&quote) {
            i += 2;
            continue;
        }
        if b == quote {
            quoted = !quoted;
        } else if b == b'\n' && !quoted {
            return Some(i + 1);
        }
        i += 1;
    }
    None
}

/// Field `i` of a CSV row, unquoted; `None` for NULL (an unquoted field equal to the
/// NULL string) or a missing field.
fn csv_field(row: &[u8], i: usize, format: &CopyFormat) -> Option<Vec<u8>> {
    let (quote, escape) = (format.quote, format.escape);
    let mut field = Vec::new();
    let (mut n, mut quoted, mut was_quoted) = (0, false, false);
    let mut j = 0;
    while j <= row.len() {
        let b = row.get(j).copied();
        match b {
            Some(b) if quoted && b == escape && row.get(j + 1) == Some(&quote) => {
                if n == i {
                    field.push(quote);
                }
                j += 2;
                continue;
            }
            Some(b) if b == quote => {
                quoted = !quoted;
                was_quoted = true;
            }
            Some(b) if b == format.delimiter && !quoted => {
                if n == i {
                    break;
                }
                n += 1;
                was_quoted = false;
            }
            None => break,
            Some(b) => {
                if n == i {
                    field.push(b);
                }
            }
        }
        j += 1;
    }
    if n != i || (!was_quoted && field == format.null.as_bytes()) {
        return None;
    }
    Some(field)
}

/// The binary header's length: signature, flags, extension length and extension.
fn binary_header_len(data: &[u8]) -> Result<Option<usize>, PgError> {
    if data.len() < SIGNATURE.len() + 8 {
        return Ok(None);
    }
    if &data[..SIGNATURE.len()] != SIGNATURE {
        return Err(bad("the binary COPY data has no PGCOPY signature"));
    }
    let ext = u32::from_be_bytes(data[15..19].try_into().unwrap_or_default()) as usize;
    Ok((data.len() >= 19 + ext).then_some(19 + ext))
}

/// The length of the binary tuple (or trailer) at the start of `data`.
fn binary_row_len(data: &[u8]) -> Result<Option<usize>, PgError> {
    let Some(count) = data.get(..2) else {
        return Ok(None);
    };
    let count = i16::from_be_bytes([count[0], count[1]]);
    if count == -1 {
        return Ok(Some(2));
    }
    if count < 0 {
        return Err(bad("a binary tuple with a negative field count"));
    }
    let mut at = 2;
    for _ in 0..count {
        let Some(len) = data.get(at..at + 4) else {
            return Ok(None);
        };
        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        at += 4 + usize::try_from(len).unwrap_or(0);
        if at > data.len() {
            return Ok(None);
        }
    }
    Ok(Some(at))
}

/// Field `i` of a binary tuple; `None` for NULL or a missing field.
fn binary_field(row: &[u8], i: usize) -> Option<Vec<u8>> {
    let mut at = 2;
    for n in 0.. {
        let len = i32::from_be_bytes(row.get(at..at + 4)?.try_into().ok()?);
        at += 4;
        let len = usize::try_from(len).ok();
        if n == i {
            return Some(row.get(at..at + len?)?.to_vec());
        }
        at += len.unwrap_or(0);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format(kind: CopyKind, header: bool) -> CopyFormat {
        let csv = kind == CopyKind::Csv;
        CopyFormat {
            kind,
            header,
            delimiter: if csv { b',' } else { b'\t' },
            quote: b'"',
            escape: b'"',
            null: if csv { String::new() } else { "\\N".into() },
        }
    }

    /// Every piece, fed `data` in chunks of `chunk` bytes.
    fn split(
        format: CopyFormat,
        key: usize,
        data: &[u8],
        chunk: usize,
    ) -> Result<Vec<String>, PgError> {
        let mut s = Splitter::new(format, key);
        let mut out = Vec::new();
        let mut take = |p: Piece<'_>| {
            out.push(match p {
                Piece::Header(h) => format!("H:{}", String::from_utf8_lossy(h)),
                Piece::Row(k, r) => format!("{k}:{}", String::from_utf8_lossy(r)),
                Piece::End(e) => format!("E:{}", String::from_utf8_lossy(e)),
            })
        };
        for part in data.chunks(chunk) {
            s.feed(part, &mut take)?;
        }
        s.finish(&mut take)?;
        Ok(out)
    }

    #[test]
    fn text_rows_split_at_newlines_in_any_chunking() {
        let data = b"1\ta\n22\tb\\tc\n-3\t\\N\r\n4\tlast";
        for chunk in [1, 3, 100] {
            let rows = split(format(CopyKind::Text, false), 0, data, chunk).expect("splits");
            assert_eq!(
                rows,
                ["1:1\ta\n", "22:22\tb\\tc\n", "-3:-3\t\\N\r\n", "4:4\tlast"]
            );
        }
        let rows = split(
            format(CopyKind::Text, true),
            1,
            b"a\tid\nx\t7\n\\.\nignored\n",
            2,
        );
        assert_eq!(rows.expect("splits"), ["H:a\tid\n", "7:x\t7\n", "E:\\.\n"]);
        let null_key = split(format(CopyKind::Text, false), 0, b"\\N\tx\n", 4);
        assert_eq!(null_key.expect_err("NULL key").code, "22P04");
        let not_int = split(format(CopyKind::Text, false), 0, b"abc\tx\n", 4);
        assert!(not_int
            .expect_err("not an integer")
            .message
            .contains("row 1"));
    }

    #[test]
    fn csv_quotes_hold_delimiters_newlines_and_quotes() {
        let data = b"id,note\n1,\"a,b\"\n\"2\",\"line\none \"\"q\"\"\"\n3,\n";
        let rows = split(format(CopyKind::Csv, true), 0, data, 5).expect("splits");
        assert_eq!(
            rows,
            [
                "H:id,note\n",
                "1:1,\"a,b\"\n",
                "2:\"2\",\"line\none \"\"q\"\"\"\n",
                "3:3,\n"
            ]
        );
        let null_key = split(format(CopyKind::Csv, false), 1, b"x,\n", 5);
        assert!(null_key.is_err(), "an empty unquoted field is NULL");
        let quoted_empty = split(format(CopyKind::Csv, false), 1, b"x,\"\"\n", 5);
        assert!(quoted_empty
            .expect_err("not an integer")
            .message
            .contains("not an integer"));
    }

    #[test]
    fn binary_tuples_split_by_their_lengths() {
        let mut data = SIGNATURE.to_vec();
        data.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        let tuple = |id: i64, text: &str| {
            let mut t = 2i16.to_be_bytes().to_vec();
            t.extend_from_slice(&8i32.to_be_bytes());
            t.extend_from_slice(&id.to_be_bytes());
            t.extend_from_slice(&(text.len() as i32).to_be_bytes());
            t.extend_from_slice(text.as_bytes());
            t
        };
        data.extend(tuple(5, "five"));
        data.extend(tuple(-9, ""));
        data.extend_from_slice(&[0xff, 0xff]);
        for chunk in [1, 7, 1000] {
            let rows = split(format(CopyKind::Binary, false), 0, &data, chunk).expect("splits");
            assert_eq!(rows.len(), 4, "{rows:?}");
            assert!(
                rows[1].starts_with("5:") && rows[2].starts_with("-9:"),
                "{rows:?}"
            );
            assert!(rows[3].starts_with("E:"));
        }
        let cut = split(format(CopyKind::Binary, false), 0, &data[..30], 7);
        assert_eq!(cut.expect_err("cut short").code, "22P04");
        let unsigned = split(
            format(CopyKind::Binary, false),
            0,
            b"NOTPGCOPY..........",
            4,
        );
        assert!(unsigned.is_err());
    }
}
