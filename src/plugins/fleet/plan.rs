//! The one owner of spawned membership: turns the config into the list of servers to run, in
//! deployment order (categories in port order, servers in port order), with every variable of
//! their command ({port}, {id}, ...) filled in; gives the registry the members it publishes; and
//! says what a reloaded plan adds, removes and changes.

use super::child::{resolve_program, Launch};
use super::FleetError;
use crate::config::ValidConfig;
use crate::upstream::server_id;
use crate::upstream::SpawnedMember;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// What a reload changes in the plan, by server id.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PlanDiff {
    pub added: Vec<Arc<str>>,
    pub removed: Vec<Arc<str>>,
    /// Running with another address or command than the new plan's: drained, stopped and
    /// started anew.
    pub changed: Vec<Arc<str>>,
}

#[derive(Debug, Clone)]
pub struct ServerSpec {
    pub id: Arc<str>,
    pub category: Arc<str>,
    pub addr: SocketAddr,
    pub launch: Launch,
    /// `max_memory_mb`, in bytes.
    pub memory_limit: u64,
    pub memory_action: crate::config::MemoryAction,
    /// Bridged by this process (`transport = "stdio"`): `launch` is the child's command.
    pub stdio: Option<crate::config::StdioConfig>,
    /// The category's MCP path (what a bridge serves).
    pub mcp_path: Arc<str>,
}

pub fn plan(config: &ValidConfig) -> Result<Vec<ServerSpec>, FleetError> {
    if !config.fleet.enabled {
        return Ok(Vec::new());
    }
    let config_dir = config
        .source
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| p.to_path_buf())
        .unwrap_or_else(|| ".".into());
    let mut specs = Vec::new();
    for category in &config.categories {
        let Some(first) = category.command.first() else {
            continue;
        };
        let program =
            resolve_program(first, &config_dir).map_err(|source| FleetError::Program {
                program: first.clone(),
                source,
            })?;
        // `mcp-fleet`, or this binary by its path.
        let is_this_binary = first == crate::config::SELF_COMMAND
            || std::env::current_exe()
                .and_then(|me| Ok(me.canonicalize()? == program.canonicalize()?))
                .unwrap_or(false);
        for (index, port) in category.spawned_ports().enumerate() {
            let id = server_id(&category.name, index);
            let host = config.fleet.host.to_string();
            let fill = |word: &str| {
                word.replace("{port}", &port.to_string())
                    .replace("{category}", &category.name)
                    .replace("{id}", &id)
                    .replace("{host}", &host)
            };
            let mut args: Vec<String> = category.command[1..].iter().map(|w| fill(w)).collect();
            let mut env = super::child::base_env();
            for (k, v) in config.fleet.env.iter().chain(&category.env) {
                env.retain(|(name, _)| name != k);
                env.push((k.clone(), fill(v)));
            }
            // The built-in server listens on loopback unless told otherwise; tell it the host.
            if first == crate::config::SELF_COMMAND && !args.iter().any(|a| a == "--host") {
                args.push("--host".into());
                args.push(host.clone());
            }
            let builtin = is_this_binary && args.first().is_some_and(|a| a == "backend");
            specs.push(ServerSpec {
                addr: SocketAddr::new(config.fleet.host, port),
                category: category.name.as_str().into(),
                memory_limit: category.max_memory_mb << 20,
                memory_action: category.memory_action,
                stdio: category.stdio,
                mcp_path: category.mcp_path.as_str().into(),
                launch: Launch {
                    program: program.clone(),
                    args,
                    cwd: category.cwd.clone().unwrap_or_else(|| config_dir.clone()),
                    env,
                    log_max_size: config.fleet.log_max_size,
                    log_keep: config.fleet.log_keep,
                    server_logs: config.fleet.server_logs,
                    builtin,
                    log_file: config
                        .fleet
                        .log_dir
                        .join(&category.name)
                        .join(format!("{id}.log")),
                },
                id: id.into(),
            });
        }
    }
    Ok(specs)
}

/// The members the registry publishes for a plan.
pub fn members(specs: &[ServerSpec]) -> Vec<SpawnedMember> {
    specs
        .iter()
        .map(|s| SpawnedMember {
            id: Arc::clone(&s.id),
            category: Arc::clone(&s.category),
            addr: s.addr,
        })
        .collect()
}

/// Whether a running server already is what `planned` describes (the rest of a spec, memory
/// policy and log rotation, is read from the plan or applies at the next start; a bridge's
/// `max_sessions` and `idle_timeout` are handed to it by `Fleet::replan`).
fn same_process(running: &ServerSpec, planned: &ServerSpec) -> bool {
    running.addr == planned.addr
        && running.stdio.map(|s| (s.isolation, s.start))
            == planned.stdio.map(|s| (s.isolation, s.start))
        && running.mcp_path == planned.mcp_path
        && running.launch.program == planned.launch.program
        && running.launch.args == planned.launch.args
        && running.launch.cwd == planned.launch.cwd
        && running.launch.env == planned.launch.env
}

/// What going from plan `old` to `new` means, given the servers `running` now (with the spec
/// each was started with). A server is changed when it runs with another process than the new
/// plan describes, whatever the old plan said: so a server taken out and put back before its
/// drain ended is not changed (it keeps running and leaves its drain), and one whose command
/// was changed and changed back is not replaced.
pub fn diff(
    old: &[ServerSpec],
    new: &[ServerSpec],
    running: &BTreeMap<&Arc<str>, &ServerSpec>,
) -> PlanDiff {
    let in_old = |id: &Arc<str>| old.iter().any(|o| o.id == *id);
    let in_new = |id: &Arc<str>| new.iter().any(|n| n.id == *id);
    PlanDiff {
        added: new
            .iter()
            .filter(|n| !in_old(&n.id))
            .map(|n| Arc::clone(&n.id))
            .collect(),
        removed: old
            .iter()
            .filter(|o| !in_new(&o.id))
            .map(|o| Arc::clone(&o.id))
            .collect(),
        changed: new
            .iter()
            .filter(|n| running.get(&n.id).is_some_and(|r| !same_process(r, n)))
            .map(|n| Arc::clone(&n.id))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn variables_are_filled_in_port_order() {
        let config = crate::config::parse(
            r#"
[fleet]
log_dir = "/var/log/fleet"
[categories.b]
ports = "41010-41011"
command = ["./srv", "--listen", "{host}:{port}", "--name", "{id}/{category}"]
[categories.a]
ports = "41000-41002"
servers = 2
"#,
            Path::new("/etc/fleet/f.toml"),
            Path::new("/etc/fleet"),
        )
        .expect("valid");
        let specs = plan(&config).expect("plan");
        let ids: Vec<_> = specs.iter().map(|s| s.id.as_ref()).collect();
        assert_eq!(ids, ["a-0", "a-1", "b-0", "b-1"]);
        let b1 = &specs[3];
        assert_eq!(b1.launch.program, Path::new("/etc/fleet/./srv"));
        assert_eq!(
            b1.launch.args,
            ["--listen", "127.0.0.1:41011", "--name", "b-1/b"]
        );
        assert_eq!(b1.launch.log_file, Path::new("/var/log/fleet/b/b-1.log"));
        let a0 = &specs[0];
        assert_eq!(
            a0.launch.args,
            [
                "backend",
                "--port",
                "41000",
                "--category",
                "a",
                "--host",
                "127.0.0.1"
            ]
        );
    }
}
