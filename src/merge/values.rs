//! Values in PostgreSQL's text format, as the merge of a statement run on every shard needs
//! them: compared (for min and max) and added (for count and sum) exactly as PostgreSQL
//! does for their type, or refused (`None`) where that is not done here.

use std::cmp::Ordering;

/// Type OIDs (pg_type.oid).
pub(super) const BOOL: u32 = 16;
pub(super) const INT8: u32 = 20;
pub(super) const INT2: u32 = 21;
pub(super) const INT4: u32 = 23;
pub(super) const OID: u32 = 26;
pub(super) const FLOAT4: u32 = 700;
pub(super) const FLOAT8: u32 = 701;
pub(super) const NUMERIC: u32 = 1700;

/// Whether values of `type_oid` can be compared here.
pub(super) fn comparable(type_oid: u32) -> bool {
    matches!(
        type_oid,
        BOOL | INT8 | INT2 | INT4 | OID | FLOAT4 | FLOAT8 | NUMERIC
    )
}

/// `a` against `b`, both of `type_oid`, in PostgreSQL's order (NaN above every number).
pub(super) fn compare(type_oid: u32, a: &str, b: &str) -> Option<Ordering> {
    match type_oid {
        BOOL => Some(a.cmp(b)), // 'f' < 't'
        INT8 | INT2 | INT4 | OID => Some(a.parse::<i128>().ok()?.cmp(&b.parse::<i128>().ok()?)),
        FLOAT4 | FLOAT8 => {
            let (x, y) = (a.parse::<f64>().ok()?, b.parse::<f64>().ok()?);
            Some(match (x.is_nan(), y.is_nan()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => x.partial_cmp(&y)?,
            })
        }
        NUMERIC => Some(Decimal::parse(a)?.cmp(&Decimal::parse(b)?)),
        _ => None,
    }
}

/// `a + b` for an int8 result (`count`, `sum` of int2/int4); `None` past int8's range
/// (PostgreSQL's 22003) or for text that is not an integer.
pub(super) fn add_int8(a: &str, b: &str) -> Option<String> {
    let sum = a.parse::<i64>().ok()?.checked_add(b.parse::<i64>().ok()?)?;
    Some(sum.to_string())
}

/// `a + b` for numerics, exactly, with the larger of the two scales (as PostgreSQL's
/// `sum(numeric)` keeps the largest display scale of what it added).
pub(super) fn add_numeric(a: &str, b: &str) -> Option<String> {
    let (x, y) = (Decimal::parse(a)?, Decimal::parse(b)?);
    Some(x.add(&y).to_string())
}

/// A numeric value: NaN, ±Infinity, or sign, digits and how many of them follow the point.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decimal {
    NaN,
    Infinity(bool),
    Finite {
        negative: bool,
        /// Without leading zeros (none for zero).
        digits: Vec<u8>,
        scale: usize,
    },
}

impl Decimal {
    fn parse(text: &str) -> Option<Decimal> {
        match text {
            "NaN" => return Some(Decimal::NaN),
            "Infinity" => return Some(Decimal::Infinity(false)),
            "-Infinity" => return Some(Decimal::Infinity(true)),
            _ => {}
        }
        let (negative, rest) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (int, frac) = rest.split_once('.').unwrap_or((rest, ""));
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        let mut digits = Vec::with_capacity(int.len() + frac.len());
        for c in int.bytes().chain(frac.bytes()) {
            if !c.is_ascii_digit() {
                return None;
            }
            digits.push(c - b'0');
        }
        let leading = digits.iter().take_while(|d| **d == 0).count();
        digits.drain(..leading);
        Some(Decimal::Finite {
            negative: negative && !digits.is_empty(),
            digits,
            scale: frac.len(),
        })
    }

    /// The digits at `scale` (which is at least the value's own).
    fn scaled(digits: &[u8], own: usize, scale: usize) -> Vec<u8> {
        let mut out = digits.to_vec();
        out.resize(digits.len() + scale - own, 0);
        out
    }

    fn add(&self, other: &Decimal) -> Decimal {
        use Decimal::*;
        match (self, other) {
            (NaN, _) | (_, NaN) => NaN,
            (Infinity(a), Infinity(b)) if a != b => NaN,
            (Infinity(a), _) | (_, Infinity(a)) => Infinity(*a),
            (Finite { .. }, Finite { .. }) => {
                let ((na, x), (nb, y), scale) = aligned(self, other);
                let (negative, digits) = if na == nb {
                    (na, add_digits(&x, &y))
                } else {
                    match cmp_digits(&x, &y) {
                        Ordering::Less => (nb, sub_digits(&y, &x)),
                        _ => (na, sub_digits(&x, &y)),
                    }
                };
                let leading = digits.iter().take_while(|d| **d == 0).count();
                let digits = digits[leading..].to_vec();
                Finite {
                    negative: negative && !digits.is_empty(),
                    digits,
                    scale,
                }
            }
        }
    }
}

impl std::fmt::Display for Decimal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Decimal::NaN => f.write_str("NaN"),
            Decimal::Infinity(false) => f.write_str("Infinity"),
            Decimal::Infinity(true) => f.write_str("-Infinity"),
            Decimal::Finite {
                negative,
                digits,
                scale,
            } => {
                let mut all: Vec<u8> = vec![0; (scale + 1).saturating_sub(digits.len())];
                all.extend_from_slice(digits);
                let point = all.len() - scale;
                let text = |d: &[u8]| d.iter().map(|d| char::from(b'0' + d)).collect::<String>();
                if *negative {
                    f.write_str("-")?;
                }
                f.write_str(&text(&all[..point]))?;
                if *scale > 0 {
                    write!(f, ".{}", text(&all[point..]))?;
                }
                Ok(())
            }
        }
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Decimal) -> Ordering {
        use Decimal::*;
        let rank = |d: &Decimal| match d {
            Infinity(true) => 0,
            Finite { .. } => 1,
            Infinity(false) => 2,
            NaN => 3,
        };
        match (self, other) {
            (Finite { .. }, Finite { .. }) => {
                let ((na, x), (nb, y), _) = aligned(self, other);
                let magnitude = cmp_digits(&x, &y);
                match (na, nb) {
                    (false, true) => Ordering::Greater,
                    (true, false) => Ordering::Less,
                    (false, false) => magnitude,
                    (true, true) => magnitude.reverse(),
                }
            }
            _ => rank(self).cmp(&rank(other)),
        }
    }
}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Decimal) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A sign (negative) and digits.
type Signed = (bool, Vec<u8>);

/// Two finite values' signs and digits at their common (larger) scale, and that scale;
/// `(false, [], 0)` stands in for a value that is not finite (callers match finite ones).
fn aligned(a: &Decimal, b: &Decimal) -> (Signed, Signed, usize) {
    fn parts(d: &Decimal) -> (bool, &[u8], usize) {
        match d {
            Decimal::Finite {
                negative,
                digits,
                scale,
            } => (*negative, digits.as_slice(), *scale),
            _ => (false, &[], 0),
        }
    }
    let ((na, da, sa), (nb, db, sb)) = (parts(a), parts(b));
    let scale = sa.max(sb);
    let at = |digits: &[u8], own: usize| Decimal::scaled(digits, own, scale);
    ((na, at(da, sa)), (nb, at(db, sb)), scale)
}

/// Magnitudes (most significant digit first) compared, leading zeros ignored.
fn cmp_digits(a: &[u8], b: &[u8]) -> Ordering {
    let trim = |d: &[u8]| -> usize { d.iter().take_while(|x| **x == 0).count() };
    let (a, b) = (&a[trim(a)..], &b[trim(b)..]);
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

fn add_digits(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(a.len().max(b.len()) + 1);
    let (mut i, mut j, mut carry) = (a.len(), b.len(), 0);
    while i > 0 || j > 0 || carry > 0 {
        let x = if i > 0 {
            i -= 1;
            a[i]
        } else {
            0
        };
        let y = if j > 0 {
            j -= 1;
            b[j]
        } else {
            0
        };
        let s = x + y + carry;
        out.push(s % 10);
        carry = s / 10;
    }
    out.reverse();
    out
}

/// `a - b` for magnitudes with `a >= b`.
fn sub_digits(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(a.len());
    let (mut i, mut j, mut borrow) = (a.len(), b.len(), 0i8);
    while i > 0 {
        i -= 1;
        let y = if j > 0 {
            j -= 1;
            b[j] as i8
        } else {
            0
        };
        let mut d = a[i] as i8 - y - borrow;
        borrow = 0;
        if d < 0 {
            d += 10;
            borrow = 1;
        }
        out.push(d as u8);
    }
    out.reverse();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_sums_are_exact_and_keep_the_larger_scale() {
        for (a, b, sum) in [
            ("1.5", "2.25", "3.75"),
            ("10", "-10.00", "0.00"),
            ("-1.10", "0.1", "-1.00"),
            (
                "99999999999999999999999999999999",
                "1",
                "100000000000000000000000000000000",
            ),
            ("0.001", "-0.002", "-0.001"),
            ("-5", "3", "-2"),
            ("123", "0", "123"),
            ("NaN", "1", "NaN"),
            ("Infinity", "-Infinity", "NaN"),
            ("-Infinity", "7", "-Infinity"),
        ] {
            assert_eq!(add_numeric(a, b).as_deref(), Some(sum), "{a} + {b}");
            assert_eq!(add_numeric(b, a).as_deref(), Some(sum), "{b} + {a}");
        }
        assert_eq!(add_numeric("1x", "1"), None);
    }

    #[test]
    fn comparisons_follow_postgresql() {
        use Ordering::*;
        for (ty, a, b, want) in [
            (NUMERIC, "1.50", "1.5", Equal),
            (NUMERIC, "-2", "1", Less),
            (NUMERIC, "-2", "-10", Greater),
            (NUMERIC, "NaN", "Infinity", Greater),
            (NUMERIC, "-Infinity", "-1000", Less),
            (INT8, "-9223372036854775808", "9223372036854775807", Less),
            (INT4, "10", "9", Greater),
            (FLOAT8, "NaN", "Infinity", Greater),
            (FLOAT8, "-Infinity", "-1.5", Less),
            (BOOL, "f", "t", Less),
        ] {
            assert_eq!(compare(ty, a, b), Some(want), "{a} vs {b}");
        }
        assert_eq!(
            compare(25, "a", "b"),
            None,
            "text: collation not known here"
        );
    }

    #[test]
    fn int8_sums_stop_at_int8_range() {
        assert_eq!(add_int8("40", "2").as_deref(), Some("42"));
        assert_eq!(add_int8("9223372036854775807", "1"), None);
    }
}
