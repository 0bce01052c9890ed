//! The pooler logging in to PostgreSQL: answers AuthenticationRequest messages with
//! cleartext, MD5 or SCRAM-SHA-256, as the server asks (postgres-protocol does the
//! cryptography). Produces the body of each PasswordMessage to send; no I/O.

use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};

use super::AuthError;

/// What to do after an authentication request from the server.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Authentication succeeded.
    Done,
    /// Send a PasswordMessage ('p') with this body.
    Send(Vec<u8>),
    /// Nothing to send (SASLFinal verified); wait for AuthenticationOk.
    Wait,
}

/// State of one login.
#[derive(Default)]
pub struct Login {
    scram: Option<ScramSha256>,
}

impl Login {
    /// Handles the body of an 'R' message from the server.
    pub fn on_request(
        &mut self,
        body: &[u8],
        user: &str,
        password: Option<&str>,
    ) -> Result<Step, AuthError> {
        if body.len() < 4 {
            return Err(AuthError::Server("short authentication request".into()));
        }
        let code = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
        let data = &body[4..];
        let need_password = || {
            password.ok_or_else(|| {
                AuthError::Unsupported(format!(
                    "the server asks a password for user \"{user}\" and none is configured (set password or server_password)"
                ))
            })
        };
        match code {
            0 => Ok(Step::Done),
            3 => {
                let mut msg = need_password()?.as_bytes().to_vec();
                msg.push(0);
                Ok(Step::Send(msg))
            }
            5 => {
                let salt: [u8; 4] = data
                    .get(..4)
                    .and_then(|s| s.try_into().ok())
                    .ok_or_else(|| AuthError::Server("short MD5 salt".into()))?;
                let mut msg = md5_hash(user.as_bytes(), need_password()?.as_bytes(), salt).into_bytes();
                msg.push(0);
                Ok(Step::Send(msg))
            }
            10 => {
                let offers_scram = data
                    .split(|b| *b == 0)
                    .any(|m| m == SCRAM_SHA_256.as_bytes());
                if !offers_scram {
                    return Err(AuthError::Unsupported(
                        "the server offers no SASL mechanism the pooler supports".into(),
                    ));
                }
                let scram = ScramSha256::new(need_password()?.as_bytes(), ChannelBinding::unsupported());
                let first = scram.message();
                let mut msg = SCRAM_SHA_256.as_bytes().to_vec();
                msg.push(0);
                msg.extend_from_slice(&(first.len() as i32).to_be_bytes());
                msg.extend_from_slice(first);
                self.scram = Some(scram);
                Ok(Step::Send(msg))
            }
            11 => {
                let scram = self
                    .scram
                    .as_mut()
                    .ok_or_else(|| AuthError::Server("SASLContinue before SASL".into()))?;
                scram.update(data).map_err(|e| AuthError::Server(e.to_string()))?;
                Ok(Step::Send(scram.message().to_vec()))
            }
            12 => {
                let scram = self
                    .scram
                    .as_mut()
                    .ok_or_else(|| AuthError::Server("SASLFinal before SASL".into()))?;
                scram.finish(data).map_err(|e| AuthError::Server(e.to_string()))?;
                Ok(Step::Wait)
            }
            other => Err(AuthError::Unsupported(format!(
                "the server asks for authentication method {other}, which the pooler does not support"
            ))),
        }
    }
}
