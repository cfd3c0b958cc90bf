//! A remote MCP server, reached over Streamable HTTP: its tools are served as
//! `{namespace}_{name}` and calls are proxied. A server that is down fails its own tools
//! with an `isError` result and leaves every other tool alone; its list is retried after
//! `remote_refresh_ms`. Why its last list failed is kept for operators ([`Remote::state`]).

use std::cell::RefCell;
use std::time::{Duration, Instant};

use llmr_config::{Mcp, RemoteServer};
use llmr_protocol::mcp::PROTOCOL_VERSIONS;
use llmr_protocol::tools::function_name;
use serde_json::{Value, json};

use crate::model::{Origin, ToolDef, text_result};

/// Why an exchange with a remote server failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RemoteError {
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("session expired")]
    SessionExpired,
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("unreadable answer: {0}")]
    Unreadable(String),
    #[error("no JSON-RPC answer")]
    NoAnswer,
    #[error("error {code}: {message}")]
    Rpc { code: Value, message: String },
}

pub struct Remote {
    cfg: RemoteServer,
    timeout: Duration,
    refresh: Duration,
    session: RefCell<Option<String>>,
    /// Until when the list is reused, and the tools it held.
    listed: RefCell<Option<(Instant, Vec<ToolDef>)>>,
    /// Why the last list failed; None since one succeeded (or before any was asked).
    last_error: RefCell<Option<String>>,
    next_id: std::cell::Cell<u64>,
}

impl Remote {
    pub fn new(cfg: RemoteServer, mcp: &Mcp) -> Remote {
        Remote {
            cfg,
            timeout: Duration::from_millis(mcp.remote_timeout_ms),
            refresh: Duration::from_millis(mcp.remote_refresh_ms),
            session: RefCell::new(None),
            listed: RefCell::new(None),
            last_error: RefCell::new(None),
            next_id: std::cell::Cell::new(1),
        }
    }

    pub fn namespace(&self) -> String {
        self.cfg.namespace.clone()
    }

    /// What this instance knows of the server: whether its last list came, and why not.
    pub fn state(&self) -> llmr_protocol::tools::RemoteState {
        let listed = self.listed.borrow();
        let error = self.last_error.borrow().clone();
        let state = match (&*listed, &error) {
            (None, _) => "unknown",
            (Some(_), Some(_)) => "error",
            (Some(_), None) => "ok",
        };
        llmr_protocol::tools::RemoteState {
            namespace: self.cfg.namespace.clone(),
            url: llmr_config::redact_url(&self.cfg.url),
            state: state.to_owned(),
            error,
            tools: listed.as_ref().map_or(0, |(_, t)| t.len() as u64),
        }
    }

    /// The address of the server's host (see [`crate::net::vet`]).
    async fn address(&self) -> Result<std::net::SocketAddr, RemoteError> {
        let uri: awc::http::Uri = self
            .cfg
            .url
            .parse()
            .map_err(|_| RemoteError::Unreachable(format!("invalid URL {}", self.cfg.url)))?;
        let host = uri.host().unwrap_or_default().to_ascii_lowercase();
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 });
        crate::net::vet(&host, port, self.cfg.allow_internal)
            .await
            .map_err(|e| match e {
                crate::net::Vetted::Internal(ip) => RemoteError::Unreachable(format!(
                    "{host} resolves to {ip}, an internal address; set allow_internal = true on this server (or write the address in its url) to reach it"
                )),
                crate::net::Vetted::Unresolved(why) => RemoteError::Unreachable(why),
            })
    }

    /// One JSON-RPC exchange; `None` id sends a notification.
    async fn post(&self, http: &awc::Client, method: &str, params: Value, notify: bool) -> Result<Value, RemoteError> {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let mut msg = json!({"jsonrpc": "2.0", "method": method, "params": params});
        if !notify {
            msg["id"] = json!(id);
        }
        let addr = self.address().await?;
        let mut req = http
            .post(&self.cfg.url)
            .address(addr)
            .timeout(self.timeout)
            .insert_header(("accept", "application/json, text/event-stream"))
            .insert_header(("mcp-protocol-version", PROTOCOL_VERSIONS[0]));
        // The remote server continues the caller's trace.
        let trace = llmr_telemetry::context(&tracing::Span::current(), &Default::default());
        for (name, value) in trace.headers() {
            req = req.insert_header((name, value));
        }
        if let Some(t) = self.cfg.token() {
            req = req.insert_header(("authorization", format!("Bearer {t}")));
        }
        if let Some(s) = self.session.borrow().as_deref() {
            req = req.insert_header(("mcp-session-id", s));
        }
        let mut resp = req
            .send_json(&msg)
            .await
            .map_err(|e| RemoteError::Unreachable(e.to_string()))?;
        let status = resp.status();
        if status == awc::http::StatusCode::NOT_FOUND && self.session.borrow().is_some() {
            self.session.replace(None);
            return Err(RemoteError::SessionExpired);
        }
        if !status.is_success() {
            return Err(RemoteError::Status(status.as_u16()));
        }
        if let Some(s) = resp.headers().get("mcp-session-id").and_then(|v| v.to_str().ok()) {
            self.session.replace(Some(s.to_owned()));
        }
        if notify {
            return Ok(Value::Null);
        }
        let sse = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("text/event-stream"));
        let body = resp
            .body()
            .limit(16 << 20)
            .await
            .map_err(|e| RemoteError::Unreadable(e.to_string()))?;
        let text = String::from_utf8_lossy(&body);
        let answer: Option<Value> = if sse {
            // The response is the event whose data is the JSON-RPC answer to our id.
            text.split("\n\n")
                .flat_map(|event| {
                    let data: Vec<&str> = event
                        .lines()
                        .filter_map(|l| l.strip_prefix("data:").map(str::trim_start))
                        .collect();
                    serde_json::from_str::<Value>(&data.join("\n")).ok()
                })
                .find(|v| v.get("id") == Some(&json!(id)))
        } else {
            serde_json::from_str(&text).ok()
        };
        let answer = answer.ok_or(RemoteError::NoAnswer)?;
        if let Some(e) = answer.get("error") {
            return Err(RemoteError::Rpc {
                code: e.get("code").cloned().unwrap_or(Value::Null),
                message: e.get("message").and_then(Value::as_str).unwrap_or("").to_owned(),
            });
        }
        Ok(answer.get("result").cloned().unwrap_or(Value::Null))
    }

    async fn ensure_session(&self, http: &awc::Client) -> Result<(), RemoteError> {
        if self.session.borrow().is_some() {
            return Ok(());
        }
        self.post(
            http,
            "initialize",
            json!({"protocolVersion": PROTOCOL_VERSIONS[0], "capabilities": {},
                   "clientInfo": {"name": "llmrouter", "version": env!("CARGO_PKG_VERSION")}}),
            false,
        )
        .await?;
        self.post(http, "notifications/initialized", json!({}), true).await?;
        Ok(())
    }

    /// A request in a session, re-initializing once if the server forgot it.
    async fn request(&self, http: &awc::Client, method: &str, params: Value) -> Result<Value, RemoteError> {
        self.ensure_session(http).await?;
        match self.post(http, method, params.clone(), false).await {
            Err(RemoteError::SessionExpired) => {
                self.ensure_session(http).await?;
                self.post(http, method, params, false).await
            }
            other => other,
        }
    }

    /// The server's tools under the namespace (cached; the last good list while it is down).
    pub async fn tools(&self, http: &awc::Client) -> Vec<ToolDef> {
        if let Some((until, tools)) = self.listed.borrow().as_ref()
            && Instant::now() < *until
        {
            return tools.clone();
        }
        let mut tools = Vec::new();
        let mut cursor: Option<String> = None;
        let fetched: Result<(), RemoteError> = async {
            for _ in 0..100 {
                let params = match &cursor {
                    Some(c) => json!({"cursor": c}),
                    None => json!({}),
                };
                let page = self.request(http, "tools/list", params).await?;
                for t in page.get("tools").and_then(Value::as_array).into_iter().flatten() {
                    let Some(name) = t.get("name").and_then(Value::as_str) else {
                        continue;
                    };
                    tools.push(ToolDef {
                        name: function_name(&self.cfg.namespace, name),
                        description: t
                            .get("description")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                        input_schema: t
                            .get("inputSchema")
                            .cloned()
                            .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                        keywords: vec![self.cfg.namespace.clone()],
                        visibility: self.cfg.tool_visibility,
                        origin: Origin::Remote {
                            namespace: self.cfg.namespace.clone(),
                            name: name.to_owned(),
                        },
                    });
                }
                cursor = page.get("nextCursor").and_then(Value::as_str).map(str::to_owned);
                if cursor.is_none() {
                    break;
                }
            }
            Ok(())
        }
        .await;
        match fetched {
            Ok(()) => {
                self.listed
                    .replace(Some((Instant::now() + self.refresh, tools.clone())));
                self.last_error.replace(None);
                tools
            }
            Err(e) => {
                self.last_error.replace(Some(e.to_string()));
                tracing::warn!(namespace = %self.cfg.namespace, url = %self.cfg.url, error = %e, "remote MCP server unavailable; its tools are skipped until it answers");
                let mut listed = self.listed.borrow_mut();
                let last = listed.as_ref().map(|(_, t)| t.clone()).unwrap_or_default();
                // Ask again after a short pause, not on every call.
                *listed = Some((Instant::now() + Duration::from_secs(2).min(self.refresh), last.clone()));
                last
            }
        }
    }

    /// Proxies a call; a failure is an `isError` result naming the server.
    pub async fn call(&self, http: &awc::Client, name: &str, args: Value) -> Value {
        match self
            .request(http, "tools/call", json!({"name": name, "arguments": args}))
            .await
        {
            Ok(r) if r.get("content").is_some() => r,
            Ok(other) => text_result(other.to_string(), false),
            Err(e) => text_result(
                format!("remote MCP server `{}` is unavailable: {e}", self.cfg.namespace),
                true,
            ),
        }
    }
}
