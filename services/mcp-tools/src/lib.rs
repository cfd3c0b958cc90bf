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
//! - [`tools`]: the catalog (local, built-in, remote; visibility) and calling a tool.
//! - [`host`]: what the host modules `mcp`, `ai`, `http`, `kv` do for a running tool.
//! - [`remote`]: the client of a remote MCP server.
//! - [`rpc`]: JSON-RPC methods and errors.
//! - [`actor`]: the consumer actor of the `mcp` stream.

pub mod actor;
pub mod host;
pub mod remote;
pub mod rpc;
pub mod tools;

use std::rc::Rc;
use std::time::Duration;

use actix::{Actor, Addr};
use llmr_bus::{Bus, Caller};
use llmr_config::Settings;
use llmr_script::ScriptHost;
use llmr_store::{Store, TaskGuard};

/// The stream mcp-tools reads, and its consumer group.
pub const STREAM: &str = "mcp";
pub const GROUP: &str = "mcp-tools";

/// MCP messages one instance handles at once.
const MAX_IN_FLIGHT: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Bus(#[from] llmr_bus::BusError),
}

/// A running mcp-tools instance.
pub struct McpToolsService {
    addr: Addr<actor::McpActor>,
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
        let consumers = [
            bus.consumer(STREAM, GROUP, instance).await?,
            bus.consumer(STREAM, GROUP, instance).await?,
        ];
        let caller = Caller::new(bus, &format!("{instance}-mcp"));
        let http = awc::Client::builder()
            .timeout(Duration::from_millis(
                settings.scripting.http_timeout_ms.max(settings.mcp.remote_timeout_ms),
            ))
            .disable_redirects()
            .finish();
        let pool = host.pool(settings, settings.scripting.wall_ms);
        let tools = Rc::new(tools::Tools::new(settings, pool, caller, store.clone(), http));
        let addr = actor::McpActor::new(
            tools,
            consumers,
            MAX_IN_FLIGHT,
            Duration::from_millis(settings.redis.claim_idle_ms),
        )
        .start();
        let heartbeat = store.keep_alive("mcp-tools", instance, Duration::from_secs(2));
        Ok(McpToolsService {
            addr,
            _heartbeat: heartbeat,
        })
    }

    /// Stops reading and waits up to `grace` for running calls.
    pub async fn drain(&self, grace: Duration) {
        let _ = self.addr.send(actor::Drain { grace }).await;
    }
}
