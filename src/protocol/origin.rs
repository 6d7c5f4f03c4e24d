//! Origin allow-lists: which web pages may open a connection for an app.
//!
//! Browsers always send `Origin`, and a page cannot forge it, so checking it stops other sites from
//! using an app's key from their visitors' browsers. Clients that are not browsers send none (or
//! anything they like), so a missing `Origin` is allowed: the check protects browsers, not the key.

/// Whether `origin` (the header's value, e.g. `https://app.example.com:8443`) may connect.
///
/// Each allowed entry is one of:
/// - `*`: anything;
/// - a full origin with a scheme (`https://app.example.com`): compared exactly, case-insensitively;
/// - a host pattern (`example.com`, `*.example.com`): compared with the origin's host, `*.` matching
///   any number of subdomain labels (but not the bare domain).
pub fn origin_allowed(allowed: &[String], origin: Option<&str>) -> bool {
    if allowed.iter().any(|a| a == "*") {
        return true;
    }
    let Some(origin) = origin else { return true };
    let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    let host = host_of(&origin);
    allowed.iter().any(|entry| {
        let entry = entry.trim().trim_end_matches('/').to_ascii_lowercase();
        if entry.contains("://") {
            entry == origin
        } else if let Some(suffix) = entry.strip_prefix("*.") {
            host.is_some_and(|h| {
                h.len() > suffix.len() + 1 && h.ends_with(suffix) && h[..h.len() - suffix.len()].ends_with('.')
            })
        } else {
            host == Some(entry.as_str())
        }
    })
}

/// The host of `scheme://host[:port]`, without the port (IPv6 hosts keep their brackets).
fn host_of(origin: &str) -> Option<&str> {
    let authority = origin.split_once("://")?.1.split(['/', '?', '#']).next()?;
    let host = if authority.starts_with('[') {
        authority.split_inclusive(']').next()?
    } else {
        authority.split(':').next()?
    };
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Vec<String> {
        entries.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn star_allows_everything() {
        assert!(origin_allowed(&list(&["*"]), Some("https://evil.example")));
        assert!(origin_allowed(&list(&["*"]), None));
    }

    #[test]
    fn exact_origins_and_host_patterns() {
        let allowed = list(&["https://app.example.com", "laravel.test", "*.example.org"]);
        assert!(origin_allowed(&allowed, Some("https://app.example.com")));
        assert!(origin_allowed(&allowed, Some("HTTPS://APP.EXAMPLE.COM/")));
        assert!(!origin_allowed(&allowed, Some("http://app.example.com")), "scheme matters for full origins");
        assert!(!origin_allowed(&allowed, Some("https://app.example.com:8443")), "so does the port");
        assert!(origin_allowed(&allowed, Some("http://laravel.test:8000")));
        assert!(!origin_allowed(&allowed, Some("http://notlaravel.test")));
        assert!(!origin_allowed(&allowed, Some("http://laravel.test.evil.com")));
        assert!(origin_allowed(&allowed, Some("https://a.b.example.org")));
        assert!(!origin_allowed(&allowed, Some("https://example.org")), "*. needs a subdomain");
        assert!(!origin_allowed(&allowed, Some("https://badexample.org")));
        assert!(!origin_allowed(&allowed, Some("null")));
        assert!(!origin_allowed(&allowed, Some("")));
    }

    #[test]
    fn no_origin_header_is_not_a_browser() {
        assert!(origin_allowed(&list(&["https://app.example.com"]), None));
    }
}
