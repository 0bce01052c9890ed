//! MD5 password authentication of clients (`auth_type = "md5"`).
//!
//! The client answers the salt with `"md5" + md5(md5(password + user) + salt)`; the pooler
//! computes the same from the configured password and compares in constant time.

use super::{constant_time_eq, AuthError};

/// Checks a client's PasswordMessage payload (without the NUL) for an MD5 challenge.
/// `password` is `None` for an unknown user: the exchange still happens and fails.
pub fn verify(
    user: &str,
    password: Option<&str>,
    salt: [u8; 4],
    response: &[u8],
) -> Result<(), AuthError> {
    let Some(password) = password else {
        return Err(AuthError::Failed);
    };
    let expected =
        postgres_protocol::authentication::md5_hash(user.as_bytes(), password.as_bytes(), salt);
    if constant_time_eq(expected.as_bytes(), response) {
        Ok(())
    } else {
        Err(AuthError::Failed)
    }
}

/// Checks a response against PostgreSQL's stored `md5<hex>` (auth_query users).
pub fn verify_stored(stored: &str, salt: [u8; 4], response: &[u8]) -> Result<(), AuthError> {
    match answer_from_stored(stored, salt) {
        Some(expected) if constant_time_eq(expected.as_bytes(), response) => Ok(()),
        _ => Err(AuthError::Failed),
    }
}

/// The answer to an MD5 challenge from the stored `md5<hex>` (hex of md5(password +
/// user)): `"md5" + md5(hex + salt)`, what libpq computes from the password.
pub fn answer_from_stored(stored: &str, salt: [u8; 4]) -> Option<String> {
    use sha2::Digest;
    let hex = stored.strip_prefix("md5").filter(|h| h.len() == 32)?;
    let mut input = hex.as_bytes().to_vec();
    input.extend_from_slice(&salt);
    let digest = md5::Md5::digest(&input);
    Some(
        std::iter::once("md5".to_string())
            .chain(digest.iter().map(|b| format!("{b:02x}")))
            .collect(),
    )
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
        assert_eq!(verify("bob", Some("secret"), salt, good.as_bytes()), Ok(()));
        assert_eq!(
            verify("bob", Some("other"), salt, good.as_bytes()),
            Err(AuthError::Failed)
        );
        assert_eq!(
            verify("bob", None, salt, good.as_bytes()),
            Err(AuthError::Failed)
        );
    }
}
