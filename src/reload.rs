//! Configuration reload (SIGHUP, `mcp-fleet reload`, `POST /reload`): read and validate the file;
//! if it is invalid, log every error and change nothing; if it is valid, work out what changed
//! from the key table (`config::keys`) and apply it without failing a request: new snapshots for
//! settings, new servers deployed and added when ready, leaving servers drained (no new requests,
//! sessions served until `fleet.drain_timeout`) and then stopped. Keys the table marks as needing
//! a restart keep their running value and are reported; everything else is applied. Every
//! reload, applied or refused, is recorded in the history.

use crate::api::{Change, EntryKind, Outcome, ReloadReport};
use crate::config::{self, keys, DeployOnStart, LoadError, ValidConfig};
use crate::history::{entry, History};
use crate::plugins::fleet::{Fleet, PlanDiff};
use crate::upstream::Registry;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;

/// What a reload re-reads besides the file itself: files the config names whose contents may
/// change under the same name (the session keys, a mounted Secret). Two steps, so a reload
/// refused later changes nothing.
pub trait Reread: Send + Sync {
    /// Reads what `config` names; `Err` (one line) refuses the reload; `Ok(None)` when nothing
    /// changed; otherwise the step that puts it in force, returning what to report.
    fn load(&self, config: &ValidConfig) -> Result<Option<Commit>, String>;
}

pub type Commit = Box<dyn FnOnce() -> String + Send>;

/// A reload that changed nothing: the errors, one line each, and its history entry's number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub seq: u64,
    pub errors: Vec<String>,
}

pub struct Reloader {
    path: PathBuf,
    /// The configuration in force; readers that keep settings (the monitor) follow it.
    current: watch::Sender<Arc<ValidConfig>>,
    registry: Arc<Registry>,
    fleet: Option<Fleet>,
    history: Arc<History>,
    reread: Vec<Box<dyn Reread>>,
    one_at_a_time: tokio::sync::Mutex<()>,
}

fn changes(list: Vec<keys::Change>) -> Vec<Change> {
    list.into_iter()
        .map(|c| Change {
            key: c.key,
            old: c.old,
            new: c.new,
        })
        .collect()
}

fn error_lines(e: &LoadError) -> Vec<String> {
    match e {
        LoadError::Invalid { errors, .. } => errors.iter().map(ToString::to_string).collect(),
        other => vec![other.to_string()],
    }
}

impl Reloader {
    pub fn new(
        path: PathBuf,
        current: watch::Sender<Arc<ValidConfig>>,
        registry: Arc<Registry>,
        fleet: Option<Fleet>,
        history: Arc<History>,
        reread: Vec<Box<dyn Reread>>,
    ) -> Self {
        Self {
            path,
            current,
            registry,
            fleet,
            history,
            reread,
            one_at_a_time: tokio::sync::Mutex::new(()),
        }
    }

    /// The configuration in force (restart-only keys at their running values).
    pub fn current(&self) -> Arc<ValidConfig> {
        Arc::clone(&self.current.borrow())
    }

    fn refuse(&self, started: Instant, errors: Vec<String>) -> Refused {
        for e in &errors {
            tracing::error!("reload refused, the running configuration is unchanged: {e}");
        }
        crate::metrics::reload("invalid");
        let e = self.history.record(crate::api::Entry {
            notes: errors.clone(),
            ..entry(EntryKind::Reload, started, Outcome::Invalid)
        });
        Refused { seq: e.seq, errors }
    }

    /// Reads the config file again and applies it. Must run on the control runtime (it
    /// deploys and stops servers).
    pub async fn reload(self: &Arc<Self>) -> Result<ReloadReport, Refused> {
        let _one = self.one_at_a_time.lock().await;
        let started = Instant::now();
        let mut new = match config::load(&self.path) {
            Ok(c) => c,
            Err(e) => return Err(self.refuse(started, error_lines(&e))),
        };
        let old = self.current();
        let (applied, needs_restart) = keys::classify(&old, &mut new);
        let mut commits = Vec::new();
        for r in &self.reread {
            match r.load(&new) {
                Ok(Some(commit)) => commits.push(commit),
                Ok(None) => {}
                Err(line) => return Err(self.refuse(started, vec![line])),
            }
        }

        let (plan, spawned) = match &self.fleet {
            Some(f) => match f.replan(&new) {
                Ok(done) => done,
                // A command that cannot be resolved: refuse the whole reload.
                Err(e) => {
                    let line =
                        config::ConfigError::new("fleet.command", "(resolved)", e.to_string());
                    return Err(self.refuse(started, vec![line.to_string()]));
                }
            },
            None => Default::default(),
        };
        let PlanDiff {
            added,
            removed,
            changed: replaced,
        } = plan;
        let replace_addrs: HashSet<_> = self
            .fleet
            .as_ref()
            .map(|f| f.addrs_of(&replaced))
            .unwrap_or_default()
            .into_iter()
            .collect();
        let drain = self.registry.next_drain();
        let (draining, built, swapped) = self.registry.apply(&new, &spawned, &replace_addrs, drain);
        let drain_timeout = new.fleet.drain_timeout;
        let deploy_new = new.fleet.deploy_on_start == DeployOnStart::All;
        self.current.send_replace(Arc::new(new));

        let reread: Vec<String> = commits.into_iter().map(|commit| commit()).collect();
        let notes: Vec<String> = reread
            .iter()
            .cloned()
            .chain(
                applied
                    .iter()
                    .map(|c| format!("{}: {} -> {}", c.key, c.old, c.new)),
            )
            .chain(needs_restart.iter().map(|c| {
                format!(
                    "{}: {} -> {} (needs a restart of `mcp-fleet serve`; {} still in force)",
                    c.key, c.old, c.new, c.old
                )
            }))
            .collect();
        for line in &notes {
            tracing::info!("reload: {line}");
        }
        crate::metrics::reload("applied");
        let recorded = self.history.record(crate::api::Entry {
            requested: added.len(),
            notes,
            ..entry(EntryKind::Reload, started, Outcome::Applied)
        });
        let report = ReloadReport {
            seq: recorded.seq,
            reread,
            changes: changes(applied),
            needs_restart: changes(needs_restart),
            added: added.iter().map(ToString::to_string).collect(),
            removed: removed.iter().map(ToString::to_string).collect(),
            replaced: replaced.iter().map(ToString::to_string).collect(),
            draining: draining.len(),
            build_us: built.as_micros() as u64,
            swap_us: swapped.as_micros() as u64,
        };
        tracing::info!(
            changes = report.changes.len(),
            needs_restart = report.needs_restart.len(),
            added = report.added.len(),
            removed = report.removed.len(),
            replaced = report.replaced.len(),
            build_us = report.build_us,
            swap_us = report.swap_us,
            "configuration reloaded"
        );

        // New servers start now and join when ready; leaving ones drain, then stop; replaced
        // ones start again once their old process is gone (they may keep the same port). The
        // drain's end is asked of the registry, which knows which members are still in this
        // reload's drain: a later reload may have taken some back.
        let me = Arc::clone(self);
        tokio::spawn(async move {
            if let Some(fleet) = &me.fleet {
                if deploy_new && !added.is_empty() {
                    fleet.deploy_ids(EntryKind::Reload, added).await;
                }
            }
            if draining.is_empty() {
                return;
            }
            tokio::time::sleep(drain_timeout).await;
            let ended = me.registry.finish_drain(drain);
            if let Some(fleet) = &me.fleet {
                let spawned = |ids: &[Arc<str>]| -> Vec<Arc<str>> {
                    ids.iter()
                        .filter(|id| fleet.is_deployed(id))
                        .cloned()
                        .collect()
                };
                let mut stop = spawned(&ended.removed);
                stop.extend(spawned(&ended.replaced));
                fleet.stop_ids(&stop).await;
                tracing::info!(
                    servers = ended.removed.len() + ended.replaced.len(),
                    "drain finished; leaving servers stopped"
                );
                let again: Vec<Arc<str>> = ended
                    .replaced
                    .into_iter()
                    .filter(|id| fleet.is_planned(id))
                    .collect();
                if !again.is_empty() {
                    let d = fleet.deploy_ids(EntryKind::Reload, again).await;
                    if !d.failed.is_empty() {
                        tracing::warn!(failed = ?d.failed, "replaced servers did not all come back");
                    }
                }
            }
        });
        Ok(report)
    }
}
