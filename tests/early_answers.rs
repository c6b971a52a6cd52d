//! Answers given before the request was read in full (413, 403, 404, ...) reach a client that
//! writes its whole body before it reads, as Python's `urllib` does: the proxy reads and
//! discards the rest for a bounded time (nginx's `lingering_close`) instead of closing on
//! unread bytes, which the client would see as a reset or a broken pipe (`urllib` did:
//! `[Errno 32] Broken pipe`).

mod common;

use common::fake::{self, Behaviour};
use common::{FleetDir, Sections};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Writes a head declaring `len` body bytes, then all of them, and only then reads the answer.
fn write_all_then_read(addr: &str, path: &str, extra: &str, len: usize) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the proxy");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("socket option");
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n{extra}content-length: {len}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).expect("send the head");
    let chunk = vec![b' '; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len());
        stream
            .write_all(&chunk[..n])
            .unwrap_or_else(|e| panic!("writing the body to {path}: {e} with {left} bytes left"));
        left -= n;
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_writes_64_mib_before_reading_gets_its_413() {
    let (port, counts) = fake::spawn(Behaviour::Echo).await;
    let dir = FleetDir::with_sections(
        &[],
        &[("api", vec![([127, 0, 0, 1], port).into()])],
        &Sections {
            proxy: "max_body = \"1MiB\"\nallowed_origins = [\"http://localhost:3000\"]",
            health: "enabled = false",
            ..Sections::default()
        },
    );
    let _serve = dir.serve();
    let addr = format!("127.0.0.1:{}", dir.proxy_port);
    let cases = [
        ("/mcp/api", "", 64 << 20, 413),
        ("/mcp/api", "origin: http://evil.example\r\n", 8 << 20, 403),
        ("/mcp/nope", "", 8 << 20, 404),
    ];
    for (path, extra, len, want) in cases {
        let addr = addr.clone();
        let (status, body) =
            tokio::task::spawn_blocking(move || write_all_then_read(&addr, path, extra, len))
                .await
                .expect("the client thread");
        assert_eq!(status, want, "{path} {extra:?}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("a JSON-RPC error body");
        assert!(v["error"]["code"].is_i64(), "{body}");
    }
    assert_eq!(
        counts.requests(),
        0,
        "no refused request reached the server"
    );
}

/// The fast path's early answers linger too: a request whose server cannot be reached is
/// answered (502 or 503) while its 32 MiB body is still arriving, and a client that writes it
/// all before reading gets that answer, not a reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_server_is_down_gets_its_answer_after_writing_the_body() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("test setup");
    let port = closed.local_addr().expect("test setup").port();
    drop(closed);
    let dir = FleetDir::with_sections(
        &[],
        &[("down", vec![([127, 0, 0, 1], port).into()])],
        &Sections {
            proxy: "max_body = \"64MiB\"",
            health: "enabled = false",
            ..Sections::default()
        },
    );
    let _serve = dir.serve();
    let addr = format!("127.0.0.1:{}", dir.proxy_port);
    for _ in 0..2 {
        let addr = addr.clone();
        let (status, body) = tokio::task::spawn_blocking(move || {
            write_all_then_read(&addr, "/mcp/down", "", 32 << 20)
        })
        .await
        .expect("the client thread");
        assert!(status == 502 || status == 503, "{status}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("a JSON-RPC error body");
        assert!(v["error"]["code"].is_i64(), "{body}");
    }
}
