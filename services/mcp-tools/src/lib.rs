//! The mcp-tools service: the MCP server logic behind the gateway's `/mcp`, and the tool
//! runner behind the router's automatic tool calling.
//!
//! It reads the `mcp` stream: `mcp` envelopes carry one JSON-RPC message from a client
//! (answered with the JSON-RPC response, or status 202 for a notification); `tool`
//! envelopes carry `{"name", "arguments"}` from inside the cluster (answered with a
//! `CallToolResult`). Tools are JavaScript modules run on boa in sandboxed child processes
//! (`llmr-script`), built-ins (`tool_search`, `execute_tool`, `execute_code`), and the tools
//! of remote MCP servers under their namespace.
//!
//! # Layout
//! - [`model`]: the catalog's vocabulary (tool definitions, call errors, results); a leaf.
//! - [`tools`]: the catalog (local, built-in, remote; visibility) and calling a tool.
//! - [`host`]: what the host modules `mcp`, `ai`, `http`, `kv` do for a running tool, through
//!   the `HostEnv` trait the catalog implements (no import back into the catalog).
//! - [`net`]: the addresses tools and remote servers may connect to (no internal ones).
//! - [`remote`]: the client of a remote MCP server.
//! - [`rpc`]: JSON-RPC methods and errors.
//! - [`work`]: the `mcp` stream's work under the shared consumer loop.
//!
//! Imports run one way: work → rpc → tools → {host, remote} → model.

pub mod host;
pub mod model;
pub mod net;
pub mod remote;
pub mod rpc;
pub mod tools;
pub mod work;

use std::rc::Rc;
use std::time::Duration;

use actix::Addr;
use llmr_bus::{Bus, Caller, ConsumerActor, Drain, LoopConfig};
use llmr_config::Settings;
use llmr_protocol::streams;
use llmr_script::ScriptHost;
use llmr_store::{Store, TaskGuard};

/// MCP messages one instance handles at once.
const MAX_IN_FLIGHT: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Bus(#[from] llmr_bus::BusError),
}

/// A running mcp-tools instance.
pub struct McpToolsService {
    addr: Addr<ConsumerActor<work::Messages>>,
    _heartbeat: TaskGuard,
}

impl McpToolsService {
    /// Starts the service on the current arbiter (inside an actix System).
    pub async fn build(
        settings: &Settings,
        bus: Bus,
        store: Store,
        instance: &str,
        host: &ScriptHost,
    ) -> Result<McpToolsService, InitError> {
        let caller = Caller::new(bus.clone(), &format!("{instance}-mcp"));
        let http = awc::Client::builder()
            .timeout(Duration::from_millis(
                settings.scripting.http_timeout_ms.max(settings.mcp.remote_timeout_ms),
            ))
            .disable_redirects()
            .finish();
        let pool = host.pool(settings, settings.scripting.wall_ms);
        let tools = Rc::new(tools::Tools::new(settings, pool, caller, store.clone(), http));
        let cfg = LoopConfig {
            cancels: true,
            ..LoopConfig::new(&bus, MAX_IN_FLIGHT, Duration::from_millis(settings.redis.claim_idle_ms))
        };
        let work = work::Messages { tools };
        let addr = ConsumerActor::start(&bus, streams::MCP, streams::groups::MCP_TOOLS, instance, cfg, work).await?;
        let heartbeat = store.keep_alive("mcp-tools", instance, llmr_store::HEARTBEAT_EVERY);
        Ok(McpToolsService {
            addr,
            _heartbeat: heartbeat,
        })
    }

    /// Stops reading and waits up to `grace` for running calls.
    pub async fn drain(&self, grace: Duration) {
        let _ = self.addr.send(Drain { grace }).await;
    }
}
