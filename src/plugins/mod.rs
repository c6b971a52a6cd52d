//! Plugins feed or watch the proxy; each can be turned off in config and the proxy still serves
//! static upstreams without them.

pub mod fleet;
pub mod memory;
pub mod monitor;
