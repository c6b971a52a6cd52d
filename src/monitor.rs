//! The monitoring port (`monitor.listen`, the seed's 9090): `/metrics` in Prometheus text format.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

pub async fn serve(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        tokio::spawn(async move {
            let service = hyper::service::service_fn(
                |req: http::Request<hyper::body::Incoming>| async move {
                    let mut resp = Response::new(Full::new(Bytes::new()));
                    if req.uri().path() == "/metrics" {
                        *resp.body_mut() = Full::new(Bytes::from(crate::metrics::render()));
                        resp.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static("text/plain; version=0.0.4"),
                        );
                    } else {
                        *resp.status_mut() = StatusCode::NOT_FOUND;
                        *resp.body_mut() =
                            Full::new(Bytes::from_static(b"not found: try /metrics\n"));
                    }
                    Ok::<_, std::convert::Infallible>(resp)
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
