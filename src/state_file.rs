//! Durable files in the state dir: written whole or not at all (temp file, fsync, rename, fsync of
//! the folder), and read back with a corrupt file reported and moved aside rather than ignored.

use serde::{de::DeserializeOwned, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode {path}: {source}")]
    Encode {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Writes `value` as JSON to `path` atomically: a crash leaves the old file or the new one.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StateFileError> {
    let io = |source| StateFileError::Write {
        path: path.to_path_buf(),
        source,
    };
    let bytes = serde_json::to_vec_pretty(value).map_err(|source| StateFileError::Encode {
        path: path.to_path_buf(),
        source,
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)?;
    // The rename itself must reach the disk too.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)?;
    Ok(())
}

/// What reading a state file found.
#[derive(Debug)]
pub enum Loaded<T> {
    Missing,
    Found(T),
    /// Unreadable or not the expected JSON: moved to `moved_to`, with the reason.
    Corrupt {
        reason: String,
        moved_to: Option<PathBuf>,
    },
}

pub fn read_json<T: DeserializeOwned>(path: &Path) -> Loaded<T> {
    let reason = match std::fs::read(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Loaded::Missing,
        Err(e) => e.to_string(),
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(v) => return Loaded::Found(v),
            Err(e) => e.to_string(),
        },
    };
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let aside = path.with_extension(format!("corrupt-{stamp}"));
    let moved_to = std::fs::rename(path, &aside).ok().map(|()| aside);
    Loaded::Corrupt { reason, moved_to }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corrupt_files_are_moved_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s/state.json");
        assert!(matches!(read_json::<Vec<u32>>(&path), Loaded::Missing));
        write_json(&path, &vec![1u32, 2, 3]).expect("write");
        match read_json::<Vec<u32>>(&path) {
            Loaded::Found(v) => assert_eq!(v, vec![1, 2, 3]),
            other => panic!("{other:?}"),
        }
        std::fs::write(&path, b"{ half a file").expect("corrupt it");
        match read_json::<Vec<u32>>(&path) {
            Loaded::Corrupt { moved_to, .. } => {
                let aside = moved_to.expect("moved");
                assert!(aside.exists());
                assert!(!path.exists());
            }
            other => panic!("{other:?}"),
        }
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("s"))
            .expect("dir")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp."))
            .collect();
        assert!(leftovers.is_empty());
    }
}
