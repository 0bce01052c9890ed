//! Every message the pooler writes itself, to clients (authentication requests, parameter
//! status, key data, command completions, notices, ready-for-query, errors) and to servers
//! (the queries and prepares it adds). Small, and appended to a caller's buffer so a reply
//! goes out in one write.

use bytes::BytesMut;
use pgwire::messages::response::{ErrorResponse, ReadyForQuery, TransactionStatus};
use pgwire::messages::startup::{
    Authentication, BackendKeyData, NegotiateProtocolVersion, SecretKey,
};
use pgwire::messages::Message;

fn put<M: Message>(buf: &mut BytesMut, m: &M) {
    // Encoding into a growable buffer only fails on a message above pgwire's size limits;
    // the pooler's own messages are a few hundred bytes at most.
    if let Err(e) = m.encode(buf) {
        tracing::error!(error = %e, "could not encode a pooler message");
    }
}

/// Severity of an error the pooler reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The statement failed; the session goes on.
    Error,
    /// The session ends after this message.
    Fatal,
}

/// An error as PostgreSQL reports it: severity, SQLSTATE and a message a person can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgError {
    pub severity: Severity,
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl PgError {
    /// What a connection that cannot move to the new process of an online upgrade (TLS, an
    /// admin console) is told at its idle point.
    pub fn upgrading() -> PgError {
        PgError::fatal(
            "57P01",
            "terminating connection due to administrator command: the pooler is being upgraded and this connection cannot move to the new process; reconnect",
        )
    }

    pub fn error(code: &str, message: impl Into<String>) -> Self {
        PgError {
            severity: Severity::Error,
            code: code.to_string(),
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    pub fn fatal(code: &str, message: impl Into<String>) -> Self {
        PgError {
            severity: Severity::Fatal,
            ..Self::error(code, message)
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Reads the fields of an ErrorResponse body a server sent.
    pub fn from_fields(body: &[u8]) -> Self {
        let mut e = PgError::error("XX000", "");
        let mut severity = "ERROR";
        for field in body.split(|b| *b == 0) {
            let Some((&kind, value)) = field.split_first() else {
                continue;
            };
            let value = String::from_utf8_lossy(value).into_owned();
            match kind {
                b'V' if value == "FATAL" || value == "PANIC" => severity = "FATAL",
                b'C' => e.code = value,
                b'M' => e.message = value,
                b'D' => e.detail = Some(value),
                b'H' => e.hint = Some(value),
                _ => {}
            }
        }
        if severity == "FATAL" {
            e.severity = Severity::Fatal;
        }
        e
    }

    /// Appends this error as an ErrorResponse.
    pub fn encode(&self, buf: &mut BytesMut) {
        let sev = match self.severity {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        };
        let mut fields = vec![
            (b'S', sev.to_string()),
            (b'V', sev.to_string()),
            (b'C', self.code.clone()),
            (b'M', self.message.clone()),
        ];
        if let Some(d) = &self.detail {
            fields.push((b'D', d.clone()));
        }
        if let Some(h) = &self.hint {
            fields.push((b'H', h.clone()));
        }
        put(buf, &ErrorResponse::new(fields));
    }
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

/// An ErrorResponse a server sent, kept whole (every field, in PostgreSQL's own words) so
/// the client gets it as the server said it, or with the severity a pooled client needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    body: bytes::Bytes,
}

impl ServerError {
    pub fn new(body: &[u8]) -> ServerError {
        ServerError {
            body: bytes::Bytes::copy_from_slice(body),
        }
    }

    /// Whether an ErrorResponse body ends the server's session (FATAL or PANIC): the
    /// server closes the connection after it.
    pub fn ends_session(body: &[u8]) -> bool {
        let severity = field(body, b'V').or_else(|| field(body, b'S'));
        matches!(severity, Some(b"FATAL" | b"PANIC"))
    }

    /// Appends the message exactly as the server sent it.
    pub fn encode(&self, buf: &mut BytesMut) {
        put_raw(buf, b'E', &self.body);
    }

    /// Appends the message with severity ERROR (fields S and V): the statement failed, the
    /// client's session goes on (on another server).
    pub fn encode_as_error(&self, buf: &mut BytesMut) {
        let mut body = BytesMut::with_capacity(self.body.len());
        for f in self.body.split(|b| *b == 0).filter(|f| !f.is_empty()) {
            match f[0] {
                b'S' | b'V' => {
                    body.extend_from_slice(&f[..1]);
                    body.extend_from_slice(b"ERROR");
                }
                _ => body.extend_from_slice(f),
            }
            body.extend_from_slice(&[0]);
        }
        body.extend_from_slice(&[0]);
        put_raw(buf, b'E', &body);
    }

    /// The error's fields the pooler reads (SQLSTATE, message, detail, hint).
    pub fn fields(&self) -> PgError {
        PgError::from_fields(&self.body)
    }
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.fields().fmt(f)
    }
}

/// The value of one field of an ErrorResponse or NoticeResponse body.
pub fn field(body: &[u8], code: u8) -> Option<&[u8]> {
    body.split(|b| *b == 0)
        .find(|f| f.first() == Some(&code))
        .map(|f| &f[1..])
}

/// Appends a message: tag, length, body.
fn put_raw(buf: &mut BytesMut, tag: u8, body: &[u8]) {
    buf.reserve(5 + body.len());
    buf.extend_from_slice(&[tag]);
    buf.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    buf.extend_from_slice(body);
}

pub fn auth_ok(buf: &mut BytesMut) {
    put(buf, &Authentication::Ok);
}

pub fn auth_md5(buf: &mut BytesMut, salt: [u8; 4]) {
    put(buf, &Authentication::MD5Password(salt.to_vec()));
}

pub fn auth_sasl(buf: &mut BytesMut) {
    put(
        buf,
        &Authentication::SASL(vec!["SCRAM-SHA-256".to_string()]),
    );
}

pub fn auth_sasl_continue(buf: &mut BytesMut, data: &str) {
    put(
        buf,
        &Authentication::SASLContinue(bytes::Bytes::copy_from_slice(data.as_bytes())),
    );
}

pub fn auth_sasl_final(buf: &mut BytesMut, data: &str) {
    put(
        buf,
        &Authentication::SASLFinal(bytes::Bytes::copy_from_slice(data.as_bytes())),
    );
}

/// Written directly (no owned copies of the strings): a login sends a dozen of these.
pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    use bytes::BufMut;
    let len = 4 + name.len() + 1 + value.len() + 1;
    buf.reserve(1 + len);
    buf.put_u8(b'S');
    buf.put_u32(len as u32);
    buf.put_slice(name.as_bytes());
    buf.put_u8(0);
    buf.put_slice(value.as_bytes());
    buf.put_u8(0);
}

pub fn backend_key_data(buf: &mut BytesMut, pid: i32, secret: i32) {
    put(buf, &BackendKeyData::new(pid, SecretKey::I32(secret)));
}

/// Tells a client that asked for protocol 3.x (x > 0) that we speak 3.0, and which of its
/// `_pq_.` options we do not know.
pub fn negotiate_protocol_version(buf: &mut BytesMut, unsupported: Vec<String>) {
    put(buf, &NegotiateProtocolVersion::new(0, unsupported));
}

/// Appends a message: tag, length, then what `body` writes.
pub fn message(buf: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    buf.extend_from_slice(&[tag, 0, 0, 0, 0]);
    let start = buf.len() - 4;
    body(buf);
    let len = (buf.len() - start) as u32;
    buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Appends a message without a body (ParseComplete '1', CloseComplete '3', Sync 'S' …).
pub fn empty(buf: &mut BytesMut, tag: u8) {
    buf.extend_from_slice(&[tag, 0, 0, 0, 4]);
}

/// Appends a CommandComplete with `tag`.
pub fn command_complete(buf: &mut BytesMut, tag: &str) {
    message(buf, b'C', |m| {
        m.extend_from_slice(tag.as_bytes());
        m.extend_from_slice(&[0]);
    });
}

/// Appends a NoticeResponse (severity NOTICE, SQLSTATE 00000) saying `text`.
pub fn notice(buf: &mut BytesMut, text: &str) {
    message(buf, b'N', |m| {
        for (code, value) in [
            (b'S', "NOTICE"),
            (b'V', "NOTICE"),
            (b'C', "00000"),
            (b'M', text),
        ] {
            m.extend_from_slice(&[code]);
            m.extend_from_slice(value.as_bytes());
            m.extend_from_slice(&[0]);
        }
        m.extend_from_slice(&[0]);
    });
}

/// Appends a Parse of statement `name` whose body after the name is `body` (query,
/// parameter count and types, as the client sent them).
pub fn parse(buf: &mut BytesMut, name: &str, body: &[u8]) {
    message(buf, b'P', |m| {
        m.extend_from_slice(name.as_bytes());
        m.extend_from_slice(&[0]);
        m.extend_from_slice(body);
    });
}

/// Appends a Bind of `portal` to statement `statement`; `rest` is the rest of a client's
/// Bind body (formats, parameters, result formats).
pub fn bind(buf: &mut BytesMut, portal: &str, statement: &str, rest: &[u8]) {
    message(buf, b'B', |m| {
        m.extend_from_slice(portal.as_bytes());
        m.extend_from_slice(&[0]);
        m.extend_from_slice(statement.as_bytes());
        m.extend_from_slice(&[0]);
        m.extend_from_slice(rest);
    });
}

/// Appends a Describe of the prepared statement `name`.
pub fn describe_statement(buf: &mut BytesMut, name: &str) {
    message(buf, b'D', |m| {
        m.extend_from_slice(b"S");
        m.extend_from_slice(name.as_bytes());
        m.extend_from_slice(&[0]);
    });
}

/// Appends a Close of the prepared statement `name`.
pub fn close_statement(buf: &mut BytesMut, name: &str) {
    message(buf, b'C', |m| {
        m.extend_from_slice(b"S");
        m.extend_from_slice(name.as_bytes());
        m.extend_from_slice(&[0]);
    });
}

/// Appends a Query (simple protocol) whose text is `parts` joined.
pub fn query(buf: &mut BytesMut, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    buf.reserve(6 + len);
    buf.extend_from_slice(b"Q");
    buf.extend_from_slice(&(4 + len as u32 + 1).to_be_bytes());
    for p in parts {
        buf.extend_from_slice(p);
    }
    buf.extend_from_slice(&[0]);
}

pub fn ready_for_query(buf: &mut BytesMut, status: u8) {
    let status = match status {
        b'T' => TransactionStatus::Transaction,
        b'E' => TransactionStatus::Error,
        _ => TransactionStatus::Idle,
    };
    put(buf, &ReadyForQuery::new(status));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_round_trips_through_fields() {
        let mut buf = BytesMut::new();
        PgError::fatal("28P01", "password authentication failed for user \"x\"").encode(&mut buf);
        assert_eq!(buf[0], b'E');
        let e = PgError::from_fields(&buf[5..]);
        assert_eq!(e.code, "28P01");
        assert_eq!(e.severity, Severity::Fatal);
        assert_eq!(e.message, "password authentication failed for user \"x\"");
    }

    #[test]
    fn a_server_fatal_is_kept_whole_or_made_an_error() {
        let body = b"SFATAL\0VFATAL\0C57P01\0Mterminating connection due to administrator command\0Fpostgres.c\0L3211\0\0";
        assert!(ServerError::ends_session(body));
        assert!(!ServerError::ends_session(
            b"SERROR\0VERROR\0C42P01\0Mx\0\0"
        ));
        // A localized S field: V decides.
        assert!(ServerError::ends_session(
            b"SFATALE\0VFATAL\0C57P01\0Mx\0\0"
        ));
        let e = ServerError::new(body);
        let mut same = BytesMut::new();
        e.encode(&mut same);
        assert_eq!(&same[5..], &body[..]);
        assert_eq!(
            u32::from_be_bytes([same[1], same[2], same[3], same[4]]) as usize,
            body.len() + 4
        );
        let mut error = BytesMut::new();
        e.encode_as_error(&mut error);
        let expected: &[u8] = b"SERROR\0VERROR\0C57P01\0Mterminating connection due to administrator command\0Fpostgres.c\0L3211\0\0";
        assert_eq!(&error[5..], expected);
        assert_eq!(error[0], b'E');
        assert_eq!(
            u32::from_be_bytes([error[1], error[2], error[3], error[4]]) as usize,
            expected.len() + 4
        );
        assert_eq!(e.fields().code, "57P01");
    }
}
