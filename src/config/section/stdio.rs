//! `categories.NAME.transport` and the keys of a stdio category (`isolation`, `max_sessions`,
//! `idle_timeout`, `start`): the keys that only mean something for bridged servers are refused
//! on an HTTP category, so a typo in `transport` cannot silently leave them unused.

use super::super::defaults as d;
use super::super::fields::{bounded, choice, duration, Errors};
use super::super::model::{Isolation, StartMode, StdioConfig};
use super::super::raw::RawCategory;
use super::super::ConfigError;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    Http,
    Stdio,
}

/// The category's bridge settings, `None` for `transport = "http"` (the default).
pub(in crate::config) fn stdio(
    name: &str,
    c: &RawCategory,
    has_own_command: bool,
    errors: &mut Errors,
) -> Option<StdioConfig> {
    let key = |k: &str| format!("categories.{name}.{k}");
    let transport = choice(
        &key("transport"),
        c.transport.as_deref(),
        Transport::Http,
        &[("http", Transport::Http), ("stdio", Transport::Stdio)],
        errors,
    );
    if transport == Transport::Http {
        let stdio_only = [
            ("isolation", c.isolation.is_some()),
            ("max_sessions", c.max_sessions.is_some()),
            ("idle_timeout", c.idle_timeout.is_some()),
            ("start", c.start.is_some()),
        ];
        for (k, set) in stdio_only {
            if set {
                errors.push(ConfigError::new(
                    key(k),
                    "(set)",
                    "only for transport = \"stdio\" (this category's servers speak HTTP)",
                ));
            }
        }
        return None;
    }
    if !has_own_command {
        errors.push(ConfigError::new(
            key("command"),
            "(missing)",
            "a stdio category needs the command of its server, e.g. [\"node\", \"/opt/mcp/server-memory/dist/index.js\"]",
        ));
    }
    Some(StdioConfig {
        isolation: choice(
            &key("isolation"),
            c.isolation.as_deref(),
            Isolation::Session,
            &[
                ("session", Isolation::Session),
                ("shared", Isolation::Shared),
            ],
            errors,
        ),
        max_sessions: bounded(
            &key("max_sessions"),
            c.max_sessions,
            d::MAX_SESSIONS,
            1..=100_000,
            errors,
        ) as usize,
        idle_timeout: duration(
            &key("idle_timeout"),
            c.idle_timeout.as_deref(),
            d::STDIO_IDLE_TIMEOUT,
            errors,
        ),
        start: choice(
            &key("start"),
            c.start.as_deref(),
            StartMode::OnDemand,
            &[
                ("on-demand", StartMode::OnDemand),
                ("eager", StartMode::Eager),
            ],
            errors,
        ),
    })
}
