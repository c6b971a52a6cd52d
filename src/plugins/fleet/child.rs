//! Starting and stopping one server process. This is the one place with `unsafe`: the code that
//! runs in the child between fork and exec, which must be async-signal-safe (raw syscalls only).

use std::io;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// What to run for one server, placeholders already filled in.
#[derive(Debug, Clone)]
pub struct Launch {
    pub program: std::path::PathBuf,
    pub args: Vec<String>,
    pub cwd: std::path::PathBuf,
    pub log_file: std::path::PathBuf,
}

/// Starts the server in its own process group, with stdout and stderr appended to its log file.
///
/// The child asks the kernel for SIGKILL when its parent dies (`PR_SET_PDEATHSIG`), so even a
/// SIGKILL of `mcp-fleet serve` leaves no orphan. The kernel ties that signal to the *thread*
/// that forked, so this must be called from the fleet's own long-lived thread, never from a
/// blocking-pool thread that may exit when idle.
pub fn spawn(launch: &Launch) -> io::Result<Child> {
    if let Some(dir) = launch.log_file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&launch.log_file)?;
    let log_err = log.try_clone()?;
    let mut command = Command::new(&launch.program);
    command
        .args(&launch.args)
        .current_dir(&launch.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err))
        .kill_on_drop(true)
        // Its own group, so stopping it reaches any helpers it forked.
        .process_group(0);
    let parent = std::process::id() as libc::pid_t;
    #[allow(unsafe_code)]
    // SAFETY: the closure only calls prctl, getppid and _exit, which are async-signal-safe, and
    // touches no memory shared with the parent.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl: then no signal will come.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    command.spawn()
}

fn signal_group(pgid: u32, signal: libc::c_int) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return;
    };
    if pgid <= 1 {
        return;
    }
    #[allow(unsafe_code)]
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

/// SIGTERM to the whole process group, then SIGKILL after `grace`. Returns once the child is
/// reaped.
pub async fn stop(child: &mut Child, grace: Duration) {
    let Some(pid) = child.id() else {
        return; // already reaped
    };
    signal_group(pid, libc::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        signal_group(pid, libc::SIGKILL);
        let _ = child.wait().await;
    }
    // Helpers that ignored SIGTERM must not outlive their leader.
    signal_group(pid, libc::SIGKILL);
}

/// The program to run: `mcp-fleet` means this very binary; a relative path with a slash is
/// resolved against the config file's folder; a bare name is looked up in PATH by exec.
pub fn resolve_program(word: &str, config_dir: &Path) -> io::Result<std::path::PathBuf> {
    if word == crate::config::SELF_COMMAND {
        return std::env::current_exe();
    }
    let path = Path::new(word);
    Ok(if path.is_relative() && word.contains('/') {
        config_dir.join(path)
    } else {
        path.to_path_buf()
    })
}
