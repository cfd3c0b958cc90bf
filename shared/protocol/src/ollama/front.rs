//! Ollama's API as a front door: `/api/chat`, `/api/generate` and `/api/embed` bodies as
//! OpenAI requests (routed like any other), and the OpenAI answers back in Ollama's shapes —
//! one JSON object, or NDJSON lines ending with a `done: true` line that carries Ollama's
//! stats (`prompt_eval_count`, `eval_count`, durations in nanoseconds) — plus the model
//! listings (`/api/tags`, `/api/ps`, `/api/show`, LM Studio's `/api/v0/models`).
//!
//! Kept: messages with images (base64), tools and tool calls (arguments as objects), tool
//! results, `format` (`"json"` or a JSON schema), `options` (temperature, top_p, seed, stop,
//! num_predict as max_tokens), `stream` (Ollama's default: true). Dropped: `keep_alive`,
//! `think`, `raw`, `template`, `context`, `suffix`, and options with no OpenAI equivalent
//! (top_k, num_ctx, repeat_penalty…).

use serde_json::{Map, Value, json};

use crate::ApiError;

/// The Ollama version `/api/version` reports (clients check it for features).
pub const VERSION: &str = "0.9.0";

fn invalid(message: impl Into<String>, param: &str) -> ApiError {
    ApiError::invalid(message, Some(param))
}

fn model_of(req: &Value) -> Result<&str, ApiError> {
    req["model"]
        .as_str()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| invalid("`model` is required.", "model"))
}

/// A base64 image as a data URL (the media type guessed from its first bytes).
fn image_url(data: &str) -> Value {
    let media = match data.get(..4) {
        Some("/9j/") => "image/jpeg",
        Some("R0lG") => "image/gif",
        Some("UklG") => "image/webp",
        _ => "image/png",
    };
    json!({"type": "image_url", "image_url": {"url": format!("data:{media};base64,{data}")}})
}

/// Text plus images as OpenAI content.
fn content(text: &str, images: &Value) -> Value {
    let images: Vec<Value> = images
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i.as_str())
        .map(image_url)
        .collect();
    if images.is_empty() {
        return json!(text);
    }
    let mut parts = vec![json!({"type": "text", "text": text})];
    parts.extend(images);
    Value::from(parts)
}

/// Ollama's messages as OpenAI's: tool calls get ids, and each tool result answers the
/// call of its `tool_name` (else the next unanswered one).
fn messages(list: &[Value]) -> Result<Vec<Value>, ApiError> {
    let mut out = Vec::with_capacity(list.len());
    let mut pending: Vec<(String, String)> = Vec::new();
    for (i, m) in list.iter().enumerate() {
        let role = m["role"].as_str().unwrap_or_default();
        let text = m["content"].as_str().unwrap_or_default();
        match role {
            "system" | "user" => out.push(json!({"role": role, "content": content(text, &m["images"])})),
            "assistant" => {
                let mut msg = json!({"role": "assistant", "content": text});
                let calls: Vec<Value> = m["tool_calls"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .enumerate()
                    .map(|(j, c)| {
                        let id = format!("call_{i}_{j}");
                        let name = c["function"]["name"].as_str().unwrap_or_default().to_owned();
                        pending.push((id.clone(), name.clone()));
                        json!({"id": id, "type": "function",
                               "function": {"name": name, "arguments": c["function"]["arguments"].to_string()}})
                    })
                    .collect();
                if !calls.is_empty() {
                    msg["tool_calls"] = Value::from(calls);
                }
                out.push(msg);
            }
            "tool" => {
                let name = m["tool_name"].as_str().unwrap_or_default();
                let at = pending.iter().position(|(_, n)| n == name).unwrap_or(0);
                let id = if pending.is_empty() {
                    format!("call_{i}")
                } else {
                    pending.remove(at).0
                };
                out.push(json!({"role": "tool", "tool_call_id": id, "content": text}));
            }
            _ => {
                return Err(invalid(
                    "`role` must be system, user, assistant or tool.",
                    &format!("messages.{i}.role"),
                ));
            }
        }
    }
    Ok(out)
}

/// `options`, `format` and `stream` onto an OpenAI body.
fn options(req: &Value, out: &mut Map<String, Value>) {
    let o = &req["options"];
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("seed", "seed"),
        ("num_predict", "max_tokens"),
    ] {
        if let Some(v) = o.get(from).filter(|v| !v.is_null()) {
            out.insert(to.into(), v.clone());
        }
    }
    if let Some(stop) = o.get("stop").filter(|s| !s.is_null()) {
        out.insert("stop".into(), stop.clone());
    }
    match &req["format"] {
        Value::String(s) if s == "json" => {
            out.insert("response_format".into(), json!({"type": "json_object"}));
        }
        Value::Object(_) => {
            out.insert(
                "response_format".into(),
                json!({"type": "json_schema", "json_schema": {"name": "format", "schema": req["format"]}}),
            );
        }
        _ => {}
    }
    // Ollama streams unless told not to.
    if stream_of(req) {
        out.insert("stream".into(), json!(true));
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
}

/// Whether the client asked for a stream (absent means yes).
pub fn stream_of(req: &Value) -> bool {
    req["stream"].as_bool().unwrap_or(true)
}

/// An `/api/chat` body as an OpenAI chat request.
pub fn chat_request(req: &Value) -> Result<Value, ApiError> {
    let model = model_of(req)?;
    let list = req["messages"]
        .as_array()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| invalid("`messages` must be a non-empty array.", "messages"))?;
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    out.insert("messages".into(), Value::from(messages(list)?));
    if let Some(t) = req["tools"].as_array().filter(|t| !t.is_empty()) {
        out.insert("tools".into(), Value::from(t.clone()));
    }
    options(req, &mut out);
    Ok(Value::Object(out))
}

/// An `/api/generate` body as an OpenAI chat request (system and prompt as messages).
pub fn generate_request(req: &Value) -> Result<Value, ApiError> {
    let model = model_of(req)?;
    let prompt = req["prompt"]
        .as_str()
        .ok_or_else(|| invalid("`prompt` is required.", "prompt"))?;
    let mut msgs = Vec::new();
    if let Some(s) = req["system"].as_str().filter(|s| !s.is_empty()) {
        msgs.push(json!({"role": "system", "content": s}));
    }
    msgs.push(json!({"role": "user", "content": content(prompt, &req["images"])}));
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    out.insert("messages".into(), Value::from(msgs));
    options(req, &mut out);
    Ok(Value::Object(out))
}

/// An `/api/embed` body as an OpenAI embeddings request.
pub fn embed_request(req: &Value) -> Result<Value, ApiError> {
    let model = model_of(req)?;
    let input = match &req["input"] {
        Value::String(_) | Value::Array(_) => req["input"].clone(),
        _ => return Err(invalid("`input` must be a string or an array of strings.", "input")),
    };
    Ok(json!({"model": model, "input": input}))
}

/// Now as RFC 3339 (Ollama's `created_at`).
pub fn created_at() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Which API the answer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Chat,
    Generate,
}

/// Ollama's final stats from OpenAI usage and the time taken.
fn stats(line: &mut Value, usage: &Value, elapsed_ns: u64) {
    line["total_duration"] = json!(elapsed_ns);
    line["load_duration"] = json!(0);
    line["prompt_eval_count"] = json!(usage["prompt_tokens"].as_u64().unwrap_or(0));
    line["prompt_eval_duration"] = json!(0);
    line["eval_count"] = json!(usage["completion_tokens"].as_u64().unwrap_or(0));
    line["eval_duration"] = json!(elapsed_ns);
}

/// OpenAI tool calls as Ollama's (arguments as objects).
fn tool_calls(calls: &[Value]) -> Vec<Value> {
    calls
        .iter()
        .map(|c| {
            let args = c["function"]["arguments"].as_str().unwrap_or("{}");
            let args: Value = serde_json::from_str(args).unwrap_or_else(|_| json!({}));
            json!({"function": {"name": c["function"]["name"], "arguments": args}})
        })
        .collect()
}

/// One line of the answer: `text` as the message (chat) or `response` (generate).
fn line(api: Api, model: &str, text: &str, calls: &[Value], done: bool) -> Value {
    let mut l = json!({"model": model, "created_at": created_at(), "done": done});
    match api {
        Api::Chat => {
            l["message"] = json!({"role": "assistant", "content": text});
            if !calls.is_empty() {
                l["message"]["tool_calls"] = Value::from(tool_calls(calls));
            }
        }
        Api::Generate => l["response"] = json!(text),
    }
    l
}

fn done_reason(finish: &str) -> &'static str {
    match finish {
        "length" => "length",
        _ => "stop",
    }
}

/// A whole OpenAI chat completion as Ollama's answer.
pub fn answer(api: Api, completion: &Value, model: &str, elapsed_ns: u64) -> Value {
    let choice = &completion["choices"][0];
    let m = &choice["message"];
    let calls = m["tool_calls"].as_array().map(Vec::as_slice).unwrap_or_default();
    let mut l = line(api, model, m["content"].as_str().unwrap_or_default(), calls, true);
    l["done_reason"] = json!(done_reason(choice["finish_reason"].as_str().unwrap_or("stop")));
    stats(&mut l, &completion["usage"], elapsed_ns);
    l
}

/// An OpenAI embeddings answer as Ollama's.
pub fn embed_answer(v: &Value, model: &str, elapsed_ns: u64) -> Value {
    let embeddings: Vec<Value> = v["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| d["embedding"].clone())
        .collect();
    json!({"model": model, "embeddings": embeddings, "total_duration": elapsed_ns, "load_duration": 0,
           "prompt_eval_count": v["usage"]["prompt_tokens"].as_u64().unwrap_or(0)})
}

/// OpenAI chunks → Ollama NDJSON lines. Tool calls are sent whole, as Ollama does, once
/// their arguments are complete (with the finish).
#[derive(Debug)]
pub struct Lines {
    api: Api,
    model: String,
    started: std::time::Instant,
    calls: Vec<Value>,
    finish: String,
    usage: Value,
}

impl Lines {
    pub fn new(api: Api, model: &str) -> Lines {
        Lines {
            api,
            model: model.to_owned(),
            started: std::time::Instant::now(),
            calls: Vec::new(),
            finish: "stop".into(),
            usage: Value::Null,
        }
    }

    /// The lines of one chunk.
    pub fn chunk(&mut self, chunk: &Value) -> Vec<Value> {
        if chunk["usage"].is_object() {
            self.usage = chunk["usage"].clone();
        }
        let Some(choice) = chunk["choices"].get(0) else {
            return Vec::new();
        };
        if let Some(f) = choice["finish_reason"].as_str() {
            f.clone_into(&mut self.finish);
        }
        let d = &choice["delta"];
        for c in d["tool_calls"].as_array().into_iter().flatten() {
            let i = c["index"].as_u64().unwrap_or(0) as usize;
            if self.calls.len() <= i {
                self.calls
                    .resize(i + 1, json!({"function": {"name": "", "arguments": ""}}));
            }
            let f = &mut self.calls[i]["function"];
            for k in ["name", "arguments"] {
                if let Some(s) = c["function"][k].as_str() {
                    let joined = format!("{}{s}", f[k].as_str().unwrap_or_default());
                    f[k] = json!(joined);
                }
            }
        }
        match d["content"].as_str().filter(|t| !t.is_empty()) {
            Some(t) => vec![line(self.api, &self.model, t, &[], false)],
            None => Vec::new(),
        }
    }

    /// The last line: tool calls if any, `done: true`, the reason and stats.
    pub fn finish(&mut self) -> Value {
        let mut l = line(self.api, &self.model, "", &self.calls, true);
        l["done_reason"] = json!(done_reason(&self.finish));
        stats(&mut l, &self.usage, self.started.elapsed().as_nanos() as u64);
        l
    }
}

/// NDJSON text of lines.
pub fn ndjson(lines: &[Value], out: &mut Vec<u8>) {
    for l in lines {
        out.extend_from_slice(l.to_string().as_bytes());
        out.push(b'\n');
    }
}

/// A model as `/api/tags` and `/api/ps` list it.
pub fn model_entry(name: &str) -> Value {
    json!({"name": name, "model": name, "modified_at": "2026-01-01T00:00:00Z", "size": 0,
           "digest": format!("{:064x}", digest(name)),
           "details": {"parent_model": "", "format": "gguf", "family": "llmrouter", "families": ["llmrouter"],
                       "parameter_size": "", "quantization_level": ""}})
}

/// A digest-like number for a name, stable within a build (clients only compare it).
fn digest(name: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    name.hash(&mut h);
    h.finish()
}

/// `/api/show` for a model.
pub fn show(name: &str, context_window: Option<u64>) -> Value {
    let mut info = json!({"general.architecture": "llmrouter", "general.basename": name});
    if let Some(n) = context_window {
        info["llmrouter.context_length"] = json!(n);
    }
    json!({"license": "", "modelfile": format!("FROM {name}\n"), "parameters": "", "template": "{{ .Prompt }}",
           "details": model_entry(name)["details"], "model_info": info,
           "capabilities": ["completion", "tools"], "modified_at": "2026-01-01T00:00:00Z"})
}

/// LM Studio's `/api/v0/models` entry.
pub fn lmstudio_entry(name: &str, context_window: Option<u64>) -> Value {
    json!({"id": name, "object": "model", "type": "llm", "publisher": "llmrouter", "arch": "llmrouter",
           "compatibility_type": "gguf", "quantization": "", "state": "loaded",
           "max_context_length": context_window.unwrap_or(0)})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ollama_requests_become_openai_requests() {
        let req = json!({"model": "m", "format": "json", "options": {"temperature": 0.2, "num_predict": 9, "top_k": 3},
            "tools": [{"type": "function", "function": {"name": "look", "parameters": {"type": "object"}}}],
            "messages": [{"role": "user", "content": "see", "images": ["iVBORw0KGgo"]},
                {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "look", "arguments": {"x": 1}}}]},
                {"role": "tool", "tool_name": "look", "content": "a cat"}]});
        let c = chat_request(&req).unwrap();
        assert_eq!(c["stream"], true, "Ollama streams by default");
        assert_eq!(c["max_tokens"], 9);
        assert!(c.get("top_k").is_none());
        assert_eq!(c["response_format"]["type"], "json_object");
        let m = c["messages"].as_array().unwrap();
        assert_eq!(
            m[0]["content"][1]["image_url"]["url"],
            "data:image/png;base64,iVBORw0KGgo"
        );
        assert_eq!(m[1]["tool_calls"][0]["function"]["arguments"], "{\"x\":1}");
        assert_eq!(m[2]["tool_call_id"], m[1]["tool_calls"][0]["id"]);
        let g = generate_request(&json!({"model": "m", "prompt": "hi", "system": "s", "stream": false})).unwrap();
        assert_eq!(g["messages"].as_array().unwrap().len(), 2);
        assert!(g.get("stream").is_none());
        assert!(embed_request(&json!({"model": "m", "input": 3})).is_err());
    }

    #[test]
    fn chunks_become_lines_with_final_stats() {
        let mut l = Lines::new(Api::Chat, "m");
        let mut lines = l.chunk(&json!({"choices": [{"index": 0, "delta": {"content": "Hi"}}]}));
        lines.extend(l.chunk(&json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "c", "function": {"name": "look", "arguments": "{\"x\""}}]}}]})));
        lines.extend(l.chunk(&json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}, "finish_reason": "tool_calls"}]})));
        lines.extend(l.chunk(&json!({"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2}})));
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["message"]["content"], "Hi");
        let last = l.finish();
        assert_eq!(last["done"], true);
        assert_eq!(
            last["message"]["tool_calls"][0]["function"]["arguments"],
            json!({"x": 1})
        );
        assert_eq!(last["prompt_eval_count"], 4);
        assert_eq!(last["eval_count"], 2);
        let g = answer(
            Api::Generate,
            &json!({"choices": [{"message": {"content": "yo"}, "finish_reason": "length"}], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}),
            "m",
            5,
        );
        assert_eq!(g["response"], "yo");
        assert_eq!(g["done_reason"], "length");
    }
}
