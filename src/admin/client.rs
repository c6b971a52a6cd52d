//! The CLI's side of the coordinator API: finds the instance from its config, reads the token,
//! and makes one authenticated call. Plain HTTP/1.1 over a blocking socket: the CLI makes one
//! request and exits.

use super::token;
use crate::config::ValidConfig;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "mcp-fleet is not running: nothing answers on {addr} (admin.listen of {config}): {source}"
    )]
    NotRunning {
        addr: SocketAddr,
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
    #[error("the instance answered something that is not HTTP/JSON: {0}")]
    Malformed(String),
}

pub struct AdminClient {
    addr: SocketAddr,
    token: String,
    config: String,
}

impl AdminClient {
    pub fn from_config(config: &ValidConfig) -> Result<Self, ClientError> {
        let mut addr = config.admin_listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() {
                [127, 0, 0, 1].into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        Ok(Self {
            addr,
            token: token::for_client(config)?,
            config: config.source.display().to_string(),
        })
    }

    /// One call; returns the status and the JSON body. `timeout` bounds the whole exchange
    /// (deployments of many servers take a while).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<(u16, Value), ClientError> {
        let mut stream =
            TcpStream::connect_timeout(&self.addr, Duration::from_secs(3)).map_err(|source| {
                ClientError::NotRunning {
                    addr: self.addr,
                    config: self.config.clone(),
                    source,
                }
            })?;
        let io = |source| ClientError::Io {
            addr: self.addr,
            source,
        };
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        let body = body.map(Value::to_string).unwrap_or_default();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            self.token,
            body.len()
        )
        .map_err(io)?;
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
        let json = if body.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(body).map_err(|e| ClientError::Malformed(e.to_string()))?
        };
        Ok((status, json))
    }
}

/// A one-shot `GET path` to a local JSON endpoint (the CLI's `report`, on the unauthenticated monitor port), over a blocking socket.
pub fn fetch_json(addr: std::net::SocketAddr, path: &str) -> std::io::Result<serde_json::Value> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(3))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}
