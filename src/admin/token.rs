//! Where the admin token comes from, for the server and the CLI alike: `MCP_FLEET_ADMIN_TOKEN`,
//! else `admin.token_file`, else `state_dir/admin.token` (generated at first start, mode 0600).

use crate::config::ValidConfig;
use crate::secret_file::{self, SecretError};
use std::path::PathBuf;

pub const TOKEN_ENV: &str = "MCP_FLEET_ADMIN_TOKEN";
pub const TOKEN_FILE: &str = "admin.token";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(
        "admin.listen {0} is not a loopback address: set {TOKEN_ENV} or admin.token_file so the \
         token is chosen on purpose, not generated on a machine others can reach"
    )]
    ExposedWithoutSource(std::net::SocketAddr),
}

/// The path of the generated token file (when neither env nor `admin.token_file` is set).
pub fn default_path(config: &ValidConfig) -> PathBuf {
    config.fleet.state_dir.join(TOKEN_FILE)
}

fn from_env() -> Option<String> {
    std::env::var(TOKEN_ENV)
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// The server side: resolve, generating the default file if needed.
pub fn for_server(config: &ValidConfig) -> Result<String, TokenError> {
    if let Some(t) = from_env() {
        return Ok(t);
    }
    if let Some(file) = &config.admin_token_file {
        return Ok(secret_file::read_token(file)?);
    }
    if !config.admin_listen.ip().is_loopback() {
        return Err(TokenError::ExposedWithoutSource(config.admin_listen));
    }
    Ok(secret_file::load_or_create_token(&default_path(config))?)
}

/// The CLI side: resolve without creating anything, from what the CLI could read of the config
/// (`config::endpoint`), valid or not.
pub fn for_client(endpoint: &crate::config::endpoint::Endpoint) -> Result<String, TokenError> {
    if let Some(t) = from_env() {
        return Ok(t);
    }
    let file = endpoint
        .token_file
        .clone()
        .unwrap_or_else(|| endpoint.state_dir.join(TOKEN_FILE));
    Ok(secret_file::read_token(&file)?)
}

/// Compares in time independent of where the first difference is.
pub fn matches(given: &[u8], expected: &[u8]) -> bool {
    if given.len() != expected.len() {
        return false;
    }
    given
        .iter()
        .zip(expected)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}
