//! Addresses tools and remote MCP servers may connect to: a name is resolved once, refused
//! when it points inside the network (loopback, private, link-local, cloud metadata…) unless
//! allowed, and the address checked is the one connected to, so a second DNS answer cannot
//! change it (rebinding).

/// Why a host was not given an address to connect to.
pub enum Vetted {
    Internal(std::net::IpAddr),
    Unresolved(String),
}

/// The address to connect to for an allowlisted `host`: an IP written in the allowlist is
/// taken as it is (listed explicitly); a name is resolved, and refused when any address it
/// resolves to is internal, unless `allow_internal`.
pub async fn vet(host: &str, port: u16, allow_internal: bool) -> Result<std::net::SocketAddr, Vetted> {
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = literal.parse::<std::net::IpAddr>() {
        return Ok(std::net::SocketAddr::new(ip, port));
    }
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| Vetted::Unresolved(format!("cannot resolve {host}: {e}")))?
        .collect();
    if !allow_internal && let Some(bad) = addrs.iter().find(|a| internal(a.ip())) {
        return Err(Vetted::Internal(bad.ip()));
    }
    addrs
        .first()
        .copied()
        .ok_or_else(|| Vetted::Unresolved(format!("{host} has no address")))
}

/// Loopback, private, shared (CGNAT), link-local (cloud metadata at 169.254.169.254 among
/// them), unspecified, multicast, broadcast, documentation, and their IPv6 counterparts
/// (IPv4-mapped addresses judged as IPv4).
pub fn internal(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || o[0] == 0
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return internal(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00
                || (seg[0] & 0xffc0) == 0xfe80
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "172.32.0.1", "100.128.0.1"] {
            assert!(!internal(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn names_that_resolve_inside_are_refused_unless_allowed() {
        let refused = vet("localhost", 80, false).await;
        assert!(matches!(refused, Err(Vetted::Internal(ip)) if ip.is_loopback()));
        let allowed = vet("localhost", 80, true).await.ok().unwrap();
        assert!(allowed.ip().is_loopback() && allowed.port() == 80);
        // An address listed explicitly is taken as it is.
        let listed = vet("127.0.0.1", 8080, false).await.ok().unwrap();
        assert_eq!(listed.to_string(), "127.0.0.1:8080");
        let listed6 = vet("[::1]", 8080, false).await.ok().unwrap();
        assert_eq!(listed6.to_string(), "[::1]:8080");
    }
}
