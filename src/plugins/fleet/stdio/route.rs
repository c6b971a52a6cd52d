//! Where what a child sends unasked goes (its notifications and its own requests): under
//! session isolation to its one session (the stream of the call in flight, else the session's
//! stream), from a shared child to every session (resource updates to subscribers only), its
//! requests refused; and the shared child's subscriptions, held once per URI.

use super::bridge::{lock, Bridge};
use super::link::{Link, Router};
use super::message::{self, Msg, Shape};
use super::session::Session;
use crate::config::Isolation;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl Bridge {
    /// Where a child's unasked messages go: to its session under session isolation; shared
    /// children's notifications to every session (resource updates to subscribers only), their
    /// requests refused.
    pub(super) fn router(&self, session: Option<Arc<str>>) -> Router {
        let me = self.me.clone();
        let isolation = self.config.isolation;
        Arc::new(move |link: &Arc<Link>, msg: Msg| {
            let Some(bridge) = me.upgrade() else { return };
            match isolation {
                Isolation::Session => bridge.to_own_session(link, session.as_deref(), msg),
                Isolation::Shared => bridge.to_sessions(link, msg),
            }
        })
    }

    fn to_own_session(&self, link: &Arc<Link>, session: Option<&str>, msg: Msg) {
        // A spare's session is whichever took it; look it up by its link.
        let owner = match session {
            Some(id) => self.session(id),
            None => lock(&self.sessions)
                .values()
                .find(|s| s.link.as_ref().is_some_and(|l| Arc::ptr_eq(l, link)))
                .cloned(),
        };
        let msg = Value::Object(msg);
        // While a call is open the client expects the child's requests on that call's stream.
        if let Some(stream) = link.newest_stream(None) {
            if stream.try_send(msg.clone()).is_ok() {
                return;
            }
        }
        if let Some(s) = owner {
            if !s.push(msg) {
                self.stats.slow_closed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn to_sessions(&self, link: &Arc<Link>, msg: Msg) {
        if message::shape(&msg) == Some(Shape::Request) {
            let id = msg.get("id").cloned().unwrap_or(Value::Null);
            let answer = if message::method(&msg) == "ping" {
                message::result(id, json!({}))
            } else {
                message::error(
                    id,
                    message::METHOD_NOT_FOUND,
                    "this server is bridged with isolation = \"shared\": requests to clients \
                     (sampling, elicitation, roots) are refused; use isolation = \"session\"",
                )
            };
            let link = Arc::clone(link);
            tokio::spawn(async move {
                if let Some(m) = answer.as_object() {
                    let _ = link.send(m).await;
                }
            });
            return;
        }
        let uri = (message::method(&msg) == "notifications/resources/updated")
            .then(|| {
                msg.get("params")
                    .and_then(|p| p.get("uri"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .flatten();
        let targets: Vec<Arc<Session>> = lock(&self.sessions)
            .values()
            .filter(|s| {
                uri.as_ref()
                    .is_none_or(|u| lock(&s.subscriptions).contains(u))
            })
            .cloned()
            .collect();
        let msg = Value::Object(msg);
        for s in targets {
            if !s.push(msg.clone()) {
                // A client that stops reading cannot hold up the others: its session ends.
                tracing::warn!(server = %self.spawner.server, session = %s.id, "session closed: its client stopped reading its stream");
                self.stats.slow_closed.fetch_add(1, Ordering::Relaxed);
                lock(&self.sessions).remove(&s.id);
            }
        }
    }

    /// Shared children: a session's `resources/subscribe` and `unsubscribe`. Returns the answer
    /// when the bridge answers it itself (another session already holds the subscription at the
    /// child, or still does).
    pub fn subscription(&self, session: &Session, msg: &Msg) -> Option<Value> {
        if self.config.isolation != Isolation::Shared {
            return None;
        }
        let uri = msg.get("params")?.get("uri")?.as_str()?.to_owned();
        let id = msg.get("id").cloned().unwrap_or(Value::Null);
        let others = lock(&self.sessions)
            .values()
            .filter(|s| s.id != session.id)
            .any(|s| lock(&s.subscriptions).contains(&uri));
        match message::method(msg) {
            "resources/subscribe" => {
                lock(&session.subscriptions).insert(uri);
                others.then(|| message::result(id, json!({})))
            }
            "resources/unsubscribe" => {
                lock(&session.subscriptions).remove(&uri);
                others.then(|| message::result(id, json!({})))
            }
            _ => None,
        }
    }
}
