//! Values of the types the merge orders and adds, in PostgreSQL's text or binary format:
//! decoded into something that orders exactly as PostgreSQL orders the type, and added
//! (count, sum) exactly, in the format the client asked for. What cannot be decoded
//! exactly (another DateStyle, a malformed value) is `None`: the caller refuses it.

use std::cmp::Ordering;

use super::datetime;
use super::numeric::Decimal;

/// Type OIDs (pg_type.oid).
pub(super) const BOOL: u32 = 16;
pub(super) const NAME: u32 = 19;
pub(super) const INT8: u32 = 20;
pub(super) const INT2: u32 = 21;
pub(super) const INT4: u32 = 23;
pub(super) const TEXT: u32 = 25;
pub(super) const OID: u32 = 26;
pub(super) const FLOAT4: u32 = 700;
pub(super) const FLOAT8: u32 = 701;
pub(super) const BPCHAR: u32 = 1042;
pub(super) const VARCHAR: u32 = 1043;
pub(super) const DATE: u32 = 1082;
pub(super) const TIME: u32 = 1083;
pub(super) const TIMESTAMP: u32 = 1114;
pub(super) const TIMESTAMPTZ: u32 = 1184;
pub(super) const INTERVAL: u32 = 1186;
pub(super) const NUMERIC: u32 = 1700;
pub(super) const UUID: u32 = 2950;

/// How values of a type are ordered here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// Exactly, by value.
    Ordered,
    /// Text: byte by byte, which is PostgreSQL's order only under a C collation.
    Collated,
    /// Not ordered here.
    Unordered,
}

pub(super) fn kind(type_oid: u32) -> Kind {
    match type_oid {
        BOOL | NAME | INT8 | INT2 | INT4 | OID | FLOAT4 | FLOAT8 | DATE | TIME | TIMESTAMP
        | TIMESTAMPTZ | INTERVAL | NUMERIC | UUID => Kind::Ordered,
        TEXT | BPCHAR | VARCHAR => Kind::Collated,
        _ => Kind::Unordered,
    }
}

/// A value decoded for ordering.
#[derive(Debug, PartialEq)]
pub(super) enum Sortable<'a> {
    Int(i128),
    Float(f64),
    Numeric(Decimal),
    Bytes(&'a [u8]),
}

/// The value `v` of `type_oid`, in the binary format if `binary`, else text.
pub(super) fn decode(type_oid: u32, binary: bool, v: &[u8]) -> Option<Sortable<'_>> {
    use Sortable::*;
    let int = |v: &[u8]| -> Option<i128> {
        Some(match v.len() {
            1 => v[0] as i128,
            2 => i16::from_be_bytes(v.try_into().ok()?) as i128,
            4 => i32::from_be_bytes(v.try_into().ok()?) as i128,
            8 => i64::from_be_bytes(v.try_into().ok()?) as i128,
            _ => return None,
        })
    };
    if binary {
        return Some(match type_oid {
            BOOL => Int(int(v)?),
            INT8 | INT2 | INT4 | DATE | TIME | TIMESTAMP | TIMESTAMPTZ => Int(int(v)?),
            OID => Int(u32::from_be_bytes(v.try_into().ok()?) as i128),
            FLOAT4 => Float(f32::from_be_bytes(v.try_into().ok()?) as f64),
            FLOAT8 => Float(f64::from_be_bytes(v.try_into().ok()?)),
            NUMERIC => Numeric(Decimal::from_binary(v)?),
            INTERVAL => {
                let us = int(v.get(..8)?)?;
                let days = int(v.get(8..12)?)?;
                let months = int(v.get(12..16)?)?;
                Int(us + (days + 30 * months) * 86_400_000_000)
            }
            BPCHAR => Bytes(trim_blanks(v)),
            NAME | TEXT | VARCHAR | UUID => Bytes(v),
            _ => return None,
        });
    }
    let text = std::str::from_utf8(v).ok()?;
    Some(match type_oid {
        BOOL => Int(match text {
            "f" => 0,
            "t" => 1,
            _ => return None,
        }),
        INT8 | INT2 | INT4 | OID => Int(text.parse().ok()?),
        FLOAT4 | FLOAT8 => Float(text.parse().ok()?),
        NUMERIC => Numeric(Decimal::parse(text)?),
        DATE => Int(datetime::date(text)?),
        TIME => Int(datetime::time(text)?),
        TIMESTAMP => Int(datetime::timestamp(text, false)?),
        TIMESTAMPTZ => Int(datetime::timestamp(text, true)?),
        INTERVAL => Int(datetime::interval(text)?),
        // PostgreSQL prints a uuid in lower case with dashes in fixed places: its text
        // orders as its bytes do.
        UUID if text.len() == 36 && !text.bytes().any(|b| b.is_ascii_uppercase()) => Bytes(v),
        BPCHAR => Bytes(trim_blanks(v)),
        NAME | TEXT | VARCHAR => Bytes(v),
        _ => return None,
    })
}

/// `bpchar` compares without its trailing blanks.
fn trim_blanks(v: &[u8]) -> &[u8] {
    let end = v.iter().rposition(|b| *b != b' ').map_or(0, |i| i + 1);
    &v[..end]
}

/// `a` against `b` (decoded from the same column) in PostgreSQL's order: NaN above every
/// other float, numerics as `numeric` orders them, text byte by byte.
pub(super) fn compare(a: &Sortable<'_>, b: &Sortable<'_>) -> Ordering {
    use Sortable::*;
    match (a, b) {
        (Int(x), Int(y)) => x.cmp(y),
        (Float(x), Float(y)) => match (x.is_nan(), y.is_nan()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) => x.partial_cmp(y).unwrap_or(Ordering::Equal),
        },
        (Numeric(x), Numeric(y)) => x.cmp(y),
        (Bytes(x), Bytes(y)) => x.cmp(y),
        _ => Ordering::Equal,
    }
}

/// `a` against `b` where `b` may be of another number type than `a` (a HAVING constant
/// or parameter of another type than its column), compared as PostgreSQL casts them:
/// an integer against a numeric as numeric, either against a float as float8; values of
/// one kind as [`compare`].
pub(super) fn compare_numbers(a: Sortable<'_>, b: Sortable<'_>) -> Ordering {
    use Sortable::*;
    let numeric = |n: i128| Decimal::parse(&n.to_string()).map(Numeric);
    let float = |s: &Sortable<'_>| match s {
        Int(n) => Some(Float(*n as f64)),
        Numeric(d) => d.to_string().parse().ok().map(Float),
        _ => None,
    };
    let (a, b) = match (&a, &b) {
        (Int(x), Numeric(_)) => (numeric(*x), Some(b)),
        (Numeric(_), Int(y)) => (Some(a), numeric(*y)),
        (Float(_), Int(_) | Numeric(_)) => (Some(a), float(&b)),
        (Int(_) | Numeric(_), Float(_)) => (float(&a), Some(b)),
        _ => (Some(a), Some(b)),
    };
    match (a, b) {
        (Some(a), Some(b)) => compare(&a, &b),
        _ => Ordering::Equal,
    }
}

/// `a + b` for a `count` or `sum` result of `type_oid` (int8 or numeric) in the format
/// given; `None` past int8's range (PostgreSQL's 22003) or for a malformed value.
pub(super) fn add(type_oid: u32, binary: bool, a: &[u8], b: &[u8]) -> Option<Vec<u8>> {
    match (type_oid, binary) {
        (INT8, true) => {
            let x = i64::from_be_bytes(a.try_into().ok()?);
            let y = i64::from_be_bytes(b.try_into().ok()?);
            Some(x.checked_add(y)?.to_be_bytes().to_vec())
        }
        (INT8, false) => {
            let x: i64 = std::str::from_utf8(a).ok()?.parse().ok()?;
            let y: i64 = std::str::from_utf8(b).ok()?.parse().ok()?;
            Some(x.checked_add(y)?.to_string().into_bytes())
        }
        (NUMERIC, true) => {
            let sum = Decimal::from_binary(a)?.add(&Decimal::from_binary(b)?);
            Some(sum.to_binary())
        }
        (NUMERIC, false) => {
            let x = Decimal::parse(std::str::from_utf8(a).ok()?)?;
            let y = Decimal::parse(std::str::from_utf8(b).ok()?)?;
            Some(x.add(&y).to_string().into_bytes())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(ty: u32, binary: bool, a: &[u8], b: &[u8]) -> Ordering {
        let x = decode(ty, binary, a).expect("a decodes");
        let y = decode(ty, binary, b).expect("b decodes");
        compare(&x, &y)
    }

    #[test]
    fn text_values_order_as_postgresql_orders_their_type() {
        use Ordering::*;
        for (ty, a, b, want) in [
            (NUMERIC, "1.50", "1.5", Equal),
            (NUMERIC, "-2", "-10", Greater),
            (NUMERIC, "NaN", "Infinity", Greater),
            (INT8, "-9223372036854775808", "9223372036854775807", Less),
            (INT4, "10", "9", Greater),
            (FLOAT8, "NaN", "Infinity", Greater),
            (FLOAT8, "-Infinity", "-1.5", Less),
            (BOOL, "f", "t", Less),
            (DATE, "0044-03-15 BC", "0001-01-01", Less),
            (
                TIMESTAMPTZ,
                "2024-01-01 00:30:00+01",
                "2023-12-31 23:45:00+00",
                Less,
            ),
            (INTERVAL, "1 mon", "29 days 23:59:59", Greater),
            (
                UUID,
                "00000000-0000-0000-0000-0000000000ff",
                "10000000-0000-0000-0000-000000000000",
                Less,
            ),
            (BPCHAR, "ab  ", "ab", Equal),
            (TEXT, "B", "a", Less),
        ] {
            assert_eq!(
                order(ty, false, a.as_bytes(), b.as_bytes()),
                want,
                "{a} vs {b}"
            );
        }
        assert_eq!(decode(DATE, false, b"03/15/2024"), None, "DateStyle SQL");
        assert_eq!(decode(25 + 10_000, false, b"x"), None);
    }

    #[test]
    fn binary_values_order_as_their_text_does() {
        use Ordering::*;
        assert_eq!(
            order(INT4, true, &(-5i32).to_be_bytes(), &3i32.to_be_bytes()),
            Less
        );
        assert_eq!(
            order(INT8, true, &7i64.to_be_bytes(), &7i64.to_be_bytes()),
            Equal
        );
        assert_eq!(
            order(
                FLOAT8,
                true,
                &f64::NAN.to_be_bytes(),
                &f64::INFINITY.to_be_bytes()
            ),
            Greater
        );
        let numeric = |s: &str| Decimal::parse(s).expect(s).to_binary();
        assert_eq!(
            order(NUMERIC, true, &numeric("-12345.678"), &numeric("-1.5")),
            Less
        );
        // interval: 1 month against 31 days (µs, days, months).
        let interval = |us: i64, days: i32, months: i32| {
            [
                &us.to_be_bytes()[..],
                &days.to_be_bytes(),
                &months.to_be_bytes(),
            ]
            .concat()
        };
        assert_eq!(
            order(INTERVAL, true, &interval(0, 0, 1), &interval(0, 31, 0)),
            Less
        );
        assert_eq!(
            order(DATE, true, &(-1i32).to_be_bytes(), &0i32.to_be_bytes()),
            Less
        );
    }

    #[test]
    fn counts_and_sums_add_exactly_in_either_format() {
        assert_eq!(add(INT8, false, b"40", b"2").as_deref(), Some(&b"42"[..]));
        assert_eq!(add(INT8, false, b"9223372036854775807", b"1"), None);
        let sum = add(INT8, true, &40i64.to_be_bytes(), &2i64.to_be_bytes());
        assert_eq!(sum, Some(42i64.to_be_bytes().to_vec()));
        assert_eq!(
            add(NUMERIC, false, b"1.5", b"-0.25").as_deref(),
            Some(&b"1.25"[..])
        );
        let numeric = |s: &str| Decimal::parse(s).expect(s).to_binary();
        assert_eq!(
            add(NUMERIC, true, &numeric("1.5"), &numeric("-0.25")),
            Some(numeric("1.25"))
        );
        assert_eq!(
            add(FLOAT8, false, b"1", b"2"),
            None,
            "float sums are not combined"
        );
    }
}
