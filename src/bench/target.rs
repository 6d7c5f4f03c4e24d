//! Where the load goes and where it comes from: loopback only.
//!
//! The bench opens thousands of sockets at a fixed rate; pointed at anything but this machine it would be a
//! flood. So the target must be in 127.0.0.0/8 and that is checked before any socket is opened. Source
//! addresses are spread over 127.0.0.1, .2, .3, ... because one (source IP, destination) pair has only about
//! 28k ephemeral ports, and several bench processes together can hold more connections than that.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Resolves `host:port` and refuses anything outside 127.0.0.0/8.
pub fn loopback_target(host: &str, port: u16) -> anyhow::Result<SocketAddr> {
    let addr: IpAddr = match host {
        "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        other => other.parse().map_err(|_| {
            anyhow::anyhow!(
                "--host {other:?}: give an IPv4 address in 127.0.0.0/8 (or localhost); names are not resolved"
            )
        })?,
    };
    match addr {
        IpAddr::V4(v4) if v4.is_loopback() => Ok(SocketAddr::new(addr, port)),
        _ => anyhow::bail!("--host {addr}: herald bench only targets 127.0.0.0/8 (this machine)"),
    }
}

/// `count` loopback source addresses, 127.0.0.1 upwards (at most 254).
pub fn source_addrs(count: u8) -> Vec<Ipv4Addr> {
    (1..=count.clamp(1, 254)).map(|n| Ipv4Addr::new(127, 0, 0, n)).collect()
}

/// Makes sure an address built elsewhere is loopback (defence in depth before every connect).
pub fn assert_loopback(addr: SocketAddr) -> anyhow::Result<()> {
    match addr.ip() {
        IpAddr::V4(v4) if v4.is_loopback() => Ok(()),
        _ => anyhow::bail!("refusing to connect to {addr}: not in 127.0.0.0/8"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_is_accepted() {
        assert!(loopback_target("127.0.0.1", 80).is_ok());
        assert!(loopback_target("127.1.2.3", 80).is_ok());
        assert!(loopback_target("localhost", 80).is_ok());
        assert!(loopback_target("10.0.0.1", 80).is_err());
        assert!(loopback_target("192.168.1.1", 80).is_err());
        assert!(loopback_target("8.8.8.8", 80).is_err());
        assert!(loopback_target("::1", 80).is_err());
        assert!(loopback_target("example.com", 80).is_err());
    }

    #[test]
    fn source_addresses_count_up_from_one() {
        assert_eq!(
            source_addrs(3),
            vec![Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3)]
        );
        assert_eq!(source_addrs(0).len(), 1);
    }
}
