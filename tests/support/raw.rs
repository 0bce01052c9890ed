//! A raw PostgreSQL protocol client over a blocking TCP socket: messages written byte by byte,
//! replies read as (tag, body) frames. For tests that must control exactly what is in flight
//! (pipelining, Flush, dropping a connection without Terminate) or see which authentication
//! the pooler asked for.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

/// One backend message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl Msg {
    /// The tag as a char, for messages: 'C', 'D', 'Z', ...
    pub fn kind(&self) -> char {
        self.tag as char
    }

    /// ErrorResponse / NoticeResponse field (`b'C'` SQLSTATE, `b'M'` message, ...).
    pub fn field(&self, code: u8) -> Option<String> {
        let mut rest = &self.body[..];
        while let Some((&c, tail)) = rest.split_first() {
            if c == 0 {
                break;
            }
            let end = tail.iter().position(|&b| b == 0)?;
            if c == code {
                return Some(String::from_utf8_lossy(&tail[..end]).into_owned());
            }
            rest = &tail[end + 1..];
        }
        None
    }

    /// SQLSTATE of an ErrorResponse.
    pub fn sqlstate(&self) -> Option<String> {
        (self.tag == b'E').then(|| self.field(b'C')).flatten()
    }

    /// Column values of a DataRow (text format).
    pub fn row(&self) -> Vec<Option<String>> {
        let b = &self.body;
        let n = u16::from_be_bytes([b[0], b[1]]) as usize;
        let mut at = 2;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let len = i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
            at += 4;
            if len < 0 {
                out.push(None);
            } else {
                let len = len as usize;
                out.push(Some(String::from_utf8_lossy(&b[at..at + len]).into_owned()));
                at += len;
            }
        }
        out
    }

    /// CommandComplete tag.
    pub fn command_tag(&self) -> String {
        String::from_utf8_lossy(self.body.split(|&b| b == 0).next().unwrap_or_default())
            .into_owned()
    }
}

/// How the pooler asked the client to authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    /// AuthenticationOk straight away.
    Trust,
    Cleartext,
    Md5,
    Scram,
}

/// Why a login failed.
#[derive(Debug)]
pub enum LoginError {
    Io(std::io::Error),
    /// The server sent an ErrorResponse: SQLSTATE and message.
    Server {
        sqlstate: String,
        message: String,
    },
    Protocol(String),
}

impl std::fmt::Display for LoginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoginError::Io(e) => write!(f, "io: {e}"),
            LoginError::Server { sqlstate, message } => write!(f, "{sqlstate}: {message}"),
            LoginError::Protocol(m) => write!(f, "protocol: {m}"),
        }
    }
}

impl From<std::io::Error> for LoginError {
    fn from(e: std::io::Error) -> Self {
        LoginError::Io(e)
    }
}

/// A connection after login.
pub struct RawConn {
    pub stream: TcpStream,
    /// The backend key the pooler handed out (pid, secret).
    pub key: Option<(i32, i32)>,
    pub auth: AuthKind,
    /// The ParameterStatus values of the login, in order.
    pub params: Vec<(String, String)>,
}

impl RawConn {
    /// The value of a parameter the login reported.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl RawConn {
    /// Connects to 127.0.0.1:`port`, logs in (trust, cleartext, md5 or SCRAM, whatever is asked)
    /// and reads up to the first ReadyForQuery. Reads time out after 10 s.
    pub fn connect(
        port: u16,
        user: &str,
        password: &str,
        database: &str,
    ) -> Result<RawConn, LoginError> {
        RawConn::connect_with(port, user, password, database, &[])
    }

    /// [`RawConn::connect`] with more startup parameters (`client_encoding`, `options` …).
    pub fn connect_with(
        port: u16,
        user: &str,
        password: &str,
        database: &str,
        extra: &[(&str, &str)],
    ) -> Result<RawConn, LoginError> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_nodelay(true)?;
        let mut conn = RawConn {
            stream,
            key: None,
            auth: AuthKind::Trust,
            params: Vec::new(),
        };
        conn.send(&startup_with(user, database, extra))?;
        let mut scram: Option<ScramSha256> = None;
        let mut first_auth = true;
        loop {
            let msg = conn.read_msg()?;
            match msg.tag {
                b'R' => {
                    let code = i32::from_be_bytes(msg.body[..4].try_into().expect("auth code"));
                    let data = &msg.body[4..];
                    match code {
                        0 => {}
                        3 => {
                            conn.auth = AuthKind::Cleartext;
                            conn.send(&password_msg(password.as_bytes()))?;
                        }
                        5 => {
                            conn.auth = AuthKind::Md5;
                            let salt: [u8; 4] = data[..4].try_into().expect("md5 salt");
                            let hash = postgres_protocol::authentication::md5_hash(
                                user.as_bytes(),
                                password.as_bytes(),
                                salt,
                            );
                            conn.send(&password_msg(hash.as_bytes()))?;
                        }
                        10 => {
                            conn.auth = AuthKind::Scram;
                            let mechanisms = String::from_utf8_lossy(data).into_owned();
                            if !mechanisms.split('\0').any(|m| m == "SCRAM-SHA-256") {
                                return Err(LoginError::Protocol(format!(
                                    "SASL mechanisms offered: {mechanisms:?}"
                                )));
                            }
                            let s = ScramSha256::new(
                                password.as_bytes(),
                                ChannelBinding::unsupported(),
                            );
                            conn.send(&sasl_initial(b"SCRAM-SHA-256", s.message()))?;
                            scram = Some(s);
                        }
                        11 => {
                            let s = scram.as_mut().ok_or_else(|| {
                                LoginError::Protocol("SASLContinue before SASL".into())
                            })?;
                            s.update(data)
                                .map_err(|e| LoginError::Protocol(format!("server-first: {e}")))?;
                            conn.send(&sasl_response(s.message()))?;
                        }
                        12 => {
                            let s = scram.as_mut().ok_or_else(|| {
                                LoginError::Protocol("SASLFinal before SASL".into())
                            })?;
                            s.finish(data).map_err(|e| {
                                LoginError::Protocol(format!(
                                    "server-final (server signature): {e}"
                                ))
                            })?;
                        }
                        other => {
                            return Err(LoginError::Protocol(format!(
                                "authentication request {other}"
                            )))
                        }
                    }
                    if first_auth && code == 0 {
                        conn.auth = AuthKind::Trust;
                    }
                    first_auth = false;
                }
                b'K' => {
                    let b = &msg.body;
                    conn.key = Some((
                        i32::from_be_bytes(b[0..4].try_into().expect("pid")),
                        i32::from_be_bytes(b[4..8].try_into().expect("secret")),
                    ));
                }
                b'S' => {
                    let mut parts = msg.body.split(|b| *b == 0);
                    if let (Some(n), Some(v)) = (parts.next(), parts.next()) {
                        conn.params.push((
                            String::from_utf8_lossy(n).into_owned(),
                            String::from_utf8_lossy(v).into_owned(),
                        ));
                    }
                }
                b'N' => {}
                b'E' => {
                    return Err(LoginError::Server {
                        sqlstate: msg.field(b'C').unwrap_or_default(),
                        message: msg.field(b'M').unwrap_or_default(),
                    })
                }
                b'Z' => return Ok(conn),
                other => {
                    return Err(LoginError::Protocol(format!(
                        "unexpected message {:?} during login",
                        other as char
                    )))
                }
            }
        }
    }

    /// Writes all of `bytes` in one write call.
    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads one message (honours the socket's read timeout).
    pub fn read_msg(&mut self) -> std::io::Result<Msg> {
        let mut header = [0u8; 5];
        self.stream.read_exact(&mut header)?;
        let len = i32::from_be_bytes(header[1..5].try_into().expect("len"));
        if !(4..=64 * 1024 * 1024).contains(&len) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("message length {len}"),
            ));
        }
        let mut body = vec![0u8; len as usize - 4];
        self.stream.read_exact(&mut body)?;
        Ok(Msg {
            tag: header[0],
            body,
        })
    }

    /// Reads messages up to and including the next ReadyForQuery.
    pub fn read_until_ready(&mut self) -> std::io::Result<Vec<Msg>> {
        let mut out = Vec::new();
        loop {
            let msg = self.read_msg()?;
            let done = msg.tag == b'Z';
            out.push(msg);
            if done {
                return Ok(out);
            }
        }
    }

    /// Reads until `n` ReadyForQuery messages have arrived (the replies to `n` Syncs).
    pub fn read_syncs(&mut self, n: usize) -> Vec<Msg> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.extend(
                self.read_until_ready()
                    .expect("replies up to ReadyForQuery"),
            );
        }
        out
    }

    /// Sends a simple Query and reads up to ReadyForQuery.
    pub fn simple_query(&mut self, sql: &str) -> std::io::Result<Vec<Msg>> {
        self.send(&query(sql))?;
        self.read_until_ready()
    }

    /// Sets how long a read may block.
    pub fn set_read_timeout(&self, limit: Duration) {
        self.stream
            .set_read_timeout(Some(limit))
            .expect("set_read_timeout");
    }
}

/// The tags of `msgs` as a string, e.g. "12DCZ".
pub fn tags(msgs: &[Msg]) -> String {
    msgs.iter().map(Msg::kind).collect()
}

/// The first column of every DataRow ("" for NULL).
pub fn first_values(msgs: &[Msg]) -> Vec<String> {
    msgs.iter()
        .filter(|m| m.tag == b'D')
        .map(|m| m.row()[0].clone().unwrap_or_default())
        .collect()
}

/// Replies as comparable text: tag, plus the row / command tag / SQLSTATE / status.
/// ParameterStatus and notices are left out (asynchronous, not part of the exchange).
pub fn summary(msgs: &[Msg]) -> String {
    msgs.iter()
        .filter(|m| m.tag != b'S' && m.tag != b'N')
        .map(|m| match m.tag {
            b'D' => format!(
                "D[{}]",
                m.row()
                    .into_iter()
                    .map(|v| v.unwrap_or_else(|| "NULL".into()))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            b'C' => format!("C[{}]", m.command_tag()),
            b'E' => format!("E[{}]", m.sqlstate().unwrap_or_default()),
            b'Z' => format!("Z[{}]", m.body.first().map(|&b| b as char).unwrap_or('?')),
            t => (t as char).to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The tags of `msgs`, with SQLSTATE and message for errors and notices: "E(08P01 …) Z".
pub fn brief(msgs: &[Msg]) -> String {
    msgs.iter()
        .map(|m| match m.tag {
            b'E' | b'N' => format!(
                "{}({} {})",
                m.kind(),
                m.field(b'C').unwrap_or_default(),
                m.field(b'M').unwrap_or_default()
            ),
            _ => m.kind().to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Splits bytes into v3 messages as far as they frame; the rest is returned raw.
pub fn frames(mut bytes: &[u8]) -> (Vec<Msg>, Vec<u8>) {
    let mut out = Vec::new();
    while bytes.len() >= 5 {
        let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        if len < 4 || bytes.len() < 1 + len {
            break;
        }
        out.push(Msg {
            tag: bytes[0],
            body: bytes[5..1 + len].to_vec(),
        });
        bytes = &bytes[1 + len..];
    }
    (out, bytes.to_vec())
}

fn frame(tag: Option<u8>, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    if let Some(tag) = tag {
        out.push(tag);
    }
    out.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn cstr(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

/// StartupMessage (protocol 3.0).
pub fn startup(user: &str, database: &str) -> Vec<u8> {
    startup_with(user, database, &[])
}

/// StartupMessage with more parameters.
pub fn startup_with(user: &str, database: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut body = 196_608i32.to_be_bytes().to_vec();
    let base = [
        ("user", user),
        ("database", database),
        ("application_name", "pgcat-raw-test"),
    ];
    for &(k, v) in base.iter().chain(extra) {
        cstr(&mut body, k);
        cstr(&mut body, v);
    }
    body.push(0);
    frame(None, &body)
}

/// CancelRequest for the backend key (pid, secret).
pub fn cancel_request(pid: i32, secret: i32) -> Vec<u8> {
    let mut body = 80_877_102i32.to_be_bytes().to_vec();
    body.extend_from_slice(&pid.to_be_bytes());
    body.extend_from_slice(&secret.to_be_bytes());
    frame(None, &body)
}

fn password_msg(password: &[u8]) -> Vec<u8> {
    let mut body = password.to_vec();
    body.push(0);
    frame(Some(b'p'), &body)
}

fn sasl_initial(mechanism: &[u8], data: &[u8]) -> Vec<u8> {
    let mut body = mechanism.to_vec();
    body.push(0);
    body.extend_from_slice(&(data.len() as i32).to_be_bytes());
    body.extend_from_slice(data);
    frame(Some(b'p'), &body)
}

fn sasl_response(data: &[u8]) -> Vec<u8> {
    frame(Some(b'p'), data)
}

/// Query (simple protocol).
pub fn query(sql: &str) -> Vec<u8> {
    let mut body = Vec::new();
    cstr(&mut body, sql);
    frame(Some(b'Q'), &body)
}

/// Parse: statement `name` (empty = unnamed), no parameter types given.
pub fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut body = Vec::new();
    cstr(&mut body, name);
    cstr(&mut body, sql);
    body.extend_from_slice(&0i16.to_be_bytes());
    frame(Some(b'P'), &body)
}

/// Bind: text-format parameters and results.
pub fn bind(portal: &str, statement: &str, params: &[Option<&str>]) -> Vec<u8> {
    let mut body = Vec::new();
    cstr(&mut body, portal);
    cstr(&mut body, statement);
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&(params.len() as i16).to_be_bytes());
    for p in params {
        match p {
            Some(v) => {
                body.extend_from_slice(&(v.len() as i32).to_be_bytes());
                body.extend_from_slice(v.as_bytes());
            }
            None => body.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    body.extend_from_slice(&0i16.to_be_bytes());
    frame(Some(b'B'), &body)
}

/// Describe a portal ('P') or statement ('S').
pub fn describe(kind: u8, name: &str) -> Vec<u8> {
    named(b'D', kind, name)
}

/// Close a portal ('P') or statement ('S').
pub fn close(kind: u8, name: &str) -> Vec<u8> {
    named(b'C', kind, name)
}

fn named(tag: u8, kind: u8, name: &str) -> Vec<u8> {
    let mut body = vec![kind];
    cstr(&mut body, name);
    frame(Some(tag), &body)
}

/// Execute a portal, all rows.
pub fn execute(portal: &str) -> Vec<u8> {
    let mut body = Vec::new();
    cstr(&mut body, portal);
    body.extend_from_slice(&0i32.to_be_bytes());
    frame(Some(b'E'), &body)
}

pub fn sync() -> Vec<u8> {
    frame(Some(b'S'), &[])
}

pub fn flush() -> Vec<u8> {
    frame(Some(b'H'), &[])
}

pub fn terminate() -> Vec<u8> {
    frame(Some(b'X'), &[])
}
