//! Used share of a file system, for the disk alert.

use std::path::Path;

/// `(used bytes, total bytes)` of the file system holding `path`.
pub fn usage(path: &Path) -> Option<(u64, u64)> {
    crate::sys::disk_usage(path)
}
