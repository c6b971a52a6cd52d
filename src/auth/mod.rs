//! Credentials: who a request's `Authorization` says the caller is. API keys (by the SHA-256 of
//! the key) and OAuth 2.1 access tokens (JWTs verified against the issuer's published keys,
//! RFC 8414 / OpenID discovery, RFC 7517 key sets). The proxy's policy core asks
//! [`Authenticator::authenticate`] and decides what the answer means for the request; this room
//! decides nothing about requests.
//!
//! A verified token is remembered until it expires (`cache`), so a warm request costs one hash
//! lookup; the key set is refreshed in the background (`keys`), and a token signed with a key
//! the set does not hold asks for a refresh at most once per `auth.jwks_cooldown`.

mod cache;
mod fetch;
mod keys;

pub use fetch::FetchError;
pub use keys::KeySet;

use crate::config::{AuditMode, AuthConfig, AuthMode};
use arc_swap::ArcSwap;
use cache::TokenCache;
use jsonwebtoken::errors::ErrorKind;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Who a request comes from.
#[derive(Debug, PartialEq, Eq)]
pub struct Principal {
    /// `key:NAME` for an API key, `sub:SUBJECT` (or `client:ID`) for a token: what logs, limits
    /// and the audit show.
    pub name: Arc<str>,
    pub scopes: Vec<String>,
    /// Categories an API key is limited to; `None`: any.
    pub categories: Option<Vec<String>>,
    /// The token's `aud` values; `None` for an API key, a credential of this proxy's own.
    pub audiences: Option<Vec<String>>,
    /// Binds sessions to the caller: a session sealed for one principal is refused to another.
    pub binding: [u8; 16],
    /// Seconds since the epoch; `None`: does not expire (an API key).
    pub expires: Option<u64>,
}

impl Principal {
    pub fn has_scopes(&self, needed: &[String]) -> bool {
        needed.iter().all(|s| self.scopes.iter().any(|h| h == s))
    }

    pub fn may_reach(&self, category: &str) -> bool {
        self.categories
            .as_ref()
            .is_none_or(|c| c.iter().any(|n| n == category))
    }

    /// RFC 8707: the token was issued for this proxy, or for the category's own resource URI.
    pub fn meant_for(&self, audience: Option<&str>, category: &str) -> bool {
        let Some(audience) = audience else {
            return true;
        };
        let Some(audiences) = &self.audiences else {
            return true;
        };
        audiences.iter().any(|a| {
            let a = a.trim_end_matches('/');
            a == audience
                || a.strip_prefix(audience)
                    .and_then(|rest| rest.strip_prefix("/mcp/"))
                    .is_some_and(|c| c == category)
        })
    }
}

/// Why a credential was not accepted. Each is a fixed label of `mcp_fleet_auth_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials")]
    Missing,
    #[error("the Authorization field is not a bearer credential")]
    NotBearer,
    #[error("unknown API key")]
    UnknownKey,
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token is signed with an algorithm this proxy does not accept")]
    Algorithm,
    #[error("the token is signed with a key the issuer does not publish")]
    UnknownSigningKey,
    #[error("the token's signature does not verify")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token is from another issuer")]
    Issuer,
    #[error("the token was issued for another resource")]
    Audience,
    #[error("the issuer's signing keys are not available yet")]
    NoKeys,
}

impl AuthError {
    pub fn label(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::NotBearer => "not_bearer",
            Self::UnknownKey => "unknown_key",
            Self::Malformed => "malformed",
            Self::Algorithm => "algorithm",
            Self::UnknownSigningKey => "unknown_kid",
            Self::Signature => "signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::Issuer => "issuer",
            Self::Audience => "audience",
            Self::NoKeys => "no_keys",
        }
    }
}

/// `url` with `segment` (a `/.well-known/...` path) put between its origin and its path, as
/// RFC 8414 (authorization server metadata) and RFC 9728 (resource metadata) both place it.
pub fn well_known(url: &str, segment: &str) -> String {
    let url = url.trim_end_matches('/');
    let (origin, path) = match url.find("://").map(|i| i + 3) {
        Some(start) => match url[start..].find('/') {
            Some(i) => url.split_at(start + i),
            None => (url, ""),
        },
        None => (url, ""),
    };
    format!("{origin}{segment}{path}")
}

/// The credential in an `Authorization` field value: `Bearer <token>` (scheme case-insensitive).
pub fn bearer(value: &[u8]) -> Result<&[u8], AuthError> {
    let value = value.trim_ascii();
    if value.len() < 7 || !value[..7].eq_ignore_ascii_case(b"bearer ") {
        return Err(AuthError::NotBearer);
    }
    let token = value[7..].trim_ascii();
    if token.is_empty() || token.len() > 16 * 1024 {
        return Err(AuthError::NotBearer);
    }
    Ok(token)
}

fn binding(kind: &str, parts: &[&str]) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(b"mcp-fleet/principal/v1");
    h.update(kind.as_bytes());
    for p in parts {
        h.update((p.len() as u32).to_be_bytes());
        h.update(p.as_bytes());
    }
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize()[..16]);
    out
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What the config says about credentials, built once per load or reload.
struct Settings {
    config: AuthConfig,
    api_keys: HashMap<[u8; 32], Arc<Principal>>,
}

impl Settings {
    fn new(config: &AuthConfig) -> Self {
        let api_keys = config
            .api_keys
            .iter()
            .map(|k| {
                let principal = Principal {
                    name: format!("key:{}", k.name).into(),
                    scopes: k.scopes.clone(),
                    categories: k.categories.clone(),
                    audiences: None,
                    binding: binding("key", &[&k.name]),
                    expires: None,
                };
                (k.sha256, Arc::new(principal))
            })
            .collect();
        Self {
            config: config.clone(),
            api_keys,
        }
    }
}

/// The claims this proxy reads of an access token (RFC 9068 names, and the usual variants).
#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    client_id: Option<String>,
    azp: Option<String>,
    #[serde(default)]
    aud: OneOrMany,
    scope: Option<String>,
    #[serde(default)]
    scp: OneOrMany,
    exp: u64,
}

#[derive(Deserialize, Default)]
#[serde(untagged)]
enum OneOrMany {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            Self::None => Vec::new(),
            Self::One(s) => vec![s],
            Self::Many(v) => v,
        }
    }
}

/// The credentials side of the edge, shared by both engines and the key refresher.
pub struct Authenticator {
    settings: ArcSwap<Settings>,
    keys: ArcSwap<KeySet>,
    cache: TokenCache,
    /// Bumped by every fetch of the key set, good or bad, so waiters can tell one happened.
    fetched: tokio::sync::watch::Sender<u64>,
    /// Asks the refresher for a fetch now.
    wake: tokio::sync::Notify,
    /// When the last fetch asked for by an unknown key began (ms since the epoch).
    last_forced: AtomicU64,
    /// `auth.mode` and whether `auth.audit = "all"`, which every request reads (twice or three
    /// times): one atomic load instead of a load of `settings` each (see [`flags`]).
    flags: AtomicU8,
}

/// `mode` in the low two bits, `audit = "all"` in the third.
fn flags(config: &AuthConfig) -> u8 {
    let mode = match config.mode {
        AuthMode::None => 0,
        AuthMode::ApiKey => 1,
        AuthMode::OAuth => 2,
    };
    mode | (u8::from(config.audit == AuditMode::All) << 2)
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authenticator(..)")
    }
}

impl Authenticator {
    pub fn new(config: &AuthConfig) -> Self {
        Self {
            settings: ArcSwap::from_pointee(Settings::new(config)),
            keys: ArcSwap::from_pointee(KeySet::default()),
            cache: TokenCache::new(config.token_cache),
            fetched: tokio::sync::watch::Sender::new(0),
            wake: tokio::sync::Notify::new(),
            last_forced: AtomicU64::new(0),
            flags: AtomicU8::new(flags(config)),
        }
    }

    /// The `auth.mode` in force.
    pub fn mode(&self) -> AuthMode {
        match self.flags.load(Ordering::Relaxed) & 3 {
            0 => AuthMode::None,
            1 => AuthMode::ApiKey,
            _ => AuthMode::OAuth,
        }
    }

    /// `auth.audit = "all"` is in force.
    pub fn audits_all(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & 4 != 0
    }

    /// Takes a reloaded `[auth]`. Verified tokens are forgotten (the issuer, audience or keys
    /// they were checked against may be other now); a new issuer's keys are fetched at once.
    pub fn reload(&self, config: &AuthConfig) {
        let old = self.settings.load();
        if old.config == *config {
            return;
        }
        let issuer_changed =
            old.config.issuer != config.issuer || old.config.ca_file != config.ca_file;
        self.settings.store(Arc::new(Settings::new(config)));
        self.flags.store(flags(config), Ordering::Relaxed);
        self.cache.clear();
        self.cache.resize(config.token_cache);
        if issuer_changed {
            self.keys.store(Arc::new(KeySet::default()));
            self.wake.notify_one();
        }
    }

    /// Reads the `[auth]` in force.
    pub fn with_config<R>(&self, f: impl FnOnce(&AuthConfig) -> R) -> R {
        f(&self.settings.load().config)
    }

    /// The principal a bearer credential names. A token signed with a key not in the set gives
    /// `UnknownSigningKey`: the caller may [`Self::refresh_keys`] and ask again.
    pub fn authenticate(&self, credential: &[u8]) -> Result<Arc<Principal>, AuthError> {
        let settings = self.settings.load();
        let config = &settings.config;
        let is_jwt = credential.iter().filter(|&&b| b == b'.').count() == 2;
        if !is_jwt || config.mode == AuthMode::ApiKey {
            if settings.api_keys.is_empty() {
                return Err(AuthError::Malformed);
            }
            let digest: [u8; 32] = Sha256::digest(credential).into();
            return settings
                .api_keys
                .get(&digest)
                .cloned()
                .ok_or(AuthError::UnknownKey);
        }
        if config.mode != AuthMode::OAuth {
            return Err(AuthError::UnknownKey);
        }
        let now = now_secs();
        let leeway = config.leeway.as_secs();
        if let Some(p) = self.cache.get(credential) {
            if p.expires.is_none_or(|e| now <= e + leeway) {
                return Ok(p);
            }
            return Err(AuthError::Expired);
        }
        let principal = Arc::new(self.verify(config, credential)?);
        self.cache.insert(credential, Arc::clone(&principal));
        Ok(principal)
    }

    fn verify(&self, config: &AuthConfig, token: &[u8]) -> Result<Principal, AuthError> {
        let token = std::str::from_utf8(token).map_err(|_| AuthError::Malformed)?;
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            // An `alg` outside the library's list (`none` among them).
            ErrorKind::Json(_) => AuthError::Algorithm,
            _ => AuthError::Malformed,
        })?;
        let keys = self.keys.load();
        if keys.is_empty() {
            return Err(AuthError::NoKeys);
        }
        let key = keys.find(header.kid.as_deref(), header.alg)?;
        let issuer = config.issuer.as_deref().unwrap_or_default();
        let mut validation = jsonwebtoken::Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.leeway = config.leeway.as_secs();
        validation.validate_nbf = true;
        // The audience is checked per request against the category reached (`meant_for`).
        validation.validate_aud = false;
        validation.set_issuer(&[issuer, &format!("{issuer}/")]);
        validation.set_required_spec_claims(&["exp", "iss"]);
        let data =
            jsonwebtoken::decode::<Claims>(token, &key.key, &validation).map_err(|e| {
                match e.kind() {
                    ErrorKind::ExpiredSignature => AuthError::Expired,
                    ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                    ErrorKind::InvalidIssuer => AuthError::Issuer,
                    ErrorKind::InvalidSignature => AuthError::Signature,
                    ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                        AuthError::Algorithm
                    }
                    _ => AuthError::Malformed,
                }
            })?;
        let c = data.claims;
        let who = c
            .sub
            .or(c.client_id)
            .or(c.azp)
            .ok_or(AuthError::Malformed)?;
        let mut scopes: Vec<String> = c
            .scope
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        scopes.extend(c.scp.into_vec());
        let audiences = c.aud.into_vec();
        if audiences.is_empty() {
            return Err(AuthError::Audience);
        }
        Ok(Principal {
            name: format!("sub:{who}").into(),
            scopes,
            categories: None,
            audiences: Some(audiences),
            binding: binding("sub", &[issuer, &who]),
            expires: Some(c.exp),
        })
    }

    /// Asks for the issuer's keys again because a token named one the set lacks, and waits
    /// (briefly) for the fetch; at most once per `auth.jwks_cooldown`, so forged key ids
    /// cannot drive fetches. True when a fetch completed.
    pub async fn refresh_keys(&self) -> bool {
        let cooldown = self.settings.load().config.jwks_cooldown.as_millis() as u64;
        let now = crate::upstream::clock::now_ms();
        let last = self.last_forced.load(Ordering::Acquire);
        if last != 0 && now.saturating_sub(last) < cooldown {
            return false;
        }
        self.last_forced.store(now, Ordering::Release);
        let mut fetched = self.fetched.subscribe();
        fetched.mark_unchanged();
        self.wake.notify_one();
        tokio::time::timeout(Duration::from_secs(5), fetched.changed())
            .await
            .is_ok()
    }

    /// Keeps the issuer's key set fresh: at start, every `auth.jwks_refresh`, and when
    /// [`Self::refresh_keys`] asks. A failed fetch keeps the set it has and tries again soon.
    pub async fn run_refresher(self: Arc<Self>) {
        let mut failures = 0u32;
        loop {
            let settings = self.settings.load_full();
            let config = &settings.config;
            let wait = match (config.mode, &config.issuer) {
                (AuthMode::OAuth, Some(issuer)) => {
                    match fetch::key_set(issuer, config.ca_file.as_deref()).await {
                        Ok(set) => {
                            failures = 0;
                            self.install(set);
                            config.jwks_refresh
                        }
                        Err(e) => {
                            failures += 1;
                            crate::metrics::auth_key_fetch_failed();
                            tracing::warn!(issuer = %issuer, error = %e, "cannot fetch the issuer's signing keys");
                            Duration::from_secs(1 << failures.min(5)).min(config.jwks_refresh)
                        }
                    }
                }
                _ => Duration::from_secs(3600),
            };
            self.fetched.send_modify(|g| *g += 1);
            let _ = tokio::time::timeout(wait, self.wake.notified()).await;
        }
    }

    /// Puts a fetched key set in force (the refresher's step; benches install their own).
    pub fn install(&self, set: KeySet) {
        let old = self.keys.load();
        // A key that left the set no longer vouches for tokens verified with it.
        if old.ids().any(|kid| !set.holds(kid)) {
            self.cache.clear();
        }
        if old.ids().ne(set.ids()) {
            tracing::info!(keys = set.len(), "issuer's signing keys loaded");
        }
        crate::metrics::auth_keys(set.len());
        self.keys.store(Arc::new(set));
    }

    /// Keys in the set now (for `/health` and tests).
    pub fn key_count(&self) -> usize {
        self.keys.load().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_credentials_are_read_one_way() {
        assert_eq!(bearer(b"Bearer abc"), Ok(&b"abc"[..]));
        assert_eq!(bearer(b"bearer  abc "), Ok(&b"abc"[..]));
        assert_eq!(bearer(b"Basic abc"), Err(AuthError::NotBearer));
        assert_eq!(bearer(b"Bearer "), Err(AuthError::NotBearer));
    }

    fn config(mode: AuthMode) -> AuthConfig {
        AuthConfig {
            mode,
            issuer: Some("https://idp.example.com".into()),
            audience: Some("https://mcp.example.com".into()),
            ca_file: None,
            api_keys_file: Some("keys.toml".into()),
            api_keys: vec![crate::config::ApiKey {
                name: "ci".into(),
                sha256: Sha256::digest(b"key-1").into(),
                categories: None,
                scopes: vec!["mcp:a".into()],
            }],
            allow_anonymous: false,
            leeway: Duration::from_secs(30),
            jwks_refresh: Duration::from_secs(300),
            jwks_cooldown: Duration::from_secs(10),
            token_cache: 10,
            audit: crate::config::AuditMode::Refused,
        }
    }

    #[test]
    fn the_mode_and_audit_read_per_request_follow_a_reload() {
        let auth = Authenticator::new(&config(AuthMode::ApiKey));
        assert_eq!((auth.mode(), auth.audits_all()), (AuthMode::ApiKey, false));
        for mode in [AuthMode::OAuth, AuthMode::None, AuthMode::ApiKey] {
            for audit in [
                crate::config::AuditMode::All,
                crate::config::AuditMode::Refused,
            ] {
                let mut next = config(mode);
                next.audit = audit;
                auth.reload(&next);
                let all = audit == crate::config::AuditMode::All;
                assert_eq!((auth.mode(), auth.audits_all()), (mode, all));
            }
        }
    }

    #[test]
    fn oauth_also_takes_the_api_keys_and_api_key_mode_takes_nothing_else() {
        let oauth = Authenticator::new(&config(AuthMode::OAuth));
        let p = oauth
            .authenticate(b"key-1")
            .expect("an API key in oauth mode");
        assert_eq!(&*p.name, "key:ci");
        assert!(p.meant_for(Some("https://mcp.example.com"), "any"));
        assert_eq!(oauth.authenticate(b"key-2"), Err(AuthError::UnknownKey));
        // A JWT while the issuer's keys are not loaded yet.
        assert_eq!(
            oauth.authenticate(b"eyJhbGciOiJSUzI1NiJ9.e30.sig"),
            Err(AuthError::NoKeys)
        );
        let keys = Authenticator::new(&config(AuthMode::ApiKey));
        assert_eq!(
            keys.authenticate(b"e30.e30.sig"),
            Err(AuthError::UnknownKey)
        );
    }

    #[test]
    fn a_token_for_a_category_uri_reaches_that_category_only() {
        let p = Principal {
            name: "sub:x".into(),
            scopes: vec![],
            categories: None,
            audiences: Some(vec!["https://mcp.example.com/mcp/database".into()]),
            binding: [0; 16],
            expires: None,
        };
        assert!(p.meant_for(Some("https://mcp.example.com"), "database"));
        assert!(!p.meant_for(Some("https://mcp.example.com"), "time"));
        assert!(!p.meant_for(Some("https://other.example.com"), "database"));
    }
}
