//! The packets a client sends before the message stream: SSLRequest, GSSENCRequest,
//! CancelRequest and StartupMessage. They have no tag byte; the length is checked against
//! PostgreSQL's own limit before anything is allocated.

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

/// Reads one startup-phase packet.
pub async fn read<R: AsyncRead + Unpin>(r: &mut R) -> Result<StartupPacket, StartupError> {
    let mut len = [0u8; 4];
    if let Err(e) = r.read_exact(&mut len).await {
        return Err(match e.kind() {
            std::io::ErrorKind::UnexpectedEof => StartupError::Closed,
            _ => e.into(),
        });
    }
    let len = u32::from_be_bytes(len) as usize;
    if !(8..=MAX_STARTUP_LEN).contains(&len) {
        return Err(StartupError::BadLength(len));
    }
    let mut body = vec![0u8; len - 4];
    r.read_exact(&mut body).await?;
    parse(&body)
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
        assert!(matches!(
            read(&mut r).await,
            Err(StartupError::BadLength(_))
        ));
    }
}
