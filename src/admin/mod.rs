//! The coordinator API on `admin.listen` (the seed's port 3000): what the seed's scripts did
//! (show-connected-servers, deploy-batch, retry-failed-deployments) as authenticated HTTP calls.
//! Every call needs `Authorization: Bearer <token>`; without it: 401 and nothing happens.

pub mod client;
pub mod token;

use crate::api::{ApiError, CategoryStatus, DeployRequest, ServerState, Status};
use crate::history::History;
use crate::plugins::fleet::{Fleet, FleetError};
use crate::reload::Reloader;
use crate::upstream::{clock, Origin, Registry};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Largest request body the API reads.
const MAX_BODY: usize = 64 * 1024;

pub struct AdminApi {
    pub fleet: Option<Fleet>,
    pub reloader: Arc<Reloader>,
    pub registry: Arc<Registry>,
    pub history: Arc<History>,
    pub token: String,
}

fn reply(status: StatusCode, body: &impl Serialize) -> Response<Full<Bytes>> {
    let text = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response<Full<Bytes>> {
    reply(
        status,
        &ApiError {
            error: message.to_string(),
            errors: Vec::new(),
        },
    )
}

fn no_fleet() -> Response<Full<Bytes>> {
    error(
        StatusCode::CONFLICT,
        "the fleet is disabled (fleet.enabled = false)",
    )
}

impl AdminApi {
    /// Serves until the runtime ends.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            };
            let api = Arc::clone(&self);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let api = Arc::clone(&api);
                    async move { Ok::<_, std::convert::Infallible>(api.handle(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }

    fn authorized(&self, req: &Request<Incoming>) -> bool {
        req.headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| token::matches(t.trim().as_bytes(), self.token.as_bytes()))
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if !self.authorized(&req) {
            let mut resp = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
            resp.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
            return resp;
        }
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (&method, segments.as_slice()) {
            (&Method::GET, ["servers"]) => match &self.fleet {
                Some(f) => reply(StatusCode::OK, &f.servers()),
                None => reply(StatusCode::OK, &Vec::<()>::new()),
            },
            (&Method::GET, ["status"]) => reply(StatusCode::OK, &self.status()),
            (&Method::GET, ["memory"]) => match &self.fleet {
                Some(f) => reply(StatusCode::OK, &crate::plugins::memory::report(f)),
                None => no_fleet(),
            },
            (&Method::GET, ["deployments"]) => reply(StatusCode::OK, &self.history.entries()),
            (&Method::GET, ["config"]) => {
                let values: BTreeMap<String, String> =
                    crate::config::keys::values(&self.reloader.current())
                        .into_iter()
                        .collect();
                reply(StatusCode::OK, &values)
            }
            (&Method::POST, ["deploy"]) => {
                let body = match read_body(req).await {
                    Ok(b) => b,
                    Err(resp) => return resp,
                };
                let order: DeployRequest = match serde_json::from_slice(&body) {
                    Ok(o) => o,
                    Err(e) => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            format!("body must be {{\"batch_size\": N, \"start_index\": M}}: {e}"),
                        )
                    }
                };
                let Some(fleet) = &self.fleet else {
                    return no_fleet();
                };
                if order.batch_size == 0 || order.start_index >= fleet.planned() {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "batch_size must be at least 1 and start_index below {} (the configured servers)",
                            fleet.planned()
                        ),
                    );
                }
                let d = fleet
                    .deploy_range(order.start_index, order.batch_size)
                    .await;
                reply(StatusCode::OK, &d)
            }
            (&Method::POST, ["retry-failed"]) => match &self.fleet {
                Some(f) => reply(StatusCode::OK, &f.retry_failed().await),
                None => no_fleet(),
            },
            (&Method::POST, ["servers", id, "restart"]) => {
                let Some(fleet) = &self.fleet else {
                    return no_fleet();
                };
                match fleet.restart(id).await {
                    Ok(d) => reply(StatusCode::OK, &d),
                    Err(e @ FleetError::UnknownServer(_)) => error(StatusCode::NOT_FOUND, e),
                    Err(e @ FleetError::NotDeployed(_)) => error(StatusCode::CONFLICT, e),
                    Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
                }
            }
            (&Method::POST, ["reload"]) => match self.reloader.reload().await {
                Ok(report) => reply(StatusCode::OK, &report),
                Err(refused) => reply(
                    StatusCode::BAD_REQUEST,
                    &ApiError {
                        error: "invalid configuration; nothing changed".into(),
                        errors: refused.errors,
                    },
                ),
            },
            (_, ["servers" | "status" | "deployments" | "memory" | "config"]) => {
                error(StatusCode::METHOD_NOT_ALLOWED, "use GET")
            }
            (_, ["deploy" | "retry-failed" | "reload"]) => {
                error(StatusCode::METHOD_NOT_ALLOWED, "use POST")
            }
            _ => error(
                StatusCode::NOT_FOUND,
                "endpoints: GET /servers, GET /status, GET /memory, GET /deployments, GET /config, \
                 POST /deploy, POST /retry-failed, POST /servers/{id}/restart, POST /reload",
            ),
        }
    }

    /// Per category: planned (what the config and discovery describe), deployed (spawned
    /// servers under supervision, plus static and discovered backends), serving, failed.
    fn status(&self) -> Status {
        let snap = self.registry.load();
        let now = clock::now_ms();
        let mut supervised: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        if let Some(fleet) = &self.fleet {
            for s in fleet.servers() {
                let c = supervised.entry(s.category).or_default();
                c.0 += 1;
                c.1 += usize::from(s.state == ServerState::Failed);
            }
        }
        let categories = snap
            .sets
            .iter()
            .filter(|set| set.configured)
            .map(|set| {
                let (spawned, failed) = supervised
                    .get(set.name.as_ref())
                    .copied()
                    .unwrap_or_default();
                let statics = set
                    .all
                    .iter()
                    .filter(|b| b.origin != Origin::Spawned && !b.draining)
                    .count();
                CategoryStatus {
                    category: set.name.to_string(),
                    planned: set.planned,
                    deployed: spawned + statics,
                    serving: crate::upstream::Snapshot::serving(set, now),
                    failed,
                }
            })
            .collect();
        Status { categories }
    }
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, Response<Full<Bytes>>> {
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("cannot read the request body (at most {MAX_BODY} bytes): {e}"),
        )),
    }
}
