//! Ollama's native API on the wire, as serde types: `/api/chat`, `/api/generate` and
//! `/api/embed` bodies, their answers (one object, or NDJSON lines of the same shape), the
//! error body, and the model listings (`/api/tags`, `/api/ps`, `/api/show`, `/api/version`,
//! LM Studio's `/api/v0/models`). Fields these types do not name are kept in `extra`, so a
//! body parses and re-serializes to the same JSON.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

use crate::openai::request::Stop;

/// An `/api/chat` request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub messages: Vec<Message>,
    /// OpenAI-style function tools, passed as they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Options>,
    /// Absent means yes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// A duration (`"5m"`) or seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<Value>,
    /// `think` and the rest: passed through.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An `/api/generate` request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerateRequest {
    #[serde(default)]
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Base64 images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Options>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// `raw`, `template`, `context`, `suffix`, `keep_alive`…
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An `/api/embed` request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EmbedRequest {
    #[serde(default)]
    pub model: String,
    /// A string or an array of strings.
    #[serde(default)]
    pub input: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Options>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `format`: `"json"`, or a JSON schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Format {
    Named(String),
    Schema(Value),
}

/// Runtime options: the ones a translation reads, and the rest (`num_ctx`, `top_k`…) as given.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Options {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_predict: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A chat message (asked or answered).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Message {
    #[serde(default)]
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Base64 images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// The tool a `tool` message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_name: Option<String>,
    /// `thinking` and the rest.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A tool call, its arguments an object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub function: FunctionCall,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The function called and its arguments.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub arguments: Value,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An answer of `/api/chat` (`message`) or `/api/generate` (`response`): the whole answer,
/// or one NDJSON line of a stream (the last, `done: true`, with the stats).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Response {
    #[serde(default)]
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    #[serde(default)]
    pub done: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_duration: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_duration: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_eval_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_eval_duration: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_duration: Option<u64>,
    /// `context`, `thinking`…
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An `/api/embed` answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EmbedResponse {
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub embeddings: Vec<Vec<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_duration: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_duration: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_eval_count: Option<u64>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One NDJSON line of a stream from an upstream: an answer line, or an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Line {
    Error(ErrorBody),
    Response(Box<Response>),
}

/// An error: the body of a failed request, and a line that ends a failed stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// `/api/tags` and `/api/ps`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    pub models: Vec<ModelEntry>,
}

/// A model as `/api/tags` (and, with `expires_at` and `size_vram`, `/api/ps`) lists it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelEntry {
    pub name: String,
    pub model: String,
    pub modified_at: String,
    pub size: u64,
    pub digest: String,
    pub details: ModelDetails,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_vram: Option<u64>,
}

/// What a model is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelDetails {
    pub parent_model: String,
    pub format: String,
    pub family: String,
    pub families: Vec<String>,
    pub parameter_size: String,
    pub quantization_level: String,
}

/// `/api/show`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Show {
    pub license: String,
    pub modelfile: String,
    pub parameters: String,
    pub template: String,
    pub details: ModelDetails,
    pub model_info: Map<String, Value>,
    pub capabilities: Vec<String>,
    pub modified_at: String,
}

/// `/api/version`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub version: String,
}

/// LM Studio's `/api/v0/models`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LmStudioList {
    pub object: String,
    pub data: Vec<LmStudioModel>,
}

/// One model of LM Studio's list.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LmStudioModel {
    pub id: String,
    pub object: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub publisher: String,
    pub arch: String,
    pub compatibility_type: String,
    pub quantization: String,
    pub state: String,
    pub max_context_length: u64,
}

impl Options {
    /// Options exactly as `map` holds them.
    pub fn from_map(map: Map<String, Value>) -> Options {
        Options {
            extra: map,
            ..Options::default()
        }
    }
}

impl Message {
    /// The message's text (empty when it has none).
    pub fn text(&self) -> &str {
        self.content.as_deref().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trip<T: Serialize + serde::de::DeserializeOwned>(v: Value) -> T {
        let t: T = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&t).unwrap(), v);
        t
    }

    #[test]
    fn real_requests_round_trip_with_unknown_fields() {
        let chat: ChatRequest = round_trip(json!({"model": "llama3.2", "stream": false, "keep_alive": "5m",
            "think": true, "format": {"type": "object", "properties": {"a": {"type": "string"}}},
            "options": {"temperature": 0.2, "num_predict": -1, "stop": ["END"], "num_ctx": 4096, "top_k": 3},
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "messages": [{"role": "user", "content": "see", "images": ["iVBORw0KGgo"]},
                {"role": "assistant", "content": "", "thinking": "hm",
                 "tool_calls": [{"function": {"index": 0, "name": "f", "arguments": {"x": 1}}}]},
                {"role": "tool", "tool_name": "f", "content": "a cat"}]}));
        assert_eq!(chat.options.unwrap().extra["num_ctx"], 4096);
        assert_eq!(chat.messages[1].extra["thinking"], "hm");
        round_trip::<GenerateRequest>(json!({"model": "m", "prompt": "hi", "system": "s", "format": "json",
            "raw": false, "suffix": "", "options": {"seed": 42}}));
        round_trip::<EmbedRequest>(json!({"model": "m", "input": ["a", "b"], "truncate": true, "dimensions": 2}));
    }

    #[test]
    fn real_answers_and_listings_round_trip() {
        round_trip::<Response>(json!({"model": "llama3.2", "created_at": "2026-01-01T00:00:00Z",
            "message": {"role": "assistant", "content": "hi"}, "done": true, "done_reason": "stop",
            "total_duration": 5, "load_duration": 1, "prompt_eval_count": 4, "prompt_eval_duration": 1,
            "eval_count": 2, "eval_duration": 3}));
        round_trip::<Response>(json!({"model": "m", "created_at": "t", "response": "yo", "done": false,
            "context": [1, 2]}));
        round_trip::<EmbedResponse>(json!({"model": "m", "embeddings": [[0.5, -0.25]], "total_duration": 1,
            "load_duration": 0, "prompt_eval_count": 2}));
        round_trip::<ModelList>(
            json!({"models": [{"name": "m", "model": "m", "modified_at": "t", "size": 1,
            "digest": "d", "details": {"parent_model": "", "format": "gguf", "family": "f", "families": ["f"],
            "parameter_size": "8B", "quantization_level": "Q4"}, "expires_at": "t", "size_vram": 0}]}),
        );
        round_trip::<ErrorBody>(json!({"error": "model 'x' not found"}));
        let line: Line = serde_json::from_value(json!({"error": "boom"})).unwrap();
        assert_eq!(line, Line::Error(ErrorBody { error: "boom".into() }));
        let line: Line = serde_json::from_value(json!({"model": "m", "done": false})).unwrap();
        assert!(matches!(line, Line::Response(r) if !r.done));
    }
}
