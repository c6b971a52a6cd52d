use super::*;
use std::time::Duration;

fn check(text: &str) -> Result<ValidConfig, Vec<ConfigError>> {
    parse(text, Path::new("test.toml"), Path::new("/etc/fleet")).map_err(|e| match e {
        LoadError::Invalid { errors, .. } => errors,
        other => panic!("expected validation errors, got {other}"),
    })
}

fn errors_of(text: &str) -> Vec<ConfigError> {
    check(text).expect_err("config should be refused")
}

const MINIMAL: &str = r#"
[categories.database]
ports = "50000-50099"
servers = 100
"#;

#[test]
fn minimal_config_gets_the_defaults() {
    let c = check(MINIMAL).expect("valid");
    assert_eq!(c.proxy.listen, "127.0.0.1:8080".parse().expect("addr"));
    assert_eq!(c.proxy.threads, 2);
    assert_eq!(c.proxy.max_retries, 3);
    assert_eq!(c.proxy.shutdown_grace, Duration::from_secs(10));
    assert_eq!(c.monitor_listen.port(), 9090);
    assert_eq!(c.admin_listen.port(), 3000);
    assert_eq!(c.fleet.batch_size, 100);
    assert_eq!(c.fleet.state_dir, PathBuf::from("/etc/fleet/state"));
    let db = &c.categories[0];
    assert_eq!(db.servers, 100);
    assert_eq!(db.max_memory_mb, 150);
    assert_eq!(db.mcp_path, "/mcp");
    assert_eq!(db.command[0], SELF_COMMAND);
    assert_eq!(db.spawned_ports().count(), 100);
}

#[test]
fn categories_come_in_port_order() {
    let c = check(
        r#"
[categories.zeta]
ports = "100-101"
[categories.alpha]
ports = "200-201"
[categories.static]
backends = ["127.0.0.1:7000"]
"#,
    )
    .expect("valid");
    let names: Vec<_> = c.categories.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["zeta", "alpha", "static"]);
}

#[test]
fn every_error_is_reported_at_once_with_key_value_and_reason() {
    let errs = errors_of(
        r#"
[proxy]
listen = "127.0.0.1:8080"
lisen = "oops"
threads = 0
connect_timeout = "5"
[monitor]
listen = "127.0.0.1:8080"
[categories.a]
ports = "100-199"
servers = 101
[categories.b]
ports = "150-250"
[categories.c]
ports = "70000-70001"
[categories.d]
ports = "300-301"
colour = "blue"
"#,
    );
    let has = |key: &str, reason: &str| {
        errs.iter()
            .any(|e| e.key == key && e.reason.contains(reason))
    };
    assert!(has("proxy.lisen", "unknown key"), "{errs:?}");
    assert!(has("categories.d.colour", "unknown key"), "{errs:?}");
    assert!(has("proxy.threads", "between 1 and 256"), "{errs:?}");
    assert!(has("proxy.connect_timeout", "needs a unit"), "{errs:?}");
    assert!(
        has("monitor.listen", "same listen address as proxy.listen"),
        "{errs:?}"
    );
    assert!(
        has("categories.a.servers", "larger than its port range"),
        "{errs:?}"
    );
    assert!(
        has("categories.b.ports", "overlaps categories.a.ports"),
        "{errs:?}"
    );
    assert!(has("categories.c.ports", "within 1-65535"), "{errs:?}");
    let servers = errs
        .iter()
        .find(|e| e.key == "categories.a.servers")
        .expect("servers error");
    assert_eq!(servers.value, "101");
}

#[test]
fn bad_values_are_named() {
    let errs = errors_of(
        r#"
[proxy]
strategy = "random"
shutdown_grace = "10 parsecs"
[fleet]
command = ["srv", "--port", "{prot}"]
host = "localhost"
[categories."Bad Name"]
backends = ["not-an-addr", "127.0.0.1:0"]
[categories.ok]
ports = "0-5"
"#,
    );
    let has = |key: &str, reason: &str| {
        errs.iter()
            .any(|e| e.key == key && e.reason.contains(reason))
    };
    assert!(has("proxy.strategy", "unknown strategy"), "{errs:?}");
    assert!(has("proxy.shutdown_grace", "unknown unit"), "{errs:?}");
    assert!(has("fleet.command", "unknown variable {prot}"), "{errs:?}");
    assert!(has("fleet.host", "IP address"), "{errs:?}");
    assert!(has("categories.Bad Name", "a-z"), "{errs:?}");
    assert_eq!(
        errs.iter()
            .filter(|e| e.key == "categories.Bad Name.backends")
            .count(),
        2,
        "{errs:?}"
    );
    assert!(has("categories.ok.ports", "within 1-65535"), "{errs:?}");
}

#[test]
fn listen_port_inside_a_server_range_is_refused() {
    let errs = errors_of(
        r#"
[proxy]
listen = "127.0.0.1:50005"
[categories.database]
ports = "50000-50099"
"#,
    );
    assert!(errs
        .iter()
        .any(|e| e.key == "proxy.listen" && e.reason.contains("category database")));
}

#[test]
fn syntax_errors_are_not_validation_errors() {
    let err = parse("[proxy\nlisten=", Path::new("x.toml"), Path::new(".")).expect_err("must fail");
    assert!(matches!(err, LoadError::Syntax { .. }));
    let err = parse(
        "[proxy]\nthreads = \"two\"",
        Path::new("x.toml"),
        Path::new("."),
    )
    .expect_err("must fail");
    assert!(err.to_string().contains("threads"), "{err}");
}

#[test]
fn ephemeral_overlap_warns_with_the_fix() {
    let c = check(MINIMAL).expect("valid");
    let warnings = ephemeral_warnings(&c, 32768..=60999);
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].contains("net.ipv4.ip_local_reserved_ports=50000-50099"));
    assert!(ephemeral_warnings(&c, 32768..=40000).is_empty());
}

#[test]
fn a_stdio_category_gets_the_bridge_defaults_and_refuses_what_cannot_work() {
    let c = check(
        r#"
[categories.memory]
transport = "stdio"
command = ["node", "/opt/mcp/server-memory/dist/index.js"]
ports = "51000-51009"
"#,
    )
    .expect("valid");
    let stdio = c.categories[0].stdio.expect("bridged");
    assert_eq!(stdio.isolation, Isolation::Session);
    assert_eq!(stdio.max_sessions, 50);
    assert_eq!(stdio.idle_timeout, Duration::from_secs(600));
    assert_eq!(stdio.start, StartMode::OnDemand);
    assert_eq!(c.fleet.max_children, 1000);
    assert!(check(MINIMAL).expect("valid").categories[0].stdio.is_none());

    let errs = errors_of(
        r#"
[categories.memory]
transport = "stdio"
ports = "51000-51009"
isolation = "per-user"
max_sessions = 0
start = "lazy"
[categories.web]
ports = "52000-52001"
isolation = "shared"
idle_timeout = "1m"
[categories.typo]
transport = "stdoi"
ports = "53000-53001"
"#,
    );
    let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
    for key in [
        "categories.memory.command",
        "categories.memory.isolation",
        "categories.memory.max_sessions",
        "categories.memory.start",
        "categories.web.isolation",
        "categories.web.idle_timeout",
        "categories.typo.transport",
    ] {
        assert!(keys.contains(&key), "{key} not refused: {keys:?}");
    }
    let web = errs
        .iter()
        .find(|e| e.key == "categories.web.isolation")
        .expect("web.isolation");
    assert!(
        web.reason.contains("only for transport = \"stdio\""),
        "{}",
        web.reason
    );
}

#[test]
fn stdio_categories_warn_of_a_short_first_byte_timeout_and_a_missing_program() {
    let c = check(
        r#"
[categories.memory]
transport = "stdio"
command = ["nodejs-typo", "/opt/mcp/server-memory/dist/index.js"]
ports = "51000-51009"
"#,
    )
    .expect("valid");
    let w = stdio_warnings(&c, |p| p == "node");
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w[0].contains("proxy.first_byte_timeout") && w[0].contains("memory"),
        "{w:?}"
    );
    assert!(
        w[1].contains("categories.memory.command") && w[1].contains("nodejs-typo"),
        "{w:?}"
    );
    assert!(stdio_warnings(&check(MINIMAL).expect("valid"), |_| false).is_empty());
}

#[test]
fn a_listener_beyond_loopback_needs_authentication_or_words() {
    let open = format!("[proxy]\nlisten = \"0.0.0.0:8080\"\n{MINIMAL}");
    let e = errors_of(&open);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].key, "proxy.listen");
    assert!(
        e[0].reason.contains("auth.allow_anonymous"),
        "{}",
        e[0].reason
    );
    check(&format!("{open}\n[auth]\nallow_anonymous = true\n")).expect("said in words");
    let oauth = "[auth]\nmode = \"oauth\"\nissuer = \"https://idp.example.com/\"\naudience = \"https://mcp.example.com\"\n";
    let c = check(&format!("{open}\n{oauth}")).expect("authenticated");
    assert_eq!(c.auth.issuer.as_deref(), Some("https://idp.example.com"));
}

#[test]
fn auth_settings_are_refused_by_name() {
    let cases = [
        ("[auth]\nmode = \"oauth\"\n", "auth.issuer"),
        (
            "[auth]\nmode = \"oauth\"\nissuer = \"http://idp.example.com\"\naudience = \"https://m\"\n",
            "auth.issuer",
        ),
        ("[auth]\nmode = \"api-key\"\n", "auth.api_keys_file"),
        ("[auth]\nmode = \"token\"\n", "auth.mode"),
        ("[auth]\nissuer = \"https://idp\"\n", "auth.issuer"),
        ("[auth]\nleeway = \"1h\"\n", "auth.leeway"),
        ("[proxy.rate_limit]\nper_principal = \"fast\"\n", "proxy.rate_limit.per_principal"),
        (
            "[categories.database.auth]\ntools = [\"*\"]\n",
            "categories.database.auth.tools",
        ),
        (
            "[categories.other]\nports = \"51000-51001\"\nupstream_headers = { \"X-Key\" = \"s3cret\" }\n",
            "categories.other.upstream_headers.X-Key",
        ),
        (
            "[categories.other]\nports = \"51000-51001\"\nupstream_headers = { \"Host\" = \"env:PATH\" }\n",
            "categories.other.upstream_headers.Host",
        ),
    ];
    for (extra, key) in cases {
        let e = errors_of(&format!("{MINIMAL}\n{extra}"));
        assert!(e.iter().any(|e| e.key == key), "{key}: {e:?}");
    }
}

#[test]
fn the_api_key_file_is_read_and_each_entry_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("keys.toml");
    std::fs::write(
        &file,
        format!(
            "[[key]]\nname = \"a\"\nsha256 = \"{}\"\nscopes = [\"s\"]\n[[key]]\nname = \"b\"\nsha256 = \"xyz\"\n",
            "ab".repeat(32)
        ),
    )
    .expect("write");
    let text = format!(
        "{MINIMAL}\n[auth]\nmode = \"api-key\"\napi_keys_file = \"{}\"\n",
        file.display()
    );
    let e = errors_of(&text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].key, "auth.api_keys_file[1] (b).sha256");
    std::fs::write(
        &file,
        format!("[[key]]\nname = \"a\"\nsha256 = \"{}\"\n", "ab".repeat(32)),
    )
    .expect("write");
    let c = check(&text).expect("valid");
    assert_eq!(c.auth.api_keys.len(), 1);
    assert_eq!(c.auth.api_keys[0].sha256, [0xab; 32]);
}
