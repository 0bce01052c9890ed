//! PostgreSQL's `numeric`, exactly: parsed from and printed to its text format, read from
//! and written to its binary format (base-10000 digit groups), compared in PostgreSQL's
//! order (NaN above +Infinity above every number) and added without rounding.

use std::cmp::Ordering;

/// A numeric value: NaN, ±Infinity, or sign, digits and how many of them follow the point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Decimal {
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
    pub(super) fn parse(text: &str) -> Option<Decimal> {
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

    /// A value in the binary format (`numeric_send`): digit count, weight, sign, display
    /// scale, then base-10000 digits; `None` when malformed.
    pub(super) fn from_binary(bytes: &[u8]) -> Option<Decimal> {
        let word = |i: usize| -> Option<u16> {
            Some(u16::from_be_bytes(
                bytes.get(2 * i..2 * i + 2)?.try_into().ok()?,
            ))
        };
        let (ndigits, weight, sign, dscale) =
            (word(0)? as usize, word(1)? as i16, word(2)?, word(3)?);
        match sign {
            0xC000 => return Some(Decimal::NaN),
            0xD000 => return Some(Decimal::Infinity(false)),
            0xF000 => return Some(Decimal::Infinity(true)),
            0x0000 | 0x4000 => {}
            _ => return None,
        }
        if bytes.len() != 8 + 2 * ndigits {
            return None;
        }
        let groups: Vec<u16> = (0..ndigits).map(|i| word(4 + i)).collect::<Option<_>>()?;
        if groups.iter().any(|g| *g > 9999) {
            return None;
        }
        let scale = dscale as usize;
        let (weight, frac_groups) = (weight as i64, scale.div_ceil(4) as i64);
        let mut digits = Vec::new();
        for position in (-frac_groups..=weight.max(0)).rev() {
            let index = weight - position;
            let group = usize::try_from(index)
                .ok()
                .and_then(|i| groups.get(i))
                .copied()
                .unwrap_or(0);
            digits.extend_from_slice(&[
                (group / 1000) as u8,
                (group / 100 % 10) as u8,
                (group / 10 % 10) as u8,
                (group % 10) as u8,
            ]);
        }
        digits.truncate(digits.len() - (4 * frac_groups as usize - scale));
        let leading = digits.iter().take_while(|d| **d == 0).count();
        digits.drain(..leading);
        Some(Decimal::Finite {
            negative: sign == 0x4000 && !digits.is_empty(),
            digits,
            scale,
        })
    }

    /// The value in the binary format.
    pub(super) fn to_binary(&self) -> Vec<u8> {
        let header = |ndigits: u16, weight: i16, sign: u16, dscale: u16| {
            let mut out = Vec::with_capacity(8 + 2 * ndigits as usize);
            for w in [ndigits, weight as u16, sign, dscale] {
                out.extend_from_slice(&w.to_be_bytes());
            }
            out
        };
        let (negative, digits, scale) = match self {
            Decimal::NaN => return header(0, 0, 0xC000, 0),
            Decimal::Infinity(false) => return header(0, 0, 0xD000, 0),
            Decimal::Infinity(true) => return header(0, 0, 0xF000, 0),
            Decimal::Finite {
                negative,
                digits,
                scale,
            } => (*negative, digits, *scale),
        };
        // Integer digits padded on the left and fraction digits on the right to groups
        // of four.
        let int_len = digits.len().saturating_sub(scale);
        let mut all = vec![0u8; (4 - int_len % 4) % 4 + scale.saturating_sub(digits.len())];
        all.extend_from_slice(digits);
        all.resize(all.len() + (4 - scale % 4) % 4, 0);
        let int_groups = int_len.div_ceil(4);
        let mut groups: Vec<u16> = all
            .chunks(4)
            .map(|c| c.iter().fold(0u16, |n, d| n * 10 + *d as u16))
            .collect();
        let mut weight = int_groups as i64 - 1;
        while groups.first() == Some(&0) {
            groups.remove(0);
            weight -= 1;
        }
        while groups.last() == Some(&0) {
            groups.pop();
        }
        if groups.is_empty() {
            weight = 0;
        }
        let sign = if negative { 0x4000 } else { 0 };
        let mut out = header(groups.len() as u16, weight as i16, sign, scale as u16);
        for g in groups {
            out.extend_from_slice(&g.to_be_bytes());
        }
        out
    }

    /// This sum divided by `count` (> 0) as PostgreSQL's `avg` does (`numeric_div`): at
    /// the scale `select_div_scale` picks (16 significant digits, at least the sum's
    /// scale), rounded half away from zero.
    pub(super) fn div_count(&self, count: u64) -> Decimal {
        let Decimal::Finite {
            negative,
            digits,
            scale,
        } = self
        else {
            return self.clone();
        };
        // Weight (in base-10000 groups) and first group of the sum and of the count.
        let lead = |d: &Decimal| {
            let binary = d.to_binary();
            let ndigits = u16::from_be_bytes([binary[0], binary[1]]);
            let weight = i16::from_be_bytes([binary[2], binary[3]]) as i64;
            match ndigits {
                0 => (0, 0),
                _ => (weight, u16::from_be_bytes([binary[8], binary[9]])),
            }
        };
        let count_decimal = Decimal::Finite {
            negative: false,
            digits: count.to_string().bytes().map(|b| b - b'0').collect(),
            scale: 0,
        };
        let ((weight1, first1), (weight2, first2)) = (lead(self), lead(&count_decimal));
        let mut qweight = weight1 - weight2;
        if first1 <= first2 {
            qweight -= 1;
        }
        let rscale = (16 - qweight * 4).max(*scale as i64).clamp(0, 1000) as usize;
        // |sum| · 10^(rscale − scale), divided by count digit by digit.
        let mut numerator = digits.clone();
        numerator.resize(digits.len() + rscale - scale, 0);
        let (mut quotient, mut rem) = (Vec::with_capacity(numerator.len()), 0u128);
        for d in numerator {
            rem = rem * 10 + d as u128;
            quotient.push((rem / count as u128) as u8);
            rem %= count as u128;
        }
        if 2 * rem >= count as u128 {
            let mut i = quotient.len();
            loop {
                if i == 0 {
                    quotient.insert(0, 1);
                    break;
                }
                i -= 1;
                if quotient[i] == 9 {
                    quotient[i] = 0;
                } else {
                    quotient[i] += 1;
                    break;
                }
            }
        }
        let leading = quotient.iter().take_while(|d| **d == 0).count();
        quotient.drain(..leading);
        Decimal::Finite {
            negative: *negative && !quotient.is_empty(),
            digits: quotient,
            scale: rscale,
        }
    }

    /// The digits at `scale` (which is at least the value's own).
    fn scaled(digits: &[u8], own: usize, scale: usize) -> Vec<u8> {
        let mut out = digits.to_vec();
        out.resize(digits.len() + scale - own, 0);
        out
    }

    pub(super) fn add(&self, other: &Decimal) -> Decimal {
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
    fn sums_are_exact_and_keep_the_larger_scale() {
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
            let (x, y) = (Decimal::parse(a).expect(a), Decimal::parse(b).expect(b));
            assert_eq!(x.add(&y).to_string(), sum, "{a} + {b}");
            assert_eq!(y.add(&x).to_string(), sum, "{b} + {a}");
        }
        assert_eq!(Decimal::parse("1x"), None);
    }

    /// `avg` as PostgreSQL 15 computes it (`SELECT avg(x) FROM (VALUES …) v(x)`).
    #[test]
    fn averages_take_postgresqls_scale_and_rounding() {
        for (sum, count, avg) in [
            ("3", 2, "1.5000000000000000"),
            ("10", 3, "3.3333333333333333"),
            ("-10", 3, "-3.3333333333333333"),
            ("2", 3, "0.66666666666666666667"),
            ("123456789", 7, "17636684.142857142857"),
            ("1.005", 2, "0.50250000000000000000"),
            ("0", 5, "0.00000000000000000000"),
            ("100000", 1, "100000.000000000000"),
        ] {
            let got = Decimal::parse(sum).expect(sum).div_count(count).to_string();
            assert_eq!(got, avg, "avg of sum {sum} over {count}");
        }
    }

    /// `numeric_send` of values, as PostgreSQL 15 sends them (`SELECT numeric_send(x)`).
    #[test]
    fn the_binary_format_is_postgresqls() {
        for (text, hex) in [
            ("0", "0000000000000000"),
            ("0.00", "0000000000000002"),
            ("1", "00010000000000000001"),
            ("-12345.678", "0003000140000003000109291a7c"),
            ("10000", "00010001000000000001"),
            ("0.0001", "0001ffff000000040001"),
            ("123456789012345678", "0005000400000000000c0d801ed204d2162e"),
            ("-1.5", "000200004000000100011388"),
            ("NaN", "00000000c0000000"),
        ] {
            let bytes: Vec<u8> = (0..hex.len() / 2)
                .filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
                .collect();
            let value = Decimal::parse(text).expect(text);
            assert_eq!(value.to_binary(), bytes, "{text} to binary");
            assert_eq!(
                Decimal::from_binary(&bytes),
                Some(value.clone()),
                "{text} from binary"
            );
            assert_eq!(
                Decimal::from_binary(&value.to_binary()),
                Some(value.clone()),
                "{text} round trip"
            );
        }
    }
}
