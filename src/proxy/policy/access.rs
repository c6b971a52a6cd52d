//! Who may reach a category: the credential step of admission (401 with a challenge, 403
//! `insufficient_scope`), the rate limits (429), and the audit line of each decision. The
//! credentials themselves are read by `crate::auth`; what they mean for a request is decided
//! here, once, for both engines.

use super::rate::RateLimiter;
use super::refusal::{Refusal, Tally};
use crate::auth::{bearer, AuthError, Authenticator, Principal};
use crate::config::{AuthConfig, AuthMode, ValidConfig};
use crate::upstream::UpstreamSet;
use std::net::IpAddr;
use std::sync::Arc;

/// The edge's state beside the config snapshot: credentials, their caches and the rate
/// buckets. Shared by both engines.
pub struct Edge {
    pub auth: Arc<Authenticator>,
    pub rates: RateLimiter,
}

pub type SharedEdge = Arc<Edge>;

impl Edge {
    pub fn new(config: &ValidConfig) -> Self {
        Self {
            auth: Arc::new(Authenticator::new(&config.auth)),
            rates: RateLimiter::default(),
        }
    }

    /// Takes a reloaded `[auth]` (rate limits come with the snapshot).
    pub fn reload(&self, auth: &AuthConfig) {
        self.auth.reload(auth);
    }
}

/// The reload step of `[auth]`: the API key file was read (and validated) with the config;
/// what is left is putting it in force.
pub struct EdgeReload(pub SharedEdge);

impl crate::reload::Reread for EdgeReload {
    fn load(&self, config: &ValidConfig) -> Result<Option<crate::reload::Commit>, String> {
        let same = self.0.auth.with_config(|a| *a == config.auth);
        if same {
            return Ok(None);
        }
        let edge = Arc::clone(&self.0);
        let auth = config.auth.clone();
        Ok(Some(Box::new(move || {
            edge.reload(&auth);
            format!(
                "auth: mode {:?}, {} API key(s)",
                auth.mode,
                auth.api_keys.len()
            )
        })))
    }
}

/// Who a request is from, as admission found it.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// `None`: anonymous (`auth.mode = "none"`).
    pub principal: Option<Arc<Principal>>,
    pub ip: Option<IpAddr>,
}

impl Caller {
    /// What sessions are bound to (empty for anonymous callers).
    pub fn binding(&self) -> &[u8] {
        self.principal.as_ref().map_or(&[], |p| &p.binding[..])
    }

    pub fn name(&self) -> &str {
        self.principal.as_ref().map_or("anonymous", |p| &p.name)
    }
}

/// The credential step's answer.
pub enum Checked {
    Caller(Caller),
    Refused(Refusal),
    /// The token names a signing key the proxy does not hold: fetch the key set and ask again
    /// (Pingora's path does; the fast path leaves such a request to it).
    AwaitKeys,
}

/// `Bearer ...` challenge of a 401 or 403 for `set` (RFC 6750, RFC 9728 section 5.1).
fn challenge(edge: &Edge, set: &UpstreamSet, error: Option<(&str, &str)>) -> String {
    let mut c = String::from("Bearer");
    let mut sep = " ";
    let mut param = |c: &mut String, name: &str, value: &str| {
        c.push_str(sep);
        c.push_str(name);
        c.push_str("=\"");
        // Quoted-string: the values are ours (URLs, scope names, fixed texts), but never let
        // one end the quote.
        c.extend(value.chars().filter(|&ch| ch != '"' && ch != '\\'));
        c.push('"');
        sep = ", ";
    };
    edge.auth.with_config(|auth| {
        if let (AuthMode::OAuth, Some(audience)) = (auth.mode, auth.audience.as_deref()) {
            let url = super::route::resource_metadata_url(audience, &set.name);
            param(&mut c, "resource_metadata", &url);
        } else {
            param(&mut c, "realm", "mcp-fleet");
        }
    });
    let scopes = &set.access.auth.scopes;
    if !scopes.is_empty() {
        param(&mut c, "scope", &scopes.join(" "));
    }
    if let Some((code, description)) = error {
        param(&mut c, "error", code);
        param(&mut c, "error_description", description);
    }
    c
}

/// The credential step for a request to `set`: `authorization` is the field's value as sent.
/// With `keys_fetched`, a token naming an unknown signing key is refused rather than waited for.
pub fn check(
    edge: &Edge,
    set: &UpstreamSet,
    authorization: Option<&[u8]>,
    ip: Option<IpAddr>,
    keys_fetched: bool,
) -> Checked {
    if edge.auth.mode() == AuthMode::None {
        return Checked::Caller(Caller {
            principal: None,
            ip,
        });
    }
    let refuse = |why: AuthError| {
        let error = match why {
            AuthError::Missing => None,
            AuthError::NotBearer => Some(("invalid_request", why.to_string())),
            _ => Some(("invalid_token", why.to_string())),
        };
        let challenge = challenge(edge, set, error.as_ref().map(|(c, d)| (*c, d.as_str())));
        Checked::Refused(
            Refusal::unauthorized(why.to_string(), challenge).counted(Tally::Auth(why.label())),
        )
    };
    let Some(value) = authorization else {
        return refuse(AuthError::Missing);
    };
    let credential = match bearer(value) {
        Ok(c) => c,
        Err(e) => return refuse(e),
    };
    let principal = match edge.auth.authenticate(credential) {
        Ok(p) => p,
        Err(AuthError::UnknownSigningKey) if !keys_fetched => return Checked::AwaitKeys,
        Err(AuthError::NoKeys) => {
            let refusal =
                Refusal::keys_unavailable().counted(Tally::Auth(AuthError::NoKeys.label()));
            return Checked::Refused(refusal);
        }
        Err(e) => return refuse(e),
    };
    let meant_for_us = edge
        .auth
        .with_config(|a| principal.meant_for(a.audience.as_deref(), &set.name));
    if !meant_for_us {
        return refuse(AuthError::Audience);
    }
    if !principal.may_reach(&set.name) {
        let mut refusal = Refusal::forbidden(format!(
            "{} may not reach category {}",
            principal.name, set.name
        ))
        .counted(Tally::Auth("category"));
        refusal = refusal.with(|d| d.principal = Some(Arc::clone(&principal.name)));
        return Checked::Refused(refusal);
    }
    let needed = &set.access.auth.scopes;
    if !principal.has_scopes(needed) {
        let challenge = challenge(
            edge,
            set,
            Some((
                "insufficient_scope",
                "the token lacks a scope the category needs",
            )),
        );
        let mut refusal =
            Refusal::insufficient_scope(needed.join(" "), challenge).counted(Tally::Auth("scope"));
        refusal = refusal.with(|d| d.principal = Some(Arc::clone(&principal.name)));
        return Checked::Refused(refusal);
    }
    Checked::Caller(Caller {
        principal: Some(principal),
        ip,
    })
}

/// Takes a token from the caller's bucket (`proxy.rate_limit`): per principal, or per client
/// address for anonymous callers. Last of the admission steps, so a request handed from one
/// engine to the other is charged once.
pub fn charge(
    set: &UpstreamSet,
    caller: &Caller,
    edge: &Edge,
    now_ms: u64,
) -> Result<(), Box<Refusal>> {
    let limits = &set.proxy.rate_limit;
    let (rate, key, kind) = match (&caller.principal, caller.ip) {
        (Some(p), _) => match &limits.per_principal {
            Some(rate) => (
                rate,
                super::rate::BucketKey::Principal(Arc::clone(&p.name)),
                "principal",
            ),
            None => return Ok(()),
        },
        (None, Some(ip)) => match &limits.per_ip_anonymous {
            Some(rate) => (rate, super::rate::BucketKey::Ip(ip), "anonymous"),
            None => return Ok(()),
        },
        (None, None) => return Ok(()),
    };
    match edge.rates.take(key, rate, now_ms) {
        Ok(()) => Ok(()),
        Err(wait_secs) => {
            let mut refusal =
                Refusal::rate_limited(wait_secs, &rate.text).counted(Tally::RateLimited(kind));
            refusal = refusal
                .with(|d| d.principal = caller.principal.as_ref().map(|p| Arc::clone(&p.name)));
            Err(Box::new(refusal))
        }
    }
}

/// What the audit log says of an allowed request.
pub struct Decision<'a> {
    pub caller: &'a str,
    pub category: &'a str,
    pub method: &'a str,
    pub name: &'a str,
}

/// With `auth.audit = "all"`, one structured line per allowed request at target
/// `mcp_fleet::audit` (refused ones always have theirs: `Refusal::record`). Never the
/// credential itself.
pub fn audit(edge: &Edge, d: &Decision) {
    if edge.auth.audits_all() {
        tracing::info!(
            target: "mcp_fleet::audit",
            decision = "allowed",
            principal = d.caller,
            category = d.category,
            method = d.method,
            name = d.name,
            "request allowed"
        );
    }
}
