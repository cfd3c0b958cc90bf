//! Anthropic's Messages API as a front door: a client's `POST /v1/messages` body as an
//! OpenAI chat request (routed like any other), and the OpenAI answer — whole or as chunks —
//! back as an Anthropic message or Anthropic's event sequence (`message_start`,
//! `content_block_start` / `_delta` / `_stop`, `message_delta`, `message_stop`), plus
//! Anthropic's error shape. Both sides are typed: [`super::wire`] and [`crate::openai`].
//!
//! Kept: system (string or text blocks), text and image blocks (base64 and URL), tools,
//! tool_choice (and `disable_parallel_tool_use`), tool_use and tool_result blocks, stop
//! sequences, temperature, top_p, max_tokens, `metadata.user_id`, and usage. `thinking`:
//! the original body travels beside the chat body (`Meta::native`), so an Anthropic target
//! gets it intact; other targets get the chat body (no `thinking`, `top_k`, `cache_control`,
//! documents or server tools), and their `reasoning_content` comes back as thinking blocks.

use serde_json::{Map, Number, Value};

use super::wire::{
    Block, BlockDelta, Content, ErrorBody, ImageSource, InputMessage, Message, MessageDelta, MessagesRequest, Role,
    StreamEvent, ToolChoice, Usage,
};
use crate::ApiError;
use crate::openai::request::{self as chat, ChatRequest, FunctionTool, Part, RequestContent, RequestMessage, Stop};
use crate::openai::{ChatChunk, ChatCompletion, ToolCall};

fn invalid(message: impl Into<String>, param: &str) -> ApiError {
    ApiError::invalid(message, Some(param))
}

/// An image block's source as an OpenAI `image_url` part.
fn image_part(source: &ImageSource, at: &str) -> Result<Part, ApiError> {
    let url = match source {
        ImageSource::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
        ImageSource::Url { url } => url.clone(),
        ImageSource::Other(_) => return Err(invalid("An image block needs a `base64` or `url` source.", at)),
    };
    Ok(Part::image(url))
}

/// The blocks of one message, checked: a string becomes one text block.
fn blocks_of<'a>(content: &'a Content, at: &str) -> Result<std::borrow::Cow<'a, [Block]>, ApiError> {
    match content {
        Content::Text(s) => Ok(std::borrow::Cow::Owned(vec![Block::text(s.as_str())])),
        Content::Blocks(b) => Ok(std::borrow::Cow::Borrowed(b.as_slice())),
        Content::Other(_) => Err(invalid("`content` must be a string or an array of content blocks.", at)),
    }
}

/// A block a user turn cannot hold: unsupported, or with no type.
fn unsupported(b: &Block, at: &str) -> ApiError {
    match b.kind() {
        Some("image") => invalid("An image block needs a `base64` or `url` source.", at),
        Some(other) => invalid(format!("Content blocks of type `{other}` are not supported."), at),
        None => invalid("A content block needs a `type`.", at),
    }
}

/// A user turn: its tool results as `tool` messages first, then the rest as one user message.
fn user_turn(m: &InputMessage, at: &str, out: &mut Vec<RequestMessage>) -> Result<(), ApiError> {
    let mut parts = Vec::new();
    for (j, b) in blocks_of(&m.content, at)?.iter().enumerate() {
        let at = format!("{at}.content.{j}");
        match b {
            Block::Text { text, .. } => parts.push(Part::Text { text: text.clone() }),
            Block::Image { source, .. } => parts.push(image_part(source, &at)?),
            Block::ToolResult {
                tool_use_id,
                content,
                is_error,
                ..
            } => {
                let mut text = content.as_ref().map(Content::text).unwrap_or_default();
                if *is_error == Some(true) {
                    text = format!("Error: {text}");
                }
                out.push(RequestMessage::tool_result(tool_use_id.as_str(), text));
            }
            Block::Document { source, .. } if source.get("type").and_then(Value::as_str) == Some("text") => {
                let data = source.get("data").and_then(Value::as_str).unwrap_or_default();
                parts.push(Part::Text { text: data.to_owned() });
            }
            other => return Err(unsupported(other, &at)),
        }
    }
    if !parts.is_empty() {
        let content = match parts.as_slice() {
            [Part::Text { text }] => RequestContent::Text(text.clone()),
            _ => RequestContent::Parts(parts),
        };
        out.push(RequestMessage::new("user", content));
    }
    Ok(())
}

/// An assistant turn: text, tool_use as tool_calls; thinking blocks are left to the native body.
fn assistant_turn(m: &InputMessage, at: &str, out: &mut Vec<RequestMessage>) -> Result<(), ApiError> {
    let mut text = String::new();
    let mut calls = Vec::new();
    for b in blocks_of(&m.content, at)?.iter() {
        match b {
            Block::Text { text: t, .. } => text.push_str(t),
            Block::ToolUse { id, name, input, .. } => {
                calls.push(ToolCall::function(id.clone(), name.clone(), input.to_string()))
            }
            _ => {} // thinking, redacted_thinking: only Anthropic targets take them back
        }
    }
    let mut msg = RequestMessage::text("assistant", text);
    if !calls.is_empty() {
        if msg.content == Some(RequestContent::Text(String::new())) {
            msg.content = None;
        }
        msg.tool_calls = Some(calls);
    }
    out.push(msg);
    Ok(())
}

/// Client tools as OpenAI function tools (server tools, which have no input_schema, are dropped).
fn tools(req: &MessagesRequest) -> Result<Option<Vec<Value>>, ApiError> {
    let mut out = Vec::new();
    for (i, t) in req.tools.iter().flatten().enumerate() {
        let Some(schema) = &t.input_schema else {
            continue;
        };
        let name = t
            .name
            .as_deref()
            .ok_or_else(|| invalid("A tool needs a `name`.", &format!("tools.{i}.name")))?;
        out.push(FunctionTool::json(name, t.description.as_deref(), schema.clone()));
    }
    Ok((!out.is_empty()).then_some(out))
}

/// Sampling, stop sequences, user, tool_choice and streaming onto the chat request.
fn options(req: &MessagesRequest, out: &mut ChatRequest) -> Result<(), ApiError> {
    let max = req
        .max_tokens
        .ok_or_else(|| invalid("`max_tokens` is required and must be a positive integer.", "max_tokens"))?;
    out.max_tokens = Some(Number::from(max));
    out.temperature = req.temperature.and_then(Number::from_f64);
    out.top_p = req.top_p.and_then(Number::from_f64);
    out.stop = req.stop_sequences.clone().filter(|s| !s.is_empty()).map(Stop::Many);
    out.user = req.metadata.as_ref().and_then(|m| m.user_id.clone());
    out.tool_choice = match &req.tool_choice {
        Some(ToolChoice::Auto { .. }) => Some(chat::ToolChoice::Mode("auto".into())),
        Some(ToolChoice::Any { .. }) => Some(chat::ToolChoice::Mode("required".into())),
        Some(ToolChoice::None {}) => Some(chat::ToolChoice::Mode("none".into())),
        Some(ToolChoice::Tool { name, .. }) => Some(chat::ToolChoice::function(name)),
        Some(ToolChoice::Other(_)) | None => None,
    };
    if req.tool_choice.as_ref().is_some_and(ToolChoice::disables_parallel) {
        out.parallel_tool_calls = Some(false);
    }
    if req.stream == Some(true) {
        out.stream_with_usage();
    }
    out.tools = tools(req)?;
    Ok(())
}

/// A Messages request body, typed; a field of the wrong type is named in the error.
pub fn parse(req: &Value) -> Result<MessagesRequest, ApiError> {
    crate::error::decode_body(req)
}

/// A typed Messages request as an OpenAI chat request (the model name is kept: it names a
/// group).
pub fn chat_request_of(req: &MessagesRequest) -> Result<ChatRequest, ApiError> {
    if req.model.is_empty() {
        return Err(invalid("`model` is required.", "model"));
    }
    if req.messages.is_empty() {
        return Err(invalid("`messages` must be a non-empty array.", "messages"));
    }
    let mut messages = Vec::new();
    let system = req.system.as_ref().map(Content::text).unwrap_or_default();
    if !system.is_empty() {
        messages.push(RequestMessage::text("system", system));
    }
    for (i, m) in req.messages.iter().enumerate() {
        let at = format!("messages.{i}");
        match m.role {
            Role::User => user_turn(m, &at, &mut messages)?,
            Role::Assistant => assistant_turn(m, &at, &mut messages)?,
            Role::Other(_) => return Err(invalid("`role` must be `user` or `assistant`.", &format!("{at}.role"))),
        }
    }
    let mut out = ChatRequest {
        model: req.model.clone(),
        messages,
        ..ChatRequest::default()
    };
    options(req, &mut out)?;
    Ok(out)
}

/// A Messages request as an OpenAI chat request (the model name is kept: it names a group).
pub fn chat_request(req: &Value) -> Result<Value, ApiError> {
    Ok(chat_request_of(&parse(req)?)?.to_value())
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
pub fn message_of(completion: &ChatCompletion, model: &str) -> Message {
    let choice = completion.choices.first();
    let mut content = Vec::new();
    if let Some(m) = choice.map(|c| &c.message) {
        if let Some(blocks) = &m.thinking_blocks {
            content.extend(blocks.iter().cloned());
        } else if let Some(r) = m.reasoning_content.as_deref().filter(|r| !r.is_empty()) {
            content.push(Block::Thinking {
                thinking: r.to_owned(),
                signature: Some(String::new()),
                extra: Map::new(),
            });
        }
        if let Some(t) = m.content.as_deref().filter(|t| !t.is_empty()) {
            content.push(Block::text(t));
        }
        for c in m.tool_calls.iter().flatten() {
            content.push(Block::tool_use(&c.id, &c.function.name, &c.function.arguments));
        }
    }
    let finish = choice.and_then(|c| c.finish_reason.as_deref()).unwrap_or("stop");
    let u = completion.usage.unwrap_or_default();
    Message {
        id: message_id(&completion.id),
        model: if completion.model.is_empty() {
            model
        } else {
            &completion.model
        }
        .to_owned(),
        content,
        stop_reason: Some(stop_reason(finish).to_owned()),
        usage: Usage::counts(u.prompt_tokens, u.completion_tokens),
        ..Message::default()
    }
}

/// An OpenAI chat completion (JSON) as an Anthropic message.
pub fn message(completion: &Value, model: &str) -> Message {
    let completion =
        serde::Deserialize::deserialize(completion).unwrap_or_else(|_| ChatCompletion::text("", "", 0, "", None));
    message_of(&completion, model)
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
pub fn error_body(e: &ApiError) -> ErrorBody {
    ErrorBody::new(error_type(e.status()), &e.message())
}

/// The open content block of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Thinking,
    Text,
    /// A tool call (by its OpenAI index).
    Tool(u32),
    /// Redacted thinking: opened and closed at once.
    Redacted,
}

/// OpenAI chunks → Anthropic stream events.
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

fn delta(index: u64, delta: BlockDelta) -> StreamEvent {
    StreamEvent::ContentBlockDelta { index, delta }
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

    fn start(&mut self, chunk: Option<&ChatChunk>, out: &mut Vec<StreamEvent>) {
        if self.started {
            return;
        }
        self.started = true;
        if let Some(m) = chunk.map(|c| c.model.as_str()).filter(|m| !m.is_empty()) {
            m.clone_into(&mut self.model);
        }
        let message = Message {
            id: message_id(chunk.map(|c| c.id.as_str()).unwrap_or_default()),
            model: self.model.clone(),
            usage: Usage::counts(self.input_tokens, 0),
            ..Message::default()
        };
        out.push(StreamEvent::MessageStart { message });
    }

    fn close(&mut self, out: &mut Vec<StreamEvent>) {
        if let Some((_, index)) = self.open.take() {
            out.push(StreamEvent::ContentBlockStop { index });
        }
    }

    /// Opens `kind` (closing the open block) unless it is the open one; its index.
    fn open(&mut self, kind: Open, block: impl FnOnce() -> Block, out: &mut Vec<StreamEvent>) -> u64 {
        if let Some((open, index)) = self.open
            && open == kind
        {
            return index;
        }
        self.close(out);
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some((kind, index));
        out.push(StreamEvent::ContentBlockStart {
            index,
            content_block: block(),
        });
        index
    }

    /// Thinking text and thinking blocks (signatures, redacted thinking).
    fn thinking(&mut self, d: &crate::openai::Delta, out: &mut Vec<StreamEvent>) {
        if let Some(r) = d.reasoning_content.as_deref().filter(|r| !r.is_empty()) {
            let i = self.open(Open::Thinking, Block::thinking_start, out);
            out.push(delta(i, BlockDelta::ThinkingDelta { thinking: r.to_owned() }));
        }
        for b in d.thinking_blocks.iter().flatten() {
            match b {
                Block::RedactedThinking { .. } => {
                    self.close(out);
                    self.open(Open::Redacted, || b.clone(), out);
                    self.close(out);
                }
                Block::Thinking {
                    signature: Some(sig), ..
                } if !sig.is_empty() => {
                    let i = self.open(Open::Thinking, Block::thinking_start, out);
                    out.push(delta(i, BlockDelta::SignatureDelta { signature: sig.clone() }));
                }
                _ => {}
            }
        }
    }

    /// The events of one OpenAI chunk.
    pub fn chunk(&mut self, chunk: &ChatChunk) -> Vec<StreamEvent> {
        let mut out = Vec::new();
        self.start(Some(chunk), &mut out);
        if let Some(u) = &chunk.usage {
            self.input_tokens = u.prompt_tokens;
            self.output_tokens = u.completion_tokens;
        }
        let Some(choice) = chunk.choice() else {
            return out;
        };
        let d = &choice.delta;
        self.thinking(d, &mut out);
        if let Some(t) = d.content.as_deref().filter(|t| !t.is_empty()) {
            let i = self.open(Open::Text, || Block::text(""), &mut out);
            out.push(delta(i, BlockDelta::TextDelta { text: t.to_owned() }));
        }
        for c in d.tool_calls.iter().flatten() {
            let f = c.function.clone().unwrap_or_default();
            let block = || Block::ToolUse {
                id: c.id.clone().unwrap_or_default(),
                name: f.name.clone().unwrap_or_default(),
                input: Value::Object(Map::new()),
                extra: Map::new(),
            };
            let i = self.open(Open::Tool(c.index), block, &mut out);
            if let Some(args) = f.arguments.as_deref().filter(|a| !a.is_empty()) {
                out.push(delta(
                    i,
                    BlockDelta::InputJsonDelta {
                        partial_json: args.to_owned(),
                    },
                ));
            }
        }
        if let Some(f) = &choice.finish_reason {
            self.stop = Some(stop_reason(f));
        }
        out
    }

    /// The closing events: the open block's stop, `message_delta` with the stop reason and
    /// usage, `message_stop`.
    pub fn finish(&mut self) -> Vec<StreamEvent> {
        let mut out = Vec::new();
        self.start(None, &mut out);
        self.close(&mut out);
        out.push(StreamEvent::MessageDelta {
            delta: MessageDelta {
                stop_reason: Some(self.stop.unwrap_or("end_turn").to_owned()),
                ..MessageDelta::default()
            },
            usage: Some(Usage::counts(self.input_tokens, self.output_tokens)),
        });
        out.push(StreamEvent::MessageStop);
        out
    }
}

/// Events as SSE text (`event: …\ndata: …\n\n`).
pub fn sse(events: &[StreamEvent], out: &mut Vec<u8>) {
    for e in events {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(e.name().as_bytes());
        out.extend_from_slice(b"\ndata: ");
        // Serializing these types cannot fail (strings, numbers and JSON values only).
        out.extend_from_slice(&serde_json::to_vec(e).unwrap_or_default());
        out.extend_from_slice(b"\n\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        let e =
            chat_request(&json!({"model": "m", "max_tokens": "x", "messages": [{"role": "user", "content": "hi"}]}))
                .unwrap_err();
        assert_eq!(
            e.param(),
            Some("max_tokens"),
            "a field of the wrong type is named: {e:?}"
        );
        let e = chat_request(
            &json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"name": 3, "input_schema": {}}]}),
        )
        .unwrap_err();
        assert_eq!(e.param(), Some("tools.0.name"));
    }

    #[test]
    fn answers_and_chunks_become_anthropic_shapes() {
        let c = json!({"id": "chatcmpl-1", "model": "gpt", "choices": [{"index": 0, "finish_reason": "tool_calls",
            "message": {"role": "assistant", "content": "Looking.", "reasoning_content": "hm",
                "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "look", "arguments": "{\"x\":1}"}}]}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14}});
        let m = serde_json::to_value(message(&c, "claude")).unwrap();
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
            all.extend(s.chunk(&serde_json::from_value(c.clone()).unwrap()));
        }
        all.extend(s.finish());
        names.extend(all.iter().map(StreamEvent::name));
        let all: Vec<Value> = all.iter().map(|e| serde_json::to_value(e).unwrap()).collect();
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
        assert_eq!(all[0]["message"]["usage"]["input_tokens"], 3);
        assert_eq!(all[5]["delta"]["partial_json"], "{\"x\":1}");
        assert_eq!(all[7]["delta"]["stop_reason"], "tool_use");
        assert_eq!(all[7]["usage"], json!({"input_tokens": 7, "output_tokens": 2}));
        assert_eq!(
            error_body(&ApiError::RateLimited {
                message: "slow down".into(),
                retry_after_s: None
            })
            .error
            .kind,
            "rate_limit_error"
        );
    }
}
