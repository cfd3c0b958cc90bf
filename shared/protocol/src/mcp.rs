//! MCP constants shared by the gateway (transport) and mcp-tools (methods): protocol
//! revisions, JSON-RPC error codes, the error shape.

use serde_json::{Value, json};

/// Protocol revisions served, newest first.
pub const PROTOCOL_VERSIONS: [&str; 4] = ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// Streamable HTTP: the session is unknown or expired.
pub const SESSION_NOT_FOUND: i64 = -32001;

/// A JSON-RPC message that passed the transport's checks.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// The message's id (null for notifications).
    pub id: Value,
    pub method: Option<String>,
    /// A notification or response: nothing to answer.
    pub notification: bool,
}

/// Why the transport refused a message: the JSON-RPC error to answer with.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    pub id: Value,
    pub code: i64,
    pub message: String,
}

/// The transport's checks of one message: JSON, one JSON-RPC 2.0 object, a served protocol
/// revision (`protocol` is the `MCP-Protocol-Version` header, not checked on `initialize`).
pub fn check(body: &[u8], protocol: Option<&str>) -> Result<Checked, Refused> {
    let refuse = |id: Value, code: i64, message: String| Refused { id, code, message };
    let msg: Value =
        serde_json::from_slice(body).map_err(|e| refuse(Value::Null, PARSE_ERROR, format!("Parse error: {e}")))?;
    let Some(obj) = msg.as_object() else {
        let why = if msg.is_array() {
            "Invalid Request: JSON-RPC batches are not supported; send one message per request"
        } else {
            "Invalid Request: expected a JSON-RPC object"
        };
        return Err(refuse(Value::Null, INVALID_REQUEST, why.into()));
    };
    let id = obj.get("id").cloned().unwrap_or(Value::Null);
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(refuse(
            id,
            INVALID_REQUEST,
            "Invalid Request: jsonrpc must be \"2.0\"".into(),
        ));
    }
    let method = obj.get("method").and_then(Value::as_str).map(str::to_owned);
    let initialize = method.as_deref() == Some("initialize");
    if let Some(v) = protocol
        && !initialize
        && !PROTOCOL_VERSIONS.contains(&v)
    {
        return Err(refuse(
            id,
            INVALID_REQUEST,
            format!("Unsupported MCP-Protocol-Version `{v}`"),
        ));
    }
    let notification = method.is_none() || (obj.get("id").is_none() && !initialize);
    Ok(Checked {
        id,
        method,
        notification,
    })
}

/// A JSON-RPC error response.
pub fn error(id: Value, code: i64, message: impl Into<String>) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message.into()}})
}

/// The text blocks of a `CallToolResult`, joined by newlines.
pub fn content_text(result: &Value) -> String {
    result
        .get("content")
        .and_then(Value::as_array)
        .map(|blocks| {
            blocks
                .iter()
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// The version to answer a client asking for `asked`: the same when served, else ours.
pub fn negotiate(asked: Option<&str>) -> &'static str {
    PROTOCOL_VERSIONS
        .iter()
        .find(|v| Some(**v) == asked)
        .copied()
        .unwrap_or(PROTOCOL_VERSIONS[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_the_asked_version_when_served() {
        assert_eq!(negotiate(Some("2025-03-26")), "2025-03-26");
        assert_eq!(negotiate(Some("1999-01-01")), PROTOCOL_VERSIONS[0]);
        assert_eq!(negotiate(None), PROTOCOL_VERSIONS[0]);
    }
}
