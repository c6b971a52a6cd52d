//! TLS at the listener (`[proxy.tls]`), with a test CA made by the `openssl` CLI: curl over
//! HTTP/1.1 and HTTP/2 (ALPN) with verification on, the official Python SDK verifying against
//! the CA, `check` on the pair, and a renewed certificate loaded by SIGHUP under load with no
//! failed request.

mod common;

use common::tls::{make_ca, make_cert};
use common::{signal, FleetDir, Proc, Sections};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The serial of the certificate a new handshake with 127.0.0.1:port gets.
fn served_serial(port: u16) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} -servername localhost </dev/null 2>/dev/null | openssl x509 -noout -serial"
        ))
        .output()
        .expect("s_client");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn serial_of(file: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(file)
        .output()
        .expect("openssl");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

const BODY: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"over tls"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"curl","version":"1"},"io.modelcontextprotocol/clientCapabilities":{}}}}"#;

/// curl POSTs of the echo to `url` (`n` transfers, `parallel` at a time, `--http2` if asked),
/// verified against `ca`; every transfer's "status version".
fn curl(ca: &Path, url: &str, n: usize, parallel: usize, http2: bool) -> Vec<String> {
    let mut cmd = Command::new("curl");
    if parallel > 1 {
        cmd.args(["--parallel", "--parallel-max", &parallel.to_string()]);
    }
    for i in 0..n {
        // Each transfer after `--next` starts with no options: give every one the same.
        if i > 0 {
            cmd.arg("--next");
        }
        cmd.args(["-s", "--cacert"]).arg(ca);
        cmd.args(["-o", "/dev/null", "-w", "%{http_code} %{http_version}\\n"]);
        cmd.arg(if http2 { "--http2" } else { "--http1.1" });
        cmd.args([
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "-H",
            "accept: application/json, text/event-stream",
            "-H",
            "mcp-protocol-version: 2026-07-28",
            "-H",
            "mcp-method: tools/call",
            "-H",
            "mcp-name: echo",
            "--data",
            BODY,
            url,
        ]);
    }
    let out = cmd.output().expect("curl runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn serve_tls(fleet: &FleetDir, ca: &Path) -> Proc {
    let proc = fleet.serve_no_wait();
    let url = format!("https://localhost:{}/mcp/api", fleet.proxy_port);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if curl(ca, &url, 1, 1, false)
            .first()
            .is_some_and(|s| s.starts_with("200"))
        {
            return proc;
        }
        assert!(Instant::now() < deadline, "no TLS answer: {}", fleet.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn tls_serves_http1_and_http2_and_renews_its_certificate_under_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    make_ca(d);
    make_cert(d, "one", "2");
    make_cert(d, "two", "2");
    std::fs::copy(d.join("one.pem"), d.join("cert.pem")).expect("copy");
    std::fs::copy(d.join("one.key"), d.join("key.pem")).expect("copy");
    let tls = format!(
        "[proxy.tls]\ncert = \"{}\"\nkey = \"{}\"",
        d.join("cert.pem").display(),
        d.join("key.pem").display()
    );
    let fleet = FleetDir::with_sections(
        &[("api", 2)],
        &[],
        &Sections {
            proxy: &tls,
            ..Sections::default()
        },
    );
    let (code, out) = fleet.cli(&["check"]);
    assert_eq!(code, 0, "{out}");
    let serve = serve_tls(&fleet, &d.join("ca.pem"));
    let ca = d.join("ca.pem");
    let url = format!("https://localhost:{}/mcp/api", fleet.proxy_port);

    // HTTP/1.1 (the fast path's engine) and HTTP/2 by ALPN, verified against the test CA.
    assert_eq!(
        curl(&ca, &url, 3, 1, false),
        ["200 1.1", "200 1.1", "200 1.1"]
    );
    let pingora_before = fleet.metric("mcp_fleet_request_paths_total{path=\"pingora\"}");
    assert_eq!(curl(&ca, &url, 3, 3, true), ["200 2", "200 2", "200 2"]);
    let pingora = fleet.metric("mcp_fleet_request_paths_total{path=\"pingora\"}") - pingora_before;
    assert!(
        pingora >= 3.0,
        "HTTP/2 requests are counted on Pingora's path: {pingora}"
    );
    // Plain HTTP on the TLS port is not served.
    assert!(
        common::plain::blocking_get(&format!("{}/health", fleet.base()))
            .is_none_or(|(s, _)| s != 200)
    );

    // The official Python SDK, verifying the server against the CA.
    let py = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/stdio-servers/py");
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/sdk_client.py"
        ))
        .arg(&url)
        .args(["call", r#"echo={"text": "sdk over tls"}"#])
        .env("PYTHONPATH", &py)
        .env("MCP_CA_FILE", &ca)
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("sdk over tls"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Renewal under load: clients keep sending (new connections and kept-alive ones) while
    // the files are replaced and SIGHUP reloads them; no request may fail.
    assert_eq!(
        served_serial(fleet.proxy_port),
        serial_of(&d.join("one.pem"))
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (stop, ca, url) = (stop.clone(), ca.clone(), url.clone());
        std::thread::spawn(move || {
            let mut all = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) || all.len() < 200 {
                all.extend(curl(&ca, &url, 20, 4, false));
                all.extend(curl(&ca, &url, 10, 5, true));
            }
            all
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    for (from, to) in [("two.key", "key.pem"), ("two.pem", "cert.pem")] {
        let tmp = d.join(format!("{to}.new"));
        std::fs::copy(d.join(from), &tmp).expect("copy");
        std::fs::rename(&tmp, d.join(to)).expect("rename");
    }
    signal(serve.pid(), SIGHUP);
    let new_serial = serial_of(&d.join("two.pem"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while served_serial(fleet.proxy_port) != new_serial {
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was never served: {}",
            fleet.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let statuses = load.join().expect("load thread");
    let failed: Vec<&String> = statuses.iter().filter(|s| !s.starts_with("200")).collect();
    eprintln!(
        "{} requests across the renewal, {} failed",
        statuses.len(),
        failed.len()
    );
    assert!(statuses.len() >= 200);
    assert!(failed.is_empty(), "{failed:?}");

    // A reload whose pair does not load is refused; the renewed certificate keeps serving.
    std::fs::write(d.join("key.pem"), "not a key").expect("write");
    let (code, out) = fleet.cli(&["reload"]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("proxy.tls.key"), "{out}");
    assert_eq!(served_serial(fleet.proxy_port), new_serial);
    assert_eq!(curl(&ca, &url, 1, 1, false), ["200 1.1"]);
    fleet.assert_engine();
}

#[test]
fn check_refuses_a_pair_that_does_not_match_and_warns_before_expiry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    make_ca(d);
    make_cert(d, "one", "2");
    make_cert(d, "two", "2");
    let config = |cert: &str, key: &str| {
        let text = format!(
            "[proxy]\nlisten = \"127.0.0.1:{}\"\n[proxy.tls]\ncert = \"{cert}\"\nkey = \"{key}\"\n[categories.a]\nports = \"41000-41001\"\n",
            common::free_port()
        );
        let path = d.join("fleet.toml");
        std::fs::write(&path, text).expect("write");
        let out = Command::new(common::BIN)
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .expect("check");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, out) = config("one.pem", "two.key");
    assert!(!ok, "a key of another certificate: {out}");
    assert!(out.contains("proxy.tls.key"), "{out}");
    let (ok, out) = config("one.pem", "one.key");
    assert!(ok, "{out}");
    assert!(
        out.contains("expires in 1 days") || out.contains("expires in 2 days"),
        "{out}"
    );
    let (ok, out) = config("missing.pem", "one.key");
    assert!(!ok && out.contains("proxy.tls.cert"), "{out}");
}

const SIGHUP: i32 = 1;
