//! Ollama's API as a front door: `/api/chat`, `/api/generate` and `/api/embed` bodies as
//! OpenAI requests (routed like any other), and the OpenAI answers back in Ollama's shapes —
//! one JSON object, or NDJSON lines ending with a `done: true` line that carries Ollama's
//! stats (`prompt_eval_count`, `eval_count`, durations in nanoseconds) — plus the model
//! listings (`/api/tags`, `/api/ps`, `/api/show`, LM Studio's `/api/v0/models`). Both sides
//! are typed: [`super::wire`] and [`crate::openai`].
//!
//! Kept: messages with images (base64), tools and tool calls (arguments as objects), tool
//! results, `format` (`"json"` or a JSON schema), `options` (temperature, top_p, seed, stop,
//! num_predict as max_tokens), `stream` (Ollama's default: true). Dropped: `keep_alive`,
//! `think`, `raw`, `template`, `context`, `suffix`, and options with no OpenAI equivalent
//! (top_k, num_ctx, repeat_penalty…).

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::wire::{
    ChatRequest, EmbedRequest, EmbedResponse, Format, FunctionCall, GenerateRequest, LmStudioModel, Message,
    ModelDetails, ModelEntry, Options, Response, Show, ToolCall,
};
use crate::ApiError;
use crate::openai::embeddings::{Embeddings, Vector};
use crate::openai::request::{
    self as chat, EmbeddingsRequest, JsonSchema, Part, RequestContent, RequestMessage, ResponseFormat,
};
use crate::openai::{self, ChatChunk, ChatCompletion};

/// The Ollama version `/api/version` reports (clients check it for features).
pub const VERSION: &str = "0.9.0";

fn invalid(message: impl Into<String>, param: &str) -> ApiError {
    ApiError::invalid(message, Some(param))
}

/// A body as one of the request types; a field of the wrong type is named in the error.
fn parse<T: DeserializeOwned>(req: &Value) -> Result<T, ApiError> {
    crate::error::decode_body(req)
}

fn model_of(model: &str) -> Result<String, ApiError> {
    if model.is_empty() {
        return Err(invalid("`model` is required.", "model"));
    }
    Ok(model.to_owned())
}

/// A base64 image as a data URL (the media type guessed from its first bytes).
fn image_url(data: &str) -> Part {
    let media = match data.get(..4) {
        Some("/9j/") => "image/jpeg",
        Some("R0lG") => "image/gif",
        Some("UklG") => "image/webp",
        _ => "image/png",
    };
    Part::image(format!("data:{media};base64,{data}"))
}

/// Text plus images as OpenAI content.
fn content(text: &str, images: Option<&[String]>) -> RequestContent {
    let images = images.unwrap_or_default();
    if images.is_empty() {
        return RequestContent::Text(text.to_owned());
    }
    let mut parts = vec![Part::Text { text: text.to_owned() }];
    parts.extend(images.iter().map(|i| image_url(i)));
    RequestContent::Parts(parts)
}

/// An assistant turn; its calls get ids (`call_{i}_{j}`), remembered with their names in
/// `pending` until a tool result answers them.
fn assistant(i: usize, m: &Message, pending: &mut Vec<(String, String)>) -> RequestMessage {
    let mut msg = RequestMessage::text("assistant", m.text());
    let calls: Vec<openai::ToolCall> = m
        .tool_calls
        .iter()
        .flatten()
        .enumerate()
        .map(|(j, c)| {
            let id = format!("call_{i}_{j}");
            pending.push((id.clone(), c.function.name.clone()));
            openai::ToolCall::function(id, c.function.name.clone(), c.function.arguments.to_string())
        })
        .collect();
    if !calls.is_empty() {
        msg.tool_calls = Some(calls);
    }
    msg
}

/// Ollama's messages as OpenAI's: tool calls get ids, and each tool result answers the
/// call of its `tool_name` (else the next unanswered one).
fn messages(list: &[Message]) -> Result<Vec<RequestMessage>, ApiError> {
    let mut out = Vec::with_capacity(list.len());
    let mut pending: Vec<(String, String)> = Vec::new();
    for (i, m) in list.iter().enumerate() {
        match m.role.as_str() {
            "system" | "user" => out.push(RequestMessage::new(&m.role, content(m.text(), m.images.as_deref()))),
            "assistant" => out.push(assistant(i, m, &mut pending)),
            "tool" => {
                let name = m.tool_name.as_deref().unwrap_or_default();
                let at = pending.iter().position(|(_, n)| n == name).unwrap_or(0);
                let id = if pending.is_empty() {
                    format!("call_{i}")
                } else {
                    pending.remove(at).0
                };
                out.push(RequestMessage::tool_result(id, m.text()));
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
fn options(o: Option<&Options>, format: Option<&Format>, stream: Option<bool>, out: &mut chat::ChatRequest) {
    if let Some(o) = o {
        out.temperature = o.temperature.clone();
        out.top_p = o.top_p.clone();
        out.seed = o.seed.clone();
        out.max_tokens = o.num_predict.clone();
        out.stop = o.stop.clone();
    }
    out.response_format = match format {
        Some(Format::Named(s)) if s == "json" => Some(ResponseFormat::JsonObject),
        Some(Format::Schema(schema @ Value::Object(_))) => Some(ResponseFormat::JsonSchema {
            json_schema: JsonSchema {
                name: "format".into(),
                schema: schema.clone(),
                extra: Map::new(),
            },
        }),
        _ => None,
    };
    // Ollama streams unless told not to.
    if stream.unwrap_or(true) {
        out.stream_with_usage();
    }
}

/// Whether the client asked for a stream (absent means yes).
pub fn stream_of(req: &Value) -> bool {
    req.get("stream").and_then(Value::as_bool).unwrap_or(true)
}

/// A typed `/api/chat` body as an OpenAI chat request.
pub fn chat_request_of(req: &ChatRequest) -> Result<chat::ChatRequest, ApiError> {
    let model = model_of(&req.model)?;
    if req.messages.is_empty() {
        return Err(invalid("`messages` must be a non-empty array.", "messages"));
    }
    let mut out = chat::ChatRequest {
        model,
        messages: messages(&req.messages)?,
        tools: req.tools.clone().filter(|t| !t.is_empty()),
        ..chat::ChatRequest::default()
    };
    options(req.options.as_ref(), req.format.as_ref(), req.stream, &mut out);
    Ok(out)
}

/// An `/api/chat` body as an OpenAI chat request.
pub fn chat_request(req: &Value) -> Result<Value, ApiError> {
    Ok(chat_request_of(&parse(req)?)?.to_value())
}

/// A typed `/api/generate` body as an OpenAI chat request (system and prompt as messages).
pub fn generate_request_of(req: &GenerateRequest) -> Result<chat::ChatRequest, ApiError> {
    let model = model_of(&req.model)?;
    let prompt = req
        .prompt
        .as_deref()
        .ok_or_else(|| invalid("`prompt` is required.", "prompt"))?;
    let mut msgs = Vec::new();
    if let Some(s) = req.system.as_deref().filter(|s| !s.is_empty()) {
        msgs.push(RequestMessage::text("system", s));
    }
    msgs.push(RequestMessage::new("user", content(prompt, req.images.as_deref())));
    let mut out = chat::ChatRequest {
        model,
        messages: msgs,
        ..chat::ChatRequest::default()
    };
    options(req.options.as_ref(), req.format.as_ref(), req.stream, &mut out);
    Ok(out)
}

/// An `/api/generate` body as an OpenAI chat request (system and prompt as messages).
pub fn generate_request(req: &Value) -> Result<Value, ApiError> {
    Ok(generate_request_of(&parse(req)?)?.to_value())
}

/// An `/api/embed` body as an OpenAI embeddings request.
pub fn embed_request(req: &Value) -> Result<Value, ApiError> {
    let req: EmbedRequest = parse(req)?;
    let model = model_of(&req.model)?;
    if !(req.input.is_string() || req.input.is_array()) {
        return Err(invalid("`input` must be a string or an array of strings.", "input"));
    }
    let out = EmbeddingsRequest {
        model,
        input: req.input,
    };
    Ok(serde_json::to_value(out).unwrap_or_default())
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
fn stats(line: &mut Response, usage: crate::Usage, elapsed_ns: u64) {
    line.total_duration = Some(elapsed_ns);
    line.load_duration = Some(0);
    line.prompt_eval_count = Some(usage.prompt_tokens);
    line.prompt_eval_duration = Some(0);
    line.eval_count = Some(usage.completion_tokens);
    line.eval_duration = Some(elapsed_ns);
}

/// An OpenAI function call as Ollama's (arguments as an object).
fn tool_call(f: &openai::FunctionCall) -> ToolCall {
    ToolCall {
        function: FunctionCall {
            name: f.name.clone(),
            arguments: serde_json::from_str(&f.arguments).unwrap_or_else(|_| Value::Object(Map::new())),
            extra: Map::new(),
        },
        extra: Map::new(),
    }
}

/// One line of the answer: `text` as the message (chat) or `response` (generate).
fn line(api: Api, model: &str, text: &str, calls: &[&openai::FunctionCall], done: bool) -> Response {
    let mut l = Response {
        model: model.to_owned(),
        created_at: Some(created_at()),
        done,
        ..Response::default()
    };
    match api {
        Api::Chat => {
            let tool_calls = (!calls.is_empty()).then(|| calls.iter().map(|f| tool_call(f)).collect());
            l.message = Some(Message {
                role: "assistant".into(),
                content: Some(text.to_owned()),
                tool_calls,
                ..Message::default()
            });
        }
        Api::Generate => l.response = Some(text.to_owned()),
    }
    l
}

fn done_reason(finish: &str) -> &'static str {
    match finish {
        "length" => "length",
        _ => "stop",
    }
}

/// A whole typed OpenAI chat completion as Ollama's answer.
pub fn answer_of(api: Api, completion: &ChatCompletion, model: &str, elapsed_ns: u64) -> Response {
    let choice = completion.choices.first();
    let m = choice.map(|c| &c.message);
    let calls: Vec<&openai::FunctionCall> = completion.tool_calls().iter().map(|c| &c.function).collect();
    let text = m.and_then(|m| m.content.as_deref()).unwrap_or_default();
    let mut l = line(api, model, text, &calls, true);
    let finish = choice.and_then(|c| c.finish_reason.as_deref()).unwrap_or("stop");
    l.done_reason = Some(done_reason(finish).to_owned());
    stats(&mut l, completion.usage.unwrap_or_default(), elapsed_ns);
    l
}

/// A whole OpenAI chat completion as Ollama's answer.
pub fn answer(api: Api, completion: &Value, model: &str, elapsed_ns: u64) -> Response {
    let completion =
        serde::Deserialize::deserialize(completion).unwrap_or_else(|_| ChatCompletion::text("", "", 0, "", None));
    answer_of(api, &completion, model, elapsed_ns)
}

/// An OpenAI embeddings answer as Ollama's.
pub fn embed_answer(v: &Value, model: &str, elapsed_ns: u64) -> EmbedResponse {
    let e: Embeddings = serde::Deserialize::deserialize(v).unwrap_or_default();
    EmbedResponse {
        model: model.to_owned(),
        embeddings: e
            .data
            .into_iter()
            .filter_map(|d| match d.embedding {
                Vector::Floats(f) => Some(f),
                Vector::Base64(_) => None,
            })
            .collect(),
        total_duration: Some(elapsed_ns),
        load_duration: Some(0),
        prompt_eval_count: Some(e.usage.prompt_tokens),
        extra: Map::new(),
    }
}

/// OpenAI chunks → Ollama NDJSON lines. Tool calls are sent whole, as Ollama does, once
/// their arguments are complete (with the finish).
#[derive(Debug)]
pub struct Lines {
    api: Api,
    model: String,
    started: std::time::Instant,
    calls: Vec<openai::FunctionCall>,
    finish: String,
    usage: crate::Usage,
}

impl Lines {
    pub fn new(api: Api, model: &str) -> Lines {
        Lines {
            api,
            model: model.to_owned(),
            started: std::time::Instant::now(),
            calls: Vec::new(),
            finish: "stop".into(),
            usage: crate::Usage::default(),
        }
    }

    /// The lines of one chunk.
    pub fn chunk(&mut self, chunk: &ChatChunk) -> Vec<Response> {
        if let Some(u) = chunk.usage {
            self.usage = u;
        }
        let Some(choice) = chunk.choice() else {
            return Vec::new();
        };
        if let Some(f) = &choice.finish_reason {
            f.clone_into(&mut self.finish);
        }
        let d = &choice.delta;
        for c in d.tool_calls.iter().flatten() {
            let i = c.index as usize;
            if self.calls.len() <= i {
                self.calls.resize(
                    i + 1,
                    openai::FunctionCall {
                        name: String::new(),
                        arguments: String::new(),
                    },
                );
            }
            let f = c.function.clone().unwrap_or_default();
            self.calls[i].name.push_str(f.name.as_deref().unwrap_or_default());
            self.calls[i]
                .arguments
                .push_str(f.arguments.as_deref().unwrap_or_default());
        }
        match d.content.as_deref().filter(|t| !t.is_empty()) {
            Some(t) => vec![line(self.api, &self.model, t, &[], false)],
            None => Vec::new(),
        }
    }

    /// The last line: tool calls if any, `done: true`, the reason and stats.
    pub fn finish(&mut self) -> Response {
        let calls: Vec<&openai::FunctionCall> = self.calls.iter().collect();
        let mut l = line(self.api, &self.model, "", &calls, true);
        l.done_reason = Some(done_reason(&self.finish).to_owned());
        stats(&mut l, self.usage, self.started.elapsed().as_nanos() as u64);
        l
    }
}

/// NDJSON text of lines (answers, or an [`super::ErrorBody`]).
pub fn ndjson<T: Serialize>(lines: &[T], out: &mut Vec<u8>) {
    for l in lines {
        // Serializing these types cannot fail (strings, numbers and JSON values only).
        out.extend_from_slice(&serde_json::to_vec(l).unwrap_or_default());
        out.push(b'\n');
    }
}

/// A model as `/api/tags` and `/api/ps` list it.
pub fn model_entry(name: &str) -> ModelEntry {
    ModelEntry {
        name: name.to_owned(),
        model: name.to_owned(),
        modified_at: "2026-01-01T00:00:00Z".into(),
        size: 0,
        digest: format!("{:064x}", digest(name)),
        details: details(),
        expires_at: None,
        size_vram: None,
    }
}

fn details() -> ModelDetails {
    ModelDetails {
        format: "gguf".into(),
        family: "llmrouter".into(),
        families: vec!["llmrouter".into()],
        ..ModelDetails::default()
    }
}

/// A digest-like number for a name, stable within a build (clients only compare it).
fn digest(name: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    name.hash(&mut h);
    h.finish()
}

/// `/api/show` for a model.
pub fn show(name: &str, context_window: Option<u64>) -> Show {
    let mut info = Map::new();
    info.insert("general.architecture".into(), Value::from("llmrouter"));
    info.insert("general.basename".into(), Value::from(name));
    if let Some(n) = context_window {
        info.insert("llmrouter.context_length".into(), Value::from(n));
    }
    Show {
        modelfile: format!("FROM {name}\n"),
        template: "{{ .Prompt }}".into(),
        details: details(),
        model_info: info,
        capabilities: vec!["completion".into(), "tools".into()],
        modified_at: "2026-01-01T00:00:00Z".into(),
        ..Show::default()
    }
}

/// LM Studio's `/api/v0/models` entry.
pub fn lmstudio_entry(name: &str, context_window: Option<u64>) -> LmStudioModel {
    LmStudioModel {
        id: name.to_owned(),
        object: "model".into(),
        kind: "llm".into(),
        publisher: "llmrouter".into(),
        arch: "llmrouter".into(),
        compatibility_type: "gguf".into(),
        quantization: String::new(),
        state: "loaded".into(),
        max_context_length: context_window.unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chunk(v: Value) -> ChatChunk {
        serde_json::from_value(v).unwrap()
    }

    fn value<T: Serialize>(t: T) -> Value {
        serde_json::to_value(t).unwrap()
    }

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
        let e = chat_request(&json!({"model": "m", "options": {"temperature": "x"}, "messages": [{"role": "user"}]}))
            .unwrap_err();
        assert_eq!(e.param(), Some("options.temperature"));
    }

    #[test]
    fn chunks_become_lines_with_final_stats() {
        let mut l = Lines::new(Api::Chat, "m");
        let mut lines = l.chunk(&chunk(json!({"choices": [{"index": 0, "delta": {"content": "Hi"}}]})));
        lines.extend(l.chunk(&chunk(json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "c", "function": {"name": "look", "arguments": "{\"x\""}}]}}]}))));
        lines.extend(l.chunk(&chunk(json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}, "finish_reason": "tool_calls"}]}))));
        lines.extend(l.chunk(&chunk(
            json!({"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2}}),
        )));
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].message.as_ref().unwrap().text(), "Hi");
        let last = value(l.finish());
        assert_eq!(last["done"], true);
        assert_eq!(
            last["message"]["tool_calls"][0]["function"]["arguments"],
            json!({"x": 1})
        );
        assert_eq!(last["prompt_eval_count"], 4);
        assert_eq!(last["eval_count"], 2);
        let g = value(answer(
            Api::Generate,
            &json!({"choices": [{"message": {"content": "yo"}, "finish_reason": "length"}], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}),
            "m",
            5,
        ));
        assert_eq!(g["response"], "yo");
        assert_eq!(g["done_reason"], "length");
    }
}
