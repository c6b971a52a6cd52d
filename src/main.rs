//! The `mcp-fleet` command line: thin wrappers over the library, with errors reported with
//! context here at the edge.

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use mcp_fleet::admin::client::AdminClient;
use mcp_fleet::config::{self, LoadError};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

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
    /// Deploy servers by global index through the running instance (the seed's deploy-batch).
    Deploy {
        #[arg(long, default_value = "conf/fleet.toml")]
        config: PathBuf,
        #[arg(long)]
        batch_size: usize,
        #[arg(long, default_value_t = 0)]
        start_index: usize,
    },
    /// Per-category table of the running instance: planned, deployed, healthy, failed.
    Status {
        #[arg(long, default_value = "conf/fleet.toml")]
        config: PathBuf,
    },
    /// Memory of the running instance: per category, top 10 servers, policy actions, OOM kills.
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
    /// Validate the config, then make the running instance reload it (SIGHUP) and print what
    /// changed.
    Reload {
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

/// Loads the config, builds the admin client, runs `f`; errors are printed with their context.
fn admin_call(
    path: &Path,
    f: impl FnOnce(&AdminClient) -> Result<ExitCode, mcp_fleet::admin::client::ClientError>,
) -> ExitCode {
    let config = match config::load(path) {
        Ok(c) => c,
        Err(e) => return report_load_error(&e),
    };
    match AdminClient::from_config(&config).and_then(|c| f(&c)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print_error(status: u16, v: &serde_json::Value) -> ExitCode {
    eprintln!(
        "error: the instance answered {status}: {}",
        v["error"].as_str().unwrap_or(&v.to_string())
    );
    for e in v["errors"].as_array().into_iter().flatten() {
        eprintln!("  - {}", e.as_str().unwrap_or_default());
    }
    ExitCode::FAILURE
}

fn print_deployment(status: u16, v: &serde_json::Value) -> ExitCode {
    if status != 200 {
        return print_error(status, v);
    }
    let list = |k: &str| v[k].as_array().map_or(0, Vec::len);
    println!(
        "{}: {} deployed, {} already running, {} failed ({} ms)",
        v["kind"].as_str().unwrap_or("deployment"),
        list("deployed"),
        list("already"),
        list("failed"),
        v["duration_ms"].as_u64().unwrap_or(0)
    );
    for f in v["failed"].as_array().into_iter().flatten() {
        println!(
            "  failed {}: {}",
            f["id"].as_str().unwrap_or("?"),
            f["error"].as_str().unwrap_or("?")
        );
    }
    if list("failed") > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn report(path: &Path, as_json: bool) -> ExitCode {
    let config = match config::load(path) {
        Ok(c) => c,
        Err(e) => return report_load_error(&e),
    };
    let mut addr = config.monitor_listen;
    if addr.ip().is_unspecified() {
        addr.set_ip([127, 0, 0, 1].into());
    }
    let got = mcp_fleet::admin::client::fetch_json(addr, "/report");
    let v = match got {
        Ok(v) => v,
        Err(e) => {
            eprintln!(
                "error: mcp-fleet is not running for {} (nothing answers on monitor.listen {addr}): {e}",
                path.display()
            );
            return ExitCode::FAILURE;
        }
    };
    if as_json {
        println!("{v:#}");
        return ExitCode::SUCCESS;
    }
    let ms = |x: &serde_json::Value| {
        x.as_f64()
            .map_or("-".to_string(), |s| format!("{:.1} ms", s * 1000.0))
    };
    let up = v["uptime_s"].as_u64().unwrap_or(0);
    println!("mcp-fleet report: up {}h {}m", up / 3600, up % 3600 / 60);
    println!(
        "{:<20} {:>10} {:>8} {:>10} {:>10} {:>10}",
        "category", "requests", "errors", "p50", "p95", "p99"
    );
    for c in v["categories"].as_array().into_iter().flatten() {
        println!(
            "{:<20} {:>10} {:>7.2}% {:>10} {:>10} {:>10}",
            c["category"].as_str().unwrap_or("?"),
            c["requests"].as_u64().unwrap_or(0),
            c["error_rate"].as_f64().unwrap_or(0.0) * 100.0,
            ms(&c["p50"]),
            ms(&c["p95"]),
            ms(&c["p99"])
        );
    }
    println!(
        "{:<20} {:>10} {:>7.2}% {:>10} {:>10} {:>10}",
        "total",
        v["requests"].as_u64().unwrap_or(0),
        v["error_rate"].as_f64().unwrap_or(0.0) * 100.0,
        ms(&v["p50"]),
        ms(&v["p95"]),
        ms(&v["p99"])
    );
    println!(
        "restarts {}, OOM kills {}, alerts fired {} ({} firing now), reloads {} applied / {} invalid, deployments {}",
        v["restarts"], v["oom_kills"], v["alerts_fired"], v["alerts_firing"],
        v["reloads"]["applied"], v["reloads"]["invalid"], v["deployments"]
    );
    ExitCode::SUCCESS
}

/// `mcp-fleet reload`: validate, signal the instance named by the pid file, report the outcome
/// from its deployment history.
fn reload(path: &Path) -> ExitCode {
    let config = match config::load(path) {
        Ok(c) => c,
        Err(e) => return report_load_error(&e),
    };
    let pid_file = config.fleet.state_dir.join(mcp_fleet::serve::PID_FILE);
    let pid: Option<i32> = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|t| t.trim().parse().ok());
    let Some(pid) = pid.filter(|p| std::path::Path::new(&format!("/proc/{p}")).exists()) else {
        eprintln!(
            "error: mcp-fleet is not running for {} (no live pid in {})",
            path.display(),
            pid_file.display()
        );
        return ExitCode::FAILURE;
    };
    let client = AdminClient::from_config(&config).ok();
    let last_seq = client
        .as_ref()
        .and_then(|c| {
            c.call("GET", "/deployments", None, Duration::from_secs(5))
                .ok()
        })
        .and_then(|(_, v)| {
            v.as_array()
                .and_then(|a| a.last())
                .and_then(|d| d["seq"].as_u64())
        })
        .unwrap_or(0);
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    if !sent {
        eprintln!("error: cannot signal pid {pid}");
        return ExitCode::FAILURE;
    }
    println!("{}: valid; sent SIGHUP to pid {pid}", path.display());
    let Some(client) = client else {
        println!("(no admin token readable here: see the instance's log for what changed)");
        return ExitCode::SUCCESS;
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if let Ok((200, v)) = client.call("GET", "/deployments", None, Duration::from_secs(5)) {
            let entry =
                v.as_array().into_iter().flatten().find(|d| {
                    d["kind"] == "reload" && d["seq"].as_u64().is_some_and(|s| s > last_seq)
                });
            if let Some(d) = entry {
                println!("reload {}:", d["outcome"].as_str().unwrap_or("?"));
                for n in d["notes"].as_array().into_iter().flatten() {
                    println!("  {}", n.as_str().unwrap_or_default());
                }
                if d["notes"].as_array().is_none_or(Vec::is_empty) {
                    println!("  (no changes)");
                }
                return if d["outcome"] == "applied" {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                };
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("(the instance did not report the reload within 30 s: see its log)");
    ExitCode::SUCCESS
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

/// Command-line tools die quietly when their output pipe closes (`mcp-fleet status | head`), as
/// Unix tools do; Rust's runtime ignores SIGPIPE, which turns that into a panic on `println!`.
/// Only for the one-shot commands: `serve` and `backend` must survive a client hanging up.
fn default_sigpipe() {
    #[allow(unsafe_code)]
    // SAFETY: signal(2) with SIG_DFL installs no handler code; called before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve { .. } | Command::Backend { .. }) {
        default_sigpipe();
    }
    match cli.command {
        Command::Deploy {
            config,
            batch_size,
            start_index,
        } => admin_call(&config, |c| {
            let body = serde_json::json!({"batch_size": batch_size, "start_index": start_index});
            let (status, v) = c.call("POST", "/deploy", Some(&body), Duration::from_secs(600))?;
            Ok(print_deployment(status, &v))
        }),
        Command::Status { config } => admin_call(&config, |c| {
            let (status, v) = c.call("GET", "/status", None, Duration::from_secs(10))?;
            if status != 200 {
                return Ok(print_error(status, &v));
            }
            println!(
                "{:<20} {:>8} {:>9} {:>8} {:>7}",
                "category", "planned", "deployed", "healthy", "failed"
            );
            let mut totals = [0u64; 4];
            for row in v["categories"].as_array().into_iter().flatten() {
                let n = |k: &str| row[k].as_u64().unwrap_or(0);
                let cols = [n("planned"), n("deployed"), n("healthy"), n("failed")];
                for (t, c) in totals.iter_mut().zip(cols) {
                    *t += c;
                }
                println!(
                    "{:<20} {:>8} {:>9} {:>8} {:>7}",
                    row["category"].as_str().unwrap_or("?"),
                    cols[0],
                    cols[1],
                    cols[2],
                    cols[3]
                );
            }
            println!(
                "{:<20} {:>8} {:>9} {:>8} {:>7}",
                "total", totals[0], totals[1], totals[2], totals[3]
            );
            Ok(ExitCode::SUCCESS)
        }),
        Command::Memory { config } => admin_call(&config, |c| {
            let (status, v) = c.call("GET", "/memory", None, Duration::from_secs(10))?;
            if status != 200 {
                return Ok(print_error(status, &v));
            }
            let mib = |v: &serde_json::Value| v.as_u64().unwrap_or(0) >> 20;
            println!("enforcement: {}", v["enforcement"].as_str().unwrap_or("?"));
            println!(
                "machine: {} MiB available of {} MiB",
                mib(&v["machine_available_bytes"]),
                mib(&v["machine_total_bytes"])
            );
            println!(
                "{:<20} {:>8} {:>10} {:>10} {:>6}",
                "category", "servers", "rss MiB", "limit MiB", "over"
            );
            for c in v["categories"].as_array().into_iter().flatten() {
                println!(
                    "{:<20} {:>8} {:>10} {:>10} {:>6}",
                    c["category"].as_str().unwrap_or("?"),
                    c["servers"].as_u64().unwrap_or(0),
                    mib(&c["rss_bytes"]),
                    mib(&c["limit_bytes"]),
                    c["over_limit"].as_u64().unwrap_or(0)
                );
            }
            println!("top servers by resident memory:");
            for s in v["top"].as_array().into_iter().flatten() {
                println!(
                    "  {:<24} pid {:>8} {:>6} MiB (limit {} MiB)",
                    s["id"].as_str().unwrap_or("?"),
                    s["pid"].as_u64().unwrap_or(0),
                    mib(&s["rss_bytes"]),
                    mib(&s["limit_bytes"])
                );
            }
            let events = v["events"].as_array().map_or(0, Vec::len);
            println!("policy actions and OOM kills: {events}");
            for e in v["events"].as_array().into_iter().flatten().rev().take(10) {
                println!(
                    "  {} {} ({} MiB, limit {} MiB)",
                    e["id"].as_str().unwrap_or("?"),
                    e["action"].as_str().unwrap_or("?"),
                    mib(&e["bytes"]),
                    mib(&e["limit"])
                );
            }
            Ok(ExitCode::SUCCESS)
        }),
        Command::Report { config: path, json } => report(&path, json),
        Command::RetryFailed { config } => admin_call(&config, |c| {
            let (status, v) = c.call("POST", "/retry-failed", None, Duration::from_secs(600))?;
            Ok(print_deployment(status, &v))
        }),
        Command::Restart { id, config } => admin_call(&config, |c| {
            let (status, v) = c.call(
                "POST",
                &format!("/servers/{id}/restart"),
                None,
                Duration::from_secs(600),
            )?;
            Ok(print_deployment(status, &v))
        }),
        Command::Reload { config: path } => reload(&path),
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
