//! The two engines are one proxy: the same requests, sent to an instance with
//! `proxy.fast_path = true` and to one with `false` (every request on Pingora's path), in front
//! of the same servers, get the same statuses, the same bodies (session tokens and the proxy's
//! own port aside), the same fields that carry meaning, and the servers receive the same
//! requests, as many times. Stateless calls, sessions, event streams, every answer framing,
//! the proxy's refusals and every fault of the fake servers.

mod common;

use common::fake::{self, Behaviour, Counts};
use common::raw::{self, Answer};
use common::{FleetDir, Proc, Sections};
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

struct Instance {
    dir: FleetDir,
    _serve: Proc,
}

impl Instance {
    fn start(statics: &[(&str, Vec<std::net::SocketAddr>)], fast_path: bool) -> Self {
        Self::start_with(statics, fast_path, "", "", Vec::new())
    }

    /// With more `[proxy]` lines, an `[auth]` section and per-category lines.
    fn start_with(
        statics: &[(&str, Vec<std::net::SocketAddr>)],
        fast_path: bool,
        more_proxy: &str,
        auth: &str,
        categories: Vec<(&str, String)>,
    ) -> Self {
        let proxy = format!(
            "fast_path = {fast_path}\nfirst_byte_timeout = \"1s\"\nmax_response_body = \"1MiB\"\n\
             max_body = \"32KiB\"\nmax_retries = 1\neject_after_5xx = 0\nmax_ejected_percent = 0\n\
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

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.dir.proxy_port)
    }
}

/// A request as bytes, with the instance's address where `{host}` stands.
struct Case {
    name: &'static str,
    request: String,
    /// Fake servers whose request counts are compared.
    counts: Vec<Arc<Counts>>,
    /// Let the `sse` answer of the echo server finish.
    release: Option<Arc<Counts>>,
    /// The server frames its answer by closing the connection.
    close_framed: bool,
}

fn post(path: &str, extra: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nhost: {{host}}\r\ncontent-type: application/json\r\n\
         accept: application/json, text/event-stream\r\nmcp-protocol-version: 2026-07-28\r\n\
         mcp-method: tools/call\r\n{extra}content-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// A `GET` for the event stream, as the SDKs open it.
fn get(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nhost: {{host}}\r\naccept: text/event-stream\r\n\
         mcp-protocol-version: 2025-11-25\r\n{extra}\r\n"
    )
}

fn call_body() -> String {
    r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}}"#.to_string()
}

/// What must be equal on both engines.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    status: u16,
    informational: Vec<u16>,
    fields: BTreeMap<String, String>,
    session_token: bool,
    closes: bool,
    complete: bool,
    body: String,
    /// Requests each compared server received.
    received: Vec<usize>,
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

async fn run(instance: &Instance, case: &Case) -> Seen {
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
async fn session_token(instance: &Instance) -> String {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_engines_answer_every_request_alike() {
    let (echo, echo_counts) = fake::spawn(Behaviour::Echo).await;
    let mut statics = vec![("echo", vec![([127, 0, 0, 1], echo).into()])];
    let faults = [
        ("blackhole", Behaviour::BlackHole),
        ("reset", Behaviour::ResetMidHead),
        ("truncated", Behaviour::TruncatedChunk),
        ("garbage", Behaviour::Garbage),
        ("huge", Behaviour::HugeBody),
        ("silent", Behaviour::Silent),
        ("dribble", Behaviour::Dribble),
    ];
    let mut fault_counts = BTreeMap::new();
    for (name, behaviour) in faults {
        let (port, counts) = fake::spawn(behaviour).await;
        statics.push((name, vec![([127, 0, 0, 1], port).into()]));
        fault_counts.insert(name, counts);
    }
    // A server that is not there: every connect is refused.
    let gone = common::free_port();
    statics.push(("gone", vec![([127, 0, 0, 1], gone).into()]));

    let fast = Instance::start(&statics, true);
    let pingora = Instance::start(&statics, false);

    let echo_case = |name, request: String| Case {
        name,
        request,
        counts: vec![Arc::clone(&echo_counts)],
        release: None,
        close_framed: false,
    };
    let body = call_body();
    let mut cases = vec![
        echo_case("stateless call", post("/mcp/echo", "", &body)),
        echo_case(
            "query passed on",
            post("/mcp/echo?tenant=a&x=1", "x-forwarded-host: spoofed\r\n", &body),
        ),
        echo_case(
            "answer that closes",
            post("/mcp/echo", "x-answer: close\r\n", &body),
        ),
        Case {
            close_framed: true,
            ..echo_case(
                "answer framed by the close",
                post("/mcp/echo", "x-answer: until-close\r\n", &body),
            )
        },
        echo_case(
            "103 before the answer",
            post("/mcp/echo", "x-answer: early-hints\r\n", &body),
        ),
        echo_case(
            "server's own 500",
            post("/mcp/echo", "x-answer: error\r\n", &body),
        ),
        echo_case(
            "session minted",
            post("/mcp/echo", "x-answer: session\r\n", &body),
        ),
        Case {
            name: "event stream answer",
            request: post("/mcp/echo", "x-answer: sse\r\n", &body),
            counts: vec![Arc::clone(&echo_counts)],
            release: Some(Arc::clone(&echo_counts)),
            close_framed: false,
        },
        echo_case(
            "allowed Origin",
            post("/mcp/echo", "origin: http://localhost:3000\r\n", &body),
        ),
        // The persistence options every SDK sends: the fast path honours them itself now.
        echo_case(
            "Connection: keep-alive (as the SDKs send it)",
            post("/mcp/echo", "connection: keep-alive\r\n", &body),
        ),
        echo_case(
            "Connection: close",
            post("/mcp/echo", "connection: close\r\n", &body),
        ),
        // GET and DELETE: on the fast path when they carry no body, on Pingora's otherwise.
        echo_case(
            "GET without a session",
            get("/mcp/echo?cursor=2", "last-event-id: 41\r\nconnection: keep-alive\r\n"),
        ),
        Case {
            name: "GET answered as an event stream",
            request: get("/mcp/echo", "x-answer: sse\r\n"),
            counts: vec![Arc::clone(&echo_counts)],
            release: Some(Arc::clone(&echo_counts)),
            close_framed: false,
        },
        echo_case(
            "GET with a body",
            "GET /mcp/echo HTTP/1.1\r\nhost: {host}\r\ncontent-length: 2\r\n\r\n{}".to_string(),
        ),
        echo_case(
            "DELETE without a session",
            "DELETE /mcp/echo HTTP/1.1\r\nhost: {host}\r\n\r\n".to_string(),
        ),
        echo_case(
            "DELETE of a forged session",
            "DELETE /mcp/echo HTTP/1.1\r\nhost: {host}\r\nmcp-session-id: f1AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\ncontent-length: 0\r\n\r\n"
                .to_string(),
        ),
        echo_case("GET of an unknown category", get("/mcp/nope", "")),
        // The proxy's refusals.
        echo_case("unknown category", post("/mcp/nope", "", &body)),
        echo_case("no such endpoint", post("/v1/chat", "", &body)),
        echo_case(
            "Origin not allowed",
            post("/mcp/echo", "origin: http://evil.example\r\n", &body),
        ),
        echo_case(
            "body over max_body",
            post("/mcp/echo", "", &"x".repeat(40 * 1024)),
        ),
        echo_case(
            "forged session",
            post("/mcp/echo", "mcp-session-id: f1AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\n", &body),
        ),
        echo_case(
            "two Content-Lengths",
            "POST /mcp/echo HTTP/1.1\r\nhost: {host}\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\n{}"
                .to_string(),
        ),
        echo_case(
            "method not allowed",
            "PUT /mcp/echo HTTP/1.1\r\nhost: {host}\r\ncontent-length: 0\r\n\r\n".to_string(),
        ),
        // No server to be had.
        Case {
            name: "connection refused",
            request: post("/mcp/gone", "", &body),
            counts: vec![],
            release: None,
            close_framed: false,
        },
    ];
    for (name, counts) in &fault_counts {
        cases.push(Case {
            name,
            request: post(&format!("/mcp/{name}"), "", &body),
            counts: vec![Arc::clone(counts)],
            release: None,
            close_framed: false,
        });
    }

    // Sessions: each instance mints its own token for the same server session; what follows
    // on it must be alike.
    let tokens = [session_token(&fast).await, session_token(&pingora).await];
    let session_cases = |token: &str| {
        vec![
            echo_case(
                "call in a session",
                post("/mcp/echo", &format!("mcp-session-id: {token}\r\n"), &body),
            ),
            echo_case(
                "event stream of a session",
                get("/mcp/echo", &format!("mcp-session-id: {token}\r\n")),
            ),
            echo_case(
                "end of a session",
                format!(
                    "DELETE /mcp/echo HTTP/1.1\r\nhost: {{host}}\r\nmcp-session-id: {token}\r\n\r\n"
                ),
            ),
        ]
    };

    let mut differences = Vec::new();
    for case in &cases {
        let a = run(&fast, case).await;
        let b = run(&pingora, case).await;
        if a != b {
            differences.push(format!(
                "{}:\n  fast path: {a:?}\n  pingora:   {b:?}",
                case.name
            ));
        }
    }
    let fast_before = fast
        .dir
        .metric("mcp_fleet_request_paths_total{path=\"fast\"}");
    for (fast_case, pingora_case) in session_cases(&tokens[0])
        .iter()
        .zip(session_cases(&tokens[1]).iter())
    {
        let a = run(&fast, fast_case).await;
        let b = run(&pingora, pingora_case).await;
        if a != b {
            differences.push(format!(
                "{}:\n  fast path: {a:?}\n  pingora:   {b:?}",
                fast_case.name
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "the engines differ:\n{}",
        differences.join("\n")
    );
    // The session's call, its GET stream and its DELETE all took the fast path.
    assert_eq!(
        fast.dir
            .metric("mcp_fleet_request_paths_total{path=\"fast\"}")
            - fast_before,
        3.0
    );
    // Each engine counted the one session its DELETE ended (not the DELETEs without one).
    for instance in [&fast, &pingora] {
        assert_eq!(
            instance
                .dir
                .metric("mcp_fleet_sessions_ended_total{category=\"echo\"}"),
            1.0
        );
    }
    // And the fast path did carry the small POSTs of the first instance.
    assert!(
        fast.dir
            .metric("mcp_fleet_request_paths_total{path=\"fast\"}")
            >= 5.0
    );
    assert_eq!(
        pingora
            .dir
            .metric("mcp_fleet_request_paths_total{path=\"fast\"}"),
        0.0
    );
}

/// The edge's rules (credentials, scopes, allow-lists, routing fields, no passthrough, the
/// proxy's own upstream field, rate limits) on both engines: API keys, so no authorization
/// server is needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_engines_apply_the_edge_alike() {
    let (echo, echo_counts) = fake::spawn(Behaviour::Echo).await;
    let statics = vec![("echo", vec![([127, 0, 0, 1], echo).into()])];
    let keys_dir = tempfile::tempdir().expect("tempdir");
    let sha = common::auth::sha256_hex;
    let keys = keys_dir.path().join("keys.toml");
    std::fs::write(
        &keys,
        format!(
            "[[key]]\nname = \"full\"\nsha256 = \"{}\"\nscopes = [\"mcp:echo\"]\n\
             [[key]]\nname = \"bare\"\nsha256 = \"{}\"\n\
             [[key]]\nname = \"limited\"\nsha256 = \"{}\"\nscopes = [\"mcp:echo\"]\n",
            sha("key-full"),
            sha("key-bare"),
            sha("key-limited")
        ),
    )
    .expect("keys");
    std::env::set_var("DIFFERENTIAL_UPSTREAM_KEY", "proxy-own-credential");
    let auth = format!("mode = \"api-key\"\napi_keys_file = \"{}\"", keys.display());
    let categories = || {
        vec![(
            "echo",
            "upstream_headers = { \"X-Service-Key\" = \"env:DIFFERENTIAL_UPSTREAM_KEY\" }\n\
             [categories.echo.auth]\nscopes = [\"mcp:echo\"]\ntools = [\"echo\", \"read_*\"]\n\
             prompts = [\"greet\"]\nresources = [\"file:///docs/*\"]"
                .to_string(),
        )]
    };
    // A burst of 5 per principal (`full` uses all five of its own; refusals before the rate
    // limit are not charged): the `limited` key's sixth request in a row is refused.
    let limits = "[proxy.rate_limit]\nper_principal = \"1/m\"\nburst = \"300s\"";
    let fast = Instance::start_with(&statics, true, limits, &auth, categories());
    let pingora = Instance::start_with(&statics, false, limits, &auth, categories());

    let body = call_body();
    let named = |tool: &str| body.replace("\"echo\"", &format!("\"{tool}\""));
    let bearer = |k: &str| format!("authorization: Bearer {k}\r\nmcp-name: echo\r\n");
    let case = |name, request: String| Case {
        name,
        request,
        counts: vec![Arc::clone(&echo_counts)],
        release: None,
        close_framed: false,
    };
    let list = r#"{"jsonrpc":"2.0","id":8,"method":"tools/list","params":{}}"#;
    let rpc = |method: &str, params: &str| {
        let body = format!(r#"{{"jsonrpc":"2.0","id":9,"method":"{method}","params":{params}}}"#);
        format!(
            "POST /mcp/echo HTTP/1.1\r\nhost: {{host}}\r\ncontent-type: application/json\r\n\
             accept: application/json, text/event-stream\r\nauthorization: Bearer key-full\r\n\
             content-length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let cases = vec![
        case("no credential", post("/mcp/echo", "", &body)),
        case(
            "not a bearer credential",
            post("/mcp/echo", "authorization: Basic a2V5\r\n", &body),
        ),
        case("unknown key", post("/mcp/echo", &bearer("key-nope"), &body)),
        case(
            "a key without the scope",
            post("/mcp/echo", &bearer("key-bare"), &body),
        ),
        case(
            "allowed tool: no passthrough, the proxy's own field",
            post("/mcp/echo", &bearer("key-full"), &body),
        ),
        case(
            "tool by prefix",
            post(
                "/mcp/echo",
                "authorization: Bearer key-full\r\nmcp-name: read_file\r\n",
                &named("read_file"),
            ),
        ),
        case(
            "tool outside the allow-list",
            post(
                "/mcp/echo",
                "authorization: Bearer key-full\r\nmcp-name: drop\r\n",
                &named("drop"),
            ),
        ),
        case(
            "Mcp-Name disagrees with the body",
            post(
                "/mcp/echo",
                "authorization: Bearer key-full\r\nmcp-name: echo\r\n",
                &named("drop"),
            ),
        ),
        case(
            "a body that is not JSON-RPC",
            post("/mcp/echo", "authorization: Bearer key-full\r\n", "[1,2]"),
        ),
        case(
            "a list answer (filtered)",
            format!(
                "POST /mcp/echo HTTP/1.1\r\nhost: {{host}}\r\ncontent-type: application/json\r\n\
                 accept: application/json, text/event-stream\r\nauthorization: Bearer key-full\r\n\
                 mcp-method: tools/list\r\ncontent-length: {}\r\n\r\n{list}",
                list.len()
            ),
        ),
        case("prompt allowed", rpc("prompts/get", r#"{"name":"greet"}"#)),
        case(
            "prompt outside the allow-list",
            rpc("prompts/get", r#"{"name":"leak"}"#),
        ),
        case(
            "resource by prefix",
            rpc("resources/read", r#"{"uri":"file:///docs/a.md"}"#),
        ),
        case(
            "resource outside the allow-list",
            rpc("resources/read", r#"{"uri":"file:///etc/passwd"}"#),
        ),
        case(
            "subscription outside the allow-list",
            rpc("resources/subscribe", r#"{"uri":"file:///etc/passwd"}"#),
        ),
    ];
    let mut cases = cases;
    for name in [
        "rate limit 1",
        "rate limit 2",
        "rate limit 3",
        "rate limit 4",
        "rate limit 5",
        "rate limit 6: refused",
    ] {
        cases.push(case(name, post("/mcp/echo", &bearer("key-limited"), &body)));
    }
    let mut differences = Vec::new();
    let mut statuses = Vec::new();
    for case in &cases {
        let a = run(&fast, case).await;
        let b = run(&pingora, case).await;
        statuses.push((case.name, a.status));
        if a != b {
            differences.push(format!(
                "{}:\n  fast path: {a:?}\n  pingora:   {b:?}",
                case.name
            ));
        }
        if case.name.starts_with("allowed tool") {
            assert!(!a.body.contains("authorization"), "{}", a.body);
            assert!(
                a.body.contains("x-service-key: proxy-own-credential"),
                "{}",
                a.body
            );
        }
    }
    assert!(
        differences.is_empty(),
        "the engines differ:\n{}",
        differences.join("\n")
    );
    let want = [
        401, 401, 401, 403, 200, 200, 403, 400, 400, 200, 200, 403, 200, 403, 403, 200, 200, 200,
        200, 200, 429,
    ];
    let got: Vec<u16> = statuses.iter().map(|(_, s)| *s).collect();
    assert_eq!(got, want, "{statuses:?}");
    assert!(
        fast.dir
            .metric("mcp_fleet_request_paths_total{path=\"fast\"}")
            >= 3.0
    );
}
