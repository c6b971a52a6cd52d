//! `status`: the per-category table, with the categories serving below their plan marked.

use mcp_fleet::admin::client::{AdminClient, ClientError};
use mcp_fleet::api::Status;
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
    Ok(ExitCode::SUCCESS)
}
