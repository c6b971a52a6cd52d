//! Fault-injecting fake upstreams that run inside the test's own runtime, so the test can count
//! exactly what reached them: a black hole that reads a request and hangs up without answering,
//! a minimal MCP stub that records initialize and DELETE requests, servers that fail in the
//! ways a process can (reset, truncate, garbage, a huge body, silence, one byte a second), and
//! an event-stream firehose that counts how much it managed to send.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Default)]
pub struct Counts {
    /// Connections accepted (whether or not a request followed).
    pub connections: AtomicUsize,
    /// Bytes a streaming behaviour wrote into its sockets.
    pub bytes_sent: AtomicUsize,
    pub requests: AtomicUsize,
    pub initializes: AtomicUsize,
    pub deletes: AtomicUsize,
    /// Released by the test to let `Echo`'s event stream go on.
    pub gate: tokio::sync::Notify,
    /// Connections `Echo` held without answering (`hold`) that the proxy then closed.
    pub closed_on_hold: AtomicUsize,
}

impl Counts {
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
    pub fn bytes_sent(&self) -> usize {
        self.bytes_sent.load(Ordering::SeqCst)
    }
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
    pub fn initializes(&self) -> usize {
        self.initializes.load(Ordering::SeqCst)
    }
    pub fn deletes(&self) -> usize {
        self.deletes.load(Ordering::SeqCst)
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Behaviour {
    /// Read one whole request, count it, close without a byte of answer.
    BlackHole,
    /// Answer `initialize` with a session and `DELETE` with 200, counting both.
    McpStub,
    /// Half a status line, then a TCP reset.
    ResetMidHead,
    /// A chunked 200 whose first chunk promises 256 bytes and delivers 3, then EOF.
    TruncatedChunk,
    /// Bytes that are not HTTP.
    Garbage,
    /// A 200 that declares a 10 GiB body and streams zeros.
    HugeBody,
    /// Read the request and say nothing, holding the connection.
    Silent,
    /// A valid answer written one byte a second.
    Dribble,
    /// An endless `text/event-stream` of 1 KiB events.
    SseFlood,
    /// A well-behaved server whose JSON answer carries the request head and the body (decoded,
    /// when chunked) it received, framed
    /// as the request's `x-answer` field asks: `length` (default, keep-alive), `close`
    /// (Content-Length and `Connection: close`), `until-close` (no length: the end is the
    /// close), `session` (mints `mcp-session-id: echo-session-1`), `error` (a 500), `early-hints` (a 103 head, then the answer, in one write), `hold` (no answer:
    /// wait for the proxy to close the connection, and count it), `sse` (a chunked event stream: one event, then a wait for `Counts::gate`,
    /// then a second event and the end).
    Echo,
}

/// Closes with RST instead of FIN: SO_LINGER with a zero timeout.
#[allow(deprecated)]
fn reset(stream: TcpStream) {
    let _ = stream.set_linger(Some(std::time::Duration::ZERO));
}

const OK_JSON: &str =
    r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"ok"}]}}"#;

/// The fault behaviours; returns whether the connection may serve another request.
async fn misbehave(behaviour: Behaviour, stream: &mut TcpStream, counts: &Counts) -> bool {
    use std::time::Duration;
    match behaviour {
        Behaviour::TruncatedChunk => {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n100\r\nabc")
                .await;
            false
        }
        Behaviour::Garbage => {
            let _ = stream
                .write_all(b"\x00\x01\x02 this is not HTTP at all \xff\xfe\r\n\r\n")
                .await;
            false
        }
        Behaviour::HugeBody => {
            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 10737418240\r\n\r\n";
            if stream.write_all(head.as_bytes()).await.is_err() {
                return false;
            }
            let zeros = vec![b'0'; 64 * 1024];
            while stream.write_all(&zeros).await.is_ok() {
                counts.bytes_sent.fetch_add(zeros.len(), Ordering::SeqCst);
            }
            false
        }
        Behaviour::Silent => {
            let mut sink = [0u8; 1024];
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            false
        }
        Behaviour::Dribble => {
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{OK_JSON}",
                OK_JSON.len()
            );
            for b in answer.bytes() {
                if stream.write_all(&[b]).await.is_err() {
                    return false;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            true
        }
        Behaviour::SseFlood => {
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\r\n";
            if stream.write_all(head.as_bytes()).await.is_err() {
                return false;
            }
            let event = format!("data: {}\n\n", "e".repeat(1016));
            while stream.write_all(event.as_bytes()).await.is_ok() {
                counts.bytes_sent.fetch_add(event.len(), Ordering::SeqCst);
            }
            false
        }
        _ => false,
    }
}

/// `Echo`'s answer; whether the connection stays open.
async fn echo(stream: &mut TcpStream, request: &str, counts: &Counts) -> bool {
    let (head, received) = request.split_once("\r\n\r\n").unwrap_or((request, ""));
    let body = serde_json::json!({
        "jsonrpc": "2.0", "id": 1, "result": { "head": head, "body": received }
    })
    .to_string();
    let how = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("x-answer"))
        .map_or("length", |(_, v)| v.trim())
        .to_string();
    let json = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n";
    let answer = match how.as_str() {
        "hold" => {
            let mut sink = [0u8; 1024];
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            counts.closed_on_hold.fetch_add(1, Ordering::SeqCst);
            return false;
        }
        // A session minted on this answer; the id the proxy must carry back to this server.
        "session" => format!(
            "{json}mcp-session-id: echo-session-1\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ),
        "error" => format!(
            "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ),
        "close" => format!(
            "{json}connection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ),
        "until-close" => format!("{json}\r\n{body}"),
        // An informational head and the answer in one write.
        "early-hints" => format!(
            "HTTP/1.1 103 Early Hints\r\nlink: </x>; rel=preload\r\n\r\n{json}content-length: {}\r\n\r\n{body}",
            body.len()
        ),
        "sse" => {
            let event = |text: &str| {
                let data = format!("event: message\ndata: {text}\n\n");
                format!("{:x}\r\n{data}\r\n", data.len())
            };
            let first = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n{}",
                event("one")
            );
            if stream.write_all(first.as_bytes()).await.is_err() {
                return false;
            }
            counts.gate.notified().await;
            let rest = format!("{}0\r\n\r\n", event(&body));
            return stream.write_all(rest.as_bytes()).await.is_ok();
        }
        _ => format!("{json}content-length: {}\r\n\r\n{body}", body.len()),
    };
    stream.write_all(answer.as_bytes()).await.is_ok()
        && matches!(how.as_str(), "length" | "early-hints" | "session" | "error")
}

/// Reads one HTTP/1.1 request: its head, the empty line and its body (by Content-Length, or
/// chunked, decoded); `None` at EOF or on framing it cannot read.
async fn read_request(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        fill(stream, &mut buf).await?;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let field = |name: &str| {
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_ascii_lowercase())
    };
    let mut rest = buf.split_off(end + 4);
    let body = if field("transfer-encoding").as_deref() == Some("chunked") {
        let mut body = Vec::new();
        loop {
            let line = loop {
                if let Some(at) = rest.windows(2).position(|w| w == b"\r\n") {
                    break at;
                }
                fill(stream, &mut rest).await?;
            };
            let size = String::from_utf8_lossy(&rest[..line]);
            let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
            rest.drain(..line + 2);
            if size == 0 {
                // No trailers from the proxy: the empty line ends the body.
                while rest.len() < 2 {
                    fill(stream, &mut rest).await?;
                }
                break;
            }
            while rest.len() < size + 2 {
                fill(stream, &mut rest).await?;
            }
            body.extend_from_slice(&rest[..size]);
            rest.drain(..size + 2);
        }
        body
    } else {
        let len = field("content-length").and_then(|v| v.parse::<usize>().ok());
        while rest.len() < len.unwrap_or(0) {
            fill(stream, &mut rest).await?;
        }
        rest
    };
    Some(format!("{head}\r\n\r\n{}", String::from_utf8_lossy(&body)))
}

/// Reads more of the connection into `buf`; `None` at EOF or on an error.
async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 4096];
    let n = stream.read(&mut chunk).await.ok()?;
    if n == 0 {
        return None;
    }
    buf.extend_from_slice(&chunk[..n]);
    Some(())
}

/// Starts a fake upstream on a free loopback port; it lives as long as the test runtime.
pub async fn spawn(behaviour: Behaviour) -> (u16, Arc<Counts>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fake");
    let port = listener.local_addr().expect("addr").port();
    let counts = Arc::new(Counts::default());
    let shared = Arc::clone(&counts);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let counts = Arc::clone(&shared);
            counts.connections.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                while let Some(request) = read_request(&mut stream).await {
                    counts.requests.fetch_add(1, Ordering::SeqCst);
                    match behaviour {
                        Behaviour::BlackHole => return,
                        Behaviour::ResetMidHead => {
                            let _ = stream.write_all(b"HTTP/1.1 20").await;
                            reset(stream);
                            return;
                        }
                        Behaviour::TruncatedChunk
                        | Behaviour::Garbage
                        | Behaviour::HugeBody
                        | Behaviour::Silent
                        | Behaviour::Dribble
                        | Behaviour::SseFlood => {
                            if !misbehave(behaviour, &mut stream, &counts).await {
                                return;
                            }
                        }
                        Behaviour::Echo => {
                            if !echo(&mut stream, &request, &counts).await {
                                return;
                            }
                        }
                        Behaviour::McpStub => {
                            let answer = if request.starts_with("DELETE") {
                                counts.deletes.fetch_add(1, Ordering::SeqCst);
                                "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_string()
                            } else if request.contains("\"initialize\"") {
                                counts.initializes.fetch_add(1, Ordering::SeqCst);
                                let body = r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-11-25","capabilities":{},"serverInfo":{"name":"stub","version":"1"}}}"#;
                                format!(
                                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nmcp-session-id: stub-{}\r\ncontent-length: {}\r\n\r\n{body}",
                                    counts.initializes(),
                                    body.len()
                                )
                            } else {
                                "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".to_string()
                            };
                            if stream.write_all(answer.as_bytes()).await.is_err() {
                                return;
                            }
                            if request.to_ascii_lowercase().contains("connection: close") {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (port, counts)
}
