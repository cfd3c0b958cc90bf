//! What a tool's host-module calls do: `mcp.call` runs another tool, `ai.chat` asks the
//! router for a chat completion over the bus, `http.fetch` reaches hosts on the allowlist
//! only, `kv` reads and writes the tool's own space in the store.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use llmr_protocol::{Envelope, Kind, Meta, now_ms};
use llmr_script::{Host, HostFuture};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::tools::{Tools, Via};

/// The host of one running tool.
pub struct ToolHost<'a> {
    pub tools: &'a Rc<Tools>,
    /// Whose `kv` space this is.
    pub tool: String,
    pub depth: u32,
}

impl Host for ToolHost<'_> {
    fn call<'a>(&'a self, module: &'a str, function: &'a str, args: Value) -> HostFuture<'a> {
        Box::pin(async move {
            let arg = |i: usize| args.get(i).cloned().unwrap_or(Value::Null);
            match (module, function) {
                ("mcp", "call") => {
                    let name = arg(0).as_str().unwrap_or_default().to_owned();
                    let r = self
                        .tools
                        .call(&name, arg(1), Via::Indirect, false, self.depth + 1)
                        .await
                        .map_err(|e| e.to_string())?;
                    unwrap_result(r)
                }
                ("ai", "chat") => self.chat(arg(0), arg(1)).await,
                ("http", "fetch") => self.fetch(arg(0).as_str().unwrap_or_default(), arg(1)).await,
                ("kv", f) => self.kv(f, &args).await,
                _ => Err(format!("{module}.{function} is not available")),
            }
        })
    }
}

/// A tool's result as a script sees it: structured content, else the text; an error result
/// throws.
fn unwrap_result(r: Value) -> Result<Value, String> {
    let text = llmr_protocol::mcp::content_text(&r);
    if r.get("isError").and_then(Value::as_bool).unwrap_or(false) {
        return Err(text);
    }
    Ok(r.get("structuredContent").cloned().unwrap_or(Value::String(text)))
}

impl ToolHost<'_> {
    /// `ai.chat(input, options)`: input is a prompt or a messages array; options may name
    /// `model` (default `auto`) and any chat parameter; `raw: true` returns the whole
    /// completion instead of the answer's text.
    async fn chat(&self, input: Value, options: Value) -> Result<Value, String> {
        let messages = match input {
            Value::String(s) => json!([{"role": "user", "content": s}]),
            a @ Value::Array(_) => a,
            _ => return Err("ai.chat takes a prompt string or a messages array".into()),
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
        llmr_protocol::chat::parse(&body).map_err(|e| e.to_string())?;
        let tools = self.tools;
        let env = Envelope {
            id: Uuid::now_v7(),
            kind: Kind::Chat,
            reply_to: tools.caller.instance().to_owned(),
            deadline_ms: now_ms() + tools.settings.server.request_timeout_ms,
            traceparent: String::new(),
            body,
            meta: Meta {
                model,
                caller: format!("tool:{}", self.tool),
                ..Meta::default()
            },
        };
        let answer = tools.caller.call("requests", &env).await.map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_slice(&answer.body).map_err(|e| format!("unreadable completion: {e}"))?;
        if answer.status >= 400 {
            return Err(format!("ai.chat failed ({}): {v}", answer.status));
        }
        if raw {
            return Ok(v);
        }
        Ok(v.pointer("/choices/0/message/content").cloned().unwrap_or(Value::Null))
    }

    /// `http.fetch(url, {method, headers, body})` → `{status, headers, body}` for hosts on
    /// the allowlist.
    async fn fetch(&self, url: &str, options: Value) -> Result<Value, String> {
        let sc = &self.tools.settings.scripting;
        let uri: awc::http::Uri = url.parse().map_err(|_| format!("invalid URL `{url}`"))?;
        let scheme = uri.scheme_str().unwrap_or_default();
        if scheme != "http" && scheme != "https" {
            return Err(format!("only http and https URLs may be fetched, not `{url}`"));
        }
        let host = uri.host().unwrap_or_default().to_ascii_lowercase();
        let port = uri.port_u16();
        if !allowed(&sc.http_allowlist, &host, port) {
            return Err(format!(
                "host `{host}` is not in [scripting] http_allowlist; tools may fetch only listed hosts"
            ));
        }
        let method = options
            .get("method")
            .and_then(Value::as_str)
            .unwrap_or("GET")
            .to_ascii_uppercase();
        let method =
            awc::http::Method::from_bytes(method.as_bytes()).map_err(|_| format!("invalid method `{method}`"))?;
        let mut req = self
            .tools
            .http
            .request(method, url)
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
        let mut resp = req
            .send_body(body)
            .await
            .map_err(|e| format!("fetch {url} failed: {e}"))?;
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
            .map_err(|e| format!("fetch {url}: reading the body failed: {e}"))?;
        Ok(json!({
            "status": status,
            "ok": (200..300).contains(&status),
            "headers": headers,
            "body": String::from_utf8_lossy(&bytes),
        }))
    }

    async fn kv(&self, function: &str, args: &Value) -> Result<Value, String> {
        let ns = format!("tool:{}", self.tool);
        let store = &self.tools.store;
        let key = args.get(0).and_then(Value::as_str).unwrap_or_default();
        let err = |e: llmr_store::StoreError| format!("kv: {e}");
        match function {
            "get" => Ok(store
                .kv_get(&ns, key)
                .await
                .map_err(err)?
                .and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or(Value::Null)),
            "set" => {
                let value = args.get(1).cloned().unwrap_or(Value::Null).to_string();
                if value.len() > 1 << 20 {
                    return Err("kv: values are limited to 1 MiB".into());
                }
                let ttl = args.get(2).and_then(Value::as_u64);
                store.kv_set(&ns, key, &value, ttl).await.map_err(err)?;
                Ok(Value::Bool(true))
            }
            "delete" => Ok(Value::Bool(store.kv_delete(&ns, key).await.map_err(err)?)),
            "keys" => Ok(json!(store.kv_keys(&ns).await.map_err(err)?)),
            other => Err(format!("kv.{other} is not available")),
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
            unwrap_result(json!({"content": [{"type": "text", "text": "a"}], "isError": false})),
            Ok(json!("a"))
        );
        assert_eq!(
            unwrap_result(json!({"content": [], "structuredContent": {"x": 1}})),
            Ok(json!({"x": 1}))
        );
        assert_eq!(
            unwrap_result(json!({"content": [{"type": "text", "text": "bad"}], "isError": true})),
            Err("bad".into())
        );
    }
}
