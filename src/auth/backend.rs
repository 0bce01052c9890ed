//! The pooler logging in to PostgreSQL: answers AuthenticationRequest messages with
//! cleartext, MD5 or SCRAM-SHA-256, as the server asks. With a configured password
//! postgres-protocol does the cryptography; with what `auth_query` provides (a stored MD5
//! hash, or the SCRAM keys recovered from a client's proof) the pooler answers from those,
//! never knowing the password. Produces the body of each PasswordMessage to send; no I/O.

use std::sync::{Arc, RwLock};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::scram::hmac;
use super::{constant_time_eq, AuthError};

/// What the pooler proves itself with to PostgreSQL.
#[derive(Clone, PartialEq, Eq)]
pub enum ServerSecret {
    Password(String),
    /// PostgreSQL's stored `md5<hex>` (auth_query): enough to answer an MD5 challenge.
    Md5Hash(String),
    /// SCRAM keys (auth_query): the ClientKey recovered from a client's proof, and the
    /// stored ServerKey, salt and iteration count.
    Scram {
        client_key: [u8; 32],
        server_key: [u8; 32],
        salt: Vec<u8>,
        iterations: u32,
    },
}

impl std::fmt::Debug for ServerSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ServerSecret::Password(_) => "Password(<redacted>)",
            ServerSecret::Md5Hash(_) => "Md5Hash(<redacted>)",
            ServerSecret::Scram { .. } => "Scram(<redacted>)",
        })
    }
}

/// The secret of a pool user, shared by its connection factories: fixed for a configured
/// password, filled in at the first successful client login for `auth_query` users.
#[derive(Clone, Debug, Default)]
pub struct Credential(Arc<RwLock<Option<ServerSecret>>>);

impl Credential {
    pub fn fixed(secret: Option<ServerSecret>) -> Credential {
        Credential(Arc::new(RwLock::new(secret)))
    }

    pub fn get(&self) -> Option<ServerSecret> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set(&self, secret: ServerSecret) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Some(secret);
    }
}

/// A SCRAM exchange from keys rather than a password.
struct KeyedScram {
    client_key: [u8; 32],
    server_key: [u8; 32],
    salt: Vec<u8>,
    iterations: u32,
    client_first_bare: String,
    nonce: String,
    /// The AuthMessage, once the proof is sent: the server's signature is over it.
    auth_message: Option<String>,
}

impl KeyedScram {
    fn client_first(&self) -> String {
        format!("n,,{}", self.client_first_bare)
    }

    /// Answers the server-first-message with the proof.
    fn on_server_first(&mut self, data: &[u8]) -> Result<String, AuthError> {
        let bad = |what: &str| AuthError::Server(format!("bad SCRAM server-first-message: {what}"));
        let msg = std::str::from_utf8(data).map_err(|_| bad("not UTF-8"))?;
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for part in msg.split(',') {
            match part.split_at_checked(2) {
                Some(("r=", v)) => nonce = Some(v),
                Some(("s=", v)) => salt = B64.decode(v).ok(),
                Some(("i=", v)) => iterations = v.parse::<u32>().ok(),
                _ => {}
            }
        }
        let nonce = nonce.ok_or_else(|| bad("no nonce"))?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(bad("nonce does not extend the pooler's"));
        }
        if salt.as_deref() != Some(&self.salt[..]) || iterations != Some(self.iterations) {
            return Err(AuthError::Server(
                "the role's SCRAM secret changed since the client logged in (password rotated?); the next client login refreshes it".into(),
            ));
        }
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{msg},{without_proof}", self.client_first_bare);
        let stored_key: [u8; 32] = Sha256::digest(self.client_key).into();
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = self
            .client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        self.auth_message = Some(auth_message);
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Checks the server-final-message: the server knew the ServerKey.
    fn on_server_final(&self, data: &[u8]) -> Result<(), AuthError> {
        let auth_message = self
            .auth_message
            .as_ref()
            .ok_or_else(|| AuthError::Server("SASLFinal before the proof".into()))?;
        let expected = hmac(&self.server_key, auth_message.as_bytes());
        let got = std::str::from_utf8(data)
            .ok()
            .and_then(|m| m.strip_prefix("v="))
            .and_then(|v| B64.decode(v).ok())
            .ok_or_else(|| AuthError::Server("bad SCRAM server-final-message".into()))?;
        if constant_time_eq(&got, &expected) {
            Ok(())
        } else {
            Err(AuthError::Server(
                "the server's SCRAM signature does not verify".into(),
            ))
        }
    }
}

enum Scram {
    Password(ScramSha256),
    Keys(Box<KeyedScram>),
}

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
    scram: Option<Scram>,
}

impl Login {
    /// Handles the body of an 'R' message from the server.
    pub fn on_request(
        &mut self,
        body: &[u8],
        user: &str,
        secret: Option<&ServerSecret>,
    ) -> Result<Step, AuthError> {
        if body.len() < 4 {
            return Err(AuthError::Server("short authentication request".into()));
        }
        let code = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
        let data = &body[4..];
        let missing = || {
            AuthError::Unsupported(format!(
                "the server asks a password for user \"{user}\" and none is configured (set password or server_password; with auth_query, a client of this user must log in first)"
            ))
        };
        let secret = secret.ok_or_else(missing);
        let need_password = || match secret {
            Ok(ServerSecret::Password(p)) => Ok(p.as_str()),
            _ => Err(missing()),
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
                let mut msg = match secret? {
                    ServerSecret::Password(p) => md5_hash(user.as_bytes(), p.as_bytes(), salt),
                    ServerSecret::Md5Hash(stored) => super::md5::answer_from_stored(stored, salt).ok_or_else(|| {
                        AuthError::Unsupported("the stored MD5 hash is not md5 + 32 hex digits".into())
                    })?,
                    ServerSecret::Scram { .. } => {
                        return Err(AuthError::Unsupported(format!(
                            "the server asks MD5 for user \"{user}\" but its stored password is SCRAM"
                        )))
                    }
                }
                .into_bytes();
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
                let scram = match secret? {
                    ServerSecret::Password(p) => Scram::Password(ScramSha256::new(p.as_bytes(), ChannelBinding::unsupported())),
                    ServerSecret::Scram { client_key, server_key, salt, iterations } => {
                        let mut nonce = [0u8; 18];
                        rand::rng().fill_bytes(&mut nonce);
                        let nonce = B64.encode(nonce);
                        Scram::Keys(Box::new(KeyedScram {
                            client_key: *client_key,
                            server_key: *server_key,
                            salt: salt.clone(),
                            iterations: *iterations,
                            client_first_bare: format!("n=,r={nonce}"),
                            nonce,
                            auth_message: None,
                        }))
                    }
                    ServerSecret::Md5Hash(_) => {
                        return Err(AuthError::Unsupported(format!(
                            "the server asks SCRAM for user \"{user}\" but only its MD5 hash is known (auth_query)"
                        )))
                    }
                };
                let first = match &scram {
                    Scram::Password(s) => s.message().to_vec(),
                    Scram::Keys(k) => k.client_first().into_bytes(),
                };
                let mut msg = SCRAM_SHA_256.as_bytes().to_vec();
                msg.push(0);
                msg.extend_from_slice(&(first.len() as i32).to_be_bytes());
                msg.extend_from_slice(&first);
                self.scram = Some(scram);
                Ok(Step::Send(msg))
            }
            11 => {
                let scram = self
                    .scram
                    .as_mut()
                    .ok_or_else(|| AuthError::Server("SASLContinue before SASL".into()))?;
                match scram {
                    Scram::Password(s) => {
                        s.update(data).map_err(|e| AuthError::Server(e.to_string()))?;
                        Ok(Step::Send(s.message().to_vec()))
                    }
                    Scram::Keys(k) => Ok(Step::Send(k.on_server_first(data)?.into_bytes())),
                }
            }
            12 => {
                let scram = self
                    .scram
                    .as_mut()
                    .ok_or_else(|| AuthError::Server("SASLFinal before SASL".into()))?;
                match scram {
                    Scram::Password(s) => s.finish(data).map_err(|e| AuthError::Server(e.to_string()))?,
                    Scram::Keys(k) => k.on_server_final(data)?,
                }
                Ok(Step::Wait)
            }
            other => Err(AuthError::Unsupported(format!(
                "the server asks for authentication method {other}, which the pooler does not support"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::scram::{Exchange, Verifier};

    fn request(code: i32, data: &[u8]) -> Vec<u8> {
        let mut body = code.to_be_bytes().to_vec();
        body.extend_from_slice(data);
        body
    }

    /// The pooler logs in with the ClientKey a client's proof revealed, against the same
    /// server-side exchange PostgreSQL runs.
    fn key_login(client_key: [u8; 32], verifier: &Verifier) -> Result<(), AuthError> {
        let secret = ServerSecret::Scram {
            client_key,
            server_key: verifier.server_key,
            salt: verifier.salt.clone(),
            iterations: verifier.iterations,
        };
        let mut login = Login::default();
        let Step::Send(initial) =
            login.on_request(&request(10, b"SCRAM-SHA-256\0\0"), "u", Some(&secret))?
        else {
            panic!("no client-first-message");
        };
        let client_first = &initial["SCRAM-SHA-256\0".len() + 4..];
        let (server, server_first) = Exchange::start(client_first, verifier.clone())?;
        let Step::Send(client_final) =
            login.on_request(&request(11, server_first.as_bytes()), "u", Some(&secret))?
        else {
            panic!("no client-final-message");
        };
        let (server_final, _) = server.finish(&client_final)?;
        assert_eq!(
            login.on_request(&request(12, server_final.as_bytes()), "u", Some(&secret))?,
            Step::Wait
        );
        Ok(())
    }

    #[test]
    fn logs_in_with_the_client_key_a_client_proof_revealed() {
        let verifier = Verifier::from_password("pencil");
        let mut client = ScramSha256::new(b"pencil", ChannelBinding::unsupported());
        let (exchange, first) = Exchange::start(client.message(), verifier.clone()).unwrap();
        client.update(first.as_bytes()).unwrap();
        let (_, client_key) = exchange.finish(client.message()).unwrap();
        assert_eq!(key_login(client_key, &verifier), Ok(()));
        assert_eq!(key_login([7; 32], &verifier), Err(AuthError::Failed));
    }

    #[test]
    fn answers_md5_from_the_stored_hash() {
        let hex: String = md5::Md5::digest(b"secretbob")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let secret = ServerSecret::Md5Hash(format!("md5{hex}"));
        let mut login = Login::default();
        let step = login
            .on_request(&request(5, &[1, 2, 3, 4]), "bob", Some(&secret))
            .unwrap();
        let mut expected = md5_hash(b"bob", b"secret", [1, 2, 3, 4]).into_bytes();
        expected.push(0);
        assert_eq!(step, Step::Send(expected));
    }
}
