//! A raw HTTP/1.1 client for tests that must see exactly what the proxy sends: every field as
//! written (`Connection` included), informational heads, and how the answer ended (complete,
//! cut short, or never started).

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// 0 when no head arrived.
    pub status: u16,
    /// Statuses of the 1xx heads before the answer.
    pub informational: Vec<u16>,
    /// (lower-case name, value), in the order written.
    pub fields: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body ended as its framing says (length reached, last chunk, or the close of an
    /// answer framed by the close).
    pub complete: bool,
}

impl Answer {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The proxy said it closes the connection after this answer.
    pub fn closes(&self) -> bool {
        self.field("connection")
            .is_some_and(|v| v.to_ascii_lowercase().contains("close"))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Writes `request` whole to `addr` and reads one answer (bounded by `limit`).
pub async fn exchange(addr: &str, request: &[u8], limit: Duration) -> Answer {
    let mut stream = TcpStream::connect(addr)
        .await
        .expect("connect to the proxy");
    stream.write_all(request).await.expect("send the request");
    read_answer(&mut stream, limit).await
}

/// Reads one answer (after any 1xx heads) from `stream`.
pub async fn read_answer(stream: &mut TcpStream, limit: Duration) -> Answer {
    let mut answer = Answer {
        status: 0,
        informational: Vec::new(),
        fields: Vec::new(),
        body: Vec::new(),
        complete: false,
    };
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(limit, read_into(stream, &mut buf, &mut answer)).await;
    answer
}

async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    match stream.read(&mut chunk).await {
        Ok(n) if n > 0 => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
        _ => false,
    }
}

async fn read_into(stream: &mut TcpStream, buf: &mut Vec<u8>, answer: &mut Answer) {
    // Heads.
    let (status, fields, rest) = loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            if !fill(stream, buf).await {
                return;
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let rest = buf[end + 4..].to_vec();
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let fields: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        *buf = rest;
        if (100..200).contains(&status) {
            answer.informational.push(status);
            continue;
        }
        break (status, fields, std::mem::take(buf));
    };
    answer.status = status;
    answer.fields = fields;
    let mut body = rest;
    let length = answer
        .field("content-length")
        .and_then(|v| v.parse::<usize>().ok());
    let chunked = answer
        .field("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    if status == 204 || status == 304 {
        answer.complete = true;
    } else if chunked {
        loop {
            if let Some(data) = dechunk(&body) {
                answer.body = data;
                answer.complete = true;
                return;
            }
            if !fill(stream, &mut body).await {
                answer.body = body;
                return;
            }
        }
    } else if let Some(n) = length {
        while body.len() < n {
            if !fill(stream, &mut body).await {
                answer.body = body;
                return;
            }
        }
        body.truncate(n);
        answer.complete = true;
    } else {
        while fill(stream, &mut body).await {}
        answer.complete = true;
    }
    answer.body = body;
}

/// The payload of a whole chunked body; `None` until its last chunk has arrived.
fn dechunk(mut bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = bytes.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&bytes[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        bytes = &bytes[line_end + 2..];
        if size == 0 {
            return bytes.windows(2).any(|w| w == b"\r\n").then_some(out);
        }
        if bytes.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&bytes[..size]);
        bytes = &bytes[size + 2..];
    }
}
