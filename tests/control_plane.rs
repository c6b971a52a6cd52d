//! The control plane where it used to lose servers or tell half the truth, against the real
//! binary: a shrink-then-grow reload inside the drain, a category below its plan, the two
//! `/health` answers, reload without a fleet, the CLI with a config that does not validate,
//! memory as PSS, and the first health round in one line per category.

mod common;

use common::fake::{self, Behaviour};
use common::{http, plain, wait_for, FleetDir, Sections};
use serde_json::Value;
use std::time::{Duration, Instant};

fn admin(dir: &FleetDir, method: &str, path: &str) -> (u16, Value) {
    plain::admin_call(dir.admin_port, &dir.admin_token(), method, path)
}

fn json_get(url: &str) -> Option<(u16, Value)> {
    let (status, body) = plain::blocking_get(url)?;
    Some((status, serde_json::from_str(&body).ok()?))
}

fn monitor(dir: &FleetDir, path: &str) -> Option<(u16, Value)> {
    json_get(&format!("http://127.0.0.1:{}{path}", dir.monitor_port))
}

fn category<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["categories"]
        .as_array()
        .and_then(|cs| {
            cs.iter()
                .find(|c| c["name"] == name || c["category"] == name)
        })
        .unwrap_or(&Value::Null)
}

/// The pids of a category's servers, by id, from `GET /servers`.
fn pids(dir: &FleetDir) -> Vec<(String, u64)> {
    let (_, servers) = admin(dir, "GET", "/servers");
    servers
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["id"].as_str().unwrap_or_default().to_string(),
                s["pid"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// Bug: a category of 4 reloaded to 2 and back to 4 within the drain kept the two re-added
/// servers draining, stopped them when the drain ended and never started them again.
#[test]
fn shrinking_and_growing_back_within_the_drain_keeps_every_server() {
    let dir = FleetDir::with_sections(
        &[("grow", 4)],
        &[],
        &Sections {
            fleet: "drain_timeout = \"2s\"",
            ..Sections::default()
        },
    );
    let _serve = dir.serve();
    let four = std::fs::read_to_string(dir.config()).expect("config");
    let before = pids(&dir);
    assert_eq!(before.len(), 4, "{before:?}");

    let two = four.replace("[categories.grow]", "[categories.grow]\nservers = 2");
    std::fs::write(dir.config(), &two).expect("write");
    let (code, out) = dir.cli(&["reload"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("categories.grow.servers: 4 -> 2"), "{out}");
    std::fs::write(dir.config(), &four).expect("write");
    let (code, out) = dir.cli(&["reload"]);
    assert_eq!(code, 0, "{out}");

    // Past the first reload's drain: all four still run, the same processes, all serving.
    std::thread::sleep(Duration::from_secs(3));
    wait_for("four serving servers", Duration::from_secs(20), || {
        let (_, stats) = json_get(&format!("{}/stats", dir.base()))?;
        (category(&stats, "grow")["ready"] == 4).then_some(())
    });
    let after = pids(&dir);
    assert_eq!(after, before, "the re-added servers must keep running");
    let (_, status) = admin(&dir, "GET", "/status");
    let row = category(&status, "grow");
    assert_eq!(
        (&row["planned"], &row["deployed"], &row["serving"]),
        (&Value::from(4), &Value::from(4), &Value::from(4)),
        "{status}"
    );
    let (code, health) = json_get(&format!("{}/health", dir.base())).expect("health");
    assert_eq!(
        (code, &health["status"]),
        (200, &Value::from("ok")),
        "{health}"
    );
}

/// A category serving with fewer servers than planned shows in `/health` (200, `partial`),
/// `/alerts` and `mcp-fleet status`; the proxy's and the monitor's `/health` agree, and count an
/// ejected server as not serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_category_below_its_plan_shows_everywhere_and_both_healths_agree() {
    let (good, _) = fake::spawn(Behaviour::Echo).await;
    let (steady, _) = fake::spawn(Behaviour::Echo).await;
    let (flaky, _) = fake::spawn(Behaviour::Echo).await;
    let dead = common::free_port();
    let addr = |p: u16| std::net::SocketAddr::from(([127, 0, 0, 1], p));
    let dir = FleetDir::with_sections(
        &[],
        &[
            ("short", vec![addr(good), addr(dead)]),
            ("ej", vec![addr(steady), addr(flaky)]),
        ],
        &Sections {
            proxy: "eject_after_5xx = 1\nmax_ejected_percent = 50\neject_time = \"60s\"",
            health: "kind = \"tcp\"\ninterval = \"500ms\"\ntimeout = \"200ms\"",
            ..Sections::default()
        },
    );
    let mut text = std::fs::read_to_string(dir.config()).expect("config");
    text.push_str("[monitor.alerts]\ninterval = \"200ms\"\n");
    std::fs::write(dir.config(), text).expect("write");
    let _serve = dir.serve_no_wait();
    let proxy_health = || json_get(&format!("{}/health", dir.base()));
    wait_for("short to serve one of two", Duration::from_secs(20), || {
        let (code, h) = proxy_health()?;
        let short = category(&h, "short");
        (code == 200 && short["serving"] == 1 && category(&h, "ej")["serving"] == 2).then_some(())
    });
    let (code, h) = proxy_health().expect("health");
    assert_eq!((code, &h["status"]), (200, &Value::from("partial")), "{h}");
    assert_eq!(category(&h, "short")["below_plan"], true);
    assert_eq!(category(&h, "short")["planned"], 2);
    wait_for("the below-plan alert", Duration::from_secs(10), || {
        let (_, alerts) = monitor(&dir, "/alerts")?;
        alerts
            .as_array()?
            .iter()
            .any(|a| a["name"] == "below_plan:short")
            .then_some(())
    });
    let (code, out) = dir.cli(&["status"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("short") && l.ends_with("below plan")),
        "{out}"
    );

    // Eject the flaky server of `ej` with one 500: both answers now count it out.
    let c = http::client();
    let url = format!("{}/mcp/ej", dir.base());
    wait_for("one server of ej ejected", Duration::from_secs(20), || {
        let c = c.clone();
        let url = url.clone();
        let done = std::thread::spawn(move || {
            tokio::runtime::Runtime::new().ok()?.block_on(async move {
                let _ = c
                    .post(&url)
                    .header("accept", http::ACCEPT)
                    .header("x-answer", "error")
                    .json(&http::stateless_echo("x"))
                    .send()
                    .await;
                Some(())
            })
        });
        let _ = done.join();
        let (_, stats) = json_get(&format!("{}/stats", dir.base()))?;
        http::servers(&stats, "ej")
            .iter()
            .any(|s| s["ejected_ms"].as_u64() > Some(0))
            .then_some(())
    });
    let (_, proxy) = proxy_health().expect("proxy health");
    let (_, monitor_doc) = monitor(&dir, "/health").expect("monitor health");
    assert_eq!(category(&proxy, "ej")["serving"], 1, "{proxy}");
    assert_eq!(proxy["categories"], monitor_doc["categories"]);
    assert_eq!(proxy["status"], monitor_doc["status"]);
}

/// Without a fleet, reloads are still history, and `mcp-fleet reload` gets its outcome from
/// `POST /reload` at once: exit 0 applied, 2 refused, 1 unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_without_a_fleet_answers_at_once_with_its_outcome() {
    let (backend, _) = fake::spawn(Behaviour::Echo).await;
    let dir = FleetDir::new(
        &[],
        &[(
            "solo",
            vec![std::net::SocketAddr::from(([127, 0, 0, 1], backend))],
        )],
    );
    let mut serve = dir.serve();
    let started = Instant::now();
    let (code, out) = dir.cli(&["reload"]);
    let took = started.elapsed();
    println!("mcp-fleet reload of an unchanged file, no fleet: {took:?}");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("reload applied") && out.contains("(no changes)"),
        "{out}"
    );
    // The previous CLI polled the fleet's history for 30 s before giving up.
    assert!(took < Duration::from_secs(10), "{took:?}");
    let (status, history) = admin(&dir, "GET", "/deployments");
    assert_eq!(status, 200);
    let last = history.as_array().and_then(|h| h.last()).cloned();
    assert_eq!(
        last.as_ref().map(|d| (&d["kind"], &d["outcome"])),
        Some((&Value::from("reload"), &Value::from("applied"))),
        "{history}"
    );

    let good = std::fs::read_to_string(dir.config()).expect("config");
    std::fs::write(
        dir.config(),
        good.replace("[proxy]", "[proxy]\nthreads = 0"),
    )
    .expect("write");
    let (code, out) = dir.cli(&["reload"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("proxy.threads"), "{out}");
    std::fs::write(dir.config(), &good).expect("write");

    common::signal(serve.pid(), 15);
    assert_eq!(serve.wait_exit(Duration::from_secs(20)), Some(0));
    let (code, out) = dir.cli(&["reload"]);
    assert_eq!(code, 1, "nothing answered: the outcome is unknown: {out}");
    assert!(out.contains("not running"), "{out}");
}

/// An operator in the middle of an edit still sees the fleet: the admin commands read the
/// admin address and token from a file that does not validate, and say that it does not.
#[test]
fn admin_commands_work_while_the_config_has_an_error() {
    let dir = FleetDir::new(&[("edit", 2)], &[]);
    let _serve = dir.serve();
    let good = std::fs::read_to_string(dir.config()).expect("config");
    std::fs::write(
        dir.config(),
        good.replace(
            "[categories.edit]",
            "[categories.edit]\nservers = 99\ncolour = 1",
        ),
    )
    .expect("write");
    for args in [&["status"][..], &["memory"], &["report"]] {
        let (code, out) = dir.cli(args);
        assert_eq!(code, 0, "{args:?}: {out}");
        assert!(out.contains("does not validate"), "{args:?}: {out}");
    }
    let (_, out) = dir.cli(&["status"]);
    assert!(
        out.lines().any(|l| l.starts_with("edit")
            && l.split_whitespace().collect::<Vec<_>>()[1..4] == ["2", "2", "2"]),
        "{out}"
    );
    let (code, out) = dir.cli(&["restart", "edit-1"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = dir.cli(&["check"]);
    assert_eq!(code, 2, "check still refuses the file: {out}");
}

/// The memory figures are what the servers take (PSS), not their RSS summed: a fleet of one
/// binary shares most pages, and the RSS sum counts them once per server.
#[test]
fn memory_by_category_is_pss_not_summed_rss() {
    let dir = FleetDir::with_extra(&[("mem", 4)], &[], "memory_interval = \"200ms\"");
    let serve = dir.serve();
    let children = common::children_of(serve.pid());
    assert_eq!(children.len(), 4, "{children:?}");
    let proc_sum = |field: &str, file: &str| -> u64 {
        children
            .iter()
            .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok())
            .filter_map(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix(field))
                    .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            })
            .sum::<u64>()
            * 1024
    };
    let shown = wait_for("a memory sample", Duration::from_secs(20), || {
        let v = dir.metric("mcp_fleet_memory_bytes{category=\"mem\"}");
        (v > 0.0).then_some(v as u64)
    });
    let pss = proc_sum("Pss:", "smaps_rollup");
    let rss = proc_sum("VmRSS:", "status");
    println!("category mem: shown {shown} B, PSS sum {pss} B, RSS sum {rss} B");
    assert!(pss > 0 && rss > pss, "pss {pss} rss {rss}");
    assert!(
        shown < pss * 2 + (1 << 20),
        "shown {shown} is not PSS ({pss}); RSS sum is {rss}"
    );
    let (_, memory) = admin(&dir, "GET", "/memory");
    assert_eq!(memory["measure"], "pss", "{memory}");
    let (_, dash) = monitor(&dir, "/dashboard.json").expect("dashboard");
    assert_eq!(dash["memory_measure"], "PSS");
    let (code, out) = dir.cli(&["memory"]);
    assert_eq!(code, 0);
    assert!(out.contains("PSS MiB"), "{out}");
}

/// One summary line per category for the first health round, not one line per server.
#[test]
fn the_first_health_round_is_one_line_per_category() {
    let dir = FleetDir::new(&[("left", 5), ("right", 5)], &[]);
    let _serve = dir.serve();
    let log = wait_for("both summaries", Duration::from_secs(20), || {
        let log = dir.log();
        (log.matches("first health round").count() == 2).then_some(log)
    });
    for c in ["left", "right"] {
        assert!(
            log.lines()
                .any(|l| l.contains("first health round: 5 of 5") && l.contains(c)),
            "{log}"
        );
    }
    assert_eq!(
        log.matches("health check passed: in rotation").count(),
        0,
        "single servers' first passes are in the summary: {log}"
    );
}
