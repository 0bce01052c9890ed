//! Authentication, both directions: clients proving themselves to the pooler (`scram`,
//! `md5`) and the pooler logging in to PostgreSQL (`backend`). Pure logic, no sockets:
//! the frontend and backend modules drive the exchanges over their connections.

pub mod backend;
pub mod md5;
pub mod scram;

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// The proof or hash did not match: the password is wrong (or the user unknown).
    #[error("password authentication failed")]
    Failed,
    /// The client's messages do not follow the mechanism.
    #[error("malformed authentication message: {0}")]
    Malformed(&'static str),
    /// The server asked for something the pooler cannot do.
    #[error("{0}")]
    Unsupported(String),
    /// The server's SCRAM messages did not verify.
    #[error("server authentication failed: {0}")]
    Server(String),
}
