//! The shape of a query text: the text with each string and number literal replaced by a
//! marker. `SELECT abalance FROM pgbench_accounts WHERE aid = 17` and `… WHERE aid = 42`
//! have one shape, so the routing cache analyses it once instead of running sqlparser for
//! every value an application sends.
//!
//! The lexer only has to be right about where literals start and end; everything else is
//! kept byte for byte (whitespace, comments, identifiers, `$n` parameters). Where it
//! cannot be sure — a backslash in a string (`standard_conforming_strings = off`, `E''`),
//! dollar quoting, a number glued to a word, an unterminated quote or comment — it gives
//! up and the caller falls back to caching by the exact text. It also gives up on texts
//! that call `set_config`, whose session effects depend on the literals' values.

use std::hash::Hasher;

/// Feeds the shape of `sql` to `hasher`; `None` when the text has a construct the lexer
/// does not handle. Verbatim runs and literal markers alternate, a marker being `0xFF`
/// and the literal's kind: `0xFF` never occurs in UTF-8, so the writes (where each run
/// ends) follow from the shape's bytes, and two different shapes never feed the same ones.
pub fn shape(sql: &str, hasher: &mut impl Hasher) -> Option<()> {
    let b = sql.as_bytes();
    let mut run_start = 0;
    let mut i = 0;
    fn literal(hasher: &mut impl Hasher, run: &[u8], marker: u8) {
        hasher.write(run);
        hasher.write_u16(u16::from_le_bytes([0xFF, marker]));
    }
    while i < b.len() {
        i = next_candidate(b, i);
        let Some(&c) = b.get(i) else {
            break;
        };
        if !SPECIAL[usize::from(c)] {
            i += 1;
            continue;
        }
        match c {
            b'\'' => {
                // E'…' and U&'…' take escapes; a prefix letter in general changes nothing
                // but those two.
                if i > 0 && matches!(b[i - 1], b'e' | b'E' | b'&') {
                    return None;
                }
                let end = string_end(b, i)?;
                literal(hasher, &b[run_start..i], b'\'');
                i = end;
                run_start = i;
            }
            b'"' => {
                let end = quoted_end(b, i, b'"')?;
                // `"set_config"(…)` calls the function too.
                if b[i + 1..end - 1].eq_ignore_ascii_case(SET_CONFIG) {
                    return None;
                }
                i = end;
            }
            b'_' => {
                if i >= 3
                    && b[i - 3..]
                        .get(..SET_CONFIG.len())
                        .is_some_and(|w| w.eq_ignore_ascii_case(SET_CONFIG))
                {
                    return None;
                }
                i += 1;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = b[i..]
                    .iter()
                    .position(|&x| x == b'\n')
                    .map_or(b.len(), |p| i + p);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => i = block_comment_end(b, i)?,
            b'$' if after_word(b, i) => i += 1,
            b'$' => {
                let digits = b[i + 1..].iter().take_while(|x| x.is_ascii_digit()).count();
                if digits == 0 {
                    return None; // dollar quoting
                }
                i += 1 + digits;
            }
            b'0'..=b'9' if !after_word(b, i) => {
                let end = number_end(b, i)?;
                literal(hasher, &b[run_start..i], b'0');
                i = end;
                run_start = i;
            }
            b'.' if !after_word(b, i) && b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                let end = number_end(b, i)?;
                literal(hasher, &b[run_start..i], b'0');
                i = end;
                run_start = i;
            }
            _ => i += 1,
        }
    }
    hasher.write(&b[run_start..]);
    Some(())
}

/// Found where the lexer meets its `_` (outside strings and comments, where a call can be).
const SET_CONFIG: &[u8] = b"set_config";

/// The bytes the loop in [`shape`] acts on; every other byte is part of the current run.
const SPECIAL: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = b'0';
    while c <= b'9' {
        t[c as usize] = true;
        c += 1;
    }
    t[b'\'' as usize] = true;
    t[b'"' as usize] = true;
    t[b'-' as usize] = true;
    t[b'/' as usize] = true;
    t[b'$' as usize] = true;
    t[b'.' as usize] = true;
    t[b'_' as usize] = true;
    t
};

/// The first byte at or after `i` that may be [`SPECIAL`] (`b.len()` if none): a byte in
/// `"`..=`9` (which holds every special byte but `_`, and `#%&()*+,` besides) or `_`.
/// Eight bytes a step: most of a query is letters and spaces, and a byte-by-byte table
/// lookup cost more than the rest of the routing cache's lookup.
fn next_candidate(b: &[u8], mut i: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    while let Some(chunk) = b.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        // Per byte, with no carry between bytes (each sum stays under 0x100): the high bit
        // of `low + 0x80 - k` is set when the low seven bits are at least `k`.
        let low = w & !HIGH;
        let at_least_quote = (low + ONES * (0x80 - 0x22)) & HIGH;
        let above_nine = (low + ONES * (0x80 - 0x3A)) & HIGH;
        let in_range = at_least_quote & !above_nine & !w;
        // A zero byte of `w ^ '_'`: its low seven bits are zero and its high bit is clear.
        let x = w ^ (ONES * u64::from(b'_'));
        let underscore = !(((x & !HIGH) + !HIGH) | x) & HIGH;
        let hits = in_range | underscore;
        if hits != 0 {
            return i + (hits.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < b.len() && !SPECIAL[usize::from(b[i])] {
        i += 1;
    }
    i
}

/// Whether the byte before `i` belongs to a word (a literal cannot start there).
fn after_word(b: &[u8], i: usize) -> bool {
    i > 0 && is_word(b[i - 1])
}

/// Letters, digits, `_`, `$` and any non-ASCII byte continue an identifier or keyword.
pub(crate) fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

/// One past the closing quote of the string starting at `start` (`''` is a quote inside).
fn string_end(b: &[u8], start: usize) -> Option<usize> {
    let end = quoted_end(b, start, b'\'')?;
    (!b[start..end].contains(&b'\\')).then_some(end)
}

/// One past the closing `quote` of the run starting at `start`; a doubled quote is part of
/// the run.
fn quoted_end(b: &[u8], start: usize, quote: u8) -> Option<usize> {
    let mut i = start + 1;
    loop {
        let p = b[i..].iter().position(|&x| x == quote)? + i;
        if b.get(p + 1) == Some(&quote) {
            i = p + 2;
        } else {
            return Some(p + 1);
        }
    }
}

/// One past a (nested) `/* */` comment.
fn block_comment_end(b: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = start;
    while i + 1 < b.len() {
        match (b[i], b[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// One past the number starting at `start`: digits, a fraction, an exponent. A number
/// running into a word (`1e`, `0x1F`, `12abc`) is left to the exact-text cache.
fn number_end(b: &[u8], start: usize) -> Option<usize> {
    let digits_end = |mut i: usize| {
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        i
    };
    let mut i = digits_end(start);
    if b.get(i) == Some(&b'.') && b.get(i + 1) != Some(&b'.') {
        i = digits_end(i + 1);
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        let sign = usize::from(matches!(b.get(i + 1), Some(b'+' | b'-')));
        let exp_start = i + 1 + sign;
        i = digits_end(exp_start);
        if i == exp_start {
            return None;
        }
    }
    match b.get(i) {
        Some(&c) if is_word(c) || c == b'.' => None,
        _ => Some(i),
    }
}

#[cfg(test)]
mod tests {
    use std::hash::DefaultHasher;

    use super::*;

    fn key(sql: &str) -> Option<u64> {
        let mut h = DefaultHasher::new();
        shape(sql, &mut h)?;
        Some(h.finish())
    }

    /// The eight-byte scan stops at every special byte and skips only bytes that are not.
    #[test]
    fn the_word_scan_finds_the_first_special_byte() {
        let mut text: Vec<u8> = (0..=255u8).collect();
        text.extend_from_slice(b"SELECT abalance FROM pgbench_accounts WHERE aid = $1;");
        for start in 0..text.len() {
            let found = next_candidate(&text, start);
            let first = (start..text.len())
                .find(|&j| SPECIAL[usize::from(text[j])])
                .unwrap_or(text.len());
            assert!(found <= first, "from {start}: {found} passes {first}");
            assert!(
                text[start..found].iter().all(|&c| !SPECIAL[usize::from(c)]),
                "from {start}"
            );
        }
        // Every byte value, in every lane of a word.
        for c in 0..=255u8 {
            for lane in 0..8 {
                let mut w = [b'a'; 16];
                w[lane] = c;
                let candidate = (b'"'..=b'9').contains(&c) || c == b'_';
                let expected = if candidate { lane } else { 16 };
                assert_eq!(next_candidate(&w, 0), expected, "{c:#x} in lane {lane}");
            }
        }
    }

    #[test]
    fn literals_do_not_change_the_shape() {
        let same = [
            (
                "SELECT * FROM t WHERE id = 1",
                "SELECT * FROM t WHERE id = 123456",
            ),
            ("SELECT 'a' FROM t", "SELECT 'it''s; DROP TABLE t' FROM t"),
            ("SELECT 1.5, .5, 1e10, 2.5E-3", "SELECT 7, .25, 3e+2, 9"),
            (
                "SELECT x FROM t LIMIT 10 -- 5",
                "SELECT x FROM t LIMIT 20 -- 5",
            ),
        ];
        for (a, b) in same {
            assert_eq!(key(a), key(b), "{a} / {b}");
            assert!(key(a).is_some(), "{a}");
        }
    }

    /// Long texts, many runs and literals: the same answers.
    #[test]
    fn long_texts_have_shapes_too() {
        let long = |word: &str, n: u32| {
            format!(
                "SELECT {} FROM t WHERE a = 'x' AND {word} = {n} AND c IN ({})",
                "col_a, ".repeat(30) + "col_b",
                "'v', ".repeat(40) + "7"
            )
        };
        assert!(long("b", 1).len() > 256);
        assert_eq!(key(&long("b", 1)), key(&long("b", 22)));
        assert!(key(&long("b", 1)).is_some());
        assert_ne!(key(&long("b", 1)), key(&long("d", 1)));
    }

    #[test]
    fn everything_else_does() {
        let different = [
            (
                "SELECT * FROM t1 WHERE id = 1",
                "SELECT * FROM t2 WHERE id = 1",
            ),
            ("SELECT $1 FROM t", "SELECT $2 FROM t"),
            ("SELECT 1 -- a\n", "SELECT 1 -- b\n"),
            ("SELECT 1 /* shard_id: 1 */", "SELECT 1 /* shard_id: 2 */"),
            ("SELECT \"a'1\" FROM t", "SELECT \"a'2\" FROM t"),
            ("SELECT 'a' FROM t", "SELECT 1 FROM t"),
            ("SELECT 'a', 'b'", "SELECT 'a'"),
            ("SELECT true", "SELECT false"),
            ("SELECT 'x'; SELECT 1", "SELECT 'x'  SELECT 1"),
        ];
        for (a, b) in different {
            assert_ne!(key(a), key(b), "{a} / {b}");
        }
    }

    #[test]
    fn gives_up_where_unsure() {
        for sql in [
            "SELECT 'a\\'b'",
            "SELECT E'a'",
            "SELECT U&'d\\0061t'",
            "SELECT $$a$$",
            "SELECT $tag$a$tag$",
            "SELECT 'unterminated",
            "SELECT \"unterminated",
            "SELECT /* unterminated /* nested */",
            "SELECT 0x1F",
            "SELECT 1e",
            "SELECT 12abc",
            "SELECT 1..2",
            "SELECT set_config('a', 'b', false)",
            "select pg_catalog.SET_CONFIG('a', $1, false)",
            "SELECT \"set_config\"('a', 'b', false)",
        ] {
            assert_eq!(key(sql), None, "{sql}");
        }
    }

    #[test]
    fn set_config_only_in_strings_or_comments_changes_nothing() {
        assert!(key("SELECT 'set_config' FROM t_1").is_some());
        assert!(key("SELECT 1 /* set_config */").is_some());
        assert!(key("SELECT _ FROM set_conf").is_some());
    }

    #[test]
    fn words_with_digits_and_dollars_are_words() {
        assert_ne!(key("SELECT * FROM t1"), key("SELECT * FROM t2"));
        assert_ne!(key("SELECT a$1 FROM t"), key("SELECT a$2 FROM t"));
        assert_eq!(
            key("SELECT x FROM t /* a /* b */ c */ WHERE y = 1"),
            key("SELECT x FROM t /* a /* b */ c */ WHERE y = 2")
        );
    }
}
