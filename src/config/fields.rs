//! Readers of one raw value each (durations, addresses, bounded numbers, sizes, commands, paths,
//! environment tables): the value or its default, and an error naming the key when it is wrong.

use super::error::ConfigError;
use super::model::StrategyKind;
use super::units::{parse_duration, parse_size};
use super::COMMAND_VARIABLES;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(super) type Errors = Vec<ConfigError>;

pub(super) fn duration(
    key: &str,
    value: Option<&str>,
    default: Duration,
    errors: &mut Errors,
) -> Duration {
    match value {
        None => default,
        Some(text) => match parse_duration(text) {
            Ok(d) if d.is_zero() => {
                errors.push(ConfigError::new(
                    key,
                    format!("{text:?}"),
                    "must be above zero",
                ));
                default
            }
            Ok(d) => d,
            Err(why) => {
                errors.push(ConfigError::new(key, format!("{text:?}"), why));
                default
            }
        },
    }
}

pub(super) fn socket_addr(
    key: &str,
    value: Option<&str>,
    default: &str,
    errors: &mut Errors,
) -> SocketAddr {
    let text = value.unwrap_or(default);
    match text.parse::<SocketAddr>() {
        Ok(addr) if addr.port() == 0 => {
            errors.push(ConfigError::new(
                key,
                format!("{text:?}"),
                "port 0 is not allowed: clients need a fixed port",
            ));
            addr
        }
        Ok(addr) => addr,
        Err(_) => {
            errors.push(ConfigError::new(
                key,
                format!("{text:?}"),
                "must be IP:PORT, e.g. \"127.0.0.1:8080\" or \"[::1]:8080\"",
            ));
            SocketAddr::from(([127, 0, 0, 1], 0))
        }
    }
}

pub(super) fn bounded(
    key: &str,
    value: Option<i64>,
    default: i64,
    range: RangeInclusive<i64>,
    errors: &mut Errors,
) -> i64 {
    let v = value.unwrap_or(default);
    if range.contains(&v) {
        v
    } else {
        errors.push(ConfigError::new(
            key,
            v,
            format!("must be between {} and {}", range.start(), range.end()),
        ));
        default
    }
}

pub(super) fn command(key: &str, words: Vec<String>, errors: &mut Errors) -> Vec<String> {
    if words.is_empty() || words[0].trim().is_empty() {
        errors.push(ConfigError::new(
            key,
            format!("{words:?}"),
            "needs at least a program name",
        ));
        return words;
    }
    for word in &words {
        let mut rest = word.as_str();
        while let Some(open) = rest.find('{') {
            let tail = &rest[open..];
            let Some(close) = tail.find('}') else { break };
            let variable = &tail[..=close];
            if !COMMAND_VARIABLES.contains(&variable) {
                errors.push(ConfigError::new(
                    key,
                    format!("{word:?}"),
                    format!(
                        "unknown variable {variable}; known: {}",
                        COMMAND_VARIABLES.join(", ")
                    ),
                ));
            }
            rest = &tail[close + 1..];
        }
    }
    words
}

pub(super) fn mcp_path(
    key: &str,
    value: Option<&str>,
    default: &str,
    errors: &mut Errors,
) -> String {
    let path = value.unwrap_or(default);
    let ok = path.starts_with('/')
        && path
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#');
    if !ok {
        errors.push(ConfigError::new(
            key,
            format!("{path:?}"),
            "must be an absolute URL path like \"/mcp\" (no query, no spaces)",
        ));
    }
    path.to_string()
}

/// An environment table: names must be non-empty without `=` or NUL; values may use the command
/// variables.
pub(super) fn env_table(
    key: &str,
    table: Option<BTreeMap<String, String>>,
    errors: &mut Errors,
) -> BTreeMap<String, String> {
    let table = table.unwrap_or_default();
    for (name, value) in &table {
        if name.is_empty() || name.contains('=') || name.contains('\0') || value.contains('\0') {
            errors.push(ConfigError::new(
                format!("{key}.{name}"),
                format!("{value:?}"),
                "an environment name must be non-empty, without '=' or NUL",
            ));
        }
    }
    table
}

pub(super) fn resolve(base: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

pub(super) fn valid_category_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// A size like `"4MiB"` within `range` (bytes), or `default`.
pub(super) fn size(
    key: &str,
    value: Option<&str>,
    default: u64,
    range: RangeInclusive<u64>,
    errors: &mut Errors,
) -> u64 {
    let Some(text) = value else { return default };
    match parse_size(text) {
        Ok(n) if range.contains(&n) => n,
        Ok(_) => {
            errors.push(ConfigError::new(
                key,
                format!("{text:?}"),
                format!(
                    "must be between {} and {}",
                    human_size(*range.start()),
                    human_size(*range.end())
                ),
            ));
            default
        }
        Err(why) => {
            errors.push(ConfigError::new(key, format!("{text:?}"), why));
            default
        }
    }
}

/// `1KiB`, `1MiB`, `16EiB`: the bounds in an error read as the user writes sizes.
fn human_size(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut unit = 0;
    let mut v = n;
    while unit < UNITS.len() - 1 && v >= 1024 && v % 1024 == 0 {
        v /= 1024;
        unit += 1;
    }
    if n == u64::MAX {
        return "no limit".into();
    }
    format!("{v}{}", UNITS[unit])
}

/// A share above 0 and at most 1, or `default`.
pub(super) fn share(key: &str, v: Option<f64>, default: f64, errors: &mut Errors) -> f64 {
    match v {
        None => default,
        Some(x) if x > 0.0 && x <= 1.0 => x,
        Some(x) => {
            errors.push(ConfigError::new(
                key,
                x,
                "must be a share above 0 and at most 1 (0.05 = 5%)",
            ));
            default
        }
    }
}

/// One of `choices` by name, or `default` (with an error naming the choices).
pub(super) fn choice<T: Copy>(
    key: &str,
    value: Option<&str>,
    default: T,
    choices: &[(&str, T)],
    errors: &mut Errors,
) -> T {
    let Some(text) = value else { return default };
    match choices.iter().find(|(n, _)| *n == text) {
        Some((_, v)) => *v,
        None => {
            let names: Vec<String> = choices.iter().map(|(n, _)| format!("{n:?}")).collect();
            errors.push(ConfigError::new(
                key,
                format!("{text:?}"),
                format!("must be one of {}", names.join(", ")),
            ));
            default
        }
    }
}

pub(super) fn strategy_kind(key: &str, name: &str, errors: &mut Errors) -> StrategyKind {
    StrategyKind::parse(name).unwrap_or_else(|| {
        errors.push(ConfigError::new(
            key,
            format!("{name:?}"),
            format!(
                "unknown strategy; known: {}",
                StrategyKind::names().join(", ")
            ),
        ));
        StrategyKind::RoundRobin
    })
}
