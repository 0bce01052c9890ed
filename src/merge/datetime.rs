//! Dates, times, timestamps and intervals as PostgreSQL prints them with `DateStyle = ISO`
//! and `IntervalStyle = postgres` (its defaults), turned into integers that order exactly
//! as PostgreSQL orders the values: days for a date, microseconds for the rest (an
//! interval as PostgreSQL compares it, a month counting 30 days). Text in another style
//! does not parse (`None`), so the caller refuses it rather than guessing.

const DAY_US: i128 = 86_400_000_000;

/// `YYYY-MM-DD[ BC]`, `infinity`, `-infinity`: days since 2000-01-01.
pub(super) fn date(text: &str) -> Option<i128> {
    dated(text, |p, days| {
        p.end()?;
        Some(days)
    })
}

/// `infinity` and `-infinity` as the extremes; else the text's date (`[ BC]` at its end)
/// in days, and the cursor after it, given to `rest` for what follows.
fn dated(text: &str, rest: impl FnOnce(&mut Cursor<'_>, i128) -> Option<i128>) -> Option<i128> {
    match text {
        "infinity" => Some(i128::MAX),
        "-infinity" => Some(i128::MIN),
        _ => {
            let (text, bc) = strip_bc(text);
            let mut p = Cursor(text);
            let days = p.date(bc)?;
            rest(&mut p, days)
        }
    }
}

/// `HH:MM:SS[.ffffff]`: microseconds since midnight.
pub(super) fn time(text: &str) -> Option<i128> {
    let mut p = Cursor(text);
    let us = p.time()?;
    p.end()?;
    Some(us)
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff][±HH[:MM[:SS]]][ BC]`, `infinity`, `-infinity`:
/// microseconds since 2000-01-01 00:00 (UTC when `zoned`, which the text must then be).
pub(super) fn timestamp(text: &str, zoned: bool) -> Option<i128> {
    dated(text, |p, days| time_of_day(p, days, zoned))
}

/// The rest of a timestamp after its date (`days`).
fn time_of_day(p: &mut Cursor<'_>, days: i128, zoned: bool) -> Option<i128> {
    p.literal(" ")?;
    let mut us = days * DAY_US + p.time()?;
    if zoned {
        let sign = match p.0.as_bytes().first()? {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        p.0 = &p.0[1..];
        let mut offset = p.number(2)? * 3600;
        if p.literal(":").is_some() {
            offset += p.number(2)? * 60;
            if p.literal(":").is_some() {
                offset += p.number(2)?;
            }
        }
        us -= sign * offset * 1_000_000;
    }
    p.end()?;
    Some(us)
}

/// An interval as `IntervalStyle = postgres` prints it (`1 year 2 mons -3 days
/// +04:05:06.5`): the microseconds PostgreSQL compares it by.
pub(super) fn interval(text: &str) -> Option<i128> {
    let mut total: i128 = 0;
    let mut words = text.split(' ').peekable();
    while let Some(word) = words.next() {
        if word.contains(':') {
            let (sign, rest) = match word.as_bytes().first()? {
                b'-' => (-1, &word[1..]),
                b'+' => (1, &word[1..]),
                _ => (1, word),
            };
            // Hours may exceed 24 (and two digits) in an interval.
            let (hours, rest) = rest.split_once(':')?;
            let mut p = Cursor(rest);
            let minutes = p.number(2)?;
            p.literal(":")?;
            let seconds = p.number(2)?;
            let fraction = p.fraction()?;
            p.end()?;
            let hours: i128 = digits(hours)?;
            total += sign * ((hours * 3600 + minutes * 60 + seconds) * 1_000_000 + fraction);
            continue;
        }
        let n: i128 = match word.strip_prefix('-') {
            Some(rest) => -digits(rest)?,
            None => digits(word.strip_prefix('+').unwrap_or(word))?,
        };
        let unit = match words.next()? {
            "year" | "years" => 12 * 30 * DAY_US,
            "mon" | "mons" => 30 * DAY_US,
            "day" | "days" => DAY_US,
            _ => return None,
        };
        total += n * unit;
    }
    Some(total)
}

fn strip_bc(text: &str) -> (&str, bool) {
    match text.strip_suffix(" BC") {
        Some(rest) => (rest, true),
        None => (text, false),
    }
}

fn digits(text: &str) -> Option<i128> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) || text.len() > 30 {
        return None;
    }
    text.parse().ok()
}

/// Days from 2000-01-01 to a proleptic Gregorian date (`year` astronomical: 0 is 1 BC).
fn days_from_civil(year: i128, month: i128, day: i128) -> i128 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468 - 10_957
}

/// What is left of a text being read.
struct Cursor<'a>(&'a str);

impl Cursor<'_> {
    /// Exactly `width` digits.
    fn number(&mut self, width: usize) -> Option<i128> {
        let head = self.0.get(..width)?;
        let n = digits(head)?;
        self.0 = &self.0[width..];
        Some(n)
    }

    fn literal(&mut self, s: &str) -> Option<()> {
        self.0 = self.0.strip_prefix(s)?;
        Some(())
    }

    /// `YYYY-MM-DD` (four or more year digits): days since 2000-01-01.
    fn date(&mut self, bc: bool) -> Option<i128> {
        let year_len = self.0.find('-')?;
        if year_len < 4 {
            return None;
        }
        let year = self.number(year_len)?;
        self.literal("-")?;
        let month = self.number(2)?;
        self.literal("-")?;
        let day = self.number(2)?;
        if !(1..=12).contains(&month) || !(1..=31).contains(&day) || year == 0 {
            return None;
        }
        let year = if bc { 1 - year } else { year };
        Some(days_from_civil(year, month, day))
    }

    /// `HH:MM:SS[.ffffff]`: microseconds.
    fn time(&mut self) -> Option<i128> {
        let hours = self.number(2)?;
        self.literal(":")?;
        let minutes = self.number(2)?;
        self.literal(":")?;
        let seconds = self.number(2)?;
        let fraction = self.fraction()?;
        Some((hours * 3600 + minutes * 60 + seconds) * 1_000_000 + fraction)
    }

    /// `[.f…]` (up to six digits): microseconds.
    fn fraction(&mut self) -> Option<i128> {
        let Some(rest) = self.0.strip_prefix('.') else {
            return Some(0);
        };
        let len = rest.bytes().take_while(u8::is_ascii_digit).count();
        if len == 0 || len > 6 {
            return None;
        }
        let n = digits(&rest[..len])? * 10i128.pow(6 - len as u32);
        self.0 = &rest[len..];
        Some(n)
    }

    fn end(&self) -> Option<()> {
        self.0.is_empty().then_some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_count_days_from_2000_as_postgresql_does() {
        assert_eq!(date("2000-01-01"), Some(0));
        assert_eq!(date("2000-03-01"), Some(60), "2000 is a leap year");
        assert_eq!(date("1999-12-31"), Some(-1));
        assert_eq!(date("0001-01-01"), Some(-730_119));
        assert_eq!(
            date("0001-12-31 BC"),
            Some(-730_120),
            "1 BC is the year before 1 AD"
        );
        assert!(date("10000-01-01") > date("9999-12-31"));
        assert_eq!(date("infinity"), Some(i128::MAX));
        assert_eq!(date("01/02/2000"), None, "DateStyle SQL is refused");
        assert_eq!(date("Sat Jan 01 2000"), None);
    }

    #[test]
    fn timestamps_with_zones_are_compared_in_utc() {
        let utc = timestamp("2024-05-01 10:00:00+00", true);
        assert_eq!(timestamp("2024-05-01 12:00:00+02", true), utc);
        assert_eq!(timestamp("2024-05-01 05:30:00-04:30", true), utc);
        assert!(timestamp("2024-05-01 10:00:00.000001+00", true) > utc);
        assert_eq!(timestamp("2000-01-01 00:00:01.5", false), Some(1_500_000));
        assert_eq!(
            timestamp("2024-05-01 10:00:00", true),
            None,
            "a zone is required"
        );
        assert_eq!(time("23:59:59.999999"), Some(86_399_999_999));
    }

    #[test]
    fn intervals_compare_with_thirty_day_months() {
        assert_eq!(interval("1 mon"), interval("30 days"));
        assert_eq!(interval("1 day"), interval("24:00:00"));
        assert_eq!(
            interval("1 year 2 mons -3 days +04:05:06.5"),
            Some((14 * 30 - 3) * DAY_US + (4 * 3600 + 5 * 60 + 6) * 1_000_000 + 500_000)
        );
        assert_eq!(interval("-00:00:01"), Some(-1_000_000));
        assert_eq!(interval("00:00:00"), Some(0));
        assert_eq!(interval("P1Y2M"), None, "IntervalStyle iso_8601 is refused");
        assert_eq!(interval("@ 1 day"), None, "postgres_verbose is refused");
    }
}
