//! Beyond one machine, proved on one: a category found by DNS (a real dnsmasq on loopback,
//! servers on loopback aliases 127.0.0.2 and up), two proxy replicas sharing the session key
//! files, a key rotation with live sessions, and `/readyz` through a SIGTERM.

mod common;

use common::dns::Dnsmasq;
use common::{http, plain, start_backend_on, wait_for, FleetDir, Proc};
use serde_json::Value;
use std::net::IpAddr;
use std::time::Duration;

const NAME: &str = "mcp-db.fleet.test";

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// A proxy instance whose config this test writes itself.
fn instance(body: &str) -> FleetDir {
    let dir = FleetDir {
        dir: tempfile::tempdir().expect("tempdir"),
        proxy_port: common::free_port(),
        admin_port: common::free_port(),
        monitor_port: common::free_port(),
    };
    write(&dir, body);
    dir
}

fn write(dir: &FleetDir, body: &str) {
    let text = format!(
        "[proxy]\nlisten = \"127.0.0.1:{}\"\nshutdown_grace = \"5s\"\nfast_path = {}\n\
         [monitor]\nlisten = \"127.0.0.1:{}\"\n[admin]\nlisten = \"127.0.0.1:{}\"\n\
         [health]\ninterval = \"500ms\"\ntimeout = \"400ms\"\n{body}",
        dir.proxy_port,
        common::fast_path_on(),
        dir.monitor_port,
        dir.admin_port
    );
    std::fs::write(dir.config(), text).expect("write config");
}

fn stats(dir: &FleetDir) -> Option<Value> {
    let (_, body) = plain::blocking_get(&format!("{}/stats", dir.base()))?;
    serde_json::from_str(&body).ok()
}

/// (addr, ready, draining) of a category's members, from `/stats`.
fn members(dir: &FleetDir, category: &str) -> Vec<(String, bool, bool)> {
    stats(dir)
        .map(|s| http::servers(&s, category))
        .unwrap_or_default()
        .iter()
        .map(|s| {
            (
                s["addr"].as_str().unwrap_or_default().to_string(),
                s["ready"] == true && s["healthy"] == true,
                s["draining"] == true,
            )
        })
        .collect()
}

fn serving(dir: &FleetDir, category: &str) -> Vec<String> {
    let mut out: Vec<String> = members(dir, category)
        .into_iter()
        .filter(|(_, up, draining)| *up && !draining)
        .map(|(a, ..)| a)
        .collect();
    out.sort();
    out
}

/// The category a session's server was started with: the built-in server names itself
/// `mcp-fleet-backend CATEGORY:PORT`, and each test server gets its own name.
fn owner(body: &str) -> String {
    body.split("mcp-fleet-backend ")
        .nth(1)
        .and_then(|s| s.split(':').next())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_category_follows_its_dns_records_and_keeps_its_last_set_when_dns_is_gone() {
    let port = common::free_port();
    let _servers: Vec<Proc> = (2..=4)
        .map(|last| start_backend_on(&format!("s{last}"), ip(last), port))
        .collect();
    let dns = Dnsmasq::start(&[(NAME, ip(2)), (NAME, ip(3))]);
    let dir = instance(&format!(
        "[fleet]\nenabled = false\ndrain_timeout = \"2s\"\n\
         [dns]\nservers = [\"127.0.0.1:{}\"]\ninterval = \"1s\"\ntimeout = \"500ms\"\n\
         [categories.db]\ndiscover = {{ dns = \"{NAME}\", port = {port} }}\n",
        dns.port
    ));
    let _serve = dir.serve_no_wait();
    let at = |last: u8| format!("127.0.0.{last}:{port}");
    wait_for("the two listed servers", Duration::from_secs(30), || {
        (serving(&dir, "db") == [at(2), at(3)]).then_some(())
    });
    let (code, ready) =
        plain::blocking_get(&format!("http://127.0.0.1:{}/readyz", dir.monitor_port))
            .expect("readyz");
    assert_eq!(code, 200, "{ready}");

    // A session on one of them; then a third server is listed and joins.
    let c = http::client();
    let url = format!("{}/mcp/db", dir.base());
    let (sid, body) = http::open_session(&c, &url).await;
    let own = owner(&body);
    assert!(own == "s2" || own == "s3", "{body}");
    dns.set(&[(NAME, ip(2)), (NAME, ip(3)), (NAME, ip(4))]);
    wait_for("the third server to join", Duration::from_secs(30), || {
        (serving(&dir, "db") == [at(2), at(3), at(4)]).then_some(())
    });

    // The session's server leaves the records: it drains (its session still served, no new
    // ones), then goes, and its session gets 404.
    let leaving: u8 = if own == "s2" { 2 } else { 3 };
    let stay: Vec<(&str, IpAddr)> = [2u8, 3, 4]
        .iter()
        .filter(|l| **l != leaving)
        .map(|l| (NAME, ip(*l)))
        .collect();
    dns.set(&stay);
    wait_for(
        "the leaving server to drain",
        Duration::from_secs(30),
        || {
            members(&dir, "db")
                .iter()
                .any(|(a, _, draining)| *a == at(leaving) && *draining)
                .then_some(())
        },
    );
    let (status, _) =
        http::session_tool(&c, &url, &sid, "echo", serde_json::json!({"text": "still"})).await;
    assert_eq!(status, 200, "its session is served while it drains");
    for _ in 0..10 {
        let (_, body) = http::initialize(&c, &url).await;
        assert_ne!(
            owner(&body),
            format!("s{leaving}"),
            "a new session on a draining server"
        );
    }
    wait_for("the drain to end", Duration::from_secs(30), || {
        (!members(&dir, "db").iter().any(|(a, ..)| *a == at(leaving))).then_some(())
    });
    let (status, _) =
        http::session_tool(&c, &url, &sid, "echo", serde_json::json!({"text": "gone"})).await;
    assert_eq!(
        status, 404,
        "a session whose server left gets 404, so the client re-initializes"
    );

    // The DNS server stops: the category keeps its last good set, and says why in a metric.
    let before = serving(&dir, "db");
    assert_eq!(before.len(), 2, "{before:?}");
    drop(dns.proc);
    wait_for(
        "failed resolutions to be counted",
        Duration::from_secs(30),
        || {
            let errors = dir
                .metric("mcp_fleet_discovery_resolutions_total{category=\"db\",result=\"error\"}");
            (errors >= 2.0).then_some(())
        },
    );
    assert_eq!(serving(&dir, "db"), before, "the last good set is kept");
    let (status, _) = http::stateless_call(&c, &url, "x").await;
    assert_eq!(status, 200);
}
