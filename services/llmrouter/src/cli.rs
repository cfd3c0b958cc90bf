//! The client verbs: `llmrouter tool NAME JSON` calls a tool and `llmrouter script FILE.js
//! ARGS` runs a script (through the `execute_code` tool), both on a running gateway's `/mcp`,
//! as any MCP client would: initialize, notifications/initialized, tools/call.
//! `llmrouter healthcheck` probes the process's own `/readyz` (a container HEALTHCHECK).

use std::io::Write;
use std::time::Duration;

use serde_json::{Value, json};

/// Where and how to reach the gateway.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http://host:port` (with or without `/mcp`).
    pub server: String,
    pub token: Option<String>,
    /// Print every JSON-RPC exchange on stderr.
    pub verbose: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach {url}: {message}")]
    Connect { url: String, message: String },
    #[error("{0}")]
    Rpc(String),
    /// The tool ran and reported an error.
    #[error("{0}")]
    Tool(String),
    /// The server answered an HTTP error (the admin verbs): its message.
    #[error("{message} (HTTP {status})")]
    Http { status: u16, message: String },
}

struct Session {
    client: awc::Client,
    url: String,
    target: Target,
    session: Option<String>,
    next_id: u64,
}

impl Session {
    async fn send(&mut self, method: &str, params: Value, notify: bool) -> Result<Value, CliError> {
        let mut msg = json!({"jsonrpc": "2.0", "method": method, "params": params});
        if !notify {
            msg["id"] = json!(self.next_id);
            self.next_id += 1;
        }
        if self.target.verbose {
            let _ = writeln!(std::io::stderr(), "> {msg}");
        }
        let mut req = self
            .client
            .post(&self.url)
            .insert_header(("accept", "application/json, text/event-stream"));
        if let Some(t) = &self.target.token {
            req = req.insert_header(("authorization", format!("Bearer {t}")));
        }
        if let Some(s) = &self.session {
            req = req.insert_header(("mcp-session-id", s.as_str()));
        }
        let mut resp = req.send_json(&msg).await.map_err(|e| CliError::Connect {
            url: self.url.clone(),
            message: e.to_string(),
        })?;
        if let Some(s) = resp.headers().get("mcp-session-id").and_then(|v| v.to_str().ok()) {
            self.session = Some(s.to_owned());
        }
        let status = resp.status();
        let body = resp.body().limit(64 << 20).await.map_err(|e| CliError::Connect {
            url: self.url.clone(),
            message: e.to_string(),
        })?;
        if self.target.verbose {
            let _ = writeln!(std::io::stderr(), "< {status} {}", String::from_utf8_lossy(&body));
        }
        if notify && status.is_success() {
            return Ok(Value::Null);
        }
        let v: Value = serde_json::from_slice(&body).map_err(|_| {
            CliError::Rpc(format!(
                "HTTP {status} from {}: {}",
                self.url,
                String::from_utf8_lossy(&body)
            ))
        })?;
        if let Some(e) = v.get("error") {
            let message = e
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| e.to_string());
            return Err(CliError::Rpc(message));
        }
        Ok(v.get("result").cloned().unwrap_or(Value::Null))
    }
}

/// Calls `name` with `args` and returns what to print.
pub async fn call_tool(target: &Target, name: &str, args: Value) -> Result<String, CliError> {
    let base = target.server.trim_end_matches('/');
    let url = if base.ends_with("/mcp") {
        base.to_owned()
    } else {
        format!("{base}/mcp")
    };
    let mut s = Session {
        client: awc::Client::builder().timeout(Duration::from_secs(600)).finish(),
        url,
        target: target.clone(),
        session: None,
        next_id: 1,
    };
    s.send(
        "initialize",
        json!({"protocolVersion": llmr_protocol::mcp::PROTOCOL_VERSIONS[0], "capabilities": {},
               "clientInfo": {"name": "llmrouter-cli", "version": env!("CARGO_PKG_VERSION")}}),
        false,
    )
    .await?;
    s.send("notifications/initialized", json!({}), true).await?;
    let result = s
        .send("tools/call", json!({"name": name, "arguments": args}), false)
        .await?;
    let text = llmr_protocol::mcp::content_text(&result);
    if result.get("isError").and_then(Value::as_bool).unwrap_or(false) {
        return Err(CliError::Tool(text));
    }
    Ok(match result.get("structuredContent") {
        Some(v) => serde_json::to_string_pretty(v).unwrap_or(text),
        None => text,
    })
}

/// The arguments of `llmrouter tool`: a JSON object (empty = `{}`).
pub fn tool_args(raw: Option<&str>) -> Result<Value, CliError> {
    match raw {
        None => Ok(json!({})),
        Some(s) => match serde_json::from_str::<Value>(s) {
            Ok(v @ Value::Object(_)) => Ok(v),
            _ => Err(CliError::Usage(format!("arguments must be a JSON object, got `{s}`"))),
        },
    }
}

/// The `args` of `llmrouter script`: one JSON value as is, otherwise the words as strings.
pub fn script_args(raw: &[String]) -> Value {
    match raw {
        [] => Value::Null,
        [one] => serde_json::from_str(one).unwrap_or_else(|_| Value::String(one.clone())),
        many => Value::Array(many.iter().map(|s| Value::String(s.clone())).collect()),
    }
}

/// Probes `path` on this host: the admin listener when `telemetry.admin_port` is set and
/// answers, else the gateway's own port. Returns the URL that answered 200.
pub async fn healthcheck(settings: &llmr_config::Settings, path: &str) -> Result<String, CliError> {
    let client = awc::Client::builder().timeout(Duration::from_secs(3)).finish();
    let mut ports = vec![settings.telemetry.admin_port, settings.server.port];
    ports.retain(|p| *p != 0);
    let mut last = CliError::Usage("no admin_port or server port is configured".into());
    for port in ports {
        let url = format!("http://127.0.0.1:{port}{path}");
        match client.get(&url).send().await {
            Ok(resp) if resp.status().is_success() => return Ok(url),
            Ok(resp) => return Err(CliError::Rpc(format!("{url} answered {}", resp.status()))),
            Err(e) => {
                last = CliError::Connect {
                    url,
                    message: e.to_string(),
                }
            }
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_arguments() {
        assert_eq!(tool_args(None).unwrap(), json!({}));
        assert_eq!(tool_args(Some(r#"{"a":1}"#)).unwrap(), json!({"a": 1}));
        assert!(tool_args(Some("[1]")).is_err());
        assert_eq!(script_args(&[]), Value::Null);
        assert_eq!(script_args(&["{\"x\":2}".into()]), json!({"x": 2}));
        assert_eq!(script_args(&["a".into(), "b".into()]), json!(["a", "b"]));
    }
}
