//! OpenAI chat completions ↔ Anthropic's Messages API, written once: the request (system,
//! text and image parts, tools, tool_choice, tool calls and their results, sampling), the
//! answer (text, `thinking` as `reasoning_content`, tool_use → tool_calls, stop reasons →
//! finish_reason, usage), and the stream (message_start, content_block_*, message_delta,
//! message_stop, ping, error → OpenAI chunks, usage from message_start + message_delta).
//!
//! The Anthropic side is typed ([`wire`]); the OpenAI chat request is read as JSON, the
//! answers written as [`crate::openai`] types.

pub mod front;
pub mod wire;

use serde::Deserialize;
use serde_json::{Map, Value};

pub use wire::{
    Block, BlockDelta, Content, ErrorBody, ErrorDetail, ImageSource, InputMessage, Message, MessageDelta,
    MessagesRequest, Metadata, Role, StreamEvent, TokenCount, Tool, ToolChoice,
};

use crate::ApiError;
use crate::frame::Usage;
use crate::openai::{ChatChunk, ChatCompletion, Choice, Delta, ToolCall, ToolCallDelta};

/// The `anthropic-version` header this translation speaks.
pub const VERSION: &str = "2023-06-01";

/// Anthropic needs `max_tokens`; this is used when the request names none.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// An OpenAI content part as an Anthropic content block (images: data URLs or URLs).
fn block(part: &Value) -> Option<Block> {
    match part.get("type").and_then(Value::as_str) {
        Some("text") => Some(Block::text(
            part.get("text").and_then(Value::as_str).unwrap_or_default(),
        )),
        Some("image_url") => {
            let image = part.get("image_url")?;
            let url = image.get("url").and_then(Value::as_str).or(image.as_str())?;
            let source = match url.strip_prefix("data:").and_then(|d| d.split_once(";base64,")) {
                Some((media, data)) => ImageSource::Base64 {
                    media_type: media.to_owned(),
                    data: data.to_owned(),
                },
                None => ImageSource::Url { url: url.to_owned() },
            };
            Some(Block::Image {
                source,
                extra: Map::new(),
            })
        }
        _ => None,
    }
}

fn blocks(content: Option<&Value>) -> Vec<Block> {
    match content {
        Some(Value::String(s)) if !s.is_empty() => vec![Block::text(s.as_str())],
        Some(Value::Array(parts)) => parts.iter().filter_map(block).collect(),
        _ => Vec::new(),
    }
}

/// Appends `blocks` as `role`, merging with the previous message of the same role (Anthropic
/// wants user and assistant turns to alternate).
fn push(out: &mut Vec<InputMessage>, role: Role, mut new: Vec<Block>) {
    if new.is_empty() {
        return;
    }
    if let Some(last) = out.last_mut().filter(|m| m.role == role)
        && let Content::Blocks(existing) = &mut last.content
    {
        existing.append(&mut new);
        return;
    }
    out.push(InputMessage {
        role,
        content: Content::Blocks(new),
        extra: Map::new(),
    });
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// An OpenAI assistant message's tool calls as tool_use blocks.
fn tool_uses(m: &Value) -> impl Iterator<Item = Block> + '_ {
    m.get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|call| {
            let f = call.get("function").unwrap_or(&Value::Null);
            let args = f.get("arguments").and_then(Value::as_str).unwrap_or("{}");
            Block::tool_use(str_of(call, "id"), str_of(f, "name"), args)
        })
}

/// The system prompt and the turns of OpenAI chat messages.
fn turns(chat: &Value) -> (Vec<String>, Vec<InputMessage>) {
    let mut system = Vec::new();
    let mut messages = Vec::new();
    for m in chat.get("messages").and_then(Value::as_array).into_iter().flatten() {
        let content = m.get("content");
        match str_of(m, "role") {
            "system" | "developer" => system.push(crate::chat::text_of(content.unwrap_or(&Value::Null))),
            "assistant" => {
                let mut content = blocks(content);
                content.extend(tool_uses(m));
                push(&mut messages, Role::Assistant, content);
            }
            "tool" => {
                let result = Block::ToolResult {
                    tool_use_id: str_of(m, "tool_call_id").to_owned(),
                    content: Some(Content::Text(crate::chat::text_of(content.unwrap_or(&Value::Null)))),
                    is_error: None,
                    extra: Map::new(),
                };
                push(&mut messages, Role::User, vec![result]);
            }
            _ => push(&mut messages, Role::User, blocks(content)),
        }
    }
    (system, messages)
}

/// OpenAI function tools as Anthropic tools.
fn tools(chat: &Value) -> Option<Vec<Tool>> {
    let tools = chat.get("tools").and_then(Value::as_array).filter(|t| !t.is_empty())?;
    let tools = tools
        .iter()
        .filter(|t| t.get("type").and_then(Value::as_str) == Some("function"))
        .map(|t| {
            let f = t.get("function").unwrap_or(&Value::Null);
            let schema = f.get("parameters").filter(|p| !p.is_null()).cloned();
            Tool {
                name: f.get("name").and_then(Value::as_str).map(str::to_owned),
                description: Some(str_of(f, "description").to_owned()),
                input_schema: Some(schema.unwrap_or_else(|| serde_json::json!({"type": "object"}))),
                ..Tool::default()
            }
        })
        .collect();
    Some(tools)
}

/// OpenAI's tool_choice as Anthropic's.
fn tool_choice(choice: Option<&Value>) -> Option<ToolChoice> {
    match choice? {
        Value::String(s) => match s.as_str() {
            "auto" => Some(ToolChoice::Auto {
                disable_parallel_tool_use: None,
            }),
            "required" => Some(ToolChoice::Any {
                disable_parallel_tool_use: None,
            }),
            "none" => Some(ToolChoice::None {}),
            _ => None,
        },
        Value::Object(o) => Some(ToolChoice::Tool {
            name: o
                .get("function")
                .map(|f| str_of(f, "name"))
                .unwrap_or_default()
                .to_owned(),
            disable_parallel_tool_use: None,
        }),
        _ => None,
    }
}

/// An OpenAI chat completion request as a typed Anthropic Messages request for `model`.
pub fn messages_request(chat: &Value, model: &str) -> MessagesRequest {
    let (system, messages) = turns(chat);
    let number = |k: &str| chat.get(k).and_then(Value::as_u64);
    let stop = match chat.get("stop") {
        Some(Value::String(s)) => Some(vec![s.clone()]),
        Some(Value::Array(a)) => Some(a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect()),
        _ => None,
    };
    MessagesRequest {
        model: model.to_owned(),
        messages,
        max_tokens: Some(
            number("max_completion_tokens")
                .or(number("max_tokens"))
                .unwrap_or(DEFAULT_MAX_TOKENS),
        ),
        system: (!system.is_empty()).then(|| Content::Text(system.join("\n\n"))),
        temperature: chat.get("temperature").and_then(Value::as_f64),
        top_p: chat.get("top_p").and_then(Value::as_f64),
        stream: chat.get("stream").and_then(Value::as_bool),
        stop_sequences: stop,
        tools: tools(chat),
        tool_choice: tool_choice(chat.get("tool_choice")),
        metadata: chat.get("user").and_then(Value::as_str).map(|u| Metadata {
            user_id: Some(u.to_owned()),
            extra: Map::new(),
        }),
        extra: Map::new(),
    }
}

/// An OpenAI chat completion request as an Anthropic Messages request for `model`.
pub fn request(chat: &Value, model: &str) -> Result<Value, ApiError> {
    serde_json::to_value(messages_request(chat, model))
        .map_err(|e| ApiError::invalid(format!("The request cannot be translated: {e}"), None))
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

fn usage(input: u64, output: u64) -> Usage {
    Usage {
        prompt_tokens: input,
        completion_tokens: output,
        total_tokens: input + output,
    }
}

/// `chatcmpl-{id}` for a message id (`chatcmpl-anthropic` when it has none).
fn completion_id(id: &str) -> String {
    format!("chatcmpl-{}", if id.is_empty() { "anthropic" } else { id })
}

/// An Anthropic message (a non-streamed answer) as a typed OpenAI chat completion.
pub fn chat_completion(msg: &Message, model: &str, created: u64) -> ChatCompletion {
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut calls = Vec::new();
    // Thinking blocks whole (signature, redacted data), for Anthropic clients to send back.
    let mut thinking = Vec::new();
    for b in &msg.content {
        match b {
            Block::Text { text: t, .. } => text.push_str(t),
            Block::Thinking { thinking: t, .. } => {
                reasoning.push_str(t);
                thinking.push(b.clone());
            }
            Block::RedactedThinking { .. } => thinking.push(b.clone()),
            Block::ToolUse { id, name, input, .. } => {
                calls.push(ToolCall::function(id.clone(), name.clone(), input.to_string()))
            }
            _ => {}
        }
    }
    let mut message = crate::openai::Message::assistant(text);
    if message.content.as_deref() == Some("") && !calls.is_empty() {
        message.content = None;
    }
    message.reasoning_content = (!reasoning.is_empty()).then_some(reasoning);
    message.thinking_blocks = (!thinking.is_empty()).then_some(thinking);
    message.tool_calls = (!calls.is_empty()).then_some(calls);
    let u = &msg.usage;
    let model = if msg.model.is_empty() { model } else { &msg.model };
    let mut c = ChatCompletion::text(&completion_id(&msg.id), model, created, "", None);
    c.choices = vec![Choice {
        index: 0,
        message,
        logprobs: None,
        finish_reason: Some(finish_reason(msg.stop_reason.as_deref().unwrap_or("end_turn")).to_owned()),
        extra: Map::new(),
    }];
    c.usage = Some(usage(u.input_tokens.unwrap_or(0), u.output_tokens.unwrap_or(0)));
    c
}

/// An Anthropic message (a non-streamed answer) as an OpenAI chat completion.
pub fn completion(msg: &Value, model: &str, created: u64) -> Value {
    let msg = Message::deserialize(msg).unwrap_or_default();
    serde_json::to_value(chat_completion(&msg, model, created)).unwrap_or_default()
}

/// Why an Anthropic stream failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// An `error` event, with its type and message.
    #[error("{message}")]
    Upstream { kind: String, message: String },
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
    tools: Vec<(u64, u32)>,
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

    fn chunk(&self, delta: Delta, finish: Option<&str>) -> ChatChunk {
        ChatChunk::delta(&self.id, &self.model, self.created, delta, finish.map(str::to_owned))
    }

    /// The usage so far, as OpenAI reports it.
    pub fn usage(&self) -> (u64, u64) {
        (self.input_tokens, self.output_tokens)
    }

    /// The final usage chunk (`choices` empty), typed.
    pub fn final_usage(&self) -> ChatChunk {
        ChatChunk::usage(
            &self.id,
            &self.model,
            self.created,
            usage(self.input_tokens, self.output_tokens),
        )
    }

    /// The final usage chunk (`choices` empty).
    pub fn usage_chunk(&self) -> Value {
        serde_json::to_value(self.final_usage()).unwrap_or_default()
    }

    /// The chunks of one event (as JSON); Err carries an `error` event's message.
    pub fn event(&mut self, e: &Value) -> Result<Vec<Value>, StreamError> {
        // Events of known types whose fields do not parse are skipped, as unknown ones are.
        let Ok(e) = StreamEvent::deserialize(e) else {
            return Ok(Vec::new());
        };
        Ok(self
            .on_event(&e)?
            .iter()
            .map(|c| serde_json::to_value(c).unwrap_or_default())
            .collect())
    }

    fn on_start(&mut self, m: &Message) -> ChatChunk {
        self.id = completion_id(&m.id);
        if !m.model.is_empty() {
            m.model.clone_into(&mut self.model);
        }
        self.input_tokens = m.usage.input_tokens.unwrap_or(0);
        self.output_tokens = m.usage.output_tokens.unwrap_or(0);
        let delta = Delta {
            role: Some("assistant".into()),
            content: Some(String::new()),
            ..Delta::default()
        };
        self.chunk(delta, None)
    }

    fn on_block_start(&mut self, index: u64, b: &Block) -> Option<ChatChunk> {
        let delta = match b {
            Block::ToolUse { id, name, .. } => {
                let call = self.tools.len() as u32;
                self.tools.push((index, call));
                let mut d = ToolCallDelta::new(call, "");
                d.id = Some(id.clone());
                d.kind = Some("function".into());
                if let Some(f) = &mut d.function {
                    f.name = Some(name.clone());
                }
                Delta {
                    tool_calls: Some(vec![d]),
                    ..Delta::default()
                }
            }
            Block::RedactedThinking { .. } => Delta {
                thinking_blocks: Some(vec![b.clone()]),
                ..Delta::default()
            },
            _ => return None,
        };
        Some(self.chunk(delta, None))
    }

    fn on_delta(&self, index: u64, d: &BlockDelta) -> Option<ChatChunk> {
        let delta = match d {
            BlockDelta::SignatureDelta { signature } => Delta {
                thinking_blocks: Some(vec![Block::Thinking {
                    thinking: String::new(),
                    signature: Some(signature.clone()),
                    extra: Map::new(),
                }]),
                ..Delta::default()
            },
            BlockDelta::TextDelta { text } => Delta {
                content: Some(text.clone()),
                ..Delta::default()
            },
            BlockDelta::ThinkingDelta { thinking } => Delta {
                reasoning_content: Some(thinking.clone()),
                ..Delta::default()
            },
            BlockDelta::InputJsonDelta { partial_json } => {
                let (_, call) = self.tools.iter().find(|(b, _)| *b == index)?;
                Delta {
                    tool_calls: Some(vec![ToolCallDelta::new(*call, partial_json)]),
                    ..Delta::default()
                }
            }
            BlockDelta::Other(_) => return None,
        };
        Some(self.chunk(delta, None))
    }

    /// The chunks of one event; an `error` event is an error.
    pub fn on_event(&mut self, e: &StreamEvent) -> Result<Vec<ChatChunk>, StreamError> {
        let chunk = match e {
            StreamEvent::MessageStart { message } => Some(self.on_start(message)),
            StreamEvent::ContentBlockStart { index, content_block } => self.on_block_start(*index, content_block),
            StreamEvent::ContentBlockDelta { index, delta } => self.on_delta(*index, delta),
            StreamEvent::MessageDelta { delta, usage } => {
                if let Some(n) = usage.as_ref().and_then(|u| u.output_tokens) {
                    self.output_tokens = n;
                }
                delta.stop_reason.as_deref().map(|stop| {
                    let finish = finish_reason(stop);
                    self.finish = Some(finish.to_owned());
                    self.chunk(Delta::default(), Some(finish))
                })
            }
            StreamEvent::MessageStop => {
                self.done = true;
                None
            }
            StreamEvent::Error { error } => {
                let message = if error.message.is_empty() {
                    "upstream stream error".to_owned()
                } else {
                    error.message.clone()
                };
                return Err(StreamError::Upstream {
                    kind: error.kind.clone(),
                    message,
                });
            }
            StreamEvent::ContentBlockStop { .. } | StreamEvent::Ping | StreamEvent::Other(_) => None,
        };
        Ok(chunk.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
            Err(StreamError::Upstream {
                kind: "overloaded_error".into(),
                message: "Overloaded".into()
            })
        );
    }
}
