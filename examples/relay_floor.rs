//! A measuring instrument, not part of the product: the least a tokio proxy can do for one
//! small proxied POST, so that `load-tests/compare.sh --floor true` can show, in the same run as
//! mcp-fleet, nginx and HAProxy, what CPU per request the runtime and the kernel cost before any
//! policy. One current-thread runtime, one task per client connection; each request's head is
//! found, its `Content-Length` read, its request line rewritten to the servers' path, and it
//! goes round-robin to one of the servers over a pooled keep-alive connection; the answer (which
//! must carry a `Content-Length`, as the built-in servers' do) is copied back. No timeouts, no
//! header checks, no metrics, no retries: nothing a gateway could go without is left out by
//! choice, so the figure is a floor.
//!
//! Usage: relay_floor LISTEN_ADDR FIRST_PORT COUNT [PATH]
//! (servers on 127.0.0.1:FIRST_PORT .. FIRST_PORT+COUNT-1, PATH default /mcp).

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Pool {
    servers: Vec<SocketAddr>,
    idle: Vec<Vec<TcpStream>>,
    next: usize,
}

type Shared = Rc<RefCell<Pool>>;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = || std::io::Error::other("usage: relay_floor LISTEN_ADDR FIRST_PORT COUNT [PATH]");
    let listen: SocketAddr = args.get(1).and_then(|a| a.parse().ok()).ok_or_else(usage)?;
    let first: u16 = args.get(2).and_then(|a| a.parse().ok()).ok_or_else(usage)?;
    let count: u16 = args.get(3).and_then(|a| a.parse().ok()).ok_or_else(usage)?;
    let path = args.get(4).cloned().unwrap_or_else(|| "/mcp".into());
    let servers: Vec<SocketAddr> = (0..count)
        .map(|i| SocketAddr::from(([127, 0, 0, 1], first + i)))
        .collect();
    let pool = Rc::new(RefCell::new(Pool {
        idle: servers.iter().map(|_| Vec::new()).collect(),
        servers,
        next: 0,
    }));
    let line: Rc<[u8]> = format!("POST {path} HTTP/1.1\r\n").into_bytes().into();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = TcpListener::bind(listen).await?;
        loop {
            let (client, _) = listener.accept().await?;
            client.set_nodelay(true)?;
            let (pool, line) = (pool.clone(), line.clone());
            tokio::task::spawn_local(async move {
                // A connection that breaks just ends: the load client counts it.
                let _ = serve(client, pool, line).await;
            });
        }
    })
}

async fn serve(mut client: TcpStream, pool: Shared, line: Rc<[u8]>) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut out = Vec::with_capacity(16 * 1024);
    loop {
        let Some(whole) = read_message(&mut client, &mut buf).await? else {
            return Ok(());
        };
        // The request line replaced, every field passed on as it came.
        let fields_at = find(&buf, b"\r\n").map_or(0, |i| i + 2);
        out.clear();
        out.extend_from_slice(&line);
        out.extend_from_slice(&buf[fields_at..whole]);
        buf.drain(..whole);

        let (index, pooled) = {
            let mut p = pool.borrow_mut();
            let index = p.next % p.servers.len();
            p.next = p.next.wrapping_add(1);
            (index, p.idle[index].pop())
        };
        let mut server = match pooled {
            Some(s) => s,
            None => {
                let addr = pool.borrow().servers[index];
                let s = TcpStream::connect(addr).await?;
                s.set_nodelay(true)?;
                s
            }
        };
        server.write_all(&out).await?;
        out.clear();
        let Some(answer) = read_message(&mut server, &mut out).await? else {
            return Err(std::io::Error::other("the server closed"));
        };
        client.write_all(&out[..answer]).await?;
        if out.len() == answer {
            pool.borrow_mut().idle[index].push(server);
        }
    }
}

/// Reads into `buf` until it holds one whole message (head and `Content-Length` body); its
/// length, or None when the peer closed before one began.
async fn read_message(from: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Option<usize>> {
    loop {
        if let Some(head_end) = find(buf, b"\r\n\r\n").map(|i| i + 4) {
            let whole = head_end + content_length(&buf[..head_end]);
            while buf.len() < whole {
                if read_more(from, buf).await? == 0 {
                    return Err(std::io::Error::other("closed mid-body"));
                }
            }
            return Ok(Some(whole));
        }
        if read_more(from, buf).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(std::io::Error::other("closed mid-head"))
            };
        }
    }
}

async fn read_more(from: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    buf.reserve(16 * 1024);
    from.read_buf(buf).await
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

fn content_length(head: &[u8]) -> usize {
    head.split(|&b| b == b'\n')
        .find_map(|l| {
            let (name, value) = l.split_at(l.iter().position(|&b| b == b':')?);
            name.eq_ignore_ascii_case(b"content-length")
                .then(|| std::str::from_utf8(&value[1..]).ok()?.trim().parse().ok())
                .flatten()
        })
        .unwrap_or(0)
}
