//! Who the client is, as far as limits are concerned: its address, taken from the TCP peer or,
//! when the peer is a trusted reverse proxy, from the header that proxy appends; and the
//! bucket the limits count it in (an IPv4 address, or an IPv6 /64, which one subscriber
//! usually holds whole).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;

pub use crate::config::{ForwardedHeader, Proxies};
use crate::error::ApiError;

impl ForwardedHeader {
    pub fn as_str(self) -> &'static str {
        match self {
            ForwardedHeader::XForwardedFor => "x-forwarded-for",
            ForwardedHeader::Forwarded => "forwarded",
        }
    }
}

/// Whether a request says it came through a proxy: it carries a header proxies add (either
/// [`ForwardedHeader`] a trusted one's is read from, `X-Forwarded-Host` or `X-Real-IP`).
pub fn says_forwarded(headers: &axum::http::HeaderMap) -> bool {
    [
        ForwardedHeader::XForwardedFor.as_str(),
        ForwardedHeader::Forwarded.as_str(),
        "x-forwarded-host",
        "x-real-ip",
    ]
    .iter()
    .any(|h| headers.contains_key(*h))
}

impl Proxies {
    /// Whether `ip` is a trusted proxy's.
    pub(crate) fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// The client's address. The peer's, unless the peer is a trusted proxy: then the
    /// forwarding header is read from the right (the entry the nearest proxy appended) past
    /// every trusted proxy; the first address that is not one is the client. Entries to its
    /// left were written by the client and are never believed. An entry that is not an address
    /// (`unknown`, an obfuscated name) stops the walk at the proxy that wrote it.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        let header = self.header;
        let mut client = peer;
        // From the right, lazily, and at most [`MAX_HOPS`] entries: a header of thousands of
        // entries (`,,,,…`, which a proxy passes on) costs no more than its last few.
        let values = headers.get_all(header.as_str()).iter().rev();
        // Bytes a client wrote (a tab, a byte past ASCII) to the left of what the proxy
        // appended make its entry no address, not the whole line unreadable: the walk still
        // finds the address the proxy wrote (before, such a line made every client the proxy
        // itself, one bucket for all).
        let entries = values.flat_map(|v| v.as_bytes().rsplit(|b| *b == b','));
        for entry in entries.take(MAX_HOPS) {
            let entry = String::from_utf8_lossy(entry);
            let hop = match header {
                ForwardedHeader::XForwardedFor => parse_node(&entry),
                ForwardedHeader::Forwarded => forwarded_for(&entry),
            };
            let Some(ip) = hop else {
                return client;
            };
            client = canonical(ip);
            if !self.trusts(client) {
                return client;
            }
        }
        client
    }
}

/// The most forwarding entries read, from the right: more trusted proxies in a row than any
/// deployment has (past them, the last one read is the client).
const MAX_HOPS: usize = 32;

/// The `for=` parameter of one element of a `Forwarded` header.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then(|| parse_node(value))
            .flatten()
    })
}

/// `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`, `[2001:db8::1]`, `"[2001:db8::1]:4711"`.
fn parse_node(node: &str) -> Option<IpAddr> {
    let node = node.trim().trim_matches('"');
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sock) = node.parse::<SocketAddr>() {
        return Some(sock.ip());
    }
    let inner = node.strip_prefix('[')?.split(']').next()?;
    inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

/// An IPv6 address that carries an IPv4 client's: IPv4-mapped (`::ffff:192.0.2.1`, a
/// dual-stack socket's) or under NAT64's well-known prefix (`64:ff9b::192.0.2.1`, RFC 6052: a
/// server on IPv6 only behind a translator). Counted as its /64, every IPv4 client of the
/// translator shared one bucket.
///
/// Only a global IPv4 address is under NAT64's prefix (RFC 6052 §3.1): `64:ff9b::127.0.0.1` is
/// no translator's, and is not taken for this machine.
pub(crate) fn embedded_ipv4(v6: Ipv6Addr) -> Option<std::net::Ipv4Addr> {
    const NAT64: u128 = 0x0064_ff9b_u128 << 96;
    let bits = u128::from(v6);
    if bits >> 32 == NAT64 >> 32 {
        let v4 = std::net::Ipv4Addr::from(bits as u32);
        return global_v4(v4).then_some(v4);
    }
    v6.to_ipv4_mapped()
}

/// Whether `v4` is an address of the internet's (RFC 6890's special-purpose ranges are not):
/// not private, loopback, link-local, shared (`100.64/10`), documentation, multicast, reserved,
/// "this network" or broadcast.
pub(crate) fn global_v4(v4: std::net::Ipv4Addr) -> bool {
    let [a, b, ..] = v4.octets();
    !(v4.is_private()
        || v4.is_loopback()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || v4.is_documentation()
        || a == 0
        || a >= 240
        || (a == 100 && (64..128).contains(&b)))
}

/// An address that carries an IPv4 client's is the IPv4 address ([`embedded_ipv4`]).
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => embedded_ipv4(v6).map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The unit the per-client limits count: the IPv4 address, or the IPv6 /64.
pub fn bucket(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

/// The client's address bucket, as text: the key of the login throttle.
pub fn bucket_key(ip: IpAddr) -> String {
    match bucket(ip) {
        IpAddr::V6(v6) => format!("{v6}/64"),
        v4 => v4.to_string(),
    }
}

/// The wider bucket an IPv6 client's [`bucket_key`] (its /64) is in: its /56, what a home
/// connection usually holds whole (256 /64s). Per-client sign-in limits count it too, at
/// [`crate::throttle::WIDE_FACTOR`] times a /64's limit. Not the /48 (a tunnel broker's free
/// allocation): a carrier or an ISP shares one among thousands of customers, whom one of them
/// could then keep from signing in. None for IPv4 (one address is one client; a /24 is often
/// many unrelated ones) or another kind of key.
pub fn wide_bucket_key(key: &str) -> Option<String> {
    let v6: Ipv6Addr = key.strip_suffix("/64")?.parse().ok()?;
    let bits = u128::from(v6) & !((1u128 << 72) - 1);
    Some(format!("{}/56", Ipv6Addr::from(bits)))
}

/// The client's address (see [`Proxies::client_ip`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl ClientIp {
    pub fn bucket(self) -> IpAddr {
        bucket(self.0)
    }

    /// The key the per-client limits count this client under.
    pub fn key(self) -> String {
        bucket_key(self.0)
    }
}

impl<S> FromRequestParts<S> for ClientIp
where
    Proxies: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip())
            .ok_or_else(|| ApiError::Internal("no peer address on the request".into()))?;
        Ok(ClientIp(
            Proxies::from_ref(state).client_ip(peer, &parts.headers),
        ))
    }
}

/// This server's origin as a request names it when no `--public-origin` is configured: only
/// for a loopback `Host` (a development server), `https://` when the server serves TLS itself.
/// Elsewhere a client picks its `Host`, so there is none.
pub fn loopback_origin(headers: &axum::http::HeaderMap, https: bool) -> Option<String> {
    let host = headers.get(axum::http::header::HOST)?.to_str().ok()?;
    if !tokenwarden_dpop::is_loopback_host(host) {
        return None;
    }
    Some(format!("{}://{host}", if https { "https" } else { "http" }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn an_ipv6_64_is_in_its_56_and_nothing_else_is_widened() {
        assert_eq!(
            wide_bucket_key("2001:db8:aa:bb::/64").as_deref(),
            Some("2001:db8:aa::/56")
        );
        assert_eq!(
            wide_bucket_key(&bucket_key("2001:db8:aa:1ff:1:2:3:4".parse().unwrap())).as_deref(),
            Some("2001:db8:aa:100::/56")
        );
        for other in ["192.0.2.1", "session-id", "2001:db8::/56", "x/64"] {
            assert_eq!(wide_bucket_key(other), None, "{other}");
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn proxies(header: ForwardedHeader) -> Proxies {
        Proxies {
            trusted: vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
            header,
        }
    }

    fn headers(name: &str, values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn an_ipv4_client_behind_a_translator_is_its_ipv4_address() {
        for (v6, v4) in [
            ("::ffff:192.0.2.1", "192.0.2.1"),
            ("64:ff9b::93.184.215.14", "93.184.215.14"),
            ("64:ff9b::5db8:d70e", "93.184.215.14"),
        ] {
            assert_eq!(canonical(ip(v6)), ip(v4), "{v6}");
            assert_eq!(bucket_key(ip(v6)), v4, "{v6}");
        }
        // Not under the prefix, or no global address under it (no translator's: never this
        // machine, nor a private network's): the /64.
        for v6 in [
            "64:ff9b:1::93.184.215.14",
            "2001:db8::93.184.215.14",
            "64:ff9b::127.0.0.1",
            "64:ff9b::10.0.0.5",
            "64:ff9b::192.0.2.1",
            "64:ff9b::100.64.0.1",
        ] {
            assert!(bucket_key(ip(v6)).ends_with("/64"), "{v6}");
        }
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let p = proxies(ForwardedHeader::XForwardedFor);
        let h = headers("x-forwarded-for", &["198.51.100.9"]);
        assert_eq!(p.client_ip(ip("203.0.113.5"), &h), ip("203.0.113.5"));
        assert_eq!(
            Proxies::default().client_ip(ip("10.0.0.1"), &h),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn the_walk_goes_right_to_left_past_trusted_proxies_only() {
        let p = proxies(ForwardedHeader::XForwardedFor);
        // The client forged the leftmost entry; the proxy appended the real address.
        let h = headers("x-forwarded-for", &["1.2.3.4, 198.51.100.9, 10.1.1.1"]);
        assert_eq!(p.client_ip(ip("10.0.0.1"), &h), ip("198.51.100.9"));
        // Several header lines are one list.
        let h = headers("x-forwarded-for", &["1.2.3.4", "198.51.100.9"]);
        assert_eq!(p.client_ip(ip("10.0.0.1"), &h), ip("198.51.100.9"));
        // No header: the proxy itself.
        assert_eq!(
            p.client_ip(ip("10.0.0.1"), &HeaderMap::new()),
            ip("10.0.0.1")
        );
        // Thousands of entries the client wrote: only the last few are read, and the proxy's
        // is found; past 32 trusted proxies in a row, the 32nd is the client.
        let long = format!("{}198.51.100.9, 10.1.1.1", ",".repeat(10_000));
        let h = headers("x-forwarded-for", &[&long]);
        assert_eq!(p.client_ip(ip("10.0.0.1"), &h), ip("198.51.100.9"));
        let chain: Vec<String> = (0..40).map(|i| format!("10.0.0.{i}")).collect();
        let h = headers(
            "x-forwarded-for",
            &[&format!("198.51.100.9, {}", chain.join(", "))],
        );
        assert_eq!(p.client_ip(ip("10.0.0.1"), &h), ip("10.0.0.8"));
        // Garbage where the client should be: the proxy that wrote it.
        let h = headers("x-forwarded-for", &["unknown, 10.2.2.2"]);
        assert_eq!(p.client_ip(ip("10.0.0.1"), &h), ip("10.2.2.2"));
        // Bytes a header value may hold but a string may not (a tab, past ASCII), written by
        // the client on the line the proxy appended to: the address the proxy wrote.
        for forged in [&b"a\tb, 198.51.100.9"[..], &b"\xff, 198.51.100.9"[..]] {
            let mut h = HeaderMap::new();
            let v = HeaderValue::from_bytes(forged).unwrap();
            h.append("x-forwarded-for", v);
            assert_eq!(p.client_ip(ip("10.0.0.1"), &h), ip("198.51.100.9"));
        }
    }

    #[test]
    fn forwarded_for_elements_with_ports_brackets_and_quotes() {
        let p = proxies(ForwardedHeader::Forwarded);
        let h = headers(
            "forwarded",
            &[
                r#"for=1.2.3.4, for="[2001:db8:cafe::17]:4711";proto=https, for=10.9.9.9;by=10.0.0.1"#,
            ],
        );
        assert_eq!(p.client_ip(ip("::1"), &h), ip("2001:db8:cafe::17"));
        let h = headers("forwarded", &["for=192.0.2.60:8080;proto=http"]);
        assert_eq!(p.client_ip(ip("10.0.0.1"), &h), ip("192.0.2.60"));
        let h = headers("forwarded", &["for=_hidden"]);
        assert_eq!(p.client_ip(ip("10.0.0.1"), &h), ip("10.0.0.1"));
        // The other header is not read: a client cannot choose which one is believed.
        let h = headers("x-forwarded-for", &["198.51.100.9"]);
        assert_eq!(p.client_ip(ip("10.0.0.1"), &h), ip("10.0.0.1"));
    }

    #[test]
    fn ipv6_is_bucketed_by_64_and_mapped_ipv4_is_ipv4() {
        assert_eq!(
            bucket(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            bucket(ip("2001:db8:1:2::1")),
            bucket(ip("2001:db8:1:2:ffff::"))
        );
        assert_ne!(bucket(ip("2001:db8:1:2::1")), bucket(ip("2001:db8:1:3::1")));
        assert_eq!(bucket(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(bucket_key(ip("2001:db8:1:2::9")), "2001:db8:1:2::/64");
        assert_eq!(bucket_key(ip("192.0.2.1")), "192.0.2.1");
    }
}
