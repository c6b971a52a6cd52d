//! One active check of one server: a TCP connect, an HTTP GET, or a real MCP round trip. The HTTP
//! spoken here is the least that answers the question (one request per connection, `Connection:
//! close`), so a check never holds a pooled connection and never depends on the proxy.

use crate::config::HealthKind;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest answer read from a server during a check.
const MAX_READ: usize = 64 * 1024;

/// Runs one check; `Err` says why it failed, for the log.
pub async fn check(
    kind: &HealthKind,
    addr: SocketAddr,
    mcp_path: &str,
    timeout: Duration,
) -> Result<(), String> {
    match tokio::time::timeout(timeout, run(kind, addr, mcp_path)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

async fn run(kind: &HealthKind, addr: SocketAddr, mcp_path: &str) -> Result<(), String> {
    match kind {
        HealthKind::Tcp => connect(addr).await.map(drop),
        HealthKind::Http {
            path,
            expect_status,
        } => {
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: mcp-fleet-health\r\nConnection: close\r\n\r\n"
            );
            let answer = exchange(addr, request.as_bytes(), |_| false).await?;
            if answer.status == *expect_status {
                Ok(())
            } else {
                Err(format!(
                    "GET {path} answered {}, expected {expect_status}",
                    answer.status
                ))
            }
        }
        HealthKind::Mcp => mcp_round_trip(addr, mcp_path).await,
    }
}

/// `initialize`, then `DELETE` of the session it created: the check proves the server speaks
/// MCP and leaves nothing behind (1000 servers checked every 30 s would otherwise pile up
/// sessions).
async fn mcp_round_trip(addr: SocketAddr, path: &str) -> Result<(), String> {
    let body = concat!(
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","#,
        r#""capabilities":{},"clientInfo":{"name":"mcp-fleet-health","version":"1"}}}"#
    );
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2025-11-25\r\n\
         User-Agent: mcp-fleet-health\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let answer = exchange(addr, request.as_bytes(), |body| {
        contains(body, b"\"result\"") || contains(body, b"\"error\"")
    })
    .await?;
    if answer.status != 200 {
        return Err(format!("initialize answered HTTP {}", answer.status));
    }
    if !contains(&answer.body, b"\"result\"") {
        return Err("initialize got no JSON-RPC result".into());
    }
    if let Some(session) = answer.session {
        let request = format!(
            "DELETE {path} HTTP/1.1\r\nHost: {addr}\r\nMcp-Session-Id: {session}\r\n\
             MCP-Protocol-Version: 2025-11-25\r\nUser-Agent: mcp-fleet-health\r\n\
             Connection: close\r\n\r\n"
        );
        let deleted = exchange(addr, request.as_bytes(), |_| false).await?;
        // 405: the server does not let clients end sessions; nothing more a check can do.
        if !(200..300).contains(&deleted.status) && deleted.status != 405 {
            return Err(format!(
                "DELETE of the check's session answered HTTP {}",
                deleted.status
            ));
        }
    }
    Ok(())
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

struct Answer {
    status: u16,
    session: Option<String>,
    body: Vec<u8>,
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Sends `request` and reads until the server closes, `done(body)` says enough, or `MAX_READ`.
async fn exchange(
    addr: SocketAddr,
    request: &[u8],
    done: impl Fn(&[u8]) -> bool,
) -> Result<Answer, String> {
    let mut stream = connect(addr).await?;
    stream
        .write_all(request)
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut buf = Vec::with_capacity(4096);
    let mut header_end = None;
    loop {
        let mut chunk = [0u8; 4096];
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if header_end.is_none() {
            header_end = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
        }
        if let Some(h) = header_end {
            if done(&buf[h..]) {
                break;
            }
        }
        if buf.len() >= MAX_READ {
            break;
        }
    }
    let h = header_end.ok_or_else(|| "no HTTP answer".to_string())?;
    let head = String::from_utf8_lossy(&buf[..h]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| "malformed HTTP status line".to_string())?;
    let session = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("mcp-session-id"))
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty() && v.bytes().all(|b| (0x21..=0x7e).contains(&b)));
    Ok(Answer {
        status,
        session,
        body: buf[h..].to_vec(),
    })
}
