//! The fleet's orders: deploy servers in batches, retry the failed ones, restart one, stop some.
//! Each order that starts servers is recorded in the shared history.

use super::supervisor::{self, Desired, ServerState, SharedStatus, Want};
use super::{lock, Fleet, FleetError, Managed};
use crate::api::{Entry, EntryKind, Failure, Outcome};
use crate::history::entry;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{oneshot, watch};

impl Fleet {
    /// The seed's deploy-batch: deploys the servers with global indexes
    /// `start_index .. start_index + batch_size`, in order.
    pub async fn deploy_range(&self, start_index: usize, batch_size: usize) -> Entry {
        let ids: Vec<Arc<str>> = lock(&self.inner.plan)
            .iter()
            .skip(start_index)
            .take(batch_size)
            .map(|s| Arc::clone(&s.id))
            .collect();
        self.deploy_ids(EntryKind::Deploy, ids).await
    }

    /// Deploys `ids` (planned servers) in batches of `fleet.batch_size`, recording the result.
    pub async fn deploy_ids(&self, kind: EntryKind, ids: Vec<Arc<str>>) -> Entry {
        let started = Instant::now();
        let settings = self.inner.settings();
        let total_planned = lock(&self.inner.plan).len();
        let mut deployed = Vec::new();
        let mut failed = Vec::new();
        let mut already = Vec::new();
        tracing::info!(
            ?kind,
            servers = ids.len(),
            batch_size = settings.batch_size,
            "deploying"
        );
        let new: Vec<&Arc<str>> = ids.iter().filter(|id| !self.is_deployed(id)).collect();
        if let Err(why) = self.memory_budget_allows(new.len()) {
            tracing::error!(?kind, servers = new.len(), "deployment refused: {why}");
            return self.inner.history.record(Entry {
                requested: ids.len(),
                failed: new
                    .iter()
                    .map(|id| Failure {
                        id: id.to_string(),
                        error: "refused: memory budget".into(),
                    })
                    .collect(),
                notes: vec![why],
                ..entry(kind, started, Outcome::Refused)
            });
        }
        for (batch_no, batch) in ids.chunks(settings.batch_size.max(1)).enumerate() {
            if *self.inner.shutdown.borrow() {
                break;
            }
            let mut waits = Vec::new();
            for id in batch {
                match self.launch(id) {
                    Some(rx) => waits.push((Arc::clone(id), rx)),
                    None => already.push(id.to_string()),
                }
            }
            for (id, rx) in waits {
                match rx.await {
                    Ok(Ok(())) => deployed.push(id.to_string()),
                    Ok(Err(error)) => failed.push(Failure {
                        id: id.to_string(),
                        error,
                    }),
                    Err(_) => failed.push(Failure {
                        id: id.to_string(),
                        error: "supervisor ended".into(),
                    }),
                }
            }
            let running = self.inner.ready.load(Ordering::Acquire);
            tracing::info!(
                ?kind,
                batch = batch_no + 1,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "deployment: {running}/{total_planned} ready ({})",
                self.progress_by_category()
            );
        }
        self.save();
        let outcome = if failed.is_empty() {
            Outcome::Ok
        } else {
            Outcome::Partial
        };
        if failed.is_empty() {
            tracing::info!(
                ?kind,
                deployed = deployed.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "deployment done"
            );
        } else {
            tracing::warn!(
                ?kind,
                deployed = deployed.len(),
                failed = failed.len(),
                "deployment done with failures; failed servers are retried with back-off"
            );
        }
        self.inner.history.record(Entry {
            requested: ids.len(),
            deployed,
            failed,
            already,
            ..entry(kind, started, outcome)
        })
    }

    /// "database 100/100, api 37/100": ready servers against planned ones, in config order.
    fn progress_by_category(&self) -> String {
        let plan = lock(&self.inner.plan);
        let servers = lock(&self.inner.servers);
        let mut out: Vec<(Arc<str>, usize, usize)> = Vec::new();
        for s in plan.iter() {
            let running = servers
                .get(&s.id)
                .is_some_and(|m| m.status.read().state == ServerState::Running);
            match out.last_mut() {
                Some(last) if last.0 == s.category => {
                    last.2 += 1;
                    last.1 += usize::from(running);
                }
                _ => out.push((Arc::clone(&s.category), usize::from(running), 1)),
            }
        }
        out.iter()
            .map(|(c, r, t)| format!("{c} {r}/{t}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Starts supervising `id`; `None` when it is already deployed (or not planned).
    fn launch(&self, id: &Arc<str>) -> Option<oneshot::Receiver<Result<(), String>>> {
        let spec = lock(&self.inner.plan)
            .iter()
            .find(|s| &s.id == id)
            .cloned()?;
        let mut servers = lock(&self.inner.servers);
        if servers.contains_key(id) {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        let status = SharedStatus::default();
        let (desired, desired_rx) = watch::channel(Desired {
            want: Want::Run,
            generation: 0,
        });
        let task = tokio::spawn(supervisor::supervise(
            spec.clone(),
            Arc::clone(&status),
            desired_rx,
            Arc::clone(&self.inner),
            tx,
        ));
        servers.insert(
            Arc::clone(id),
            Managed {
                spec,
                status,
                desired,
                task,
            },
        );
        Some(rx)
    }

    pub(super) fn want(&self, id: &str, want: Want) -> bool {
        let servers = lock(&self.inner.servers);
        let Some(m) = servers.get(id) else {
            return false;
        };
        m.desired.send_modify(|d| {
            d.want = want;
            d.generation += 1;
        });
        true
    }

    /// Starts failed servers again, with a fresh restart allowance, and waits (on each server's
    /// status signal) until each runs or fails again.
    pub async fn retry_failed(&self) -> Entry {
        let started = Instant::now();
        let failed: Vec<(Arc<str>, SharedStatus)> = lock(&self.inner.servers)
            .iter()
            .filter(|(_, m)| m.status.read().state == ServerState::Failed)
            .map(|(id, m)| (Arc::clone(id), Arc::clone(&m.status)))
            .collect();
        for (id, status) in &failed {
            // Leave `Failed` now, so the wait below sees the new attempt, not the old verdict.
            status.write().state = ServerState::Starting;
            self.want(id, Want::Run);
        }
        let deadline = Instant::now() + self.inner.settings().ready_timeout;
        let mut deployed = Vec::new();
        let mut still = Vec::new();
        for (id, status) in failed.iter() {
            status
                .wait_for(deadline, |s| {
                    matches!(s.state, ServerState::Running | ServerState::Failed)
                })
                .await;
            let st = status.read();
            if st.state == ServerState::Running {
                deployed.push(id.to_string());
            } else {
                still.push(Failure {
                    id: id.to_string(),
                    error: st
                        .last_error
                        .clone()
                        .unwrap_or_else(|| format!("{:?}", st.state)),
                });
            }
        }
        let outcome = if still.is_empty() {
            Outcome::Ok
        } else {
            Outcome::Partial
        };
        self.inner.history.record(Entry {
            requested: failed.len(),
            deployed,
            failed: still,
            ..entry(EntryKind::RetryFailed, started, outcome)
        })
    }

    /// Drains `id` (no new requests; those in flight may finish within the drain timeout),
    /// restarts it, and waits until it is back in rotation.
    pub async fn restart(&self, id: &str) -> Result<Entry, FleetError> {
        let started = Instant::now();
        if !self.is_planned(id) {
            return Err(FleetError::UnknownServer(id.into()));
        }
        let status = lock(&self.inner.servers)
            .get(id)
            .map(|m| Arc::clone(&m.status))
            .ok_or_else(|| FleetError::NotDeployed(id.into()))?;
        let before = status.read().up_since;
        self.want(id, Want::Restart);
        let settings = self.inner.settings();
        let deadline =
            Instant::now() + settings.drain_timeout + settings.stop_grace + settings.ready_timeout;
        let back = status
            .wait_for(deadline, |s| {
                s.state == ServerState::Running && s.up_since != before
                    || s.state == ServerState::Failed
            })
            .await;
        let st = status.read();
        if !back || st.state != ServerState::Running {
            return Err(FleetError::NotReady {
                id: id.into(),
                why: st
                    .last_error
                    .clone()
                    .unwrap_or_else(|| format!("{:?}", st.state)),
            });
        }
        drop(st);
        Ok(self.inner.history.record(Entry {
            requested: 1,
            deployed: vec![id.into()],
            ..entry(EntryKind::Restart, started, Outcome::Ok)
        }))
    }

    /// Stops and forgets `ids` (after their drain), and records that they are no longer meant
    /// to run.
    pub async fn stop_ids(&self, ids: &[Arc<str>]) {
        let tasks: Vec<_> = {
            let mut servers = lock(&self.inner.servers);
            ids.iter()
                .filter_map(|id| servers.remove(id))
                .map(|m| {
                    m.desired.send_modify(|d| {
                        d.want = Want::Stop;
                        d.generation += 1;
                    });
                    m.task
                })
                .collect()
        };
        for t in tasks {
            let _ = t.await;
        }
        self.save();
    }
}
