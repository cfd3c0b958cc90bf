//! MCP over JSON-RPC 2.0: `initialize` (protocol version negotiation), `ping`,
//! `tools/list` (cursor pagination), `tools/call`, notifications. Protocol errors are
//! JSON-RPC errors with the standard codes; a tool that fails is an `isError` result.

use std::rc::Rc;

use serde_json::{Value, json};

use crate::model::{CallError, Via};
use crate::tools::Tools;

pub use llmr_protocol::mcp::{
    INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR, PROTOCOL_VERSIONS, error, negotiate,
};

pub(crate) fn ok(id: Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// Handles one message; `None` for notifications (nothing to answer).
/// `allow`: the caller's key's tool allowlists (`Meta::tools`); a tool outside them is not
/// listed and not called.
pub async fn handle(tools: &Rc<Tools>, msg: &Value, discovery: bool, allow: &[Vec<String>]) -> Option<Value> {
    let id = msg.get("id").cloned();
    let method = msg.get("method").and_then(Value::as_str).unwrap_or_default();
    let Some(id) = id else {
        // Notifications (`notifications/initialized`, `notifications/cancelled`…) need no answer.
        return None;
    };
    let params = msg.get("params").cloned().unwrap_or(Value::Null);
    Some(match method {
        "initialize" => {
            let asked = params.get("protocolVersion").and_then(Value::as_str);
            ok(
                id,
                json!({
                    "protocolVersion": negotiate(asked),
                    "capabilities": {"tools": {"listChanged": false}},
                    "serverInfo": {"name": "llmrouter", "title": "llmrouter MCP tools", "version": env!("CARGO_PKG_VERSION")},
                    "instructions": "Tools served by llmrouter. Use tool_search to find more tools and execute_tool to call them."
                }),
            )
        }
        "ping" => ok(id, json!({})),
        "tools/list" => {
            let mut all = tools.list(discovery).await;
            all.retain(|t| llmr_protocol::allowed(allow, &t.name));
            let size = tools.settings.mcp.page_size;
            let start = match params.get("cursor") {
                None | Some(Value::Null) => 0,
                Some(Value::String(c)) => match c.strip_prefix("o:").and_then(|n| n.parse::<usize>().ok()) {
                    Some(n) if n <= all.len() => n,
                    _ => return Some(error(id, INVALID_PARAMS, "Invalid cursor")),
                },
                Some(_) => return Some(error(id, INVALID_PARAMS, "Invalid cursor")),
            };
            let end = (start + size).min(all.len());
            let mut result = json!({"tools": all[start..end]});
            if end < all.len() {
                result["nextCursor"] = json!(format!("o:{end}"));
            }
            ok(id, result)
        }
        "tools/call" => {
            let Some(name) = params.get("name").and_then(Value::as_str) else {
                return Some(error(id, INVALID_PARAMS, "tools/call needs params.name"));
            };
            if !llmr_protocol::allowed(allow, name) {
                return Some(error(id, INVALID_PARAMS, not_allowed(name)));
            }
            let args = params.get("arguments").cloned().unwrap_or(Value::Null);
            match tools.call(name, args, Via::Direct, discovery, 0).await {
                Ok(result) => ok(id, result),
                Err(e @ (CallError::Unknown(_) | CallError::OnDemand(_) | CallError::Arguments(..))) => {
                    error(id, INVALID_PARAMS, e.to_string())
                }
            }
        }
        "" => error(id, INVALID_REQUEST, "Invalid Request: `method` is required"),
        other => error(id, METHOD_NOT_FOUND, format!("Method not found: {other}")),
    })
}

/// Why a key's call of `name` is refused.
pub fn not_allowed(name: &str) -> String {
    format!("This API key may not call the tool `{name}`.")
}
