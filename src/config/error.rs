//! Errors of loading and validating a config. Each validation error carries the key, the value it
//! had and why it was refused, so an operator can fix a 1000-server file without guessing.

use std::fmt;
use std::path::PathBuf;

/// One refused setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path of the key, e.g. `categories.database.ports`.
    pub key: String,
    /// The value as written (or `(missing)`).
    pub value: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(
        key: impl Into<String>,
        value: impl fmt::Display,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            key: key.into(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} = {}: {}", self.key, self.value, self.reason)
    }
}

/// Why a config file could not become a `ValidConfig`.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read config {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config {path} has {} error(s):\n{}", errors.len(), list(errors))]
    Invalid {
        path: PathBuf,
        errors: Vec<ConfigError>,
    },
}

fn list(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(|e| format!("  - {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}
