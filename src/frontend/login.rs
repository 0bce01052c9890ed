//! A client's way in: startup packets (SSL and GSS encryption refused with 'N' until TLS
//! lands, cancel requests forwarded), then authentication as its pool user says (SCRAM,
//! MD5 or trust), then ParameterStatus, BackendKeyData and ReadyForQuery.
//!
//! As in PostgreSQL, an unknown user goes through the same password exchange and fails
//! with 28P01, and an unknown database is reported only after authentication.

use std::sync::Arc;

use bytes::{Buf, BytesMut};
use pgcat_parser::SessionRouting;
use rand::RngCore;
use tokio::io::AsyncReadExt;
use tokio_rustls::TlsAcceptor;

use super::{params, ClientError, ClientTag};
use crate::app::App;
use crate::auth::backend::ServerSecret;
use crate::auth::{md5, scram, AuthError};
use crate::config::{AuthType, PoolMode};
use crate::net::Stream;
use crate::pool::{Server, TakeError, UserPool};
use crate::stats::ClientInfo;
use crate::wire::frame;
use crate::wire::messages::{self, PgError};
use crate::wire::startup::{self, StartupPacket};

/// PostgreSQL's limit on an authentication message (PG_MAX_AUTH_TOKEN_LENGTH).
const MAX_AUTH_MESSAGE: usize = 65_535;

/// A client that is in: its pool, its parameters, its record.
pub struct Session {
    pub pool: Arc<UserPool>,
    pub params: Vec<(String, String)>,
    /// The parameters the client logged in with (what RESET returns to).
    pub startup_params: Vec<(String, String)>,
    /// The client's record for SHOW CLIENTS and the pool figures; also its user,
    /// database and application name, its cancel key and its server's.
    pub info: Arc<ClientInfo>,
}

/// Who came in. `pending` is what the client sent after its login, to be served first.
pub enum Entry {
    /// A client of a pool.
    Pool {
        session: Box<Session>,
        pending: BytesMut,
        /// Session mode: the server the client is bound to from its login.
        bound: Option<Server>,
    },
    /// The operator, on the admin database `pgcat` or `pgbouncer`.
    Admin {
        database: String,
        user: String,
        pending: BytesMut,
        /// Its record in the registry (SHOW CLIENTS lists the console too, as PgBouncer's
        /// and PgCat's do), for as long as it is connected.
        info: Arc<crate::stats::ClientInfo>,
    },
}

/// What is left in the login's read buffer; an empty one is freed (an idle client holds
/// no buffer).
fn pending(buf: BytesMut) -> BytesMut {
    if buf.is_empty() {
        BytesMut::new()
    } else {
        buf
    }
}

/// What a user's password is checked against.
struct Credentials {
    auth_type: AuthType,
    /// md5(password + user) in hex, for md5.
    md5_hex: Option<[u8; 32]>,
    verifier: Option<scram::Verifier>,
    /// PostgreSQL's stored `md5…` (auth_query), checked instead of `password`.
    md5_stored: Option<String>,
}

/// Runs the startup phase. `Ok(None)` when the connection was a cancel request.
pub async fn login(
    stream: &mut Stream,
    app: &App,
    tag: &ClientTag,
) -> Result<Option<Entry>, ClientError> {
    // What the client sends is read through this buffer from the first packet on; what
    // follows its login stays in it for the session.
    let mut buf = BytesMut::new();
    let (minor, startup) = loop {
        match startup::read(stream, &mut buf).await? {
            StartupPacket::Ssl if stream.is_tls() => {
                return Err(PgError::fatal("08P01", "SSLRequest inside a TLS connection").into())
            }
            // Bytes sent after an SSLRequest and before the answer were not encrypted: they
            // must not be taken as coming through TLS (PostgreSQL refuses them too).
            StartupPacket::Ssl if !buf.is_empty() => {
                return Err(PgError::fatal("08P01", "received unencrypted data after SSL request")
                    .with_hint("Bytes sent before TLS starts cannot be trusted: the client must wait for the answer to its SSLRequest.")
                    .into())
            }
            StartupPacket::Ssl => match app.client_tls().filter(|_| stream.tcp().is_some()) {
                Some(acceptor) => accept_tls(stream, acceptor).await?,
                None => stream.send(b"N").await?,
            },
            StartupPacket::GssEnc => stream.send(b"N").await?,
            StartupPacket::Cancel { pid, secret } => {
                super::cancel::cancel(app, pid, &secret).await;
                return Ok(None);
            }
            StartupPacket::Startup { minor, params } => break (minor, params),
        }
    };
    // A Unix socket cannot carry TLS (PostgreSQL does not offer it there either).
    if app.config().general.tls_client_required && !stream.is_tls() && stream.tcp().is_some() {
        return Err(PgError::fatal(
            "28000",
            "TLS is required for connections to this pooler (tls_client_required = true)",
        )
        .with_hint("Connect with sslmode=require or stronger.")
        .into());
    }
    let get = |key: &str| {
        startup
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let Some(user) = get("user").filter(|u| !u.is_empty()) else {
        return Err(PgError::fatal(
            "28000",
            "no PostgreSQL user name specified in startup packet",
        )
        .into());
    };
    let user = user.to_string();
    let database = get("database")
        .filter(|d| !d.is_empty())
        .unwrap_or(&user)
        .to_string();
    if let Some(r) = get("replication").filter(|r| !matches!(*r, "false" | "off" | "no" | "0")) {
        return Err(PgError::fatal(
            "08P01",
            format!("replication connections (replication={r}) are not supported through the pooler"),
        )
        .with_hint("Connect replication clients (pg_basebackup, pg_receivewal, logical subscribers) to PostgreSQL directly.")
        .into());
    }
    // Room for the whole login reply (authentication, a dozen ParameterStatus, the cancel
    // key, ReadyForQuery) in one allocation.
    let mut out = BytesMut::with_capacity(1024);
    if minor > 0 {
        let unsupported = startup
            .iter()
            .filter(|(k, _)| k.starts_with("_pq_."))
            .map(|(k, _)| k.clone())
            .collect();
        messages::negotiate_protocol_version(&mut out, unsupported);
    }
    let params =
        params::from_startup(&startup).map_err(|reason| PgError::fatal("22023", reason))?;

    if crate::admin::is_admin_database(&database) {
        let config = app.config();
        let general = &config.general;
        let credentials = (user == general.admin_username).then(|| Credentials {
            auth_type: general.admin_auth_type,
            md5_hex: Some(md5::password_hex(&user, &general.admin_password)),
            verifier: (general.admin_auth_type == AuthType::ScramSha256)
                .then(|| app.admin_verifier(&general.admin_password)),
            md5_stored: None,
        });
        authenticate(stream, &mut out, &mut buf, app, &user, credentials).await?;
        messages::auth_ok(&mut out);
        crate::admin::greet(&mut out, &database);
        let info = app.registry.client(
            tag.id,
            database.as_str().into(),
            user.as_str().into(),
            application_name(&params),
            tag.peer,
            None,
        );
        // The admin console runs no query a cancel could stop: its key cancels nothing.
        messages::backend_key_data(&mut out, info.pid, info.secret);
        messages::ready_for_query(&mut out, b'I');
        stream.send(&out).await?;
        return Ok(Some(Entry::Admin {
            database,
            user,
            pending: pending(buf),
            info,
        }));
    }
    if app.shutting_down() {
        return Err(PgError::fatal("57P03", "the pooler is shutting down").into());
    }
    if app.is_disabled(&database) {
        let reason = format!(
            "database \"{database}\" is disabled (admin DISABLE); ENABLE lets clients in again"
        );
        return Err(PgError::fatal("57P03", reason).into());
    }
    if app.too_many_clients() {
        let max = app.config().general.max_client_conn;
        return Err(PgError::fatal(
            "53300",
            format!("sorry, too many clients already (max_client_conn = {max})"),
        )
        .into());
    }

    let pools = app.pools();
    let pool = pools.get(&database, &user).cloned();
    let checked = pool.clone().or_else(|| pools.any_of_user(&user).cloned());
    // auth_query: the stored hash decides the method (a SCRAM secret needs SCRAM).
    let stored = match &checked {
        Some(p) => p.stored_password().await.map_err(|e| {
            // The reason (server address, auth_query_user's login) is for the log only.
            tag.in_scope(|| tracing::warn!(user = %user, error = %e, "auth_query failed"));
            PgError::fatal(
                "08006",
                format!("could not look up user \"{user}\": the pooler's auth_query failed"),
            )
            .with_hint("The pooler's log has the reason.")
        })?,
        None => None,
    };
    let credentials = checked.as_deref().and_then(|p| match stored.as_deref() {
        None if p.auth_query.is_some() => None, // no such role in PostgreSQL
        None => Some(Credentials {
            auth_type: p.auth_type,
            md5_hex: p.md5_hex,
            verifier: p.verifier.clone(),
            md5_stored: None,
        }),
        Some(hash) if hash.starts_with("md5") => Some(Credentials {
            auth_type: AuthType::Md5,
            md5_hex: None,
            verifier: None,
            md5_stored: Some(hash.to_string()),
        }),
        Some(hash) => Some(Credentials {
            auth_type: AuthType::ScramSha256,
            md5_hex: None,
            verifier: scram::Verifier::parse(hash),
            md5_stored: None,
        }),
    });
    match authenticate(stream, &mut out, &mut buf, app, &user, credentials).await {
        Ok(proven) => {
            if let (Some(p), Some(secret)) = (&checked, proven) {
                p.auth_succeeded(secret);
            }
        }
        Err(e) => {
            if let Some(p) = &checked {
                p.auth_failed();
            }
            return Err(e);
        }
    }

    let Some(pool) = pool else {
        return Err(
            PgError::fatal("3D000", format!("database \"{database}\" does not exist"))
                .with_hint(format!(
                    "No pool \"{database}\" for user \"{user}\" is configured in pgcat.toml."
                ))
                .into(),
        );
    };
    messages::auth_ok(&mut out);
    let fatal = |mut e: PgError| {
        e.severity = messages::Severity::Fatal;
        ClientError::from(e)
    };
    let server_params = pool.server_params().await.map_err(fatal)?;
    let bound = bind_session_server(&pool, &params).await.map_err(fatal)?;
    let application_name = application_name(&params);
    match &bound {
        // The server's own values, for the client's parameters it has applied.
        Some(server) => {
            for (name, value) in params::reported(server.session().params(), &[], &[]) {
                messages::parameter_status(&mut out, name, value);
            }
        }
        None => {
            let canonical = pool.canonical_params(&params).await.map_err(fatal)?;
            let canonical = canonical.as_deref().unwrap_or_default();
            for (name, value) in params::reported(server_params, canonical, &params) {
                messages::parameter_status(&mut out, name, value);
            }
        }
    }
    let info = app.registry.client(
        tag.id,
        pool.pool_name.clone(),
        pool.username.clone(),
        application_name,
        tag.peer,
        bound
            .as_ref()
            .map(|server| server.session().cancel_key().pid),
    );
    messages::backend_key_data(&mut out, info.pid, info.secret);
    messages::ready_for_query(&mut out, b'I');
    stream.send(&out).await?;
    Ok(Some(Entry::Pool {
        bound,
        session: Box::new(Session {
            pool,
            startup_params: params.clone(),
            params,
            info,
        }),
        pending: pending(buf),
    }))
}

/// Session mode where no query can change where the session goes (no query parser, no
/// comment hints): the client's server is taken at login, so the client is told that
/// server's real pid (as `pg_backend_pid()`, `pg_terminate_backend()` and notifications
/// name it) and the values it reports for the client's parameters. A connection found
/// dead is replaced, as for a query.
async fn bind_session_server(
    pool: &UserPool,
    params: &[(String, String)],
) -> Result<Option<Server>, PgError> {
    let routing = SessionRouting::default();
    if pool.mode != PoolMode::Session
        || routing.parser_enabled(&pool.router.routing)
        || pool.router.hints.is_enabled()
    {
        return Ok(None);
    }
    let decision = super::request::decide(&super::request::Request::Opaque, &routing, pool)?;
    match pool
        .take_with_params(decision.route, 0, params, |_| {})
        .await
    {
        Ok(server) => Ok(Some(server)),
        Err(TakeError::Checkout(e)) => Err(e),
        Err(TakeError::Params(server, e)) => {
            server.discard();
            Err(e.to_client())
        }
    }
}

fn failed(user: &str) -> ClientError {
    PgError::fatal(
        "28P01",
        format!("password authentication failed for user \"{user}\""),
    )
    .into()
}

/// Answers an SSLRequest with 'S' and runs the TLS handshake on the client's socket.
async fn accept_tls(stream: &mut Stream, acceptor: TlsAcceptor) -> Result<(), ClientError> {
    stream.send(b"S").await?;
    let Stream::Tcp(tcp) = std::mem::replace(stream, Stream::Upgrading) else {
        return Err(PgError::fatal(
            "08P01",
            "TLS requested on a connection that cannot carry it",
        )
        .into());
    };
    let tls = acceptor.accept(tcp).await?;
    *stream = Stream::TlsFromClient(Box::new(tls));
    Ok(())
}

/// Runs the password exchange the user's auth_type asks for; an unknown user gets a
/// SCRAM exchange that cannot succeed. Returns what the exchange proved, for logging in
/// to PostgreSQL as this user without its password (auth_query).
async fn authenticate(
    stream: &mut Stream,
    out: &mut BytesMut,
    buf: &mut BytesMut,
    app: &App,
    user: &str,
    credentials: Option<Credentials>,
) -> Result<Option<ServerSecret>, ClientError> {
    let auth_type = credentials
        .as_ref()
        .map_or(AuthType::ScramSha256, |c| c.auth_type);
    match auth_type {
        AuthType::Trust => Ok(None),
        AuthType::Md5 => {
            let mut salt = [0u8; 4];
            rand::rng().fill_bytes(&mut salt);
            messages::auth_md5(out, salt);
            flush(stream, out).await?;
            let response = read_password(stream, buf).await?;
            let response = response.strip_suffix(&[0]).unwrap_or(&response);
            match credentials.as_ref().and_then(|c| c.md5_stored.clone()) {
                Some(stored) => md5::verify_stored(&stored, salt, response)
                    .map(|()| Some(ServerSecret::Md5Hash(stored)))
                    .map_err(|_| failed(user)),
                None => {
                    let hex = credentials.as_ref().and_then(|c| c.md5_hex.as_ref());
                    md5::verify(hex, salt, response)
                        .map(|()| None)
                        .map_err(|_| failed(user))
                }
            }
        }
        AuthType::ScramSha256 => {
            let verifier = credentials
                .and_then(|c| c.verifier)
                .unwrap_or_else(|| scram::Verifier::mock(user, &app.mock_secret));
            messages::auth_sasl(out);
            flush(stream, out).await?;
            let initial = read_password(stream, buf).await?;
            let client_first =
                sasl_initial(&initial).map_err(|e| PgError::fatal("08P01", e.to_string()))?;
            let (server_key, salt, iterations) = (
                verifier.server_key,
                verifier.salt.clone(),
                verifier.iterations,
            );
            let (exchange, server_first) = scram::Exchange::start(client_first, verifier)
                .map_err(|e| PgError::fatal("08P01", e.to_string()))?;
            messages::auth_sasl_continue(out, &server_first);
            flush(stream, out).await?;
            let client_final = read_password(stream, buf).await?;
            match exchange.finish(&client_final) {
                Ok((server_final, client_key)) => {
                    messages::auth_sasl_final(out, &server_final);
                    Ok(Some(ServerSecret::Scram {
                        client_key,
                        server_key,
                        salt,
                        iterations,
                    }))
                }
                Err(AuthError::Failed) => Err(failed(user)),
                Err(e) => Err(PgError::fatal("08P01", e.to_string()).into()),
            }
        }
    }
}

async fn flush(stream: &mut Stream, out: &mut BytesMut) -> std::io::Result<()> {
    stream.send(out).await?;
    out.clear();
    Ok(())
}

/// Reads the next PasswordMessage-family ('p') body.
async fn read_password(stream: &mut Stream, buf: &mut BytesMut) -> Result<Vec<u8>, ClientError> {
    loop {
        if let Some((tag, body, total)) = frame::whole(buf, MAX_AUTH_MESSAGE)? {
            if tag != b'p' {
                return Err(PgError::fatal(
                    "08P01",
                    format!(
                        "expected a password response, got message type \"{}\"",
                        char::from(tag)
                    ),
                )
                .into());
            }
            let body = body.to_vec();
            buf.advance(total);
            return Ok(body);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(ClientError::Gone);
        }
    }
}

/// Splits a SASLInitialResponse: mechanism name, then the length-prefixed client data.
fn sasl_initial(body: &[u8]) -> Result<&[u8], AuthError> {
    let (mechanism, rest) =
        startup::cstr(body).map_err(|_| AuthError::Malformed("no mechanism name"))?;
    if mechanism != "SCRAM-SHA-256" {
        return Err(AuthError::Malformed(
            "client selected an invalid SASL authentication mechanism",
        ));
    }
    let len = rest
        .get(..4)
        .ok_or(AuthError::Malformed("no data length"))?;
    let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
    let data = &rest[4..];
    if usize::try_from(len).ok() != Some(data.len()) {
        return Err(AuthError::Malformed("data length does not match"));
    }
    Ok(data)
}

/// The client's `application_name` startup parameter (empty when it sent none).
fn application_name(params: &[(String, String)]) -> Box<str> {
    params
        .iter()
        .find(|(n, _)| n == "application_name")
        .map_or_else(Box::default, |(_, v)| v.as_str().into())
}
