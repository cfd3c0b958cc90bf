//! OpenAI chat completions and embeddings ↔ Ollama's native API (`/api/chat` with NDJSON
//! streaming, `/api/embed`), written once: messages (images as base64, tool calls with object
//! arguments, tool results), sampling as `options` (the client's own `options` and
//! `keep_alive` passed through), `response_format` as `format`; answers and stream lines back
//! as OpenAI shapes with usage from `prompt_eval_count` / `eval_count`.

pub mod front;

use serde_json::{Map, Value, json};

/// An OpenAI chat completion request as an Ollama `/api/chat` request for `model`.
pub fn chat_request(chat: &Value, model: &str, stream: bool) -> Value {
    let messages: Vec<Value> = chat["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let mut out = json!({"role": m["role"].as_str().map(|r| if r == "developer" { "system" } else { r }).unwrap_or("user")});
            match &m["content"] {
                Value::Array(parts) => {
                    let text: Vec<&str> = parts.iter().filter_map(|p| p["text"].as_str()).collect();
                    out["content"] = json!(text.join("\n"));
                    let images: Vec<&str> = parts
                        .iter()
                        .filter_map(|p| p["image_url"]["url"].as_str())
                        .filter_map(|u| u.split_once(";base64,").map(|(_, data)| data))
                        .collect();
                    if !images.is_empty() {
                        out["images"] = json!(images);
                    }
                }
                Value::Null => out["content"] = json!(""),
                other => out["content"] = other.clone(),
            }
            if let Some(calls) = m["tool_calls"].as_array() {
                let calls: Vec<Value> = calls
                    .iter()
                    .map(|c| {
                        let args = c["function"]["arguments"].as_str().unwrap_or("{}");
                        json!({"function": {"name": c["function"]["name"],
                                            "arguments": serde_json::from_str::<Value>(args).unwrap_or_else(|_| json!({}))}})
                    })
                    .collect();
                out["tool_calls"] = Value::from(calls);
            }
            out
        })
        .collect();
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    out.insert("messages".into(), Value::from(messages));
    out.insert("stream".into(), json!(stream));
    if let Some(tools) = chat.get("tools").filter(|t| t.is_array()) {
        out.insert("tools".into(), tools.clone());
    }
    match chat["response_format"]["type"].as_str() {
        Some("json_object") => {
            out.insert("format".into(), json!("json"));
        }
        Some("json_schema") => {
            out.insert(
                "format".into(),
                chat["response_format"]["json_schema"]["schema"].clone(),
            );
        }
        _ => {}
    }
    out.insert("options".into(), options(chat));
    if let Some(k) = chat.get("keep_alive") {
        out.insert("keep_alive".into(), k.clone());
    }
    Value::Object(out)
}

/// Sampling fields as Ollama `options`, the client's own `options` taking precedence.
fn options(req: &Value) -> Value {
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
    Value::Object(o)
}

/// An OpenAI embeddings request as an Ollama `/api/embed` request for `model`.
pub fn embed_request(req: &Value, model: &str) -> Value {
    let mut out = json!({"model": model, "input": req["input"], "options": options(req)});
    if let Some(k) = req.get("keep_alive") {
        out["keep_alive"] = k.clone();
    }
    if let Some(d) = req.get("dimensions").filter(|d| !d.is_null()) {
        out["dimensions"] = d.clone();
    }
    out
}

fn usage(v: &Value) -> Value {
    let (p, c) = (
        v["prompt_eval_count"].as_u64().unwrap_or(0),
        v["eval_count"].as_u64().unwrap_or(0),
    );
    json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c})
}

fn tool_calls(message: &Value) -> Option<Value> {
    let calls = message["tool_calls"].as_array().filter(|c| !c.is_empty())?;
    Some(Value::from(
        calls
            .iter()
            .enumerate()
            .map(|(i, c)| {
                json!({"index": i, "id": format!("call_{i}"), "type": "function",
                       "function": {"name": c["function"]["name"], "arguments": c["function"]["arguments"].to_string()}})
            })
            .collect::<Vec<_>>(),
    ))
}

fn finish(v: &Value, calls: bool) -> &'static str {
    match v["done_reason"].as_str() {
        _ if calls => "tool_calls",
        Some("length") => "length",
        _ => "stop",
    }
}

/// An Ollama `/api/chat` answer as an OpenAI chat completion.
pub fn completion(v: &Value, id: &str, model: &str, created: u64) -> Value {
    let calls = tool_calls(&v["message"]);
    let mut message = json!({"role": "assistant", "content": v["message"]["content"].as_str().unwrap_or_default()});
    if let Some(c) = &calls {
        message["tool_calls"] = c.clone();
    }
    json!({"id": id, "object": "chat.completion", "created": created, "model": model,
           "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish(v, calls.is_some())}],
           "usage": usage(v)})
}

/// The OpenAI chunks of one NDJSON stream line (the last one, `done: true`, carries the
/// finish and — when `include_usage` — a usage chunk).
pub fn stream_line(v: &Value, id: &str, model: &str, created: u64, include_usage: bool) -> Vec<Value> {
    let chunk = |delta: Value, finish: Option<&str>| {
        json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
               "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
    };
    let mut out = Vec::new();
    let calls = tool_calls(&v["message"]);
    if let Some(text) = v["message"]["content"].as_str().filter(|t| !t.is_empty()) {
        out.push(chunk(json!({"content": text}), None));
    }
    if let Some(c) = &calls {
        out.push(chunk(json!({"tool_calls": c}), None));
    }
    if v["done"] == json!(true) {
        out.push(chunk(json!({}), Some(finish(v, calls.is_some()))));
        if include_usage {
            out.push(
                json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                            "choices": [], "usage": usage(v)}),
            );
        }
    }
    out
}

/// An Ollama `/api/embed` answer as OpenAI embeddings (floats; the caller encodes base64).
pub fn embeddings(v: &Value, model: &str) -> Value {
    let data: Vec<Value> = v["embeddings"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, e)| json!({"object": "embedding", "index": i, "embedding": e}))
        .collect();
    let p = v["prompt_eval_count"].as_u64().unwrap_or(0);
    json!({"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": p, "total_tokens": p}})
}

#[cfg(test)]
mod tests {
    use super::*;

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
