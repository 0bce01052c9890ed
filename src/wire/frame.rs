//! Message framing by header scan.
//!
//! Every message after startup is `tag (1) | length (4, includes itself) | body`. The relay
//! only needs the tags and a few small bodies, so [`Scanner`] walks a byte stream, hands
//! the caller each message's tag (and its body when the caller asked to inspect that tag and
//! the body is small), and says how many bytes may be forwarded as they are. A message that
//! is not inspected is streamed: its bytes are forwarded as they arrive, never buffered
//! whole, so a peer's claimed length is never allocated.

/// PostgreSQL's own limit on a message (1 GB); above it the stream is corrupt or hostile.
pub const MAX_MESSAGE_LEN: usize = 1 << 30;

/// Largest body the scanner buffers whole for inspection; longer ones are streamed.
pub const INSPECT_CAP: usize = 64 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("invalid message length {len} for message type '{}'", char::from(*.tag))]
    BadLength { tag: u8, len: u32 },
}

/// Walks a stream of messages across reads. It keeps only the count of bytes of a
/// streamed message still to come, so it costs nothing while a client is idle.
#[derive(Debug)]
pub struct Scanner {
    skip: usize,
    cap: usize,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner::with_cap(INSPECT_CAP)
    }
}

impl Scanner {
    /// A scanner that buffers inspected messages whole up to `cap` body bytes.
    pub fn with_cap(cap: usize) -> Scanner {
        Scanner { skip: 0, cap }
    }

    /// True when the stream is between messages (no streamed message is half through).
    pub fn at_boundary(&self) -> bool {
        self.skip == 0
    }

    /// Scans `buf` from its start. For each message that begins in it, calls
    /// `on(tag, body, start)` with the message's offset in `buf`: `body` is `Some` when
    /// `inspect(tag)` and the whole message is
    /// present (the scan stops before an inspected message that is still incomplete),
    /// `None` when the message is streamed. Returns how many leading bytes of `buf` are
    /// complete as far as the scan is concerned and may be forwarded.
    pub fn scan(
        &mut self,
        buf: &[u8],
        inspect: impl Fn(u8) -> bool,
        mut on: impl FnMut(u8, Option<&[u8]>, usize),
    ) -> Result<usize, FrameError> {
        let mut pos = 0;
        loop {
            if self.skip > 0 {
                let n = self.skip.min(buf.len() - pos);
                pos += n;
                self.skip -= n;
                if self.skip > 0 {
                    return Ok(pos);
                }
            }
            let Some((tag, len)) = header(&buf[pos..])? else {
                return Ok(pos);
            };
            let total = 1 + len;
            if inspect(tag) && len - 4 <= self.cap {
                if buf.len() - pos < total {
                    return Ok(pos);
                }
                on(tag, Some(&buf[pos + 5..pos + total]), pos);
                pos += total;
            } else {
                on(tag, None, pos);
                self.skip = total;
            }
        }
    }
}

/// Whether a client may send this message type after startup (PostgreSQL closes the
/// connection on anything else).
pub fn is_frontend_tag(tag: u8) -> bool {
    matches!(
        tag,
        b'Q' | b'P' | b'B' | b'D' | b'E' | b'C' | b'S' | b'H' | b'F' | b'X' | b'd' | b'c' | b'f'
    )
}

/// The error for a message type a client may not send.
pub fn invalid_frontend_tag(tag: u8) -> String {
    format!("invalid frontend message type {tag}")
}

/// Reads a message header: `(tag, length)` where length counts itself, or `None` when
/// fewer than 5 bytes are present.
pub fn header(buf: &[u8]) -> Result<Option<(u8, usize)>, FrameError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let tag = buf[0];
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if !(4..=MAX_MESSAGE_LEN as u32).contains(&len) {
        return Err(FrameError::BadLength { tag, len });
    }
    Ok(Some((tag, len as usize)))
}

/// A whole message: tag, body, and its total length in the buffer.
pub type Whole<'a> = (u8, &'a [u8], usize);

/// Reads one whole message from the start of `buf` if it is all there:
/// `(tag, body, total length)`. Used where the pooler itself converses (startup, auth,
/// server login) and every message is small; `cap` bounds the body.
pub fn whole(buf: &[u8], cap: usize) -> Result<Option<Whole<'_>>, FrameError> {
    let Some((tag, len)) = header(buf)? else {
        return Ok(None);
    };
    if len - 4 > cap {
        return Err(FrameError::BadLength {
            tag,
            len: len as u32,
        });
    }
    if buf.len() < 1 + len {
        return Ok(None);
    }
    Ok(Some((tag, &buf[5..1 + len], 1 + len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn streams_uninspected_and_waits_for_inspected() {
        let mut stream = msg(b'D', &[7; 100]);
        stream.extend(msg(b'Z', b"I"));
        let mut s = Scanner::default();
        let mut seen = Vec::new();
        // First 50 bytes: the DataRow is streamed, so all 50 may be forwarded.
        let n = s
            .scan(
                &stream[..50],
                |t| t == b'Z',
                |t, b, _| seen.push((t, b.map(|b| b.to_vec()))),
            )
            .unwrap();
        assert_eq!(n, 50);
        assert!(!s.at_boundary());
        // The rest of the DataRow plus 3 bytes of Z: Z is inspected and incomplete.
        let rest = &stream[50..stream.len() - 3];
        let n = s
            .scan(
                rest,
                |t| t == b'Z',
                |t, b, _| seen.push((t, b.map(|b| b.to_vec()))),
            )
            .unwrap();
        assert_eq!(n, 55);
        assert!(s.at_boundary());
        let n = s
            .scan(
                &stream[105..],
                |t| t == b'Z',
                |t, b, _| seen.push((t, b.map(|b| b.to_vec()))),
            )
            .unwrap();
        assert_eq!(n, 6);
        assert_eq!(seen, vec![(b'D', None), (b'Z', Some(b"I".to_vec()))]);
    }

    #[test]
    fn rejects_lengths_out_of_range() {
        let mut s = Scanner::default();
        let bad = [b'Q', 0, 0, 0, 3];
        assert!(s.scan(&bad, |_| true, |_, _, _| {}).is_err());
        let huge = [b'Q', 0x7f, 0xff, 0xff, 0xff];
        assert!(s.scan(&huge, |_| false, |_, _, _| {}).is_err());
    }

    #[test]
    fn whole_bounds_the_body() {
        let m = msg(b'p', &[1; 20]);
        assert!(whole(&m, 10).is_err());
        assert_eq!(whole(&m, 100).unwrap().unwrap().2, 25);
        assert!(whole(&m[..10], 100).unwrap().is_none());
    }
}
