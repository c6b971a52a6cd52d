//! A server's stdout and stderr, written to `log_dir/{category}/{id}.log` and rotated by size
//! (`{id}.log.1` is the newest old file; `log_keep` of them are kept), or, with
//! `fleet.server_logs = "stdout"`, to this process's stdout one line at a time with the server's
//! id in front (in a pod, where the kubelet collects it). The output goes through a pipe to a
//! task on the control thread, never through the proxy's threads.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use tokio::io::AsyncReadExt;

pub struct Rotating {
    path: PathBuf,
    file: Option<File>,
    written: u64,
    max: u64,
    keep: u32,
}

fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

impl Rotating {
    fn open(path: PathBuf, max: u64, keep: u32) -> Self {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .ok();
        let written = file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len());
        Self {
            path,
            file,
            written,
            max,
            keep,
        }
    }

    fn rotate(&mut self) {
        self.file = None;
        if self.keep == 0 {
            let _ = std::fs::remove_file(&self.path);
        } else {
            let _ = std::fs::remove_file(rotated(&self.path, self.keep));
            for n in (1..self.keep).rev() {
                let _ = std::fs::rename(rotated(&self.path, n), rotated(&self.path, n + 1));
            }
            let _ = std::fs::rename(&self.path, rotated(&self.path, 1));
        }
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .ok();
        self.written = 0;
    }

    fn write(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.written >= self.max {
                self.rotate();
            }
            let room = (self.max - self.written).max(1) as usize;
            let (now, rest) = data.split_at(room.min(data.len()));
            if let Some(f) = &mut self.file {
                // A full disk must not stop the server: its output is dropped instead.
                let _ = f.write_all(now);
            }
            self.written += now.len() as u64;
            data = rest;
        }
    }
}

/// Copies the server's output (stdout and stderr on one pipe) into the rotating log until the
/// child closes it.
pub async fn copy<R: tokio::io::AsyncRead + Unpin>(
    mut output: R,
    path: PathBuf,
    max: u64,
    keep: u32,
) {
    let mut log = Rotating::open(path, max, keep);
    // A small buffer: a thousand mostly quiet servers each hold one for their whole life.
    let mut buf = [0u8; 2048];
    while let Ok(n @ 1..) = output.read(&mut buf).await {
        log.write(&buf[..n]);
    }
}

/// Longest line kept whole; a longer one is cut there (a server printing without newlines must
/// not make its copier grow without bound).
const MAX_LINE: usize = 16 * 1024;

/// Whole lines of `pending` (and all of it once it exceeds `MAX_LINE`), each as `[id] line\n`.
fn take_lines(id: &str, pending: &mut Vec<u8>, out: &mut Vec<u8>) {
    loop {
        let (line, consumed) = match pending.iter().position(|&b| b == b'\n') {
            Some(end) => (end, end + 1),
            None if pending.len() >= MAX_LINE => (MAX_LINE, MAX_LINE),
            None => return,
        };
        out.extend_from_slice(b"[");
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(b"] ");
        out.extend_from_slice(&pending[..line]);
        out.push(b'\n');
        pending.drain(..consumed);
    }
}

/// A stream ended: what it left without a newline is still a line.
fn end_line(pending: &mut Vec<u8>) {
    if !pending.is_empty() {
        pending.push(b'\n');
    }
}

/// Where the stderr of a stdio server's children goes: its one rotating log file (children of
/// one server share it, so rotation stays in one hand), or this process's stdout.
#[derive(Clone)]
pub enum Sink {
    File(std::sync::Arc<std::sync::Mutex<Rotating>>),
    Stdout,
}

impl Sink {
    pub fn new(server_logs: crate::config::ServerLogs, path: PathBuf, max: u64, keep: u32) -> Self {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        match server_logs {
            crate::config::ServerLogs::Files => Self::File(std::sync::Arc::new(
                std::sync::Mutex::new(Rotating::open(path, max, keep)),
            )),
            crate::config::ServerLogs::Stdout => Self::Stdout,
        }
    }
}

/// Copies one stream, line by line with `prefix` in front of each (which child wrote it), to
/// `sink` until it closes.
pub async fn copy_lines<R: tokio::io::AsyncRead + Unpin>(mut from: R, sink: Sink, prefix: String) {
    let mut buf = [0u8; 2048];
    let mut pending = Vec::new();
    let mut lines = Vec::new();
    loop {
        let open = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                end_line(&mut pending);
                false
            }
            Ok(n) => {
                pending.extend_from_slice(&buf[..n]);
                true
            }
        };
        take_lines(&prefix, &mut pending, &mut lines);
        if !lines.is_empty() {
            match &sink {
                Sink::File(log) => log
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .write(&lines),
                Sink::Stdout => {
                    let _ = std::io::stdout().lock().write_all(&lines);
                }
            }
            lines.clear();
        }
        if !open {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn stdout_lines_are_whole_prefixed_and_bounded() {
        let mut pending = b"one\ntwo\npart".to_vec();
        let mut out = Vec::new();
        super::take_lines("db-0", &mut pending, &mut out);
        assert_eq!(out, b"[db-0] one\n[db-0] two\n");
        assert_eq!(pending, b"part");
        let mut long = vec![b'x'; super::MAX_LINE + 10];
        out.clear();
        super::take_lines("db-0", &mut long, &mut out);
        assert_eq!(out.len(), "[db-0] ".len() + super::MAX_LINE + 1);
        assert_eq!(long.len(), 10, "nothing lost at the cut");
    }

    use super::*;

    #[test]
    fn rotation_keeps_the_configured_number_of_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.log");
        let mut log = Rotating::open(path.clone(), 100, 2);
        for _ in 0..10 {
            log.write(&[b'x'; 60]);
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        assert_eq!(names, ["s.log", "s.log.1", "s.log.2"]);
        for n in &names {
            let len = std::fs::metadata(dir.path().join(n)).expect("meta").len();
            assert!(len <= 100, "{n} is {len} bytes");
        }
    }
}
