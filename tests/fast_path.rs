//! The fast path (small MCP POSTs exchanged in the connection's own task) next to Pingora's path
//! on the same client connection, against a server that answers in every framing HTTP/1.1
//! allows: the client gets every answer whole and in order, the server sees the same request
//! it would get through Pingora's path, and connections are reused exactly when they may be.

mod common;

use common::fake::{self, Behaviour};
use common::{FleetDir, Proc, Sections};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);

/// One answer read off a raw connection.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn field(&self, name: &str) -> Option<&str> {
        self.head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    }

    /// The request head the server saw, from `Echo`'s answer.
    fn upstream_head(&self) -> String {
        let v: serde_json::Value = serde_json::from_str(&self.body).expect("a JSON body");
        v["result"]["head"]
            .as_str()
            .expect("the echoed head")
            .to_string()
    }
}

/// A client speaking HTTP/1.1 by hand, so framing and connection reuse are visible.
struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    async fn connect(port: u16) -> Self {
        Self {
            stream: TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect"),
            buf: Vec::new(),
        }
    }

    async fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
            .await
            .expect("the proxy answers in time")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// Reads until `needle` has arrived; returns everything read so far (kept in the buffer).
    async fn wait_for(&mut self, needle: &str) -> String {
        while !String::from_utf8_lossy(&self.buf).contains(needle) {
            assert!(self.fill().await > 0, "closed before {needle:?} arrived");
        }
        String::from_utf8_lossy(&self.buf).to_string()
    }

    /// Reads one whole answer: Content-Length, chunked, or (with neither) up to the close.
    async fn answer(&mut self) -> Answer {
        let end = loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            assert!(self.fill().await > 0, "closed before an answer head");
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).to_string();
        self.buf.drain(..end + 4);
        let status = head[9..12].parse().expect("a status");
        let mut answer = Answer {
            status,
            head,
            body: String::new(),
        };
        let body = if (100..200).contains(&status) {
            Vec::new()
        } else if let Some(n) = answer.field("content-length") {
            let n: usize = n.parse().expect("a length");
            while self.buf.len() < n {
                assert!(self.fill().await > 0, "body cut short");
            }
            self.buf.drain(..n).collect::<Vec<u8>>()
        } else if answer.field("transfer-encoding") == Some("chunked") {
            let mut body = Vec::new();
            loop {
                let line_end = loop {
                    if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        break i;
                    }
                    assert!(self.fill().await > 0, "chunk cut short");
                };
                let size = usize::from_str_radix(
                    String::from_utf8_lossy(&self.buf[..line_end]).trim(),
                    16,
                )
                .expect("a chunk size");
                while self.buf.len() < line_end + 2 + size + 2 {
                    assert!(self.fill().await > 0, "chunk cut short");
                }
                body.extend_from_slice(&self.buf[line_end + 2..line_end + 2 + size]);
                self.buf.drain(..line_end + 2 + size + 2);
                if size == 0 {
                    break body;
                }
            }
        } else {
            while self.fill().await > 0 {}
            std::mem::take(&mut self.buf)
        };
        answer.body = String::from_utf8(body).expect("UTF-8 body");
        answer
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send");
    }

    /// Whether the proxy has closed the connection (reads EOF).
    async fn closed(&mut self) -> bool {
        self.fill().await == 0
    }
}

/// The proxy in front of one `Echo` server (category `echo`, no health checks), with extra
/// `[proxy]` lines: the server's port and counts, the config and the running proxy.
async fn echo_fleet(proxy: &str) -> (u16, Arc<fake::Counts>, FleetDir, Proc) {
    let (port, counts) = fake::spawn(Behaviour::Echo).await;
    let dir = FleetDir::with_sections(
        &[],
        &[("echo", vec![([127, 0, 0, 1], port).into()])],
        &Sections {
            proxy,
            health: "enabled = false",
            ..Sections::default()
        },
    );
    let serve = dir.serve();
    (port, counts, dir, serve)
}

fn post(category: &str, answer: &str, extra: &str) -> Vec<u8> {
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}}"#;
    format!(
        "POST /mcp/{category}?trace=1 HTTP/1.1\r\nHost: public.example:443\r\nX-Forwarded-Host: forged\r\n\
         Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\
         x-answer: {answer}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_carries_fast_and_pingora_requests_in_order() {
    let (port, counts, dir, _serve) = echo_fleet("").await;
    let mut c = Raw::connect(dir.proxy_port).await;

    // A fast-path POST: the server sees its own path and address, the client's host as
    // X-Forwarded-Host (the forged one replaced), the query kept.
    c.send(&post("echo", "length", "")).await;
    let a = c.answer().await;
    assert_eq!(a.status, 200, "{a:?}");
    let seen = a.upstream_head().to_ascii_lowercase();
    assert!(seen.starts_with("post /mcp?trace=1 http/1.1\r\n"), "{seen}");
    assert!(
        seen.contains(&format!("\r\nhost: 127.0.0.1:{port}")),
        "{seen}"
    );
    assert!(
        seen.contains("\r\nx-forwarded-host: public.example:443"),
        "{seen}"
    );
    assert!(!seen.contains("forged"), "{seen}");
    assert!(!seen.contains("connection"), "{seen}");

    // Pingora's path on the same connection (a local endpoint, then a POST with a Connection
    // option the fast path leaves to it), then the fast path again.
    c.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let health = c.answer().await;
    assert_eq!(health.status, 200, "{health:?}");
    c.send(&post(
        "echo",
        "length",
        "Connection: keep-alive, x-trace\r\nx-trace: 1\r\n",
    ))
    .await;
    let a = c.answer().await;
    assert_eq!(a.status, 200, "{a:?}");
    // `Connection: keep-alive`, as every MCP SDK sends it, stays on the fast path (and is not
    // passed on: it is this hop's).
    c.send(&post("echo", "length", "Connection: Keep-Alive\r\n"))
        .await;
    let a = c.answer().await;
    assert_eq!(a.status, 200, "{a:?}");
    assert!(
        !a.upstream_head()
            .to_ascii_lowercase()
            .contains("connection"),
        "{a:?}"
    );
    // Two requests in one write: answered in order.
    let mut two = post("echo", "length", "x-n: 1\r\n");
    two.extend_from_slice(&post("echo", "length", "x-n: 2\r\n"));
    c.send(&two).await;
    let first = c.answer().await.upstream_head();
    let second = c.answer().await.upstream_head();
    assert!(
        first.contains("x-n: 1") && second.contains("x-n: 2"),
        "{first}\n{second}"
    );

    // Four fast requests on one upstream connection (plus the one Pingora's path opened for
    // its request).
    assert!(
        counts.connections() <= 2,
        "{} connections",
        counts.connections()
    );
    assert_eq!(counts.requests(), 5);
    assert_eq!(
        dir.metric("mcp_fleet_request_paths_total{path=\"fast\"}"),
        4.0
    );
    // (The harness polls /stats through Pingora's path too.)
    assert!(dir.metric("mcp_fleet_request_paths_total{path=\"pingora\"}") >= 2.0);
    // The connection goes back to the pool just after the answer's last byte is written, so
    // the client may be told before it is there.
    common::wait_for("the upstream connection back in the pool", WAIT, || {
        (dir.metric("mcp_fleet_upstream_idle_connections") >= 1.0).then_some(())
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_in_every_framing_arrive_whole_and_connections_are_reused_only_when_they_may() {
    let (_, counts, dir, _serve) = echo_fleet("").await;
    let mut c = Raw::connect(dir.proxy_port).await;

    // The server closes after its answer: the client keeps its connection, the next request
    // gets a new server connection.
    c.send(&post("echo", "close", "")).await;
    let a = c.answer().await;
    assert_eq!(a.status, 200);
    assert!(a.upstream_head().contains("x-answer: close"));
    assert_eq!(
        a.field("connection"),
        None,
        "hop-by-hop field not passed on: {a:?}"
    );
    let before = counts.connections();

    // An event stream: the first event reaches the client while the server still holds the
    // rest (nothing is buffered), the end arrives after the server is let go, and the
    // connection then carries another request.
    c.send(&post("echo", "sse", "")).await;
    let so_far = c.wait_for("data: one").await;
    assert!(so_far.contains("x-accel-buffering: no"), "{so_far}");
    assert!(so_far.contains("transfer-encoding: chunked"), "{so_far}");
    counts.gate.notify_one();
    let a = c.answer().await;
    assert_eq!(a.status, 200);
    assert!(
        a.body.contains("data: one") && a.body.contains("\"head\""),
        "{a:?}"
    );
    assert_eq!(
        counts.connections(),
        before + 1,
        "a closed connection is not reused"
    );

    c.send(&post("echo", "length", "")).await;
    assert_eq!(c.answer().await.status, 200);
    assert_eq!(
        counts.connections(),
        before + 1,
        "the event stream's connection is reused"
    );

    // An informational head arriving in the same read as the answer: both passed on, in order.
    c.send(&post("echo", "early-hints", "")).await;
    let hints = c.answer().await;
    assert_eq!(hints.status, 103, "{hints:?}");
    assert!(hints.field("link").is_some());
    let a = c.answer().await;
    assert_eq!(a.status, 200, "{a:?}");
    assert!(a.upstream_head().contains("x-answer: early-hints"));

    // No length: the end of the answer is the close, so the client's connection ends too, and
    // says so.
    c.send(&post("echo", "until-close", "")).await;
    let a = c.answer().await;
    assert_eq!(a.status, 200);
    assert_eq!(a.field("connection"), Some("close"), "{a:?}");
    assert!(a.upstream_head().contains("x-answer: until-close"));
    assert!(c.closed().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_while_its_answer_is_awaited_cancels_the_request() {
    // The server may take a minute: only the client hanging up can end the wait early.
    let (_, counts, dir, _serve) =
        echo_fleet("first_byte_timeout = \"60s\"\nidle_timeout = \"60s\"").await;
    let mut c = Raw::connect(dir.proxy_port).await;
    c.send(&post("echo", "hold", "")).await;
    common::wait_for("the server to get the request", WAIT, || {
        (counts.requests() == 1).then_some(())
    });
    drop(c);
    common::wait_for("the proxy to close the server's connection", WAIT, || {
        (counts
            .closed_on_hold
            .load(std::sync::atomic::Ordering::SeqCst)
            == 1)
            .then_some(())
    });
    // The proxy closes the server's connection as it ends the request, then accounts it.
    common::wait_for("the request to be over", WAIT, || {
        (dir.metric("mcp_fleet_in_flight_requests") == 0.0).then_some(())
    });
}

/// `proxy.fast_path` is applied by a reload: from the next request on, every request takes
/// Pingora's path (and back), with the same answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_switch_is_applied_on_reload() {
    let (_port, _counts, dir, serve) = echo_fleet("fast_path = true").await;
    let paths = |dir: &FleetDir| {
        (
            dir.metric("mcp_fleet_request_paths_total{path=\"fast\"}"),
            dir.metric("mcp_fleet_request_paths_total{path=\"pingora\"}"),
        )
    };
    let three = |dir: &FleetDir| {
        let addr = format!("127.0.0.1:{}", dir.proxy_port);
        async move {
            for _ in 0..3 {
                let answer = common::raw::exchange(&addr, &post("echo", "length", ""), WAIT).await;
                assert_eq!(answer.status, 200, "{answer:?}");
            }
        }
    };
    three(&dir).await;
    let (fast, pingora) = paths(&dir);
    assert_eq!(fast, 3.0);

    let switch = |dir: &FleetDir, from: &str, to: &str| {
        let text = std::fs::read_to_string(dir.config()).expect("read config");
        std::fs::write(dir.config(), text.replace(from, to)).expect("write config");
        let applied = dir.metric("mcp_fleet_reloads_total{result=\"applied\"}");
        common::signal(serve.pid(), 1);
        common::wait_for("the reload", WAIT, || {
            let now = dir.metric("mcp_fleet_reloads_total{result=\"applied\"}");
            (now > applied || (applied.is_nan() && now >= 1.0)).then_some(())
        });
    };
    switch(&dir, "fast_path = true", "fast_path = false");
    three(&dir).await;
    assert_eq!(
        paths(&dir),
        (3.0, pingora + 3.0),
        "all three on Pingora's path"
    );

    switch(&dir, "fast_path = false", "fast_path = true");
    three(&dir).await;
    assert_eq!(paths(&dir), (6.0, pingora + 3.0), "back on the fast path");
}

/// `Connection: close` on the fast path: the answer says `connection: close` and the proxy
/// closes after it, as RFC 9112 asks of a server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_close_is_honoured_on_the_fast_path() {
    let (_, _counts, dir, _serve) = echo_fleet("").await;
    let mut c = Raw::connect(dir.proxy_port).await;
    let before = dir.metric("mcp_fleet_request_paths_total{path=\"fast\"}");
    c.send(&post("echo", "length", "Connection: close\r\n"))
        .await;
    let a = c.answer().await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.field("connection"), Some("close"), "{a:?}");
    assert_eq!(c.fill().await, 0, "the proxy closes after the answer");
    let after = dir.metric("mcp_fleet_request_paths_total{path=\"fast\"}");
    if common::fast_path_on() {
        assert_eq!(after - before, 1.0, "taken by the fast path");
    }
}

/// A chunked POST with the body the policy reads whole before a server is chosen.
fn chunked_post(chunks: &[&str]) -> Vec<u8> {
    let mut request = "POST /mcp/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        .to_string();
    for chunk in chunks {
        request.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    request.push_str("0\r\n\r\n");
    request.into_bytes()
}

/// The body `Echo` received.
fn upstream_body(a: &Answer) -> String {
    let v: serde_json::Value = serde_json::from_str(&a.body).expect("a JSON body");
    v["result"]["body"]
        .as_str()
        .expect("the echoed body")
        .to_string()
}

/// A chunked upload is read whole and decoded on the fast path, then sent on as one chunk; two
/// in one write are answered in order; one whose body comes slower than `proxy.header_timeout`
/// (which bounds the wait for a head, not for a body) is read by Pingora's path within
/// `proxy.body_timeout` and answered, not cut off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_uploads_take_the_fast_path_and_a_slow_one_is_still_answered() {
    let (_, counts, dir, _serve) = echo_fleet("header_timeout = \"1s\"").await;
    let mut c = Raw::connect(dir.proxy_port).await;
    let paths = || {
        (
            dir.metric("mcp_fleet_request_paths_total{path=\"fast\"}"),
            dir.metric("mcp_fleet_request_paths_total{path=\"pingora\"}"),
        )
    };
    let (fast, _) = paths();
    let body = [
        r#"{"jsonrpc":"2.0","id":1,"#,
        r#""method":"tools/call","#,
        r#""params":{}}"#,
    ];
    let mut two = chunked_post(&body);
    two.extend_from_slice(&chunked_post(&["{}"]));
    c.send(&two).await;
    let first = c.answer().await;
    let second = c.answer().await;
    assert_eq!((first.status, second.status), (200, 200), "{first:?}");
    assert_eq!(upstream_body(&first), body.concat());
    assert_eq!(upstream_body(&second), "{}");
    let seen = first.upstream_head().to_ascii_lowercase();
    assert!(seen.contains("\r\ntransfer-encoding: chunked"), "{seen}");
    assert!(!seen.contains("content-length"), "{seen}");
    if common::fast_path_on() {
        assert_eq!(paths().0 - fast, 2.0, "both taken by the fast path");
    }

    // On a new connection (whose first head has `proxy.header_timeout`), the head, then the
    // body in two pieces 1.5 s apart.
    let mut c = Raw::connect(dir.proxy_port).await;
    let slow = chunked_post(&body);
    let split = slow
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("head")
        + 4;
    let (_, pingora) = paths();
    c.send(&slow[..split + 10]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.send(&slow[split + 10..]).await;
    let a = c.answer().await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(upstream_body(&a), body.concat());
    if common::fast_path_on() {
        assert!(paths().1 > pingora, "the slow body went to Pingora's path");
    }
    assert_eq!(counts.requests(), 3);
}

/// A body over the 64 KiB the fast path buffers is passed on as it arrives: the server gets all
/// of it, and a request pipelined behind it is not read as part of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_body_is_passed_on_as_it_arrives() {
    let (_, counts, dir, _serve) = echo_fleet("max_body = \"1MiB\"").await;
    let mut c = Raw::connect(dir.proxy_port).await;
    let before = dir.metric("mcp_fleet_request_paths_total{path=\"fast\"}");
    let body = "z".repeat(300 * 1024);
    let head = format!(
        "POST /mcp/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    // The head and a first piece, then the rest with a small request behind it.
    let mut rest = body.as_bytes()[1000..].to_vec();
    rest.extend_from_slice(&post("echo", "length", "x-n: 2\r\n"));
    c.send(head.as_bytes()).await;
    c.send(&body.as_bytes()[..1000]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    c.send(&rest).await;
    let first = c.answer().await;
    assert_eq!(first.status, 200, "{}", first.head);
    assert_eq!(upstream_body(&first).len(), body.len());
    assert!(upstream_body(&first).bytes().all(|b| b == b'z'));
    let second = c.answer().await;
    assert_eq!(second.status, 200, "{second:?}");
    assert!(second.upstream_head().contains("x-n: 2"), "{second:?}");
    assert_eq!(counts.requests(), 2);
    if common::fast_path_on() {
        let after = dir.metric("mcp_fleet_request_paths_total{path=\"fast\"}");
        assert_eq!(after - before, 2.0, "both on the fast path");
    }
}
