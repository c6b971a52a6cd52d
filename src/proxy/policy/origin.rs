//! `Origin` validation, the MCP spec's defence against DNS rebinding: a browser page on another
//! site must not reach local MCP servers through the proxy. Requests without `Origin` (every
//! non-browser client) pass; with one, it must match the allow-list by scheme, host and port.

use crate::config::AllowedOrigin;

/// Whether the request's `Origin` is allowed by `list`: read by the same parser that checked the
/// list's entries.
pub fn allowed(origin: &[u8], list: &[AllowedOrigin]) -> bool {
    let Ok(origin) = std::str::from_utf8(origin) else {
        return false;
    };
    let Ok(origin) = AllowedOrigin::parse(origin, false) else {
        return false;
    };
    list.iter().any(|entry| entry.admits(&origin))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Vec<AllowedOrigin> {
        entries
            .iter()
            .map(|e| AllowedOrigin::parse(e, true).expect("valid entry"))
            .collect()
    }

    fn defaults() -> Vec<AllowedOrigin> {
        list(crate::config::defaults::ALLOWED_ORIGINS)
    }

    #[test]
    fn loopback_origins_pass_others_do_not() {
        let list = defaults();
        for ok in [
            "http://localhost:3000",
            "http://127.0.0.1:8080",
            "http://[::1]:9",
            "http://localhost",
        ] {
            assert!(allowed(ok.as_bytes(), &list), "{ok}");
        }
        for bad in [
            "http://evil.example",
            "https://localhost:3000",
            "http://localhost.evil.example:80",
            "null",
            "garbage",
            "http://127.0.0.1:8080/path",
            "",
        ] {
            assert!(!allowed(bad.as_bytes(), &list), "{bad}");
        }
        assert!(!allowed(&[0xff, 0xfe], &list));
    }

    #[test]
    fn explicit_ports_and_null() {
        let list = list(&["https://app.example.com", "http://x.test:8080", "null"]);
        assert!(allowed(b"https://app.example.com", &list));
        assert!(allowed(b"https://app.example.com:443", &list));
        assert!(!allowed(b"https://app.example.com:444", &list));
        assert!(allowed(b"http://x.test:8080", &list));
        assert!(!allowed(b"http://x.test", &list));
        assert!(allowed(b"null", &list));
    }
}
