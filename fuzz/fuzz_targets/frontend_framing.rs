//! The bytes a client sends: startup-phase packets, then the message stream.
//!
//! The input is taken as the client's byte stream. It is read the way the pooler reads it
//! (`frontend/login.rs`): startup packets through `wire::startup::read` (SSLRequest and
//! GSSENCRequest are refused and followed by another startup packet, CancelRequest ends
//! the connection), then the rest as messages: once through `frame::whole` as the login
//! phase reads password messages, and through `wire::Scanner` delivered in chunks whose
//! sizes are derived from the input, compared with one scan of the whole stream.
//!
//! Nothing may panic, and the invariants below must hold.

#![no_main]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;
use pgcat::wire::frame::{self, FrameError, INSPECT_CAP, MAX_MESSAGE_LEN};
use pgcat::wire::messages::{PgError, Severity};
use pgcat::wire::startup::{self, StartupError, StartupPacket, MAX_STARTUP_LEN};
use pgcat::wire::Scanner;

/// `login.rs`'s cap on a PasswordMessage-family body (PG_MAX_AUTH_TOKEN_LENGTH).
const MAX_AUTH_MESSAGE: usize = 65_535;

fuzz_target!(|data: &[u8]| run(data));

fn run(data: &[u8]) {
    let mut rng = Rng::new(data);
    let rest = match startup_phase(data) {
        Some(rest) => rest,
        // The server would have closed the connection; still scan everything as a
        // message stream so the framing code sees every input.
        None => data,
    };
    login_messages(rest);
    let cap = match rng.next() % 4 {
        0 => 0,
        1 => 1 + (rng.next() % 64) as usize,
        2 => INSPECT_CAP,
        _ => 16 << 20, // the relay's REWRITE_CAP
    };
    let mask = rng.next();
    // Mostly the relay's own choice of inspected tags; sometimes input-derived.
    let inspect = move |tag: u8| {
        if mask & 1 == 0 {
            matches!(tag, b'P' | b'B' | b'D' | b'C' | b'Q')
        } else {
            (mask >> (1 + tag % 63)) & 1 == 1
        }
    };
    let whole_run = scan_stream(rest, cap, &inspect, &mut |_| rest.len());
    let chunked_run = scan_stream(rest, cap, &inspect, &mut |left| {
        let max = match rng.next() % 4 {
            0 => 8,
            1 => 64,
            2 => 4096,
            _ => left.max(1),
        };
        1 + (rng.next() as usize) % max
    });
    assert_eq!(
        whole_run, chunked_run,
        "chunked delivery must scan the same messages as one read"
    );
}

/// Mirrors `login()`: reads startup packets until the one that starts a session. Returns
/// the bytes after it, or `None` when the connection would end.
fn startup_phase(data: &[u8]) -> Option<&[u8]> {
    let mut pos = 0;
    // SSL/GSSENC refusals loop; each costs at least 8 bytes, so this is bounded.
    loop {
        let mut reader: &[u8] = &data[pos..];
        let mut buf = bytes::BytesMut::new();
        let read = poll_ready(startup::read(&mut reader, &mut buf));
        // What was read beyond the packet stays in `buf`.
        let consumed = data.len() - pos - reader.len() - buf.len();
        let mirrored = mirror_read(&data[pos..]);
        match (&read, &mirrored) {
            (Ok(a), Ok((b, n))) => {
                assert_eq!(a, b, "startup::read and startup::parse disagree");
                assert_eq!(consumed, *n, "startup::read consumed the wrong length");
            }
            (Err(a), Err(b)) => assert_eq!(kind(a), kind(b), "{a:?} vs {b:?}"),
            _ => panic!("startup::read {read:?} but mirrored {mirrored:?}"),
        }
        let (packet, n) = mirrored.ok()?;
        check_packet(&packet);
        pos += n;
        match packet {
            StartupPacket::Ssl | StartupPacket::GssEnc => continue,
            StartupPacket::Cancel { .. } => return None,
            StartupPacket::Startup { .. } => return Some(&data[pos..]),
        }
    }
}

/// The length checks `startup::read` makes, then `startup::parse` on the body.
fn mirror_read(buf: &[u8]) -> Result<(StartupPacket, usize), StartupError> {
    // `parse` is public: it must also refuse, not panic on, bodies `read` never passes it
    // (shorter than the protocol code, or not what the length said).
    let _ = startup::parse(buf.get(4..).unwrap_or(&[]));
    let Some(len) = buf.get(..4) else {
        return Err(StartupError::Closed);
    };
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if !(8..=MAX_STARTUP_LEN).contains(&len) {
        return Err(StartupError::BadLength(len));
    }
    let Some(body) = buf.get(4..len) else {
        return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
    };
    // The body of an ErrorResponse-like packet is fields split by NULs too.
    check_error_fields(body);
    startup::parse(body).map(|p| (p, len))
}

fn kind(e: &StartupError) -> &'static str {
    match e {
        StartupError::Closed => "closed",
        StartupError::BadLength(_) => "bad length",
        StartupError::UnsupportedProtocol(_) => "unsupported protocol",
        StartupError::Malformed(_) => "malformed",
        StartupError::Io(_) => "io",
    }
}

fn check_packet(packet: &StartupPacket) {
    match packet {
        StartupPacket::Cancel { secret, .. } => {
            assert!((4..=256).contains(&secret.len()), "cancel secret length");
        }
        StartupPacket::Startup { params, .. } => {
            for (name, value) in params {
                assert!(!name.is_empty(), "empty parameter name");
                assert!(!name.contains('\0') && !value.contains('\0'));
            }
        }
        StartupPacket::Ssl | StartupPacket::GssEnc => {}
    }
}

/// The login phase's reads (`read_password`): whole messages up to 64 KiB.
fn login_messages(mut buf: &[u8]) {
    loop {
        match frame::whole(buf, MAX_AUTH_MESSAGE) {
            Ok(Some((tag, body, total))) => {
                let (htag, len) = frame::header(buf)
                    .expect("whole accepted the header")
                    .expect("whole saw a header");
                assert_eq!(htag, tag);
                assert_eq!(total, 1 + len, "total is tag + declared length");
                assert_eq!(body.len() + 4, len, "body is the declared length");
                assert!(total <= buf.len());
                assert!(body.len() <= MAX_AUTH_MESSAGE);
                assert_eq!(body, &buf[5..total]);
                let _ = frame::is_frontend_tag(tag);
                if let Ok((mechanism, rest)) = startup::cstr(body) {
                    assert!(!mechanism.contains('\0'));
                    assert!(rest.len() < body.len());
                }
                check_error_fields(body);
                buf = &buf[total..];
            }
            Ok(None) => {
                assert!(
                    buf.len() < 5
                        || matches!(frame::header(buf), Ok(Some((_, len))) if buf.len() < 1 + len),
                    "whole gave up on a complete message"
                );
                return;
            }
            Err(FrameError::BadLength { tag, len }) => {
                assert_eq!(tag, buf[0]);
                let declared = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
                assert_eq!(len, declared);
                assert!(
                    !(4..=MAX_MESSAGE_LEN as u32).contains(&len)
                        || (len as usize - 4) > MAX_AUTH_MESSAGE
                );
                return;
            }
        }
    }
}

/// `PgError::from_fields` on any body; the error it reads must survive an encode.
fn check_error_fields(body: &[u8]) {
    let e = PgError::from_fields(body);
    let mut out = bytes_mut();
    e.encode(&mut out);
    let (tag, encoded, total) = frame::whole(&out, usize::MAX >> 1)
        .expect("an encoded ErrorResponse frames")
        .expect("an encoded ErrorResponse is whole");
    assert_eq!(tag, b'E');
    assert_eq!(total, out.len());
    let again = PgError::from_fields(encoded);
    assert_eq!(e, again, "ErrorResponse fields do not round-trip");
    if e.severity == Severity::Fatal {
        assert!(encoded.windows(7).any(|w| w == b"VFATAL\0"));
    }
    let _ = e.to_string();
}

fn bytes_mut() -> bytes::BytesMut {
    bytes::BytesMut::new()
}

/// What one scan of a stream saw: every message start (absolute offset), its tag and its
/// body when inspected, then how the stream ended.
#[derive(Debug, PartialEq, Eq)]
struct ScanLog {
    events: Vec<(usize, u8, Option<Vec<u8>>)>,
    /// `Err` with the absolute offset of the bad header, or `Ok` with the bytes forwarded.
    end: Result<usize, (usize, FrameError)>,
    at_boundary: bool,
}

/// Feeds `stream` to a Scanner the way the relay does: bytes arrive in chunks of
/// `chunk(bytes_left)`, each scan sees the unforwarded tail of the buffer, the forwarded
/// prefix is dropped.
fn scan_stream(
    stream: &[u8],
    cap: usize,
    inspect: &impl Fn(u8) -> bool,
    chunk: &mut impl FnMut(usize) -> usize,
) -> ScanLog {
    let mut scanner = Scanner::with_cap(cap);
    let mut events = Vec::new();
    // Absolute offset of pending[0] in the stream.
    let mut forwarded = 0usize;
    let mut arrived = 0usize;
    // Absolute offset of the last message reported, for the order check.
    let mut last_start: Option<usize> = None;
    loop {
        let n = chunk(stream.len() - arrived).min(stream.len() - arrived);
        arrived += n;
        let pending = &stream[forwarded..arrived];
        let mut local = Vec::new();
        let result = scanner.scan(pending, inspect, |tag, body, start| {
            local.push((start, tag, body.map(<[u8]>::to_vec)));
        });
        for (start, tag, body) in local {
            // The scanner reports a message only once its header is in the buffer.
            assert!(start + 5 <= pending.len(), "start {start} beyond the buffer");
            assert_eq!(pending[start], tag, "tag not at the reported start");
            let (htag, len) = frame::header(&pending[start..])
                .expect("a reported message has a valid header")
                .expect("a reported message has a whole header");
            assert_eq!(htag, tag);
            let abs = forwarded + start;
            assert!(last_start.is_none_or(|s| s < abs), "messages out of order");
            last_start = Some(abs);
            if let Some(b) = &body {
                assert!(inspect(tag), "body for a tag not inspected");
                assert!(b.len() <= cap, "inspected body above the cap");
                assert_eq!(b.len() + 4, len, "inspected body differs from its length");
                assert_eq!(b.as_slice(), &pending[start + 5..start + 1 + len]);
            } else {
                assert!(!inspect(tag) || len - 4 > cap, "inspected message not inspected");
            }
            events.push((abs, tag, body));
        }
        match result {
            Ok(n) => {
                assert!(n <= pending.len(), "scan forwarded {n} of {} bytes", pending.len());
                forwarded += n;
                if !scanner.at_boundary() {
                    assert_eq!(forwarded, arrived, "mid-message with bytes held back");
                }
            }
            Err(e) => {
                let FrameError::BadLength { tag, len } = &e;
                // The bad header starts right after the last message reported.
                let at = next_start(stream, &events);
                assert!(at >= forwarded && at + 5 <= arrived, "bad header outside the buffer");
                assert_eq!(stream[at], *tag);
                assert_eq!(
                    u32::from_be_bytes([stream[at + 1], stream[at + 2], stream[at + 3], stream[at + 4]]),
                    *len
                );
                return ScanLog {
                    events,
                    end: Err((at, e)),
                    at_boundary: scanner.at_boundary(),
                };
            }
        }
        if arrived == stream.len() {
            return ScanLog {
                events,
                end: Ok(forwarded),
                at_boundary: scanner.at_boundary(),
            };
        }
    }
}

/// The absolute offset just after the last reported message (0 when none was).
fn next_start(stream: &[u8], events: &[(usize, u8, Option<Vec<u8>>)]) -> usize {
    match events.last() {
        Some((abs, _, _)) => {
            let len = frame::header(&stream[*abs..]).unwrap().unwrap().1;
            abs + 1 + len
        }
        None => 0,
    }
}

/// Polls a future over an in-memory reader once: it never waits.
fn poll_ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("reading from a slice returned Pending"),
    }
}

/// A small PRNG seeded from the input, for chunk sizes and scanner settings.
struct Rng(u64);

impl Rng {
    fn new(data: &[u8]) -> Rng {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in data {
            h = (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3);
        }
        Rng(h | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
