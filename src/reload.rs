//! Configuration reload (SIGHUP, `mcp-fleet reload`, `POST /reload`): read and validate the file;
//! if it is invalid, log every error and change nothing; if it is valid, work out what changed
//! and apply it without failing a request: new snapshots for settings, new servers deployed and
//! added when ready, leaving servers drained (no new requests, sessions served until
//! `fleet.drain_timeout`) and then stopped. Listen addresses and other settings that need new
//! sockets or threads are reported as needing a restart; everything else is applied.

use crate::config::{self, DeployOnStart, LoadError, ValidConfig};
use crate::plugins::fleet::{Deployment, Failure, Fleet, PlanDiff};
use crate::upstream::Registry;
use serde::Serialize;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What a reload did, for the log, `POST /reload` and `mcp-fleet reload`.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadReport {
    pub changes: Vec<String>,
    pub needs_restart: Vec<String>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub replaced: Vec<String>,
    /// Servers draining now (removed or replaced).
    pub draining: usize,
    /// Building the new snapshot, off the request path.
    pub build_us: u64,
    /// Publishing it: the only moment the proxy is touched.
    pub swap_us: u64,
}

pub struct Reloader {
    path: PathBuf,
    current: Mutex<ValidConfig>,
    registry: Arc<Registry>,
    fleet: Option<Fleet>,
    one_at_a_time: tokio::sync::Mutex<()>,
}

/// `key: old -> new` for every differing pair.
fn diff<T: PartialEq + std::fmt::Debug>(out: &mut Vec<String>, key: &str, old: &T, new: &T) {
    if old != new {
        out.push(format!("{key}: {old:?} -> {new:?}"));
    }
}

fn describe(old: &ValidConfig, new: &ValidConfig) -> Vec<String> {
    let mut out = Vec::new();
    let (o, n) = (&old.proxy, &new.proxy);
    diff(&mut out, "proxy.strategy", &o.strategy, &n.strategy);
    diff(
        &mut out,
        "proxy.max_retries",
        &o.max_retries,
        &n.max_retries,
    );
    diff(
        &mut out,
        "proxy.connect_timeout",
        &o.connect_timeout,
        &n.connect_timeout,
    );
    diff(
        &mut out,
        "proxy.first_byte_timeout",
        &o.first_byte_timeout,
        &n.first_byte_timeout,
    );
    diff(
        &mut out,
        "proxy.idle_timeout",
        &o.idle_timeout,
        &n.idle_timeout,
    );
    diff(
        &mut out,
        "proxy.body_timeout",
        &o.body_timeout,
        &n.body_timeout,
    );
    diff(
        &mut out,
        "proxy.shutdown_grace",
        &o.shutdown_grace,
        &n.shutdown_grace,
    );
    diff(
        &mut out,
        "proxy.retry_budget",
        &o.retry_budget,
        &n.retry_budget,
    );
    diff(&mut out, "proxy.ejection", &o.ejection, &n.ejection);
    diff(&mut out, "proxy.fast_path", &o.fast_path, &n.fast_path);
    diff(&mut out, "health", &old.health, &new.health);
    diff(
        &mut out,
        "fleet.batch_size",
        &old.fleet.batch_size,
        &new.fleet.batch_size,
    );
    diff(
        &mut out,
        "fleet.drain_timeout",
        &old.fleet.drain_timeout,
        &new.fleet.drain_timeout,
    );
    diff(
        &mut out,
        "fleet.ready_timeout",
        &old.fleet.ready_timeout,
        &new.fleet.ready_timeout,
    );
    diff(
        &mut out,
        "fleet.max_restarts",
        &old.fleet.max_restarts,
        &new.fleet.max_restarts,
    );
    diff(
        &mut out,
        "fleet.restart_window",
        &old.fleet.restart_window,
        &new.fleet.restart_window,
    );
    diff(
        &mut out,
        "fleet.command",
        &old.fleet.command,
        &new.fleet.command,
    );
    for c in &new.categories {
        let key = |k: &str| format!("categories.{}.{k}", c.name);
        match old.categories.iter().find(|o| o.name == c.name) {
            None => out.push(format!("categories.{}: added", c.name)),
            Some(o) => {
                diff(&mut out, &key("ports"), &o.ports, &c.ports);
                diff(&mut out, &key("servers"), &o.servers, &c.servers);
                diff(
                    &mut out,
                    &key("backends"),
                    &o.static_backends,
                    &c.static_backends,
                );
                diff(&mut out, &key("strategy"), &o.strategy, &c.strategy);
                diff(&mut out, &key("weight"), &o.weight, &c.weight);
                diff(
                    &mut out,
                    &key("server_weights"),
                    &o.server_weights,
                    &c.server_weights,
                );
                diff(
                    &mut out,
                    &key("hash_header"),
                    &o.hash_header,
                    &c.hash_header,
                );
                diff(&mut out, &key("mcp_path"), &o.mcp_path, &c.mcp_path);
                diff(&mut out, &key("command"), &o.command, &c.command);
                diff(
                    &mut out,
                    &key("max_memory_mb"),
                    &o.max_memory_mb,
                    &c.max_memory_mb,
                );
            }
        }
    }
    for o in &old.categories {
        if !new.categories.iter().any(|c| c.name == o.name) {
            out.push(format!("categories.{}: removed", o.name));
        }
    }
    out
}

/// Settings the running process cannot change (sockets, threads, folders): reported, and the
/// old values kept so the rest of the new config stays consistent with what runs.
fn pin_restart_only(old: &ValidConfig, new: &mut ValidConfig) -> Vec<String> {
    let mut out = Vec::new();
    let mut pin = |key: &str, changed: bool| {
        if changed {
            out.push(format!(
                "{key} changed: restart `mcp-fleet serve` to apply it"
            ));
        }
    };
    pin("proxy.listen", old.proxy.listen != new.proxy.listen);
    pin("proxy.threads", old.proxy.threads != new.proxy.threads);
    pin(
        "proxy.upstream_keepalive",
        old.proxy.upstream_keepalive != new.proxy.upstream_keepalive,
    );
    pin("monitor.listen", old.monitor_listen != new.monitor_listen);
    pin("admin.listen", old.admin_listen != new.admin_listen);
    pin(
        "admin.token_file",
        old.admin_token_file != new.admin_token_file,
    );
    pin("fleet.enabled", old.fleet.enabled != new.fleet.enabled);
    pin("fleet.host", old.fleet.host != new.fleet.host);
    pin(
        "fleet.state_dir",
        old.fleet.state_dir != new.fleet.state_dir,
    );
    pin("fleet.log_dir", old.fleet.log_dir != new.fleet.log_dir);
    new.proxy.listen = old.proxy.listen;
    new.proxy.threads = old.proxy.threads;
    new.proxy.upstream_keepalive = old.proxy.upstream_keepalive;
    new.monitor_listen = old.monitor_listen;
    new.admin_listen = old.admin_listen;
    new.admin_token_file.clone_from(&old.admin_token_file);
    new.fleet.enabled = old.fleet.enabled;
    new.fleet.host = old.fleet.host;
    new.fleet.state_dir.clone_from(&old.fleet.state_dir);
    new.fleet.log_dir.clone_from(&old.fleet.log_dir);
    out
}

impl Reloader {
    pub fn new(
        path: PathBuf,
        current: ValidConfig,
        registry: Arc<Registry>,
        fleet: Option<Fleet>,
    ) -> Self {
        Self {
            path,
            current: Mutex::new(current),
            registry,
            fleet,
            one_at_a_time: tokio::sync::Mutex::new(()),
        }
    }

    fn record(&self, d: Deployment) {
        if let Some(f) = &self.fleet {
            f.record(d);
        }
    }

    /// Reads the config file again and applies it. Must run on the control runtime (it
    /// deploys and stops servers).
    pub async fn reload(self: &Arc<Self>) -> Result<ReloadReport, LoadError> {
        let _one = self.one_at_a_time.lock().await;
        let started = Instant::now();
        let mut new = match config::load(&self.path) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("reload refused, the running configuration is unchanged: {e}");
                crate::metrics::reload("invalid");
                let notes = match &e {
                    LoadError::Invalid { errors, .. } => {
                        errors.iter().map(|e| e.to_string()).collect()
                    }
                    other => vec![other.to_string()],
                };
                self.record(Deployment {
                    notes,
                    ..Deployment::new("reload", started, "invalid")
                });
                return Err(e);
            }
        };
        let old = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let needs_restart = pin_restart_only(&old, &mut new);
        let changes = describe(&old, &new);

        let PlanDiff {
            added,
            removed,
            changed: replaced,
        } = match &self.fleet {
            Some(f) => match f.replan(&new) {
                Ok(diff) => diff,
                Err(e) => {
                    // A command that cannot be resolved: refuse the whole reload.
                    tracing::error!("reload refused, the running configuration is unchanged: {e}");
                    crate::metrics::reload("invalid");
                    return Err(LoadError::Invalid {
                        path: self.path.clone(),
                        errors: vec![config::ConfigError::new(
                            "fleet.command",
                            "(resolved)",
                            e.to_string(),
                        )],
                    });
                }
            },
            None => Default::default(),
        };
        let replace_addrs: HashSet<_> = self
            .fleet
            .as_ref()
            .map(|f| f.addrs_of(&replaced))
            .unwrap_or_default()
            .into_iter()
            .collect();
        let (draining, built, swapped) = self.registry.apply(&new, &replace_addrs);
        let drain_timeout = new.fleet.drain_timeout;
        let deploy_new = new.fleet.deploy_on_start == DeployOnStart::All;
        *self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = new;

        let report = ReloadReport {
            changes,
            needs_restart,
            added: added.iter().map(|s| s.to_string()).collect(),
            removed: removed.iter().map(|s| s.to_string()).collect(),
            replaced: replaced.iter().map(|s| s.to_string()).collect(),
            draining: draining.len(),
            build_us: built.as_micros() as u64,
            swap_us: swapped.as_micros() as u64,
        };
        tracing::info!(
            changes = report.changes.len(),
            added = report.added.len(),
            removed = report.removed.len(),
            replaced = report.replaced.len(),
            build_us = report.build_us,
            swap_us = report.swap_us,
            "configuration reloaded"
        );
        for line in report.changes.iter().chain(&report.needs_restart) {
            tracing::info!("reload: {line}");
        }
        crate::metrics::reload("applied");
        self.record(Deployment {
            requested: added.len(),
            notes: report
                .changes
                .iter()
                .chain(&report.needs_restart)
                .cloned()
                .collect(),
            ..Deployment::new("reload", started, "applied")
        });

        // New servers start now and join when ready; leaving ones drain, then stop; replaced
        // ones start again once their old process is gone (they may keep the same port).
        let me = Arc::clone(self);
        tokio::spawn(async move {
            if let Some(fleet) = &me.fleet {
                if deploy_new && !added.is_empty() {
                    fleet.deploy_ids("reload", added).await;
                }
            }
            if draining.is_empty() {
                return;
            }
            tokio::time::sleep(drain_timeout).await;
            if let Some(fleet) = &me.fleet {
                let mut stop = removed.clone();
                stop.extend(replaced.iter().cloned());
                fleet.stop_ids(&stop).await;
            }
            me.registry.finish_drain(&draining);
            tracing::info!(
                servers = draining.len(),
                "drain finished; removed servers stopped"
            );
            if let Some(fleet) = &me.fleet {
                if !replaced.is_empty() {
                    let d = fleet.deploy_ids("reload", replaced).await;
                    if !d.failed.is_empty() {
                        let failed: Vec<&Failure> = d.failed.iter().collect();
                        tracing::warn!(?failed, "replaced servers did not all come back");
                    }
                }
            }
        });
        Ok(report)
    }
}
