//! The stdio bridge's limits and lifecycle, against the fake stdio server: idle reaping,
//! `max_sessions`, `fleet.max_children`, the memory policy on a child, a reload of the limits,
//! a hundred sessions at once, and no process left after SIGTERM or `kill -9` of `serve`.

mod common;

use common::http::{self as h, ACCEPT};
use common::stdio::*;
use common::{processes_with, wait_for, FleetDir, Sections};
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_are_reaped_and_the_session_limit_answers_503() {
    let (dir, marker) = fleet(1, "idle_timeout = \"1s\"\nmax_sessions = 2", &[]);
    let _serve = dir.serve();
    let url = format!("{}/mcp/fake", dir.base());
    let c = h::client();
    let (a, _) = h::open_session(&c, &url).await;
    let (_b, _) = h::open_session(&c, &url).await;
    assert_eq!(processes_with(&marker).len(), 2);
    let resp = c
        .post(&url)
        .header("accept", ACCEPT)
        .json(&h::initialize_body())
        .send()
        .await
        .expect("third initialize");
    assert_eq!(resp.status().as_u16(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    let answer: Value = resp.json().await.expect("a JSON-RPC error body");
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .contains("2 sessions"));
    // Nothing in flight, no stream: both are reaped and the process count is back to zero.
    wait_for(
        "idle children to be reaped",
        Duration::from_secs(15),
        || processes_with(&marker).is_empty().then_some(()),
    );
    wait_for("both reaps to be counted", Duration::from_secs(10), || {
        (stdio_total(&dir, "reaps") == 2).then_some(())
    });
    let (status, _) = post(&c, &url, Some(&a), call(json!(1), "echo", json!({}))).await;
    assert_eq!(status, 404, "a reaped session is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_over_its_memory_limit_is_ended_by_the_memory_policy() {
    // The watcher, not the kernel, enforces here (kernel_memory_limit = false), every 200 ms.
    let marker = format!("fake-{}", common::free_port());
    let dir = FleetDir::with_sections(
        &[("fake", 1)],
        &[],
        &Sections {
            proxy: "first_byte_timeout = \"30s\"",
            fleet: "memory_interval = \"200ms\"\nkernel_memory_limit = false",
            categories: vec![(
                "fake",
                format!(
                    "transport = \"stdio\"\nmax_memory_mb = 40\n\
                     command = [\"python3\", \"{FAKE}\", \"--marker\", \"{marker}\"]"
                ),
            )],
            ..Sections::default()
        },
    );
    let _serve = dir.serve();
    let url = format!("{}/mcp/fake", dir.base());
    let c = h::client();
    let (sid, _) = h::open_session(&c, &url).await;
    // Sampled: the server's memory is its child's.
    let sampled = wait_for("a sample of the child", Duration::from_secs(10), || {
        servers(&dir)[0]["memory_bytes"].as_u64().filter(|&b| b > 0)
    });
    assert!(sampled < 40 << 20, "an idle child over 40 MiB: {sampled}");
    let (status, answer) = post(
        &c,
        &url,
        Some(&sid),
        call(json!(1), "grow", json!({"mib": 80})),
    )
    .await;
    // Answered, or failed because the policy ended the child first (a busy machine can make
    // the child slower to answer than two 200 ms samples).
    assert_eq!(status, 200, "{answer}");
    assert!(
        tool_text(&answer) == "grown" || answer["error"]["code"] == json!(-32603),
        "{answer}"
    );
    wait_for("the child to be ended", Duration::from_secs(15), || {
        processes_with(&marker).is_empty().then_some(())
    });
    let (status, _) = post(&c, &url, Some(&sid), call(json!(2), "echo", json!({}))).await;
    assert_eq!(status, 404, "its session ended with it");
    let (code, memory) =
        common::plain::admin_call(dir.admin_port, &dir.admin_token(), "GET", "/memory");
    assert_eq!(code, 200);
    let events = memory["events"].as_array().cloned().unwrap_or_default();
    assert!(
        events
            .iter()
            .any(|e| e["id"] == "fake-0.1" && e["action"] == "restart"),
        "{memory}"
    );
    // A new session gets a new child.
    let (sid, _) = h::open_session(&c, &url).await;
    assert_echo(&c, &url, &sid, "new").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_max_children_counts_every_stdio_child() {
    let marker = format!("fake-{}", common::free_port());
    let category = format!(
        "transport = \"stdio\"\ncommand = [\"python3\", \"{FAKE}\", \"--marker\", \"{marker}\"]"
    );
    let dir = FleetDir::with_sections(
        &[("a", 1), ("b", 1)],
        &[],
        &Sections {
            proxy: "first_byte_timeout = \"30s\"",
            fleet: "max_children = 1",
            categories: vec![("a", category.clone()), ("b", category)],
            ..Sections::default()
        },
    );
    let _serve = dir.serve();
    let c = h::client();
    let (sid, _) = h::open_session(&c, &format!("{}/mcp/a", dir.base())).await;
    let initialize_b = || {
        c.post(format!("{}/mcp/b", dir.base()))
            .header("accept", ACCEPT)
            .json(&h::initialize_body())
            .send()
    };
    // The fleet's one child is taken: a server of another category cannot start one.
    let resp = initialize_b().await.expect("initialize b");
    assert_eq!(resp.status().as_u16(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    let body = resp.text().await.unwrap_or_default();
    assert!(body.contains("fleet.max_children"), "{body}");
    assert_eq!(processes_with(&marker).len(), 1);
    // Once it ends, the place is free again.
    let r = c
        .delete(format!("{}/mcp/a", dir.base()))
        .header("mcp-session-id", &sid)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(r.status().as_u16(), 200);
    let mut status = 0;
    for _ in 0..100 {
        status = initialize_b()
            .await
            .expect("initialize b")
            .status()
            .as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "b never got the freed place");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_session_limits_in_place_and_keeps_the_children() {
    let (dir, marker) = fleet(1, "max_sessions = 1", &[]);
    let _serve = dir.serve();
    let url = format!("{}/mcp/fake", dir.base());
    let c = h::client();
    let (a, _) = h::open_session(&c, &url).await;
    let (_, answer) = post(&c, &url, Some(&a), call(json!(1), "whoami", json!({}))).await;
    let pid = tool_text(&answer);
    let second = || {
        c.post(&url)
            .header("accept", ACCEPT)
            .json(&h::initialize_body())
            .send()
    };
    assert_eq!(second().await.expect("second").status().as_u16(), 503);
    let text = std::fs::read_to_string(dir.config()).expect("config");
    std::fs::write(
        dir.config(),
        text.replace("max_sessions = 1", "max_sessions = 2"),
    )
    .expect("write");
    let (status, report) =
        common::plain::admin_call(dir.admin_port, &dir.admin_token(), "POST", "/reload");
    assert_eq!(status, 200, "{report}");
    assert!(
        report["changes"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["key"] == "categories.fake.max_sessions")),
        "{report}"
    );
    assert_eq!(second().await.expect("second").status().as_u16(), 200);
    // The first session's child is the one it had: the server was not replaced.
    let (status, answer) = post(&c, &url, Some(&a), call(json!(2), "whoami", json!({}))).await;
    assert_eq!((status, tool_text(&answer)), (200, pid));
    assert_eq!(processes_with(&marker).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_sessions_on_one_server() {
    // A hundred children start at once on two cores (about 10 s of CPU for a hundred Python
    // interpreters here): more than the default 5 s to first byte, and longer than the
    // harness's 500 ms health timeout (a server out of rotation has its sessions refused).
    let (dir, marker) = fleet_with(
        1,
        "max_sessions = 100",
        &[],
        "first_byte_timeout = \"60s\"",
        "interval = \"10s\"\ntimeout = \"9s\"",
    );
    let _serve = dir.serve();
    let url = format!("{}/mcp/fake", dir.base());
    let c = h::client();
    let sessions = futures::future::join_all((0..100).map(|n| {
        let (c, url) = (c.clone(), url.clone());
        async move {
            let (sid, _) = h::open_session(&c, &url).await;
            let (status, answer) =
                post(&c, &url, Some(&sid), call(json!(1), "whoami", json!({}))).await;
            assert_eq!(status, 200, "session {n}: {answer}");
            (sid, tool_text(&answer))
        }
    }))
    .await;
    let pids: std::collections::HashSet<&String> = sessions.iter().map(|(_, p)| p).collect();
    assert_eq!(pids.len(), 100, "each session had its own child");
    assert_eq!(processes_with(&marker).len(), 100);
    for (sid, _) in &sessions {
        let r = c
            .delete(&url)
            .header("mcp-session-id", sid)
            .send()
            .await
            .expect("DELETE");
        assert_eq!(r.status().as_u16(), 200);
    }
    wait_for("all children to end", Duration::from_secs(30), || {
        processes_with(&marker).is_empty().then_some(())
    });
}

/// Stopping `serve` ends a child that ignores both EOF and SIGTERM (SIGKILL after the grace);
/// `kill -9` of `serve` leaves nothing either, not even a grandchild that left the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_process_outlives_serve_even_after_kill_9() {
    for kill in [false, true] {
        let (dir, marker) = fleet(2, "isolation = \"session\"", &["--ignore-eof"]);
        let mut serve = dir.serve();
        let url = format!("{}/mcp/fake", dir.base());
        let c = h::client();
        for _ in 0..2 {
            let (sid, _) = h::open_session(&c, &url).await;
            let (status, answer) =
                post(&c, &url, Some(&sid), call(json!(1), "fork", json!({}))).await;
            assert_eq!(status, 200, "{answer}");
        }
        // Two children, each with a grandchild in its own session.
        wait_for(
            "children and grandchildren",
            Duration::from_secs(10),
            || (processes_with(&marker).len() == 4).then_some(()),
        );
        if kill {
            common::signal(serve.pid(), 9);
        } else {
            common::signal(serve.pid(), 15);
        }
        let pid = serve.pid();
        serve.wait_exit(Duration::from_secs(30));
        let how = if kill { "kill -9" } else { "SIGTERM" };
        wait_for(
            &format!("no process left after {how}"),
            Duration::from_secs(15),
            || processes_with(&marker).is_empty().then_some(()),
        );
        // The watchdog did its work and left, and so did the fleet's cgroups.
        let fleet_cgroups = format!("mcp-fleet-{pid}");
        wait_for(
            &format!("the watchdog to exit after {how}"),
            Duration::from_secs(15),
            || {
                processes_with("reap-cgroups")
                    .into_iter()
                    .all(|p| {
                        !std::fs::read(format!("/proc/{p}/cmdline"))
                            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&fleet_cgroups))
                    })
                    .then_some(())
            },
        );
        for root in [
            "/sys/fs/cgroup/unified",
            "/sys/fs/cgroup/memory",
            "/sys/fs/cgroup",
        ] {
            let left = std::path::Path::new(root).join(&fleet_cgroups);
            assert!(!left.exists(), "{} left behind after {how}", left.display());
        }
    }
}
