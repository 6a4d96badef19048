//! Addresses a handler may not reach unless its allow-list names them literally.
//!
//! A request's host name is resolved by the host, and each address is checked here before a
//! connection is made to it (the connection goes to that checked address: no second lookup).
//! Blocked: loopback, unspecified, RFC 1918 private, CGNAT (100.64.0.0/10), link-local
//! (169.254.0.0/16, which holds the cloud metadata address, and fe80::/10), IPv6 unique local
//! (fc00::/7), multicast, broadcast, the documentation and benchmarking ranges, and "this
//! network" (0.0.0.0/8), in IPv4 and in the IPv6 forms that carry an IPv4 address
//! (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4
//! `2002::/16`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::allow::AllowList;

/// Whether `addr` is in a range handlers may reach only when an address pattern names it.
pub fn is_blocked(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => is_blocked_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => is_blocked_v4(v4),
            None => is_blocked_v6(v6),
        },
    }
}

/// Whether a resolved address may be connected to under `allow`.
pub fn permitted(addr: IpAddr, allow: &AllowList) -> bool {
    !is_blocked(addr) || allow.names_address(addr)
}

fn is_blocked_v4(a: Ipv4Addr) -> bool {
    let [o0, o1, o2, _] = a.octets();
    a.is_loopback()
        || a.is_private()
        || a.is_link_local()
        || a.is_multicast()
        || a.is_broadcast()
        || a.is_unspecified()
        || o0 == 0
        // CGNAT, 100.64.0.0/10
        || (o0 == 100 && (64..128).contains(&o1))
        // IETF protocol assignments, 192.0.0.0/24
        || (o0 == 192 && o1 == 0 && o2 == 0)
        // Documentation: 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24
        || (o0 == 192 && o1 == 0 && o2 == 2)
        || (o0 == 198 && o1 == 51 && o2 == 100)
        || (o0 == 203 && o1 == 0 && o2 == 113)
        // Benchmarking, 198.18.0.0/15
        || (o0 == 198 && (18..20).contains(&o1))
        // Reserved, 240.0.0.0/4
        || o0 >= 240
}

fn is_blocked_v6(a: Ipv6Addr) -> bool {
    let s = a.segments();
    a.is_loopback()
        || a.is_unspecified()
        || a.is_multicast()
        // Unique local, fc00::/7
        || (s[0] & 0xfe00) == 0xfc00
        // Link-local, fe80::/10; site-local (deprecated), fec0::/10
        || (s[0] & 0xffc0) == 0xfe80
        || (s[0] & 0xffc0) == 0xfec0
        // Documentation, 2001:db8::/32
        || (s[0] == 0x2001 && s[1] == 0x0db8)
        // Discard-only, 100::/64
        || (s[0] == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] == 0)
}

/// The IPv4 address an IPv6 address carries, for the forms that route to it.
fn embedded_v4(a: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = a.segments();
    let low = Ipv4Addr::new(
        (s[6] >> 8) as u8,
        (s[6] & 0xff) as u8,
        (s[7] >> 8) as u8,
        (s[7] & 0xff) as u8,
    );
    if let Some(v4) = a.to_ipv4_mapped() {
        return Some(v4);
    }
    // IPv4-compatible (deprecated), ::a.b.c.d, but not :: and ::1.
    if s[..6] == [0; 6] && !(s[6] == 0 && s[7] <= 1) {
        return Some(low);
    }
    // NAT64 well-known prefix, 64:ff9b::/96.
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4] {
        return Some(low);
    }
    // 6to4, 2002:AABB:CCDD::/48.
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            (s[1] & 0xff) as u8,
            (s[2] >> 8) as u8,
            (s[2] & 0xff) as u8,
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn private_and_special_ranges_are_blocked() {
        for a in [
            "127.0.0.1",
            "127.255.0.9",
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "172.16.5.4",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.254",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.2.10",
            "198.51.100.7",
            "203.0.113.200",
            "198.18.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
        ] {
            assert!(is_blocked(ip(a)), "{a} should be blocked");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for a in [
            "1.1.1.1",
            "8.8.8.8",
            "100.128.0.1",
            "172.32.0.1",
            "192.169.0.1",
            "2606:4700:4700::1111",
            "::ffff:1.1.1.1",
            "64:ff9b::808:808",
        ] {
            assert!(!is_blocked(ip(a)), "{a} should pass");
        }
    }

    #[test]
    fn an_address_pattern_lets_its_range_through() {
        let allow = AllowList::parse(&["http://10.1.0.0/16", "http://127.0.0.1:8080"]).unwrap();
        assert!(permitted(ip("10.1.2.3"), &allow));
        assert!(!permitted(ip("10.2.0.1"), &allow));
        assert!(permitted(ip("127.0.0.1"), &allow));
        assert!(permitted(ip("::ffff:127.0.0.1"), &allow));
        assert!(!permitted(ip("169.254.169.254"), &allow));
        let names_only = AllowList::parse(&["http://localhost:8080"]).unwrap();
        assert!(!permitted(ip("127.0.0.1"), &names_only));
    }
}
