//! The auth tests' helpers: a real authorization server (npm `oidc-provider`, installed by
//! `.ci/setup` into `target/auth-server`, run from `tests/fixtures/auth_server.mjs`), its
//! signing keys in a file the test owns, tokens from its token endpoint, and hand-made tokens
//! (`tests/fixtures/jwt_tool.mjs`) for the cases no honest server issues.

use super::{free_port, wait_for, Proc};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
const SERVER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target/auth-server");

/// Runs `node tests/fixtures/jwt_tool.mjs ARGS`; its one line of output.
pub fn jwt_tool(args: &[&str]) -> String {
    let out = Command::new("node")
        .arg(format!("{FIXTURES}/jwt_tool.mjs"))
        .args(args)
        .output()
        .expect("node runs");
    assert!(
        out.status.success(),
        "jwt_tool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A private JWK set (kids `rs-S`, `es-S`, `ed-S`) written to `dir/keys-S.json`.
pub fn key_set(dir: &Path, suffix: &str) -> PathBuf {
    let path = dir.join(format!("keys-{suffix}.json"));
    std::fs::write(&path, jwt_tool(&["keys", suffix])).expect("write keys");
    path
}

/// Both sets' keys in one file (a rotation: the new key beside the old).
pub fn merged(dir: &Path, a: &Path, b: &Path) -> PathBuf {
    let read = |p: &Path| -> Vec<serde_json::Value> {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(p).expect("keys")).expect("json");
        v["keys"].as_array().cloned().unwrap_or_default()
    };
    let mut keys = read(a);
    keys.extend(read(b));
    let path = dir.join("keys-merged.json");
    std::fs::write(&path, serde_json::json!({ "keys": keys }).to_string()).expect("write");
    path
}

pub struct AuthServer {
    pub port: u16,
    pub audience: String,
    proc: Option<Proc>,
    /// Served over HTTPS with this (certificate, key, CA) from `tests/common/tls.rs`.
    tls: Option<(PathBuf, PathBuf, PathBuf)>,
}

impl AuthServer {
    pub fn issuer(&self) -> String {
        match self.tls {
            Some(_) => format!("https://localhost:{}", self.port),
            None => format!("http://127.0.0.1:{}", self.port),
        }
    }

    /// As [`Self::start`], over HTTPS with `cert`/`key`, which `ca` signs.
    pub fn start_tls(keys: &Path, audience: &str, cert: &Path, key: &Path, ca: &Path) -> Self {
        let mut s = Self {
            port: free_port(),
            audience: audience.to_string(),
            proc: None,
            tls: Some((cert.to_path_buf(), key.to_path_buf(), ca.to_path_buf())),
        };
        s.run(keys);
        s
    }

    /// `curl` of `url` (verified against the CA when served over HTTPS): status and body.
    fn curl(&self, args: &[&str]) -> (u16, String) {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-w", "\n%{http_code}"]);
        if let Some((_, _, ca)) = &self.tls {
            cmd.arg("--cacert").arg(ca);
        }
        let out = cmd.args(args).output().expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or((&text, "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// Starts the server signing with `keys`, for resources under `audience`.
    pub fn start(keys: &Path, audience: &str) -> Self {
        let mut s = Self {
            port: free_port(),
            audience: audience.to_string(),
            proc: None,
            tls: None,
        };
        s.run(keys);
        s
    }

    fn run(&mut self, keys: &Path) {
        assert!(
            Path::new(SERVER_DIR)
                .join("node_modules/oidc-provider")
                .exists(),
            "oidc-provider is not installed: run .ci/setup"
        );
        let mut cmd = Command::new("node");
        if let Some((cert, key, _)) = &self.tls {
            cmd.env("TLS_CERT", cert).env("TLS_KEY", key);
        }
        let child = cmd
            .arg(format!("{FIXTURES}/auth_server.mjs"))
            .arg(self.port.to_string())
            .arg(keys)
            .arg(&self.audience)
            .current_dir(SERVER_DIR)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the authorization server");
        self.proc = Some(Proc {
            child,
            name: "oidc-provider".into(),
        });
        let url = format!("{}/.well-known/openid-configuration", self.issuer());
        wait_for("the authorization server", Duration::from_secs(30), || {
            (self.curl(&[&url]).0 == 200).then_some(())
        });
    }

    /// Stops it and starts it again, on the same port, signing with `keys`.
    pub fn restart(&mut self, keys: &Path) {
        self.proc = None;
        self.run(keys);
    }

    /// A client-credentials token for `client` (secret `secret-{client}`), `scope`, and the
    /// resource `resource` (RFC 8707).
    pub async fn token(&self, client: &str, scope: &str, resource: &str) -> String {
        if self.tls.is_some() {
            // The tests' reqwest speaks no TLS: curl, verifying against the test CA.
            let (status, body) = self.curl(&[
                "-u",
                &format!("{client}:secret-{client}"),
                "-d",
                &form(&[
                    ("grant_type", "client_credentials"),
                    ("scope", scope),
                    ("resource", resource),
                ]),
                &format!("{}/token", self.issuer()),
            ]);
            assert_eq!(status, 200, "token endpoint: {body}");
            let v: serde_json::Value = serde_json::from_str(&body).expect("token json");
            return v["access_token"].as_str().expect("a token").to_string();
        }
        let resp = reqwest::Client::new()
            .post(format!("{}/token", self.issuer()))
            .basic_auth(client, Some(format!("secret-{client}")))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[
                ("grant_type", "client_credentials"),
                ("scope", scope),
                ("resource", resource),
            ]))
            .send()
            .await
            .expect("token request");
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.expect("token json");
        assert!(status.is_success(), "token endpoint: {status} {body}");
        body["access_token"]
            .as_str()
            .expect("an access token")
            .to_string()
    }
}

/// `application/x-www-form-urlencoded`.
fn form(pairs: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                b' ' => "+".to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Lower-case hex SHA-256 of `key`: how an `api_keys_file` names a key.
pub fn sha256_hex(key: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
