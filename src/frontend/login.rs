//! A client's way in: startup packets (SSL and GSS encryption refused with 'N' until TLS
//! lands, cancel requests forwarded), then authentication as its pool user says (SCRAM,
//! MD5 or trust), then ParameterStatus, BackendKeyData and ReadyForQuery.
//!
//! As in PostgreSQL, an unknown user goes through the same password exchange and fails
//! with 28P01, and an unknown database is reported only after authentication.

use std::sync::Arc;

use bytes::{Buf, BytesMut};
use rand::RngCore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::cancel::Registration;
use super::{params, ClientError};
use crate::app::App;
use crate::auth::{md5, scram, AuthError};
use crate::config::AuthType;
use crate::pool::UserPool;
use crate::stats::ClientInfo;
use crate::wire::frame;
use crate::wire::messages::{self, PgError};
use crate::wire::startup::{self, StartupPacket};

/// PostgreSQL's limit on an authentication message (PG_MAX_AUTH_TOKEN_LENGTH).
const MAX_AUTH_MESSAGE: usize = 65_535;

/// A client that is in: its pool, its parameters, its cancel key.
pub struct Session {
    pub pool: Arc<UserPool>,
    pub params: Vec<(String, String)>,
    /// The parameters the client logged in with (what RESET returns to).
    pub startup_params: Vec<(String, String)>,
    pub registration: Registration,
    pub user: String,
    pub database: String,
    pub application_name: String,
    /// The client's record for SHOW CLIENTS and the pool figures.
    pub info: Arc<ClientInfo>,
}

fn peer(stream: &TcpStream) -> String {
    stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default()
}

/// Who came in.
pub enum Entry {
    /// A client of a pool.
    Pool(Box<Session>),
    /// The operator, on the admin database `pgcat` or `pgbouncer`.
    Admin { database: String, user: String },
}

/// What a user's password is checked against.
struct Credentials<'a> {
    auth_type: AuthType,
    password: Option<&'a str>,
    verifier: Option<scram::Verifier>,
}

/// Runs the startup phase. `Ok(None)` when the connection was a cancel request.
pub async fn login(stream: &mut TcpStream, app: &App) -> Result<Option<Entry>, ClientError> {
    let (minor, startup) = loop {
        match startup::read(stream).await? {
            StartupPacket::Ssl | StartupPacket::GssEnc => stream.write_all(b"N").await?,
            StartupPacket::Cancel { pid, secret } => {
                app.cancels.cancel(pid, &secret).await;
                return Ok(None);
            }
            StartupPacket::Startup { minor, params } => break (minor, params),
        }
    };
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
    let mut out = BytesMut::new();
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
    let mut buf = BytesMut::new();

    if crate::admin::is_admin_database(&database) {
        let config = app.config();
        let general = &config.general;
        let credentials = (user == general.admin_username).then(|| Credentials {
            auth_type: general.admin_auth_type,
            password: Some(general.admin_password.as_str()),
            verifier: (general.admin_auth_type == AuthType::ScramSha256)
                .then(|| scram::Verifier::from_password(&general.admin_password)),
        });
        authenticate(stream, &mut out, &mut buf, app, &user, credentials).await?;
        messages::auth_ok(&mut out);
        crate::admin::greet(&mut out, &database);
        let registration = app.cancels.register();
        messages::backend_key_data(&mut out, registration.pid, registration.secret);
        messages::ready_for_query(&mut out, b'I');
        stream.write_all(&out).await?;
        return Ok(Some(Entry::Admin { database, user }));
    }
    if app.shutting_down() {
        return Err(PgError::fatal("57P03", "the pooler is shutting down").into());
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
    let credentials = pool.clone().or_else(|| pools.any_of_user(&user).cloned());
    let credentials = credentials.as_deref().map(|p| Credentials {
        auth_type: p.auth_type,
        password: p.password.as_deref(),
        verifier: p.verifier.clone(),
    });
    authenticate(stream, &mut out, &mut buf, app, &user, credentials).await?;

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
    let server_params = match pool.server_params().await {
        Ok(p) => p,
        Err(mut e) => {
            e.severity = messages::Severity::Fatal;
            return Err(e.into());
        }
    };
    let application_name = params
        .iter()
        .find(|(n, _)| n == "application_name")
        .map_or_else(String::new, |(_, v)| v.clone());
    for (name, value) in params::reported(server_params, &params) {
        messages::parameter_status(&mut out, &name, &value);
    }
    let registration = app.cancels.register();
    messages::backend_key_data(&mut out, registration.pid, registration.secret);
    messages::ready_for_query(&mut out, b'I');
    stream.write_all(&out).await?;
    let info = app
        .registry
        .client(&database, &user, &application_name, &peer(stream));
    Ok(Some(Entry::Pool(Box::new(Session {
        pool,
        startup_params: params.clone(),
        params,
        registration,
        user,
        database,
        application_name,
        info,
    }))))
}

fn failed(user: &str) -> ClientError {
    PgError::fatal(
        "28P01",
        format!("password authentication failed for user \"{user}\""),
    )
    .into()
}

/// Runs the password exchange the user's auth_type asks for; an unknown user gets a
/// SCRAM exchange that cannot succeed.
async fn authenticate(
    stream: &mut TcpStream,
    out: &mut BytesMut,
    buf: &mut BytesMut,
    app: &App,
    user: &str,
    credentials: Option<Credentials<'_>>,
) -> Result<(), ClientError> {
    let auth_type = credentials
        .as_ref()
        .map_or(AuthType::ScramSha256, |c| c.auth_type);
    match auth_type {
        AuthType::Trust => Ok(()),
        AuthType::Md5 => {
            let mut salt = [0u8; 4];
            rand::rng().fill_bytes(&mut salt);
            messages::auth_md5(out, salt);
            flush(stream, out).await?;
            let response = read_password(stream, buf).await?;
            let response = response.strip_suffix(&[0]).unwrap_or(&response);
            let password = credentials.as_ref().and_then(|c| c.password);
            md5::verify(user, password, salt, response).map_err(|_| failed(user))
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
            let (exchange, server_first) = scram::Exchange::start(client_first, verifier)
                .map_err(|e| PgError::fatal("08P01", e.to_string()))?;
            messages::auth_sasl_continue(out, &server_first);
            flush(stream, out).await?;
            let client_final = read_password(stream, buf).await?;
            match exchange.finish(&client_final) {
                Ok(server_final) => {
                    messages::auth_sasl_final(out, &server_final);
                    Ok(())
                }
                Err(AuthError::Failed) => Err(failed(user)),
                Err(e) => Err(PgError::fatal("08P01", e.to_string()).into()),
            }
        }
    }
}

async fn flush(stream: &mut TcpStream, out: &mut BytesMut) -> std::io::Result<()> {
    stream.write_all(out).await?;
    out.clear();
    Ok(())
}

/// Reads the next PasswordMessage-family ('p') body.
async fn read_password(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<Vec<u8>, ClientError> {
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
