//! `report`: the seed's daily report, from the monitor port.

use super::{endpoint, print_client_error};
use mcp_fleet::admin::client::monitor_get;
use mcp_fleet::api::Report;
use std::path::Path;
use std::process::ExitCode;

pub fn run(path: &Path, as_json: bool) -> ExitCode {
    let endpoint = match endpoint(path) {
        Ok(e) => e,
        Err(code) => return code,
    };
    let v: Report = match monitor_get(&endpoint, "/report") {
        Ok(v) => v,
        Err(e) => return print_client_error(&e),
    };
    if as_json {
        match serde_json::to_string_pretty(&v) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
        return ExitCode::SUCCESS;
    }
    let ms = |x: Option<f64>| x.map_or("-".to_string(), |s| format!("{:.1} ms", s * 1000.0));
    println!(
        "mcp-fleet report: up {}h {}m",
        v.uptime_s / 3600,
        v.uptime_s % 3600 / 60
    );
    println!(
        "{:<20} {:>10} {:>8} {:>10} {:>10} {:>10}",
        "category", "requests", "errors", "p50", "p95", "p99"
    );
    for c in &v.categories {
        println!(
            "{:<20} {:>10} {:>7.2}% {:>10} {:>10} {:>10}",
            c.category,
            c.requests,
            c.error_rate * 100.0,
            ms(c.p50),
            ms(c.p95),
            ms(c.p99)
        );
    }
    println!(
        "{:<20} {:>10} {:>7.2}% {:>10} {:>10} {:>10}",
        "total",
        v.requests,
        v.error_rate * 100.0,
        ms(v.p50),
        ms(v.p95),
        ms(v.p99)
    );
    println!(
        "restarts {}, OOM kills {}, alerts fired {} ({} firing now), reloads {} applied / {} invalid, deployments {}",
        v.restarts, v.oom_kills, v.alerts_fired, v.alerts_firing,
        v.reloads.applied, v.reloads.invalid, v.deployments
    );
    ExitCode::SUCCESS
}
