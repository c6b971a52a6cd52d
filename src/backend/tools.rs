//! The built-in server's tools. Memory tools keep their data in the handler, and rmcp builds one
//! handler per session, so what one session remembers no other session (or server) can recall:
//! a recall that lands on the wrong server fails, which is how tests prove affinity.

use rmcp::handler::server::{router::tool::ToolRouter, wrapper::Parameters};
use rmcp::model::{
    CallToolResult, ContentBlock, Implementation, ProgressNotificationParam, RequestMetaObject,
    ServerCapabilities, ServerConfig,
};
use rmcp::{schemars, tool, tool_handler, tool_router, ErrorData, Peer, RoleServer, ServerHandler};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct EchoArgs {
    /// Text to send back.
    pub text: String,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct RememberArgs {
    pub key: String,
    pub value: String,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct KeyArgs {
    pub key: String,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct CountdownArgs {
    /// Number of steps (1-1000); one progress notification each.
    pub n: u32,
    /// Pause between steps in milliseconds (0-10000).
    #[serde(default)]
    pub interval_ms: u64,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct GrowArgs {
    /// Megabytes to allocate, touch and keep until the process ends.
    pub mb: u64,
}

/// Memory `grow_memory` holds on to: process-wide, so it outlives the session that asked.
static HELD: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

#[derive(Clone)]
pub struct FleetBackend {
    name: Arc<str>,
    /// Added to every `echo`: fault injection for balancing tests (a slow server).
    delay: Duration,
    memories: Arc<Mutex<BTreeMap<String, String>>>,
    tool_router: ToolRouter<Self>,
}

fn text(s: impl Into<String>) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(s)])
}

impl FleetBackend {
    /// The handler a session starts from; `router` is built once per process and cloned.
    pub fn new(name: Arc<str>, delay: Duration, router: ToolRouter<Self>) -> Self {
        Self {
            name,
            delay,
            memories: Arc::default(),
            tool_router: router,
        }
    }

    /// The tools, with `grow_memory` only when debug tools are on.
    pub fn router(debug_tools: bool) -> ToolRouter<Self> {
        let mut router = Self::tool_router();
        if !debug_tools {
            router.remove_route("grow_memory");
        }
        router
    }

    fn memories(&self) -> MutexGuard<'_, BTreeMap<String, String>> {
        // A poisoned map is still a map: one failed tool call must not end the session.
        self.memories
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[tool_router]
impl FleetBackend {
    #[tool(description = "Return the text unchanged, with the name of the server that answered")]
    async fn echo(&self, Parameters(args): Parameters<EchoArgs>) -> CallToolResult {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let mut result = text(args.text);
        result.structured_content = Some(serde_json::json!({ "server": &*self.name }));
        result
    }

    #[tool(description = "Remember a value under a key, for this session only")]
    fn remember(&self, Parameters(args): Parameters<RememberArgs>) -> CallToolResult {
        self.memories().insert(args.key.clone(), args.value);
        text(format!("remembered {}", args.key))
    }

    #[tool(description = "Recall the value remembered under a key in this session")]
    fn recall(&self, Parameters(args): Parameters<KeyArgs>) -> CallToolResult {
        match self.memories().get(&args.key) {
            Some(v) => text(v.clone()),
            None => CallToolResult::error(vec![ContentBlock::text(format!(
                "nothing remembered under {:?} in this session on {}",
                args.key, self.name
            ))]),
        }
    }

    #[tool(description = "Forget the value under a key")]
    fn forget(&self, Parameters(args): Parameters<KeyArgs>) -> CallToolResult {
        let existed = self.memories().remove(&args.key).is_some();
        text(if existed { "forgotten" } else { "not found" })
    }

    #[tool(description = "List the keys remembered in this session")]
    fn list_memories(&self) -> CallToolResult {
        let keys: Vec<String> = self.memories().keys().cloned().collect();
        let mut result = text(keys.join("\n"));
        result.structured_content = Some(serde_json::json!({ "keys": keys }));
        result
    }

    #[tool(
        description = "Count down from n, sending a progress notification per step, then answer"
    )]
    async fn countdown(
        &self,
        Parameters(args): Parameters<CountdownArgs>,
        meta: RequestMetaObject,
        peer: Peer<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        if !(1..=1000).contains(&args.n) || args.interval_ms > 10_000 {
            return Err(ErrorData::invalid_params(
                "n must be 1-1000 and interval_ms 0-10000",
                None,
            ));
        }
        let token = meta.get_progress_token();
        for step in 1..=args.n {
            if let Some(token) = &token {
                let note = ProgressNotificationParam::new(token.clone(), f64::from(step))
                    .with_total(f64::from(args.n))
                    .with_message(format!("{} left", args.n - step));
                peer.notify_progress(note).await.map_err(|e| {
                    ErrorData::internal_error(format!("progress not delivered: {e}"), None)
                })?;
            }
            tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
        }
        Ok(text(format!("liftoff after {} steps", args.n)))
    }

    #[tool(description = "Allocate and touch mb megabytes and keep them (memory-policy tests)")]
    fn grow_memory(
        &self,
        Parameters(args): Parameters<GrowArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        if args.mb > 64 * 1024 {
            return Err(ErrorData::invalid_params("mb must be at most 65536", None));
        }
        let block = vec![1u8; (args.mb as usize) << 20];
        let mut held = HELD
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        held.push(block);
        let total: usize = held.iter().map(Vec::len).sum::<usize>() >> 20;
        Ok(text(format!("holding {total} MiB")))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for FleetBackend {
    fn get_info(&self) -> ServerConfig {
        let mut info = Implementation::from_build_env();
        info.name = self.name.to_string();
        info.version = env!("CARGO_PKG_VERSION").to_string();
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(info)
            .with_instructions("mcp-fleet built-in server: echo, session memory, countdown")
    }
}
