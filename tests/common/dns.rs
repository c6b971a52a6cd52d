//! A real DNS server for discovery tests: Debian's dnsmasq on a loopback port, answering only
//! from a hosts file in a folder it watches (a rewrite of the file is picked up at once), never
//! forwarding anywhere. Killed by PID with its `Proc`.

use super::{wait_for, Proc};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

pub struct Dnsmasq {
    pub proc: Proc,
    pub port: u16,
    dir: tempfile::TempDir,
}

fn binary() -> PathBuf {
    ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("dnsmasq is installed by .ci/setup (Debian package dnsmasq-base)")
}

impl Dnsmasq {
    /// Serves `records` (name, address) with a 1 s TTL.
    pub fn start(records: &[(&str, IpAddr)]) -> Self {
        Self::start_with(records, &[])
    }

    /// Also with dnsmasq flags (`--srv-host=...`, `--local=/domain/` so that unknown names in
    /// it are NXDOMAIN rather than refused).
    pub fn start_with(records: &[(&str, IpAddr)], flags: &[String]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("hosts")).expect("hosts dir");
        let port = super::free_port();
        let me = Self {
            proc: Proc {
                child: Command::new(binary())
                    .args([
                        "--keep-in-foreground",
                        "--no-resolv",
                        "--no-hosts",
                        "--no-poll",
                        "--conf-file=/dev/null",
                        "--listen-address=127.0.0.1",
                        "--bind-interfaces",
                        "--local-ttl=1",
                        "--user=root",
                    ])
                    .arg(format!("--port={port}"))
                    .arg(format!("--hostsdir={}", dir.path().join("hosts").display()))
                    .arg(format!("--pid-file={}", dir.path().join("pid").display()))
                    .args(flags)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start dnsmasq"),
                name: "dnsmasq".into(),
            },
            port,
            dir,
        };
        me.set(records);
        wait_for("dnsmasq to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        me
    }

    /// Replaces every record (dnsmasq re-reads the changed file by itself).
    pub fn set(&self, records: &[(&str, IpAddr)]) {
        let text: String = records
            .iter()
            .map(|(name, ip)| format!("{ip} {name}\n"))
            .collect();
        let tmp = self.dir.path().join("records.tmp");
        std::fs::write(&tmp, text).expect("write records");
        std::fs::rename(&tmp, self.dir.path().join("hosts/records")).expect("move records");
    }
}
