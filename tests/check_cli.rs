//! `mcp-fleet check`: exit 0 for a good file, exit 2 with every error (key, value, why) for a bad
//! one; the shipped configs pass.

mod common;

use std::process::Command;

fn check(text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("f.toml");
    std::fs::write(&path, text).expect("write");
    let out = Command::new(common::BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run check");
    let mut text = String::from_utf8_lossy(&out.stdout).to_string();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn shipped_configs_pass() {
    let conf = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    let mut checked = 0;
    for entry in std::fs::read_dir(conf).expect("conf/") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let out = Command::new(common::BIN)
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .expect("run check");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 2);
}

#[test]
fn each_bad_config_is_refused_with_its_reason() {
    let cases: &[(&str, &str)] = &[
        (
            "[categories.a]\nports = \"100-199\"\n[categories.b]\nports = \"150-250\"\n",
            "categories.b.ports = \"150-250\": overlaps categories.a.ports",
        ),
        (
            "[categories.a]\nports = \"100-109\"\nservers = 11\n",
            "categories.a.servers = 11: larger than its port range",
        ),
        (
            "[categories.a]\nports = \"65530-65540\"\n",
            "categories.a.ports = \"65530-65540\": ports must lie within 1-65535",
        ),
        (
            "[proxy]\nlisten = \"127.0.0.1:8080\"\ncolour = 1\n[categories.a]\nports = \"100-101\"\n",
            "proxy.colour = (set): unknown key",
        ),
        (
            "[proxy]\nconnect_timeout = \"soon\"\n[categories.a]\nports = \"100-101\"\n",
            "proxy.connect_timeout = \"soon\"",
        ),
        (
            "[proxy]\nlisten = \"127.0.0.1:9090\"\n[categories.a]\nports = \"100-101\"\n",
            "monitor.listen = \"127.0.0.1:9090\": same listen address as proxy.listen",
        ),
        ("[proxy\n", "not valid TOML"),
    ];
    for (text, expected) in cases {
        let (code, out) = check(text);
        assert_eq!(code, 2, "{text}\n{out}");
        assert!(out.contains(expected), "expected {expected:?} in:\n{out}");
    }
}

#[test]
fn all_errors_come_in_one_run() {
    let (code, out) = check(
        "[proxy]\nthreads = 0\nbogus = 1\n[categories.a]\nports = \"100-199\"\nservers = 500\n",
    );
    assert_eq!(code, 2);
    assert!(out.contains("has 3 error(s)"), "{out}");
}

#[test]
fn ranges_in_the_ephemeral_range_get_the_sysctl_fix() {
    let range =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").expect("ephemeral range");
    let lo: u16 = range
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .expect("low");
    let (code, out) = check(&format!("[categories.a]\nports = \"{lo}-{}\"\n", lo + 9));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "sysctl -w net.ipv4.ip_local_reserved_ports={lo}-{}",
            lo + 9
        )),
        "{out}"
    );
}
