//! `[session]`: the key files session ids are sealed with.

use super::super::defaults as d;
use super::super::fields::resolve;
use super::super::model::SessionConfig;
use super::super::raw::RawSession;
use std::path::Path;

pub(in crate::config) fn session(s: &RawSession, state_dir: &Path, base: &Path) -> SessionConfig {
    SessionConfig {
        key_file: s
            .key_file
            .as_deref()
            .map_or_else(|| state_dir.join(d::SESSION_KEY_FILE), |p| resolve(base, p)),
        generated: s.key_file.is_none(),
        previous_key_files: s
            .previous_key_files
            .iter()
            .flatten()
            .map(|p| resolve(base, p))
            .collect(),
    }
}
