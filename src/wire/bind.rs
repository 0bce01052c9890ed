//! The parameters of a Bind message, read in place: each one's format and value, and the
//! same Bind for a subset of them (a statement split between shards keeps only its rows'
//! parameters). Lengths are checked before anything is sliced.

/// A Bind body after its portal and statement names.
pub struct BindParams<'a> {
    /// The parameter format codes (none: all text; one: for all; else one each).
    formats: &'a [u8],
    count: usize,
    /// The values, from the first one's length on.
    values: &'a [u8],
    /// What follows the values (the result format codes), as it is.
    results: &'a [u8],
}

impl<'a> BindParams<'a> {
    /// Reads `rest` (the Bind body after the two names); `None` when it is malformed.
    pub fn read(rest: &'a [u8]) -> Option<BindParams<'a>> {
        let nfmt = u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize;
        let formats = rest.get(2..2 + 2 * nfmt)?;
        let rest = rest.get(2 + 2 * nfmt..)?;
        let count = u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize;
        let values = rest.get(2..)?;
        let mut params = BindParams {
            formats,
            count,
            values,
            results: &[],
        };
        let mut end = 0;
        for _ in 0..count {
            end += value_len(values.get(end..)?)?;
        }
        params.values = values.get(..end)?;
        params.results = values.get(end..)?;
        Some(params)
    }

    /// Whether parameter `i` (0-based) is in binary format.
    pub fn binary(&self, i: usize) -> bool {
        let code = match self.formats.len() / 2 {
            0 => return false,
            1 => &self.formats[..2],
            _ => match self.formats.get(2 * i..2 * i + 2) {
                Some(code) => code,
                None => return false,
            },
        };
        code == [0, 1]
    }

    /// Parameter `i`'s value (0-based): `Some(None)` for NULL, `None` past the last one.
    pub fn value(&self, i: usize) -> Option<Option<&'a [u8]>> {
        if i >= self.count {
            return None;
        }
        let mut at = 0;
        for _ in 0..i {
            at += value_len(&self.values[at..])?;
        }
        let len = i32::from_be_bytes(self.values.get(at..at + 4)?.try_into().ok()?);
        if len < 0 {
            return Some(None);
        }
        Some(self.values.get(at + 4..at + 4 + len as usize))
    }

    /// How many result format codes the Bind gives (0: all text, 1: one for all, else one
    /// per column).
    pub fn result_formats(&self) -> usize {
        self.results
            .get(..2)
            .map_or(0, |n| u16::from_be_bytes([n[0], n[1]]) as usize)
    }

    /// The Bind body after the names for parameters `old` (1-based), in that order, with
    /// their formats; the result formats unchanged. `None` when one is out of range.
    pub fn subset(&self, old: &[usize]) -> Option<Vec<u8>> {
        let mut starts = Vec::with_capacity(self.count);
        let mut at = 0;
        for _ in 0..self.count {
            starts.push(at);
            at += value_len(&self.values[at..])?;
        }
        starts.push(at);
        let mut out = Vec::with_capacity(self.values.len() + self.results.len() + 8);
        match self.formats.len() / 2 {
            0 | 1 => {
                out.extend_from_slice(&((self.formats.len() / 2) as u16).to_be_bytes());
                out.extend_from_slice(self.formats);
            }
            _ => {
                out.extend_from_slice(&(old.len() as u16).to_be_bytes());
                for &o in old {
                    out.extend_from_slice(self.formats.get(2 * (o - 1)..2 * o)?);
                }
            }
        }
        out.extend_from_slice(&(old.len() as u16).to_be_bytes());
        for &o in old {
            let i = o.checked_sub(1).filter(|i| *i < self.count)?;
            out.extend_from_slice(&self.values[starts[i]..starts[i + 1]]);
        }
        out.extend_from_slice(self.results);
        Some(out)
    }
}

/// The bytes of the value at the start of `values` (its length word included).
fn value_len(values: &[u8]) -> Option<usize> {
    let len = i32::from_be_bytes(values.get(..4)?.try_into().ok()?);
    let body = if len < 0 { 0 } else { len as usize };
    (values.len() >= 4 + body).then_some(4 + body)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Bind rest: per-parameter formats, values (None = NULL), one result format.
    fn rest(formats: &[u16], values: &[Option<&[u8]>]) -> Vec<u8> {
        let mut b = (formats.len() as u16).to_be_bytes().to_vec();
        for f in formats {
            b.extend_from_slice(&f.to_be_bytes());
        }
        b.extend_from_slice(&(values.len() as u16).to_be_bytes());
        for v in values {
            match v {
                None => b.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(v) => {
                    b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    b.extend_from_slice(v);
                }
            }
        }
        b.extend_from_slice(&[0, 1, 0, 1]);
        b
    }

    #[test]
    fn values_and_formats_are_read_in_place() {
        let r = rest(&[0, 1, 0], &[Some(b"42"), Some(&7i64.to_be_bytes()), None]);
        let p = BindParams::read(&r).expect("well formed");
        assert_eq!(p.value(0), Some(Some(&b"42"[..])));
        assert!(!p.binary(0) && p.binary(1) && !p.binary(2));
        assert_eq!(p.value(2), Some(None));
        assert_eq!(p.value(3), None);
        assert!(BindParams::read(&r[..r.len() - 7]).is_none(), "truncated");
    }

    #[test]
    fn a_subset_keeps_its_values_formats_and_the_result_formats() {
        let r = rest(&[0, 1, 0], &[Some(b"a"), Some(b"bb"), None]);
        let p = BindParams::read(&r).expect("well formed");
        let sub = p.subset(&[3, 1]).expect("in range");
        assert_eq!(sub, rest(&[0, 0], &[None, Some(b"a")]));
        assert!(p.subset(&[4]).is_none());
        let one_format = rest(&[1], &[Some(b"x"), Some(b"y")]);
        let p = BindParams::read(&one_format).expect("well formed");
        assert_eq!(p.subset(&[2]).expect("in range"), rest(&[1], &[Some(b"y")]));
    }
}
