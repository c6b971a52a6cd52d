//! The built-in MCP server (`mcp-fleet backend`): an ordinary rmcp Streamable HTTP server on
//! `/mcp`, serving 2025-11-25 sessions and 2026-07-28 stateless requests. It is the default fleet
//! and the test backend, and shares no code with the proxy.

mod tools;

pub use tools::FleetBackend;

use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rmcp::transport::streamable_http_server::{
    session::local::LocalSessionManager, StreamableHttpServerConfig, StreamableHttpService,
};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
pub struct BackendOptions {
    pub listen: SocketAddr,
    pub category: String,
    pub debug_tools: bool,
    /// Delay added to every `echo` call (fault injection).
    pub delay: std::time::Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Serves until SIGTERM or SIGINT. A bind failure is returned at once, so a supervisor sees the
/// exit and can report the port.
pub async fn run(options: BackendOptions) -> Result<(), BackendError> {
    let listener =
        TcpListener::bind(options.listen)
            .await
            .map_err(|source| BackendError::Bind {
                addr: options.listen,
                source,
            })?;
    let name: Arc<str> = format!(
        "mcp-fleet-backend {}:{}",
        options.category,
        options.listen.port()
    )
    .into();
    let router = FleetBackend::router(options.debug_tools);
    let delay = options.delay;
    // rmcp refuses a Host it does not know (DNS-rebinding defence): loopback names by default.
    // A server on another address (a loopback alias, a pod IP) is reached by that address; one
    // on every address (0.0.0.0) is meant to be reached over the network, behind the proxy.
    let ip = options.listen.ip();
    let config = StreamableHttpServerConfig::default().with_json_response(true);
    let config = if ip.is_unspecified() {
        config.disable_allowed_hosts()
    } else {
        let mut hosts = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
        if !hosts.contains(&ip.to_string()) {
            hosts.push(ip.to_string());
        }
        config.with_allowed_hosts(hosts)
    };
    let mcp = StreamableHttpService::new(
        move || Ok(FleetBackend::new(Arc::clone(&name), delay, router.clone())),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|source| BackendError::Bind {
        addr: options.listen,
        source,
    })?;
    tracing::info!(addr = %options.listen, category = %options.category, "MCP server listening on /mcp");
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of descriptors or similar: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        };
        // Without TCP_NODELAY each small SSE write waits ~40 ms for the peer's delayed ACK.
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(PathGate { inner: mcp.clone() });
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            let _ = conn.await;
        });
    }
    Ok(())
}

/// Serves MCP on `/mcp` only; every other path is a 404.
#[derive(Clone)]
struct PathGate<S> {
    inner: S,
}

impl<S, B> tower_service::Service<http::Request<B>> for PathGate<S>
where
    S: tower_service::Service<
            http::Request<B>,
            Response = http::Response<BoxBody<bytes::Bytes, std::convert::Infallible>>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() == "/mcp" {
            let delete = req.method() == http::Method::DELETE;
            let fut = self.inner.call(req);
            Box::pin(async move {
                let mut resp = fut.await?;
                // rmcp answers a session's DELETE with 202; the official Python SDK takes only
                // 200 or 204 as success and reports "Session termination failed: 202". The
                // session is ended either way: say so with 200, as the TypeScript SDK does.
                if delete && resp.status() == http::StatusCode::ACCEPTED {
                    *resp.status_mut() = http::StatusCode::OK;
                }
                Ok(resp)
            })
        } else {
            Box::pin(async {
                let body = Full::new(bytes::Bytes::from_static(b"not found")).boxed();
                let mut resp = http::Response::new(body);
                *resp.status_mut() = http::StatusCode::NOT_FOUND;
                Ok(resp)
            })
        }
    }
}
