//! The CLI's side of the admin and monitor APIs: finds the instance from what it could read of
//! the config (`config::endpoint`, valid or not), reads the token, makes one call and decodes
//! the answer into the API's own types. Plain HTTP/1.1 over a blocking socket: the CLI makes one
//! request and exits.

use super::token;
use crate::api::ApiError;
use crate::config::endpoint::Endpoint;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("mcp-fleet is not running: nothing answers on {addr} ({key} of {config}): {source}")]
    NotRunning {
        addr: SocketAddr,
        key: &'static str,
        config: String,
        source: std::io::Error,
    },
    #[error("cannot read the admin token: {0} (is the instance running with this config?)")]
    Token(#[from] token::TokenError),
    #[error("talking to {addr}: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the instance answered something this version cannot read: {0}")]
    Malformed(String),
    #[error("the instance answered {status}: {}", .body.error)]
    Refused { status: u16, body: ApiError },
}

/// An unspecified listen address (`0.0.0.0`) is reached on loopback.
fn reachable(mut addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            [127, 0, 0, 1].into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    addr
}

pub struct AdminClient {
    addr: SocketAddr,
    token: String,
    config: String,
}

impl AdminClient {
    pub fn new(endpoint: &Endpoint) -> Result<Self, ClientError> {
        Ok(Self {
            addr: reachable(endpoint.admin),
            token: token::for_client(endpoint)?,
            config: endpoint.source.display().to_string(),
        })
    }

    /// One call; a 2xx answer is decoded as `T`, any other as the API's error document.
    /// `timeout` bounds the whole exchange (deployments of many servers take a while).
    pub fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&impl Serialize>,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let body = match body {
            Some(b) => {
                serde_json::to_string(b).map_err(|e| ClientError::Malformed(e.to_string()))?
            }
            None => String::new(),
        };
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.addr,
            self.token,
            body.len()
        );
        let (status, text) = exchange(
            self.addr,
            "admin.listen",
            &self.config,
            &head,
            &body,
            timeout,
        )?;
        decode(status, &text)
    }
}

/// A `GET` on the unauthenticated monitor port (`mcp-fleet report`).
pub fn monitor_get<T: DeserializeOwned>(endpoint: &Endpoint, path: &str) -> Result<T, ClientError> {
    let addr = reachable(endpoint.monitor);
    let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let config = endpoint.source.display().to_string();
    let (status, text) = exchange(
        addr,
        "monitor.listen",
        &config,
        &head,
        "",
        Duration::from_secs(10),
    )?;
    decode(status, &text)
}

fn decode<T: DeserializeOwned>(status: u16, text: &str) -> Result<T, ClientError> {
    if (200..300).contains(&status) {
        serde_json::from_str(text).map_err(|e| ClientError::Malformed(format!("{e}: {text:.200}")))
    } else {
        let body = serde_json::from_str(text).unwrap_or_else(|_| ApiError {
            error: text.chars().take(200).collect(),
            errors: Vec::new(),
        });
        Err(ClientError::Refused { status, body })
    }
}

fn exchange(
    addr: SocketAddr,
    key: &'static str,
    config: &str,
    head: &str,
    body: &str,
    timeout: Duration,
) -> Result<(u16, String), ClientError> {
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(|source| {
            ClientError::NotRunning {
                addr,
                key,
                config: config.to_string(),
                source,
            }
        })?;
    let io = |source| ClientError::Io { addr, source };
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.write_all(head.as_bytes()).map_err(io)?;
    stream.write_all(body.as_bytes()).map_err(io)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(io)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| ClientError::Malformed(text.chars().take(200).collect()))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| ClientError::Malformed(head.to_string()))?;
    Ok((status, body.to_string()))
}
