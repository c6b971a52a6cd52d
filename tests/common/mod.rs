//! Test harness: starts the real `mcp-fleet` binary (as proxy and as built-in backend) on
//! loopback ports found free at run time, waits on conditions with deadlines (never a bare
//! sleep), and kills every process it started, by PID, when dropped.
#![allow(dead_code)]

pub mod auth;
pub mod dns;
pub mod engines;
pub mod fake;
pub mod raw;
pub mod stdio;
pub mod tls;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_mcp-fleet");

/// A free loopback port (the OS picks; the listener is dropped before use).
pub fn free_port() -> u16 {
    // The kernel may hand the same free port to two tests of this process that ask before
    // either binds it (one test's proxy then answered another's health checks with 404): a
    // port is given out once per process.
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let mut given = GIVEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

static NEXT_BLOCK: AtomicU16 = AtomicU16::new(0);

/// `n` (at most 128) consecutive free ports below the kernel's ephemeral range (so no outgoing connection
/// takes one before its server binds). Each test process starts at a different offset.
pub fn free_port_block(n: u16) -> u16 {
    let seed = (std::process::id() as u16).wrapping_mul(7919) % 90;
    loop {
        let k = NEXT_BLOCK.fetch_add(1, Ordering::Relaxed);
        let start = 20_000 + ((seed + k * 7) % 90) * 128;
        assert!(k < 2000, "no free block of {n} ports");
        let free = (start..start + n).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok());
        if free {
            return start;
        }
    }
}

/// Polls `check` until it returns `Some`, failing the test after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(10);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// PIDs of the direct children of `pid` but the fleet's watchdog (`mcp-fleet reap-cgroups`):
/// the servers `serve` runs.
pub fn children_of(pid: u32) -> Vec<u32> {
    every_child_of(pid)
        .into_iter()
        .filter(|kid| {
            !std::fs::read(format!("/proc/{kid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("reap-cgroups"))
        })
        .collect()
}

/// PIDs of every direct child of `pid`, from /proc.
pub fn every_child_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    out
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X"))
        }
        Err(_) => false,
    }
}

pub fn signal(pid: u32, sig: i32) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// A process this test started; killed (with every child it had) when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit, returning its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let name = self.name.clone();
        let status = wait_for(&format!("{name} to exit"), timeout, || {
            self.child.try_wait().ok().flatten()
        });
        status.code()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = self.child.id();
        let kids = every_child_of(pid);
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Children end with it (PDEATHSIG), and the fleet's watchdog ends what they forked
        // before it exits: give them that moment before killing what is left.
        let settle = Instant::now() + Duration::from_secs(2);
        while kids.iter().any(|&k| alive(k)) && Instant::now() < settle {
            std::thread::sleep(Duration::from_millis(10));
        }
        for &kid in &kids {
            signal(kid, 9);
        }
        // Wait until they are gone, so the next test does not find their ports still bound.
        let deadline = Instant::now() + Duration::from_secs(5);
        while kids.iter().any(|&k| alive(k)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// PIDs of every live process whose command line contains `marker`.
pub fn processes_with(marker: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                String::from_utf8_lossy(&c)
                    .replace('\0', " ")
                    .contains(marker)
            }) && alive(*pid)
        })
        .collect()
}

/// Starts `mcp-fleet backend` on a free port and waits until it accepts connections.
pub fn start_backend(category: &str, port: u16) -> Proc {
    start_backend_with(category, port, &[])
}

/// `start_backend` with extra flags (e.g. `--delay-ms 200`).
pub fn start_backend_with(category: &str, port: u16, flags: &[&str]) -> Proc {
    start_backend_at(
        category,
        std::net::IpAddr::from([127, 0, 0, 1]),
        port,
        flags,
    )
}

/// The built-in server on `host:port` (a loopback alias such as 127.0.0.2 stands for another
/// machine).
pub fn start_backend_on(category: &str, host: std::net::IpAddr, port: u16) -> Proc {
    start_backend_at(category, host, port, &[])
}

fn start_backend_at(category: &str, host: std::net::IpAddr, port: u16, flags: &[&str]) -> Proc {
    let child = Command::new(BIN)
        .args([
            "backend",
            "--port",
            &port.to_string(),
            "--category",
            category,
            "--host",
        ])
        .arg(host.to_string())
        .args(flags)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start backend");
    let proc = Proc {
        child,
        name: format!("backend {category}@{host}:{port}"),
    };
    wait_for("backend to listen", Duration::from_secs(20), || {
        std::net::TcpStream::connect((host, port)).ok()
    });
    proc
}

/// The `proxy.fast_path` line the suites run with: `MCP_FLEET_TEST_FAST_PATH=false` sends every
/// request of every suite through Pingora's path (`.ci/run` runs the request-path suites both
/// ways). A test that sets `fast_path` itself keeps its own setting.
fn engine_setting(proxy_lines: &str) -> String {
    match std::env::var("MCP_FLEET_TEST_FAST_PATH") {
        Ok(v) if !proxy_lines.contains("fast_path") => format!("fast_path = {}\n", v.trim()),
        _ => String::new(),
    }
}

/// Whether this run sends requests through the fast path (see `engine_setting`).
pub fn fast_path_on() -> bool {
    std::env::var("MCP_FLEET_TEST_FAST_PATH").map_or(true, |v| v.trim() != "false")
}

/// Extra config lines for `FleetDir::with_sections`.
#[derive(Default)]
pub struct Sections<'a> {
    pub proxy: &'a str,
    pub fleet: &'a str,
    pub health: &'a str,
    /// Lines of an `[auth]` section (none when empty).
    pub auth: &'a str,
    pub categories: Vec<(&'a str, String)>,
}

/// A config file and its folder for one proxy instance.
pub struct FleetDir {
    pub dir: tempfile::TempDir,
    pub proxy_port: u16,
    pub admin_port: u16,
    pub monitor_port: u16,
}

impl FleetDir {
    /// `spawned`: (category, servers); `statics`: (category, backend addresses).
    pub fn new(spawned: &[(&str, u16)], statics: &[(&str, Vec<SocketAddr>)]) -> Self {
        Self::with_extra(spawned, statics, "")
    }

    pub fn with_extra(
        spawned: &[(&str, u16)],
        statics: &[(&str, Vec<SocketAddr>)],
        extra_fleet: &str,
    ) -> Self {
        Self::with_sections(
            spawned,
            statics,
            &Sections {
                fleet: extra_fleet,
                ..Sections::default()
            },
        )
    }

    /// Like `new`, with extra lines for the `[proxy]`, `[fleet]` and `[health]` sections and
    /// per-category settings (`(category, lines)`).
    pub fn with_sections(
        spawned: &[(&str, u16)],
        statics: &[(&str, Vec<SocketAddr>)],
        sections: &Sections,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let proxy_port = free_port();
        let engine = engine_setting(sections.proxy);
        let (monitor_port, admin_port) = (free_port(), free_port());
        let mut text = format!(
            "[proxy]\nlisten = \"127.0.0.1:{proxy_port}\"\nshutdown_grace = \"5s\"\n{engine}{}\n\
             [monitor]\nlisten = \"127.0.0.1:{}\"\n[admin]\nlisten = \"127.0.0.1:{}\"\n\
             [health]\n{}\n\
             [fleet]\n{}stop_grace = \"2s\"\n{}\n",
            sections.proxy,
            monitor_port,
            admin_port,
            if sections.health.is_empty() {
                "interval = \"1s\"\ntimeout = \"500ms\""
            } else {
                sections.health
            },
            if sections.fleet.contains("batch_size") {
                ""
            } else {
                "batch_size = 4\n"
            },
            sections.fleet,
        );
        let category_extra = |name: &str| {
            sections
                .categories
                .iter()
                .filter(|(c, _)| *c == name)
                .map(|(_, lines)| format!("{lines}\n"))
                .collect::<String>()
        };
        if spawned.is_empty() {
            text.push_str("enabled = false\n");
        }
        if !sections.auth.is_empty() {
            text.push_str(&format!("[auth]\n{}\n", sections.auth));
        }
        for (name, n) in spawned {
            let start = free_port_block(*n);
            text.push_str(&format!(
                "[categories.{name}]\nports = \"{start}-{}\"\n{}",
                start + n - 1,
                category_extra(name)
            ));
        }
        for (name, addrs) in statics {
            let list: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
            text.push_str(&format!(
                "[categories.{name}]\nbackends = [{}]\n{}",
                list.join(", "),
                category_extra(name)
            ));
        }
        std::fs::write(dir.path().join("fleet.toml"), text).expect("write config");
        Self {
            dir,
            proxy_port,
            admin_port,
            monitor_port,
        }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("fleet.toml")
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.proxy_port)
    }

    /// Starts `serve` and waits until every server is taking requests (ready, healthy, not
    /// ejected), per `/stats`.
    pub fn serve(&self) -> Proc {
        let mut proc = self.serve_no_wait();
        let url = format!("{}/stats", self.base());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some((200, body)) = plain::blocking_get(&url) {
                let all = serde_json::from_str::<serde_json::Value>(&body)
                    .is_ok_and(|v| v["ready"] == v["total"] && v["total"].as_u64() > Some(0));
                if all {
                    return proc;
                }
            }
            let exited = proc.child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() > deadline {
                let log = self.log();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                panic!(
                    "the fleet was not ready (exit: {exited:?}); health: {:?}\nlog tail:\n{}",
                    plain::blocking_get(&url),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn serve_no_wait(&self) -> Proc {
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(self.config())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(self.path().join("serve.log"))
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            )
            .spawn()
            .expect("start serve");
        Proc {
            child,
            name: "mcp-fleet serve".into(),
        }
    }

    pub fn admin_base(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    /// The value of the first `/metrics` line starting with `line_prefix` (a metric name with
    /// its labels); NaN when the monitor does not answer or has no such line.
    pub fn metric(&self, line_prefix: &str) -> f64 {
        let url = format!("http://127.0.0.1:{}/metrics", self.monitor_port);
        plain::blocking_get(&url)
            .and_then(|(_, body)| {
                body.lines()
                    .find(|l| l.starts_with(line_prefix))
                    .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            })
            .unwrap_or(f64::NAN)
    }

    /// Asserts that the instance's requests took the engine this run asks for
    /// (`fast_path_on`): the fast path carried some, or none at all.
    pub fn assert_engine(&self) {
        let fast = self.metric("mcp_fleet_request_paths_total{path=\"fast\"}");
        if fast_path_on() {
            assert!(fast > 0.0, "no request took the fast path");
        } else {
            assert_eq!(
                fast, 0.0,
                "requests took the fast path with fast_path = false"
            );
        }
    }

    /// The admin token the instance generated at first start.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.path().join("state/admin.token"))
            .map(|t| t.trim().to_string())
            .unwrap_or_default()
    }

    /// Runs `mcp-fleet ARGS --config <this config>`; returns (exit code, stdout + stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String) {
        let out = Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(self.config())
            .output()
            .expect("run the CLI");
        let mut text = String::from_utf8_lossy(&out.stdout).to_string();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.code().unwrap_or(-1), text)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path().join("serve.log")).unwrap_or_default()
    }
}

/// A tiny blocking HTTP GET for polling (the tests' async client lives in tokio tasks).
pub mod plain {
    use std::io::{Read, Write};

    /// (status, body) of `GET url`, or None when the server is not answering yet.
    pub fn blocking_get(url: &str) -> Option<(u16, String)> {
        let rest = url.strip_prefix("http://")?;
        let (host, path) = rest
            .split_once('/')
            .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
        let mut stream = std::net::TcpStream::connect(host).ok()?;
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
        Some((status, body))
    }

    /// One authenticated call to the admin API on `port`: (status, JSON body, or Null).
    pub fn admin_call(
        port: u16,
        token: &str,
        method: &str,
        path: &str,
    ) -> (u16, serde_json::Value) {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("admin API up");
        s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .expect("timeout");
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .expect("write");
        let mut text = String::new();
        s.read_to_string(&mut text).expect("read");
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        (
            status,
            serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
        )
    }
}

/// MCP helpers over rmcp's client.
pub mod mcp {
    use rmcp::model::{CallToolRequestParams, CallToolResult};
    use rmcp::service::RunningService;
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::{RoleClient, ServiceExt};

    pub type Client = RunningService<RoleClient, ()>;

    /// Initializes a 2025-11-25 session at `url`.
    pub async fn connect(url: &str) -> Client {
        let transport = StreamableHttpClientTransport::from_uri(url.to_string());
        ().serve(transport).await.expect("MCP initialize")
    }

    pub fn server_name(client: &Client) -> String {
        client
            .peer_info()
            .and_then(|i| i.server_info.as_ref().map(|s| s.name.clone()))
            .unwrap_or_default()
    }

    pub async fn call(
        client: &Client,
        tool: &str,
        args: serde_json::Value,
    ) -> Result<CallToolResult, rmcp::ServiceError> {
        let args = args.as_object().cloned().unwrap_or_default();
        client
            .call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(args))
            .await
    }

    pub fn text(result: &CallToolResult) -> String {
        result
            .content
            .iter()
            .filter_map(|c| c.as_text().map(|t| t.text.clone()))
            .collect::<Vec<_>>()
            .join("")
    }
}

/// Raw HTTP helpers for what an MCP client library hides (headers, status codes, chunks).
pub mod http {
    pub const ACCEPT: &str = "application/json, text/event-stream";

    pub fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .pool_max_idle_per_host(8)
            .build()
            .expect("http client")
    }

    pub fn initialize_body() -> serde_json::Value {
        serde_json::json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "raw-test", "version": "1"}}
        })
    }

    /// A 2026-07-28 stateless `tools/call echo` request body.
    pub fn stateless_echo(text: &str) -> serde_json::Value {
        serde_json::json!({
            "jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": text},
                "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                          "io.modelcontextprotocol/clientInfo": {"name": "raw-test", "version": "1"},
                          "io.modelcontextprotocol/clientCapabilities": {}}}
        })
    }

    /// Current `/stats` of a proxy.
    pub async fn stats(c: &reqwest::Client, base: &str) -> serde_json::Value {
        c.get(format!("{base}/stats"))
            .send()
            .await
            .expect("stats")
            .json()
            .await
            .expect("stats json")
    }

    /// The server entries of one category in `/stats`.
    pub fn servers(stats: &serde_json::Value, category: &str) -> Vec<serde_json::Value> {
        stats["categories"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == category))
            .and_then(|c| c["servers"].as_array().cloned())
            .unwrap_or_default()
    }

    /// Sends `n` stateless echoes, `concurrency` at a time; returns the statuses.
    pub async fn blast(
        c: &reqwest::Client,
        url: &str,
        n: usize,
        concurrency: usize,
        header: Option<(&str, String)>,
    ) -> Vec<u16> {
        use futures::StreamExt;
        futures::stream::iter(0..n)
            .map(|i| {
                let c = c.clone();
                let header = header.clone();
                let url = url.to_string();
                async move {
                    let mut req = c
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("accept", ACCEPT)
                        .header("mcp-protocol-version", "2026-07-28")
                        .header("mcp-method", "tools/call")
                        .header("mcp-name", "echo");
                    if let Some((k, v)) = header {
                        req = req.header(k, v);
                    }
                    match req.json(&stateless_echo(&format!("m{i}"))).send().await {
                        Ok(r) => {
                            let status = r.status().as_u16();
                            let _ = r.bytes().await;
                            status
                        }
                        Err(_) => 0,
                    }
                }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await
    }

    /// `initialize` a 2025-11-25 session; returns (the proxy's session id, the reply body).
    pub async fn initialize(c: &reqwest::Client, url: &str) -> (String, String) {
        let resp = c
            .post(url)
            .header("accept", ACCEPT)
            .json(&initialize_body())
            .send()
            .await
            .expect("initialize");
        assert_eq!(resp.status().as_u16(), 200, "initialize");
        let sid = resp.headers()["mcp-session-id"]
            .to_str()
            .expect("ascii session id")
            .to_string();
        (sid, resp.text().await.unwrap_or_default())
    }

    /// `initialize` then `notifications/initialized`: a session ready for calls.
    pub async fn open_session(c: &reqwest::Client, url: &str) -> (String, String) {
        let (sid, body) = initialize(c, url).await;
        let resp = c
            .post(url)
            .header("accept", ACCEPT)
            .header("mcp-session-id", &sid)
            .json(&serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .send()
            .await
            .expect("initialized");
        assert_eq!(resp.status().as_u16(), 202, "notifications/initialized");
        (sid, body)
    }

    /// Starts `countdown {n, interval_ms}` in session `sid` with a progress token, returning the
    /// streaming response (progress events, then the result).
    pub async fn countdown(
        c: &reqwest::Client,
        url: &str,
        sid: &str,
        n: u32,
        interval_ms: u64,
    ) -> reqwest::Response {
        c.post(url)
            .header("accept", ACCEPT)
            .header("mcp-session-id", sid)
            .header("mcp-protocol-version", "2025-11-25")
            .json(
                &serde_json::json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                "params": {"name": "countdown", "arguments": {"n": n, "interval_ms": interval_ms},
                           "_meta": {"progressToken": "p"}}}),
            )
            .send()
            .await
            .expect("countdown")
    }

    /// A `tools/call` in session `sid`; returns (status, body).
    pub async fn session_tool(
        c: &reqwest::Client,
        url: &str,
        sid: &str,
        tool: &str,
        args: serde_json::Value,
    ) -> (u16, String) {
        let resp = c
            .post(url)
            .header("accept", ACCEPT)
            .header("mcp-session-id", sid)
            .header("mcp-protocol-version", "2025-11-25")
            .json(
                &serde_json::json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                                      "params": {"name": tool, "arguments": args}}),
            )
            .send()
            .await
            .expect("session call");
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }

    /// A 2026-07-28 stateless `tools/call` of `tool`; returns (status, body).
    pub async fn stateless_tool(
        c: &reqwest::Client,
        url: &str,
        tool: &str,
        args: serde_json::Value,
    ) -> (u16, String) {
        let body = serde_json::json!({
            "jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": tool, "arguments": args,
                "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                          "io.modelcontextprotocol/clientInfo": {"name": "raw-test", "version": "1"},
                          "io.modelcontextprotocol/clientCapabilities": {}}}
        });
        let resp = c
            .post(url)
            .header("accept", ACCEPT)
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/call")
            .header("mcp-name", tool)
            .json(&body)
            .send()
            .await
            .expect("send");
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }

    /// Sends a stateless echo; returns (status, body).
    pub async fn stateless_call(c: &reqwest::Client, url: &str, text: &str) -> (u16, String) {
        let resp = c
            .post(url)
            .header("content-type", "application/json")
            .header("accept", ACCEPT)
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/call")
            .header("mcp-name", "echo")
            .json(&stateless_echo(text))
            .send()
            .await
            .expect("send");
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }
}
