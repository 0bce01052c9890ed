//! The packets a client sends before the message stream: SSLRequest, GSSENCRequest,
//! CancelRequest and StartupMessage. They have no tag byte; the length is checked against
//! PostgreSQL's own limit before anything is allocated.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

/// PostgreSQL's limit on a startup packet (`MAX_STARTUP_PACKET_LENGTH`).
pub const MAX_STARTUP_LEN: usize = 10_000;

const SSL_REQUEST: i32 = 80_877_103;
const GSSENC_REQUEST: i32 = 80_877_104;
const CANCEL_REQUEST: i32 = 80_877_102;

/// The protocol version the pooler speaks with clients: 3.0.
pub const PROTOCOL_3_0: i32 = 196_608;

#[derive(Debug, PartialEq, Eq)]
pub enum StartupPacket {
    Ssl,
    GssEnc,
    Cancel {
        pid: i32,
        secret: Vec<u8>,
    },
    Startup {
        /// Minor protocol version the client asked for (3.x).
        minor: u16,
        params: Vec<(String, String)>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("client closed the connection")]
    Closed,
    #[error("invalid length of startup packet: {0}")]
    BadLength(usize),
    #[error("unsupported frontend protocol {}.{}: server supports 3.0 to 3.0", (*.0 as u32) >> 16, (*.0 as u32) & 0xffff)]
    UnsupportedProtocol(i32),
    #[error("invalid startup packet layout: {0}")]
    Malformed(&'static str),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// What the first read of a connection asks for: a typical StartupMessage and then some.
const FIRST_READ: usize = 512;

/// Reads one startup-phase packet through `buf`: the socket is read for what it has
/// (usually the whole packet in one read, not the length and then the body), and whatever
/// the client sent after the packet stays in `buf`.
pub async fn read<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
) -> Result<StartupPacket, StartupError> {
    loop {
        if let Some(packet) = take(buf)? {
            return Ok(packet);
        }
        // The length is checked by `take` before the body's room is reserved.
        let wanted = match buf.get(..4) {
            Some(len) => packet_len(len) - buf.len(),
            None => FIRST_READ,
        };
        buf.reserve(wanted);
        if r.read_buf(buf).await? == 0 {
            return Err(if buf.len() < 4 {
                StartupError::Closed
            } else {
                std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()
            });
        }
    }
}

/// The packet at the start of `buf` if all of it is there (it is removed from `buf`); its
/// length is checked as soon as the length is there.
fn take(buf: &mut BytesMut) -> Result<Option<StartupPacket>, StartupError> {
    let Some(len) = buf.get(..4) else {
        return Ok(None);
    };
    let len = packet_len(len);
    if !(8..=MAX_STARTUP_LEN).contains(&len) {
        return Err(StartupError::BadLength(len));
    }
    if buf.len() < len {
        return Ok(None);
    }
    let packet = buf.split_to(len);
    parse(&packet[4..]).map(Some)
}

fn packet_len(len: &[u8]) -> usize {
    u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize
}

/// Parses a startup packet body (everything after the length).
pub fn parse(body: &[u8]) -> Result<StartupPacket, StartupError> {
    let Some((code, rest)) = body.split_first_chunk::<4>() else {
        return Err(StartupError::Malformed(
            "packet shorter than its protocol code",
        ));
    };
    let code = i32::from_be_bytes(*code);
    match code {
        SSL_REQUEST if rest.is_empty() => Ok(StartupPacket::Ssl),
        GSSENC_REQUEST if rest.is_empty() => Ok(StartupPacket::GssEnc),
        CANCEL_REQUEST if (8..=4 + 256).contains(&rest.len()) => Ok(StartupPacket::Cancel {
            pid: i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]),
            secret: rest[4..].to_vec(),
        }),
        SSL_REQUEST | GSSENC_REQUEST | CANCEL_REQUEST => {
            Err(StartupError::Malformed("bad request length"))
        }
        v if v >> 16 == 3 => Ok(StartupPacket::Startup {
            minor: (v & 0xffff) as u16,
            params: parse_params(rest)?,
        }),
        v => Err(StartupError::UnsupportedProtocol(v)),
    }
}

fn parse_params(mut rest: &[u8]) -> Result<Vec<(String, String)>, StartupError> {
    let mut params = Vec::new();
    loop {
        let (name, after) = cstr(rest)?;
        if name.is_empty() {
            if !after.is_empty() {
                return Err(StartupError::Malformed("data after the terminator"));
            }
            return Ok(params);
        }
        let (value, after) = cstr(after)?;
        params.push((name.to_string(), value.to_string()));
        rest = after;
    }
}

/// Splits a NUL-terminated UTF-8 string off the front of `buf`.
pub fn cstr(buf: &[u8]) -> Result<(&str, &[u8]), StartupError> {
    let end = buf
        .iter()
        .position(|b| *b == 0)
        .ok_or(StartupError::Malformed("missing NUL terminator"))?;
    let s =
        std::str::from_utf8(&buf[..end]).map_err(|_| StartupError::Malformed("invalid UTF-8"))?;
    Ok((s, &buf[end + 1..]))
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[test]
    fn parses_startup_params() {
        let mut body = PROTOCOL_3_0.to_be_bytes().to_vec();
        body.extend_from_slice(b"user\0alice\0database\0db\0\0");
        assert_eq!(
            parse(&body).unwrap(),
            StartupPacket::Startup {
                minor: 0,
                params: vec![
                    ("user".into(), "alice".into()),
                    ("database".into(), "db".into())
                ]
            }
        );
    }

    #[test]
    fn rejects_garbage() {
        let mut body = PROTOCOL_3_0.to_be_bytes().to_vec();
        body.extend_from_slice(b"user\0alice");
        assert!(parse(&body).is_err());
        assert!(parse(&1234i32.to_be_bytes()).is_err());
        let mut cancel = CANCEL_REQUEST.to_be_bytes().to_vec();
        cancel.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2]);
        assert_eq!(
            parse(&cancel).unwrap(),
            StartupPacket::Cancel {
                pid: 1,
                secret: vec![0, 0, 0, 2]
            }
        );
    }

    #[tokio::test]
    async fn length_is_checked_before_allocating() {
        let mut r: &[u8] = &[0x7f, 0xff, 0xff, 0xff];
        let mut buf = BytesMut::new();
        assert!(matches!(
            read(&mut r, &mut buf).await,
            Err(StartupError::BadLength(_))
        ));
        assert!(buf.capacity() <= FIRST_READ);
    }

    fn startup_packet(user: &str) -> Vec<u8> {
        let mut body = PROTOCOL_3_0.to_be_bytes().to_vec();
        body.extend_from_slice(format!("user\0{user}\0\0").as_bytes());
        let mut packet = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        packet.extend_from_slice(&body);
        packet
    }

    #[tokio::test]
    async fn what_follows_the_packet_stays_in_the_buffer() {
        let mut bytes = vec![0, 0, 0, 8];
        bytes.extend_from_slice(&SSL_REQUEST.to_be_bytes());
        bytes.extend_from_slice(&startup_packet("alice"));
        bytes.extend_from_slice(b"Q\0\0\0\x0dselect 1\0");
        let mut r: &[u8] = &bytes;
        let mut buf = BytesMut::new();
        assert_eq!(read(&mut r, &mut buf).await.unwrap(), StartupPacket::Ssl);
        assert!(!buf.is_empty(), "the startup packet was read with it");
        assert!(matches!(
            read(&mut r, &mut buf).await.unwrap(),
            StartupPacket::Startup { ref params, .. } if params[0] == ("user".to_string(), "alice".to_string())
        ));
        assert_eq!(&buf[..], b"Q\0\0\0\x0dselect 1\0");
    }

    #[tokio::test]
    async fn a_packet_cut_short_is_an_error() {
        let packet = startup_packet("a-rather-long-user-name");
        let mut buf = BytesMut::new();
        let mut r: &[u8] = &packet[..3];
        assert!(matches!(
            read(&mut r, &mut buf).await,
            Err(StartupError::Closed)
        ));
        let mut buf = BytesMut::new();
        let mut r: &[u8] = &packet[..packet.len() - 1];
        assert!(matches!(
            read(&mut r, &mut buf).await,
            Err(StartupError::Io(_))
        ));
    }

    /// A packet arriving a few bytes at a time is put together.
    #[tokio::test]
    async fn a_packet_in_pieces_is_read_whole() {
        let packet = startup_packet("bob");
        let (mut r, mut w) = tokio::io::duplex(64);
        let writer = async {
            for piece in packet.chunks(3) {
                w.write_all(piece).await.unwrap();
                tokio::task::yield_now().await;
            }
        };
        let mut buf = BytesMut::new();
        let (read, ()) = tokio::join!(read(&mut r, &mut buf), writer);
        assert!(matches!(read.unwrap(), StartupPacket::Startup { .. }));
        assert!(buf.is_empty());
    }
}
