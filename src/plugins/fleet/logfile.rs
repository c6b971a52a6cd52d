//! A server's stdout and stderr, written to `log_dir/{category}/{id}.log` and rotated by size
//! (`{id}.log.1` is the newest old file; `log_keep` of them are kept). The output goes through
//! a pipe to a task on the control thread, never through the proxy's threads.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use tokio::io::AsyncReadExt;
use tokio::process::{ChildStderr, ChildStdout};

struct Rotating {
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

/// Copies both streams into the rotating log until the child closes them.
pub async fn copy(mut out: ChildStdout, mut err: ChildStderr, path: PathBuf, max: u64, keep: u32) {
    let mut log = Rotating::open(path, max, keep);
    // Small buffers: a thousand mostly quiet servers each hold two for their whole life.
    let mut a = [0u8; 2048];
    let mut b = [0u8; 2048];
    let (mut out_open, mut err_open) = (true, true);
    while out_open || err_open {
        tokio::select! {
            n = out.read(&mut a), if out_open => match n {
                Ok(0) | Err(_) => out_open = false,
                Ok(n) => log.write(&a[..n]),
            },
            n = err.read(&mut b), if err_open => match n {
                Ok(0) | Err(_) => err_open = false,
                Ok(n) => log.write(&b[..n]),
            },
        }
    }
}

#[cfg(test)]
mod tests {
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
