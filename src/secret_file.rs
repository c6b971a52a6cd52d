//! Secrets the instance generates at first start and keeps in its state dir (the session key and
//! the admin token): created with mode 0600 before a byte is written, never logged.

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
    #[error("{path} is not a 32-byte key: write 32 raw bytes, 64 hex digits or base64 of 32 bytes (e.g. `head -c 32 /dev/urandom > {path}`)")]
    KeyFormat { path: PathBuf },
}

/// Writes a fresh secret to `path` (mode 0600 from the start) if no file is there yet; returns
/// the bytes written, or `None` when the file already existed. `create_new` lets exactly one of
/// two processes starting at once create it; the other reads what the first wrote.
fn create_once(
    path: &Path,
    fresh: impl FnOnce() -> Result<Vec<u8>, SecretError>,
) -> Result<Option<Vec<u8>>, SecretError> {
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
            let bytes = fresh()?;
            file.write_all(&bytes)
                .and_then(|()| file.sync_all())
                .map_err(|source| SecretError::Create {
                    path: path.to_path_buf(),
                    source,
                })?;
            Ok(Some(bytes))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(None),
        Err(source) => Err(SecretError::Create {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn random<const N: usize>() -> Result<[u8; N], SecretError> {
    let mut raw = [0u8; N];
    getrandom::getrandom(&mut raw).map_err(SecretError::Random)?;
    Ok(raw)
}

/// Reads the `N`-byte secret at `path`, or creates it from the OS random source.
pub fn load_or_create<const N: usize>(path: &Path) -> Result<[u8; N], SecretError> {
    let bytes = match create_once(path, || random::<N>().map(|r| r.to_vec()))? {
        Some(bytes) => bytes,
        None => {
            let mut bytes = Vec::with_capacity(N);
            std::fs::File::open(path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(|source| SecretError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
            bytes
        }
    };
    <[u8; N]>::try_from(bytes.as_slice()).map_err(|_| SecretError::Length {
        path: path.to_path_buf(),
        found: bytes.len(),
        expected: N,
    })
}

/// Reads the text token at `path`, or creates one (64 hex characters from the OS random source)
/// with mode 0600. Text, so an operator can `curl -H "Authorization: Bearer $(cat FILE)"`.
pub fn load_or_create_token(path: &Path) -> Result<String, SecretError> {
    let created = create_once(path, || {
        let token: String = random::<32>()?.iter().map(|b| format!("{b:02x}")).collect();
        Ok(format!("{token}\n").into_bytes())
    })?;
    match created {
        Some(bytes) => Ok(String::from_utf8_lossy(&bytes).trim().to_string()),
        None => read_token(path),
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

/// Reads a 32-byte key an operator provided (a mounted Secret, say): 32 raw bytes, or 64 hex
/// digits, or base64 (standard or URL-safe, padded or not) of 32 bytes; surrounding whitespace
/// is ignored in the text forms.
pub fn read_key(path: &Path) -> Result<[u8; 32], SecretError> {
    use base64::Engine;
    let bytes = std::fs::read(path).map_err(|source| SecretError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if let Ok(raw) = <[u8; 32]>::try_from(bytes.as_slice()) {
        return Ok(raw);
    }
    let bad = || SecretError::KeyFormat {
        path: path.to_path_buf(),
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| bad())?.trim();
    let decoded: Option<Vec<u8>> =
        if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..32)
                .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok())
                .collect()
        } else {
            let trimmed = text.trim_end_matches('=');
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(trimmed)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(trimmed))
                .ok()
        };
    decoded
        .and_then(|d| <[u8; 32]>::try_from(d.as_slice()).ok())
        .ok_or_else(bad)
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

    #[test]
    fn a_provided_key_is_read_raw_hex_or_base64_and_anything_else_is_refused() {
        use base64::Engine;
        let dir = tempfile::tempdir().expect("dir");
        let key = [0x5au8; 32];
        let forms: [(&str, Vec<u8>); 3] = [
            ("raw", key.to_vec()),
            ("hex", format!("{}\n", "5a".repeat(32)).into_bytes()),
            (
                "b64",
                format!(
                    "{}\n",
                    base64::engine::general_purpose::STANDARD.encode(key)
                )
                .into_bytes(),
            ),
        ];
        for (name, bytes) in forms {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).expect("write");
            assert_eq!(read_key(&path).expect(name), key, "{name}");
        }
        let short = dir.path().join("short");
        std::fs::write(&short, "abc").expect("write");
        assert!(matches!(
            read_key(&short),
            Err(SecretError::KeyFormat { .. })
        ));
        assert!(matches!(
            read_key(&dir.path().join("missing")),
            Err(SecretError::Read { .. })
        ));
    }
}
