//! Readers of `/proc` the fleet, the memory watcher and the monitor share: cheap enough to read
//! for 1000 servers every few seconds, and `None` where the file is gone (the process exited).

/// Resident memory of a process (every page it maps, shared ones in full).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Proportional set size: each page shared with N processes counts 1/N. A fleet of one binary
/// shares most of its pages, so its RSS sum overstates it many times over; PSS sums to what the
/// fleet really takes.
pub fn pss_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// (MemTotal, MemAvailable) in bytes.
pub fn meminfo() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    Some((field("MemTotal:")?, field("MemAvailable:")?))
}

/// CPU seconds (user + system) of a process.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_has_memory_and_pss_is_at_most_rss() {
        let me = std::process::id();
        let rss = super::rss_bytes(me).expect("rss");
        let pss = super::pss_bytes(me).expect("pss");
        assert!(pss > 0 && pss <= rss, "pss {pss} rss {rss}");
        assert!(super::meminfo().is_some());
        assert!(super::cpu_seconds(me).is_some());
    }
}
