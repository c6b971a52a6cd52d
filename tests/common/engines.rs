//! The differential harness: two instances in front of the same servers, one with
//! `proxy.fast_path = true` and one with `false`, the same raw request sent to each, and what
//! must be equal on both engines (status, the fields that carry meaning, the body with session
//! tokens and the proxy's port set aside, what the servers received). Used by
//! `tests/differential.rs` (requests, sessions, streams, faults) and
//! `tests/differential_edge.rs` (the edge's rules).
use super::fake::Counts;
use super::raw::{self, Answer};
use super::{FleetDir, Proc, Sections};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Fields whose presence and value are the policy's to decide (`connection` is compared as
/// "closes or not", since Pingora also writes `keep-alive`).
const COMPARED: &[&str] = &[
    "content-type",
    "cache-control",
    "retry-after",
    "allow",
    "x-accel-buffering",
    "link",
    "www-authenticate",
];

pub struct Instance {
    pub dir: FleetDir,
    _serve: Proc,
}

impl Instance {
    pub fn start(statics: &[(&str, Vec<std::net::SocketAddr>)], fast_path: bool) -> Self {
        Self::start_with(statics, fast_path, "", "", Vec::new())
    }

    /// With more `[proxy]` lines, an `[auth]` section and per-category lines.
    pub fn start_with(
        statics: &[(&str, Vec<std::net::SocketAddr>)],
        fast_path: bool,
        more_proxy: &str,
        auth: &str,
        categories: Vec<(&str, String)>,
    ) -> Self {
        let proxy = format!(
            "fast_path = {fast_path}\nfirst_byte_timeout = \"1s\"\nmax_response_body = \"1MiB\"\n\
             max_body = \"256KiB\"\nmax_retries = 1\neject_after_5xx = 0\nmax_ejected_percent = 0\n\
             allowed_origins = [\"http://localhost:3000\"]\n{more_proxy}"
        );
        let dir = FleetDir::with_sections(
            &[],
            statics,
            &Sections {
                proxy: &proxy,
                health: "enabled = false",
                auth,
                categories,
                ..Sections::default()
            },
        );
        let serve = dir.serve();
        Self { dir, _serve: serve }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.dir.proxy_port)
    }
}

/// A request as bytes, with the instance's address where `{host}` stands.
pub struct Case {
    pub name: &'static str,
    pub request: String,
    /// Fake servers whose request counts are compared.
    pub counts: Vec<Arc<Counts>>,
    /// Let the `sse` answer of the echo server finish.
    pub release: Option<Arc<Counts>>,
    /// The server frames its answer by closing the connection.
    pub close_framed: bool,
}

impl Case {
    /// A request whose server counts its requests in `counts`, its answer not held back.
    pub fn to(name: &'static str, request: String, counts: &Arc<Counts>) -> Self {
        Case {
            name,
            request,
            counts: vec![Arc::clone(counts)],
            release: None,
            close_framed: false,
        }
    }
}

pub fn post(path: &str, extra: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nhost: {{host}}\r\ncontent-type: application/json\r\n\
         accept: application/json, text/event-stream\r\nmcp-protocol-version: 2026-07-28\r\n\
         mcp-method: tools/call\r\n{extra}content-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// A chunked `POST`: the chunks as given (a size line with `ext` after the first), then
/// `end` (the last chunk and any trailer section).
pub fn post_chunked(path: &str, extra: &str, chunks: &[&str], end: &str) -> String {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nhost: {{host}}\r\ncontent-type: application/json\r\n\
         accept: application/json, text/event-stream\r\nmcp-protocol-version: 2026-07-28\r\n\
         mcp-method: tools/call\r\n{extra}transfer-encoding: chunked\r\n\r\n"
    );
    for (i, chunk) in chunks.iter().enumerate() {
        let ext = if i == 0 { ";name=value" } else { "" };
        request.push_str(&format!("{:x}{ext}\r\n{chunk}\r\n", chunk.len()));
    }
    request.push_str(end);
    request
}

/// A `GET` for the event stream, as the SDKs open it.
pub fn get(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nhost: {{host}}\r\naccept: text/event-stream\r\n\
         mcp-protocol-version: 2025-11-25\r\n{extra}\r\n"
    )
}

pub fn call_body() -> String {
    r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}}"#.to_string()
}

/// What must be equal on both engines.
#[derive(Debug, PartialEq, Eq)]
pub struct Seen {
    pub status: u16,
    pub informational: Vec<u16>,
    pub fields: BTreeMap<String, String>,
    pub session_token: bool,
    pub closes: bool,
    pub complete: bool,
    pub body: String,
    /// Requests each compared server received.
    pub received: Vec<usize>,
}

/// The body with what differs by instance replaced: session tokens and the proxy's port; an
/// echoed request head (what the server received) as a sorted list of lower-case fields, in a
/// JSON body or in the `data:` lines of an event stream. A cut answer's bytes are the engine's
/// framing (one passes chunks through, the other re-frames them): only its cut is compared.
fn normalise(answer: &Answer, proxy_port: u16) -> String {
    if !answer.complete {
        return "(cut short)".into();
    }
    let text = answer
        .text()
        .replace(&proxy_port.to_string(), "{proxy-port}");
    if answer.field("content-type") == Some("text/event-stream") {
        return text
            .split('\n')
            .map(|line| match line.strip_prefix("data: ") {
                Some(data) => format!("data: {}", normalise_json(data)),
                None => line.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
    }
    normalise_json(&text)
}

fn normalise_json(text: &str) -> String {
    let Ok(mut v) = serde_json::from_str::<serde_json::Value>(text) else {
        return text.to_string();
    };
    if let Some(head) = v["result"]["head"].as_str() {
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default().to_string();
        let mut fields: Vec<String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, val)| format!("{}: {}", n.trim().to_ascii_lowercase(), val.trim()))
            .collect();
        fields.sort();
        v["result"]["head"] = serde_json::json!({ "line": request_line, "fields": fields });
    }
    v.to_string()
}

pub async fn run(instance: &Instance, case: &Case) -> Seen {
    if let Some(c) = &case.release {
        c.gate.notify_one();
    }
    let before: Vec<usize> = case.counts.iter().map(|c| c.requests()).collect();
    let request = case.request.replace("{host}", &instance.addr());
    let answer = raw::exchange(
        &instance.addr(),
        request.as_bytes(),
        Duration::from_secs(10),
    )
    .await;
    // The server may still be reading what the proxy sent when the answer arrives.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let received = case
        .counts
        .iter()
        .zip(before)
        .map(|(c, b)| c.requests() - b)
        .collect();
    Seen {
        status: answer.status,
        informational: answer.informational.clone(),
        fields: COMPARED
            .iter()
            .filter_map(|n| answer.field(n).map(|v| (n.to_string(), v.to_string())))
            .collect(),
        session_token: answer
            .field("mcp-session-id")
            .is_some_and(|t| t.starts_with("f1")),
        // How the hop to the client is framed is the engine's: an answer the server framed
        // by closing its connection is passed on that way by the fast path and re-chunked on a
        // kept connection by Pingora's path. Every other answer must agree.
        closes: (answer.closes() || !answer.complete) && !case.close_framed,
        complete: answer.complete,
        body: normalise(&answer, instance.dir.proxy_port),
        received,
    }
}

/// The session token the instance minted for a session of the echo server.
pub async fn session_token(instance: &Instance) -> String {
    let request = post("/mcp/echo", "x-answer: session\r\n", &call_body())
        .replace("{host}", &instance.addr());
    let answer = raw::exchange(
        &instance.addr(),
        request.as_bytes(),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    answer
        .field("mcp-session-id")
        .expect("a session token")
        .to_string()
}
