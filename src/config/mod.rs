//! The config model. `load` turns a TOML file into a [`ValidConfig`] or into every error it has;
//! only a `ValidConfig` reaches the running system. This module knows nobody else in the crate.
//!
//! `raw` is what a user writes (serde), `model` what the program runs on, `section/` the
//! validation of each part of the file with key-level errors, `defaults` every default by name,
//! `keys` the table of which keys a reload applies and which need a restart, `endpoint` the
//! lenient reading the command-line tools use to find a running instance.
//!
//! Unknown keys are collected with `serde_ignored` rather than refused with
//! `deny_unknown_fields`, so that a file with three misspelt keys gets three errors in one run.

mod access;
pub mod defaults;
pub mod endpoint;
mod error;
mod fields;
pub mod keys;
mod model;
mod origin;
mod raw;
mod section;
mod units;
mod warnings;

pub use access::*;
pub use error::{ConfigError, LoadError};
pub use model::*;
pub use origin::{AllowedOrigin, OriginPort};
pub use section::loopback_http_url;
pub use units::{parse_duration, parse_port_range, parse_size};
pub use warnings::{ephemeral_warnings, stdio_warnings};

use raw::RawConfig;
use std::path::{Path, PathBuf};

/// Variables a command may contain; anything else in braces is a typo worth refusing.
pub const COMMAND_VARIABLES: &[&str] = &["{port}", "{category}", "{id}", "{host}"];

/// The first word of a command that means "this very binary".
pub const SELF_COMMAND: &str = "mcp-fleet";

/// Reads, parses and validates a config file.
pub fn load(path: &Path) -> Result<ValidConfig, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path, &base_of(path))
}

/// The folder relative paths in the file at `path` are resolved against.
fn base_of(path: &Path) -> PathBuf {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Parses and validates config text; `base` is the folder relative paths are resolved against.
pub fn parse(text: &str, source: &Path, base: &Path) -> Result<ValidConfig, LoadError> {
    let deserializer = toml::Deserializer::new(text);
    let mut unknown = Vec::new();
    let raw: RawConfig = serde_ignored::deserialize(deserializer, |path| {
        unknown.push(path.to_string());
    })
    .map_err(|e| LoadError::Syntax {
        path: source.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut errors: Vec<ConfigError> = unknown
        .into_iter()
        .map(|key| ConfigError::new(key, "(set)", "unknown key"))
        .collect();
    let config = section::validate(raw, source, base, &mut errors);
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(LoadError::Invalid {
            path: source.to_path_buf(),
            errors,
        })
    }
}

#[cfg(test)]
mod tests;
