//! Every key of the config model, walked against a running instance: each is changed alone in
//! a generated config and reloaded through `POST /reload`; the report must name it, as applied
//! or as needing a restart exactly as `config::keys` classifies it, and `GET /config` (the values
//! in force) must show the new value for an applied key and the old one for a restart key. The
//! list of changes below must cover the whole table, so a new key cannot skip the walk.

mod common;

use common::{free_port, free_port_block};
use mcp_fleet::config::keys::{Reload, KEYS};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

struct Instance {
    dir: tempfile::TempDir,
    proxy: u16,
    admin: u16,
    monitor: u16,
    ports: u16,
    spare: u16,
}

/// One change of the walk: a line added to a section, or replacing the base's line for the
/// same key there.
struct Edit {
    section: &'static str,
    line: String,
    replace: bool,
}

impl Instance {
    /// The base config, or the base with `edit` made.
    fn config(&self, edit: Option<&Edit>) -> String {
        let sections = [
            (
                "[proxy]",
                format!(
                    "listen = \"127.0.0.1:{}\"\nshutdown_grace = \"5s\"\nfast_path = {}",
                    self.proxy,
                    common::fast_path_on()
                ),
            ),
            (
                "[monitor]",
                format!("listen = \"127.0.0.1:{}\"", self.monitor),
            ),
            ("[monitor.alerts]", String::new()),
            ("[admin]", format!("listen = \"127.0.0.1:{}\"", self.admin)),
            ("[session]", String::new()),
            ("[dns]", String::new()),
            ("[health]", "interval = \"1s\"\ntimeout = \"500ms\"".into()),
            (
                "[fleet]",
                "batch_size = 4\nstop_grace = \"1s\"\ndrain_timeout = \"1s\"".into(),
            ),
            (
                "[categories.walk]",
                format!("ports = \"{}-{}\"\nservers = 1", self.ports, self.ports + 1),
            ),
        ];
        let key_of = |line: &str| {
            line.split('=')
                .next()
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        let mut text = String::new();
        let mut placed = false;
        for (header, body) in sections {
            text.push_str(header);
            text.push('\n');
            let here = edit.filter(|e| e.section == header);
            for line in body.lines() {
                match here {
                    Some(e) if e.replace && key_of(line) == key_of(&e.line) => {}
                    _ => {
                        text.push_str(line);
                        text.push('\n');
                    }
                }
            }
            if let Some(e) = here {
                text.push_str(&e.line);
                text.push('\n');
                placed = true;
            }
        }
        if let Some(e) = edit.filter(|_| !placed) {
            text.push_str(&format!("{}\n{}\n", e.section, e.line));
        }
        text
    }

    fn write(&self, text: &str) {
        std::fs::write(self.dir.path().join("fleet.toml"), text).expect("write config");
    }

    fn call(&self, method: &str, path: &str) -> (u16, Value) {
        let token =
            std::fs::read_to_string(self.dir.path().join("state/admin.token")).expect("token");
        common::plain::admin_call(self.admin, token.trim(), method, path)
    }

    fn values(&self) -> BTreeMap<String, String> {
        let (status, v) = self.call("GET", "/config");
        assert_eq!(status, 200, "{v}");
        serde_json::from_value(v).expect("GET /config is a map of strings")
    }

    fn reload(&self) -> Value {
        let (status, report) = self.call("POST", "/reload");
        assert_eq!(status, 200, "reload refused: {report}");
        report
    }
}

/// A changed value for every key, by the key's name in the table.
fn changes(i: &Instance) -> Vec<(String, Edit)> {
    let mut out: Vec<(String, Edit)> = Vec::new();
    let mut add = |key: &str, section: &'static str, line: String, replace: bool| {
        out.push((
            key.to_string(),
            Edit {
                section,
                line,
                replace,
            },
        ));
    };
    for (k, v) in [
        ("listen", format!("\"127.0.0.1:{}\"", free_port())),
        ("threads", "3".into()),
        ("strategy", "\"p2c\"".into()),
        ("max_retries", "2".into()),
        ("connect_timeout", "\"2s\"".into()),
        ("idle_timeout", "\"200s\"".into()),
        ("shutdown_grace", "\"7s\"".into()),
        ("upstream_keepalive", "100".into()),
        ("first_byte_timeout", "\"4s\"".into()),
        ("body_timeout", "\"20s\"".into()),
        ("retry_budget_percent", "30".into()),
        ("retry_budget_min", "5".into()),
        ("eject_after_5xx", "7".into()),
        ("eject_time", "\"11s\"".into()),
        ("eject_max_time", "\"200s\"".into()),
        ("max_ejected_percent", "40".into()),
        ("allowed_origins", "[\"http://example.test:8080\"]".into()),
        ("max_body", "\"2MiB\"".into()),
        ("max_uri", "4096".into()),
        ("max_headers", "50".into()),
        ("max_header_bytes", "\"32KiB\"".into()),
        ("header_timeout", "\"9s\"".into()),
        ("client_idle_timeout", "\"30s\"".into()),
        ("max_connections", "5000".into()),
        ("max_sse_streams", "100".into()),
        ("send_timeout", "\"50s\"".into()),
        ("max_response_body", "\"32MiB\"".into()),
        ("fast_path", (!common::fast_path_on()).to_string()),
    ] {
        add(&format!("proxy.{k}"), "[proxy]", format!("{k} = {v}"), true);
    }
    add(
        "monitor.listen",
        "[monitor]",
        format!("listen = \"127.0.0.1:{}\"", free_port()),
        true,
    );
    add(
        "monitor.per_server_metrics",
        "[monitor]",
        "per_server_metrics = false".into(),
        false,
    );
    for (k, v) in [
        ("response_time", "\"3s\""),
        ("error_rate", "0.1"),
        ("memory_usage", "0.7"),
        ("cpu_usage", "0.8"),
        ("disk_usage", "0.9"),
        ("window", "\"2m\""),
        ("interval", "\"4s\""),
    ] {
        add(
            &format!("monitor.alerts.{k}"),
            "[monitor.alerts]",
            format!("{k} = {v}"),
            false,
        );
    }
    add(
        "admin.listen",
        "[admin]",
        format!("listen = \"127.0.0.1:{}\"", free_port()),
        true,
    );
    add(
        "admin.token_file",
        "[admin]",
        "token_file = \"other.token\"".into(),
        false,
    );
    // Key files in the config's folder: one raw, one as hex (both forms a Secret may hold).
    std::fs::write(i.dir.path().join("k1"), [7u8; 32]).expect("key file");
    std::fs::write(i.dir.path().join("k2"), format!("{}\n", "ab".repeat(32))).expect("key file");
    add(
        "session.key_file",
        "[session]",
        "key_file = \"k1\"".into(),
        false,
    );
    add(
        "session.previous_key_files",
        "[session]",
        "previous_key_files = [\"k2\"]".into(),
        false,
    );
    for (k, v) in [
        ("servers", "[\"127.0.0.1:1\"]"),
        ("interval", "\"3s\""),
        ("timeout", "\"1s\""),
        ("nxdomain_limit", "5"),
    ] {
        add(&format!("dns.{k}"), "[dns]", format!("{k} = {v}"), false);
    }
    for (k, v) in [
        ("enabled", "false"),
        ("kind", "\"tcp\""),
        ("interval", "\"2s\""),
        ("timeout", "\"400ms\""),
        ("unhealthy_threshold", "3"),
        ("healthy_threshold", "3"),
        ("concurrency", "8"),
    ] {
        add(
            &format!("health.{k}"),
            "[health]",
            format!("{k} = {v}"),
            true,
        );
    }
    // path and expect_status mean something only to an http check.
    add(
        "health.path",
        "[health]",
        "kind = \"http\"\npath = \"/x\"".into(),
        false,
    );
    add(
        "health.expect_status",
        "[health]",
        "kind = \"http\"\nexpect_status = 204".into(),
        false,
    );
    let command = "[\"mcp-fleet\", \"backend\", \"--port\", \"{port}\", \"--category\", \"{category}\", \"--delay-ms\", \"1\"]";
    // The stdio keys need a stdio category: its command is the fake stdio server.
    let stdio = format!(
        "command = [\"python3\", \"{}/tests/fixtures/fake_stdio.py\"]",
        env!("CARGO_MANIFEST_DIR")
    );
    for (k, v) in [
        ("enabled", "false".to_string()),
        ("batch_size", "2".into()),
        ("command", command.to_string()),
        ("host", "\"127.0.0.2\"".into()),
        ("state_dir", "\"state2\"".into()),
        ("log_dir", "\"logs2\"".into()),
        ("ready_timeout", "\"20s\"".into()),
        ("stop_grace", "\"3s\"".into()),
        ("mcp_path", "\"/mcp2\"".into()),
        ("reserve_ports", "true".into()),
        ("deploy_on_start", "\"none\"".into()),
        ("drain_timeout", "\"2s\"".into()),
        ("max_restarts", "4".into()),
        ("restart_window", "\"200s\"".into()),
        ("env", "{ X = \"1\" }".into()),
        ("log_max_size", "\"1MiB\"".into()),
        ("log_keep", "2".into()),
        ("server_logs", "\"stdout\"".into()),
        ("memory_interval", "\"3s\"".into()),
        ("memory_budget", "\"90%\"".into()),
        ("kernel_memory_limit", "false".into()),
        ("max_children", "7".into()),
    ] {
        add(&format!("fleet.{k}"), "[fleet]", format!("{k} = {v}"), true);
    }
    for (k, v) in [
        ("ports", format!("\"{}-{}\"", i.ports, i.ports + 2)),
        ("servers", "2".into()),
        ("max_memory_mb", "99".into()),
        ("command", command.to_string()),
        ("backends", format!("[\"127.0.0.1:{}\"]", i.spare)),
        ("mcp_path", "\"/m\"".into()),
        ("strategy", "\"least-connections\"".into()),
        ("weight", "3".into()),
        ("server_weights", "{ \"walk-0\" = 2 }".into()),
        ("hash_header", "\"x-t\"".into()),
        ("env", "{ Y = \"2\" }".into()),
        ("cwd", "\"/tmp\"".into()),
        ("memory_action", "\"alert\"".into()),
        ("discover", "{ dns = \"walk.fleet.test\", port = 1 }".into()),
        ("transport", format!("\"stdio\"\n{stdio}")),
        (
            "isolation",
            format!("\"shared\"\ntransport = \"stdio\"\n{stdio}"),
        ),
        ("max_sessions", format!("7\ntransport = \"stdio\"\n{stdio}")),
        (
            "idle_timeout",
            format!("\"1m\"\ntransport = \"stdio\"\n{stdio}"),
        ),
        (
            "start",
            format!("\"eager\"\ntransport = \"stdio\"\n{stdio}"),
        ),
    ] {
        add(
            &format!("categories.*.{k}"),
            "[categories.walk]",
            format!("{k} = {v}"),
            true,
        );
    }
    add(
        "categories.*.upstream_headers",
        "[categories.walk]",
        "upstream_headers = { \"X-Walk\" = \"env:PATH\" }".into(),
        false,
    );
    for (k, v) in [
        ("scopes", "[\"mcp:walk\"]"),
        ("tools", "[\"echo\"]"),
        ("prompts", "[\"p\"]"),
        ("resources", "[\"file:///*\"]"),
    ] {
        add(
            &format!("categories.*.auth.{k}"),
            "[categories.walk.auth]",
            format!("{k} = {v}"),
            false,
        );
    }
    for (k, v) in [
        ("per_principal", "\"9/s\""),
        ("per_ip_anonymous", "\"8/s\""),
        ("burst", "\"3s\"\nper_principal = \"1/s\""),
    ] {
        add(
            &format!("proxy.rate_limit.{k}"),
            "[proxy.rate_limit]",
            format!("{k} = {v}"),
            false,
        );
    }
    // TLS is chosen at start: both paths are reported as needing a restart.
    for k in ["cert", "key"] {
        add(
            &format!("proxy.tls.{k}"),
            "[proxy.tls]",
            "cert = \"c.pem\"\nkey = \"k.pem\"".into(),
            false,
        );
    }
    // An API key file, and an issuer that does not answer (its keys are simply never loaded).
    let sha = "0".repeat(64);
    std::fs::write(
        i.dir.path().join("keys.toml"),
        format!("[[key]]\nname = \"walk\"\nsha256 = \"{sha}\"\n"),
    )
    .expect("key file");
    for (k, v) in [
        (
            "mode",
            "\"api-key\"\napi_keys_file = \"keys.toml\"".to_string(),
        ),
        (
            "issuer",
            "\"http://127.0.0.1:1\"\nmode = \"oauth\"\naudience = \"http://127.0.0.1:2\"".into(),
        ),
        (
            "audience",
            "\"http://127.0.0.1:2\"\nmode = \"oauth\"\nissuer = \"http://127.0.0.1:1\"".into(),
        ),
        ("ca_file", "\"ca.pem\"".into()),
        ("api_keys_file", "\"keys.toml\"\nmode = \"api-key\"".into()),
        ("allow_anonymous", "true".into()),
        ("leeway", "\"10s\"".into()),
        ("jwks_refresh", "\"1m\"".into()),
        ("jwks_cooldown", "\"5s\"".into()),
        ("token_cache", "50".into()),
        ("audit", "\"all\"".into()),
    ] {
        add(&format!("auth.{k}"), "[auth]", format!("{k} = {v}"), false);
    }
    out
}

#[test]
fn every_key_of_the_model_is_applied_on_reload_or_reported_as_needing_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports = free_port_block(3);
    let i = Instance {
        dir,
        proxy: free_port(),
        admin: free_port(),
        monitor: free_port(),
        ports,
        spare: free_port(),
    };
    let base = i.config(None);
    i.write(&base);
    let _serve = serve(&i);
    let walk = changes(&i);

    // The walk covers the table, and the table covers the model (a unit test of config::keys
    // proves that half against the file format's own field list).
    let walked: Vec<&str> = walk.iter().map(|(k, _)| k.as_str()).collect();
    let table = mcp_fleet::config::keys::names();
    for key in &table {
        assert!(
            walked.contains(&key.as_str()),
            "no change for {key} in this walk"
        );
    }
    assert_eq!(walked.len(), table.len(), "a key walked twice");

    let before = i.values();
    for (key, edit) in &walk {
        let text = i.config(Some(edit));
        i.write(&text);
        let report = i.reload();
        let real = key.replace("categories.*.", "categories.walk.");
        let named = |list: &str| {
            report[list]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["key"] == real.as_str())
                .cloned()
        };
        let reload = KEYS
            .iter()
            .find(|k| k.name == key.as_str())
            .map_or(Reload::Applied, |k| k.reload);
        let now = i.values();
        match reload {
            Reload::Applied => {
                let change = named("changes").unwrap_or_else(|| {
                    panic!("{key}: not in the applied changes: {report}\n{text}")
                });
                assert!(named("needs_restart").is_none(), "{key}: {report}");
                assert_eq!(
                    now.get(&real).map(String::as_str),
                    change["new"].as_str(),
                    "{key}: GET /config does not show the applied value"
                );
                assert_ne!(now.get(&real), before.get(&real), "{key}: nothing changed");
            }
            Reload::Restart => {
                let change = named("needs_restart").unwrap_or_else(|| {
                    panic!("{key}: not reported as needing a restart: {report}\n{text}")
                });
                assert!(named("changes").is_none(), "{key}: {report}");
                assert_eq!(
                    now.get(&real),
                    before.get(&real),
                    "{key}: a restart key must keep its running value"
                );
                assert_eq!(
                    change["old"].as_str(),
                    before.get(&real).map(String::as_str)
                );
            }
        }
        // Back to the base: the same key is reported again, and everything is as before.
        i.write(&base);
        let back = i.reload();
        if reload == Reload::Applied {
            assert!(
                back["changes"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|c| c["key"] == real.as_str())),
                "{key}: the way back is not reported: {back}"
            );
        }
        assert_eq!(
            i.values(),
            before,
            "{key}: the base config did not come back"
        );
    }

    // A whole category, added and removed.
    let spare = free_port();
    i.write(&i.config(Some(&Edit {
        section: "[categories.extra]",
        line: format!("backends = [\"127.0.0.1:{spare}\"]"),
        replace: false,
    })));
    let report = i.reload();
    assert!(
        report["changes"].as_array().is_some_and(|l| l
            .iter()
            .any(|c| c["key"] == "categories.extra" && c["new"] == "added")),
        "{report}"
    );
    i.write(&base);
    let report = i.reload();
    assert!(
        report["changes"].as_array().is_some_and(|l| l
            .iter()
            .any(|c| c["key"] == "categories.extra" && c["new"] == "removed")),
        "{report}"
    );
}

fn serve(i: &Instance) -> common::Proc {
    let child = std::process::Command::new(common::BIN)
        .args(["serve", "--config"])
        .arg(i.dir.path().join("fleet.toml"))
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("serve");
    let proc = common::Proc {
        child,
        name: "mcp-fleet serve".into(),
    };
    common::wait_for("the admin API", Duration::from_secs(30), || {
        (i.dir.path().join("state/admin.token").exists()
            && std::net::TcpStream::connect(("127.0.0.1", i.admin)).is_ok())
        .then_some(())
    });
    proc
}
