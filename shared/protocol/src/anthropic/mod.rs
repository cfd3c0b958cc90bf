//! OpenAI chat completions ↔ Anthropic's Messages API, written once: the request (system,
//! text and image parts, tools, tool_choice, tool calls and their results, sampling), the
//! answer (text, `thinking` as `reasoning_content`, tool_use → tool_calls, stop reasons →
//! finish_reason, usage), and the stream (message_start, content_block_*, message_delta,
//! message_stop, ping, error → OpenAI chunks, usage from message_start + message_delta).

pub mod front;

use serde_json::{Map, Value, json};

use crate::ApiError;

/// The `anthropic-version` header this translation speaks.
pub const VERSION: &str = "2023-06-01";

/// Anthropic needs `max_tokens`; this is used when the request names none.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// An OpenAI content part as an Anthropic content block (images: data URLs or URLs).
fn block(part: &Value) -> Option<Value> {
    match part["type"].as_str() {
        Some("text") => Some(json!({"type": "text", "text": part["text"]})),
        Some("image_url") => {
            let url = part["image_url"]["url"].as_str().or(part["image_url"].as_str())?;
            Some(match url.strip_prefix("data:").and_then(|d| d.split_once(";base64,")) {
                Some((media, data)) => {
                    json!({"type": "image", "source": {"type": "base64", "media_type": media, "data": data}})
                }
                None => json!({"type": "image", "source": {"type": "url", "url": url}}),
            })
        }
        _ => None,
    }
}

fn blocks(content: &Value) -> Vec<Value> {
    match content {
        Value::String(s) if !s.is_empty() => vec![json!({"type": "text", "text": s})],
        Value::Array(parts) => parts.iter().filter_map(block).collect(),
        _ => Vec::new(),
    }
}

/// Appends `blocks` as `role`, merging with the previous message of the same role (Anthropic
/// wants user and assistant turns to alternate).
fn push(out: &mut Vec<Value>, role: &str, mut new: Vec<Value>) {
    if new.is_empty() {
        return;
    }
    if let Some(last) = out.last_mut().filter(|m| m["role"] == role)
        && let Some(existing) = last["content"].as_array_mut()
    {
        existing.append(&mut new);
        return;
    }
    out.push(json!({"role": role, "content": new}));
}

/// An OpenAI chat completion request as an Anthropic Messages request for `model`.
pub fn request(chat: &Value, model: &str) -> Result<Value, ApiError> {
    let mut system = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    for m in chat["messages"].as_array().into_iter().flatten() {
        match m["role"].as_str().unwrap_or_default() {
            "system" | "developer" => system.push(crate::chat::text_of(&m["content"])),
            "assistant" => {
                let mut content = blocks(&m["content"]);
                for call in m["tool_calls"].as_array().into_iter().flatten() {
                    let args = call["function"]["arguments"].as_str().unwrap_or("{}");
                    let input: Value = serde_json::from_str(args).unwrap_or_else(|_| json!({}));
                    content.push(
                        json!({"type": "tool_use", "id": call["id"], "name": call["function"]["name"], "input": input}),
                    );
                }
                push(&mut messages, "assistant", content);
            }
            "tool" => push(
                &mut messages,
                "user",
                vec![
                    json!({"type": "tool_result", "tool_use_id": m["tool_call_id"], "content": crate::chat::text_of(&m["content"])}),
                ],
            ),
            _ => push(&mut messages, "user", blocks(&m["content"])),
        }
    }
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    out.insert("messages".into(), Value::from(messages));
    let max = chat["max_completion_tokens"].as_u64().or(chat["max_tokens"].as_u64());
    out.insert("max_tokens".into(), json!(max.unwrap_or(DEFAULT_MAX_TOKENS)));
    if !system.is_empty() {
        out.insert("system".into(), json!(system.join("\n\n")));
    }
    for k in ["temperature", "top_p", "stream"] {
        if let Some(v) = chat.get(k).filter(|v| !v.is_null()) {
            out.insert(k.into(), v.clone());
        }
    }
    match &chat["stop"] {
        Value::String(s) => {
            out.insert("stop_sequences".into(), json!([s]));
        }
        Value::Array(a) => {
            out.insert("stop_sequences".into(), Value::Array(a.clone()));
        }
        _ => {}
    }
    if let Some(tools) = chat["tools"].as_array().filter(|t| !t.is_empty()) {
        let tools: Vec<Value> = tools
            .iter()
            .filter(|t| t["type"] == "function")
            .map(|t| {
                let f = &t["function"];
                json!({"name": f["name"], "description": f.get("description").cloned().unwrap_or(json!("")),
                       "input_schema": f.get("parameters").filter(|p| !p.is_null()).cloned().unwrap_or(json!({"type": "object"}))})
            })
            .collect();
        out.insert("tools".into(), Value::from(tools));
    }
    match &chat["tool_choice"] {
        Value::String(s) if s == "auto" => {
            out.insert("tool_choice".into(), json!({"type": "auto"}));
        }
        Value::String(s) if s == "required" => {
            out.insert("tool_choice".into(), json!({"type": "any"}));
        }
        Value::String(s) if s == "none" => {
            out.insert("tool_choice".into(), json!({"type": "none"}));
        }
        Value::Object(o) => {
            out.insert(
                "tool_choice".into(),
                // `Map`'s index panics on a missing key; `Value`'s gives null.
                json!({"type": "tool", "name": o.get("function").unwrap_or(&Value::Null)["name"]}),
            );
        }
        _ => {}
    }
    if let Some(user) = chat["user"].as_str() {
        out.insert("metadata".into(), json!({"user_id": user}));
    }
    Ok(Value::Object(out))
}

/// Anthropic's stop reason as OpenAI's finish_reason.
pub fn finish_reason(stop: &str) -> &'static str {
    match stop {
        "max_tokens" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

fn usage(input: u64, output: u64) -> Value {
    json!({"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output})
}

/// An Anthropic message (a non-streamed answer) as an OpenAI chat completion.
pub fn completion(msg: &Value, model: &str, created: u64) -> Value {
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut calls = Vec::new();
    // Thinking blocks whole (signature, redacted data), for Anthropic clients to send back.
    let mut thinking = Vec::new();
    for b in msg["content"].as_array().into_iter().flatten() {
        match b["type"].as_str() {
            Some("text") => text.push_str(b["text"].as_str().unwrap_or_default()),
            Some("thinking") => {
                reasoning.push_str(b["thinking"].as_str().unwrap_or_default());
                thinking.push(b.clone());
            }
            Some("redacted_thinking") => thinking.push(b.clone()),
            Some("tool_use") => calls.push(json!({"id": b["id"], "type": "function",
                "function": {"name": b["name"], "arguments": b["input"].to_string()}})),
            _ => {}
        }
    }
    let mut message = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) }});
    if !reasoning.is_empty() {
        message["reasoning_content"] = json!(reasoning);
    }
    if !thinking.is_empty() {
        message["thinking_blocks"] = Value::from(thinking);
    }
    if !calls.is_empty() {
        message["tool_calls"] = Value::from(calls);
    }
    let u = &msg["usage"];
    json!({
        "id": format!("chatcmpl-{}", msg["id"].as_str().unwrap_or("anthropic")),
        "object": "chat.completion",
        "created": created,
        "model": msg["model"].as_str().unwrap_or(model),
        "choices": [{"index": 0, "message": message, "logprobs": null,
                     "finish_reason": finish_reason(msg["stop_reason"].as_str().unwrap_or("end_turn"))}],
        "usage": usage(u["input_tokens"].as_u64().unwrap_or(0), u["output_tokens"].as_u64().unwrap_or(0)),
    })
}

/// Anthropic stream events → OpenAI chunks.
#[derive(Debug, Default)]
pub struct Stream {
    id: String,
    model: String,
    created: u64,
    input_tokens: u64,
    output_tokens: u64,
    /// content block index → tool call index
    tools: Vec<(u64, u64)>,
    pub finish: Option<String>,
    pub done: bool,
}

impl Stream {
    pub fn new(model: &str, created: u64) -> Stream {
        Stream {
            model: model.to_owned(),
            created,
            ..Stream::default()
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
               "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
    }

    /// The usage so far, as OpenAI reports it.
    pub fn usage(&self) -> (u64, u64) {
        (self.input_tokens, self.output_tokens)
    }

    /// The final usage chunk (`choices` empty).
    pub fn usage_chunk(&self) -> Value {
        json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
               "choices": [], "usage": usage(self.input_tokens, self.output_tokens)})
    }

    /// The chunks of one event; Err carries an `error` event's message.
    pub fn event(&mut self, e: &Value) -> Result<Vec<Value>, String> {
        let mut out = Vec::new();
        match e["type"].as_str().unwrap_or_default() {
            "message_start" => {
                let m = &e["message"];
                self.id = format!("chatcmpl-{}", m["id"].as_str().unwrap_or("anthropic"));
                if let Some(model) = m["model"].as_str() {
                    model.clone_into(&mut self.model);
                }
                self.input_tokens = m["usage"]["input_tokens"].as_u64().unwrap_or(0);
                self.output_tokens = m["usage"]["output_tokens"].as_u64().unwrap_or(0);
                out.push(self.chunk(json!({"role": "assistant", "content": ""}), None));
            }
            "content_block_start" if e["content_block"]["type"] == "tool_use" => {
                let index = self.tools.len() as u64;
                self.tools.push((e["index"].as_u64().unwrap_or(0), index));
                let b = &e["content_block"];
                out.push(self.chunk(
                    json!({"tool_calls": [{"index": index, "id": b["id"], "type": "function",
                    "function": {"name": b["name"], "arguments": ""}}]}),
                    None,
                ));
            }
            "content_block_start" if e["content_block"]["type"] == "redacted_thinking" => {
                out.push(self.chunk(json!({"thinking_blocks": [e["content_block"]]}), None));
            }
            "content_block_delta" => {
                let d = &e["delta"];
                match d["type"].as_str() {
                    Some("signature_delta") => out.push(self.chunk(
                        json!({"thinking_blocks": [{"type": "thinking", "thinking": "", "signature": d["signature"]}]}),
                        None,
                    )),
                    Some("text_delta") => out.push(self.chunk(json!({"content": d["text"]}), None)),
                    Some("thinking_delta") => out.push(self.chunk(json!({"reasoning_content": d["thinking"]}), None)),
                    Some("input_json_delta") => {
                        let block = e["index"].as_u64().unwrap_or(0);
                        if let Some((_, index)) = self.tools.iter().find(|(b, _)| *b == block) {
                            out.push(self.chunk(
                                json!({"tool_calls": [{"index": index, "function": {"arguments": d["partial_json"]}}]}),
                                None,
                            ));
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(n) = e["usage"]["output_tokens"].as_u64() {
                    self.output_tokens = n;
                }
                if let Some(stop) = e["delta"]["stop_reason"].as_str() {
                    let finish = finish_reason(stop);
                    self.finish = Some(finish.to_owned());
                    out.push(self.chunk(json!({}), Some(finish)));
                }
            }
            "message_stop" => self.done = true,
            "error" => {
                return Err(e["error"]["message"]
                    .as_str()
                    .unwrap_or("upstream stream error")
                    .to_owned());
            }
            _ => {} // ping, content_block_start (text), content_block_stop
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_translate_system_images_tools_and_results() {
        let chat = json!({"model": "claude", "max_tokens": 50, "stop": "END", "tool_choice": "required",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "t1", "type": "function",
                    "function": {"name": "look", "arguments": "{\"x\":1}"}}]},
                {"role": "tool", "tool_call_id": "t1", "content": "a cat"},
                {"role": "user", "content": "thanks"}],
            "tools": [{"type": "function", "function": {"name": "look", "parameters": {"type": "object"}}}]});
        let r = request(&chat, "claude-x").unwrap();
        assert_eq!(r["system"], "be brief");
        assert_eq!(r["model"], "claude-x");
        assert_eq!(r["max_tokens"], 50);
        assert_eq!(r["stop_sequences"], json!(["END"]));
        assert_eq!(r["tool_choice"], json!({"type": "any"}));
        let m = r["messages"].as_array().unwrap();
        assert_eq!(m.len(), 3, "tool results merge with the next user turn: {m:?}");
        assert_eq!(
            m[0]["content"][1]["source"],
            json!({"type": "base64", "media_type": "image/png", "data": "AAAA"})
        );
        assert_eq!(m[1]["content"][0]["input"], json!({"x": 1}));
        assert_eq!(m[2]["content"][0]["type"], "tool_result");
        assert_eq!(m[2]["content"][1]["text"], "thanks");
        assert_eq!(r["tools"][0]["input_schema"], json!({"type": "object"}));
    }

    #[test]
    fn answers_and_streams_become_openai_shapes() {
        let msg = json!({"id": "msg_1", "model": "claude-x", "stop_reason": "tool_use",
            "content": [{"type": "thinking", "thinking": "hmm"}, {"type": "text", "text": "Let me look."},
                        {"type": "tool_use", "id": "t1", "name": "look", "input": {"x": 1}}],
            "usage": {"input_tokens": 10, "output_tokens": 5}});
        let c = completion(&msg, "claude", 1);
        assert_eq!(c["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(c["choices"][0]["message"]["reasoning_content"], "hmm");
        assert_eq!(
            c["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            "{\"x\":1}"
        );
        assert_eq!(c["usage"]["total_tokens"], 15);
        let mut s = Stream::new("claude", 1);
        let events = [
            json!({"type": "message_start", "message": {"id": "msg_2", "model": "claude-x", "usage": {"input_tokens": 7, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "ping"}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 3}}),
            json!({"type": "message_stop"}),
        ];
        let chunks: Vec<Value> = events.iter().flat_map(|e| s.event(e).unwrap()).collect();
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "Hi");
        assert_eq!(chunks[2]["choices"][0]["finish_reason"], "stop");
        assert!(s.done);
        assert_eq!(
            s.usage_chunk()["usage"],
            json!({"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10})
        );
        assert_eq!(
            s.event(&json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})),
            Err("Overloaded".into())
        );
    }
}
