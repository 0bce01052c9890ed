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

#[cfg(test)]
mod tests {
    use super::*;

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
