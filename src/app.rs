//! The shared state every client task sees: the configuration and pools in force (swapped
//! by live reload), cancel keys and statistics (the registry), server health, the client
//! count and the shutdown signal. The process around it (listeners, signals, periodic
//! tasks) is `runtime`.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use rand::RngCore;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::auth::scram::Verifier;
use crate::config::{self, Config};
use crate::net::dns::DnsCache;
use crate::net::tls;
use crate::pool::health::HealthMap;
use crate::pool::Pools;
use crate::stats;
use crate::twophase::TwoPhase;

/// What every client task shares.
pub struct App {
    config: RwLock<Arc<Config>>,
    pools: RwLock<Arc<Pools>>,
    /// Per-process secret behind the fake SCRAM salts of unknown users.
    pub mock_secret: [u8; 32],
    /// The admin user's SCRAM verifier and the `admin_password` it was derived from: one
    /// PBKDF2 run per password, not per admin login.
    admin_verifier: Mutex<Option<(String, Verifier)>>,
    /// Every client and server connection, for SHOW CLIENTS/SERVERS and cl_*/sv_* figures.
    pub registry: Arc<stats::Registry>,
    /// Health and bans of every server address.
    pub healths: HealthMap,
    /// Server host names resolved (`dns_cache_enabled`), re-resolved by the runtime.
    pub dns: Arc<DnsCache>,
    /// Set once a graceful shutdown has begun.
    shutdown: watch::Sender<bool>,
    /// Client connections open now (max_client_conn).
    connections: Arc<AtomicUsize>,
    /// TLS for clients (`tls_certificate`, `tls_private_key`), rebuilt on reload.
    client_tls: RwLock<Option<TlsAcceptor>>,
    /// The two-phase commit coordinator, once a pool has `two_phase_commit` (its
    /// decision log stays open for the life of the process).
    two_phase: RwLock<Option<Arc<TwoPhase>>>,
    /// Client ids, unique across listeners and clients handed over.
    client_ids: AtomicU64,
    /// During an online upgrade: where idle clients go (their socket and state), to the
    /// new process.
    handover: Mutex<Option<std::sync::mpsc::Sender<Handoff>>>,
    handing_over: AtomicBool,
    /// Clients leaving for the new process whose socket and state are not written to it
    /// yet (they are no longer in the registry): the process waits for them before exiting.
    handoffs_in_flight: AtomicU64,
    /// After an online upgrade, while the previous process still serves clients: where
    /// cancel requests for keys unknown here go.
    previous: Mutex<Option<std::os::unix::net::UnixStream>>,
    /// Clients taken over from a previous process (online upgrades).
    pub clients_taken_over: AtomicU64,
    /// Logins to the admin console (logged at DEBUG: exporters log in every scrape).
    pub admin_logins: AtomicU64,
    /// Databases whose new clients are refused (admin DISABLE), and SUSPEND in force.
    disabled: Mutex<std::collections::BTreeSet<String>>,
    pub suspended: AtomicBool,
}

/// A client on its way to another process: its socket and its state.
pub type Handoff = (std::os::fd::OwnedFd, Vec<u8>);

/// Counts a client connection while it lives.
pub struct Connection(Arc<AtomicUsize>);

impl Drop for Connection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl App {
    pub fn new(config: Config) -> std::io::Result<App> {
        let registry = Arc::new(stats::Registry::default());
        registry.set_peer_id(config.general.peer_id.unwrap_or(0));
        let healths = HealthMap::default();
        let dns = Arc::new(DnsCache::default());
        let pools = Pools::build(&config, None, &registry, &healths, &dns)
            .map_err(std::io::Error::other)?;
        let client_tls = client_tls(&config).map_err(std::io::Error::other)?;
        let mut mock_secret = [0u8; 32];
        rand::rng().fill_bytes(&mut mock_secret);
        let two_phase = two_phase(&config, None).map_err(std::io::Error::other)?;
        Ok(App {
            two_phase: RwLock::new(two_phase),
            client_tls: RwLock::new(client_tls),
            config: RwLock::new(Arc::new(config)),
            pools: RwLock::new(Arc::new(pools)),
            mock_secret,
            admin_verifier: Mutex::new(None),
            registry,
            healths,
            dns,
            shutdown: watch::channel(false).0,
            connections: Arc::default(),
            client_ids: AtomicU64::new(1),
            handover: Mutex::new(None),
            handing_over: AtomicBool::new(false),
            handoffs_in_flight: AtomicU64::new(0),
            previous: Mutex::new(None),
            clients_taken_over: AtomicU64::new(0),
            admin_logins: AtomicU64::new(0),
            disabled: Mutex::default(),
            suspended: AtomicBool::new(false),
        })
    }

    /// Counts a new client connection; see [`App::too_many_clients`].
    pub fn connection(&self) -> Connection {
        self.connections.fetch_add(1, Ordering::Relaxed);
        Connection(self.connections.clone())
    }

    /// Admin DISABLE (`true`) or ENABLE of new clients of `database`.
    pub fn set_disabled(&self, database: &str, disabled: bool) {
        let mut set = self.disabled.lock().unwrap_or_else(|p| p.into_inner());
        if disabled {
            set.insert(database.to_string());
        } else {
            set.remove(database);
        }
    }

    /// New clients of `database` are refused (admin DISABLE).
    pub fn is_disabled(&self, database: &str) -> bool {
        let set = self.disabled.lock().unwrap_or_else(|p| p.into_inner());
        !set.is_empty() && set.contains(database)
    }

    /// A new client's id.
    pub fn next_client_id(&self) -> u64 {
        self.client_ids.fetch_add(1, Ordering::Relaxed)
    }

    /// From now on idle clients are handed to `to` (an online upgrade).
    pub fn begin_handover(&self, to: std::sync::mpsc::Sender<Handoff>) {
        *self.handover.lock().unwrap_or_else(|p| p.into_inner()) = Some(to);
        self.handing_over.store(true, Ordering::Relaxed);
        self.registry
            .interrupt(stats::Interrupt::HANDOVER, |_| true);
    }

    /// An upgrade is handing clients over.
    pub fn handing_over(&self) -> bool {
        self.handing_over.load(Ordering::Relaxed)
    }

    /// A client starts leaving for the new process (before it leaves the registry); each
    /// is ended by [`App::handoff_done`] once it is written to the new process or stays.
    pub fn handoff_begins(&self) {
        self.handoffs_in_flight.fetch_add(1, Ordering::SeqCst);
    }

    pub fn handoff_done(&self) {
        self.handoffs_in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    /// Clients between [`App::handoff_begins`] and [`App::handoff_done`].
    pub fn handoffs_in_flight(&self) -> u64 {
        self.handoffs_in_flight.load(Ordering::SeqCst)
    }

    /// Sends a client to the new process; given back when no upgrade takes it.
    pub fn hand_over(&self, client: Handoff) -> Result<(), Handoff> {
        match &*self.handover.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(to) => to.send(client).map_err(|e| e.0),
            None => Err(client),
        }
    }

    /// The previous process of an online upgrade still serves clients (`None`: no longer).
    pub fn set_previous(&self, channel: Option<std::os::unix::net::UnixStream>) {
        *self.previous.lock().unwrap_or_else(|p| p.into_inner()) = channel;
    }

    /// Sends a cancel request to the previous process of an online upgrade, if it still
    /// serves clients; `false` when there is none.
    pub fn cancel_in_previous(&self, pid: i32, secret: &[u8]) -> bool {
        let previous = self.previous.lock().unwrap_or_else(|p| p.into_inner());
        let Some(channel) = previous.as_ref() else {
            return false;
        };
        let mut key = pid.to_be_bytes().to_vec();
        key.extend_from_slice(secret);
        crate::net::fdpass::send(channel, b'K', &key, &[]).is_ok()
    }

    /// More client connections are open than `max_client_conn` allows.
    pub fn too_many_clients(&self) -> bool {
        self.connections.load(Ordering::Relaxed) > self.config().general.max_client_conn
    }

    /// The SCRAM verifier of `admin_password`, derived on first use after it changes.
    pub fn admin_verifier(&self, admin_password: &str) -> Verifier {
        let mut kept = self
            .admin_verifier
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match &*kept {
            Some((password, verifier)) if password == admin_password => verifier.clone(),
            _ => {
                let verifier = Verifier::from_password(admin_password);
                *kept = Some((admin_password.to_string(), verifier.clone()));
                verifier
            }
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The TLS acceptor for clients, when a certificate is configured.
    pub fn client_tls(&self) -> Option<TlsAcceptor> {
        self.client_tls
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The two-phase commit coordinator, when a pool has `two_phase_commit`.
    pub fn two_phase(&self) -> Option<Arc<TwoPhase>> {
        self.two_phase
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The pools in force.
    pub fn pools(&self) -> Arc<Pools> {
        self.pools.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Re-reads the configuration file. Unchanged pools keep their connections; changed
    /// ones are rebuilt (clients move at their next transaction). A broken file changes
    /// nothing. Returns what the operator should know (warnings, settings that need a
    /// restart), or the reason the file was refused.
    pub fn reload(&self) -> Result<Vec<String>, String> {
        let current = self.config();
        let loaded = config::load(&current.path).map_err(|e| e.to_string())?;
        let mut notes = loaded.warnings;
        let new = loaded.config;
        for (key, old, now) in [
            (
                "general.host",
                current.general.host.clone(),
                new.general.host.clone(),
            ),
            (
                "general.port",
                current.general.port.to_string(),
                new.general.port.to_string(),
            ),
            (
                "general.worker_threads",
                current.general.worker_threads.to_string(),
                new.general.worker_threads.to_string(),
            ),
            (
                "general.prometheus_exporter_port",
                current.general.prometheus_exporter_port.to_string(),
                new.general.prometheus_exporter_port.to_string(),
            ),
            (
                "general.instance_name",
                current.general.instance_name.clone(),
                new.general.instance_name.clone(),
            ),
            (
                "general.two_phase_commit_log",
                current.general.two_phase_commit_log.display().to_string(),
                new.general.two_phase_commit_log.display().to_string(),
            ),
        ] {
            if old != now {
                notes.push(format!(
                    "'{key}' changed from {old} to {now}: takes effect after a restart"
                ));
            }
        }
        let tls = client_tls(&new)?;
        let two_phase = two_phase(&new, self.two_phase())?;
        let previous = self.pools();
        let pools = Pools::build(
            &new,
            Some(&previous),
            &self.registry,
            &self.healths,
            &self.dns,
        )
        .map_err(|e| e.to_string())?;
        *self.pools.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(pools);
        *self.client_tls.write().unwrap_or_else(|p| p.into_inner()) = tls;
        *self.two_phase.write().unwrap_or_else(|p| p.into_inner()) = two_phase;
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
        tracing::info!("configuration reloaded");
        for note in &notes {
            tracing::warn!("{note}");
        }
        Ok(notes)
    }

    /// Logs the outcome of a reload the operator did not ask for by command.
    pub fn reload_logged(&self, why: &str) {
        match self.reload() {
            Ok(_) => tracing::info!("reloaded on {why}"),
            Err(e) => {
                tracing::error!("reload on {why} refused, keeping the running configuration: {e}")
            }
        }
    }

    /// Begins a graceful shutdown: no new logins (but the admin's), idle clients are
    /// closed, transactions in progress may finish.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
        self.registry
            .interrupt(stats::Interrupt::SHUTDOWN, |_| true);
    }

    pub fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Resolves when a graceful shutdown begins.
    pub fn shutdown_started(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }
}

/// The two-phase commit coordinator `config` needs: the one running (`current`), or a new
/// one when a pool has `two_phase_commit` (its decision log opened, or the reason it could
/// not be).
fn two_phase(
    config: &Config,
    current: Option<Arc<TwoPhase>>,
) -> Result<Option<Arc<TwoPhase>>, String> {
    if current.is_some() || !config.pools.values().any(|p| p.two_phase_commit) {
        return Ok(current);
    }
    let g = &config.general;
    let log = &g.two_phase_commit_log;
    match TwoPhase::open(&g.instance_name, log) {
        Ok(coordinator) => Ok(Some(Arc::new(coordinator))),
        Err(e) => Err(format!(
            "{}: general.two_phase_commit_log: cannot open the decision log {}: {e}",
            config.path.display(),
            log.display()
        )),
    }
}

/// The client TLS acceptor of a configuration (certificate files read again).
fn client_tls(config: &Config) -> Result<Option<TlsAcceptor>, String> {
    match (
        &config.general.tls_certificate,
        &config.general.tls_private_key,
    ) {
        (Some(cert), Some(key)) => tls::acceptor(cert, key)
            .map(Some)
            .map_err(|(key, reason)| format!("{key}: {reason}")),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The admin verifier is derived once per password: the same one (same salt) while
    /// `admin_password` stays, a new one when it changes.
    #[tokio::test]
    async fn the_admin_verifier_is_derived_once_per_password() {
        let toml = "[general]\nadmin_username = \"admin\"\nadmin_password = \"a\"\n\
                    [pools.db.users.0]\nusername = \"u\"\npassword = \"p\"\npool_size = 1\n\
                    [pools.db.shards.0]\ndatabase = \"d\"\nservers = [[\"127.0.0.1\", 5432, \"primary\"]]\n";
        let loaded = config::parse(toml, std::path::Path::new("test.toml")).expect("valid");
        let app = App::new(loaded.config).expect("app");
        let first = app.admin_verifier("a");
        assert_eq!(app.admin_verifier("a").salt, first.salt, "kept");
        let changed = app.admin_verifier("b");
        assert_ne!(changed.salt, first.salt, "derived again for a new password");
        assert_eq!(app.admin_verifier("b").salt, changed.salt);
    }
}
