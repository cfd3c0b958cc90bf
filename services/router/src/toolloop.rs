//! Automatic tool calling. A chat completion that names server-side tools — entries
//! `{"type": "mcp", "server_label": …, "allowed_tools": [...]}` in `tools`, or a group's
//! tool set — is run here instead of being handed to a worker once: the tools are offered
//! to the model as functions; the calls the model makes to them are executed by mcp-tools
//! (over the bus) and their results fed back; this repeats up to `[mcp] max_tool_rounds`,
//! after which the model is asked to answer without tools. The final answer goes to the
//! client as one JSON body or, when it asked for a stream, as SSE events. Tool calls for the
//! client's own functions end the loop and are returned as usual. Usage adds up over rounds.

use std::rc::Rc;

use bytes::Bytes;
use llmr_protocol::{ApiError, Envelope, Frame, Head, Kind, Meta, now_ms};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::actor::{Shared, plan_for};
use crate::catalog::Route;

/// The label of this server's own tools in `{"type": "mcp"}` entries.
pub const LOCAL_LABEL: &str = "llmrouter";

/// Whether a request needs the loop: its route has a tool set, or its body names MCP tools.
pub fn needed(route: &Route, body: &[u8]) -> bool {
    if !route.tools.is_empty() {
        return true;
    }
    // Every request passes here: a SIMD substring search before any parse.
    if memchr::memmem::find(body, b"\"mcp\"").is_some() {
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        return mcp_entries(&v).next().is_some();
    }
    false
}

fn mcp_entries(v: &Value) -> impl Iterator<Item = &Value> {
    v.get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|t| t.get("type").and_then(Value::as_str) == Some("mcp"))
}

/// Runs the loop for `env` and answers its caller.
pub async fn run(shared: Rc<Shared>, env: Envelope, routes: Vec<Route>) {
    let frames = match drive(&shared, &env, &routes).await {
        Ok((status, body)) if status < 300 && env.meta.stream => {
            let head = Frame::head(env.id, Head { status, stream: true });
            vec![
                head,
                Frame::chunk(env.id, 1, Bytes::from(to_sse(&body, env.meta.include_usage))),
                Frame::end(env.id, 2),
            ]
        }
        Ok((status, body)) => vec![
            Frame::head(env.id, Head { status, stream: false }),
            Frame::chunk(env.id, 1, Bytes::from(body.to_string())),
            Frame::end(env.id, 2),
        ],
        Err(e) => {
            tracing::info!(request_id = %env.id, error = %e, "tool loop failed");
            vec![Frame::error(env.id, 0, &e)]
        }
    };
    if let Err(e) = shared.bus.reply(&env.reply_to, &frames).await {
        tracing::warn!(error = %e, "could not answer a tool-loop request");
    }
}

/// One exchange with mcp-tools.
async fn mcp(shared: &Shared, env: &Envelope, kind: Kind, body: Value) -> Result<Value, ApiError> {
    let call = Envelope {
        id: Uuid::now_v7(),
        kind,
        reply_to: shared.caller.instance().to_owned(),
        deadline_ms: env.deadline_ms,
        traceparent: env.traceparent.clone(),
        body: Bytes::from(body.to_string()),
        meta: Meta {
            caller: format!("router:{}", env.id),
            ..Meta::default()
        },
    };
    let answer = shared.caller.call("mcp", &call).await?;
    serde_json::from_slice(&answer.body).map_err(|e| ApiError::Internal {
        message: format!("mcp-tools sent an unreadable answer: {e}"),
    })
}

/// The tools offered: `(function definitions, names executed here)`.
async fn server_tools(
    shared: &Shared,
    env: &Envelope,
    body: &Value,
    route: &Route,
) -> Result<(Vec<Value>, Vec<String>), ApiError> {
    // Every tool mcp-tools has (all pages), by name.
    let mut all: Vec<Value> = Vec::new();
    let mut cursor: Option<String> = None;
    for page in 0..100 {
        let mut params = json!({});
        if let Some(c) = &cursor {
            params["cursor"] = json!(c);
        }
        let r = mcp(
            shared,
            env,
            Kind::Mcp,
            json!({"jsonrpc": "2.0", "id": page, "method": "tools/list", "params": params}),
        )
        .await?;
        if let Some(e) = r.get("error") {
            return Err(ApiError::Internal {
                message: format!("mcp-tools could not list tools: {e}"),
            });
        }
        all.extend(
            r.pointer("/result/tools")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
        );
        cursor = r
            .pointer("/result/nextCursor")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    let builtin = |n: &str| ["tool_search", "execute_tool", "execute_code"].contains(&n);
    let mut wanted: Vec<String> = route.tools.clone();
    for entry in mcp_entries(body) {
        let label = entry.get("server_label").and_then(Value::as_str).unwrap_or(LOCAL_LABEL);
        let prefix = if label == LOCAL_LABEL {
            String::new()
        } else {
            format!("{label}_")
        };
        match entry.get("allowed_tools").and_then(Value::as_array) {
            Some(names) => wanted.extend(names.iter().filter_map(Value::as_str).map(|n| {
                if prefix.is_empty() || n.starts_with(&prefix) {
                    n.to_owned()
                } else {
                    format!("{prefix}{n}")
                }
            })),
            None => wanted.extend(
                all.iter()
                    .filter_map(|t| t.get("name").and_then(Value::as_str))
                    .filter(|n| {
                        if prefix.is_empty() {
                            !builtin(n) && !shared.namespaces.iter().any(|ns| n.starts_with(&format!("{ns}_")))
                        } else {
                            n.starts_with(&prefix)
                        }
                    })
                    .map(str::to_owned),
            ),
        }
    }
    wanted.sort();
    wanted.dedup();
    let mut defs = Vec::new();
    let mut names = Vec::new();
    for name in wanted {
        // Tools not listed (hidden, on demand) are still offered by exact name: ask for them.
        let def = all
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some(name.as_str()));
        let (description, parameters) = match def {
            Some(t) => (
                t.get("description").cloned().unwrap_or(json!("")),
                t.get("inputSchema")
                    .cloned()
                    .unwrap_or(json!({"type": "object", "properties": {}})),
            ),
            None => (json!(""), json!({"type": "object", "properties": {}})),
        };
        defs.push(json!({"type": "function", "function": {"name": name, "description": description, "parameters": parameters}}));
        names.push(name);
    }
    if names.is_empty() {
        return Err(ApiError::invalid(
            "none of the requested MCP tools exist",
            Some("tools"),
        ));
    }
    Ok((defs, names))
}

/// The loop; the final `(status, completion)`.
async fn drive(shared: &Rc<Shared>, env: &Envelope, routes: &[Route]) -> Result<(u16, Value), ApiError> {
    let original: Value = serde_json::from_slice(&env.body).map_err(|e| ApiError::invalid(e.to_string(), None))?;
    let (defs, names) = server_tools(shared, env, &original, &routes[0]).await?;
    let mut body: Map<String, Value> = original.as_object().cloned().unwrap_or_default();
    let mut tools: Vec<Value> = body
        .get("tools")
        .and_then(Value::as_array)
        .map(|t| {
            t.iter()
                .filter(|x| x.get("type").and_then(Value::as_str) != Some("mcp"))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    tools.extend(defs);
    body.insert("tools".into(), Value::Array(tools));
    body.insert("stream".into(), Value::Bool(false));
    body.remove("stream_options");
    let mut usage = [0u64; 3];
    let max_rounds = shared.max_tool_rounds;
    for round in 0..=max_rounds {
        if round == max_rounds {
            // Out of rounds: the model answers with what it has.
            body.insert("tool_choice".into(), json!("none"));
        }
        let (status, completion) = complete(shared, env, routes, &body).await?;
        for (i, k) in ["prompt_tokens", "completion_tokens", "total_tokens"]
            .iter()
            .enumerate()
        {
            usage[i] += completion
                .pointer(&format!("/usage/{k}"))
                .and_then(Value::as_u64)
                .unwrap_or(0);
        }
        let calls: Vec<Value> = completion
            .pointer("/choices/0/message/tool_calls")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let ours = |c: &Value| {
            c.pointer("/function/name")
                .and_then(Value::as_str)
                .is_some_and(|n| names.iter().any(|x| x == n))
        };
        if status >= 300 || calls.is_empty() || !calls.iter().all(ours) || round == max_rounds {
            let mut completion = completion;
            if status < 300 && round > 0 {
                completion["usage"] =
                    json!({"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": usage[2]});
            }
            return Ok((status, completion));
        }
        let message = completion.pointer("/choices/0/message").cloned().unwrap_or(Value::Null);
        let results = futures_util::future::join_all(calls.iter().map(|c| async move {
            let name = c.pointer("/function/name").and_then(Value::as_str).unwrap_or_default();
            let args: Value = c
                .pointer("/function/arguments")
                .and_then(Value::as_str)
                .and_then(|a| serde_json::from_str(a).ok())
                .unwrap_or(json!({}));
            let text = match mcp(shared, env, Kind::Tool, json!({"name": name, "arguments": args})).await {
                Ok(r) => result_text(&r),
                Err(e) => format!("Error: {e}"),
            };
            tracing::info!(request_id = %env.id, tool = name, round, "server-side tool called");
            json!({"role": "tool", "tool_call_id": c.get("id").cloned().unwrap_or(Value::Null), "content": text})
        }))
        .await;
        if let Some(Value::Array(msgs)) = body.get_mut("messages") {
            msgs.push(message);
            msgs.extend(results);
        }
    }
    Err(ApiError::Internal {
        message: "the tool loop ended without an answer".into(),
    })
}

/// The text a model gets back from a tool.
fn result_text(r: &Value) -> String {
    let text = r
        .get("structuredContent")
        .map(Value::to_string)
        .unwrap_or_else(|| llmr_protocol::mcp::content_text(r));
    if r.get("isError").and_then(Value::as_bool).unwrap_or(false) {
        format!("Error: {text}")
    } else {
        text
    }
}

/// One round: plan, hand to a worker, collect.
async fn complete(
    shared: &Rc<Shared>,
    env: &Envelope,
    routes: &[Route],
    body: &Map<String, Value>,
) -> Result<(u16, Value), ApiError> {
    let bytes = Bytes::from(Value::Object(body.clone()).to_string());
    let plan = plan_for(shared, routes, bytes.len(), now_ms()).await?;
    let stream = format!("jobs:{}", plan.pool);
    let job = Envelope {
        id: Uuid::now_v7(),
        kind: Kind::Job,
        reply_to: shared.caller.instance().to_owned(),
        deadline_ms: env.deadline_ms,
        traceparent: env.traceparent.clone(),
        body: bytes,
        meta: Meta {
            model: env.meta.model.clone(),
            stream: false,
            include_usage: false,
            caller: env.meta.caller.clone(),
            attempt: 0,
            plan: Some(plan),
            mode: String::new(),
        },
    };
    let answer = shared.caller.call(&stream, &job).await?;
    let v: Value = serde_json::from_slice(&answer.body).map_err(|e| ApiError::Internal {
        message: format!("unreadable completion: {e}"),
    })?;
    Ok((answer.status, v))
}

/// A completion as the SSE events of a stream (without `[DONE]`, which the gateway adds).
pub fn to_sse(c: &Value, include_usage: bool) -> String {
    let base = |choices: Value| {
        json!({
            "id": c.get("id").cloned().unwrap_or(json!("chatcmpl-tools")),
            "object": "chat.completion.chunk",
            "created": c.get("created").cloned().unwrap_or(json!(now_ms() / 1000)),
            "model": c.get("model").cloned().unwrap_or(Value::Null),
            "choices": choices,
        })
    };
    let msg = c.pointer("/choices/0/message").cloned().unwrap_or(json!({}));
    let mut delta = json!({"role": "assistant", "content": msg.get("content").cloned().unwrap_or(Value::Null)});
    if let Some(calls) = msg.get("tool_calls").and_then(Value::as_array) {
        let indexed: Vec<Value> = calls
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let mut t = t.clone();
                t["index"] = json!(i);
                t
            })
            .collect();
        delta["tool_calls"] = Value::Array(indexed);
    }
    let finish = c.pointer("/choices/0/finish_reason").cloned().unwrap_or(json!("stop"));
    let mut out = String::new();
    for event in [
        base(json!([{"index": 0, "delta": delta, "finish_reason": null}])),
        base(json!([{"index": 0, "delta": {}, "finish_reason": finish}])),
    ] {
        out.push_str(&format!("data: {event}\n\n"));
    }
    if include_usage && let Some(u) = c.get("usage") {
        let mut event = base(json!([]));
        event["usage"] = u.clone();
        out.push_str(&format!("data: {event}\n\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_mcp_entries() {
        let r = Route {
            name: "m".into(),
            strategy: llmr_config::Strategy::LeastLoad,
            targets: vec![],
            fallbacks: vec![],
            tools: vec![],
        };
        assert!(needed(&r, br#"{"tools":[{"type":"mcp","server_label":"llmrouter"}]}"#));
        assert!(!needed(
            &r,
            br#"{"tools":[{"type":"function","function":{"name":"mcp"}}]}"#
        ));
        assert!(!needed(&r, br#"{"messages":[]}"#));
        let r = Route {
            tools: vec!["calculator".into()],
            ..r
        };
        assert!(needed(&r, br#"{"messages":[]}"#));
    }

    #[test]
    fn streams_a_completion_as_events() {
        let c = json!({"id": "x", "created": 1, "model": "m", "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}});
        let sse = to_sse(&c, true);
        let events: Vec<Value> = sse
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .map(|e| serde_json::from_str(e).unwrap())
            .collect();
        assert_eq!(events.len(), 3);
        assert_eq!(events[0]["choices"][0]["delta"]["content"], json!("hi"));
        assert_eq!(events[1]["choices"][0]["finish_reason"], json!("stop"));
        assert_eq!(events[2]["usage"]["total_tokens"], json!(3));
        assert_eq!(to_sse(&c, false).matches("data: ").count(), 2);
    }

    #[test]
    fn tool_results_become_text() {
        assert_eq!(result_text(&json!({"content": [{"type": "text", "text": "a"}]})), "a");
        assert_eq!(
            result_text(&json!({"content": [], "structuredContent": {"v": 1}})),
            r#"{"v":1}"#
        );
        assert_eq!(
            result_text(&json!({"content": [{"type": "text", "text": "bad"}], "isError": true})),
            "Error: bad"
        );
    }
}
