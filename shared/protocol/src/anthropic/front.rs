//! Anthropic's Messages API as a front door: a client's `POST /v1/messages` body as an
//! OpenAI chat request (routed like any other), and the OpenAI answer — whole or as chunks —
//! back as an Anthropic message or Anthropic's event sequence (`message_start`,
//! `content_block_start` / `_delta` / `_stop`, `message_delta`, `message_stop`), plus
//! Anthropic's error shape.
//!
//! Kept: system (string or text blocks), text and image blocks (base64 and URL), tools,
//! tool_choice (and `disable_parallel_tool_use`), tool_use and tool_result blocks, stop
//! sequences, temperature, top_p, max_tokens, `metadata.user_id`, and usage. `thinking`:
//! the original body travels beside the chat body (`Meta::native`), so an Anthropic target
//! gets it intact; other targets get the chat body (no `thinking`, `top_k`, `cache_control`,
//! documents or server tools), and their `reasoning_content` comes back as thinking blocks.

use serde_json::{Map, Value, json};

use crate::ApiError;

fn invalid(message: impl Into<String>, param: &str) -> ApiError {
    ApiError::invalid(message, Some(param))
}

/// An image block as an OpenAI `image_url` part.
fn image_part(b: &Value, at: &str) -> Result<Value, ApiError> {
    let s = &b["source"];
    let url = match s["type"].as_str() {
        Some("base64") => format!(
            "data:{};base64,{}",
            s["media_type"].as_str().unwrap_or("image/png"),
            s["data"].as_str().unwrap_or_default()
        ),
        Some("url") => s["url"].as_str().unwrap_or_default().to_owned(),
        _ => return Err(invalid("An image block needs a `base64` or `url` source.", at)),
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// The blocks of one message, checked: a string becomes one text block.
fn blocks_of<'a>(m: &'a Value, at: &str) -> Result<std::borrow::Cow<'a, [Value]>, ApiError> {
    match &m["content"] {
        Value::String(s) => Ok(std::borrow::Cow::Owned(vec![json!({"type": "text", "text": s})])),
        Value::Array(a) => Ok(std::borrow::Cow::Borrowed(a.as_slice())),
        _ => Err(invalid("`content` must be a string or an array of content blocks.", at)),
    }
}

/// A user turn: its tool results as `tool` messages first, then the rest as one user message.
fn user_turn(m: &Value, at: &str, out: &mut Vec<Value>) -> Result<(), ApiError> {
    let mut parts = Vec::new();
    for (j, b) in blocks_of(m, at)?.iter().enumerate() {
        let at = format!("{at}.content.{j}");
        match b["type"].as_str() {
            Some("text") => parts.push(json!({"type": "text", "text": b["text"]})),
            Some("image") => parts.push(image_part(b, &at)?),
            Some("tool_result") => {
                let mut text = crate::chat::text_of(&b["content"]);
                if b["is_error"] == true {
                    text = format!("Error: {text}");
                }
                out.push(json!({"role": "tool", "tool_call_id": b["tool_use_id"], "content": text}));
            }
            Some("document") if b["source"]["type"] == "text" => {
                parts.push(json!({"type": "text", "text": b["source"]["data"]}));
            }
            Some(other) => {
                return Err(invalid(
                    format!("Content blocks of type `{other}` are not supported."),
                    &at,
                ));
            }
            None => return Err(invalid("A content block needs a `type`.", &at)),
        }
    }
    if !parts.is_empty() {
        let content = match parts.as_slice() {
            [only] if only["type"] == "text" => only["text"].clone(),
            _ => Value::from(parts),
        };
        out.push(json!({"role": "user", "content": content}));
    }
    Ok(())
}

/// An assistant turn: text, tool_use as tool_calls; thinking blocks are left to the native body.
fn assistant_turn(m: &Value, at: &str, out: &mut Vec<Value>) -> Result<(), ApiError> {
    let mut text = String::new();
    let mut calls = Vec::new();
    for b in blocks_of(m, at)?.iter() {
        match b["type"].as_str() {
            Some("text") => text.push_str(b["text"].as_str().unwrap_or_default()),
            Some("tool_use") => calls.push(json!({"id": b["id"], "type": "function",
                "function": {"name": b["name"], "arguments": b["input"].to_string()}})),
            _ => {} // thinking, redacted_thinking: only Anthropic targets take them back
        }
    }
    let mut msg = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) }});
    if !calls.is_empty() {
        msg["tool_calls"] = Value::from(calls);
    }
    out.push(msg);
    Ok(())
}

fn tools(req: &Value) -> Result<Option<Value>, ApiError> {
    let Some(list) = req.get("tools").filter(|t| !t.is_null()) else {
        return Ok(None);
    };
    let list = list
        .as_array()
        .ok_or_else(|| invalid("`tools` must be an array.", "tools"))?;
    let mut out = Vec::new();
    for (i, t) in list.iter().enumerate() {
        // Server tools (web_search_…, bash_…) have a versioned type and no input_schema.
        if t.get("input_schema").is_none() {
            continue;
        }
        let name = t["name"]
            .as_str()
            .ok_or_else(|| invalid("A tool needs a `name`.", &format!("tools.{i}.name")))?;
        let mut f = json!({"name": name, "parameters": t["input_schema"]});
        if let Some(d) = t["description"].as_str() {
            f["description"] = json!(d);
        }
        out.push(json!({"type": "function", "function": f}));
    }
    Ok((!out.is_empty()).then(|| Value::from(out)))
}

/// Sampling and the rest of the request's top-level fields, onto the chat body.
fn options(req: &Value, out: &mut Map<String, Value>) -> Result<(), ApiError> {
    let max = req["max_tokens"]
        .as_u64()
        .ok_or_else(|| invalid("`max_tokens` is required and must be a positive integer.", "max_tokens"))?;
    out.insert("max_tokens".into(), json!(max));
    for k in ["temperature", "top_p"] {
        if let Some(v) = req.get(k).filter(|v| !v.is_null()) {
            out.insert(k.into(), v.clone());
        }
    }
    if let Some(s) = req["stop_sequences"].as_array().filter(|s| !s.is_empty()) {
        out.insert("stop".into(), Value::from(s.clone()));
    }
    if let Some(u) = req["metadata"]["user_id"].as_str() {
        out.insert("user".into(), json!(u));
    }
    let choice = &req["tool_choice"];
    match choice["type"].as_str() {
        Some("auto") => {
            out.insert("tool_choice".into(), json!("auto"));
        }
        Some("any") => {
            out.insert("tool_choice".into(), json!("required"));
        }
        Some("none") => {
            out.insert("tool_choice".into(), json!("none"));
        }
        Some("tool") => {
            out.insert(
                "tool_choice".into(),
                json!({"type": "function", "function": {"name": choice["name"]}}),
            );
        }
        _ => {}
    }
    if choice["disable_parallel_tool_use"] == true {
        out.insert("parallel_tool_calls".into(), json!(false));
    }
    if req["stream"] == true {
        out.insert("stream".into(), json!(true));
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(())
}

/// A Messages request as an OpenAI chat request (the model name is kept: it names a group).
pub fn chat_request(req: &Value) -> Result<Value, ApiError> {
    if !req.is_object() {
        return Err(ApiError::invalid("The request body must be a JSON object.", None));
    }
    let model = req["model"]
        .as_str()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| invalid("`model` is required.", "model"))?;
    let turns = req["messages"]
        .as_array()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| invalid("`messages` must be a non-empty array.", "messages"))?;
    let mut messages = Vec::new();
    let system = crate::chat::text_of(&req["system"]);
    if !system.is_empty() {
        messages.push(json!({"role": "system", "content": system}));
    }
    for (i, m) in turns.iter().enumerate() {
        let at = format!("messages.{i}");
        match m["role"].as_str() {
            Some("user") => user_turn(m, &at, &mut messages)?,
            Some("assistant") => assistant_turn(m, &at, &mut messages)?,
            _ => return Err(invalid("`role` must be `user` or `assistant`.", &format!("{at}.role"))),
        }
    }
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    out.insert("messages".into(), Value::from(messages));
    options(req, &mut out)?;
    if let Some(t) = tools(req)? {
        out.insert("tools".into(), t);
    }
    Ok(Value::Object(out))
}

/// OpenAI's finish_reason as Anthropic's stop reason.
pub fn stop_reason(finish: &str) -> &'static str {
    match finish {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// A message id from a completion id.
fn message_id(id: &str) -> String {
    format!("msg_{}", id.strip_prefix("chatcmpl-").unwrap_or(id))
}

/// An OpenAI chat completion as an Anthropic message.
pub fn message(completion: &Value, model: &str) -> Value {
    let choice = &completion["choices"][0];
    let m = &choice["message"];
    let mut content = Vec::new();
    if let Some(blocks) = m["thinking_blocks"].as_array() {
        content.extend(blocks.iter().cloned());
    } else if let Some(r) = m["reasoning_content"].as_str().filter(|r| !r.is_empty()) {
        content.push(json!({"type": "thinking", "thinking": r, "signature": ""}));
    }
    if let Some(t) = m["content"].as_str().filter(|t| !t.is_empty()) {
        content.push(json!({"type": "text", "text": t}));
    }
    for c in m["tool_calls"].as_array().into_iter().flatten() {
        let args = c["function"]["arguments"].as_str().unwrap_or("{}");
        let input: Value = serde_json::from_str(args).unwrap_or_else(|_| json!({}));
        content.push(json!({"type": "tool_use", "id": c["id"], "name": c["function"]["name"], "input": input}));
    }
    let u = &completion["usage"];
    json!({
        "id": message_id(completion["id"].as_str().unwrap_or_default()),
        "type": "message",
        "role": "assistant",
        "model": completion["model"].as_str().unwrap_or(model),
        "content": content,
        "stop_reason": stop_reason(choice["finish_reason"].as_str().unwrap_or("stop")),
        "stop_sequence": null,
        "usage": {"input_tokens": u["prompt_tokens"].as_u64().unwrap_or(0),
                  "output_tokens": u["completion_tokens"].as_u64().unwrap_or(0)},
    })
}

/// Anthropic's error type for an HTTP status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        _ => "api_error",
    }
}

/// An error in Anthropic's shape.
pub fn error_body(e: &ApiError) -> Value {
    json!({"type": "error", "error": {"type": error_type(e.status()), "message": e.message()}})
}

/// The open content block of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Thinking,
    Text,
    /// A tool call (by its OpenAI index).
    Tool(u64),
    /// Redacted thinking: opened and closed at once.
    Redacted,
}

/// OpenAI chunks → Anthropic stream events (`(event name, data)`).
#[derive(Debug)]
pub struct Events {
    model: String,
    started: bool,
    /// The open block and its index.
    open: Option<(Open, u64)>,
    next_index: u64,
    stop: Option<&'static str>,
    input_tokens: u64,
    output_tokens: u64,
}

impl Events {
    /// A stream answering for `model`; `input_estimate` is reported in `message_start` until
    /// the upstream's usage arrives with the last chunk.
    pub fn new(model: &str, input_estimate: u64) -> Events {
        Events {
            model: model.to_owned(),
            started: false,
            open: None,
            next_index: 0,
            stop: None,
            input_tokens: input_estimate,
            output_tokens: 0,
        }
    }

    fn start(&mut self, chunk: &Value, out: &mut Vec<(&'static str, Value)>) {
        if self.started {
            return;
        }
        self.started = true;
        if let Some(m) = chunk["model"].as_str().filter(|m| !m.is_empty()) {
            m.clone_into(&mut self.model);
        }
        out.push((
            "message_start",
            json!({"type": "message_start", "message": {
            "id": message_id(chunk["id"].as_str().unwrap_or_default()), "type": "message", "role": "assistant",
            "model": self.model, "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": 0}}}),
        ));
    }

    fn close(&mut self, out: &mut Vec<(&'static str, Value)>) {
        if let Some((_, index)) = self.open.take() {
            out.push((
                "content_block_stop",
                json!({"type": "content_block_stop", "index": index}),
            ));
        }
    }

    /// Opens `kind` (closing the open block) unless it is the open one; its index.
    fn open(&mut self, kind: Open, block: Value, out: &mut Vec<(&'static str, Value)>) -> u64 {
        if let Some((open, index)) = self.open
            && open == kind
        {
            return index;
        }
        self.close(out);
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some((kind, index));
        out.push((
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": block}),
        ));
        index
    }

    fn delta(index: u64, delta: Value) -> (&'static str, Value) {
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index, "delta": delta}),
        )
    }

    /// The events of one OpenAI chunk.
    pub fn chunk(&mut self, chunk: &Value) -> Vec<(&'static str, Value)> {
        let mut out = Vec::new();
        self.start(chunk, &mut out);
        if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
            self.input_tokens = u["prompt_tokens"].as_u64().unwrap_or(self.input_tokens);
            self.output_tokens = u["completion_tokens"].as_u64().unwrap_or(0);
        }
        let Some(choice) = chunk["choices"].get(0) else {
            return out;
        };
        let d = &choice["delta"];
        if let Some(r) = d["reasoning_content"].as_str().filter(|r| !r.is_empty()) {
            let i = self.open(
                Open::Thinking,
                json!({"type": "thinking", "thinking": "", "signature": ""}),
                &mut out,
            );
            out.push(Self::delta(i, json!({"type": "thinking_delta", "thinking": r})));
        }
        for b in d["thinking_blocks"].as_array().into_iter().flatten() {
            if b["type"] == "redacted_thinking" {
                self.close(&mut out);
                self.open(Open::Redacted, b.clone(), &mut out);
                self.close(&mut out);
            } else if let Some(sig) = b["signature"].as_str().filter(|s| !s.is_empty()) {
                let i = self.open(
                    Open::Thinking,
                    json!({"type": "thinking", "thinking": "", "signature": ""}),
                    &mut out,
                );
                out.push(Self::delta(i, json!({"type": "signature_delta", "signature": sig})));
            }
        }
        if let Some(t) = d["content"].as_str().filter(|t| !t.is_empty()) {
            let i = self.open(Open::Text, json!({"type": "text", "text": ""}), &mut out);
            out.push(Self::delta(i, json!({"type": "text_delta", "text": t})));
        }
        for c in d["tool_calls"].as_array().into_iter().flatten() {
            let n = c["index"].as_u64().unwrap_or(0);
            let block = json!({"type": "tool_use", "id": c["id"], "name": c["function"]["name"], "input": {}});
            let i = self.open(Open::Tool(n), block, &mut out);
            if let Some(args) = c["function"]["arguments"].as_str().filter(|a| !a.is_empty()) {
                out.push(Self::delta(
                    i,
                    json!({"type": "input_json_delta", "partial_json": args}),
                ));
            }
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            self.stop = Some(stop_reason(f));
        }
        out
    }

    /// The closing events: the open block's stop, `message_delta` with the stop reason and
    /// usage, `message_stop`.
    pub fn finish(&mut self) -> Vec<(&'static str, Value)> {
        let mut out = Vec::new();
        self.start(&Value::Null, &mut out);
        self.close(&mut out);
        out.push((
            "message_delta",
            json!({"type": "message_delta",
            "delta": {"stop_reason": self.stop.unwrap_or("end_turn"), "stop_sequence": null},
            "usage": {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}}),
        ));
        out.push(("message_stop", json!({"type": "message_stop"})));
        out
    }
}

/// Events as SSE text (`event: …\ndata: …\n\n`).
pub fn sse(events: &[(&'static str, Value)], out: &mut Vec<u8>) {
    for (name, data) in events {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\ndata: ");
        out.extend_from_slice(data.to_string().as_bytes());
        out.extend_from_slice(b"\n\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_messages_request_becomes_a_chat_request() {
        let req = json!({"model": "claude", "max_tokens": 100, "system": [{"type": "text", "text": "be brief"}],
            "stop_sequences": ["END"], "metadata": {"user_id": "u1"}, "stream": true,
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "tools": [{"name": "look", "description": "looks", "input_schema": {"type": "object"}},
                      {"type": "web_search_20250305", "name": "web_search"}],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "what is this?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]},
                {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "s"},
                    {"type": "tool_use", "id": "t1", "name": "look", "input": {"x": 1}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "a cat"}]},
                    {"type": "text", "text": "thanks"}]}]});
        let c = chat_request(&req).unwrap();
        let m = c["messages"].as_array().unwrap();
        assert_eq!(m[0], json!({"role": "system", "content": "be brief"}));
        assert_eq!(m[1]["content"][1]["image_url"]["url"], "data:image/png;base64,AAAA");
        assert_eq!(m[2]["tool_calls"][0]["function"]["arguments"], "{\"x\":1}");
        assert_eq!(m[2]["content"], Value::Null);
        assert_eq!(m[3], json!({"role": "tool", "tool_call_id": "t1", "content": "a cat"}));
        assert_eq!(m[4], json!({"role": "user", "content": "thanks"}));
        assert_eq!(c["tools"].as_array().unwrap().len(), 1, "server tools are dropped");
        assert_eq!(c["tool_choice"], "required");
        assert_eq!(c["parallel_tool_calls"], false);
        assert_eq!(c["stop"], json!(["END"]));
        assert_eq!(c["user"], "u1");
        assert_eq!(c["stream_options"]["include_usage"], true);
        let e = chat_request(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})).unwrap_err();
        assert_eq!(e.param(), Some("max_tokens"));
        let e = chat_request(&json!({"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}))
            .unwrap_err();
        assert_eq!(e.param(), Some("messages.0.role"));
    }

    #[test]
    fn answers_and_chunks_become_anthropic_shapes() {
        let c = json!({"id": "chatcmpl-1", "model": "gpt", "choices": [{"index": 0, "finish_reason": "tool_calls",
            "message": {"role": "assistant", "content": "Looking.", "reasoning_content": "hm",
                "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "look", "arguments": "{\"x\":1}"}}]}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14}});
        let m = message(&c, "claude");
        assert_eq!(m["id"], "msg_1");
        assert_eq!(m["stop_reason"], "tool_use");
        assert_eq!(m["content"][0]["type"], "thinking");
        assert_eq!(m["content"][1], json!({"type": "text", "text": "Looking."}));
        assert_eq!(m["content"][2]["input"], json!({"x": 1}));
        assert_eq!(m["usage"], json!({"input_tokens": 10, "output_tokens": 4}));

        let mut s = Events::new("claude", 3);
        let chunks = [
            json!({"id": "chatcmpl-2", "model": "gpt", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}),
            json!({"id": "chatcmpl-2", "choices": [{"index": 0, "delta": {"content": "Hi"}}]}),
            json!({"id": "chatcmpl-2", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "t1", "function": {"name": "look", "arguments": ""}}]}}]}),
            json!({"id": "chatcmpl-2", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"x\":1}"}}]}}]}),
            json!({"id": "chatcmpl-2", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
            json!({"id": "chatcmpl-2", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2}}),
        ];
        let mut names: Vec<&str> = Vec::new();
        let mut all = Vec::new();
        for c in &chunks {
            all.extend(s.chunk(c));
        }
        all.extend(s.finish());
        names.extend(all.iter().map(|(n, _)| *n));
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(all[0].1["message"]["usage"]["input_tokens"], 3);
        assert_eq!(all[5].1["delta"]["partial_json"], "{\"x\":1}");
        assert_eq!(all[7].1["delta"]["stop_reason"], "tool_use");
        assert_eq!(all[7].1["usage"], json!({"input_tokens": 7, "output_tokens": 2}));
        assert_eq!(
            error_body(&ApiError::RateLimited {
                message: "slow down".into(),
                retry_after_s: None
            })["error"]["type"],
            "rate_limit_error"
        );
    }
}
