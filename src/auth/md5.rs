//! MD5 password authentication of clients (`auth_type = "md5"`).
//!
//! The client answers the salt with `"md5" + md5(md5(password + user) + salt)`; the pooler
//! computes the same from the configured password and compares in constant time.

use super::{constant_time_eq, AuthError};

/// md5(password + user) in hex: what PostgreSQL stores (after `md5`) and what a login's
/// answer is computed from; derived once per user and password, not per login.
pub fn password_hex(user: &str, password: &str) -> [u8; 32] {
    md5_hex(&[password.as_bytes(), user.as_bytes()])
}

/// Checks a client's PasswordMessage payload (without the NUL) for an MD5 challenge
/// against [`password_hex`]. `None` for an unknown user: the exchange still happens and
/// fails.
pub fn verify(hex: Option<&[u8; 32]>, salt: [u8; 4], response: &[u8]) -> Result<(), AuthError> {
    match hex {
        Some(hex) if constant_time_eq(&answer(hex, salt), response) => Ok(()),
        _ => Err(AuthError::Failed),
    }
}

/// Checks a response against PostgreSQL's stored `md5<hex>` (auth_query users).
pub fn verify_stored(stored: &str, salt: [u8; 4], response: &[u8]) -> Result<(), AuthError> {
    verify(stored_hex(stored), salt, response)
}

/// The answer to an MD5 challenge from the stored `md5<hex>` (hex of md5(password +
/// user)): `"md5" + md5(hex + salt)`, what libpq computes from the password.
pub fn answer_from_stored(stored: &str, salt: [u8; 4]) -> Option<String> {
    let answer = answer(stored_hex(stored)?, salt);
    Some(answer.iter().map(|&b| char::from(b)).collect())
}

/// The hex digits of a stored `md5<32 hex digits>`.
fn stored_hex(stored: &str) -> Option<&[u8; 32]> {
    stored.strip_prefix("md5")?.as_bytes().try_into().ok()
}

/// `"md5" + md5(hex + salt)`, where `hex` is md5(password + user) in hex.
fn answer(hex: &[u8], salt: [u8; 4]) -> [u8; 35] {
    let mut out = [0; 35];
    out[..3].copy_from_slice(b"md5");
    out[3..].copy_from_slice(&md5_hex(&[hex, &salt]));
    out
}

/// MD5 of `parts` (concatenated) in lowercase hex, without allocating (a login computes
/// two).
fn md5_hex(parts: &[&[u8]]) -> [u8; 32] {
    use sha2::Digest;
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hasher = md5::Md5::new();
    for part in parts {
        hasher.update(part);
    }
    let mut out = [0; 32];
    for (pair, byte) in out.chunks_exact_mut(2).zip(hasher.finalize()) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 15)];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_hash_answers_like_the_password() {
        let salt = [9, 8, 7, 6];
        // md5_hash(user, password, salt) = "md5" + md5(md5(password + user) hex + salt).
        let hex: String = {
            use sha2::Digest;
            md5::Md5::digest(b"secretbob")
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        };
        let stored = format!("md5{hex}");
        let expected = postgres_protocol::authentication::md5_hash(b"bob", b"secret", salt);
        assert_eq!(
            answer_from_stored(&stored, salt).as_deref(),
            Some(expected.as_str())
        );
        assert_eq!(verify_stored(&stored, salt, expected.as_bytes()), Ok(()));
        assert_eq!(
            verify_stored(&stored, [0; 4], expected.as_bytes()),
            Err(AuthError::Failed)
        );
        assert_eq!(answer_from_stored("SCRAM-SHA-256$x", salt), None);
    }

    #[test]
    fn accepts_the_right_hash_only() {
        let salt = [1, 2, 3, 4];
        let good = postgres_protocol::authentication::md5_hash(b"bob", b"secret", salt);
        let hex = |user, password| Some(password_hex(user, password));
        assert_eq!(
            verify(hex("bob", "secret").as_ref(), salt, good.as_bytes()),
            Ok(())
        );
        assert_eq!(
            verify(hex("bob", "other").as_ref(), salt, good.as_bytes()),
            Err(AuthError::Failed)
        );
        assert_eq!(
            verify(hex("eve", "secret").as_ref(), salt, good.as_bytes()),
            Err(AuthError::Failed)
        );
        assert_eq!(verify(None, salt, good.as_bytes()), Err(AuthError::Failed));
    }
}
