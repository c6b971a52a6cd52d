//! Fault-injecting fake upstreams that run inside the test's own runtime, so the test can count
//! exactly what reached them: a black hole that reads a request and hangs up without answering,
//! and a minimal MCP stub that records initialize and DELETE requests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Default)]
pub struct Counts {
    pub requests: AtomicUsize,
    pub initializes: AtomicUsize,
    pub deletes: AtomicUsize,
}

impl Counts {
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
}

/// Reads one HTTP/1.1 request (head and Content-Length body); `None` at EOF.
async fn read_request(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = stream.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Some(String::from_utf8_lossy(&buf).to_string());
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
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
            tokio::spawn(async move {
                while let Some(request) = read_request(&mut stream).await {
                    counts.requests.fetch_add(1, Ordering::SeqCst);
                    match behaviour {
                        Behaviour::BlackHole => return,
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
