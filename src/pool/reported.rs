//! The ParameterStatus values a pool's clients are told: what its servers report at login,
//! and the canonical spelling of a client's own reported parameters (`client_encoding`
//! `utf-8` is reported `UTF8`, `DateStyle` `iso` as `ISO, MDY`), as PostgreSQL itself would
//! report them. Canonical values are learned from a server that applied the client's
//! parameters, once per distinct set, and kept (a bounded cache).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use pgcat_parser::Route;

use super::UserPool;
use crate::wire::messages::PgError;

/// Distinct parameter sets whose canonical values are kept.
const CACHE_LIMIT: usize = 256;

/// A client's reported parameters (lower-case name, value as sent), sorted.
type Key = Vec<(String, String)>;

/// What a server reported for them.
type Canonical = Arc<[(String, String)]>;

/// What a pool learned about the values its servers report.
#[derive(Default)]
pub struct Reported {
    /// What the servers report at login, learned from the first one.
    defaults: tokio::sync::OnceCell<Vec<(String, String)>>,
    /// For a set of client parameters, what a server reported once it applied them.
    canonical: Mutex<HashMap<Key, Canonical>>,
}

impl UserPool {
    /// The ParameterStatus values PostgreSQL sends at login, learned once per pool from a
    /// real server connection.
    pub async fn server_params(&self) -> Result<&[(String, String)], PgError> {
        self.reported
            .defaults
            .get_or_try_init(|| async {
                let conn = self.checkout(Route::default()).await?;
                Ok::<_, PgError>(conn.session().params().to_vec())
            })
            .await
            .map(Vec::as_slice)
    }

    /// The canonical values of the client's parameters that servers report, where the
    /// client sent one that differs from the servers' (None: nothing to say beyond what
    /// the client sent). `application_name` is not looked up: PostgreSQL keeps it as sent
    /// (see the frontend's login).
    pub async fn canonical_params(
        &self,
        client: &[(String, String)],
    ) -> Result<Option<Canonical>, PgError> {
        let defaults = self.server_params().await?;
        let key: Key = client
            .iter()
            .filter(|(name, value)| {
                name != "application_name"
                    && defaults
                        .iter()
                        .any(|(n, v)| n.eq_ignore_ascii_case(name) && v != value)
            })
            .cloned()
            .collect();
        if key.is_empty() {
            return Ok(None);
        }
        if let Some(found) = self.lock_canonical().get(&key) {
            return Ok(Some(found.clone()));
        }
        let mut server = self.checkout(Route::default()).await?;
        server.sync_params(&key).await.map_err(|e| e.to_client())?;
        let learned: Canonical = key
            .iter()
            .filter_map(|(name, _)| {
                server
                    .session()
                    .params()
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(name))
                    .cloned()
            })
            .collect();
        let mut cache = self.lock_canonical();
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(key, learned.clone());
        Ok(Some(learned))
    }

    fn lock_canonical(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Canonical>> {
        self.reported
            .canonical
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}
