//! The two engines are one proxy: the same requests, sent to an instance with
//! `proxy.fast_path = true` and to one with `false` (every request on Pingora's path), in front
//! of the same servers, get the same statuses, the same bodies (session tokens and the proxy's
//! own port aside), the same fields that carry meaning, and the servers receive the same
//! requests, as many times. Stateless calls, sessions, event streams, every answer framing,
//! the proxy's refusals and every fault of the fake servers.

mod common;

use common::engines::{call_body, get, post, post_chunked, run, session_token, Case, Instance};
use common::fake::{self, Behaviour};
use std::collections::BTreeMap;
use std::sync::Arc;

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

    let echo_case = |name, request: String| Case::to(name, request, &echo_counts);
    let body = call_body();
    let big = "x".repeat(40 * 1024);
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
        // No allow-list decides by name here: the routing fields go to the server unchecked
        // (the check is its MUST), the body unread.
        echo_case(
            "Mcp-Name disagreeing with the body, no allow-list",
            post("/mcp/echo", "mcp-name: not-echo\r\n", &body),
        ),
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
        // A body over 64 KiB: its head and what has arrived go first, the rest as it comes.
        echo_case(
            "100 KiB body",
            post("/mcp/echo", "", &"y".repeat(100 * 1024)),
        ),
        // Chunked uploads: on the fast path when whole, clean and within the limits, decoded
        // and sent on as one chunk, as Pingora's path re-chunks them; on Pingora's otherwise.
        echo_case(
            "chunked upload",
            post_chunked("/mcp/echo", "", &[&body[..20], &body[20..]], "0\r\n\r\n"),
        ),
        echo_case(
            "empty chunked upload",
            post_chunked("/mcp/echo", "", &[], "0\r\n\r\n"),
        ),
        echo_case(
            "chunked upload with a trailer",
            post_chunked("/mcp/echo", "", &[&body], "0\r\nx-checksum: 1\r\n\r\n"),
        ),
        echo_case(
            "chunked upload with a broken chunk",
            post_chunked("/mcp/echo", "", &[&body], "5\r\nabc\r\n0\r\n\r\n"),
        ),
        echo_case(
            "chunked upload over 64 KiB",
            post_chunked("/mcp/echo", "", &[&big, &big], "0\r\n\r\n"),
        ),
        echo_case(
            "chunked and a Content-Length",
            post_chunked("/mcp/echo", "content-length: 4\r\n", &[&body], "0\r\n\r\n"),
        ),
        echo_case(
            "gzip beside a Content-Length",
            post("/mcp/echo", "transfer-encoding: gzip\r\n", &body),
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
            post("/mcp/echo", "", &"x".repeat(300 * 1024)),
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
        cases.push(Case::to(
            name,
            post(&format!("/mcp/{name}"), "", &body),
            counts,
        ));
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
    let fast_count = || {
        fast.dir
            .metric("mcp_fleet_request_paths_total{path=\"fast\"}")
    };
    for case in &cases {
        let before = fast_count();
        let a = run(&fast, case).await;
        if matches!(case.name, "chunked upload" | "100 KiB body") {
            assert_eq!(
                fast_count() - before,
                1.0,
                "{}: not on the fast path",
                case.name
            );
        }
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
