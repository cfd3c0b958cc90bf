//! What a tool's host-module calls do: `mcp.call` runs another tool, `ai.chat` asks the
//! router for a chat completion over the bus, `http.fetch` reaches hosts on the allowlist
//! only, `kv` reads and writes the tool's own space in the store.

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::LocalBoxFuture;
use llmr_bus::Caller;
use llmr_config::Settings;
use llmr_protocol::{ApiError, CallerId, Envelope, Kind, Meta, now_ms, streams};
use llmr_script::{Host, HostFuture};
use llmr_store::{Store, StoreError};
use serde_json::{Value, json};

use crate::model::CallError;
use crate::net::{Vetted, vet};

/// What the host modules reach: the catalog implements it (`tools.rs`), so this module
/// needs nothing of the catalog's.
pub trait HostEnv {
    /// Runs another tool (its `CallToolResult`).
    fn call_tool<'a>(&'a self, name: &'a str, args: Value, depth: u32) -> LocalBoxFuture<'a, Result<Value, HostError>>;
    fn caller(&self) -> &Caller;
    fn settings(&self) -> &Settings;
    fn store(&self) -> &Store;
    fn http(&self) -> &awc::Client;
}

/// Why a host-module call failed; the script sees the message as a thrown error.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The called tool answered with an error result.
    #[error("{0}")]
    ToolFailed(String),
    #[error(transparent)]
    Call(#[from] CallError),
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("{0}")]
    Usage(&'static str),
    #[error("invalid URL `{0}`")]
    Url(String),
    #[error("only http and https URLs may be fetched, not `{0}`")]
    Scheme(String),
    #[error("host `{0}` is not in [scripting] http_allowlist; tools may fetch only listed hosts")]
    NotAllowed(String),
    #[error(
        "host `{host}` resolves to {addr}, an internal address (loopback, private, link-local or metadata); set [scripting] http_allow_internal = true or list the address itself to reach it"
    )]
    Internal { host: String, addr: std::net::IpAddr },
    #[error("invalid method `{0}`")]
    Method(String),
    #[error("fetch {url} failed: {why}")]
    Fetch { url: String, why: String },
    #[error("kv: {0}")]
    Kv(#[from] StoreError),
    #[error("kv: values are limited to 1 MiB")]
    KvTooLarge,
    #[error("unreadable completion: {0}")]
    Unreadable(String),
    #[error("ai.chat failed ({status}): {body}")]
    Chat { status: u16, body: Value },
    #[error("{0} is not available")]
    Unavailable(String),
}

/// The host of one running tool.
pub struct ToolHost<'a> {
    pub env: &'a dyn HostEnv,
    /// Whose `kv` space this is.
    pub tool: String,
    pub depth: u32,
}

impl Host for ToolHost<'_> {
    fn call<'a>(&'a self, module: &'a str, function: &'a str, args: Value) -> HostFuture<'a> {
        Box::pin(async move { self.dispatch(module, function, args).await.map_err(Into::into) })
    }
}

/// A tool's result as a script sees it: structured content, else the text; an error result
/// throws.
fn unwrap_result(r: Value) -> Result<Value, HostError> {
    let text = llmr_protocol::mcp::content_text(&r);
    if r.get("isError").and_then(Value::as_bool).unwrap_or(false) {
        return Err(HostError::ToolFailed(text));
    }
    Ok(r.get("structuredContent").cloned().unwrap_or(Value::String(text)))
}

impl ToolHost<'_> {
    async fn dispatch(&self, module: &str, function: &str, args: Value) -> Result<Value, HostError> {
        let arg = |i: usize| args.get(i).cloned().unwrap_or(Value::Null);
        match (module, function) {
            ("mcp", "call") => {
                let name = arg(0).as_str().unwrap_or_default().to_owned();
                unwrap_result(self.env.call_tool(&name, arg(1), self.depth + 1).await?)
            }
            ("ai", "chat") => self.chat(arg(0), arg(1)).await,
            ("http", "fetch") => self.fetch(arg(0).as_str().unwrap_or_default(), arg(1)).await,
            ("kv", f) => self.kv(f, &args).await,
            _ => Err(HostError::Unavailable(format!("{module}.{function}"))),
        }
    }

    /// `ai.chat(input, options)`: input is a prompt or a messages array; options may name
    /// `model` (default `auto`) and any chat parameter; `raw: true` returns the whole
    /// completion instead of the answer's text.
    async fn chat(&self, input: Value, options: Value) -> Result<Value, HostError> {
        let messages = match input {
            Value::String(s) => json!([{"role": "user", "content": s}]),
            a @ Value::Array(_) => a,
            _ => return Err(HostError::Usage("ai.chat takes a prompt string or a messages array")),
        };
        let mut body = match options {
            Value::Object(m) => m,
            _ => serde_json::Map::new(),
        };
        let raw = body.remove("raw").and_then(|v| v.as_bool()).unwrap_or(false);
        body.remove("stream");
        let model = body.get("model").and_then(Value::as_str).unwrap_or("auto").to_owned();
        body.insert("model".into(), Value::String(model.clone()));
        body.insert("messages".into(), messages);
        let body = Bytes::from(Value::Object(body).to_string());
        // The same validation as the gateway's, so a bad request fails here, clearly.
        llmr_protocol::chat::parse(&body)?;
        let caller = self.env.caller();
        let meta = Meta {
            model,
            caller: CallerId::Tool(self.tool.clone()),
            ..Meta::default()
        };
        let deadline = now_ms() + self.env.settings().server.request_timeout_ms;
        // The chat continues the trace of the tool call that asked for it.
        let trace = llmr_telemetry::context(&tracing::Span::current(), &Default::default());
        let env = Envelope::new(Kind::Chat, caller.instance(), deadline, trace, body, meta);
        let answer = caller.call(streams::REQUESTS, &env).await?;
        let v: Value = serde_json::from_slice(&answer.body).map_err(|e| HostError::Unreadable(e.to_string()))?;
        if answer.status >= 400 {
            return Err(HostError::Chat {
                status: answer.status,
                body: v,
            });
        }
        if raw {
            return Ok(v);
        }
        Ok(v.pointer("/choices/0/message/content").cloned().unwrap_or(Value::Null))
    }

    /// `http.fetch(url, {method, headers, body})` → `{status, headers, body}` for hosts on
    /// the allowlist.
    async fn fetch(&self, url: &str, options: Value) -> Result<Value, HostError> {
        let sc = &self.env.settings().scripting;
        let uri: awc::http::Uri = url.parse().map_err(|_| HostError::Url(url.to_owned()))?;
        let scheme = uri.scheme_str().unwrap_or_default();
        if scheme != "http" && scheme != "https" {
            return Err(HostError::Scheme(url.to_owned()));
        }
        let host = uri.host().unwrap_or_default().to_ascii_lowercase();
        let port = uri.port_u16();
        if !allowed(&sc.http_allowlist, &host, port) {
            return Err(HostError::NotAllowed(host));
        }
        let method = options
            .get("method")
            .and_then(Value::as_str)
            .unwrap_or("GET")
            .to_ascii_uppercase();
        let method = awc::http::Method::from_bytes(method.as_bytes()).map_err(|_| HostError::Method(method.clone()))?;
        let addr = vet(
            &host,
            port.unwrap_or(if scheme == "https" { 443 } else { 80 }),
            sc.http_allow_internal,
        )
        .await
        .map_err(|e| match e {
            Vetted::Internal(addr) => HostError::Internal {
                host: host.clone(),
                addr,
            },
            Vetted::Unresolved(why) => HostError::Fetch {
                url: url.to_owned(),
                why,
            },
        })?;
        let mut req = self
            .env
            .http()
            .request(method, url)
            // The address checked is the one connected to (no second lookup to rebind).
            .address(addr)
            .timeout(Duration::from_millis(sc.http_timeout_ms));
        if let Some(h) = options.get("headers").and_then(Value::as_object) {
            for (k, v) in h {
                if let Some(v) = v.as_str() {
                    req = req.insert_header((k.as_str(), v));
                }
            }
        }
        let body = match options.get("body") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                req = req.insert_header(("content-type", "application/json"));
                other.to_string()
            }
        };
        let fetch_err = |why: String| HostError::Fetch {
            url: url.to_owned(),
            why,
        };
        let mut resp = req.send_body(body).await.map_err(|e| fetch_err(e.to_string()))?;
        let status = resp.status().as_u16();
        let headers: serde_json::Map<String, Value> = resp
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), Value::String(v.to_str().ok()?.to_owned()))))
            .collect();
        let bytes = resp
            .body()
            .limit(sc.http_max_bytes)
            .await
            .map_err(|e| fetch_err(format!("reading the body failed: {e}")))?;
        Ok(json!({
            "status": status,
            "ok": (200..300).contains(&status),
            "headers": headers,
            "body": String::from_utf8_lossy(&bytes),
        }))
    }

    async fn kv(&self, function: &str, args: &Value) -> Result<Value, HostError> {
        let ns = format!("tool:{}", self.tool);
        let store = self.env.store();
        let key = args.get(0).and_then(Value::as_str).unwrap_or_default();
        match function {
            "get" => Ok(store
                .kv_get(&ns, key)
                .await?
                .and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or(Value::Null)),
            "set" => {
                let value = args.get(1).cloned().unwrap_or(Value::Null).to_string();
                if value.len() > 1 << 20 {
                    return Err(HostError::KvTooLarge);
                }
                let ttl = args.get(2).and_then(Value::as_u64);
                store.kv_set(&ns, key, &value, ttl).await?;
                Ok(Value::Bool(true))
            }
            "delete" => Ok(Value::Bool(store.kv_delete(&ns, key).await?)),
            "keys" => Ok(json!(store.kv_keys(&ns).await?)),
            other => Err(HostError::Unavailable(format!("kv.{other}"))),
        }
    }
}

/// Whether `host[:port]` matches the allowlist (`host`, `host:port`, `*.domain`).
pub fn allowed(list: &[String], host: &str, port: Option<u16>) -> bool {
    list.iter().any(|entry| {
        let entry = entry.to_ascii_lowercase();
        let (h, p) = match entry.rsplit_once(':') {
            Some((h, p)) if p.parse::<u16>().is_ok() => (h.to_owned(), p.parse::<u16>().ok()),
            _ => (entry.clone(), None),
        };
        if p.is_some() && p != port {
            return false;
        }
        match h.strip_prefix("*.") {
            Some(domain) => host.ends_with(&format!(".{domain}")),
            None => h == host,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_matches_hosts_ports_and_subdomains() {
        let list = vec!["api.example.com".into(), "*.corp".into(), "127.0.0.1:9000".into()];
        assert!(allowed(&list, "api.example.com", None));
        assert!(allowed(&list, "api.example.com", Some(443)));
        assert!(!allowed(&list, "example.com", None));
        assert!(allowed(&list, "a.b.corp", None));
        assert!(!allowed(&list, "corp", None));
        assert!(allowed(&list, "127.0.0.1", Some(9000)));
        assert!(!allowed(&list, "127.0.0.1", Some(9001)));
        assert!(!allowed(&[], "localhost", None));
    }

    #[test]
    fn tool_results_unwrap_for_scripts() {
        assert_eq!(
            unwrap_result(json!({"content": [{"type": "text", "text": "a"}], "isError": false})).unwrap(),
            json!("a")
        );
        assert_eq!(
            unwrap_result(json!({"content": [], "structuredContent": {"x": 1}})).unwrap(),
            json!({"x": 1})
        );
        assert_eq!(
            unwrap_result(json!({"content": [{"type": "text", "text": "bad"}], "isError": true}))
                .unwrap_err()
                .to_string(),
            "bad"
        );
    }
}
