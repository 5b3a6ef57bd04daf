//! CIDR ranges for `trustedProxies`, without a dependency.

use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// `10.0.0.0/8`, `2001:db8::/32`, or a bare address (a /32 or /128).
    pub fn parse(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Self { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        // A range written as IPv4-mapped IPv6 (`::ffff:10.0.0.0/104`) is an IPv4 range.
        let (net, prefix) = match self.addr {
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() && self.prefix >= 96 => (
                IpAddr::V4(
                    v6.to_ipv4_mapped()
                        .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
                ),
                self.prefix - 96,
            ),
            a => (a, self.prefix),
        };
        let this = IpNet { addr: net, prefix };
        match (this.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(this.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(this.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The client's address behind proxies: the TCP peer unless it is a trusted proxy; then the
/// rightmost `X-Forwarded-For` hop that is not a trusted proxy (everything left of it could have
/// been written by the client), else `X-Real-IP`, else the peer.
pub fn resolve_client_ip(
    peer: IpAddr,
    forwarded_for: &[&str],
    real_ip: Option<&str>,
    trusted: &[IpNet],
) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    // Walk from the right: each hop was appended by the proxy to its right. Stop at the first
    // untrusted address; a hop we cannot read ends the walk (everything left of it is untrusted).
    let hops: Vec<&str> = forwarded_for
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    for hop in hops.iter().rev() {
        match parse_hop(hop) {
            Some(ip) if is_trusted(ip) => continue,
            Some(ip) => return ip,
            None => return peer,
        }
    }
    if let Some(real) = real_ip.and_then(parse_hop) {
        return real;
    }
    hops.first().and_then(|h| parse_hop(h)).unwrap_or(peer)
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]:443`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    if let Some(rest) = hop.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    hop.rsplit_once(':').and_then(|(ip, port)| {
        port.parse::<u16>()
            .ok()
            .and(ip.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_walks_from_the_right_and_stops_at_garbage() {
        let trusted = [IpNet::parse("10.0.0.0/8").unwrap_or_else(|e| panic!("{e}"))];
        let peer: IpAddr = [10, 0, 0, 1].into();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        assert_eq!(
            resolve_client_ip(peer, &["6.6.6.6, 1.2.3.4:5555, 10.0.0.7"], None, &trusted),
            ip("1.2.3.4")
        );
        assert_eq!(
            resolve_client_ip(peer, &["[2001:db8::1]:443"], None, &trusted),
            ip("2001:db8::1")
        );
        // A hop we cannot read must not let a forged entry left of it through.
        assert_eq!(
            resolve_client_ip(peer, &["6.6.6.6, unknown"], None, &trusted),
            peer
        );
        assert_eq!(
            resolve_client_ip(ip("8.8.8.8"), &["6.6.6.6"], None, &trusted),
            ip("8.8.8.8")
        );
    }

    fn ip(s: &str) -> IpAddr {
        s.parse()
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
    }

    #[test]
    fn ranges() {
        let net = IpNet::parse("10.0.0.0/8").unwrap_or_else(|e| panic!("{e}"));
        assert!(net.contains(ip("10.1.2.3")));
        assert!(net.contains(ip("::ffff:10.1.2.3")));
        assert!(!net.contains(ip("11.0.0.1")));
        let one = IpNet::parse("192.168.1.10").unwrap_or_else(|e| panic!("{e}"));
        assert!(one.contains(ip("192.168.1.10")) && !one.contains(ip("192.168.1.11")));
        let v6 = IpNet::parse("fd00::/8").unwrap_or_else(|e| panic!("{e}"));
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        assert!(IpNet::parse("0.0.0.0/0").is_ok_and(|n| n.contains(ip("8.8.8.8"))));
        assert!(IpNet::parse("::ffff:10.0.0.0/104").is_ok_and(|n| n.contains(ip("10.9.9.9"))));
        for bad in ["10.0.0.0/33", "nope", "10.0.0/8", "::/129"] {
            assert!(IpNet::parse(bad).is_err(), "{bad}");
        }
    }
}

/// Checks a listen address's form, `host:port` (`[v6]:port` for IPv6), so that a typo is a
/// configuration error rather than a failure at start.
pub(crate) fn host_port(value: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "{value:?}: expected host:port, for example 127.0.0.1:5556, 0.0.0.0:5556 or [::]:5556"
        )
    };
    let (host, port) = value.rsplit_once(':').ok_or_else(bad)?;
    let host_ok = !host.is_empty()
        && !host.contains('/')
        && (host.starts_with('[') == host.ends_with(']'))
        && (host.starts_with('[') || !host.contains(':'));
    if !host_ok || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod listen_tests {
    use super::host_port;

    #[test]
    fn listen_addresses_are_host_and_port() {
        for good in [
            "127.0.0.1:5556",
            "0.0.0.0:0",
            "[::]:5556",
            "localhost:8080",
            "[::1]:65535",
        ] {
            assert!(host_port(good).is_ok(), "{good}");
        }
        for bad in [
            "5556",
            ":5556",
            "127.0.0.1:99999",
            "",
            "http://127.0.0.1:5556/metrics",
            "::1:5556",
            "127.0.0.1:",
        ] {
            assert!(host_port(bad).is_err(), "{bad}");
        }
    }
}
