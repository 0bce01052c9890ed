//! One connection from the pooler to a PostgreSQL server: connect, startup, login,
//! the parameters the server reported, small queries the pooler runs itself (parameter
//! sync, reset, rollback), and the liveness check used before reuse. The relay moves client
//! traffic through its byte side ([`ServerIo`]) and records what passes in its session
//! ([`ServerSession`]); what the client's bytes mean is the frontend's business. A
//! connection may have mirrors (`mirror`), which get a copy of everything sent to it.

mod conn;
mod connect;
mod io;
mod mirror;
mod session;
pub mod statements;

use crate::wire::messages::PgError;

pub use conn::ServerConn;
pub use io::ServerIo;
pub use mirror::{Mirror, MirrorReport, MirrorTarget};
pub use session::{ServerSession, ServerStats};

pub use connect::{
    cancel, connect, connect_as, ServerTarget, TcpSettings, HEALTHCHECK_APPLICATION_NAME,
};

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("could not connect to server {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("TLS with server {addr} failed: {source}")]
    Tls {
        addr: String,
        source: std::io::Error,
    },
    #[error("connection to server {addr} lost: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    #[error("server {addr} closed the connection")]
    Closed { addr: String },
    #[error("server {addr} sent a malformed message: {reason}")]
    Protocol { addr: String, reason: String },
    #[error("server {addr} refused the login: {error}")]
    Login { addr: String, error: PgError },
    #[error("authentication with server {addr} failed: {source}")]
    Auth {
        addr: String,
        source: crate::auth::AuthError,
    },
    #[error("server {addr} was banned ({reason})")]
    Banned { addr: String, reason: String },
    #[error("server {addr} reported: {error}")]
    Query { addr: String, error: PgError },
    /// The server ended the connection with this FATAL (an administrator's
    /// pg_terminate_backend, a shutdown), kept as it was sent.
    #[error("server {addr} ended the connection: {error}")]
    Terminated {
        addr: String,
        error: crate::wire::messages::ServerError,
    },
}

impl BackendError {
    /// The error a client sees for this failure.
    pub fn to_client(&self) -> PgError {
        match self {
            BackendError::Login { error, .. } | BackendError::Query { error, .. } => {
                let mut e = error.clone();
                e.severity = crate::wire::messages::Severity::Error;
                e
            }
            BackendError::Auth { .. } => PgError::error("28000", self.to_string()),
            BackendError::Terminated { error, .. } => {
                let mut e = error.fields();
                e.severity = crate::wire::messages::Severity::Error;
                e
            }
            _ => PgError::error("08006", self.to_string()),
        }
    }

    /// The connection itself is gone (closed, broken, or ended by a FATAL), as opposed to
    /// a statement that failed on a connection that lives on.
    pub fn lost_connection(&self) -> bool {
        match self {
            BackendError::Io { .. } | BackendError::Closed { .. } => true,
            BackendError::Terminated { .. } | BackendError::Protocol { .. } => true,
            BackendError::Query { error, .. } => {
                error.severity == crate::wire::messages::Severity::Fatal
            }
            _ => false,
        }
    }
}

/// Session state a server picked up that must be undone before another client uses it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dirty {
    /// Parameters changed (SET, set_config, RESET): `RESET ALL`.
    pub settings: bool,
    /// SQL-level or client-named prepared statements: `DEALLOCATE ALL`.
    pub prepared: bool,
    /// `LISTEN`: `UNLISTEN *`.
    pub listen: bool,
    /// Session advisory locks: `pg_advisory_unlock_all()`.
    pub advisory: bool,
    /// Temporary tables: `DISCARD TEMP`.
    pub temp: bool,
    /// Held cursors: `CLOSE ALL`.
    pub cursors: bool,
    /// Anything else, or unknown: `DISCARD ALL`.
    pub everything: bool,
}

impl Dirty {
    pub fn any(&self) -> bool {
        *self != Dirty::default()
    }

    /// Everything must go: session mode check-in, or state the pooler cannot name.
    pub fn all() -> Dirty {
        Dirty {
            everything: true,
            ..Dirty::default()
        }
    }
}

/// Quotes an SQL identifier.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quotes an SQL string literal (standard_conforming_strings on, as the pooler's own
/// queries run with server defaults; an E'' literal would also be safe either way).
pub fn quote_literal(s: &str) -> String {
    format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_escapes_everything() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's \\ x"), "E'it''s \\\\ x'");
    }
}
