//! The command line: clap's model of it, and one file per subcommand that calls the library or
//! the running instance's API and prints. Errors are reported here, at the edge, with context.

pub mod check;
pub mod fleet;
pub mod memory;
pub mod reload;
pub mod report;
pub mod serve;
pub mod status;

use clap::{Parser, Subcommand, ValueEnum};
use mcp_fleet::admin::client::{AdminClient, ClientError};
use mcp_fleet::config::endpoint::{self, Endpoint};
use mcp_fleet::config::LoadError;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "mcp-fleet",
    version,
    about = "Run and front a fleet of MCP servers"
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "human")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Spawn the fleet and serve MCP through the proxy until SIGTERM or SIGINT.
    Serve {
        #[arg(long, default_value = "conf/fleet.toml")]
        config: PathBuf,
    },
    /// Validate a config without starting anything: exit 0, or print every error and exit 2.
    Check {
        #[arg(long, default_value = "conf/fleet.toml")]
        config: PathBuf,
    },
    /// Print the table of config keys: applied on reload or needing a restart (the README's).
    Keys,
    /// Deploy servers by global index through the running instance (the seed's deploy-batch).
    Deploy {
        #[arg(long, default_value = "conf/fleet.toml")]
        config: PathBuf,
        #[arg(long)]
        batch_size: usize,
        #[arg(long, default_value_t = 0)]
        start_index: usize,
    },
    /// Per-category table of the running instance: planned, deployed, serving, failed.
    Status {
        #[arg(long, default_value = "conf/fleet.toml")]
        config: PathBuf,
    },
    /// Memory of the running instance (PSS): per category, top 10 servers, policy actions, OOM
    /// kills.
    Memory {
        #[arg(long, default_value = "conf/fleet.toml")]
        config: PathBuf,
    },
    /// The seed's daily report of the running instance: uptime, requests and error rate per
    /// category, p50/p95/p99, restarts, OOM kills, alerts, reloads, deployments.
    Report {
        #[arg(long, default_value = "conf/fleet.toml")]
        config: PathBuf,
        /// Print the JSON document instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Start the failed servers of the running instance again.
    RetryFailed {
        #[arg(long, default_value = "conf/fleet.toml")]
        config: PathBuf,
    },
    /// Drain, restart and re-add one server of the running instance.
    Restart {
        /// Server id, e.g. database-7.
        id: String,
        #[arg(long, default_value = "conf/fleet.toml")]
        config: PathBuf,
    },
    /// Make the running instance reload its config (`POST /reload`) and print what changed;
    /// exit 0 when it was applied, 2 when the instance refused it, 1 when the outcome is unknown.
    Reload {
        #[arg(long, default_value = "conf/fleet.toml")]
        config: PathBuf,
    },
    /// The fleet's watchdog (started by `serve`, not by hand): when its stdin closes, kills what
    /// is left in these cgroups and removes them.
    #[command(name = "reap-cgroups", hide = true)]
    ReapCgroups { dirs: Vec<PathBuf> },
    /// Run the built-in MCP server (Streamable HTTP on /mcp).
    Backend {
        #[arg(long)]
        port: u16,
        #[arg(long, default_value = "default")]
        category: String,
        #[arg(long, default_value = "127.0.0.1")]
        host: IpAddr,
        /// Also offer grow_memory (for memory-policy tests).
        #[arg(long)]
        debug_tools: bool,
        /// Delay every echo call by this many milliseconds (a slow server, for tests).
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
    },
}

/// Prints a load error and gives the exit code `check` documents: 2 for a config that is wrong.
pub fn report_load_error(e: &LoadError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
}

/// Where the instance `path` configures answers. A file that does not validate still names it
/// (an operator in the middle of an edit can still see the fleet); that is said on stderr.
pub fn endpoint(path: &Path) -> Result<Endpoint, ExitCode> {
    match endpoint::read(path) {
        Ok((e, None)) => Ok(e),
        Ok((e, Some(why))) => {
            let count = match &why {
                LoadError::Invalid { errors, .. } => format!("{} error(s)", errors.len()),
                _ => "not valid TOML".into(),
            };
            eprintln!(
                "warning: {} does not validate ({count}; `mcp-fleet check` lists them); using admin.listen {} and monitor.listen {} from it",
                path.display(),
                e.admin,
                e.monitor
            );
            Ok(e)
        }
        Err(e) => Err(report_load_error(&e)),
    }
}

/// Finds the instance, makes the admin client, runs `f`; errors are printed with their context.
pub fn admin_call(
    path: &Path,
    f: impl FnOnce(&AdminClient) -> Result<ExitCode, ClientError>,
) -> ExitCode {
    let endpoint = match endpoint(path) {
        Ok(e) => e,
        Err(code) => return code,
    };
    match AdminClient::new(&endpoint).and_then(|c| f(&c)) {
        Ok(code) => code,
        Err(e) => print_client_error(&e),
    }
}

pub fn print_client_error(e: &ClientError) -> ExitCode {
    eprintln!("error: {e}");
    if let ClientError::Refused { body, .. } = e {
        for line in &body.errors {
            eprintln!("  - {line}");
        }
    }
    ExitCode::FAILURE
}
