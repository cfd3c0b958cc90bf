//! OpenAI chat completions and embeddings ↔ Ollama's native API (`/api/chat` with NDJSON
//! streaming, `/api/embed`), written once: messages (images as base64, tool calls with object
//! arguments, tool results), sampling as `options` (the client's own `options` and
//! `keep_alive` passed through), `response_format` as `format`; answers and stream lines back
//! as OpenAI shapes with usage from `prompt_eval_count` / `eval_count`.
//!
//! The Ollama side is typed ([`wire`]); the OpenAI request is read as JSON, the answers
//! written as [`crate::openai`] types.

pub mod front;
pub mod wire;

use serde::Deserialize;
use serde_json::{Map, Value};

pub use wire::{
    ChatRequest, EmbedRequest, EmbedResponse, ErrorBody, Format, FunctionCall, GenerateRequest, Line, Message,
    ModelDetails, ModelEntry, ModelList, Options, Response, Show, ToolCall,
};

use crate::frame::Usage;
use crate::openai::embeddings::Embeddings;
use crate::openai::{self, ChatChunk, ChatCompletion, Delta, ToolCallDelta};

/// An OpenAI message's content as Ollama's text and base64 images.
fn text_and_images(content: Option<&Value>) -> (String, Option<Vec<String>>) {
    match content {
        Some(Value::Array(parts)) => {
            let text: Vec<&str> = parts.iter().filter_map(|p| p.get("text")?.as_str()).collect();
            let images: Vec<String> = parts
                .iter()
                .filter_map(|p| p.get("image_url")?.get("url")?.as_str())
                .filter_map(|u| u.split_once(";base64,").map(|(_, data)| data.to_owned()))
                .collect();
            (text.join("\n"), (!images.is_empty()).then_some(images))
        }
        Some(Value::String(s)) => (s.clone(), None),
        Some(other) if !other.is_null() => (other.to_string(), None),
        _ => (String::new(), None),
    }
}

/// An OpenAI tool call as Ollama's (arguments as an object).
fn tool_call(c: &Value) -> ToolCall {
    let f = c.get("function").unwrap_or(&Value::Null);
    let args = f.get("arguments").and_then(Value::as_str).unwrap_or("{}");
    ToolCall {
        function: FunctionCall {
            name: f.get("name").and_then(Value::as_str).unwrap_or_default().to_owned(),
            arguments: serde_json::from_str(args).unwrap_or_else(|_| Value::Object(Map::new())),
            extra: Map::new(),
        },
        extra: Map::new(),
    }
}

/// An OpenAI chat message as Ollama's.
fn message(m: &Value) -> Message {
    let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
    let (text, images) = text_and_images(m.get("content"));
    Message {
        role: if role == "developer" { "system" } else { role }.to_owned(),
        content: Some(text),
        images,
        tool_calls: m
            .get("tool_calls")
            .and_then(Value::as_array)
            .map(|calls| calls.iter().map(tool_call).collect()),
        ..Message::default()
    }
}

/// `response_format` as Ollama's `format`.
fn format(chat: &Value) -> Option<Format> {
    let f = chat.get("response_format")?;
    match f.get("type")?.as_str()? {
        "json_object" => Some(Format::Named("json".into())),
        "json_schema" => Some(Format::Schema(
            f.get("json_schema")
                .and_then(|s| s.get("schema"))
                .cloned()
                .unwrap_or_default(),
        )),
        _ => None,
    }
}

/// An OpenAI chat completion request as a typed Ollama `/api/chat` request for `model`.
pub fn chat_request_of(chat: &Value, model: &str, stream: bool) -> ChatRequest {
    ChatRequest {
        model: model.to_owned(),
        messages: chat
            .get("messages")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(message)
            .collect(),
        tools: chat.get("tools").and_then(Value::as_array).cloned(),
        format: format(chat),
        options: Some(options(chat)),
        stream: Some(stream),
        keep_alive: chat.get("keep_alive").cloned(),
        extra: Map::new(),
    }
}

/// An OpenAI chat completion request as an Ollama `/api/chat` request for `model`.
pub fn chat_request(chat: &Value, model: &str, stream: bool) -> Value {
    serde_json::to_value(chat_request_of(chat, model, stream)).unwrap_or_default()
}

/// Sampling fields as Ollama `options`, the client's own `options` taking precedence.
fn options(req: &Value) -> Options {
    let mut o = Map::new();
    let map = [
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("seed", "seed"),
        ("max_tokens", "num_predict"),
        ("max_completion_tokens", "num_predict"),
        ("stop", "stop"),
        ("frequency_penalty", "frequency_penalty"),
        ("presence_penalty", "presence_penalty"),
    ];
    for (from, to) in map {
        if let Some(v) = req.get(from).filter(|v| !v.is_null()) {
            o.insert(to.into(), v.clone());
        }
    }
    if let Some(Value::Object(own)) = req.get("options") {
        o.extend(own.clone());
    }
    Options::from_map(o)
}

/// An OpenAI embeddings request as a typed Ollama `/api/embed` request for `model`.
pub fn embed_request_of(req: &Value, model: &str) -> EmbedRequest {
    EmbedRequest {
        model: model.to_owned(),
        input: req.get("input").cloned().unwrap_or_default(),
        options: Some(options(req)),
        keep_alive: req.get("keep_alive").cloned(),
        dimensions: req.get("dimensions").filter(|d| !d.is_null()).cloned(),
        extra: Map::new(),
    }
}

/// An OpenAI embeddings request as an Ollama `/api/embed` request for `model`.
pub fn embed_request(req: &Value, model: &str) -> Value {
    serde_json::to_value(embed_request_of(req, model)).unwrap_or_default()
}

fn usage(r: &Response) -> Usage {
    let (p, c) = (r.prompt_eval_count.unwrap_or(0), r.eval_count.unwrap_or(0));
    Usage {
        prompt_tokens: p,
        completion_tokens: c,
        total_tokens: p + c,
    }
}

/// An answer's tool calls as OpenAI's (ids `call_{i}`, arguments as JSON text).
fn tool_calls(r: &Response) -> Option<Vec<openai::ToolCall>> {
    let calls = r.message.as_ref()?.tool_calls.as_ref().filter(|c| !c.is_empty())?;
    Some(
        calls
            .iter()
            .enumerate()
            .map(|(i, c)| openai::ToolCall {
                index: Some(i as u32),
                ..openai::ToolCall::function(
                    format!("call_{i}"),
                    c.function.name.clone(),
                    c.function.arguments.to_string(),
                )
            })
            .collect(),
    )
}

fn finish(r: &Response, calls: bool) -> &'static str {
    match r.done_reason.as_deref() {
        _ if calls => "tool_calls",
        Some("length") => "length",
        _ => "stop",
    }
}

fn text(r: &Response) -> &str {
    r.message.as_ref().map(Message::text).unwrap_or_default()
}

/// A typed Ollama `/api/chat` answer as an OpenAI chat completion.
pub fn chat_completion(r: &Response, id: &str, model: &str, created: u64) -> ChatCompletion {
    let calls = tool_calls(r);
    let finish = finish(r, calls.is_some());
    let mut c = ChatCompletion::text(id, model, created, text(r), Some(usage(r)));
    c.choices[0].finish_reason = Some(finish.to_owned());
    c.choices[0].message.tool_calls = calls;
    c
}

/// An Ollama `/api/chat` answer as an OpenAI chat completion.
pub fn completion(v: &Value, id: &str, model: &str, created: u64) -> Value {
    let r = Response::deserialize(v).unwrap_or_default();
    serde_json::to_value(chat_completion(&r, id, model, created)).unwrap_or_default()
}

/// The OpenAI chunks of one typed NDJSON stream line (the last one, `done: true`, carries
/// the finish and — when `include_usage` — a usage chunk).
pub fn line_chunks(r: &Response, id: &str, model: &str, created: u64, include_usage: bool) -> Vec<ChatChunk> {
    let chunk =
        |delta: Delta, finish: Option<&str>| ChatChunk::delta(id, model, created, delta, finish.map(str::to_owned));
    let mut out = Vec::new();
    let calls = tool_calls(r);
    let text = text(r);
    if !text.is_empty() {
        out.push(ChatChunk::text(id, model, created, false, text));
    }
    if let Some(c) = &calls {
        let deltas = c
            .iter()
            .enumerate()
            .map(|(i, c)| ToolCallDelta::whole(i as u32, c))
            .collect();
        out.push(chunk(
            Delta {
                tool_calls: Some(deltas),
                ..Delta::default()
            },
            None,
        ));
    }
    if r.done {
        out.push(chunk(Delta::default(), Some(finish(r, calls.is_some()))));
        if include_usage {
            out.push(ChatChunk::usage(id, model, created, usage(r)));
        }
    }
    out
}

/// The OpenAI chunks of one NDJSON stream line (the last one, `done: true`, carries the
/// finish and — when `include_usage` — a usage chunk).
pub fn stream_line(v: &Value, id: &str, model: &str, created: u64, include_usage: bool) -> Vec<Value> {
    let r = Response::deserialize(v).unwrap_or_default();
    line_chunks(&r, id, model, created, include_usage)
        .iter()
        .map(|c| serde_json::to_value(c).unwrap_or_default())
        .collect()
}

/// A typed Ollama `/api/embed` answer as OpenAI embeddings (floats; the caller encodes base64).
pub fn embeddings_of(r: &EmbedResponse, model: &str) -> Embeddings {
    Embeddings::of(r.embeddings.iter().cloned(), model, r.prompt_eval_count.unwrap_or(0))
}

/// An Ollama `/api/embed` answer as OpenAI embeddings (floats; the caller encodes base64).
pub fn embeddings(v: &Value, model: &str) -> Value {
    let r = EmbedResponse::deserialize(v).unwrap_or_default();
    serde_json::to_value(embeddings_of(&r, model)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chat_requests_and_answers_translate() {
        let chat = json!({"model": "llama", "max_tokens": 9, "temperature": 0.2, "keep_alive": "5m",
            "options": {"num_ctx": 4096},
            "messages": [{"role": "user", "content": [{"type": "text", "text": "see"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function",
                    "function": {"name": "f", "arguments": "{\"a\":1}"}}]}]});
        let r = chat_request(&chat, "llama3", true);
        assert_eq!(
            r["options"],
            json!({"num_predict": 9, "temperature": 0.2, "num_ctx": 4096})
        );
        assert_eq!(r["keep_alive"], "5m");
        assert_eq!(r["messages"][0]["images"], json!(["AAAA"]));
        assert_eq!(
            r["messages"][1]["tool_calls"][0]["function"]["arguments"],
            json!({"a": 1})
        );
        let answer = json!({"message": {"role": "assistant", "content": "hi"}, "done": true, "done_reason": "stop",
                            "prompt_eval_count": 4, "eval_count": 2});
        let c = completion(&answer, "chatcmpl-1", "llama", 1);
        assert_eq!(c["usage"]["total_tokens"], 6);
        assert_eq!(c["choices"][0]["finish_reason"], "stop");
        let last = stream_line(&answer, "chatcmpl-1", "llama", 1, true);
        assert_eq!(last.len(), 3, "text, finish, usage");
        let e = embeddings(&json!({"embeddings": [[0.1, 0.2]], "prompt_eval_count": 3}), "nomic");
        assert_eq!(e["data"][0]["embedding"], json!([0.1, 0.2]));
    }
}
