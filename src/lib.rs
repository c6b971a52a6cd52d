//! mcp-fleet: a Pingora proxy and load balancer in front of a supervised fleet of MCP servers.
//! See ARCHITECTURE.md (in the shared design folder) for the rooms and who may use whom.
#![deny(unsafe_code)]

pub mod config;
pub mod upstream;
pub mod proxy;
pub mod secret_file;
pub mod backend;
pub mod plugins;
pub mod serve;
