//! The coordinator API on `admin.listen` (the seed's port 3000): what the seed's scripts did
//! (show-connected-servers, deploy-batch, retry-failed-deployments) as authenticated HTTP calls.
//! Every call needs `Authorization: Bearer <token>`; without it: 401 and nothing happens.

pub mod client;
pub mod token;

use crate::plugins::fleet::{Fleet, FleetError, ServerState};
use crate::reload::Reloader;
use crate::upstream::{clock, Registry};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Largest request body the API reads.
const MAX_BODY: usize = 64 * 1024;

pub struct AdminApi {
    pub fleet: Option<Fleet>,
    pub reloader: Arc<Reloader>,
    pub registry: Arc<Registry>,
    pub token: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployRequest {
    batch_size: usize,
    #[serde(default)]
    start_index: usize,
}

/// One line of `GET /status`: the seed's per-category view.
#[derive(Debug, Default, Serialize)]
pub struct CategoryStatus {
    pub planned: usize,
    pub deployed: usize,
    pub healthy: usize,
    pub failed: usize,
}

fn reply(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response<Full<Bytes>> {
    reply(status, &json!({ "error": message.to_string() }))
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
            (&Method::GET, ["servers"]) => self.servers(),
            (&Method::GET, ["status"]) => self.status(),
            (&Method::GET, ["memory"]) => match &self.fleet {
                Some(f) => reply(StatusCode::OK, &json!(crate::plugins::memory::report(f))),
                None => error(StatusCode::CONFLICT, "the fleet is disabled"),
            },
            (&Method::GET, ["deployments"]) => match &self.fleet {
                Some(f) => reply(StatusCode::OK, &json!(f.deployments())),
                None => reply(StatusCode::OK, &json!([])),
            },
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
                    return error(
                        StatusCode::CONFLICT,
                        "the fleet is disabled (fleet.enabled = false)",
                    );
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
                reply(StatusCode::OK, &json!(d))
            }
            (&Method::POST, ["retry-failed"]) => match &self.fleet {
                Some(f) => reply(StatusCode::OK, &json!(f.retry_failed().await)),
                None => error(StatusCode::CONFLICT, "the fleet is disabled"),
            },
            (&Method::POST, ["servers", id, "restart"]) => {
                let Some(fleet) = &self.fleet else {
                    return error(StatusCode::CONFLICT, "the fleet is disabled");
                };
                match fleet.restart(id).await {
                    Ok(d) => reply(StatusCode::OK, &json!(d)),
                    Err(e @ FleetError::UnknownServer(_)) => error(StatusCode::NOT_FOUND, e),
                    Err(e @ FleetError::NotDeployed(_)) => error(StatusCode::CONFLICT, e),
                    Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
                }
            }
            (&Method::POST, ["reload"]) => match self.reloader.reload().await {
                Ok(report) => reply(StatusCode::OK, &json!(report)),
                Err(e) => {
                    let errors: Vec<String> = match &e {
                        crate::config::LoadError::Invalid { errors, .. } => {
                            errors.iter().map(|e| e.to_string()).collect()
                        }
                        other => vec![other.to_string()],
                    };
                    reply(
                        StatusCode::BAD_REQUEST,
                        &json!({ "error": "invalid configuration; nothing changed", "errors": errors }),
                    )
                }
            },
            (_, ["servers" | "status" | "deployments" | "memory"]) => {
                error(StatusCode::METHOD_NOT_ALLOWED, "use GET")
            }
            (_, ["deploy" | "retry-failed" | "reload"]) => {
                error(StatusCode::METHOD_NOT_ALLOWED, "use POST")
            }
            _ => error(
                StatusCode::NOT_FOUND,
                "endpoints: GET /servers, GET /status, GET /memory, GET /deployments, POST /deploy, \
                 POST /retry-failed, POST /servers/{id}/restart, POST /reload",
            ),
        }
    }

    /// Health and drain state of every member, by address, from the current snapshot.
    fn live(&self) -> BTreeMap<SocketAddr, (bool, bool, bool)> {
        let now = clock::now_ms();
        let snap = self.registry.load();
        snap.sets
            .iter()
            .flat_map(|s| s.all.iter())
            .map(|b| (b.addr, (b.healthy, !b.state.usable(now), b.draining)))
            .collect()
    }

    fn servers(&self) -> Response<Full<Bytes>> {
        let Some(fleet) = &self.fleet else {
            return reply(StatusCode::OK, &json!([]));
        };
        let live = self.live();
        let host = fleet_host(&self.registry);
        let list: Vec<Value> = fleet
            .servers()
            .into_iter()
            .map(|s| {
                let addr = SocketAddr::new(host, s.port);
                let (healthy, ejected, draining) = live.get(&addr).copied().unwrap_or_default();
                let mut v = json!(s);
                v["health"] = json!(if s.state != ServerState::Running {
                    "down"
                } else if ejected {
                    "ejected"
                } else if healthy {
                    "healthy"
                } else {
                    "unhealthy"
                });
                v["draining"] = json!(draining);
                v
            })
            .collect();
        reply(StatusCode::OK, &json!(list))
    }

    fn status(&self) -> Response<Full<Bytes>> {
        let mut by: BTreeMap<String, CategoryStatus> = BTreeMap::new();
        let mut order: Vec<String> = Vec::new();
        let snap = self.registry.load();
        for set in &snap.sets {
            order.push(set.name.to_string());
            let c = by.entry(set.name.to_string()).or_default();
            c.planned = set.all.len();
            c.healthy = crate::upstream::Snapshot::serving(set, clock::now_ms());
        }
        if let Some(fleet) = &self.fleet {
            for s in fleet.servers() {
                let c = by.entry(s.category.clone()).or_default();
                c.deployed += 1;
                c.failed += usize::from(s.state == ServerState::Failed);
            }
        } else {
            for set in &snap.sets {
                if let Some(c) = by.get_mut(set.name.as_ref()) {
                    c.deployed = set.all.len();
                }
            }
        }
        let rows: Vec<Value> = order
            .iter()
            .filter_map(|name| by.get(name).map(|c| json!({"category": name, "planned": c.planned, "deployed": c.deployed, "healthy": c.healthy, "failed": c.failed})))
            .collect();
        reply(StatusCode::OK, &json!({ "categories": rows }))
    }
}

/// The address the fleet's servers listen on (all spawned members share it).
fn fleet_host(registry: &Registry) -> std::net::IpAddr {
    registry
        .load()
        .sets
        .iter()
        .flat_map(|s| s.all.iter())
        .find(|b| b.origin == crate::upstream::Origin::Spawned)
        .map_or(std::net::IpAddr::from([127, 0, 0, 1]), |b| b.addr.ip())
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
