//! The fleet's watchdog: one small process (`mcp-fleet reap-cgroups`, this same binary) that
//! `serve` starts with a pipe on its stdin and that waits for that pipe to close. It closes when
//! `serve` ends, however it ends: on a `kill -9` the kernel ends the servers (`PR_SET_PDEATHSIG`)
//! but not what they forked (a grandchild that left the process group, a daemon); the watchdog
//! then kills every process still in the fleet's cgroups and removes them. After a clean stop it
//! finds nothing and exits.
//!
//! It sits in `serve`'s own cgroup, not the fleet's, in its own process group (a terminal's
//! Ctrl-C does not reach it), and ignores SIGINT, SIGTERM and SIGHUP: only the pipe ends it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The hidden subcommand the watchdog runs as.
pub const SUBCOMMAND: &str = "reap-cgroups";

/// Starts the watchdog over `dirs`; the returned stdin must live as long as `serve` (dropping
/// it is what tells the watchdog to act).
pub fn start(dirs: &[PathBuf]) -> std::io::Result<(std::process::Child, std::process::ChildStdin)> {
    use std::os::unix::process::CommandExt;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .arg(SUBCOMMAND)
        .args(dirs)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .process_group(0)
        .spawn()?;
    let stdin = child
        .stdin
        .take()
        .ok_or_else(|| std::io::Error::other("no pipe to the watchdog"))?;
    Ok((child, stdin))
}

/// The watchdog's body: waits for EOF on stdin, then empties and removes `dirs`.
pub fn run(dirs: &[PathBuf]) {
    crate::sys::ignore_stop_signals();
    let mut sink = [0u8; 64];
    let mut stdin = std::io::stdin();
    while !matches!(stdin.read(&mut sink), Ok(0) | Err(_)) {}
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut left = 0;
        for dir in dirs {
            left += end_tree(dir);
        }
        if left == 0 || Instant::now() >= deadline {
            if left > 0 {
                eprintln!("mcp-fleet reap-cgroups: {left} processes would not die");
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for dir in dirs {
        remove_tree(dir);
    }
}

/// Kills what lives in `dir` and its sub-cgroups; returns how many processes were found.
fn end_tree(dir: &Path) -> usize {
    if !dir.exists() {
        return 0;
    }
    // cgroup v2 ends a whole tree at once.
    let _ = std::fs::write(dir.join("cgroup.kill"), "1");
    let mut found = 0;
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        if let Ok(text) = std::fs::read_to_string(d.join("cgroup.procs")) {
            for pid in text.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
                found += 1;
                crate::sys::signal_process(pid, libc::SIGKILL);
            }
        }
        if let Ok(entries) = std::fs::read_dir(&d) {
            dirs.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    found
}

fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}
