//! The listener's admission rules, which Pingora leaves to the application: at most
//! `proxy.max_connections` open client connections, and a deadline for every request head.
//!
//! Pingora times each read of a request head separately (60 s), so a client sending one byte
//! every few seconds holds a connection and a task forever (slowloris). The gate runs the HTTP/1
//! connection loop itself (the same loop as Pingora's `ServerApp` for HTTP apps, without h2c,
//! which we do not serve) and races every request against a deadline that stops as soon as
//! the proxy has the whole head: `proxy.header_timeout` from accept for the first request,
//! `proxy.client_idle_timeout` from the end of the previous answer for the next ones.

use super::reply;
use super::FleetProxy;
use crate::upstream::Registry;
use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Set by the proxy once it has parsed a request head; stops that request's head deadline.
#[derive(Debug, Default)]
pub struct HeadSignal(AtomicBool);

impl HeadSignal {
    pub fn mark(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn seen(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

pub struct Gate {
    proxy: Arc<HttpProxy<FleetProxy>>,
    registry: Arc<Registry>,
    open: AtomicUsize,
}

impl Gate {
    pub fn new(proxy: HttpProxy<FleetProxy>, registry: Arc<Registry>) -> Self {
        Self {
            proxy: Arc::new(proxy),
            registry,
            open: AtomicUsize::new(0),
        }
    }
}

/// Releases a connection slot however the connection ends.
struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
        crate::metrics::metrics().connections.dec();
    }
}

/// The whole answer to a connection over `proxy.max_connections`, built once.
fn overloaded_answer() -> &'static [u8] {
    static ANSWER: OnceLock<Vec<u8>> = OnceLock::new();
    ANSWER.get_or_init(|| {
        let body = reply::jsonrpc_error(
            reply::code::UNAVAILABLE,
            "too many client connections (proxy.max_connections)",
            None,
        );
        let mut out = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nretry-after: 1\r\ncache-control: no-store\r\n\
             connection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(&body);
        out
    })
}

/// Answers 503 and closes. The request is read (a little, briefly) after the answer so that
/// closing with unread bytes does not turn into a reset the client sees instead of the 503.
async fn refuse(mut stream: Stream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(overloaded_answer()).await?;
        stream.flush().await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut left: usize = 64 * 1024;
        while left > 0 {
            let n = stream.read(&mut sink).await?;
            if n == 0 {
                break;
            }
            left = left.saturating_sub(n);
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
}

#[async_trait]
impl ServerApp for Gate {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let limits = Arc::clone(&self.registry.load().proxy);
        let open = self.open.fetch_add(1, Ordering::AcqRel) + 1;
        crate::metrics::metrics().connections.inc();
        let _slot = Slot(&self.open);
        if open > limits.max_connections {
            crate::metrics::refused("max_connections");
            refuse(stream).await;
            return None;
        }
        let idle_secs = limits.client_idle_timeout.as_secs().max(1);
        let mut deadline = limits.header_timeout;
        let mut stream = stream;
        let mut persistent: Option<HttpPersistentSettings> = None;
        loop {
            let mut session = ServerSession::new_http1(stream);
            match persistent.take() {
                Some(settings) => settings.apply_to_session(&mut session),
                None => session.set_keepalive(Some(idle_secs)),
            }
            if *shutdown.borrow() {
                session.set_keepalive(None);
            }
            let head = Arc::new(HeadSignal::default());
            session.set_connection_user_context(Some(Box::new(Arc::clone(&head))));

            let mut work = self.proxy.process_new_http(session, shutdown);
            let timer = tokio::time::sleep(deadline);
            tokio::pin!(timer);
            let done = tokio::select! {
                biased;
                done = &mut work => done,
                () = &mut timer => {
                    if !head.seen() {
                        crate::metrics::refused("header_timeout");
                        tracing::debug!(?deadline, "request head not received in time; closing");
                        return None;
                    }
                    work.await
                }
            };
            let (next, settings) = done?.consume();
            stream = next;
            persistent = settings;
            deadline = limits.client_idle_timeout;
        }
    }

    async fn cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}
