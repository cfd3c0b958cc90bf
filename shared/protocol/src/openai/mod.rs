//! The OpenAI chat bodies llmrouter writes itself — completions and stream chunks of the
//! `echo` and `chaos` providers, the tool loop's answers, the mocks — as typed serde
//! structs, so the wire shape is defined once.
//!
//! Bodies from upstreams are not re-encoded through these types on the hot path (they pass
//! through as bytes); where a service must read one (the tool loop, the XML tool parser, the
//! Anthropic and Ollama front doors), fields these types do not name are kept in `extra` and
//! written back unchanged.
//!
//! Also here: the chat and embeddings requests the front doors write ([`request`]) and the
//! embeddings answer ([`embeddings`]).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::frame::Usage;

pub mod embeddings;
pub mod request;

/// `chat.completion`: a whole answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletion {
    #[serde(default)]
    pub id: String,
    #[serde(default = "object_completion")]
    pub object: String,
    #[serde(default)]
    pub created: u64,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub choices: Vec<Choice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One choice of a completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    #[serde(default)]
    pub index: u32,
    pub message: Message,
    #[serde(default)]
    pub logprobs: Option<Value>,
    #[serde(default)]
    pub finish_reason: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An assistant message (or any message the tool loop appends to a conversation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    #[serde(default)]
    pub role: String,
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// The model's reasoning as text (DeepSeek's and LiteLLM's name for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// Anthropic's thinking blocks whole (signatures, redacted data), for Anthropic clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking_blocks: Option<Vec<crate::anthropic::wire::Block>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A function call the model asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Its position, in stream deltas only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    #[serde(default)]
    pub id: String,
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: FunctionCall,
}

impl ToolCall {
    /// A call of function `name` with `arguments` (a JSON text), as a whole answer has it.
    pub fn function(id: impl Into<String>, name: impl Into<String>, arguments: impl Into<String>) -> ToolCall {
        ToolCall {
            index: None,
            id: id.into(),
            kind: function_type(),
            function: FunctionCall {
                name: name.into(),
                arguments: arguments.into(),
            },
        }
    }
}

/// The function and its arguments (a JSON text, as the model wrote it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub arguments: String,
}

/// `chat.completion.chunk`: one event of a stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatChunk {
    #[serde(default)]
    pub id: String,
    #[serde(default = "object_chunk")]
    pub object: String,
    #[serde(default)]
    pub created: u64,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// `system_fingerprint`, `service_tier`…: kept as they came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One choice of a chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    #[serde(default)]
    pub index: u32,
    #[serde(default)]
    pub delta: Delta,
    #[serde(default)]
    pub logprobs: Option<Value>,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// What a chunk adds to the message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking_blocks: Option<Vec<crate::anthropic::wire::Block>>,
    /// Fields these types do not name (`refusal`…), kept as they came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A piece of a tool call in a stream: the first names the call (`id`, `type`, the
/// function's `name`), the rest add to its `arguments`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    #[serde(default)]
    pub index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionDelta>,
}

/// What a [`ToolCallDelta`] adds to the function.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FunctionDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

impl ToolCallDelta {
    /// More `arguments` for the call at `index`.
    pub fn new(index: u32, arguments: &str) -> ToolCallDelta {
        ToolCallDelta {
            index,
            function: Some(FunctionDelta {
                name: None,
                arguments: Some(arguments.to_owned()),
            }),
            ..ToolCallDelta::default()
        }
    }

    /// A whole call at `index` in one piece.
    pub fn whole(index: u32, call: &ToolCall) -> ToolCallDelta {
        ToolCallDelta {
            index,
            id: Some(call.id.clone()),
            kind: Some(call.kind.clone()),
            function: Some(FunctionDelta {
                name: Some(call.function.name.clone()),
                arguments: Some(call.function.arguments.clone()),
            }),
        }
    }
}

fn object_completion() -> String {
    "chat.completion".into()
}

fn object_chunk() -> String {
    "chat.completion.chunk".into()
}

fn function_type() -> String {
    "function".into()
}

impl Message {
    /// An assistant message with text.
    pub fn assistant(text: impl Into<String>) -> Message {
        Message {
            role: "assistant".into(),
            content: Some(text.into()),
            tool_calls: None,
            tool_call_id: None,
            reasoning_content: None,
            thinking_blocks: None,
            extra: Map::new(),
        }
    }

    /// A tool result for the call `call_id`.
    pub fn tool_result(call_id: impl Into<String>, text: impl Into<String>) -> Message {
        Message {
            role: "tool".into(),
            content: Some(text.into()),
            tool_calls: None,
            tool_call_id: Some(call_id.into()),
            reasoning_content: None,
            thinking_blocks: None,
            extra: Map::new(),
        }
    }
}

impl ChatCompletion {
    /// A one-choice text answer that stopped normally.
    pub fn text(id: &str, model: &str, created: u64, text: impl Into<String>, usage: Option<Usage>) -> ChatCompletion {
        ChatCompletion {
            id: id.to_owned(),
            object: object_completion(),
            created,
            model: model.to_owned(),
            choices: vec![Choice {
                index: 0,
                message: Message::assistant(text),
                logprobs: None,
                finish_reason: Some("stop".into()),
                extra: Map::new(),
            }],
            usage,
            extra: Map::new(),
        }
    }

    /// The first choice's message, if any.
    pub fn message(&self) -> Option<&Message> {
        self.choices.first().map(|c| &c.message)
    }

    /// The first choice's tool calls (none when it made none).
    pub fn tool_calls(&self) -> &[ToolCall] {
        self.message().and_then(|m| m.tool_calls.as_deref()).unwrap_or(&[])
    }

    /// The same answer as the events of a stream: the message as one delta (tool calls
    /// indexed), then the finish reason, then — when asked — the usage chunk.
    pub fn to_chunks(&self, include_usage: bool) -> Vec<ChatChunk> {
        let msg = self.message();
        let delta = Delta {
            role: Some("assistant".into()),
            content: msg.and_then(|m| m.content.clone()),
            tool_calls: msg.and_then(|m| m.tool_calls.as_ref()).map(|calls| {
                calls
                    .iter()
                    .enumerate()
                    .map(|(i, c)| ToolCallDelta::whole(i as u32, c))
                    .collect()
            }),
            ..Delta::default()
        };
        let finish = self
            .choices
            .first()
            .and_then(|c| c.finish_reason.clone())
            .unwrap_or_else(|| "stop".into());
        let mut out = vec![
            ChatChunk::delta(&self.id, &self.model, self.created, delta, None),
            ChatChunk::delta(&self.id, &self.model, self.created, Delta::default(), Some(finish)),
        ];
        if include_usage && let Some(u) = self.usage {
            out.push(ChatChunk::usage(&self.id, &self.model, self.created, u));
        }
        out
    }

    /// The JSON bytes.
    pub fn to_bytes(&self) -> bytes::Bytes {
        to_bytes(self)
    }
}

impl ChatChunk {
    /// A chunk of one choice.
    pub fn delta(id: &str, model: &str, created: u64, delta: Delta, finish: Option<String>) -> ChatChunk {
        ChatChunk {
            id: id.to_owned(),
            object: object_chunk(),
            created,
            model: model.to_owned(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                logprobs: None,
                finish_reason: finish,
            }],
            usage: None,
            extra: Map::new(),
        }
    }

    /// The closing usage chunk (no choices).
    pub fn usage(id: &str, model: &str, created: u64, usage: Usage) -> ChatChunk {
        ChatChunk {
            id: id.to_owned(),
            object: object_chunk(),
            created,
            model: model.to_owned(),
            choices: Vec::new(),
            usage: Some(usage),
            extra: Map::new(),
        }
    }

    /// A text delta (`role` only on the first).
    pub fn text(id: &str, model: &str, created: u64, role: bool, text: &str) -> ChatChunk {
        let delta = Delta {
            role: role.then(|| "assistant".into()),
            content: Some(text.to_owned()),
            ..Delta::default()
        };
        ChatChunk::delta(id, model, created, delta, None)
    }

    /// The JSON bytes (one SSE payload).
    pub fn to_bytes(&self) -> bytes::Bytes {
        to_bytes(self)
    }

    /// The first choice (the only one llmrouter asks for), if any.
    pub fn choice(&self) -> Option<&ChunkChoice> {
        self.choices.first()
    }
}

/// Serializes one of these types; they hold only strings, numbers and JSON values, so
/// serialization cannot fail.
fn to_bytes<T: Serialize>(v: &T) -> bytes::Bytes {
    bytes::Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

/// The `data:` payloads of SSE text made by [`sse`] (whole events, as reply frames carry them).
pub fn sse_payloads(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    text.split(|b| *b == b'\n')
        .filter_map(|line| line.strip_prefix(b"data: "))
}

/// The SSE text of `payloads`: `data: …\n\n` each.
pub fn sse(payloads: &[bytes::Bytes]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payloads.iter().map(|p| p.len() + 8).sum());
    for p in payloads {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(p);
        out.extend_from_slice(b"\n\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_survive_a_round_trip() {
        let v = json!({"id": "c1", "object": "chat.completion", "created": 1, "model": "m",
            "system_fingerprint": "fp", "choices": [{"index": 0, "finish_reason": "stop", "logprobs": null,
            "message": {"role": "assistant", "content": "hi", "refusal": null}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}});
        let c: ChatCompletion = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&c).unwrap(), v);
    }

    #[test]
    fn chunks_keep_unknown_fields_and_tool_call_pieces() {
        let v = json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "system_fingerprint": "fp", "choices": [{"index": 0, "logprobs": null, "finish_reason": null,
            "delta": {"refusal": null, "reasoning_content": "hm",
                "tool_calls": [{"index": 0, "function": {"arguments": "{\"x\":"}}]}}]});
        let c: ChatChunk = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&c).unwrap(), v);
        assert_eq!(c.choice().unwrap().delta.tool_calls.as_ref().unwrap()[0].id, None);
    }

    #[test]
    fn a_completion_streams_as_delta_finish_and_usage() {
        let mut c = ChatCompletion::text(
            "x",
            "m",
            1,
            "hi",
            Some(Usage {
                prompt_tokens: 1,
                completion_tokens: 2,
                total_tokens: 3,
            }),
        );
        c.choices[0].message.tool_calls = Some(vec![ToolCall {
            index: None,
            id: "call_1".into(),
            kind: "function".into(),
            function: FunctionCall {
                name: "f".into(),
                arguments: "{}".into(),
            },
        }]);
        let chunks = c.to_chunks(true);
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[0].choices[0].delta.content.as_deref(), Some("hi"));
        assert_eq!(chunks[0].choices[0].delta.tool_calls.as_ref().unwrap()[0].index, 0);
        assert_eq!(chunks[1].choices[0].finish_reason.as_deref(), Some("stop"));
        assert!(chunks[2].choices.is_empty());
        assert_eq!(c.to_chunks(false).len(), 2);
    }
}
