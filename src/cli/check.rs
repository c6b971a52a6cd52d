//! `check` (validate a file) and `keys` (the reload table).

use super::report_load_error;
use mcp_fleet::config;
use std::path::Path;
use std::process::ExitCode;

fn ephemeral_range() -> Option<std::ops::RangeInclusive<u16>> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut parts = text.split_whitespace().map(|p| p.parse::<u16>().ok());
    let (lo, hi) = (parts.next()??, parts.next()??);
    Some(lo..=hi)
}

pub fn warnings(config: &config::ValidConfig) -> Vec<String> {
    let mut out: Vec<String> = ephemeral_range()
        .map(|r| config::ephemeral_warnings(config, r))
        .unwrap_or_default();
    let base = config.source.parent().unwrap_or(Path::new("."));
    out.extend(config::stdio_warnings(config, |program| {
        runnable(program, base)
    }));
    out
}

/// Whether `program` names an executable file: a path (relative ones from the config's
/// folder), or a bare name found in PATH.
fn runnable(program: &str, base: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program == config::SELF_COMMAND {
        return true;
    }
    if program.contains('/') {
        return executable(&base.join(program));
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| executable(&d.join(program))))
}

/// Certificates closer to their end than this are warned about.
const CERT_WARN_DAYS: u64 = 21;

/// The `[proxy.tls]` pair: it must load (chain, key, matching); a warning when it ends soon.
fn tls_check(config: &config::ValidConfig) -> Result<Option<String>, String> {
    use mcp_fleet::proxy::tls;
    let Some(pair) = &config.proxy.tls else {
        return Ok(None);
    };
    let key = tls::load_pair(pair).map_err(|e| e.to_string())?;
    let Some(end) = tls::not_after(&key) else {
        return Ok(None);
    };
    let left = end
        .duration_since(std::time::SystemTime::now())
        .map(|d| d.as_secs() / 86_400);
    Ok(match left {
        Err(_) => Some(format!(
            "proxy.tls.cert {} has expired: clients will refuse it",
            pair.cert.display()
        )),
        Ok(days) if days < CERT_WARN_DAYS => Some(format!(
            "proxy.tls.cert {} expires in {days} days: renew it and reload",
            pair.cert.display()
        )),
        Ok(_) => None,
    })
}

pub fn check(path: &Path) -> ExitCode {
    match config::load(path) {
        Ok(config) => {
            for w in warnings(&config) {
                eprintln!("warning: {w}");
            }
            match tls_check(&config) {
                Ok(Some(w)) => eprintln!("warning: {w}"),
                Ok(None) => {}
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
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
    }
}

/// The README's reload section is this output, pasted between its markers (a test compares).
pub fn keys() -> ExitCode {
    print!("{}", config::keys::markdown());
    ExitCode::SUCCESS
}
