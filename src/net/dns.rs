//! The DNS cache (`dns_cache_enabled`): server host names resolved once and kept, so a new
//! server connection does not wait for the resolver, and re-resolved every `dns_max_ttl`
//! seconds (`refresh`), which reports the names whose addresses changed so their pools can
//! replace their connections. IP literals are never looked up. A name that stops resolving
//! keeps its last addresses (a resolver outage does not take servers away).
//!
//! With the `failpoints` feature (tests only), a file named by `PGCAT_TEST_HOSTS` (lines of
//! `name address[,address]`) answers before the system resolver, so a test can change what
//! a name resolves to.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

/// Resolved server host names.
#[derive(Debug, Default)]
pub struct DnsCache {
    hosts: Mutex<HashMap<String, BTreeSet<IpAddr>>>,
}

impl DnsCache {
    /// The addresses to connect to for `host:port`: the cached ones, or looked up now (and
    /// cached) the first time.
    pub async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let cached = self.lock().get(host).cloned();
        let ips = match cached {
            Some(ips) => ips,
            None => {
                let ips = lookup(host).await?;
                self.lock().insert(host.to_string(), ips.clone());
                ips
            }
        };
        Ok(ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect())
    }

    /// Looks every cached name up again; the names whose addresses changed.
    pub async fn refresh(&self) -> Vec<String> {
        let names: Vec<String> = self.lock().keys().cloned().collect();
        let mut changed = Vec::new();
        for name in names {
            let ips = match lookup(&name).await {
                Ok(ips) => ips,
                Err(e) => {
                    tracing::warn!(host = %name, error = %e,
                        "DNS lookup failed: keeping the addresses resolved before");
                    continue;
                }
            };
            let old = self.lock().insert(name.clone(), ips.clone());
            if old.as_ref().is_some_and(|old| *old != ips) {
                tracing::info!(host = %name, old = ?old.unwrap_or_default(), new = ?ips,
                    "DNS: server address changed; its connections are replaced");
                changed.push(name);
            }
        }
        changed
    }

    /// How many names are cached (SHOW LISTS' `dns_names`).
    pub fn names_cached(&self) -> usize {
        self.lock().len()
    }

    /// The cached names and their addresses, by name (SHOW DNS_HOSTS).
    pub fn entries(&self) -> Vec<(String, Vec<IpAddr>)> {
        let mut all: Vec<_> = (self.lock().iter())
            .map(|(name, ips)| (name.clone(), ips.iter().copied().collect()))
            .collect();
        all.sort();
        all
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, BTreeSet<IpAddr>>> {
        self.hosts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The addresses `host` resolves to now (never empty).
async fn lookup(host: &str) -> io::Result<BTreeSet<IpAddr>> {
    #[cfg(feature = "failpoints")]
    if let Some(ips) = test_hosts(host) {
        return Ok(ips);
    }
    let ips: BTreeSet<IpAddr> = tokio::net::lookup_host((host, 0))
        .await?
        .map(|a| a.ip())
        .collect();
    if ips.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{host} resolves to no address"),
        ));
    }
    Ok(ips)
}

#[cfg(feature = "failpoints")]
fn test_hosts(host: &str) -> Option<BTreeSet<IpAddr>> {
    let file = std::env::var_os("PGCAT_TEST_HOSTS")?;
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let (name, ips) = line.trim().split_once(' ')?;
        (name == host).then(|| {
            ips.split(',')
                .filter_map(|ip| ip.trim().parse().ok())
                .collect()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn literals_pass_through_and_names_are_cached() {
        let cache = DnsCache::default();
        let addrs = cache.resolve("127.0.0.1", 5432).await.unwrap();
        assert_eq!(addrs, ["127.0.0.1:5432".parse::<SocketAddr>().unwrap()]);
        assert_eq!(cache.names_cached(), 0, "literals are not cached");
        let addrs = cache.resolve("localhost", 6432).await.unwrap();
        assert!(addrs
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 6432));
        assert_eq!(cache.names_cached(), 1);
        assert!(cache.refresh().await.is_empty(), "localhost did not move");
        assert!(cache.resolve("no-such-host.invalid", 1).await.is_err());
    }
}
