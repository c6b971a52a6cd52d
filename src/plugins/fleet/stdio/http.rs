//! The bridge's Streamable HTTP side, on the server's own address: `POST` (2025-11-25 session
//! messages, `initialize`, and 2026-07-28 stateless requests), `GET` (a session's stream),
//! `DELETE` (end a session), and the health path the fleet's checker asks. Answers are JSON
//! when the child's answer is all there is, and an event stream when the child sends anything
//! first (progress, its own requests).

use super::bridge::{Bridge, Refusal};
use super::message::{self, Msg, Shape};
use super::session::Session;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::Value;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::mpsc;

use crate::api::BRIDGE_HEALTH_PATH as HEALTH_PATH;
/// Largest request body the bridge reads (the proxy's `max_body` is normally far smaller).
const MAX_BODY: usize = 16 << 20;
const SESSION_HEADER: &str = "mcp-session-id";

pub type Body = BoxBody<Bytes, Infallible>;

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(full(serde_json::to_vec(v).unwrap_or_default()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn rpc_error(status: StatusCode, id: Value, code: i64, text: &str) -> Response<Body> {
    json_response(status, &message::error(id, code, text))
}

fn refused(id: Value, why: &Refusal) -> Response<Body> {
    let (status, code) = match why {
        Refusal::Sessions(_) | Refusal::Children(_) | Refusal::Memory(_) | Refusal::Closing => {
            (StatusCode::SERVICE_UNAVAILABLE, message::UNAVAILABLE)
        }
        Refusal::Spawn(_) | Refusal::Gone => (StatusCode::BAD_GATEWAY, message::INTERNAL_ERROR),
    };
    let mut r = rpc_error(status, id, code, &why.to_string());
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

fn no_session(id: Value) -> Response<Body> {
    rpc_error(
        StatusCode::NOT_FOUND,
        id,
        message::SESSION_NOT_FOUND,
        "Session not found: it ended or its server process exited; initialize a new session",
    )
}

fn accepts(req: &Request<Incoming>, what: &str) -> bool {
    req.headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains(what) || v.contains("*/*"))
}

/// One request to the bridge.
pub async fn handle(
    bridge: Arc<Bridge>,
    mcp_path: Arc<str>,
    health_timeout: std::time::Duration,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    if !host_allowed(req.headers().get(header::HOST)) {
        return Ok(rpc_error(
            StatusCode::FORBIDDEN,
            Value::Null,
            message::INVALID_REQUEST,
            "Host is not this server's address (a DNS-rebinding defence): reach it by IP or localhost",
        ));
    }
    let path = req.uri().path();
    if path == HEALTH_PATH && req.method() == Method::GET {
        return Ok(match bridge.healthy(health_timeout).await {
            Ok(()) => json_response(StatusCode::OK, &serde_json::json!({"status": "ok"})),
            Err(why) => json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({"status": "unavailable", "reason": why}),
            ),
        });
    }
    if path != &*mcp_path {
        return Ok(rpc_error(
            StatusCode::NOT_FOUND,
            Value::Null,
            message::INVALID_REQUEST,
            "not an MCP endpoint",
        ));
    }
    let session_id = req
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok(match *req.method() {
        Method::POST => post(bridge, session_id, req).await,
        Method::GET => get(&bridge, session_id.as_deref()),
        Method::DELETE => match session_id {
            Some(id) if bridge.end_session(&id, false) => {
                let mut r = Response::new(full(Bytes::new()));
                *r.status_mut() = StatusCode::OK;
                r
            }
            Some(_) => no_session(Value::Null),
            None => rpc_error(
                StatusCode::BAD_REQUEST,
                Value::Null,
                message::INVALID_REQUEST,
                "DELETE needs the Mcp-Session-Id of the session to end",
            ),
        },
        _ => {
            let mut r = rpc_error(
                StatusCode::METHOD_NOT_ALLOWED,
                Value::Null,
                message::INVALID_REQUEST,
                "the MCP endpoint takes POST, GET and DELETE",
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST, GET, DELETE"));
            r
        }
    })
}

/// Whether `Host` names this server by address (an IP literal, or `localhost`): the proxy and
/// the health checker send its address, while a page using DNS rebinding to reach a loopback
/// port sends its own domain name.
fn host_allowed(host: Option<&HeaderValue>) -> bool {
    let Some(host) = host.and_then(|h| h.to_str().ok()) else {
        return true; // HTTP/1.0 without Host: nothing a browser sends
    };
    if host.starts_with('[') {
        return host
            .split_once(']')
            .is_some_and(|(ip, _)| ip[1..].parse::<std::net::Ipv6Addr>().is_ok());
    }
    let name = host.rsplit_once(':').map_or(host, |(name, _)| name);
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

/// `GET`: the session's stream of what its child sends outside any call.
fn get(bridge: &Bridge, session_id: Option<&str>) -> Response<Body> {
    let Some(id) = session_id else {
        let mut r = rpc_error(
            StatusCode::METHOD_NOT_ALLOWED,
            Value::Null,
            message::INVALID_REQUEST,
            "a stream needs a session (stateless clients use subscriptions/listen)",
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST, DELETE"));
        return r;
    };
    let Some(session) = bridge.session(id) else {
        return no_session(Value::Null);
    };
    session.touch();
    match session.open_stream() {
        Some(rx) => sse(rx, None, None),
        None => rpc_error(
            StatusCode::CONFLICT,
            Value::Null,
            message::INVALID_REQUEST,
            "this session already has its stream open",
        ),
    }
}

async fn post(
    bridge: Arc<Bridge>,
    session_id: Option<String>,
    req: Request<Incoming>,
) -> Response<Body> {
    let wants_sse = accepts(&req, "text/event-stream");
    let wants_json = accepts(&req, "application/json");
    let stateless_header = req
        .headers()
        .get("mcp-protocol-version")
        .is_some_and(|v| v.as_bytes() == message::STATELESS.as_bytes());
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return rpc_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                Value::Null,
                message::INVALID_REQUEST,
                "request body over 16 MiB (or unreadable)",
            )
        }
    };
    let msg: Msg =
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(m)) => m,
            Ok(Value::Array(_)) => return rpc_error(
                StatusCode::BAD_REQUEST,
                Value::Null,
                message::INVALID_REQUEST,
                "JSON-RPC batches are not part of MCP since 2025-06-18: send one message per POST",
            ),
            _ => {
                return rpc_error(
                    StatusCode::BAD_REQUEST,
                    Value::Null,
                    message::PARSE_ERROR,
                    "the body is not a JSON-RPC message",
                )
            }
        };
    let id = msg.get("id").cloned().unwrap_or(Value::Null);
    let Some(shape) = message::shape(&msg) else {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            id,
            message::INVALID_REQUEST,
            "not a JSON-RPC request, notification or response",
        );
    };
    let session = match session_id.as_deref() {
        Some(sid) => match bridge.session(sid) {
            Some(s) => {
                s.touch();
                Some(s)
            }
            None => return no_session(id),
        },
        None => None,
    };
    let method = message::method(&msg).to_owned();
    if session.is_none() && method == "initialize" {
        return match bridge.open_session(msg).await {
            Ok((session, answer)) => {
                let mut r = json_response(StatusCode::OK, &answer);
                if let Ok(v) = HeaderValue::from_str(&session.id) {
                    r.headers_mut().insert(SESSION_HEADER, v);
                }
                r
            }
            Err(why) => refused(id, &why),
        };
    }
    let stateless = session.is_none()
        && (stateless_header
            || msg
                .get("params")
                .and_then(|p| p.get("_meta"))
                .and_then(|m| m.get("io.modelcontextprotocol/protocolVersion"))
                .is_some());
    if session.is_none() && !stateless {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            id,
            message::INVALID_REQUEST,
            "no Mcp-Session-Id: initialize a session first (or send a 2026-07-28 stateless request)",
        );
    }
    let session_ref = session.as_deref();
    if shape != Shape::Request {
        return notify(&bridge, session_ref, msg).await;
    }
    if let Some(answer) = session_ref.and_then(|s| bridge.subscription(s, &msg)) {
        return json_response(StatusCode::OK, &answer);
    }
    let link = match bridge.link_for(session_ref).await {
        Ok(l) => l,
        Err(Refusal::Gone) if session.is_some() => return no_session(id),
        Err(why) => return refused(id, &why),
    };
    if stateless && method == "server/discover" {
        return discover(&bridge, &link, msg, id).await;
    }
    let mut msg = msg;
    if stateless && !bridge.shared_speaks_stateless().await {
        message::strip_envelope(&mut msg);
    }
    let session_key = session.as_ref().map(|s| Arc::clone(&s.id));
    let (call_id, mut rx) = match link.call(msg, session_key).await {
        Ok(pair) => pair,
        Err(_) if session.is_some() => return no_session(id),
        Err(_) => return refused(id, &Refusal::Gone),
    };
    // The stream closed before the answer: cancellation for a stateless request (the
    // 2026-07-28 rule); a session's late answer is just dropped.
    let guard = Cancel {
        link: Arc::clone(&link),
        id: call_id,
        armed: stateless,
    };
    let Some(first) = rx.recv().await else {
        return refused(id, &Refusal::Gone);
    };
    let is_answer = first.as_object().and_then(message::shape) == Some(Shape::Response);
    if is_answer && (wants_json || !wants_sse) {
        guard.disarm();
        return json_response(StatusCode::OK, &first);
    }
    if wants_sse {
        return sse(rx, Some(first), Some(guard));
    }
    // A JSON-only client: what comes before the answer goes to the session's stream.
    let mut next = Some(first);
    while let Some(m) = next.take() {
        if m.as_object().and_then(message::shape) == Some(Shape::Response) {
            guard.disarm();
            return json_response(StatusCode::OK, &m);
        }
        if let Some(s) = &session {
            s.push(m);
        }
        next = rx.recv().await;
    }
    refused(id, &Refusal::Gone)
}

/// A notification, or the client's answer to a child's request: 202 once the child has it.
async fn notify(bridge: &Bridge, session: Option<&Session>, msg: Msg) -> Response<Body> {
    let method = message::method(&msg);
    let shared = session.is_none_or(|s| s.link.is_none());
    // The bridge initialised the shared child itself; a client's `initialized` is not news.
    if shared && method == "notifications/initialized" {
        return accepted();
    }
    let link = match bridge.link_for(session).await {
        Ok(l) => l,
        Err(Refusal::Gone) if session.is_some() => return no_session(Value::Null),
        Err(why) => return refused(Value::Null, &why),
    };
    if method == "notifications/cancelled" {
        if let Some(request) = msg.get("params").and_then(|p| p.get("requestId")) {
            link.cancel_client(session.map(|s| &*s.id), request, "cancelled by the client")
                .await;
        }
        return accepted();
    }
    if link.send(&msg).await.is_err() {
        return match session {
            Some(_) => no_session(Value::Null),
            None => refused(Value::Null, &Refusal::Gone),
        };
    }
    accepted()
}

fn accepted() -> Response<Body> {
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = StatusCode::ACCEPTED;
    r
}

/// `server/discover` of a stateless client: asked of the shared child (one that speaks
/// 2026-07-28 answers it); a child that does not know it is described from its `initialize`
/// answer to the bridge.
async fn discover(
    bridge: &Bridge,
    link: &super::link::Link,
    msg: Msg,
    id: Value,
) -> Response<Body> {
    let asked = async {
        let (_, mut rx) = link.call(msg, None).await.ok()?;
        rx.recv().await
    };
    if let Some(answer) = asked.await.filter(|a| a.get("result").is_some()) {
        return json_response(StatusCode::OK, &answer);
    }
    match bridge.shared_init().await {
        Ok(init) => json_response(StatusCode::OK, &message::result(id, described(&init))),
        Err(why) => refused(id, &why),
    }
}

fn described(init: &Value) -> Value {
    let mut d = serde_json::json!({
        "resultType": "complete",
        "supportedVersions": [message::PROTOCOL, message::STATELESS],
        "capabilities": init.get("capabilities").cloned().unwrap_or_else(|| serde_json::json!({})),
        "instructions": init.get("instructions"),
        "ttlMs": 0,
        "cacheScope": "public",
        "_meta": {"io.modelcontextprotocol/serverInfo": init.get("serverInfo")},
    });
    if let Some(m) = d.as_object_mut() {
        m.retain(|_, v| !v.is_null());
    }
    d
}

/// Tells the child a stateless request was abandoned when its stream is dropped unanswered.
struct Cancel {
    link: Arc<super::link::Link>,
    id: u64,
    armed: bool,
}

impl Cancel {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Cancel {
    fn drop(&mut self) {
        if self.armed {
            let (link, id) = (Arc::clone(&self.link), self.id);
            tokio::spawn(async move { link.cancel(id, "the client closed the stream").await });
        }
    }
}

/// An event stream of `first` then whatever `rx` brings; it ends after an answer (a call's
/// stream) or when the sender goes (a session's stream).
fn sse(rx: mpsc::Receiver<Value>, first: Option<Value>, guard: Option<Cancel>) -> Response<Body> {
    struct State {
        rx: mpsc::Receiver<Value>,
        first: Option<Value>,
        guard: Option<Cancel>,
        done: bool,
    }
    let state = State {
        rx,
        first,
        guard,
        done: false,
    };
    let stream = futures::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        let next = match st.first.take() {
            Some(m) => Some(m),
            None => st.rx.recv().await,
        };
        let m = next?;
        if m.as_object().and_then(message::shape) == Some(Shape::Response) && st.guard.is_some() {
            st.done = true;
            if let Some(g) = st.guard.take() {
                g.disarm();
            }
        }
        let mut frame = b"event: message\ndata: ".to_vec();
        frame.extend_from_slice(&serde_json::to_vec(&m).unwrap_or_default());
        frame.extend_from_slice(b"\n\n");
        Some((Ok::<_, Infallible>(Frame::data(Bytes::from(frame))), st))
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_addresses_and_localhost_are_accepted_as_host() {
        let ok =
            |h: &str| super::host_allowed(Some(&http::HeaderValue::from_str(h).expect("value")));
        for h in [
            "127.0.0.1:51000",
            "127.0.0.2",
            "localhost:51000",
            "[::1]:51000",
            "10.0.0.7:80",
        ] {
            assert!(ok(h), "{h}");
        }
        for h in [
            "evil.example:51000",
            "rebind.attacker.test",
            "[nonsense]:1",
            "localhost.evil",
        ] {
            assert!(!ok(h), "{h}");
        }
        assert!(super::host_allowed(None));
    }
}
