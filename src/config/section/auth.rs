//! `[auth]` with its API key file, `categories.NAME.auth`, `categories.NAME.upstream_headers`,
//! `[proxy.rate_limit]` and `[proxy.tls]`: who may call what, and the edge's own credentials.

use super::super::access::{
    ApiKey, AuditMode, AuthConfig, AuthMode, CategoryAuth, Pattern, Rate, RateLimitConfig,
    TlsConfig, UpstreamHeader,
};
use super::super::defaults as d;
use super::super::fields::{bounded, choice, duration, resolve, Errors};
use super::super::raw::{RawAuth, RawCategoryAuth, RawRateLimit, RawTls};
use super::super::units::parse_duration;
use super::super::ConfigError;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

pub(in crate::config) fn auth(a: &RawAuth, base: &Path, errors: &mut Errors) -> AuthConfig {
    let mode = choice(
        "auth.mode",
        a.mode.as_deref(),
        AuthMode::None,
        &[
            ("none", AuthMode::None),
            ("api-key", AuthMode::ApiKey),
            ("oauth", AuthMode::OAuth),
        ],
        errors,
    );
    let api_keys_file = a.api_keys_file.as_deref().map(|p| resolve(base, p));
    let api_keys = match &api_keys_file {
        Some(path) => api_keys(path, errors),
        None => Vec::new(),
    };
    let mut issuer = a.issuer.clone();
    let mut audience = a.audience.clone();
    match mode {
        AuthMode::None => {
            for (key, set) in [
                ("auth.issuer", issuer.is_some()),
                ("auth.audience", audience.is_some()),
                ("auth.api_keys_file", api_keys_file.is_some()),
            ] {
                if set {
                    errors.push(ConfigError::new(
                        key,
                        "(set)",
                        "unused with auth.mode = \"none\": set auth.mode to \"api-key\" or \"oauth\"",
                    ));
                }
            }
        }
        AuthMode::ApiKey => {
            if api_keys_file.is_none() {
                errors.push(ConfigError::new(
                    "auth.api_keys_file",
                    "(missing)",
                    "auth.mode = \"api-key\" needs the file of keys",
                ));
            }
        }
        AuthMode::OAuth => {
            issuer = Some(required_url("auth.issuer", issuer.take(), errors));
            audience = Some(required_url("auth.audience", audience.take(), errors));
        }
    }
    AuthConfig {
        mode,
        issuer,
        audience,
        ca_file: a.ca_file.as_deref().map(|p| resolve(base, p)),
        api_keys_file,
        api_keys,
        allow_anonymous: a.allow_anonymous.unwrap_or(false),
        leeway: match a.leeway.as_deref().map(parse_duration) {
            None => d::AUTH_LEEWAY,
            Some(Ok(v)) if v <= d::AUTH_MAX_LEEWAY => v,
            Some(_) => {
                errors.push(ConfigError::new(
                    "auth.leeway",
                    format!("{:?}", a.leeway.as_deref().unwrap_or_default()),
                    "must be a duration of at most 5m, e.g. \"30s\"",
                ));
                d::AUTH_LEEWAY
            }
        },
        jwks_refresh: duration(
            "auth.jwks_refresh",
            a.jwks_refresh.as_deref(),
            d::JWKS_REFRESH,
            errors,
        ),
        jwks_cooldown: duration(
            "auth.jwks_cooldown",
            a.jwks_cooldown.as_deref(),
            d::JWKS_COOLDOWN,
            errors,
        ),
        token_cache: bounded(
            "auth.token_cache",
            a.token_cache,
            d::TOKEN_CACHE,
            0..=10_000_000,
            errors,
        ) as usize,
        audit: choice(
            "auth.audit",
            a.audit.as_deref(),
            AuditMode::Refused,
            &[("refused", AuditMode::Refused), ("all", AuditMode::All)],
            errors,
        ),
    }
}

/// An `http(s)://` URL; `http://` only on a loopback host (a token's keys fetched in clear text
/// from a network host could be swapped on the way).
fn required_url(key: &str, value: Option<String>, errors: &mut Errors) -> String {
    let Some(text) = value else {
        errors.push(ConfigError::new(
            key,
            "(missing)",
            "auth.mode = \"oauth\" needs it (an https:// URL)",
        ));
        return String::new();
    };
    let why = if let Some(rest) = text.strip_prefix("http://") {
        (!loopback_host(rest))
            .then_some("http:// is accepted for a loopback host only: use https://")
    } else if text.starts_with("https://") {
        None
    } else {
        Some("must be an https:// URL")
    };
    if let Some(why) = why {
        errors.push(ConfigError::new(key, format!("{text:?}"), why));
    }
    text.trim_end_matches('/').to_string()
}

/// An `http://` URL whose host is on loopback (the only clear-text URLs the proxy fetches
/// keys from).
pub fn loopback_http_url(url: &str) -> bool {
    url.strip_prefix("http://").is_some_and(loopback_host)
}

fn loopback_host(rest: &str) -> bool {
    let authority = rest.split('/').next().unwrap_or_default();
    if let Ok(addr) = authority.parse::<SocketAddr>() {
        return addr.ip().is_loopback();
    }
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    #[serde(default)]
    key: Vec<KeyEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    name: String,
    sha256: String,
    categories: Option<Vec<String>>,
    #[serde(default)]
    scopes: Vec<String>,
}

/// The `[[key]]` entries of `auth.api_keys_file`; each error names the file and the entry.
fn api_keys(path: &Path, errors: &mut Errors) -> Vec<ApiKey> {
    let key = "auth.api_keys_file";
    let shown = format!("{:?}", path.display().to_string());
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            errors.push(ConfigError::new(key, shown, format!("cannot read it: {e}")));
            return Vec::new();
        }
    };
    let file: KeyFile = match toml::from_str(&text) {
        Ok(f) => f,
        Err(e) => {
            errors.push(ConfigError::new(
                key,
                shown,
                format!("not a file of [[key]] entries (name, sha256, categories, scopes): {e}"),
            ));
            return Vec::new();
        }
    };
    let errors_before = errors.len();
    let mut keys = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    for (i, entry) in file.key.into_iter().enumerate() {
        let at = format!("{key}[{i}] ({})", entry.name);
        let Some(sha256) = hex32(&entry.sha256) else {
            errors.push(ConfigError::new(
                format!("{at}.sha256"),
                format!("{:?}", entry.sha256),
                "must be 64 hex digits: the SHA-256 of the key (`printf %s KEY | sha256sum`)",
            ));
            continue;
        };
        if entry.name.is_empty() || !names.insert(entry.name.clone()) {
            errors.push(ConfigError::new(
                format!("{at}.name"),
                format!("{:?}", entry.name),
                "each key needs a name of its own (it names the caller in logs and limits)",
            ));
            continue;
        }
        keys.push(ApiKey {
            name: entry.name,
            sha256,
            categories: entry.categories,
            scopes: entry.scopes,
        });
    }
    if keys.is_empty() && errors.len() == errors_before {
        errors.push(ConfigError::new(key, shown, "holds no [[key]] entry"));
    }
    keys
}

fn hex32(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in text.as_bytes().chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

pub(in crate::config) fn category_auth(
    name: &str,
    a: &RawCategoryAuth,
    errors: &mut Errors,
) -> CategoryAuth {
    let list = |k: &str, v: &Option<Vec<String>>, errors: &mut Errors| {
        v.as_ref().map(|names| {
            names
                .iter()
                .filter_map(|n| {
                    if n.is_empty() || n == "*" {
                        errors.push(ConfigError::new(
                            format!("categories.{name}.auth.{k}"),
                            format!("{n:?}"),
                            "an entry is a name or a prefix ending in '*'; leave the key out to allow all",
                        ));
                        return None;
                    }
                    Some(Pattern::parse(n))
                })
                .collect()
        })
    };
    CategoryAuth {
        scopes: a.scopes.clone().unwrap_or_default(),
        tools: list("tools", &a.tools, errors),
        prompts: list("prompts", &a.prompts, errors),
        resources: list("resources", &a.resources, errors),
    }
}

/// Field names a category may not set toward its servers: the proxy's own (framing, routing,
/// the session) would break the exchange.
const RESERVED_FIELDS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "mcp-session-id",
    "x-forwarded-host",
];

pub(in crate::config) fn upstream_headers(
    name: &str,
    table: Option<&BTreeMap<String, String>>,
    base: &Path,
    errors: &mut Errors,
) -> Vec<UpstreamHeader> {
    let mut out = Vec::new();
    for (field, source) in table.into_iter().flatten() {
        let key = format!("categories.{name}.upstream_headers.{field}");
        let lower = field.to_ascii_lowercase();
        if http::HeaderName::from_bytes(lower.as_bytes()).is_err()
            || RESERVED_FIELDS.contains(&lower.as_str())
        {
            errors.push(ConfigError::new(
                key,
                format!("{source:?}"),
                "not a field name the proxy can add (a valid name, not one of Host, Content-Length, Transfer-Encoding, Connection, Mcp-Session-Id)",
            ));
            continue;
        }
        let value = if let Some(var) = source.strip_prefix("env:") {
            std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))
        } else if let Some(file) = source.strip_prefix("file:") {
            std::fs::read_to_string(resolve(base, file))
                .map(|v| v.trim_end_matches(['\r', '\n']).to_string())
                .map_err(|e| format!("cannot read {file}: {e}"))
        } else {
            Err(
                "must be \"env:NAME\" or \"file:PATH\": a credential is not written in the config"
                    .into(),
            )
        };
        match value {
            Ok(v) if http::HeaderValue::from_str(&v).is_ok() && !v.is_empty() => {
                out.push(UpstreamHeader {
                    name: lower,
                    value: v,
                    source: source.clone(),
                })
            }
            Ok(_) => errors.push(ConfigError::new(
                key,
                format!("{source:?}"),
                "the value read is empty or not a valid header value",
            )),
            Err(why) => errors.push(ConfigError::new(key, format!("{source:?}"), why)),
        }
    }
    out
}

pub(in crate::config) fn rate_limit(r: &RawRateLimit, errors: &mut Errors) -> RateLimitConfig {
    let burst = match r.burst.as_deref().map(parse_duration) {
        None => d::RATE_BURST,
        Some(Ok(b)) if !b.is_zero() => b,
        Some(_) => {
            errors.push(ConfigError::new(
                "proxy.rate_limit.burst",
                format!("{:?}", r.burst.as_deref().unwrap_or_default()),
                "must be a duration above zero: the bucket holds that long a run at the rate, e.g. \"1s\"",
            ));
            d::RATE_BURST
        }
    };
    let rate = |key: &str, v: &Option<String>, errors: &mut Errors| {
        let text = v.as_deref()?;
        match parse_rate(text) {
            Some(per_second) => Some(Rate {
                per_second,
                burst: (per_second * burst.as_secs_f64()).max(1.0),
                text: text.to_string(),
            }),
            None => {
                errors.push(ConfigError::new(
                    key,
                    format!("{text:?}"),
                    "must be a rate like \"50/s\", \"300/m\" or \"1000/h\" (above zero)",
                ));
                None
            }
        }
    };
    RateLimitConfig {
        per_principal: rate("proxy.rate_limit.per_principal", &r.per_principal, errors),
        per_ip_anonymous: rate(
            "proxy.rate_limit.per_ip_anonymous",
            &r.per_ip_anonymous,
            errors,
        ),
    }
}

fn parse_rate(text: &str) -> Option<f64> {
    let (n, unit) = text.trim().split_once('/')?;
    let n: f64 = n.trim().parse().ok()?;
    let per = match unit.trim() {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return None,
    };
    (n.is_finite() && n > 0.0).then_some(n / per)
}

pub(in crate::config) fn tls(t: &RawTls, base: &Path, errors: &mut Errors) -> Option<TlsConfig> {
    match (&t.cert, &t.key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(TlsConfig {
            cert: resolve(base, cert),
            key: resolve(base, key),
        }),
        (Some(_), None) => {
            errors.push(ConfigError::new(
                "proxy.tls.key",
                "(missing)",
                "proxy.tls.cert needs its private key beside it",
            ));
            None
        }
        (None, Some(_)) => {
            errors.push(ConfigError::new(
                "proxy.tls.cert",
                "(missing)",
                "proxy.tls.key needs its certificate chain beside it",
            ));
            None
        }
    }
}

/// Secure by default: a listener beyond loopback with no authentication must be asked for.
pub(in crate::config) fn check_exposure(
    listen: SocketAddr,
    auth: &AuthConfig,
    errors: &mut Errors,
) {
    if !listen.ip().is_loopback() && !auth.enabled() && !auth.allow_anonymous {
        errors.push(ConfigError::new(
            "proxy.listen",
            format!("\"{listen}\""),
            "not a loopback address and auth.mode = \"none\": anyone who reaches it could call every tool. \
             Set auth.mode (\"api-key\" or \"oauth\"), listen on 127.0.0.1, or write auth.allow_anonymous = true",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_as_written() {
        assert_eq!(parse_rate("50/s"), Some(50.0));
        assert_eq!(parse_rate("120/m"), Some(2.0));
        assert_eq!(parse_rate("0/s"), None);
        assert_eq!(parse_rate("5/d"), None);
        assert_eq!(parse_rate("fast"), None);
    }

    #[test]
    fn clear_text_issuers_only_on_loopback() {
        assert!(loopback_host("127.0.0.1:4000/x"));
        assert!(loopback_host("localhost:4000"));
        assert!(loopback_host("[::1]:4000"));
        assert!(!loopback_host("idp.example.com"));
        assert!(!loopback_host("10.0.0.1:80"));
    }
}
