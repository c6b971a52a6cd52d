//! The `mcp-fleet` command line: thin wrappers over the library, with errors reported with
//! context here at the edge.

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use mcp_fleet::config::{self, LoadError};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "mcp-fleet",
    version,
    about = "Run and front a fleet of MCP servers"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "human")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
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

fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Prints a load error and gives the exit code `check` documents: 2 for a config that is wrong.
fn report_load_error(e: &LoadError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
}

fn ephemeral_range() -> Option<std::ops::RangeInclusive<u16>> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut parts = text.split_whitespace().map(|p| p.parse::<u16>().ok());
    let (lo, hi) = (parts.next()??, parts.next()??);
    Some(lo..=hi)
}

fn warn_ephemeral(config: &config::ValidConfig) -> Vec<String> {
    ephemeral_range()
        .map(|r| config::ephemeral_warnings(config, r))
        .unwrap_or_default()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config: path } => match config::load(&path) {
            Ok(config) => {
                for w in warn_ephemeral(&config) {
                    eprintln!("warning: {w}");
                }
                let servers: usize = config.categories.iter().map(|c| c.servers as usize).sum();
                let statics: usize = config
                    .categories
                    .iter()
                    .map(|c| c.static_backends.len())
                    .sum();
                println!(
                    "{}: ok ({} categories, {servers} spawned servers, {statics} static backends)",
                    path.display(),
                    config.categories.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => report_load_error(&e),
        },
        Command::Serve { config: path } => {
            init_logging(cli.log_format, "info");
            let config = match config::load(&path) {
                Ok(c) => c,
                Err(e) => return report_load_error(&e),
            };
            for w in warn_ephemeral(&config) {
                tracing::warn!("{w}");
            }
            match mcp_fleet::serve::run(config)
                .with_context(|| format!("cannot serve {}", path.display()))
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Backend {
            port,
            category,
            host,
            debug_tools,
            delay_ms,
        } => {
            init_logging(cli.log_format, "warn");
            // One thread: a fleet runs a thousand of these, so each must stay small.
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let options = mcp_fleet::backend::BackendOptions {
                listen: SocketAddr::new(host, port),
                category,
                debug_tools,
                delay: std::time::Duration::from_millis(delay_ms),
            };
            match runtime.block_on(mcp_fleet::backend::run(options)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
