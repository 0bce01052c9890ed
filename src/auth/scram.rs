//! SCRAM-SHA-256 authentication of clients (RFC 5802, RFC 7677), as PostgreSQL does it.
//!
//! The pooler keeps, per user, a verifier in PostgreSQL's own form (salt, iterations,
//! StoredKey, ServerKey), computed once from the configured password, with both keys'
//! HMAC pads hashed once too: a login costs two HMACs over the exchange's messages and a
//! hash, not a PBKDF2 run. Channel binding is not offered (SCRAM-SHA-256-PLUS
//! is not advertised, even over TLS), so a client may send `n` or `y` but never `p`.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::{constant_time_eq, AuthError};

type HmacSha256 = Hmac<Sha256>;

pub(crate) fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// What PostgreSQL stores in `pg_authid.rolpassword` for a SCRAM user.
#[derive(Clone)]
pub struct Verifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
    /// HMAC keyed with each key (its pads hashed): cloned per login.
    stored_mac: HmacSha256,
    server_mac: HmacSha256,
}

impl PartialEq for Verifier {
    fn eq(&self, other: &Verifier) -> bool {
        (
            self.iterations,
            &self.salt,
            self.stored_key,
            self.server_key,
        ) == (
            other.iterations,
            &other.salt,
            other.stored_key,
            other.server_key,
        )
    }
}

impl Eq for Verifier {}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier(<redacted>)")
    }
}

impl Verifier {
    fn new(iterations: u32, salt: Vec<u8>, stored_key: [u8; 32], server_key: [u8; 32]) -> Verifier {
        let keyed =
            |key: &[u8]| HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
        Verifier {
            iterations,
            salt,
            stored_mac: keyed(&stored_key),
            server_mac: keyed(&server_key),
            stored_key,
            server_key,
        }
    }

    /// HMAC of `data` under StoredKey and under ServerKey.
    fn signatures(&self, data: &[u8]) -> ([u8; 32], [u8; 32]) {
        let sign = |mac: &HmacSha256| -> [u8; 32] {
            let mut mac = mac.clone();
            mac.update(data);
            mac.finalize().into_bytes().into()
        };
        (sign(&self.stored_mac), sign(&self.server_mac))
    }

    /// Derives a verifier from a cleartext password with a fresh random salt and
    /// PostgreSQL's default 4096 iterations (SASLprep applied as PostgreSQL does).
    pub fn from_password(password: &str) -> Verifier {
        let stored = postgres_protocol::password::scram_sha_256(password.as_bytes());
        Self::parse(&stored).expect("postgres-protocol writes well-formed verifiers")
    }

    /// Parses `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
    pub fn parse(s: &str) -> Option<Verifier> {
        let rest = s.strip_prefix("SCRAM-SHA-256$")?;
        let (iter_salt, keys) = rest.split_once('$')?;
        let (iterations, salt) = iter_salt.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        Some(Verifier::new(
            iterations.parse().ok()?,
            B64.decode(salt).ok()?,
            B64.decode(stored).ok()?.try_into().ok()?,
            B64.decode(server).ok()?.try_into().ok()?,
        ))
    }

    /// A verifier no password matches, for unknown users: the exchange looks the same as
    /// for a real user (a stable salt per name), so user names cannot be probed.
    pub fn mock(user: &str, process_secret: &[u8; 32]) -> Verifier {
        let salt = hmac(process_secret, user.as_bytes())[..16].to_vec();
        let mut stored_key = [0u8; 32];
        rand::rng().fill_bytes(&mut stored_key);
        Verifier::new(4096, salt, stored_key, [0; 32])
    }
}

/// The server side of one exchange, after the client's first message.
pub struct Exchange {
    verifier: Verifier,
    client_first_bare: String,
    server_first: String,
    gs2_header: String,
    nonce: String,
}

impl Exchange {
    /// Takes the client-first-message, returns the exchange and the server-first-message.
    pub fn start(client_first: &[u8], verifier: Verifier) -> Result<(Exchange, String), AuthError> {
        let msg =
            std::str::from_utf8(client_first).map_err(|_| AuthError::Malformed("not UTF-8"))?;
        let (gs2_flag, rest) = msg
            .split_once(',')
            .ok_or(AuthError::Malformed("no GS2 header"))?;
        match gs2_flag {
            "n" | "y" => {}
            _ if gs2_flag.starts_with("p=") => {
                return Err(AuthError::Malformed(
                    "channel binding requested but not offered by the server",
                ))
            }
            _ => return Err(AuthError::Malformed("bad GS2 channel binding flag")),
        }
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or(AuthError::Malformed("no GS2 header"))?;
        if !authzid.is_empty() {
            return Err(AuthError::Malformed(
                "authorization identities are not supported",
            ));
        }
        // client-first-message-bare: n=<user>,r=<nonce>[,extensions]
        let mut parts = bare.split(',');
        let user = parts.next().ok_or(AuthError::Malformed("no user name"))?;
        if !user.starts_with("n=") {
            return Err(AuthError::Malformed("expected user name attribute"));
        }
        let client_nonce = parts
            .next()
            .and_then(|p| p.strip_prefix("r="))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b','))
            .ok_or(AuthError::Malformed("bad client nonce"))?;
        if parts.next().is_some() {
            return Err(AuthError::Malformed("SCRAM extensions are not supported"));
        }
        let mut server_nonce = [0u8; 18];
        rand::rng().fill_bytes(&mut server_nonce);
        let nonce = format!("{client_nonce}{}", B64.encode(server_nonce));
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&verifier.salt),
            verifier.iterations
        );
        let gs2_header = format!("{gs2_flag},,");
        Ok((
            Exchange {
                verifier,
                client_first_bare: bare.to_string(),
                server_first: server_first.clone(),
                gs2_header,
                nonce,
            },
            server_first,
        ))
    }

    /// Takes the client-final-message; on a valid proof returns the server-final-message
    /// and the ClientKey the proof reveals (what PostgreSQL checks; the pooler logs in
    /// with it for auth_query users, as PgBouncer does).
    pub fn finish(self, client_final: &[u8]) -> Result<(String, [u8; 32]), AuthError> {
        let msg =
            std::str::from_utf8(client_final).map_err(|_| AuthError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = msg
            .rsplit_once(",p=")
            .ok_or(AuthError::Malformed("no proof"))?;
        let mut parts = without_proof.split(',');
        let binding = parts
            .next()
            .and_then(|p| p.strip_prefix("c="))
            .ok_or(AuthError::Malformed("no channel binding attribute"))?;
        if B64.decode(binding).ok().as_deref() != Some(self.gs2_header.as_bytes()) {
            return Err(AuthError::Malformed("channel binding does not match"));
        }
        let nonce = parts
            .next()
            .and_then(|p| p.strip_prefix("r="))
            .ok_or(AuthError::Malformed("no nonce"))?;
        if nonce != self.nonce {
            return Err(AuthError::Malformed("nonce does not match"));
        }
        let proof: [u8; 32] = B64
            .decode(proof)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or(AuthError::Malformed("bad proof"))?;
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let (client_signature, server_signature) =
            self.verifier.signatures(auth_message.as_bytes());
        let mut client_key = [0u8; 32];
        for i in 0..32 {
            client_key[i] = proof[i] ^ client_signature[i];
        }
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        if !constant_time_eq(&stored_key, &self.verifier.stored_key) {
            return Err(AuthError::Failed);
        }
        Ok((format!("v={}", B64.encode(server_signature)), client_key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    fn run(client_password: &str, verifier: Verifier) -> Result<(), AuthError> {
        let mut client =
            ScramSha256::new(client_password.as_bytes(), ChannelBinding::unsupported());
        let (exchange, server_first) = Exchange::start(client.message(), verifier)?;
        client.update(server_first.as_bytes()).unwrap();
        let stored_key = exchange.verifier.stored_key;
        let (server_final, client_key) = exchange.finish(client.message())?;
        client.finish(server_final.as_bytes()).unwrap();
        assert_eq!(<[u8; 32]>::from(Sha256::digest(client_key)), stored_key);
        Ok(())
    }

    #[test]
    fn real_client_logs_in_with_the_right_password_only() {
        let v = Verifier::from_password("pencil");
        assert_eq!(run("pencil", v.clone()), Ok(()));
        assert_eq!(run("pencil2", v), Err(AuthError::Failed));
        assert_eq!(
            run("pencil", Verifier::mock("x", &[7; 32])),
            Err(AuthError::Failed)
        );
    }

    #[test]
    fn mock_salt_is_stable_per_user() {
        assert_eq!(
            Verifier::mock("a", &[1; 32]).salt,
            Verifier::mock("a", &[1; 32]).salt
        );
        assert_ne!(
            Verifier::mock("a", &[1; 32]).salt,
            Verifier::mock("b", &[1; 32]).salt
        );
    }

    #[test]
    fn rejects_channel_binding_and_garbage() {
        let v = Verifier::from_password("x");
        assert!(Exchange::start(b"p=tls-server-end-point,,n=,r=abc", v.clone()).is_err());
        assert!(Exchange::start(b"garbage", v.clone()).is_err());
        assert!(Exchange::start(b"n,,n=,r=", v).is_err());
    }
}
