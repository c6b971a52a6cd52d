//! Process lifecycle of `serve`: SIGTERM drains and exits 0 with every child stopped; SIGKILL
//! leaves no child behind; a server that cannot bind is reported by port and retried.

mod common;

use common::{alive, children_of, wait_for, FleetDir};
use std::time::Duration;

fn spawned_children(serve: u32, expected: usize) -> Vec<u32> {
    wait_for(
        "every server to be a child of serve",
        Duration::from_secs(30),
        || {
            let kids = children_of(serve);
            (kids.len() >= expected).then_some(kids)
        },
    )
}

#[test]
fn sigkill_of_serve_leaves_no_child_alive() {
    let dir = FleetDir::new(&[("alpha", 3), ("beta", 3)], &[]);
    let mut serve = dir.serve();
    let kids = spawned_children(serve.pid(), 6);
    assert!(kids.iter().all(|&k| alive(k)));
    common::signal(serve.pid(), 9);
    let _ = serve.wait_exit(Duration::from_secs(10));
    wait_for(
        "children to die with their parent",
        Duration::from_secs(10),
        || kids.iter().all(|&k| !alive(k)).then_some(()),
    );
}

#[test]
fn sigterm_stops_children_and_exits_zero() {
    let dir = FleetDir::new(&[("alpha", 2), ("beta", 2)], &[]);
    let mut serve = dir.serve();
    let kids = spawned_children(serve.pid(), 4);
    common::signal(serve.pid(), 15);
    assert_eq!(
        serve.wait_exit(Duration::from_secs(20)),
        Some(0),
        "{}",
        dir.log()
    );
    assert!(
        kids.iter().all(|&k| !alive(k)),
        "children left after SIGTERM"
    );
    let log = dir.log();
    assert!(log.contains("all servers stopped"), "{log}");
}

#[test]
fn sigint_is_graceful_too() {
    let dir = FleetDir::new(&[("alpha", 2)], &[]);
    let mut serve = dir.serve();
    let kids = spawned_children(serve.pid(), 2);
    common::signal(serve.pid(), 2);
    assert_eq!(serve.wait_exit(Duration::from_secs(20)), Some(0));
    assert!(kids.iter().all(|&k| !alive(k)));
}

#[test]
fn sighup_reloads_instead_of_killing_serve() {
    let dir = FleetDir::new(&[("alpha", 1)], &[]);
    let mut serve = dir.serve();
    common::signal(serve.pid(), 1);
    // Still answering after the signal was handled.
    wait_for("the SIGHUP to be logged", Duration::from_secs(10), || {
        dir.log().contains("configuration reloaded").then_some(())
    });
    let health = common::plain::blocking_get(&format!("{}/health", dir.base()));
    assert_eq!(health.map(|h| h.0), Some(200));
    assert!(serve.child.try_wait().expect("wait").is_none());
}

#[test]
fn a_taken_port_is_reported_and_retried_not_lost() {
    let dir = FleetDir::new(&[("alpha", 2)], &[]);
    let text = std::fs::read_to_string(dir.config()).expect("config");
    let start: u16 = text
        .split("ports = \"")
        .nth(1)
        .and_then(|s| s.split('-').next())
        .and_then(|s| s.parse().ok())
        .expect("port range");
    // Occupy the second server's port, then free it once the failure is reported.
    let squatter = std::net::TcpListener::bind(("127.0.0.1", start + 1)).expect("squat");
    let serve = dir.serve_no_wait();
    wait_for(
        "the bind failure to be reported",
        Duration::from_secs(30),
        || {
            let log = dir.log();
            (log.contains("alpha-1") && log.contains(&format!("port={}", start + 1))).then_some(())
        },
    );
    drop(squatter);
    wait_for(
        "the retried server to become ready",
        Duration::from_secs(30),
        || {
            let (status, body) = common::plain::blocking_get(&format!("{}/stats", dir.base()))?;
            (status == 200 && body.contains("\"ready\":2")).then_some(())
        },
    );
    drop(serve);
}

/// The built-in server is started without a fork-time hook (`posix_spawn`), so it binds itself
/// to its fleet: told of a parent that is not its own, it refuses to run (that parent is gone,
/// and no death signal would come); started by a fleet, it runs in its server's cgroups, moved
/// there by `serve`.
#[test]
fn the_builtin_server_binds_itself_to_its_fleet() {
    let port = common::free_port().to_string();
    let out = std::process::Command::new(common::BIN)
        .args(["backend", "--port", &port, "--category", "x"])
        .env("MCP_FLEET_PARENT_PID", "1")
        .output()
        .expect("run backend");
    assert!(
        !out.status.success(),
        "it ran for a parent it does not have"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is gone"),
        "{out:?}"
    );

    let dir = FleetDir::new(&[("alpha", 1)], &[]);
    let serve = dir.serve();
    let kid = spawned_children(serve.pid(), 1)[0];
    let environ = std::fs::read(format!("/proc/{kid}/environ")).expect("environ");
    let told = format!("MCP_FLEET_PARENT_PID={}", serve.pid());
    assert!(
        environ.split(|&b| b == 0).any(|v| v == told.as_bytes()),
        "the server was not told its fleet"
    );
    let health = common::plain::blocking_get(&format!("{}/health", dir.base())).expect("health");
    let layer = serde_json::from_str::<serde_json::Value>(&health.1).expect("json")
        ["memory_enforcement"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let cgroups = std::fs::read_to_string(format!("/proc/{kid}/cgroup")).expect("cgroup");
    if layer.starts_with("cgroup") {
        assert!(cgroups.contains("/alpha-0"), "{layer}: {cgroups}");
    } else {
        println!("no cgroups here ({layer}); membership not checked");
    }
}
