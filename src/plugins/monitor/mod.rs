//! The monitoring port (`monitor.listen`, the seed's 9090): `/metrics` (Prometheus text),
//! `/health`, `/alerts`, `/stats`, `/dashboard` (one self-contained page) and the JSON it polls,
//! and `/report` (the seed's daily report, for `mcp-fleet report`). Reads the registry (never
//! writes it) and the fleet; runs on the control thread.

mod alerts;
mod bridges;
mod disk;
mod report;
mod series;

pub use alerts::Alert;

use crate::api::ServerState;
use crate::config::{MemoryBudget, ValidConfig};
use crate::history::History;
use crate::metrics::{self, metrics};
use crate::plugins::fleet::Fleet;
use crate::procfs::{cpu_seconds, meminfo};
use crate::upstream::clock::unix_now;
use crate::upstream::{clock, Registry, Snapshot};
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use series::Series;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

const DASHBOARD: &str = include_str!("dashboard.html");

pub struct Monitor {
    registry: Arc<Registry>,
    fleet: Option<Fleet>,
    history: Arc<History>,
    /// The configuration in force: thresholds, intervals and the budget are read from it at
    /// every use, so a reload applies them.
    config: tokio::sync::watch::Receiver<Arc<ValidConfig>>,
    started: Instant,
    series: Mutex<Series>,
    firing: Mutex<Vec<Alert>>,
    bounds: Vec<f64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    resp
}

fn json_reply(status: StatusCode, v: &Value) -> Response<Full<Bytes>> {
    reply(status, "application/json", v.to_string())
}

impl Monitor {
    pub fn new(
        config: tokio::sync::watch::Receiver<Arc<ValidConfig>>,
        registry: Arc<Registry>,
        fleet: Option<Fleet>,
        history: Arc<History>,
    ) -> Arc<Self> {
        let window = config.borrow().monitor.alerts.window;
        let m = Arc::new(Self {
            registry,
            fleet,
            history,
            config,
            started: Instant::now(),
            series: Mutex::new(Series::new(window)),
            firing: Mutex::new(Vec::new()),
            bounds: series::bucket_bounds(),
        });
        lock(&m.series).push(series::take());
        m
    }

    fn config(&self) -> Arc<ValidConfig> {
        Arc::clone(&self.config.borrow())
    }

    /// Samples and evaluates the alert rules every `monitor.alerts.interval`.
    pub async fn run(self: Arc<Self>) {
        loop {
            let config = self.config();
            tokio::time::sleep(config.monitor.alerts.interval).await;
            {
                let mut series = lock(&self.series);
                series.keep_at_least(config.monitor.alerts.window);
                series.push(series::take());
            }
            let verdicts = self.evaluate();
            alerts::update(&mut lock(&self.firing), verdicts, unix_now());
        }
    }

    /// Servers left stopped after too many restarts.
    fn failed_ids(&self) -> Vec<String> {
        self.fleet
            .as_ref()
            .map(|f| {
                f.servers()
                    .into_iter()
                    .filter(|s| s.state == ServerState::Failed)
                    .map(|s| s.id)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn evaluate(&self) -> Vec<(String, alerts::Verdict)> {
        let config = self.config();
        let t = &config.monitor.alerts;
        let mut out = Vec::new();
        let (window, cpu) = {
            let s = lock(&self.series);
            match (s.since(t.window), s.latest()) {
                (Some(old), Some(new)) => {
                    let w = series::window(old, new, None, &self.bounds);
                    let (busy, total) = (
                        new.cpu.0.saturating_sub(old.cpu.0),
                        new.cpu.1.saturating_sub(old.cpu.1),
                    );
                    (w, (total > 0).then(|| busy as f64 / total as f64))
                }
                _ => (series::Window::default(), None),
            }
        };
        let limit = t.response_time.as_secs_f64();
        out.push((
            "response_time".into(),
            window
                .p95
                .filter(|&p| window.requests >= 10 && p > limit)
                .map(|p| {
                    (
                        "warning",
                        p,
                        limit,
                        format!(
                            "p95 response time {p:.3} s over the last {:?} (threshold {limit} s)",
                            t.window
                        ),
                    )
                }),
        ));
        out.push((
            "error_rate".into(),
            (window.requests >= 20 && window.error_rate > t.error_rate).then(|| {
                (
                    "critical",
                    window.error_rate,
                    t.error_rate,
                    format!(
                        "{:.1}% of {} requests failed (5xx) over the last {:?} (threshold {:.1}%)",
                        window.error_rate * 100.0,
                        window.requests,
                        t.window,
                        t.error_rate * 100.0
                    ),
                )
            }),
        ));
        if let Some((total, available)) = meminfo() {
            let budget = match config.fleet.memory_budget {
                MemoryBudget::Percent(p) => total / 100 * u64::from(p),
                MemoryBudget::Bytes(b) => b,
            };
            let used = total.saturating_sub(available) as f64 / budget.max(1) as f64;
            out.push((
                "memory_usage".into(),
                (used > t.memory_usage).then(|| {
                    (
                        "warning",
                        used,
                        t.memory_usage,
                        format!(
                            "machine memory in use is {:.0}% of the fleet's memory budget",
                            used * 100.0
                        ),
                    )
                }),
            ));
        }
        out.push((
            "cpu_usage".into(),
            cpu.filter(|&c| c > t.cpu_usage).map(|c| {
                (
                    "warning",
                    c,
                    t.cpu_usage,
                    format!(
                        "machine CPU {:.0}% busy over the last {:?}",
                        c * 100.0,
                        t.window
                    ),
                )
            }),
        ));
        for (i, dir) in [&config.fleet.state_dir, &config.fleet.log_dir]
            .into_iter()
            .enumerate()
        {
            let name = if i == 0 {
                "disk_usage:state"
            } else {
                "disk_usage:logs"
            };
            let v = disk::usage(dir).map(|(u, tot)| u as f64 / tot.max(1) as f64);
            out.push((
                name.into(),
                v.filter(|&u| u > t.disk_usage).map(|u| {
                    (
                        "warning",
                        u,
                        t.disk_usage,
                        format!(
                            "{} is on a file system {:.0}% full",
                            dir.display(),
                            u * 100.0
                        ),
                    )
                }),
            ));
        }
        let failed = self.failed_ids();
        out.push((
            "crash_looping_servers".into(),
            (!failed.is_empty()).then(|| {
                (
                    "critical",
                    failed.len() as f64,
                    0.0,
                    format!(
                        "servers failed after too many restarts: {}",
                        failed.join(", ")
                    ),
                )
            }),
        ));
        let snap = self.registry.load();
        let now = clock::now_ms();
        for set in &snap.sets {
            let serving = Snapshot::serving(set, now);
            out.push((
                format!("no_healthy_server:{}", set.name),
                (serving == 0 && set.configured).then(|| {
                    (
                        "critical",
                        0.0,
                        1.0,
                        format!(
                            "category {} has no server taking requests ({} planned)",
                            set.name, set.planned
                        ),
                    )
                }),
            ));
            out.push((
                format!("below_plan:{}", set.name),
                (serving > 0 && serving < set.planned).then(|| {
                    (
                        "warning",
                        serving as f64,
                        set.planned as f64,
                        format!(
                            "category {} serves with {serving} of its {} planned servers",
                            set.name, set.planned
                        ),
                    )
                }),
            ));
        }
        out
    }

    /// Mirrors the state owned elsewhere into the metrics, just before a scrape.
    fn collect(&self) {
        let m = metrics();
        m.uptime.set(self.started.elapsed().as_secs_f64());
        let snap = self.registry.load();
        let now = clock::now_ms();
        let per_server = self.config().monitor.per_server_metrics;
        if !per_server {
            // Turned off by a reload: the series already exported go, not only stop changing.
            m.server_up.reset();
            m.server_requests.reset();
            m.server_memory.reset();
            m.server_cpu.reset();
        }
        for set in &snap.sets {
            let c = &*set.name;
            let serving = Snapshot::serving(set, now);
            let count = |f: &dyn Fn(&crate::upstream::Backend) -> bool| {
                set.all.iter().filter(|b| f(b)).count() as i64
            };
            m.servers
                .with_label_values(&[c, "total"])
                .set(set.all.len() as i64);
            m.servers
                .with_label_values(&[c, "ready"])
                .set(count(&|b| b.ready));
            m.servers
                .with_label_values(&[c, "healthy"])
                .set(count(&|b| b.ready && b.healthy));
            m.servers
                .with_label_values(&[c, "serving"])
                .set(serving as i64);
            m.servers
                .with_label_values(&[c, "ejected"])
                .set(count(&|b| !b.state.usable(now)));
            m.servers
                .with_label_values(&[c, "draining"])
                .set(count(&|b| b.draining));
            let created = m.sessions_created.with_label_values(&[c]).get();
            let ended = m.sessions_ended.with_label_values(&[c]).get();
            m.sessions_active
                .with_label_values(&[c])
                .set(created.saturating_sub(ended) as i64);
            metrics::mirror(
                &m.ejections.with_label_values(&[c]),
                set.all.iter().map(|b| b.state.ejections_total()).sum(),
            );
            if per_server {
                for b in &set.all {
                    let up = b.eligible() && b.state.usable(now);
                    m.server_up
                        .with_label_values(&[c, &b.id])
                        .set(i64::from(up));
                    metrics::mirror(
                        &m.server_requests.with_label_values(&[c, &b.id]),
                        b.state.requests(),
                    );
                }
            }
        }
        if let Some(fleet) = &self.fleet {
            let servers = fleet.servers();
            let oom = fleet.oom_kills();
            let mut mem: BTreeMap<&str, i64> = BTreeMap::new();
            let mut cpu: BTreeMap<&str, f64> = BTreeMap::new();
            let mut restarts: BTreeMap<&str, u64> = BTreeMap::new();
            let mut ooms: BTreeMap<&str, u64> = BTreeMap::new();
            let mut failed: BTreeMap<&str, i64> = BTreeMap::new();
            let mut running = 0;
            for s in &servers {
                let c = s.category.as_str();
                let rss = s.memory_bytes.unwrap_or(0) as i64;
                let secs = s.pid.and_then(cpu_seconds).unwrap_or(0.0);
                *mem.entry(c).or_default() += rss;
                *cpu.entry(c).or_default() += secs;
                *restarts.entry(c).or_default() += u64::from(s.restarts);
                *ooms.entry(c).or_default() += u64::from(oom.get(&s.id).copied().unwrap_or(0));
                *failed.entry(c).or_default() += i64::from(s.state == ServerState::Failed);
                running += usize::from(s.state == ServerState::Running);
                if per_server {
                    m.server_memory.with_label_values(&[c, &s.id]).set(rss);
                    m.server_cpu.with_label_values(&[c, &s.id]).set(secs);
                }
            }
            for (c, v) in mem {
                m.memory.with_label_values(&[c]).set(v);
            }
            for (c, v) in cpu {
                m.cpu.with_label_values(&[c]).set(v);
            }
            for (c, v) in restarts {
                metrics::mirror(&m.restarts.with_label_values(&[c]), v);
            }
            for (c, v) in ooms {
                metrics::mirror(&m.oom_kills.with_label_values(&[c]), v);
            }
            for (c, v) in failed {
                m.failed.with_label_values(&[c]).set(v);
            }
            bridges::mirror(&servers);
            m.deployment
                .with_label_values(&["planned"])
                .set(fleet.planned() as i64);
            m.deployment
                .with_label_values(&["deployed"])
                .set(servers.len() as i64);
            m.deployment
                .with_label_values(&["running"])
                .set(running as i64);
        }
    }

    fn health(&self) -> Response<Full<Bytes>> {
        let mut health = self.registry.load().health(false, &self.registry.labels());
        let ok = health.status.http_status() == 200;
        health.uptime_s = Some(self.started.elapsed().as_secs());
        json_reply(
            if ok {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            },
            &json!(health),
        )
    }

    /// Grid, charts and lists for the dashboard page.
    fn dashboard_json(&self) -> Value {
        let snap = self.registry.load();
        let now = clock::now_ms();
        let failed: std::collections::HashSet<String> = self.failed_ids().into_iter().collect();
        let mut memory_by: BTreeMap<String, u64> = BTreeMap::new();
        let servers = self.fleet.as_ref().map(|f| f.servers()).unwrap_or_default();
        for s in &servers {
            *memory_by.entry(s.category.clone()).or_default() += s.memory_bytes.unwrap_or(0);
        }
        let bridges = crate::api::StdioInfo::by_category(&servers);
        let series = lock(&self.series);
        let samples: Vec<&series::Sample> = series.samples.iter().collect();
        let mut categories = Vec::new();
        for set in &snap.sets {
            // One character a server: u up, e ejected, h unhealthy, r draining, d down, f failed.
            let states: String = set
                .all
                .iter()
                .map(|b| {
                    if failed.contains(b.id.as_ref()) {
                        'f'
                    } else if !b.ready {
                        'd'
                    } else if b.draining {
                        'r'
                    } else if !b.healthy {
                        'h'
                    } else if !b.state.usable(now) {
                        'e'
                    } else {
                        'u'
                    }
                })
                .collect();
            let points: Vec<Value> = samples
                .windows(2)
                .map(|w| {
                    let x = series::window(w[0], w[1], Some(&set.name), &self.bounds);
                    json!([w[1].unix, x.rate, x.p95, x.error_rate])
                })
                .collect();
            let memory = memory_by.get(set.name.as_ref()).copied().unwrap_or(0);
            categories.push(json!({
                "name": &*set.name,
                "states": states,
                "serving": Snapshot::serving(set, now),
                "total": set.all.len(),
                "requests": set.all.iter().map(|b| b.state.requests()).sum::<u64>(),
                "memory_bytes": memory,
                "stdio": bridges.get(set.name.as_ref()).map(|b| json!({
                    "children": b.children, "sessions": b.sessions, "spawns": b.spawns,
                    "reaps": b.reaps, "failed": b.exits.crashed + b.exits.oom,
                })),
                "points": points,
            }));
        }
        // The latest interval, for the header's live figures.
        let overall = match samples.len() {
            n if n >= 2 => {
                let w = series::window(samples[n - 2], samples[n - 1], None, &self.bounds);
                json!({"rate": w.rate, "p95": w.p95, "error_rate": w.error_rate})
            }
            _ => json!({"rate": 0, "p95": null, "error_rate": 0}),
        };
        drop(series);
        let history: Vec<Value> = self
            .history
            .entries()
            .into_iter()
            .rev()
            .take(10)
            .map(|d| json!(d))
            .collect();
        json!({
            "uptime_s": self.started.elapsed().as_secs(),
            "in_flight": metrics().in_flight.get(),
            "total_requests": snap.sets.iter().flat_map(|s| s.all.iter()).map(|b| b.state.requests()).sum::<u64>(),
            "overall": overall,
            "categories": categories,
            "alerts": *lock(&self.firing),
            "history": history,
            "memory_measure": crate::plugins::memory::MEASURE.label(),
            "memory_enforcement": self.registry.labels().iter().find(|(k, _)| *k == "memory_enforcement").map(|(_, v)| *v),
        })
    }

    fn handle(&self, path: &str) -> Response<Full<Bytes>> {
        match path {
            "/metrics" => {
                self.collect();
                reply(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    metrics::render(),
                )
            }
            "/health" => self.health(),
            // Liveness: the control thread answers. Readiness: see `Registry::readiness`.
            "/livez" => json_reply(StatusCode::OK, &json!({"live": true})),
            "/readyz" => {
                let r = self.registry.readiness();
                let status = if r.ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                json_reply(status, &json!(r))
            }
            "/alerts" => json_reply(StatusCode::OK, &json!(*lock(&self.firing))),
            "/stats" => json_reply(StatusCode::OK, &json!(self.registry.load().stats())),
            "/dashboard" | "/" => reply(StatusCode::OK, "text/html; charset=utf-8", DASHBOARD),
            "/dashboard.json" => json_reply(StatusCode::OK, &self.dashboard_json()),
            "/report" => json_reply(StatusCode::OK, &json!(self.report())),
            _ => json_reply(
                StatusCode::NOT_FOUND,
                &json!({"error": "endpoints: /metrics /health /livez /readyz /alerts /stats /dashboard /report"}),
            ),
        }
    }

    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let me = Arc::clone(&self);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: http::Request<hyper::body::Incoming>| {
                        let me = Arc::clone(&me);
                        async move { Ok::<_, std::convert::Infallible>(me.handle(req.uri().path())) }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }
}
