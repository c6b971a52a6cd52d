//! `reload`: `POST /reload` to the running instance and its answer, printed. Exit 0 when the
//! config was applied, 2 when the instance refused it (its errors are printed), 1 when the
//! outcome is unknown (nothing answered, or the answer was cut).

use mcp_fleet::admin::client::{AdminClient, ClientError};
use mcp_fleet::api::ReloadReport;
use std::process::ExitCode;
use std::time::Duration;

/// A reload answers once the new snapshot is published (deployments go on after it); the
/// bound is for an instance that is stuck.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(60);

pub fn run(c: &AdminClient) -> ExitCode {
    match c.call::<ReloadReport>("POST", "/reload", None::<&()>, RELOAD_TIMEOUT) {
        Ok(r) => {
            println!("reload applied (history #{}):", r.seq);
            for line in &r.reread {
                println!("  {line}");
            }
            for ch in &r.changes {
                println!("  {ch}");
            }
            for ch in &r.needs_restart {
                println!(
                    "  {ch}: needs a restart of `mcp-fleet serve` ({} still in force)",
                    ch.old
                );
            }
            if r.changes.is_empty() && r.needs_restart.is_empty() && r.reread.is_empty() {
                println!("  (no changes)");
            }
            if !(r.added.is_empty() && r.removed.is_empty() && r.replaced.is_empty()) {
                println!(
                    "  servers: {} added, {} removed, {} replaced; {} draining",
                    r.added.len(),
                    r.removed.len(),
                    r.replaced.len(),
                    r.draining
                );
            }
            ExitCode::SUCCESS
        }
        Err(e @ ClientError::Refused { status: 400, .. }) => {
            super::print_client_error(&e);
            eprintln!("reload refused: the running configuration is unchanged");
            ExitCode::from(2)
        }
        Err(e) => {
            super::print_client_error(&e);
            eprintln!("the outcome of the reload is unknown: see the instance's log");
            ExitCode::FAILURE
        }
    }
}
