//! Reload under traffic, invalid reloads, and the coordinator API with its CLI wrappers, against
//! the real binary and a real fleet.

mod common;

use common::{http, wait_for, FleetDir, Sections};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

async fn admin(dir: &FleetDir, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let c = http::client();
    let mut req = c
        .request(
            method.parse().expect("method"),
            format!("{}{path}", dir.admin_base()),
        )
        .bearer_auth(dir.admin_token());
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("admin call");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn reload_count(dir: &FleetDir) -> usize {
    let out = std::process::Command::new("curl")
        .args(["-s", "-H"])
        .arg(format!("Authorization: Bearer {}", dir.admin_token()))
        .arg(format!("{}/deployments", dir.admin_base()))
        .output()
        .expect("curl");
    serde_json::from_slice::<Value>(&out.stdout)
        .ok()
        .and_then(|v| {
            v.as_array()
                .map(|a| a.iter().filter(|d| d["kind"] == "reload").count())
        })
        .unwrap_or(0)
}

fn stats(dir: &FleetDir) -> Option<Value> {
    let (_, body) = common::plain::blocking_get(&format!("{}/stats", dir.base()))?;
    serde_json::from_str(&body).ok()
}

fn category<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    v["categories"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
}

/// Writes `text` as the config, sends SIGHUP, waits until the reload is recorded.
fn reload_with(dir: &FleetDir, serve_pid: u32, text: &str) {
    std::fs::write(dir.config(), text).expect("write config");
    let before = reload_count(dir);
    common::signal(serve_pid, 1);
    wait_for("the reload to be recorded", Duration::from_secs(20), || {
        (reload_count(dir) > before).then_some(())
    });
}

/// A session and the port of the server that owns it.
async fn open_session(c: &reqwest::Client, url: &str) -> (String, String) {
    let (sid, body) = http::initialize(c, url).await;
    let server = body
        .split("mcp-fleet-backend main:")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_default()
        .to_string();
    (sid, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_traffic_fail_no_request() {
    let dir = FleetDir::with_sections(
        &[("main", 8)],
        &[],
        &Sections {
            proxy: "strategy = \"round-robin\"",
            fleet: "drain_timeout = \"1s\"",
            categories: vec![("main", "servers = 4".into())],
            ..Sections::default()
        },
    );
    let base_config = std::fs::read_to_string(dir.config()).expect("config");
    let serve = dir.serve();
    let pid = serve.pid();
    let c = http::client();
    let url = format!("{}/mcp/main", dir.base());

    // Sessions on every server; those on main-0 and main-1 are never removed.
    let mut sessions = Vec::new();
    for _ in 0..16 {
        let (sid, port) = open_session(&c, &url).await;
        let (status, _) = http::session_tool(
            &c,
            &url,
            &sid,
            "remember",
            json!({"key": "k", "value": port}),
        )
        .await;
        assert_eq!(status, 200);
        sessions.push((sid, port));
    }
    let kept_ports: Vec<String> = {
        let s = stats(&dir).expect("stats");
        category(&s, "main").expect("main")["servers"]
            .as_array()
            .expect("servers")
            .iter()
            .filter(|v| v["id"] == "main-0" || v["id"] == "main-1")
            .map(|v| {
                v["addr"]
                    .as_str()
                    .unwrap_or("")
                    .rsplit(':')
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    };

    // A bounded client loop running through every reload.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (c, url, stop) = (c.clone(), url.clone(), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            while !stop.load(Ordering::Relaxed) && statuses.len() < 200_000 {
                statuses.push(http::stateless_call(&c, &url, "tick").await.0);
            }
            statuses
        })
    };

    let extra_start = common::free_port_block(2);
    let extra = format!(
        "[categories.extra]\nports = \"{extra_start}-{}\"\n",
        extra_start + 1
    );
    let with = |strategy: &str, servers: u16, with_extra: bool| {
        let mut t = base_config
            .replace(
                "strategy = \"round-robin\"",
                &format!("strategy = \"{strategy}\""),
            )
            .replace("servers = 4", &format!("servers = {servers}"));
        if with_extra {
            t.push_str(&extra);
        }
        t
    };
    let steps: [(&str, u16, bool); 10] = [
        ("p2c", 4, false),
        ("p2c", 8, false),
        ("least-connections", 8, false),
        ("least-connections", 8, true),
        ("least-connections", 2, true),
        ("least-connections", 2, false),
        ("round-robin", 2, false),
        ("round-robin", 8, false),
        ("weighted", 8, false),
        ("weighted", 2, false),
    ];
    let mut reloads = 0;
    for round in 0..2 {
        for (strategy, servers, with_extra) in steps {
            reload_with(&dir, pid, &with(strategy, servers, with_extra));
            reloads += 1;
            wait_for("the reload to take effect", Duration::from_secs(30), || {
                let s = stats(&dir)?;
                let main = category(&s, "main")?;
                let main_ok = main["strategy"] == strategy
                    && main["total"] == u64::from(servers)
                    && main["ready"] == u64::from(servers);
                let extra_ok = match category(&s, "extra") {
                    Some(e) => with_extra && e["ready"] == 2,
                    None => !with_extra,
                };
                (main_ok && extra_ok).then_some(())
            });
            // Sessions on the servers that stay keep working through every reload.
            for (sid, port) in sessions.iter().filter(|(_, p)| kept_ports.contains(p)) {
                let (status, body) =
                    http::session_tool(&c, &url, sid, "recall", json!({"key": "k"})).await;
                assert_eq!(status, 200, "round {round}: kept session failed: {body}");
                assert!(body.contains(port.as_str()), "{body}");
            }
        }
    }
    assert_eq!(reloads, 20);
    stop.store(true, Ordering::Relaxed);
    let statuses = traffic.await.expect("traffic task");
    let failed = statuses.iter().filter(|&&s| s != 200).count();
    println!(
        "{} requests during 20 reloads, {failed} failed",
        statuses.len()
    );
    assert!(statuses.len() > 100);
    assert_eq!(failed, 0);

    // Sessions on servers that were removed (and drained) are gone: 404.
    for (sid, port) in sessions.iter().filter(|(_, p)| !kept_ports.contains(p)) {
        let (status, body) = http::session_tool(&c, &url, sid, "recall", json!({"key": "k"})).await;
        assert_eq!(status, 404, "session on removed server {port}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_reload_changes_nothing() {
    let dir = FleetDir::new(&[("main", 2)], &[]);
    let serve = dir.serve();
    let good = std::fs::read_to_string(dir.config()).expect("config");
    let before = stats(&dir).expect("stats");
    let bad = good.replace(
        "[categories.main]",
        "[categories.main]\nservers = 99\ncolour = 1",
    );
    reload_with(&dir, serve.pid(), &bad);
    let after = stats(&dir).expect("stats");
    assert_eq!(before["total"], after["total"]);
    assert_eq!(
        category(&before, "main").map(|c| c["strategy"].clone()),
        category(&after, "main").map(|c| c["strategy"].clone())
    );
    let c = http::client();
    let (status, _) = http::stateless_call(&c, &format!("{}/mcp/main", dir.base()), "x").await;
    assert_eq!(status, 200);
    let (_, history) = admin(&dir, "GET", "/deployments", None).await;
    let last = history
        .as_array()
        .and_then(|a| a.last())
        .cloned()
        .expect("history");
    assert_eq!(last["outcome"], "invalid");
    let notes = last["notes"].to_string();
    assert!(notes.contains("categories.main.colour"), "{notes}");
    assert!(notes.contains("categories.main.servers"), "{notes}");
    assert!(dir.log().contains("reload refused"), "error not logged");
    let metrics =
        common::plain::blocking_get(&format!("http://127.0.0.1:{}/metrics", dir.monitor_port))
            .expect("metrics");
    assert!(
        metrics
            .1
            .contains("mcp_fleet_reloads_total{result=\"invalid\"} 1"),
        "{}",
        metrics.1
    );

    // The CLI asks the instance, which refuses a bad file: exit 2, with every error.
    let (code, out) = dir.cli(&["reload"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("colour"), "{out}");
    // A good file goes through and the CLI prints what changed.
    std::fs::write(
        dir.config(),
        good.replace("[categories.main]", "[categories.main]\nstrategy = \"p2c\""),
    )
    .expect("write");
    let (code, out) = dir.cli(&["reload"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("categories.main.strategy: RoundRobin -> P2c"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_needs_the_token_and_deploys_in_batches_that_survive_a_restart() {
    let dir = FleetDir::with_sections(
        &[("alpha", 4), ("beta", 4)],
        &[],
        &Sections {
            fleet: "deploy_on_start = \"none\"",
            ..Sections::default()
        },
    );
    let mut serve = dir.serve_no_wait();
    wait_for("the admin API", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", dir.admin_port)).ok()
    });
    let c = http::client();
    // No token, a wrong token: 401, and nothing happens.
    let url = format!("{}/deploy", dir.admin_base());
    let resp = c
        .post(&url)
        .json(&json!({"batch_size": 8}))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 401);
    let resp = c
        .post(&url)
        .bearer_auth("not-the-token")
        .json(&json!({"batch_size": 8}))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 401);
    let (_, servers) = admin(&dir, "GET", "/servers", None).await;
    assert_eq!(
        servers.as_array().map(Vec::len),
        Some(0),
        "an unauthorised deploy ran"
    );
    let mode = std::fs::metadata(dir.path().join("state/admin.token")).expect("token file");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );

    // Global indexes follow the categories' port order, and the harness picks the port blocks,
    // so find out which category comes first.
    let text = std::fs::read_to_string(dir.config()).expect("config");
    let first_port = |name: &str| -> u32 {
        text.split(&format!("[categories.{name}]\nports = \""))
            .nth(1)
            .and_then(|s| s.split('-').next())
            .and_then(|p| p.parse().ok())
            .expect("port range")
    };
    let (a, b) = if first_port("alpha") < first_port("beta") {
        ("alpha", "beta")
    } else {
        ("beta", "alpha")
    };
    let id = |cat: &str, i: u32| format!("{cat}-{i}");

    // The seed's deploy-batch, twice: indexes 0-2, then 3-5.
    let (code, out) = dir.cli(&["deploy", "--batch-size", "3", "--start-index", "0"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("3 deployed"), "{out}");
    let (status, d) = admin(
        &dir,
        "POST",
        "/deploy",
        Some(json!({"batch_size": 3, "start_index": 3})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(d["deployed"], json!([id(a, 3), id(b, 0), id(b, 1)]), "{d}");
    let (status, _) = admin(&dir, "POST", "/deploy", Some(json!({"batch_size": 0}))).await;
    assert_eq!(status, 400);
    let (_, servers) = admin(&dir, "GET", "/servers", None).await;
    let list = servers.as_array().expect("list");
    assert_eq!(list.len(), 6);
    for s in list {
        assert_eq!(s["state"], "running", "{s}");
        assert!(
            s["pid"].as_u64().is_some() && s["health"].is_string(),
            "{s}"
        );
    }
    let (code, out) = dir.cli(&["status"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("total")
            && l.split_whitespace().collect::<Vec<_>>()[1..3] == ["8", "6"]),
        "{out}"
    );

    // Restart one server through the CLI: drained, restarted, back.
    let old_pid = list
        .iter()
        .find(|s| s["id"] == id(a, 0).as_str())
        .and_then(|s| s["pid"].as_u64());
    let (code, out) = dir.cli(&["restart", &id(a, 0)]);
    assert_eq!(code, 0, "{out}");
    let (_, servers) = admin(&dir, "GET", "/servers", None).await;
    let new_pid = servers
        .as_array()
        .and_then(|l| l.iter().find(|s| s["id"] == id(a, 0).as_str()))
        .and_then(|s| s["pid"].as_u64());
    assert!(
        new_pid.is_some() && new_pid != old_pid,
        "{old_pid:?} -> {new_pid:?}"
    );
    let (code, out) = dir.cli(&["restart", &id(b, 3)]);
    assert_ne!(code, 0, "restart of an undeployed server must fail: {out}");

    // A restart of serve brings back the same six, and only them.
    common::signal(serve.pid(), 15);
    assert_eq!(serve.wait_exit(Duration::from_secs(20)), Some(0));
    let _serve = dir.serve_no_wait();
    wait_for(
        "the recorded fleet to come back",
        Duration::from_secs(30),
        || {
            let s = stats(&dir)?;
            (s["ready"] == 6).then_some(())
        },
    );
    let (_, servers) = admin(&dir, "GET", "/servers", None).await;
    let ids: Vec<String> = servers
        .as_array()
        .expect("list")
        .iter()
        .map(|s| s["id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        ids,
        [id(a, 0), id(a, 1), id(a, 2), id(a, 3), id(b, 0), id(b, 1)]
    );
    let (_, history) = admin(&dir, "GET", "/deployments", None).await;
    assert!(
        history.as_array().is_some_and(|h| h
            .iter()
            .any(|d| d["kind"] == "startup" && d["deployed"].as_array().map(Vec::len) == Some(6))),
        "{history}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_state_file_is_moved_aside_and_reported() {
    let dir = FleetDir::new(&[("alpha", 2)], &[]);
    std::fs::create_dir_all(dir.path().join("state")).expect("mkdir");
    std::fs::write(
        dir.path().join("state/deployment.json"),
        b"{\"deployed\": [tru",
    )
    .expect("write");
    let _serve = dir.serve();
    let aside: Vec<_> = std::fs::read_dir(dir.path().join("state"))
        .expect("state dir")
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("deployment.corrupt-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "the corrupt file was not moved aside");
    assert!(dir.log().contains("is unreadable"), "not reported");
    // The record is written when the start-up deployment ends, which is a moment after the
    // last server reports ready (what `serve()` waits for).
    let record = dir.path().join("state/deployment.json");
    let fresh = wait_for("the new deployment record", Duration::from_secs(20), || {
        std::fs::read_to_string(&record).ok()
    });
    assert!(fresh.contains("alpha-1"), "{fresh}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_looping_server_ends_failed_and_retry_failed_brings_it_back() {
    let dir = FleetDir::with_sections(
        &[("ok", 1), ("crashy", 1)],
        &[],
        &Sections {
            fleet: "max_restarts = 1\nrestart_window = \"1m\"",
            // A program that exits at once, for as long as the marker file exists.
            categories: vec![(
                "crashy",
                "command = [\"sh\", \"-c\", \"test -e crash && exit 3; exec mcp-fleet-never\"]"
                    .into(),
            )],
            ..Sections::default()
        },
    );
    std::fs::write(dir.path().join("crash"), b"").expect("marker");
    let mut text = std::fs::read_to_string(dir.config()).expect("config");
    text = text.replace(
        "exec mcp-fleet-never",
        &format!(
            "exec {} backend --port {{port}} --category crashy",
            common::BIN
        ),
    );
    std::fs::write(dir.config(), text).expect("config");
    let _serve = dir.serve_no_wait();
    wait_for(
        "the crash-looping server to be marked failed",
        Duration::from_secs(30),
        || {
            let out = std::process::Command::new("curl")
                .args(["-s", "-H"])
                .arg(format!("Authorization: Bearer {}", dir.admin_token()))
                .arg(format!("{}/servers", dir.admin_base()))
                .output()
                .ok()?;
            let v: Value = serde_json::from_slice(&out.stdout).ok()?;
            v.as_array()?
                .iter()
                .any(|s| s["id"] == "crashy-0" && s["state"] == "failed")
                .then_some(())
        },
    );
    let (code, out) = dir.cli(&["status"]);
    assert_eq!(code, 0);
    assert!(
        out.lines().any(|l| l.starts_with("crashy")
            && l.split_whitespace().nth(4) == Some("1")
            && l.ends_with("below plan")),
        "{out}"
    );
    std::fs::remove_file(dir.path().join("crash")).expect("fix the server");
    let (code, out) = dir.cli(&["retry-failed"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 deployed"), "{out}");
}
