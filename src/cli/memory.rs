//! `memory`: what the fleet's servers take (PSS), by category and for the top 10.

use mcp_fleet::admin::client::{AdminClient, ClientError};
use mcp_fleet::api::{MemoryActionTaken, MemoryReport};
use std::process::ExitCode;
use std::time::Duration;

pub fn run(c: &AdminClient) -> Result<ExitCode, ClientError> {
    let v: MemoryReport = c.call("GET", "/memory", None::<&()>, Duration::from_secs(10))?;
    // One decimal: a built-in server takes under 1 MiB of PSS, which whole MiB show as 0.
    let mib = |b: u64| format!("{:.1}", b as f64 / f64::from(1 << 20));
    let measure = v.measure.label();
    println!("enforcement: {}", v.enforcement);
    println!(
        "machine: {} MiB available of {} MiB",
        mib(v.machine_available_bytes),
        mib(v.machine_total_bytes)
    );
    println!(
        "{:<20} {:>8} {:>10} {:>10} {:>6}",
        "category",
        "servers",
        format!("{measure} MiB"),
        "limit MiB",
        "over"
    );
    for c in &v.categories {
        println!(
            "{:<20} {:>8} {:>10} {:>10} {:>6}",
            c.category,
            c.servers,
            mib(c.bytes),
            mib(c.limit_bytes),
            c.over_limit
        );
    }
    println!("top servers by {measure}:");
    for s in &v.top {
        println!(
            "  {:<24} pid {:>8} {:>6} MiB (limit {} MiB)",
            s.id,
            s.pid,
            mib(s.bytes),
            mib(s.limit_bytes)
        );
    }
    println!("policy actions and OOM kills: {}", v.events.len());
    for e in v.events.iter().rev().take(10) {
        let action = match e.action {
            MemoryActionTaken::Restart => "restart",
            MemoryActionTaken::Alert => "alert",
            MemoryActionTaken::OomKill => "oom-kill",
        };
        println!(
            "  {} {action} ({} MiB, limit {} MiB)",
            e.id,
            e.bytes.map_or_else(|| "-".into(), mib),
            mib(e.limit)
        );
    }
    Ok(ExitCode::SUCCESS)
}
