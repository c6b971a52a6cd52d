//! The body step: what a request asks for (its JSON-RPC method and the tool, prompt or
//! resource it names), checked against the category's allow-lists and against the routing
//! fields (`Mcp-Method`, `Mcp-Name`) it carries, and whether its answer is a list to filter.
//! The decision is on the body, never on the fields alone: a policy keyed on fields a client
//! writes would be bypassed by writing them differently.

use super::filter::{ListFilter, ListKind};
use super::refusal::{Refusal, Tally};
use crate::config::Pattern;
use crate::upstream::UpstreamSet;
use serde::Deserialize;
use std::borrow::Cow;

/// Largest body read for the step (both engines hold it whole before a server is chosen).
pub const INSPECT_LIMIT: usize = 64 * 1024;

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow)]
    params: Option<Params<'a>>,
    id: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Params<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    uri: Option<Cow<'a, str>>,
}

/// The routing fields a request carries (2026-07-28).
#[derive(Debug, Clone, Copy, Default)]
pub struct RoutingFields<'a> {
    pub method: Option<&'a [u8]>,
    pub name: Option<&'a [u8]>,
}

/// Whether a request's body must be read for the step: the category decides by method and name
/// (allow-lists; the routing fields a request carries are then checked against the body, so a
/// decision on them cannot be bypassed), or the audit names every allowed call (`named_audit`,
/// asked only then) and the request says what it calls. Otherwise the proxy decides nothing on `Mcp-Method` or
/// `Mcp-Name`: checking them against the body is the server's MUST, and repeating it here
/// parsed every 2026-07-28 request's JSON for nothing (a quarter of the fast path's
/// instructions per request; BENCHMARKS.md).
pub fn wants_body(
    set: &UpstreamSet,
    method: &str,
    fields: &RoutingFields,
    named_audit: impl FnOnce() -> bool,
) -> bool {
    method == "POST"
        && (set.access.auth.inspects_bodies()
            || ((fields.method.is_some() || fields.name.is_some()) && named_audit()))
}

/// What the step found (borrowing the body: nothing is copied for a request that passes).
pub enum Inspection<'b> {
    Pass {
        /// The method and name, for the audit line.
        method: Option<Cow<'b, str>>,
        name: Option<Cow<'b, str>>,
    },
    /// Allowed; its answer is a list the caller sees only the allowed part of.
    Filter(ListFilter),
    Refused(Refusal),
}

fn allowed(list: &Option<Vec<Pattern>>, name: &str) -> bool {
    list.as_ref()
        .is_none_or(|l| l.iter().any(|p| p.matches(name)))
}

/// The step for a request to `set` whose whole body is `body`.
pub fn inspect<'b>(set: &UpstreamSet, fields: &RoutingFields, body: &'b [u8]) -> Inspection<'b> {
    let rules = &set.access.auth;
    let refuse = |reason: &'static str, refusal: Refusal| {
        let mut refusal = refusal.counted(Tally::Policy(reason));
        refusal = refusal.with(|d| {
            d.call = Some((
                String::from_utf8_lossy(fields.method.unwrap_or(b"-")).into_owned(),
                String::from_utf8_lossy(fields.name.unwrap_or(b"-")).into_owned(),
            ))
        });
        Inspection::Refused(refusal)
    };
    let Ok(message) = serde_json::from_slice::<Message>(body) else {
        // A batch or a body that is not JSON: the allow-lists cannot tell what it asks for.
        if rules.inspects_bodies() || fields.method.is_some() || fields.name.is_some() {
            return refuse("unreadable", Refusal::body_unreadable());
        }
        return Inspection::Pass {
            method: None,
            name: None,
        };
    };
    let method = message.method.as_deref();
    let on_resource = matches!(
        method,
        Some("resources/read" | "resources/subscribe" | "resources/unsubscribe")
    );
    let params = message.params.as_ref();
    let target = match on_resource {
        true => params.and_then(|p| p.uri.as_deref()),
        false => params.and_then(|p| p.name.as_deref()),
    };
    if let Some(field) = fields.method {
        if method.map(str::as_bytes) != Some(field.trim_ascii()) {
            return refuse(
                "mismatch",
                Refusal::routing_fields_disagree("Mcp-Method", message.id),
            );
        }
    }
    if let Some(field) = fields.name {
        if target.map(str::as_bytes) != Some(field.trim_ascii()) {
            return refuse(
                "mismatch",
                Refusal::routing_fields_disagree("Mcp-Name", message.id),
            );
        }
    }
    // The kind is also the refusal's metrics reason.
    let checked = match method {
        Some("tools/call") => Some(("tool", &rules.tools)),
        Some("prompts/get") => Some(("prompt", &rules.prompts)),
        _ if on_resource => Some(("resource", &rules.resources)),
        _ => None,
    };
    if let Some((kind, list)) = checked {
        let name = target.unwrap_or_default();
        if !allowed(list, name) {
            let mut refusal = Refusal::not_allowed(kind, name, &set.name, message.id)
                .counted(Tally::Policy(kind));
            refusal = refusal.with(|d| {
                d.call = Some((method.unwrap_or_default().to_string(), name.to_string()))
            });
            return Inspection::Refused(refusal);
        }
    }
    let list = match method {
        Some("tools/list") if rules.tools.is_some() => Some(ListKind::Tools),
        Some("prompts/list") if rules.prompts.is_some() => Some(ListKind::Prompts),
        Some("resources/list") if rules.resources.is_some() => Some(ListKind::Resources),
        _ => None,
    };
    if let Some(kind) = list {
        return Inspection::Filter(ListFilter::new(kind, set));
    }
    let name = message
        .params
        .and_then(|p| if on_resource { p.uri } else { p.name });
    Inspection::Pass {
        method: message.method,
        name,
    }
}
