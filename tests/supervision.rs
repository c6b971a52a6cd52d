//! Supervision and memory policy against real processes: a server over its memory limit is
//! restarted (OOM-killed and recognised where the kernel enforces the limit), helpers a server
//! forks die with it, logs rotate, children get only the environment they are given, and a
//! deployment over the memory budget is refused.

mod common;

use common::{alive, children_of, http, wait_for, FleetDir, Sections};
use serde_json::{json, Value};
use std::time::Duration;

fn admin_get(dir: &FleetDir, path: &str) -> Value {
    let out = std::process::Command::new("curl")
        .args(["-s", "-H"])
        .arg(format!("Authorization: Bearer {}", dir.admin_token()))
        .arg(format!("{}{path}", dir.admin_base()))
        .output()
        .expect("curl");
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn server<'a>(servers: &'a Value, id: &str) -> Option<&'a Value> {
    servers.as_array()?.iter().find(|s| s["id"] == id)
}

/// (pid, cmdline) of every descendant of `pid`.
fn descendants(pid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        for kid in children_of(p) {
            let cmd = std::fs::read(format!("/proc/{kid}/cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            out.push((kid, cmd));
            todo.push(kid);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_over_its_memory_limit_is_restarted_and_its_sessions_get_404() {
    let dir = FleetDir::with_sections(
        &[("hog", 2)],
        &[],
        &Sections {
            fleet: "memory_interval = \"300ms\"",
            categories: vec![(
                "hog",
                "max_memory_mb = 64\ncommand = [\"mcp-fleet\", \"backend\", \"--port\", \"{port}\", \"--category\", \"{category}\", \"--debug-tools\"]".into(),
            )],
            ..Sections::default()
        },
    );
    let _serve = dir.serve();
    let c = http::client();
    let url = format!("{}/mcp/hog", dir.base());
    let health = common::plain::blocking_get(&format!("{}/health", dir.base())).expect("health");
    let layer = serde_json::from_str::<Value>(&health.1).expect("json")["memory_enforcement"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    println!("memory enforcement on this machine: {layer}");
    assert!(!layer.is_empty(), "{}", health.1);

    let (sid, body) = http::open_session(&c, &url).await;
    let port: u16 = body
        .split("mcp-fleet-backend hog:")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .and_then(|p| p.parse().ok())
        .expect("server port");
    let servers = admin_get(&dir, "/servers");
    let victim = servers
        .as_array()
        .and_then(|l| l.iter().find(|s| s["port"] == port))
        .expect("victim")
        .clone();
    let victim_id = victim["id"].as_str().expect("id").to_string();
    let old_pid = victim["pid"].as_u64().expect("pid");

    // 100 MiB on a 64 MiB server: the kernel kills it mid-allocation, or the watcher restarts it.
    let crossed = std::time::Instant::now();
    let (status, _) = http::session_tool(&c, &url, &sid, "grow_memory", json!({"mb": 100})).await;
    println!("grow_memory answered {status}");
    // The other server keeps serving meanwhile.
    for i in 0..10 {
        let (status, body) = http::stateless_call(&c, &url, &format!("x{i}")).await;
        assert_eq!(status, 200, "{body}");
    }
    wait_for("the hog to be restarted", Duration::from_secs(30), || {
        let s = admin_get(&dir, "/servers");
        let v = server(&s, &victim_id)?;
        (v["state"] == "running" && v["pid"].as_u64().is_some_and(|p| p != old_pid)).then_some(())
    });
    println!("over the limit to serving again: {:?}", crossed.elapsed());
    let memory = admin_get(&dir, "/memory");
    let events = memory["events"].as_array().cloned().unwrap_or_default();
    let actions: Vec<&str> = events
        .iter()
        .filter(|e| e["id"] == victim_id.as_str())
        .filter_map(|e| e["action"].as_str())
        .collect();
    println!("policy events for {victim_id}: {actions:?}");
    if layer.starts_with("cgroup") {
        assert!(
            actions.contains(&"oom-kill"),
            "kernel limit active but no OOM kill recognised: {memory}"
        );
        assert_eq!(memory["oom_kills"][&victim_id], 1, "{memory}");
    } else {
        assert!(actions.contains(&"restart"), "{memory}");
    }
    // Its session died with it: 404, so the client re-initializes.
    let (status, _) = http::session_tool(&c, &url, &sid, "recall", json!({"key": "k"})).await;
    assert_eq!(status, 404);
    let (code, out) = dir.cli(&["memory"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("enforcement:") && out.contains("hog"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_kernel_limit_the_watcher_restarts_a_server_over_its_limit() {
    let dir = FleetDir::with_sections(
        &[("hog", 1)],
        &[],
        &Sections {
            fleet: "memory_interval = \"200ms\"\nkernel_memory_limit = false",
            categories: vec![(
                "hog",
                "max_memory_mb = 48\ncommand = [\"mcp-fleet\", \"backend\", \"--port\", \"{port}\", \"--category\", \"{category}\", \"--debug-tools\"]".into(),
            )],
            ..Sections::default()
        },
    );
    let _serve = dir.serve();
    let c = http::client();
    let url = format!("{}/mcp/hog", dir.base());
    let old_pid = server(&admin_get(&dir, "/servers"), "hog-0").and_then(|s| s["pid"].as_u64());
    let (sid, _) = http::open_session(&c, &url).await;
    let (status, body) = http::session_tool(&c, &url, &sid, "grow_memory", json!({"mb": 80})).await;
    assert_eq!(
        status, 200,
        "without a kernel limit the allocation succeeds: {body}"
    );
    let crossed = std::time::Instant::now();
    wait_for(
        "the watcher to restart the hog",
        Duration::from_secs(30),
        || {
            let s = admin_get(&dir, "/servers");
            let v = server(&s, "hog-0")?;
            (v["state"] == "running" && v["pid"].as_u64() != old_pid).then_some(())
        },
    );
    println!("over the limit to serving again: {:?}", crossed.elapsed());
    let memory = admin_get(&dir, "/memory");
    assert!(
        memory["enforcement"]
            .as_str()
            .is_some_and(|e| e.starts_with("watcher")),
        "{memory}"
    );
    let restart = memory["events"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["action"] == "restart"))
        .cloned()
        .expect("a restart event");
    assert!(restart["bytes"].as_u64() > Some(48 << 20), "{restart}");
    let (status, _) = http::session_tool(&c, &url, &sid, "recall", json!({"key": "k"})).await;
    assert_eq!(status, 404);
}

#[test]
fn stopping_a_server_takes_every_helper_it_forked() {
    let dir = FleetDir::with_sections(
        &[("forky", 1)],
        &[],
        &Sections {
            categories: vec![(
                "forky",
                format!(
                    "command = [\"sh\", \"-c\", \"sleep 3000 & setsid sleep 3001 & exec {} backend --port {{port}} --category forky\"]",
                    common::BIN
                ),
            )],
            ..Sections::default()
        },
    );
    let serve = dir.serve();
    let server_pid = children_of(serve.pid())
        .into_iter()
        .find(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("backend"))
        })
        .expect("server process");
    let helpers: Vec<u32> = wait_for("the helpers", Duration::from_secs(10), || {
        let h: Vec<u32> = descendants(server_pid)
            .into_iter()
            .filter(|(_, c)| c.starts_with("sleep 300"))
            .map(|(p, _)| p)
            .collect();
        (h.len() == 2).then_some(h)
    });
    let (code, out) = dir.cli(&["restart", "forky-0"]);
    assert_eq!(code, 0, "{out}");
    wait_for("the helpers to be gone", Duration::from_secs(10), || {
        helpers.iter().all(|&p| !alive(p)).then_some(())
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_rotate_and_children_get_only_their_environment() {
    let dir = FleetDir::with_sections(
        &[("chatty", 1)],
        &[],
        &Sections {
            fleet: "log_max_size = \"64KiB\"\nlog_keep = 2",
            categories: vec![(
                "chatty",
                format!(
                    "env = {{ GREETING = \"hi-{{id}}\" }}\ncwd = \"work\"\ncommand = [\"sh\", \"-c\", \"echo env=$GREETING cwd=$(pwd) secret=[$SECRET_OF_SERVE]; yes xxxxxxxx | head -c 300000; echo; exec {} backend --port {{port}} --category chatty\"]",
                    common::BIN
                ),
            )],
            ..Sections::default()
        },
    );
    std::fs::create_dir_all(dir.path().join("work")).expect("cwd");
    // serve runs with a secret in its environment; the child must not see it.
    std::env::set_var("SECRET_OF_SERVE", "hunter2");
    let _serve = dir.serve();
    std::env::remove_var("SECRET_OF_SERVE");
    let logs = dir.path().join("logs/chatty");
    let mut names: Vec<String> = std::fs::read_dir(&logs)
        .expect("log dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["chatty-0.log", "chatty-0.log.1", "chatty-0.log.2"]);
    for n in &names {
        let len = std::fs::metadata(logs.join(n)).expect("meta").len();
        assert!(len <= 64 * 1024, "{n}: {len} bytes");
    }
    // The first lines were rotated away; the oldest kept file is full of x's, and nothing ever
    // showed the secret.
    let all: String = names
        .iter()
        .map(|n| std::fs::read_to_string(logs.join(n)).unwrap_or_default())
        .collect();
    assert!(!all.contains("hunter2"));
    assert!(all.contains("xxxx"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_cwd_and_placeholders_reach_the_child() {
    let dir = FleetDir::with_sections(
        &[("envy", 1)],
        &[],
        &Sections {
            categories: vec![(
                "envy",
                format!(
                    "env = {{ GREETING = \"hi-{{id}}-{{port}}\" }}\ncwd = \"work\"\ncommand = [\"sh\", \"-c\", \"echo env=$GREETING cwd=$(pwd) secret=[$SECRET_OF_SERVE]; exec {} backend --port {{port}} --category envy\"]",
                    common::BIN
                ),
            )],
            ..Sections::default()
        },
    );
    std::fs::create_dir_all(dir.path().join("work")).expect("cwd");
    let _serve = dir.serve();
    // stdout and stderr share one pipe, so the log keeps the order they were written in: the
    // shell's line (stdout), then the server's own start-up line (stderr).
    let path = dir.path().join("logs/envy/envy-0.log");
    let log = wait_for("both lines in the log", Duration::from_secs(10), || {
        let log = std::fs::read_to_string(&path).ok()?;
        (log.lines().count() >= 2).then_some(log)
    });
    let first = log.lines().next().unwrap_or_default();
    let second = log.lines().nth(1).unwrap_or_default();
    assert!(second.contains("MCP server listening"), "{log}");
    assert!(first.starts_with("env=hi-envy-0-"), "{first}");
    assert!(
        first.contains(&format!("cwd={}", dir.path().join("work").display())),
        "{first}"
    );
    assert!(first.ends_with("secret=[]"), "{first}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_over_the_memory_budget_is_refused() {
    let dir = FleetDir::with_sections(
        &[("big", 2)],
        &[],
        &Sections {
            fleet: "memory_budget = \"1MiB\"",
            ..Sections::default()
        },
    );
    let _serve = dir.serve_no_wait();
    wait_for(
        "the refusal to be recorded",
        Duration::from_secs(20),
        || {
            let h = admin_get(&dir, "/deployments");
            let d = h
                .as_array()?
                .iter()
                .find(|d| d["kind"] == "startup")?
                .clone();
            Some(d)
        },
    );
    let h = admin_get(&dir, "/deployments");
    let startup = h
        .as_array()
        .and_then(|a| a.iter().find(|d| d["kind"] == "startup"))
        .expect("startup");
    assert_eq!(startup["outcome"], "refused", "{startup}");
    assert!(
        startup["notes"].to_string().contains("fleet.memory_budget"),
        "{startup}"
    );
    assert_eq!(
        admin_get(&dir, "/servers").as_array().map(Vec::len),
        Some(0)
    );
}
