//! Kernel containment for servers, where the machine allows it: each server in its own cgroup,
//! with a memory limit (cgroup v1 `memory.limit_in_bytes`, or v2 `memory.max` where v2 has the
//! memory controller) and `cgroup.kill` (v2) to take down its whole process tree. Detected once
//! at start; everything falls back cleanly (process groups, the memory watcher) where it fails.

use std::ffi::CString;
use std::path::{Path, PathBuf};

/// Which layer enforces memory limits on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MemoryLayer {
    CgroupV1,
    CgroupV2,
    /// No kernel limit available: the watcher alone enforces the policy.
    WatcherOnly,
}

impl MemoryLayer {
    pub fn name(self) -> &'static str {
        match self {
            Self::CgroupV1 => "cgroup-v1 memory.limit_in_bytes + watcher",
            Self::CgroupV2 => "cgroup-v2 memory.max + watcher",
            Self::WatcherOnly => "watcher only (no writable memory cgroup)",
        }
    }
}

/// The fleet's cgroup folders (one per hierarchy), removed when the fleet ends.
#[derive(Debug)]
pub struct Cgroups {
    /// v1 memory hierarchy: `<mount>/mcp-fleet-<pid>`.
    v1_memory: Option<PathBuf>,
    /// v2: `<mount>/mcp-fleet-<pid>`, used for `cgroup.kill` (and `memory.max` when enabled).
    v2: Option<PathBuf>,
    v2_memory: bool,
    pub layer: MemoryLayer,
}

/// One server's cgroups.
#[derive(Debug, Default)]
pub struct ServerCgroup {
    v1: Option<PathBuf>,
    v2: Option<PathBuf>,
    /// `cgroup.procs` files the child writes its own pid into between fork and exec.
    pub procs: Vec<CString>,
}

/// Mount points of the v1 memory hierarchy and of cgroup2, from /proc/self/mountinfo.
fn mounts() -> (Option<PathBuf>, Option<PathBuf>) {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return (None, None);
    };
    let mut v1 = None;
    let mut v2 = None;
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mount = left.split_whitespace().nth(4).map(PathBuf::from);
        let mut r = right.split_whitespace();
        let fstype = r.next().unwrap_or_default();
        let options = r.nth(1).unwrap_or_default();
        if fstype == "cgroup" && options.split(',').any(|o| o == "memory") {
            v1 = v1.or(mount);
        } else if fstype == "cgroup2" {
            v2 = v2.or(mount);
        }
    }
    (v1, v2)
}

/// Removes the cgroups of earlier instances that died without cleaning up (a SIGKILL of
/// `serve`): `mcp-fleet-<pid>` folders whose pid is gone. Folders that still hold processes
/// cannot be removed and are left alone.
fn remove_stale(mount: &Path) {
    let Ok(entries) = std::fs::read_dir(mount) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(pid) = name
            .strip_prefix("mcp-fleet-")
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        remove_tree(&e.path());
    }
}

/// Removes a cgroup folder and its (empty) sub-cgroups.
fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                let _ = std::fs::remove_dir(e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

fn write(path: &Path, value: &str) -> bool {
    std::fs::write(path, value).is_ok()
}

impl Cgroups {
    /// Finds what this machine offers; with `memory_limits` off, cgroups are used only to end
    /// process trees, and the watcher alone enforces memory.
    pub fn detect(memory_limits: bool) -> Self {
        let (v1_mount, v2_mount) = mounts();
        for mount in [&v1_mount, &v2_mount].into_iter().flatten() {
            remove_stale(mount);
        }
        let v1_mount = v1_mount.filter(|_| memory_limits);
        let name = format!("mcp-fleet-{}", std::process::id());
        let v1_memory = v1_mount.map(|m| m.join(&name)).filter(|dir| {
            std::fs::create_dir_all(dir).is_ok() && dir.join("memory.limit_in_bytes").exists()
        });
        let v2 = v2_mount.map(|m| m.join(&name)).filter(|dir| {
            std::fs::create_dir_all(dir).is_ok() && dir.join("cgroup.procs").exists()
        });
        let v2_memory = v2.as_ref().is_some_and(|dir| {
            let parent_has = dir
                .parent()
                .and_then(|p| std::fs::read_to_string(p.join("cgroup.controllers")).ok())
                .is_some_and(|c| c.split_whitespace().any(|x| x == "memory"));
            memory_limits && parent_has && write(&dir.join("cgroup.subtree_control"), "+memory")
        });
        let layer = if v1_memory.is_some() {
            MemoryLayer::CgroupV1
        } else if v2_memory {
            MemoryLayer::CgroupV2
        } else {
            MemoryLayer::WatcherOnly
        };
        Self {
            v1_memory,
            v2,
            v2_memory,
            layer,
        }
    }

    /// Whether `cgroup.kill` can end a server's whole tree.
    pub fn can_kill(&self) -> bool {
        self.v2
            .as_ref()
            .is_some_and(|d| d.join("cgroup.kill").exists())
    }

    /// Creates the cgroups of server `id` with a memory limit of `limit` bytes.
    pub fn prepare(&self, id: &str, limit: u64) -> ServerCgroup {
        let mut cg = ServerCgroup::default();
        if let Some(base) = &self.v1_memory {
            let dir = base.join(id);
            let _ = std::fs::create_dir(&dir);
            // Without swap accounting memsw may be absent; the plain limit is what counts.
            if write(&dir.join("memory.limit_in_bytes"), &limit.to_string()) {
                let _ = write(&dir.join("memory.memsw.limit_in_bytes"), &limit.to_string());
                cg.push_procs(&dir);
                cg.v1 = Some(dir);
            }
        }
        if let Some(base) = &self.v2 {
            let dir = base.join(id);
            let _ = std::fs::create_dir(&dir);
            if dir.join("cgroup.procs").exists() {
                if self.v2_memory {
                    let _ = write(&dir.join("memory.max"), &limit.to_string());
                    let _ = write(&dir.join("memory.swap.max"), "0");
                }
                cg.push_procs(&dir);
                cg.v2 = Some(dir);
            }
        }
        cg
    }
}

impl Cgroups {
    /// The fleet's cgroup folders (what the watchdog empties if `serve` dies).
    pub fn dirs(&self) -> Vec<PathBuf> {
        [&self.v1_memory, &self.v2]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }

    /// Removes the fleet's cgroup folders (called once every server has stopped).
    pub fn cleanup(&self) {
        for dir in [&self.v1_memory, &self.v2].into_iter().flatten() {
            remove_tree(dir);
        }
    }
}

impl ServerCgroup {
    fn push_procs(&mut self, dir: &Path) {
        if let Ok(c) = CString::new(dir.join("cgroup.procs").as_os_str().as_encoded_bytes()) {
            self.procs.push(c);
        }
    }

    /// Kills every process in the server's v2 cgroup at once; false where unavailable.
    pub fn kill_all(&self) -> bool {
        self.v2
            .as_ref()
            .is_some_and(|d| write(&d.join("cgroup.kill"), "1"))
    }

    /// Processes in the server's cgroup now (v2, else v1; 0 where it has none).
    pub fn process_count(&self) -> usize {
        [&self.v2, &self.v1]
            .into_iter()
            .flatten()
            .find_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
            .map_or(0, |t| t.lines().filter(|l| !l.trim().is_empty()).count())
    }

    /// Kills every process of the server's cgroups one by one (v1, which has no `cgroup.kill`).
    pub fn kill_listed(&self) {
        for dir in [&self.v1, &self.v2].into_iter().flatten() {
            if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                for pid in text.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
                    crate::sys::signal_process(pid, libc::SIGKILL);
                }
            }
        }
    }

    /// Times the kernel OOM-killed a process of this server (v1 `memory.oom_control` or v2
    /// `memory.events`).
    pub fn oom_kills(&self) -> u64 {
        let read = |dir: &Option<PathBuf>, file: &str| {
            dir.as_ref()
                .and_then(|d| std::fs::read_to_string(d.join(file)).ok())
                .and_then(|t| {
                    t.lines().find_map(|l| {
                        l.strip_prefix("oom_kill ")
                            .and_then(|n| n.trim().parse().ok())
                    })
                })
        };
        read(&self.v1, "memory.oom_control")
            .or_else(|| read(&self.v2, "memory.events"))
            .unwrap_or(0)
    }

    /// Removes the (now empty) cgroups.
    pub fn remove(&self) {
        for dir in [&self.v1, &self.v2].into_iter().flatten() {
            for _ in 0..20 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                // The last process may still be exiting.
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
    }
}
