//! Starting and stopping one server process. What runs in the child between fork and exec
//! (async-signal-safe raw syscalls only) is `sys::bind_child`.

use std::io;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// What to run for one server, variables ({port}, {id}, ...) already filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    pub program: std::path::PathBuf,
    pub args: Vec<String>,
    pub cwd: std::path::PathBuf,
    /// The whole environment of the child (a bounded base plus the configured variables).
    pub env: Vec<(String, String)>,
    pub log_file: std::path::PathBuf,
    pub log_max_size: u64,
    pub log_keep: u32,
    pub server_logs: crate::config::ServerLogs,
    /// The program is this binary's built-in server (`mcp-fleet backend`), which binds itself
    /// to `serve` after exec (see `spawn`).
    pub builtin: bool,
}

/// Tells the built-in server which process it must die with (see `spawn`).
pub const PARENT_PID_ENV: &str = "MCP_FLEET_PARENT_PID";

/// Variables a child inherits from `serve` (when set there); everything else it gets is
/// configured explicitly, so one server's secrets in the operator's shell do not leak to all.
const INHERITED: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LANG",
    "LC_ALL",
    "TZ",
    "TMPDIR",
    "RUST_LOG",
    "RUST_BACKTRACE",
];

/// The bounded base environment.
pub fn base_env() -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = INHERITED
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push((
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ));
    }
    env
}

/// Starts the server in its own process group (and its own cgroups, when given), with stdout
/// and stderr on one pipe to its rotating log file (one pipe, not two: the server's lines stay
/// in the order it wrote them, and `serve` holds one descriptor per server instead of two, which
/// every later child copies and closes at its exec).
///
/// The child asks the kernel for SIGKILL when its parent dies (`PR_SET_PDEATHSIG`), so even a
/// SIGKILL of `mcp-fleet serve` leaves no orphan. The kernel ties that signal to the *thread*
/// that forked, so this must be called from the fleet's own long-lived thread, never from a
/// blocking-pool thread that may exit when idle. It joins its cgroups itself, before exec, so
/// not even its first fork escapes them.
///
/// The built-in server does both itself instead: it sets `PR_SET_PDEATHSIG` first thing (and
/// exits if `serve` is already gone), and `serve` moves it into its cgroups as soon as it runs
/// (it never forks, so nothing can escape them in between). With no work between fork and
/// exec, the child is started by `posix_spawn` (a vfork: no copy of `serve`'s memory map to
/// make, and none of its pages to copy on write afterwards), which takes a third of the CPU of a
/// fleet's start-up off `serve` (BENCHMARKS.md).
pub fn spawn(launch: &Launch, cgroup_procs: &[std::ffi::CString]) -> io::Result<Child> {
    let (writer, output) = tokio::net::unix::pipe::pipe()?;
    // The child's end blocks, as a program expects of its stdout.
    let writer = writer.into_blocking_fd()?;
    let stdio = [
        Stdio::null(),
        Stdio::from(writer.try_clone()?),
        Stdio::from(writer),
    ];
    // The command, and with it this process's copies of the pipe's writing end, is gone once
    // the child runs: the copier sees the end of the output when the child's copies close.
    let child = command(launch, cgroup_procs, stdio)?.spawn()?;
    if launch.builtin {
        if let Some(pid) = child.id() {
            join_cgroups(pid, cgroup_procs);
        }
    }
    match launch.server_logs {
        crate::config::ServerLogs::Files => {
            tokio::spawn(super::logfile::copy(
                output,
                launch.log_file.clone(),
                launch.log_max_size,
                launch.log_keep,
            ));
        }
        crate::config::ServerLogs::Stdout => {
            let id = launch
                .log_file
                .file_stem()
                .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
            tokio::spawn(super::logfile::copy_lines(
                output,
                super::logfile::Sink::Stdout,
                id,
            ));
        }
    }
    Ok(child)
}

/// The command for one server process: its own process group, its cgroups, the bounded
/// environment; stdin, stdout and stderr as the caller needs them.
fn command(
    launch: &Launch,
    cgroup_procs: &[std::ffi::CString],
    [stdin, stdout, stderr]: [Stdio; 3],
) -> io::Result<Command> {
    if let Some(dir) = launch.log_file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut command = Command::new(&launch.program);
    command
        .args(&launch.args)
        .current_dir(&launch.cwd)
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr)
        .kill_on_drop(true)
        // Its own group, so stopping it reaches any helpers it forked.
        .process_group(0);
    if launch.builtin {
        command.env(PARENT_PID_ENV, std::process::id().to_string());
    } else {
        crate::sys::bind_child(&mut command, cgroup_procs.to_vec());
    }
    Ok(command)
}

/// Moves the running process `pid` into the cgroups whose `cgroup.procs` files are `procs`, as
/// `sys::bind_child` does from inside a forked child (and, like it, goes on when one refuses:
/// the server runs, unconfined by that one).
fn join_cgroups(pid: u32, procs: &[std::ffi::CString]) {
    use std::os::unix::ffi::OsStrExt;
    for path in procs {
        let path = Path::new(std::ffi::OsStr::from_bytes(path.as_bytes()));
        if let Err(e) = std::fs::write(path, pid.to_string()) {
            tracing::debug!(pid, path = %path.display(), error = %e, "cannot move a server into its cgroup");
        }
    }
}

/// A stdio server's child: like `spawn`, but its stdin and stdout are the JSON-RPC channel,
/// handed to the caller; only stderr goes to the log (`log`).
pub fn spawn_stdio(
    launch: &Launch,
    cgroup_procs: &[std::ffi::CString],
    log: &super::logfile::Sink,
    prefix: String,
) -> io::Result<(
    Child,
    tokio::process::ChildStdin,
    tokio::process::ChildStdout,
)> {
    let piped = [Stdio::piped(), Stdio::piped(), Stdio::piped()];
    let mut child = command(launch, cgroup_procs, piped)?.spawn()?;
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(io::Error::other("the child's pipes were not opened"));
    };
    tokio::spawn(super::logfile::copy_lines(stderr, log.clone(), prefix));
    Ok((child, stdin, stdout))
}

/// SIGTERM to the whole process group, then SIGKILL after `grace`. Returns once the child is
/// reaped. Helpers that left the group are ended by the caller through the cgroup.
pub async fn stop(child: &mut Child, grace: Duration) {
    let Some(pid) = child.id() else {
        return; // already reaped
    };
    crate::sys::signal_group(pid, libc::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        crate::sys::signal_group(pid, libc::SIGKILL);
        let _ = child.wait().await;
    }
    // Helpers that ignored SIGTERM must not outlive their leader.
    crate::sys::signal_group(pid, libc::SIGKILL);
}

/// SIGKILL to the process group of a leader that already exited (its helpers may live on).
pub fn kill_group(pid: u32) {
    crate::sys::signal_group(pid, libc::SIGKILL);
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
