//! mcp-fleet: a Pingora proxy and load balancer in front of a supervised fleet of MCP servers.
//! See ARCHITECTURE.md (in the shared design folder) for the rooms and who may use whom.
#![deny(unsafe_code)]

pub mod admin;
pub mod api;
pub mod auth;
pub mod backend;
pub mod config;
pub mod fast_hash;
pub mod health;
pub mod history;
pub mod metrics;

pub mod plugins;
pub mod procfs;
pub mod proxy;
pub mod reload;
pub mod secret_file;
pub mod serve;
pub mod session_keys;
pub mod state_file;
pub mod sys;
pub mod upstream;
