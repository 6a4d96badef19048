//! The outbound allow-list: which `scheme://host:port` a handler may reach.
//!
//! A pattern is `scheme://host[:port]`:
//! - scheme: `http`, `https`, another scheme name (it must then give a port), or `*` (any);
//! - host: a DNS name (`api.example.com`), a wildcard for its subdomains only
//!   (`*.example.com` matches `a.example.com` and `a.b.example.com`, not `example.com`), an
//!   IPv4 literal, a bracketed IPv6 literal (`[2001:db8::1]`) or a CIDR range (`10.0.0.0/8`,
//!   `[fd00::]/8`);
//! - port: a number, `*`, or a range `8000-8999`; left out, the scheme's default (80 for
//!   `http`, 443 for `https`, 5432 for `postgres`; with scheme `*`, the request's scheme's).
//!
//! Refused: a bare `*` host, a path, a query, userinfo, an unknown scheme without a port.
//!
//! A name pattern matches only a request for that name, and an address pattern only a request
//! for an address literal: whether a name's addresses may be reached is decided after it is
//! resolved (`super::ssrf`), where an address pattern is what allows a private address.

use std::fmt;
use std::net::IpAddr;

/// A parsed allow-list: the patterns of one handler version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    text: String,
    scheme: SchemePattern,
    host: HostPattern,
    port: PortPattern,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum SchemePattern {
    Any,
    Exactly(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Name(String),
    /// `*.<suffix>`: stored as `.<suffix>`.
    Subdomains(String),
    Net {
        addr: IpAddr,
        prefix: u8,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PortPattern {
    Default,
    Any,
    Range(u16, u16),
}

/// Why a pattern was refused, naming it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("outbound pattern {pattern:?}: {reason}")]
pub struct PatternError {
    pub pattern: String,
    pub reason: String,
}

/// The port a scheme has when a URL gives none.
pub fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        "postgres" | "postgresql" => Some(5432),
        _ => None,
    }
}

impl AllowList {
    /// Parses every pattern; the first bad one is the error.
    pub fn parse<S: AsRef<str>>(patterns: &[S]) -> Result<Self, PatternError> {
        let patterns = patterns
            .iter()
            .map(|p| Pattern::parse(p.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { patterns })
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether a request to `scheme://host:port` is allowed. `host` is a name or an address
    /// literal (IPv6 with or without brackets); an IPv4-mapped IPv6 address is taken as the
    /// IPv4 address it maps.
    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        let target = Target::new(host);
        self.patterns.iter().any(|p| {
            p.scheme_matches(scheme) && p.port_matches(scheme, port) && p.host_matches(&target)
        })
    }

    /// Whether an address pattern names `addr` (literally or in its range) for some scheme
    /// and port: what lets a resolved name reach a private address (`super::ssrf`).
    pub fn names_address(&self, addr: IpAddr) -> bool {
        let addr = addr.to_canonical();
        self.patterns.iter().any(|p| match p.host {
            HostPattern::Net { addr: net, prefix } => in_net(addr, net, prefix),
            _ => false,
        })
    }

    /// The address patterns (literals and ranges) as given: what decides, beside the name,
    /// which resolved addresses a connection may go to (a database pool is keyed by them).
    pub fn address_patterns(&self) -> impl Iterator<Item = &str> {
        self.patterns
            .iter()
            .filter(|p| matches!(p.host, HostPattern::Net { .. }))
            .map(|p| p.text.as_str())
    }

    /// The patterns as given.
    pub fn patterns(&self) -> impl Iterator<Item = &str> {
        self.patterns.iter().map(|p| p.text.as_str())
    }
}

impl fmt::Display for AllowList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let texts: Vec<&str> = self.patterns().collect();
        f.write_str(&texts.join(", "))
    }
}

enum Target {
    Name(String),
    Addr(IpAddr),
}

impl Target {
    fn new(host: &str) -> Self {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        match bare.parse::<IpAddr>() {
            Ok(addr) => Target::Addr(addr.to_canonical()),
            Err(_) => Target::Name(normalise_name(host)),
        }
    }
}

fn normalise_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn in_net(addr: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (addr, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

impl Pattern {
    fn parse(text: &str) -> Result<Self, PatternError> {
        let err = |reason: &str| PatternError {
            pattern: text.to_string(),
            reason: reason.to_string(),
        };
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| err("expected scheme://host[:port], like https://api.example.com"))?;
        let scheme = parse_scheme(scheme).map_err(err)?;
        if rest.contains('@') {
            return Err(err("userinfo (user@host) is not allowed in a pattern"));
        }
        if rest.contains(['?', '#']) {
            return Err(err("a pattern has no query or fragment"));
        }
        let (host_text, after_host) = split_host(rest).map_err(err)?;
        let (prefix, after_prefix) = split_prefix(after_host).map_err(err)?;
        let port = match after_prefix {
            "" => PortPattern::Default,
            p => {
                let p = p
                    .strip_prefix(':')
                    .ok_or_else(|| err("unexpected text after the host"))?;
                parse_port(p)
                    .ok_or_else(|| err("the port must be a number, * or a range like 8000-8999"))?
            }
        };
        if port == PortPattern::Default
            && let SchemePattern::Exactly(s) = &scheme
            && default_port(s).is_none()
        {
            return Err(err(
                "this scheme has no default port: give one (scheme://host:port)",
            ));
        }
        let host = parse_host(host_text, prefix).map_err(|reason| err(&reason))?;
        Ok(Pattern {
            text: text.to_string(),
            scheme,
            host,
            port,
        })
    }

    fn scheme_matches(&self, scheme: &str) -> bool {
        match &self.scheme {
            SchemePattern::Any => true,
            SchemePattern::Exactly(s) => s == scheme,
        }
    }

    fn port_matches(&self, scheme: &str, port: u16) -> bool {
        match self.port {
            PortPattern::Any => true,
            PortPattern::Range(lo, hi) => (lo..=hi).contains(&port),
            PortPattern::Default => default_port(scheme) == Some(port),
        }
    }

    fn host_matches(&self, target: &Target) -> bool {
        match (&self.host, target) {
            (HostPattern::Name(n), Target::Name(t)) => n == t,
            (HostPattern::Subdomains(suffix), Target::Name(t)) => {
                t.len() > suffix.len() && t.ends_with(suffix.as_str())
            }
            (HostPattern::Net { addr, prefix }, Target::Addr(a)) => in_net(*a, *addr, *prefix),
            _ => false,
        }
    }
}

/// A pattern's scheme: `*`, or a lower-case scheme name.
fn parse_scheme(scheme: &str) -> Result<SchemePattern, &'static str> {
    match scheme {
        "*" => Ok(SchemePattern::Any),
        s if !s.is_empty()
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c)) =>
        {
            Ok(SchemePattern::Exactly(s.to_string()))
        }
        _ => Err("the scheme must be http, https, another lower-case scheme name or *"),
    }
}

/// Splits what follows `://` into the host (which may be bracketed, or a CIDR) and the rest.
fn split_host(rest: &str) -> Result<(&str, &str), &'static str> {
    match rest.strip_prefix('[') {
        Some(inner) => {
            let end = inner
                .find(']')
                .ok_or("an IPv6 address needs its closing ]")?;
            Ok((&rest[..end + 2], &inner[end + 1..]))
        }
        None => {
            let end = rest.find([':', '/']).unwrap_or(rest.len());
            Ok((&rest[..end], &rest[end..]))
        }
    }
}

/// Splits a CIDR's `/prefix` off what follows the host.
fn split_prefix(after_host: &str) -> Result<(Option<u8>, &str), &'static str> {
    let Some(tail) = after_host.strip_prefix('/') else {
        return Ok((None, after_host));
    };
    let end = tail.find(':').unwrap_or(tail.len());
    let digits = &tail[..end];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("a pattern has no path (a / may only give a CIDR prefix length)");
    }
    let prefix: u8 = digits
        .parse()
        .map_err(|_| "the CIDR prefix length is too large")?;
    Ok((Some(prefix), &tail[end..]))
}

fn parse_port(text: &str) -> Option<PortPattern> {
    if text == "*" {
        return Some(PortPattern::Any);
    }
    let number = |t: &str| -> Option<u16> {
        (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .then(|| t.parse().ok())
            .flatten()
    };
    match text.split_once('-') {
        Some((lo, hi)) => {
            let (lo, hi) = (number(lo)?, number(hi)?);
            (lo <= hi).then_some(PortPattern::Range(lo, hi))
        }
        None => number(text).map(|p| PortPattern::Range(p, p)),
    }
}

fn parse_host(text: &str, prefix: Option<u8>) -> Result<HostPattern, String> {
    if text.is_empty() {
        return Err("the host is empty".to_string());
    }
    if text == "*" {
        return Err(
            "a bare * host allows everything: name the hosts (or *.example.com for subdomains)"
                .to_string(),
        );
    }
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    if let Ok(addr) = bare.parse::<IpAddr>() {
        if text.starts_with('[') != addr.is_ipv6() {
            return Err("an IPv6 address is written in brackets, an IPv4 one without".to_string());
        }
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(format!("the CIDR prefix length must be at most {max}"));
        }
        return Ok(HostPattern::Net { addr, prefix });
    }
    if prefix.is_some() {
        return Err("a CIDR prefix needs an IP address before it".to_string());
    }
    let (wildcard, name) = match text.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let name = normalise_name(name);
    let valid_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(valid_label) {
        return Err(format!(
            "{text:?} is not a host name, *.name, IP address or CIDR range"
        ));
    }
    Ok(if wildcard {
        HostPattern::Subdomains(format!(".{name}"))
    } else {
        HostPattern::Name(name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(patterns: &[&str]) -> AllowList {
        match AllowList::parse(patterns) {
            Ok(list) => list,
            Err(err) => panic!("{err}"),
        }
    }

    #[test]
    fn names_match_exactly_and_by_default_port() {
        let l = list(&["https://api.example.com"]);
        assert!(l.allows("https", "api.example.com", 443));
        assert!(l.allows("https", "API.Example.com.", 443));
        assert!(!l.allows("http", "api.example.com", 80));
        assert!(!l.allows("https", "api.example.com", 8443));
        assert!(!l.allows("https", "example.com", 443));
        assert!(!l.allows("https", "evil-api.example.com", 443));
    }

    #[test]
    fn wildcards_match_subdomains_only() {
        let l = list(&["https://*.slack.com"]);
        assert!(l.allows("https", "hooks.slack.com", 443));
        assert!(l.allows("https", "a.b.slack.com", 443));
        assert!(!l.allows("https", "slack.com", 443));
        assert!(!l.allows("https", "evilslack.com", 443));
    }

    #[test]
    fn any_scheme_takes_each_schemes_default_port() {
        let l = list(&["*://example.com"]);
        assert!(l.allows("http", "example.com", 80));
        assert!(l.allows("https", "example.com", 443));
        assert!(!l.allows("http", "example.com", 443));
    }

    #[test]
    fn ports_can_be_any_or_a_range() {
        let l = list(&[
            "http://a.test:*",
            "http://b.test:8000-8009",
            "http://127.0.0.1:9000",
        ]);
        assert!(l.allows("http", "a.test", 1));
        assert!(l.allows("http", "b.test", 8009));
        assert!(!l.allows("http", "b.test", 8010));
        assert!(l.allows("http", "127.0.0.1", 9000));
        assert!(!l.allows("http", "127.0.0.1", 9001));
    }

    #[test]
    fn addresses_and_ranges_match_literals_only() {
        let l = list(&[
            "http://10.1.0.0/16",
            "http://[::1]:8080",
            "http://[fd00::]/8:*",
        ]);
        assert!(l.allows("http", "10.1.200.3", 80));
        assert!(!l.allows("http", "10.2.0.1", 80));
        assert!(l.allows("http", "[::1]", 8080));
        assert!(l.allows("http", "::1", 8080));
        assert!(l.allows("http", "[fd12::5]", 1234));
        // A name is not an address, whatever it resolves to.
        assert!(!l.allows("http", "localhost", 8080));
        assert!(l.names_address("10.1.0.9".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))));
    }

    #[test]
    fn ipv4_mapped_ipv6_is_the_ipv4_address() {
        let l = list(&["http://127.0.0.1:8080"]);
        assert!(l.allows("http", "[::ffff:127.0.0.1]", 8080));
        let l = list(&["http://api.test:8080"]);
        assert!(!l.allows("http", "[::ffff:127.0.0.1]", 8080));
    }

    #[test]
    fn bad_patterns_are_refused_naming_the_pattern() {
        for bad in [
            "*",
            "http://*",
            "*://*:*",
            "https://api.example.com/v1",
            "https://user:pw@api.example.com",
            "https://allowed@evil.test",
            "ftp://files.example.com",
            "api.example.com",
            "https://",
            "https://exa mple.com",
            "http://10.0.0.0/33",
            "http://example.com/8",
            "http://[::1",
            "http://::1",
            "http://example.com:99999",
            "http://example.com:9-1",
            "https://example.com?x=1",
            "HTTP://example.com",
        ] {
            match AllowList::parse(&[bad]) {
                Ok(l) => panic!("{bad:?} was accepted as {l:?}"),
                Err(err) => assert_eq!(err.pattern, bad, "{err}"),
            }
        }
    }

    #[test]
    fn other_schemes_need_a_port_unless_known() {
        assert!(AllowList::parse(&["redis://cache.test:6379"]).is_ok());
        assert!(AllowList::parse(&["postgres://db.test"]).is_ok());
        assert!(AllowList::parse(&["redis://cache.test"]).is_err());
    }

    #[test]
    fn postgres_patterns_take_5432_by_default_and_star_schemes_match_them() {
        let l = list(&["postgres://db.example.com", "*://[::1]"]);
        assert!(l.allows("postgres", "db.example.com", 5432));
        assert!(!l.allows("postgres", "db.example.com", 5433));
        assert!(!l.allows("https", "db.example.com", 443));
        assert!(l.allows("postgres", "::1", 5432));
        assert!(l.allows("postgresql", "[::1]", 5432));
        let pg = list(&[
            "postgresql://db.example.com:6000-6010",
            "postgres://10.1.0.0/16",
        ]);
        assert!(pg.allows("postgresql", "db.example.com", 6005));
        assert!(!pg.allows("postgres", "db.example.com", 6005));
        assert_eq!(
            pg.address_patterns().collect::<Vec<_>>(),
            ["postgres://10.1.0.0/16"]
        );
    }
}
