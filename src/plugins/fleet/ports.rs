//! Keeping the kernel from handing the fleet's ports to outgoing connections. Ports 50000-50999
//! lie inside Linux's default ephemeral range, so any outgoing connection (the proxy's own and the
//! readiness probes included) can take a server's port before it binds. Listing the ranges in
//! `net.ipv4.ip_local_reserved_ports` stops that; this module merges them into whatever is already
//! reserved, when the config asks for it.

use std::ops::RangeInclusive;
use std::path::Path;

const RESERVED: &str = "/proc/sys/net/ipv4/ip_local_reserved_ports";

/// Parses the kernel's list, e.g. `"8080,50000-50999"`.
fn parse(text: &str) -> Vec<RangeInclusive<u16>> {
    text.trim()
        .split(',')
        .filter(|s| !s.is_empty())
        .filter_map(|part| match part.split_once('-') {
            Some((a, b)) => Some(a.trim().parse().ok()?..=b.trim().parse().ok()?),
            None => {
                let p = part.trim().parse().ok()?;
                Some(p..=p)
            }
        })
        .collect()
}

fn covered(reserved: &[RangeInclusive<u16>], port: u16) -> bool {
    reserved.iter().any(|r| r.contains(&port))
}

/// The new list, or None when every wanted port is already reserved.
fn merged(current: &str, wanted: &[RangeInclusive<u16>]) -> Option<String> {
    let reserved = parse(current);
    let missing: Vec<_> = wanted
        .iter()
        .filter(|r| (*r).clone().any(|p| !covered(&reserved, p)))
        .collect();
    if missing.is_empty() {
        return None;
    }
    let mut parts: Vec<String> = current
        .trim()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    parts.extend(missing.iter().map(|r| format!("{}-{}", r.start(), r.end())));
    Some(parts.join(","))
}

/// Adds `wanted` to the kernel's reserved ports; Ok(false) when nothing needed adding.
pub fn reserve(wanted: &[RangeInclusive<u16>]) -> std::io::Result<bool> {
    reserve_in(Path::new(RESERVED), wanted)
}

fn reserve_in(file: &Path, wanted: &[RangeInclusive<u16>]) -> std::io::Result<bool> {
    let current = std::fs::read_to_string(file)?;
    match merged(&current, wanted) {
        None => Ok(false),
        Some(list) => std::fs::write(file, list).map(|()| true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_without_losing_existing_entries() {
        assert_eq!(
            merged("8080\n", &[50000..=50999]).as_deref(),
            Some("8080,50000-50999")
        );
        assert_eq!(merged("", &[50000..=50099]).as_deref(), Some("50000-50099"));
        assert_eq!(merged("50000-50999\n", &[50000..=50099]), None);
        assert_eq!(
            merged("50000-50049", &[50000..=50099]).as_deref(),
            Some("50000-50049,50000-50099")
        );
    }

    #[test]
    fn writes_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("reserved");
        std::fs::write(&f, "\n").expect("write");
        assert!(reserve_in(&f, &[41000..=41009]).expect("reserve"));
        assert_eq!(std::fs::read_to_string(&f).expect("read"), "41000-41009");
        assert!(!reserve_in(&f, &[41000..=41009]).expect("again"));
    }
}
