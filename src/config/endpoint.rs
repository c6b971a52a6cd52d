//! Where a running instance answers, for the command-line tools: the admin and monitor
//! addresses, the token file and the state dir. Read leniently, so that an operator in the middle
//! of an edit can still see the fleet: a file that does not validate still gives these four keys
//! (each one that is missing or unreadable takes its default), and the caller says that the file
//! does not validate.

use super::defaults as d;
use super::{load, LoadError, ValidConfig};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub source: PathBuf,
    pub admin: SocketAddr,
    pub monitor: SocketAddr,
    pub token_file: Option<PathBuf>,
    pub state_dir: PathBuf,
}

impl Endpoint {
    pub fn of(config: &ValidConfig) -> Self {
        Self {
            source: config.source.clone(),
            admin: config.admin_listen,
            monitor: config.monitor_listen,
            token_file: config.admin_token_file.clone(),
            state_dir: config.fleet.state_dir.clone(),
        }
    }
}

/// The endpoint of the instance `path` configures, and the reason the file does not validate
/// when it does not. Only a file that cannot be read at all is an error.
pub fn read(path: &Path) -> Result<(Endpoint, Option<LoadError>), LoadError> {
    let invalid = match load(path) {
        Ok(config) => return Ok((Endpoint::of(&config), None)),
        Err(e @ LoadError::Io { .. }) => return Err(e),
        Err(e) => e,
    };
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    // A file with a syntax error gives no table at all: every key takes its default.
    let table: toml::Table = text.parse().unwrap_or_default();
    let get = |section: &str, key: &str| {
        table
            .get(section)
            .and_then(|s| s.get(key))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let addr = |section: &str, default: &str| {
        get(section, "listen")
            .and_then(|t| t.parse::<SocketAddr>().ok())
            .or_else(|| default.parse().ok())
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
    };
    let base = super::base_of(path);
    let resolve = |p: String| super::fields::resolve(&base, &p);
    Ok((
        Endpoint {
            source: path.to_path_buf(),
            admin: addr("admin", d::ADMIN_LISTEN),
            monitor: addr("monitor", d::MONITOR_LISTEN),
            token_file: get("admin", "token_file").map(resolve),
            state_dir: resolve(get("fleet", "state_dir").unwrap_or_else(|| d::STATE_DIR.into())),
        },
        Some(invalid),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_file_still_names_its_instance() {
        let dir = std::env::temp_dir().join(format!("mcp-fleet-endpoint-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("f.toml");
        std::fs::write(
            &path,
            "[admin]\nlisten = \"127.0.0.1:3999\"\n[fleet]\nstate_dir = \"st\"\nbatch_size = -4\n[categories.a]\nports = \"1-2\"\n",
        )
        .expect("write");
        let (e, why) = read(&path).expect("readable");
        assert!(matches!(why, Some(LoadError::Invalid { .. })), "{why:?}");
        assert_eq!(e.admin.port(), 3999);
        assert_eq!(e.monitor.port(), 9090);
        assert_eq!(e.state_dir, dir.join("st"));
        std::fs::write(&path, "[admin\nlisten = ").expect("write");
        let (e, why) = read(&path).expect("readable");
        assert!(matches!(why, Some(LoadError::Syntax { .. })));
        assert_eq!(e.admin.port(), 3000);
        std::fs::remove_dir_all(&dir).expect("clean");
    }
}
