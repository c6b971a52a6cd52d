//! The `mcp-fleet` binary: parses the command line and hands it to `cli`, one file per
//! subcommand.

mod cli;

use clap::Parser;
use cli::{admin_call, Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve { .. } | Command::Backend { .. }) {
        // Command-line tools die quietly when their output pipe closes (`mcp-fleet status |
        // head`), as Unix tools do; Rust ignores SIGPIPE, which turns that into a panic on
        // `println!`. Not for `serve` and `backend`: they must survive a client hanging up.
        mcp_fleet::sys::default_sigpipe();
    }
    match cli.command {
        Command::Serve { config } => cli::serve::serve(cli.log_format, &config),
        Command::Backend {
            port,
            category,
            host,
            debug_tools,
            delay_ms,
        } => cli::serve::backend(cli.log_format, port, category, host, debug_tools, delay_ms),
        Command::Check { config } => cli::check::check(&config),
        Command::Keys => cli::check::keys(),
        Command::Deploy {
            config,
            batch_size,
            start_index,
        } => admin_call(&config, |c| cli::fleet::deploy(c, batch_size, start_index)),
        Command::RetryFailed { config } => admin_call(&config, cli::fleet::retry_failed),
        Command::Restart { id, config } => admin_call(&config, |c| cli::fleet::restart(c, &id)),
        Command::Status { config } => admin_call(&config, cli::status::run),
        Command::Memory { config } => admin_call(&config, cli::memory::run),
        Command::Report { config, json } => cli::report::run(&config, json),
        Command::Reload { config } => admin_call(&config, |c| Ok(cli::reload::run(c))),
        Command::ReapCgroups { dirs } => {
            mcp_fleet::plugins::fleet::reaper::run(&dirs);
            ExitCode::SUCCESS
        }
    }
}
