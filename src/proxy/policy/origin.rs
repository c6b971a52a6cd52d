//! `Origin` validation, the MCP spec's defence against DNS rebinding: a browser page on another
//! site must not reach local MCP servers through the proxy. Requests without `Origin` (every
//! non-browser client) pass; with one, it must match the allow-list by scheme, host and port.

/// (scheme, host, port) of an origin like `http://localhost:8080`; the port defaults by scheme.
fn parse(origin: &str) -> Option<(&str, &str, Option<u16>)> {
    let (scheme, rest) = origin.split_once("://")?;
    if rest.is_empty() || rest.contains('/') {
        return None;
    }
    // An IPv6 host is bracketed: [::1]:8080.
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p))
            if !h.ends_with(':')
                && (h.starts_with('[') == h.ends_with(']'))
                && !p.contains(']') =>
        {
            (h, Some(p))
        }
        _ => (rest, None),
    };
    let port = match port {
        Some("*") => None,
        Some(p) => Some(p.parse().ok()?),
        None => match scheme {
            "http" => Some(80),
            "https" => Some(443),
            _ => None,
        },
    };
    Some((scheme, host, port))
}

/// Whether the request's `Origin` is allowed by `list`.
pub fn allowed(origin: &[u8], list: &[String]) -> bool {
    let Ok(origin) = std::str::from_utf8(origin) else {
        return false;
    };
    let origin = origin.trim();
    if origin == "null" {
        return list.iter().any(|e| e == "null");
    }
    let Some((scheme, host, port)) = parse(origin) else {
        return false;
    };
    list.iter().any(|entry| {
        let any_port = entry.ends_with(":*");
        match parse(entry) {
            Some((s, h, p)) => {
                s.eq_ignore_ascii_case(scheme)
                    && h.eq_ignore_ascii_case(host)
                    && (any_port || p == port)
            }
            None => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Vec<String> {
        ["http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*"]
            .map(String::from)
            .to_vec()
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
        let list = vec![
            "https://app.example.com".to_string(),
            "http://x.test:8080".to_string(),
            "null".to_string(),
        ];
        assert!(allowed(b"https://app.example.com", &list));
        assert!(allowed(b"https://app.example.com:443", &list));
        assert!(!allowed(b"https://app.example.com:444", &list));
        assert!(allowed(b"http://x.test:8080", &list));
        assert!(!allowed(b"http://x.test", &list));
        assert!(allowed(b"null", &list));
    }
}
