//! `status`: the per-category table, with the categories serving below their plan marked.

use mcp_fleet::admin::client::{AdminClient, ClientError};
use mcp_fleet::api::{ServerInfo, Status, StdioInfo};
use std::process::ExitCode;
use std::time::Duration;

pub fn run(c: &AdminClient) -> Result<ExitCode, ClientError> {
    let status: Status = c.call("GET", "/status", None::<&()>, Duration::from_secs(10))?;
    println!(
        "{:<20} {:>8} {:>9} {:>8} {:>7}",
        "category", "planned", "deployed", "serving", "failed"
    );
    let mut totals = [0usize; 4];
    let mut below = Vec::new();
    for row in &status.categories {
        let cols = [row.planned, row.deployed, row.serving, row.failed];
        for (t, c) in totals.iter_mut().zip(cols) {
            *t += c;
        }
        let mark = if row.serving < row.planned {
            below.push(row.category.as_str());
            "  below plan"
        } else {
            ""
        };
        println!(
            "{:<20} {:>8} {:>9} {:>8} {:>7}{mark}",
            row.category, cols[0], cols[1], cols[2], cols[3]
        );
    }
    println!(
        "{:<20} {:>8} {:>9} {:>8} {:>7}",
        "total", totals[0], totals[1], totals[2], totals[3]
    );
    if !below.is_empty() {
        println!("below plan: {}", below.join(", "));
    }
    let servers: Vec<ServerInfo> =
        c.call("GET", "/servers", None::<&()>, Duration::from_secs(10))?;
    print_bridges(&servers);
    Ok(ExitCode::SUCCESS)
}

/// The stdio categories' bridges: children, sessions and what became of the children.
fn print_bridges(servers: &[ServerInfo]) {
    let by = StdioInfo::by_category(servers);
    if by.is_empty() {
        return;
    }
    println!();
    println!(
        "{:<20} {:>8} {:>8} {:>7} {:>6} {:>7} {:>4} {:>7} {:>8}",
        "stdio category",
        "children",
        "sessions",
        "spawns",
        "reaps",
        "crashed",
        "oom",
        "refused",
        "outlived"
    );
    for (c, t) in by {
        println!(
            "{c:<20} {:>8} {:>8} {:>7} {:>6} {:>7} {:>4} {:>7} {:>8}",
            t.children,
            t.sessions,
            t.spawns,
            t.reaps,
            t.exits.crashed,
            t.exits.oom,
            t.refused,
            t.outlived
        );
    }
}
