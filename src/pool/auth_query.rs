//! `auth_query`: a user without a password in the config has its stored hash fetched from
//! the server, cached until a login fails with it (password rotation).

use super::*;

/// How old an auth_query result must be before a failed login fetches it again.
pub(super) const AUTH_QUERY_REFRESH: Duration = Duration::from_secs(2);

/// `auth_query`, `auth_query_user`, `auth_query_password` of a pool.
#[derive(Clone, Debug)]
pub struct AuthQuery {
    /// The query, with `$1` for the user name.
    pub query: String,
    pub user: String,
    pub password: String,
}

impl AuthQuery {
    /// Where and how to log in as auth_query_user (the lookup, and health checks of users
    /// without a password).
    pub(super) fn login_at(&self, host: &str, port: u16, database: &str) -> ServerTarget {
        ServerTarget {
            host: host.to_string(),
            port,
            database: database.to_string(),
            user: self.user.clone(),
            secret: Credential::fixed(Some(ServerSecret::Password(self.password.clone()))),
            options: None,
        }
    }
}

impl UserPool {
    /// The user's stored password (`md5…` or `SCRAM-SHA-256$…`) from `auth_query`, run
    /// as auth_query_user on the first shard (its primary if it has one). Cached until
    /// [`UserPool::auth_failed`]. `Ok(None)`: no auth_query, or no such role.
    pub async fn stored_password(&self) -> Result<Option<String>, BackendError> {
        let Some(aq) = &self.auth_query else {
            return Ok(None);
        };
        if let Some((hash, _)) = self.stored_lock().clone() {
            return Ok(hash);
        }
        let shard = self.shards.first().map(Vec::as_slice).unwrap_or_default();
        let Some(address) = shard
            .iter()
            .find(|a| a.role == Role::Primary)
            .or(shard.first())
        else {
            return Ok(None);
        };
        let target = aq.login_at(&address.host, address.port, &address.database);
        let fetch = async {
            let mut conn = backend::connect(&target, &self.tcp).await?;
            conn.query_row_with(&aq.query, &self.username).await
        };
        let row = tokio::time::timeout(self.connect_timeout, fetch)
            .await
            .map_err(|_| BackendError::Connect {
                addr: target.addr(),
                source: std::io::ErrorKind::TimedOut.into(),
            })??;
        // PgCat's query returns (usename, passwd); a one-column query, the hash.
        let hash = row.get(1).or(row.first()).cloned().flatten();
        *self.stored_lock() = Some((hash.clone(), std::time::Instant::now()));
        Ok(hash)
    }

    /// A client logged in with the stored password: server connections log in with
    /// what that proved (the MD5 hash, or the SCRAM ClientKey).
    pub fn auth_succeeded(&self, secret: ServerSecret) {
        if self.auth_query.is_some() && self.server_secret.get().as_ref() != Some(&secret) {
            self.server_secret.set(secret);
        }
    }

    /// A login failed: the next one fetches the stored password again, in case it was
    /// changed in PostgreSQL; at most once per `AUTH_QUERY_REFRESH`, so a stream of wrong
    /// passwords does not become a stream of connections to PostgreSQL.
    pub fn auth_failed(&self) {
        let mut stored = self.stored_lock();
        if stored
            .as_ref()
            .is_some_and(|(_, at)| at.elapsed() >= AUTH_QUERY_REFRESH)
        {
            *stored = None;
        }
    }

    fn stored_lock(
        &self,
    ) -> std::sync::MutexGuard<'_, Option<(Option<String>, std::time::Instant)>> {
        self.stored_password
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}
