//! The session key files (`[session]`): read at start, and again at every reload, so a rotated
//! Secret is taken up by `mcp-fleet reload` (or SIGHUP) on every replica without a restart. The
//! keys are swapped into the codec both engines share; a file that cannot be read refuses the
//! reload and the keys in force stay.

use crate::config::{SessionConfig, ValidConfig};
use crate::proxy::session::{SessionCodec, SharedCodec};
use crate::reload::{Commit, Reread};
use crate::secret_file::{self, SecretError};
use std::sync::Arc;

/// The codec for `config`'s key files: the current key (generated in the state dir at first
/// start when `session.key_file` is not set) and every previous one.
pub fn load(config: &SessionConfig) -> Result<SessionCodec, SecretError> {
    let current: [u8; 32] = if config.generated {
        secret_file::load_or_create(&config.key_file)?
    } else {
        secret_file::read_key(&config.key_file)?
    };
    let previous = config
        .previous_key_files
        .iter()
        .map(|p| secret_file::read_key(p))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SessionCodec::with_previous(&current, &previous))
}

/// The codec in force, re-read on reload.
pub struct SessionKeys(pub SharedCodec);

impl Reread for SessionKeys {
    fn load(&self, config: &ValidConfig) -> Result<Option<Commit>, String> {
        let fresh = load(&config.session).map_err(|e| format!("session.key_file: {e}"))?;
        if fresh.same_keys(&self.0.load()) {
            return Ok(None);
        }
        let shared = Arc::clone(&self.0);
        Ok(Some(Box::new(move || {
            let count = fresh.key_count();
            shared.store(Arc::new(fresh));
            tracing::info!(
                keys = count,
                "session keys changed: new sessions sealed with the current key"
            );
            format!("session keys re-read: sealing with the current key, {count} key(s) accepted")
        })))
    }
}
