//! Opening a server connection: TCP with keepalives, StartupMessage, authentication as the
//! server asks, then ParameterStatus and BackendKeyData until the first ReadyForQuery.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use tokio::net::TcpStream;

use super::{BackendError, ServerConn};
use crate::auth::backend::{Credential, Login, Step};
use crate::net::dns::DnsCache;
use crate::net::tls::ServerTls;
use crate::net::CancelKey;
use crate::net::Stream;
use crate::wire::messages::PgError;

/// Where and as whom to log in.
#[derive(Debug, Clone)]
pub struct ServerTarget {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    /// The password, or what auth_query provides once a client logged in.
    pub secret: Credential,
    /// The startup packet's `options` (`-c name=value …`): settings every session of the
    /// connection starts with (the user's `statement_timeout`).
    pub options: Option<String>,
}

impl ServerTarget {
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Socket options for server connections, and TLS (`server_tls`).
#[derive(Debug, Clone)]
pub struct TcpSettings {
    pub keepalive_idle: Duration,
    pub keepalive_interval: Duration,
    pub keepalive_count: u32,
    pub user_timeout: Duration,
    pub tls: Option<Arc<ServerTls>>,
    /// `dns_cache_enabled`: host names resolved through the cache, not at each connect.
    pub dns: Option<Arc<DnsCache>>,
}

fn tune(stream: &TcpStream, tcp: &TcpSettings) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let sock = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(tcp.keepalive_idle)
        .with_interval(tcp.keepalive_interval)
        .with_retries(tcp.keepalive_count);
    sock.set_tcp_keepalive(&keepalive)?;
    sock.set_tcp_user_timeout((!tcp.user_timeout.is_zero()).then_some(tcp.user_timeout))?;
    Ok(())
}

/// Connects and logs in. The caller bounds the whole with its connect timeout.
pub async fn connect(target: &ServerTarget, tcp: &TcpSettings) -> Result<ServerConn, BackendError> {
    connect_as(target, tcp, None).await
}

/// The application_name of the pooler's own health-check connections, so they are told
/// apart from the pool's in pg_stat_activity.
pub const HEALTHCHECK_APPLICATION_NAME: &str = "pgcat_healthcheck";

/// Connects and logs in, with `application_name` set at startup when given.
pub async fn connect_as(
    target: &ServerTarget,
    tcp: &TcpSettings,
    application_name: Option<&str>,
) -> Result<ServerConn, BackendError> {
    let addr: Arc<str> = target.addr().into();
    let connecting = match &tcp.dns {
        Some(dns) => match dns.resolve(&target.host, target.port).await {
            Ok(addrs) => TcpStream::connect(&addrs[..]).await,
            Err(e) => Err(e),
        },
        None => TcpStream::connect((target.host.as_str(), target.port)).await,
    };
    let stream = connecting.map_err(|source| BackendError::Connect {
        addr: addr.to_string(),
        source,
    })?;
    tune(&stream, tcp).map_err(|source| BackendError::Connect {
        addr: addr.to_string(),
        source,
    })?;
    let stream = match &tcp.tls {
        Some(tls) => tls
            .negotiate(&target.host, stream)
            .await
            .map_err(|source| BackendError::Tls {
                addr: addr.to_string(),
                source,
            })?,
        None => Stream::Tcp(stream),
    };
    let mut conn = ServerConn::new(
        super::ServerIo::new(stream, addr.clone()),
        super::ServerSession::new(addr),
    );
    let options = target.options.as_deref();
    conn.write_all(&startup_message(
        &target.user,
        &target.database,
        [("application_name", application_name), ("options", options)],
    ))
    .await?;
    let mut login = Login::default();
    loop {
        let (tag, body) = conn.read_message().await?;
        match tag {
            b'R' => {
                let step = login
                    .on_request(&body, &target.user, target.secret.get().as_ref())
                    .map_err(|source| BackendError::Auth {
                        addr: conn.session().addr().to_string(),
                        source,
                    })?;
                if let Step::Send(payload) = step {
                    let mut msg = BytesMut::with_capacity(payload.len() + 5);
                    msg.put_u8(b'p');
                    msg.put_u32(payload.len() as u32 + 4);
                    msg.extend_from_slice(&payload);
                    conn.write_all(&msg).await?;
                }
            }
            b'S' => conn.session_mut().note_parameter(&body),
            b'K' if body.len() >= 8 => {
                let key = conn.session_mut().cancel_key_mut();
                key.pid = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                key.secret = body[4..].to_vec();
            }
            b'E' => {
                return Err(BackendError::Login {
                    addr: conn.session().addr().to_string(),
                    error: PgError::from_fields(&body),
                })
            }
            b'Z' => return Ok(conn),
            // NoticeResponse, NegotiateProtocolVersion: nothing to do.
            _ => {}
        }
    }
}

fn startup_message(user: &str, database: &str, optional: [(&str, Option<&str>); 2]) -> BytesMut {
    let mut body = BytesMut::new();
    body.put_i32(crate::wire::startup::PROTOCOL_3_0);
    let given = optional.into_iter().filter_map(|(k, v)| Some((k, v?)));
    for (k, v) in [("user", user), ("database", database)]
        .into_iter()
        .chain(given)
    {
        body.extend_from_slice(k.as_bytes());
        body.put_u8(0);
        body.extend_from_slice(v.as_bytes());
        body.put_u8(0);
    }
    body.put_u8(0);
    let mut msg = BytesMut::with_capacity(body.len() + 4);
    msg.put_u32(body.len() as u32 + 4);
    msg.extend_from_slice(&body);
    msg
}

/// Sends a CancelRequest for the query running on a server connection.
pub async fn cancel(key: &CancelKey) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut stream = TcpStream::connect(&*key.addr).await?;
    let mut msg = BytesMut::with_capacity(16);
    msg.put_u32(12 + key.secret.len() as u32);
    msg.put_i32(80_877_102);
    msg.put_i32(key.pid);
    msg.extend_from_slice(&key.secret);
    stream.write_all(&msg).await?;
    // PostgreSQL closes the connection without a reply; wait for that so the
    // cancel has been handed over before we return.
    let mut sink = [0u8; 1];
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut stream, &mut sink),
    )
    .await;
    Ok(())
}
