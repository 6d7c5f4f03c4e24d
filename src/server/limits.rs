//! Caps on open connections, for the whole server and per client IP address, checked at accept:
//! a connection over a cap is closed before any HTTP (or TLS) work is done for it.
//!
//! A connection is counted from its accept until its socket closes, whatever it became: an HTTP
//! keep-alive connection, a WebSocket (the permit moves into the connection task), or a TLS
//! handshake still under way.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::config::{parse_network, ServerConfig};

/// Why a connection was refused (the `reason` label of `herald_connections_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `[server] max_connections` reached.
    Global,
    /// `[server] max_connections_per_ip` reached for this address.
    PerIp,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Global => "global",
            Refusal::PerIp => "per_ip",
        }
    }
}

/// The counters behind the caps.
pub struct ConnectionLimits {
    max_total: usize,
    max_per_ip: u32,
    /// Addresses only the global cap applies to (e.g. a same-host proxy), as (network, prefix length).
    exempt: Vec<(IpAddr, u8)>,
    total: AtomicUsize,
    /// Open connections per address; an address leaves the map with its last connection, so the
    /// map never holds more entries than there are open connections.
    per_ip: Mutex<HashMap<IpAddr, u32>>,
}

impl ConnectionLimits {
    pub fn new(config: &ServerConfig) -> Arc<ConnectionLimits> {
        Arc::new(ConnectionLimits {
            max_total: config.max_connections,
            max_per_ip: config.max_connections_per_ip,
            // Validated at start-up: every entry parses.
            exempt: config.per_ip_limit_exempt.iter().filter_map(|n| parse_network(n)).collect(),
            total: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
        })
    }

    /// Counts a new connection from `ip`, or says which cap it is over.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Refusal> {
        let ip = ip.to_canonical();
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Global);
        }
        if self.exempt.iter().any(|&(network, prefix)| in_network(ip, network, prefix)) {
            return Ok(Permit { limits: self.clone(), ip: None });
        }
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = per_ip.entry(ip).or_insert(0);
        if *count >= self.max_per_ip {
            if *count == 0 {
                per_ip.remove(&ip);
            }
            drop(per_ip);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::PerIp);
        }
        *count += 1;
        Ok(Permit { limits: self.clone(), ip: Some(ip) })
    }
}

/// One counted connection; dropping it frees its place.
pub struct Permit {
    limits: Arc<ConnectionLimits>,
    /// The address counted per IP; `None` when exempt.
    ip: Option<IpAddr>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            let mut per_ip = self.limits.per_ip.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(count) = per_ip.get_mut(&ip) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
        self.limits.total.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What every request of a connection carries (as a request extension): who the peer is, and the
/// connection's permit, which an upgraded WebSocket keeps for its whole life.
#[derive(Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub permit: Arc<Permit>,
}

/// Whether `ip` is in `network`/`prefix` (same address family only).
fn in_network(ip: IpAddr, network: IpAddr, prefix: u8) -> bool {
    match (ip, network) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix.min(32))) };
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(prefix.min(128))) };
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_ip: u32, exempt: &[&str]) -> Arc<ConnectionLimits> {
        let config = ServerConfig {
            max_connections: total,
            max_connections_per_ip: per_ip,
            per_ip_limit_exempt: exempt.iter().map(|s| s.to_string()).collect(),
            ..ServerConfig::default()
        };
        ConnectionLimits::new(&config)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn caps_per_address_and_in_total_and_frees_on_drop() {
        let l = limits(3, 2, &[]);
        let a1 = l.admit(ip("10.0.0.1")).unwrap();
        let _a2 = l.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(l.admit(ip("10.0.0.1")).err(), Some(Refusal::PerIp));
        let b1 = l.admit(ip("10.0.0.2")).unwrap();
        assert_eq!(l.admit(ip("10.0.0.3")).err(), Some(Refusal::Global));
        drop(a1);
        let _a3 = l.admit(ip("10.0.0.1")).unwrap();
        drop(b1);
        // A mapped IPv4 address is the same address.
        assert_eq!(l.admit(ip("::ffff:10.0.0.1")).err(), Some(Refusal::PerIp));
        assert_eq!(l.per_ip.lock().unwrap().len(), 1, "closed and refused addresses leave no entry behind");
        assert_eq!(l.total.load(Ordering::Acquire), 2);
    }

    #[test]
    fn exempt_networks_count_only_globally() {
        let l = limits(3, 1, &["127.0.0.0/8", "::1"]);
        let _a = l.admit(ip("127.0.0.1")).unwrap();
        let _b = l.admit(ip("127.0.0.2")).unwrap();
        let _c = l.admit(ip("::1")).unwrap();
        assert_eq!(l.admit(ip("127.0.0.1")).err(), Some(Refusal::Global));
        assert!(l.per_ip.lock().unwrap().is_empty());
        assert!(in_network(ip("10.1.2.3"), ip("10.0.0.0"), 8));
        assert!(!in_network(ip("11.1.2.3"), ip("10.0.0.0"), 8));
        assert!(in_network(ip("fd00::1"), ip("fd00::"), 8));
        assert!(!in_network(ip("10.1.2.3"), ip("::"), 0));
    }
}
