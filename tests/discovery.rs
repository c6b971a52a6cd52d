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

/// Two replicas with the same config and key files: a session made through one continues
/// through the other; a key rotation (new key current, old one previous, reload both) ends no
/// session; sessions sealed after it work on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_sessions_through_a_key_rotation_with_no_404() {
    let (a, b) = (common::free_port(), common::free_port());
    let _servers = [
        common::start_backend("shared", a),
        common::start_backend("shared", b),
    ];
    let keys = tempfile::tempdir().expect("keys");
    std::fs::write(keys.path().join("old.key"), [1u8; 32]).expect("key");
    std::fs::write(
        keys.path().join("new.key"),
        format!("{}\n", "9f".repeat(32)),
    )
    .expect("key");
    let body = |session: &str| {
        format!(
            "[fleet]\nenabled = false\n[session]\n{session}\n\
             [categories.shared]\nbackends = [\"127.0.0.1:{a}\", \"127.0.0.1:{b}\"]\n"
        )
    };
    let before = format!("key_file = \"{}\"", keys.path().join("old.key").display());
    let after = format!(
        "key_file = \"{}\"\nprevious_key_files = [\"{}\"]",
        keys.path().join("new.key").display(),
        keys.path().join("old.key").display()
    );
    let replicas = [instance(&body(&before)), instance(&body(&before))];
    let _serving: Vec<Proc> = replicas.iter().map(FleetDir::serve).collect();
    let c = http::client();
    let url = |r: &FleetDir| format!("{}/mcp/shared", r.base());
    let call = |sid: String, r: usize| {
        let c = c.clone();
        let u = url(&replicas[r]);
        async move {
            http::session_tool(&c, &u, &sid, "echo", serde_json::json!({"text": "x"}))
                .await
                .0
        }
    };
    let (old_session, _) = http::open_session(&c, &url(&replicas[0])).await;
    assert_eq!(
        call(old_session.clone(), 1).await,
        200,
        "made on replica 0, used on 1"
    );

    for r in &replicas {
        write(r, &body(&after));
        let (code, out) = r.cli(&["reload"]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("session keys re-read"), "{out}");
    }
    for r in 0..2 {
        assert_eq!(
            call(old_session.clone(), r).await,
            200,
            "rotation ended a session on {r}"
        );
    }
    let (new_session, _) = http::open_session(&c, &url(&replicas[1])).await;
    assert_eq!(call(new_session.clone(), 0).await, 200);
    // Once the old key is dropped everywhere, only the sessions sealed with it end.
    let only_new = format!("key_file = \"{}\"", keys.path().join("new.key").display());
    write(&replicas[0], &body(&only_new));
    let (code, out) = replicas[0].cli(&["reload"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(call(old_session, 0).await, 404);
    assert_eq!(call(new_session, 0).await, 200);
}

/// SIGTERM: `/readyz` turns 503 at once, the request in flight and an open event stream
/// complete, and the other replica serves on without an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_stopping_is_unready_at_once_and_finishes_what_it_has() {
    let port = common::free_port();
    let _server = common::start_backend("term", port);
    let body =
        format!("[fleet]\nenabled = false\n[categories.term]\nbackends = [\"127.0.0.1:{port}\"]\n");
    let replicas = [instance(&body), instance(&body)];
    let mut serving: Vec<Proc> = replicas.iter().map(FleetDir::serve).collect();
    let readyz = |r: &FleetDir| {
        plain::blocking_get(&format!("http://127.0.0.1:{}/readyz", r.monitor_port)).map(|x| x.0)
    };
    assert_eq!(readyz(&replicas[0]), Some(200));
    let c = http::client();
    let url0 = format!("{}/mcp/term", replicas[0].base());
    let (sid, _) = http::open_session(&c, &url0).await;
    // A slow streamed call (progress events for ~1.5 s) in flight when SIGTERM arrives.
    let stream = http::countdown(&c, &url0, &sid, 6, 250).await;
    assert_eq!(stream.status().as_u16(), 200);
    // Load on the other replica through the whole stop.
    let url1 = format!("{}/mcp/term", replicas[1].base());
    let load = {
        let (c, url1) = (c.clone(), url1.clone());
        tokio::spawn(async move { http::blast(&c, &url1, 400, 8, None).await })
    };
    common::signal(serving[0].pid(), 15);
    wait_for("/readyz 503", Duration::from_secs(5), || {
        (readyz(&replicas[0]) == Some(503)).then_some(())
    });
    let text = stream.text().await.expect("the stream completes");
    assert!(
        text.contains("\"result\""),
        "the in-flight call finished: {text}"
    );
    let statuses = load.await.expect("load task");
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(
        readyz(&replicas[1]),
        Some(200),
        "the other replica stays ready"
    );
    assert_eq!(serving[0].wait_exit(Duration::from_secs(20)), Some(0));
}

/// SRV records give each target its own port; a name that answers NXDOMAIN `nxdomain_limit`
/// times in a row empties its category (fewer keep the last good set).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_records_carry_ports_and_nxdomain_in_a_row_empties_a_category() {
    let (p2, p3, p4) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let _servers = [
        start_backend_on("a", ip(2), p2),
        start_backend_on("b", ip(3), p3),
        start_backend_on("c", ip(4), p4),
    ];
    let hosts = |with_gone: bool| {
        let mut r = vec![("a.fleet.test", ip(2)), ("b.fleet.test", ip(3))];
        if with_gone {
            r.push(("gone.fleet.test", ip(4)));
        }
        r
    };
    let dns = Dnsmasq::start_with(
        &hosts(true),
        &[
            "--local=/fleet.test/".to_string(),
            format!("--srv-host=_mcp._tcp.srv.fleet.test,a.fleet.test,{p2}"),
            format!("--srv-host=_mcp._tcp.srv.fleet.test,b.fleet.test,{p3}"),
        ],
    );
    let dir = instance(&format!(
        "[fleet]\nenabled = false\n\
         [dns]\nservers = [\"127.0.0.1:{}\"]\ninterval = \"1s\"\ntimeout = \"500ms\"\nnxdomain_limit = 2\n\
         [categories.srv]\ndiscover = {{ srv = \"_mcp._tcp.srv.fleet.test\" }}\n\
         [categories.nx]\ndiscover = {{ dns = \"gone.fleet.test\", port = {p4} }}\n",
        dns.port
    ));
    let _serve = dir.serve_no_wait();
    let mut want = vec![format!("127.0.0.2:{p2}"), format!("127.0.0.3:{p3}")];
    want.sort();
    wait_for(
        "both SRV targets on their ports",
        Duration::from_secs(30),
        || (serving(&dir, "srv") == want && serving(&dir, "nx").len() == 1).then_some(()),
    );
    dns.set(&hosts(false));
    wait_for(
        "nx to be emptied after two NXDOMAIN",
        Duration::from_secs(30),
        || {
            members(&dir, "nx")
                .iter()
                .all(|(_, _, draining)| *draining)
                .then_some(())
        },
    );
    let nx =
        dir.metric("mcp_fleet_discovery_resolutions_total{category=\"nx\",result=\"nxdomain\"}");
    assert!(nx >= 2.0, "{nx}");
    assert_eq!(
        serving(&dir, "srv"),
        want,
        "the other category is untouched"
    );
}
