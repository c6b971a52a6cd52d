//! Secrets the instance generates at first start and keeps in its state dir (the session key now,
//! the admin token later): created with mode 0600 before a byte is written, never logged.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot create {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds {found} bytes, expected {expected}: remove it to generate a new one (existing sessions then end)")]
    Length {
        path: PathBuf,
        found: usize,
        expected: usize,
    },
    #[error("no random source: {0}")]
    Random(getrandom::Error),
}

/// Reads the `N`-byte secret at `path`, or creates it from the OS random source. Two processes
/// starting at once cannot both create it: `create_new` lets exactly one win, the other reads.
pub fn load_or_create<const N: usize>(path: &Path) -> Result<[u8; N], SecretError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| SecretError::Create {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let mut secret = [0u8; N];
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut file) => {
            getrandom::getrandom(&mut secret).map_err(SecretError::Random)?;
            file.write_all(&secret)
                .and_then(|()| file.sync_all())
                .map_err(|source| SecretError::Create {
                    path: path.to_path_buf(),
                    source,
                })?;
            Ok(secret)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let mut bytes = Vec::with_capacity(N);
            std::fs::File::open(path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(|source| SecretError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
            if bytes.len() != N {
                return Err(SecretError::Length {
                    path: path.to_path_buf(),
                    found: bytes.len(),
                    expected: N,
                });
            }
            secret.copy_from_slice(&bytes);
            Ok(secret)
        }
        Err(source) => Err(SecretError::Create {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Reads the text token at `path`, or creates one (64 hex characters from the OS random source)
/// with mode 0600. Text, so an operator can `curl -H "Authorization: Bearer $(cat FILE)"`.
pub fn load_or_create_token(path: &Path) -> Result<String, SecretError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| SecretError::Create {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut file) => {
            let mut raw = [0u8; 32];
            getrandom::getrandom(&mut raw).map_err(SecretError::Random)?;
            let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
            file.write_all(token.as_bytes())
                .and_then(|()| file.write_all(b"\n"))
                .and_then(|()| file.sync_all())
                .map_err(|source| SecretError::Create {
                    path: path.to_path_buf(),
                    source,
                })?;
            Ok(token)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_token(path),
        Err(source) => Err(SecretError::Create {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Reads a text token (surrounding white space removed); an empty file is an error.
pub fn read_token(path: &Path) -> Result<String, SecretError> {
    let text = std::fs::read_to_string(path).map_err(|source| SecretError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let token = text.trim().to_string();
    if token.is_empty() {
        return Err(SecretError::Length {
            path: path.to_path_buf(),
            found: 0,
            expected: 1,
        });
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_once_with_mode_0600_then_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/key");
        let a: [u8; 32] = load_or_create(&path).expect("create");
        let b: [u8; 32] = load_or_create(&path).expect("read");
        assert_eq!(a, b);
        assert_ne!(a, [0u8; 32]);
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let wrong: Result<[u8; 16], _> = load_or_create(&path);
        assert!(matches!(wrong, Err(SecretError::Length { found: 32, .. })));
    }

    #[test]
    fn text_tokens_are_hex_0600_and_stable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("admin.token");
        let a = load_or_create_token(&path).expect("create");
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(load_or_create_token(&path).expect("read"), a);
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
