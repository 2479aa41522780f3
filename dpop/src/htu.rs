//! `htu` comparison: scheme, host, port and path, normalised; query and fragment ignored.

use url::Url;

/// A URL reduced to what `htu` compares: `origin` (`scheme://host[:port]`, lower-case, no
/// default port) and `path` (dot segments resolved, never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedUrl {
    pub origin: String,
    pub path: String,
}

fn is_http(url: &Url) -> bool {
    matches!(url.scheme(), "http" | "https")
}

/// Normalises an absolute `http(s)` URL (query and fragment dropped). `None` for anything
/// else: a relative URL, another scheme, credentials in the URL, an unparsable string.
pub fn normalize_url(raw: &str) -> Option<NormalizedUrl> {
    if raw.len() > 2048 {
        return None;
    }
    let url = Url::parse(raw).ok()?;
    if !is_http(&url) || url.host_str().is_none() || !url.username().is_empty() {
        return None;
    }
    if url.password().is_some() {
        return None;
    }
    Some(NormalizedUrl {
        origin: url.origin().ascii_serialization(),
        path: url.path().to_owned(),
    })
}

/// Normalises an origin as configured (`https://App.Example.com:443/` → `https://app.example.com`).
pub fn normalize_origin(raw: &str) -> Option<String> {
    let url = Url::parse(raw.trim()).ok()?;
    if !is_http(&url) || url.host_str().is_none() || !url.username().is_empty() {
        return None;
    }
    (url.path() == "/" && url.query().is_none() && url.fragment().is_none())
        .then(|| url.origin().ascii_serialization())
}

/// The request's path as the `htu` parser would have left it (`/a%7e` → `/a%7e`, `/a b` →
/// `/a%20b`); `None` for a path with a dot segment (`.`, `..`, `%2e` in any case), a
/// backslash or a control character (which the URL parser drops: `/.\t./` is `/../`):
/// resolved, `/x/%2e%2e/orders` would pass a proof for `/orders`, while the application routes
/// it elsewhere (`/x/:id/orders`). No browser sends one.
pub(crate) fn normalize_path(path: &str) -> Option<String> {
    let dot = |segment: &str| {
        let s = segment.to_ascii_lowercase().replace("%2e", ".");
        s == "." || s == ".."
    };
    let odd = |c: char| c == '\\' || c.is_ascii_control();
    if !path.starts_with('/') || path.contains(odd) || path.split('/').any(dot) {
        return None;
    }
    let url = Url::parse(&format!("http://h{path}")).ok()?;
    Some(url.path().to_owned())
}

/// The origin a `Host` header names with `scheme` (`Example.com:80`, `http` → `http://example.com`).
pub(crate) fn origin_of_host(scheme: &str, host: &str) -> Option<String> {
    if host.is_empty() || host.contains(['/', '@', '?', '#', '\\']) {
        return None;
    }
    normalize_origin(&format!("{scheme}://{host}"))
}

/// `localhost` or a loopback address (`127.x.x.x`, `[::1]`), with or without a port.
pub fn is_loopback_host(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(origin: &str, path: &str) -> Option<NormalizedUrl> {
        Some(NormalizedUrl {
            origin: origin.into(),
            path: path.into(),
        })
    }

    #[test]
    fn normalisation() {
        let cases = [
            (
                "https://EXAMPLE.com/api/me",
                n("https://example.com", "/api/me"),
            ),
            (
                "HTTPS://example.com:443/api/me",
                n("https://example.com", "/api/me"),
            ),
            ("http://example.com:80", n("http://example.com", "/")),
            (
                "http://example.com:8080/x?y=1#z",
                n("http://example.com:8080", "/x"),
            ),
            (
                "http://127.0.0.1:18181/api/./v/../me",
                n("http://127.0.0.1:18181", "/api/me"),
            ),
            ("http://[::1]:80/a", n("http://[::1]", "/a")),
            (
                "https://example.com/%7euser",
                n("https://example.com", "/%7euser"),
            ),
            ("ftp://example.com/", None),
            ("/api/me", None),
            ("https://user:pw@example.com/", None),
            ("https://user@example.com/", None),
            ("javascript:alert(1)", None),
            ("", None),
            ("https://", None),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize_url(raw), want, "{raw}");
        }
    }

    #[test]
    fn origins_and_hosts() {
        assert_eq!(
            normalize_origin("https://App.Example.com:443/").as_deref(),
            Some("https://app.example.com")
        );
        assert_eq!(normalize_origin("https://a.example/path"), None);
        assert_eq!(normalize_origin("*"), None);
        assert_eq!(
            origin_of_host("http", "LOCALHOST:80").as_deref(),
            Some("http://localhost")
        );
        assert_eq!(origin_of_host("http", "evil.example/x"), None);
        assert_eq!(origin_of_host("http", "a@b"), None);
        assert_eq!(origin_of_host("http", ""), None);
        assert_eq!(normalize_path("/a b/%7e").as_deref(), Some("/a%20b/%7e"));
        for moved in [
            "/a/./b",
            "/x/../c",
            "/x/%2e%2E/c",
            "/x/%2E",
            "/x\\..\\c",
            "/x/.\t./c",
        ] {
            assert_eq!(normalize_path(moved), None, "{moved}");
        }
        assert_eq!(normalize_path("/a/.b/c..").as_deref(), Some("/a/.b/c.."));
        assert_eq!(normalize_path("a"), None);
    }

    #[test]
    fn loopback_hosts_are_told_apart() {
        for host in [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1",
            "127.1.2.3:443",
            "[::1]",
            "[::1]:80",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "",
            "api.example",
            "api.example:443",
            "10.0.0.1",
            "[::2]:80",
            "127.0.0.1.evil",
            "localhost.evil",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }
}
