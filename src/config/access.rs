//! The model of who may call what: `[auth]` (credentials), `categories.NAME.auth` (scopes and
//! allow-lists), `categories.NAME.upstream_headers` (the proxy's own credential toward a
//! category's servers), `[proxy.rate_limit]` and `[proxy.tls]`. Plain data, like `model`.

use std::path::PathBuf;
use std::time::Duration;

/// `auth.mode`: which credentials a request must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Anyone who reaches the listener (refused beyond loopback unless `allow_anonymous`).
    None,
    /// `Authorization: Bearer <key>` with a key of `api_keys_file`.
    ApiKey,
    /// OAuth 2.1 access tokens (JWTs) of `issuer`; also the keys of `api_keys_file` if it is set.
    OAuth,
}

/// `auth.audit`: which decisions are written to the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditMode {
    Refused,
    All,
}

/// `[auth]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// The authorization server, as its tokens name it in `iss` (OAuth only).
    pub issuer: Option<String>,
    /// This proxy's canonical URI (RFC 8707); `{audience}/mcp/{category}` is accepted too.
    pub audience: Option<String>,
    /// CA certificates that sign the issuer's TLS certificate (else the system's).
    pub ca_file: Option<PathBuf>,
    pub api_keys_file: Option<PathBuf>,
    /// The keys read from `api_keys_file` (a reload reads the file again).
    pub api_keys: Vec<ApiKey>,
    /// Serve a non-loopback listener with `mode = "none"`: must be written to be true.
    pub allow_anonymous: bool,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// How often the issuer's key set is fetched again.
    pub jwks_refresh: Duration,
    /// Shortest time between two fetches caused by tokens signed with an unknown key.
    pub jwks_cooldown: Duration,
    /// Verified tokens remembered (until each expires) so a warm request pays no signature check.
    pub token_cache: usize,
    pub audit: AuditMode,
}

impl AuthConfig {
    pub fn enabled(&self) -> bool {
        self.mode != AuthMode::None
    }
}

/// One entry of `api_keys_file`. Only the key's SHA-256 is stored, never the key.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub name: String,
    pub sha256: [u8; 32],
    /// Categories the key may reach; `None`: all.
    pub categories: Option<Vec<String>>,
    pub scopes: Vec<String>,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("name", &self.name)
            .field("categories", &self.categories)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// `categories.NAME.auth`: what a caller needs for the category, and what it may use there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CategoryAuth {
    /// Scopes a token must hold (all of them) to reach the category.
    pub scopes: Vec<String>,
    /// `tools/call` names allowed; `None`: every tool.
    pub tools: Option<Vec<Pattern>>,
    /// `prompts/get` names allowed.
    pub prompts: Option<Vec<Pattern>>,
    /// `resources/read` URIs allowed.
    pub resources: Option<Vec<Pattern>>,
}

impl CategoryAuth {
    /// Requests of the category are read (method and name) before they are let through.
    pub fn inspects_bodies(&self) -> bool {
        self.tools.is_some() || self.prompts.is_some() || self.resources.is_some()
    }
}

/// An allow-list entry: an exact name, or a prefix when it ends with `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Exact(String),
    Prefix(String),
}

impl Pattern {
    pub fn parse(text: &str) -> Self {
        match text.strip_suffix('*') {
            Some(prefix) => Self::Prefix(prefix.to_string()),
            None => Self::Exact(text.to_string()),
        }
    }

    pub fn matches(&self, name: &str) -> bool {
        match self {
            Self::Exact(n) => n == name,
            Self::Prefix(p) => name.starts_with(p.as_str()),
        }
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exact(n) => f.write_str(n),
            Self::Prefix(p) => write!(f, "{p}*"),
        }
    }
}

/// A field the proxy adds to every request toward a category's servers (its own credential).
/// The value is read from the environment or a file when the config is loaded and never shown.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamHeader {
    /// Lower case.
    pub name: String,
    pub value: String,
    /// Where the value came from (`env:NAME`, `file:PATH`), what reports show.
    pub source: String,
}

impl std::fmt::Debug for UpstreamHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: <{}>", self.name, self.source)
    }
}

/// A token bucket: `rate` tokens a second, holding at most `burst`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
    /// As written (`"50/s"`).
    pub text: String,
}

/// `[proxy.rate_limit]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RateLimitConfig {
    /// Per authenticated principal.
    pub per_principal: Option<Rate>,
    /// Per client IP address, for requests without credentials (`auth.mode = "none"`).
    pub per_ip_anonymous: Option<Rate>,
}

/// `[proxy.tls]`: the listener speaks TLS (HTTP/1.1 and HTTP/2 by ALPN). The files are read at
/// start and again on every reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM: the certificate, then its chain.
    pub cert: PathBuf,
    /// PEM: its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}
