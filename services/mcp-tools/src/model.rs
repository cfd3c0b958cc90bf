//! The catalog's vocabulary, shared by every module of mcp-tools and importing none of
//! them: tool definitions and origins, how a call arrived, why it could not start, and the
//! shape of a `CallToolResult`.

use std::rc::Rc;

use llmr_config::Visibility;
use serde::Serialize;
use serde_json::{Value, json};

/// Where a tool comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Builtin,
    /// A tool file's source, as read with its description (the scan at the start of every
    /// call re-reads a file whose modification time or size changed).
    Local {
        source: Rc<str>,
    },
    Remote {
        namespace: String,
        name: String,
    },
}

/// One tool as MCP lists it, plus what the catalog needs.
#[derive(Debug, Clone, Serialize)]
pub struct ToolDef {
    pub name: String,
    pub description: String,
    #[serde(rename = "inputSchema")]
    pub input_schema: Value,
    #[serde(skip)]
    pub keywords: Vec<String>,
    #[serde(skip)]
    pub visibility: Visibility,
    #[serde(skip)]
    pub origin: Origin,
}

/// How a call reached the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `tools/call` from an MCP client.
    Direct,
    /// `execute_tool`, `mcp.call` from a script, or the router's tool loop.
    Indirect,
}

/// Why a call could not even start (JSON-RPC `-32602`); failures of a tool that ran are
/// `isError` results instead.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("Unknown tool: {0}")]
    Unknown(String),
    #[error("Tool `{0}` is available on demand: find it with tool_search and call it through execute_tool")]
    OnDemand(String),
    #[error("Invalid arguments for tool `{0}`: {1}")]
    Arguments(String, String),
}

/// Valid as an MCP tool name and an OpenAI function name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A CallToolResult with one text block.
pub fn text_result(text: impl Into<String>, is_error: bool) -> Value {
    json!({"content": [{"type": "text", "text": text.into()}], "isError": is_error})
}

/// What a script returned, as a CallToolResult: a string is text; an object with a
/// `content` array is already a result; anything else is structured content.
pub fn to_result(v: Value) -> Value {
    match v {
        Value::String(s) => text_result(s, false),
        Value::Object(mut m) if m.get("content").is_some_and(Value::is_array) => {
            let is_error = m.get("isError").and_then(Value::as_bool).unwrap_or(false);
            m.insert("isError".into(), Value::Bool(is_error));
            Value::Object(m)
        }
        Value::Object(m) => {
            let text = Value::Object(m.clone()).to_string();
            json!({"content": [{"type": "text", "text": text}], "structuredContent": m, "isError": false})
        }
        other => text_result(other.to_string(), false),
    }
}
