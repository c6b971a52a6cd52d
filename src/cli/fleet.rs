//! `deploy`, `retry-failed`, `restart`: orders to the fleet, each answered with a history entry.

use mcp_fleet::admin::client::AdminClient;
use mcp_fleet::admin::client::ClientError;
use mcp_fleet::api::{DeployRequest, Entry};
use std::process::ExitCode;
use std::time::Duration;

/// Orders that start servers may take minutes at 1000 servers.
const ORDER_TIMEOUT: Duration = Duration::from_secs(600);

fn print_entry(d: &Entry) -> ExitCode {
    println!(
        "{:?}: {} deployed, {} already running, {} failed ({} ms)",
        d.kind,
        d.deployed.len(),
        d.already.len(),
        d.failed.len(),
        d.duration_ms
    );
    for f in &d.failed {
        println!("  failed {}: {}", f.id, f.error);
    }
    for n in &d.notes {
        println!("  {n}");
    }
    if d.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

pub fn deploy(
    c: &AdminClient,
    batch_size: usize,
    start_index: usize,
) -> Result<ExitCode, ClientError> {
    let order = DeployRequest {
        batch_size,
        start_index,
    };
    let d: Entry = c.call("POST", "/deploy", Some(&order), ORDER_TIMEOUT)?;
    Ok(print_entry(&d))
}

pub fn retry_failed(c: &AdminClient) -> Result<ExitCode, ClientError> {
    let d: Entry = c.call("POST", "/retry-failed", None::<&()>, ORDER_TIMEOUT)?;
    Ok(print_entry(&d))
}

pub fn restart(c: &AdminClient, id: &str) -> Result<ExitCode, ClientError> {
    let d: Entry = c.call(
        "POST",
        &format!("/servers/{id}/restart"),
        None::<&()>,
        ORDER_TIMEOUT,
    )?;
    Ok(print_entry(&d))
}
