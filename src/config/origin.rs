//! The one reading of a browser origin (`scheme://host[:port]`), used for the entries of
//! `proxy.allowed_origins` when the config is validated and for a request's `Origin` header when
//! the proxy admits it, so an entry that passes `check` is one that can match.

use std::fmt;

/// The port part of an origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginPort {
    /// Written, or the scheme's default (80 for http, 443 for https).
    Is(u16),
    /// `:*` in an allow-list entry: any port.
    Any,
    /// No port and a scheme without a default one.
    None,
}

/// A parsed origin, or the literal `null` (sandboxed pages, `file:` URLs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigin {
    Null,
    Site {
        scheme: String,
        host: String,
        port: OriginPort,
    },
}

impl AllowedOrigin {
    /// Parses an origin; `allow_any_port` accepts `:*` (allow-list entries only: a browser never
    /// sends it).
    pub fn parse(text: &str, allow_any_port: bool) -> Result<Self, &'static str> {
        let text = text.trim();
        if text == "null" {
            return Ok(Self::Null);
        }
        let (scheme, rest) = text
            .split_once("://")
            .ok_or("an origin is scheme://host[:port] (\":*\" for any port) or \"null\"")?;
        let scheme_ok = scheme
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic())
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
        if !scheme_ok {
            return Err("the scheme must be letters, digits, '+', '-' or '.' (e.g. \"https\")");
        }
        if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
            return Err("an origin has no path, query, fragment or user: scheme://host[:port]");
        }
        // An IPv6 host is bracketed: [::1]:8080.
        let (host, port) = match rest.strip_prefix('[') {
            Some(v6) => {
                let (inside, after) = v6.split_once(']').ok_or("an IPv6 host needs its ']'")?;
                if inside.parse::<std::net::Ipv6Addr>().is_err() {
                    return Err("not an IPv6 address inside [ ]");
                }
                let port = match after {
                    "" => None,
                    p => Some(
                        p.strip_prefix(':')
                            .ok_or("after ']' comes ':port' or nothing")?,
                    ),
                };
                (&rest[..inside.len() + 2], port)
            }
            None => match rest.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            },
        };
        if host.is_empty()
            || !host.starts_with('[')
                && !host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        {
            return Err("the host must be a name or an IP address");
        }
        let port = match port {
            Some("*") if allow_any_port => OriginPort::Any,
            Some("*") => return Err("\":*\" is only for allow-list entries"),
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => OriginPort::Is(n),
                _ => return Err("the port must be 1-65535 or \"*\""),
            },
            None => match scheme.to_ascii_lowercase().as_str() {
                "http" => OriginPort::Is(80),
                "https" => OriginPort::Is(443),
                _ => OriginPort::None,
            },
        };
        Ok(Self::Site {
            scheme: scheme.to_ascii_lowercase(),
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// Whether a request's origin (parsed with `allow_any_port = false`) matches this entry.
    pub fn admits(&self, origin: &Self) -> bool {
        match (self, origin) {
            (Self::Null, Self::Null) => true,
            (
                Self::Site { scheme, host, port },
                Self::Site {
                    scheme: s,
                    host: h,
                    port: p,
                },
            ) => scheme == s && host == h && (*port == OriginPort::Any || port == p),
            _ => false,
        }
    }
}

impl fmt::Display for AllowedOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Null => f.write_str("null"),
            Self::Site { scheme, host, port } => {
                write!(f, "{scheme}://{host}")?;
                match port {
                    OriginPort::Is(p) => write!(f, ":{p}"),
                    OriginPort::Any => f.write_str(":*"),
                    OriginPort::None => Ok(()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_that_pass_are_entries_that_can_match() {
        for bad in [
            "http://h:abc",
            "http://h:0",
            "http://h:99999",
            "http://h/path",
            "://h",
            "http://",
            "1ttp://h",
            "http://[::1",
            "http://[nope]:80",
            "http://u@h",
            "localhost:8080",
        ] {
            assert!(AllowedOrigin::parse(bad, true).is_err(), "{bad}");
        }
        let entry = AllowedOrigin::parse("HTTP://LocalHost:*", true).expect("valid");
        assert_eq!(entry.to_string(), "http://localhost:*");
        let v6 = AllowedOrigin::parse("http://[::1]:8080", true).expect("valid");
        assert!(v6.admits(&AllowedOrigin::parse("http://[::1]:8080", false).expect("v")));
        assert!(AllowedOrigin::parse("http://h:*", false).is_err());
    }
}
