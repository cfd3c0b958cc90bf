//! The OpenAI Responses API on the wire, as serde types: the create request
//! (`POST /v1/responses`), input and output items with their content parts, the response
//! object, the stream events the responses service emits and the error body. Fields these
//! types do not name are kept in `extra`, and items, parts and events of unknown types whole
//! (the `Other` variants), so a body parses and re-serializes to the same JSON.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

/// A `POST /v1/responses` body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Input>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_response_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<ConversationRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<Vec<String>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `input`: a string (one user message) or a list of items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Input {
    Text(String),
    Items(Vec<Item>),
}

/// `conversation`: an id, or an object with an `id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ConversationRef {
    Id(String),
    Object {
        id: String,
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
}

impl ConversationRef {
    /// The conversation's id.
    pub fn id(&self) -> &str {
        match self {
            ConversationRef::Id(id) | ConversationRef::Object { id, .. } => id,
        }
    }
}

/// `text`: the output's format (and anything else, kept).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TextConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<TextFormat>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `text.format`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TextFormat {
    Text(Map<String, Value>),
    JsonObject(Map<String, Value>),
    /// `name`, `schema`, `strict`, `description`: kept as they came.
    JsonSchema(Map<String, Value>),
    #[serde(untagged)]
    Other(Value),
}

/// One tool of a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Tool {
    Function {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parameters: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        strict: Option<Value>,
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
    Mcp {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        server_label: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        require_approval: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        allowed_tools: Option<Value>,
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
    /// A hosted tool (web_search, file_search…) or anything else, kept whole.
    #[serde(untagged)]
    Other(Value),
}

/// `tool_choice`: a mode or a named function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ToolChoice {
    Mode(String),
    Named(NamedChoice),
    Other(Value),
}

/// A tool named by `tool_choice`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NamedChoice {
    /// `{"type": "function", "name": …}`.
    Function {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<Value>,
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
}

/// An input or output item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Item {
    Message(MessageItem),
    FunctionCall(FunctionCallItem),
    FunctionCallOutput(FunctionCallOutputItem),
    /// An item of another type (reasoning, mcp_call, item_reference…), kept whole.
    #[serde(untagged)]
    Other(Value),
}

/// A `message` item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageItem {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub role: String,
    pub content: MessageContent,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A message's content: a string or parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// One part of a message's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    InputText {
        text: String,
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
    OutputText {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        annotations: Option<Vec<Value>>,
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
    InputImage {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        image_url: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<Value>,
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
    /// A part of another type (input_file, refusal…), kept whole.
    #[serde(untagged)]
    Other(Value),
}

impl ContentPart {
    /// An `output_text` part with no annotations yet.
    pub fn output_text(text: impl Into<String>) -> ContentPart {
        ContentPart::OutputText {
            text: text.into(),
            annotations: Some(Vec::new()),
            extra: Map::new(),
        }
    }

    /// The text of a text part (`input_text`, `output_text`, or another part's `text`).
    pub fn text(&self) -> Option<&str> {
        match self {
            ContentPart::InputText { text, .. } | ContentPart::OutputText { text, .. } => Some(text),
            ContentPart::InputImage { extra, .. } => extra.get("text").and_then(Value::as_str),
            ContentPart::Other(v) => v.get("text").and_then(Value::as_str),
        }
    }
}

/// A `function_call` item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCallItem {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    pub call_id: String,
    pub name: String,
    pub arguments: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A `function_call_output` item (`output` a string, or parts as they came).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCallOutputItem {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub call_id: String,
    pub output: Value,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The response object (`"object": "response"`); what it echoes of the request is in `extra`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub id: String,
    #[serde(default = "response_object")]
    pub object: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<u64>,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default)]
    pub output: Vec<Item>,
    /// `usage`, `error` (null while none), the echoed request fields…
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn response_object() -> String {
    "response".into()
}

/// A Responses stream event, unnumbered (`sequence_number`, when present, is in `extra`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum StreamEvent {
    #[serde(rename = "response.created")]
    Created(ResponseEvent),
    #[serde(rename = "response.in_progress")]
    InProgress(ResponseEvent),
    #[serde(rename = "response.completed")]
    Completed(ResponseEvent),
    #[serde(rename = "response.failed")]
    Failed(ResponseEvent),
    #[serde(rename = "response.incomplete")]
    Incomplete(ResponseEvent),
    #[serde(rename = "response.output_item.added")]
    OutputItemAdded(ItemEvent),
    #[serde(rename = "response.output_item.done")]
    OutputItemDone(ItemEvent),
    #[serde(rename = "response.content_part.added")]
    ContentPartAdded(PartEvent),
    #[serde(rename = "response.content_part.done")]
    ContentPartDone(PartEvent),
    #[serde(rename = "response.output_text.delta")]
    OutputTextDelta(TextEvent),
    #[serde(rename = "response.output_text.done")]
    OutputTextDone(TextEvent),
    #[serde(rename = "response.function_call_arguments.delta")]
    FunctionCallArgumentsDelta(ArgumentsEvent),
    #[serde(rename = "response.function_call_arguments.done")]
    FunctionCallArgumentsDone(ArgumentsEvent),
    #[serde(rename = "error")]
    Error(ErrorEventBody),
    /// An event of another type, kept whole.
    #[serde(untagged)]
    Other(Value),
}

/// `response.created`, `.in_progress`, `.completed`, `.failed`, `.incomplete`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseEvent {
    pub response: Value,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `response.output_item.added` / `.done`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemEvent {
    pub output_index: usize,
    pub item: Item,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `response.content_part.added` / `.done`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartEvent {
    pub item_id: String,
    pub output_index: usize,
    pub content_index: usize,
    pub part: ContentPart,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `response.output_text.delta` (with `delta`) / `.done` (with `text`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextEvent {
    pub item_id: String,
    pub output_index: usize,
    pub content_index: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Vec<Value>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `response.function_call_arguments.delta` (with `delta`) / `.done` (with `name` and
/// `arguments`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArgumentsEvent {
    pub item_id: String,
    pub output_index: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The `error` event's fields (`code` and `param` null when none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorEventBody {
    pub code: Option<String>,
    pub message: String,
    pub param: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl StreamEvent {
    /// The event's `type`.
    pub fn kind(&self) -> &str {
        match self {
            StreamEvent::Created(_) => "response.created",
            StreamEvent::InProgress(_) => "response.in_progress",
            StreamEvent::Completed(_) => "response.completed",
            StreamEvent::Failed(_) => "response.failed",
            StreamEvent::Incomplete(_) => "response.incomplete",
            StreamEvent::OutputItemAdded(_) => "response.output_item.added",
            StreamEvent::OutputItemDone(_) => "response.output_item.done",
            StreamEvent::ContentPartAdded(_) => "response.content_part.added",
            StreamEvent::ContentPartDone(_) => "response.content_part.done",
            StreamEvent::OutputTextDelta(_) => "response.output_text.delta",
            StreamEvent::OutputTextDone(_) => "response.output_text.done",
            StreamEvent::FunctionCallArgumentsDelta(_) => "response.function_call_arguments.delta",
            StreamEvent::FunctionCallArgumentsDone(_) => "response.function_call_arguments.done",
            StreamEvent::Error(_) => "error",
            StreamEvent::Other(v) => v.get("type").and_then(Value::as_str).unwrap_or("message"),
        }
    }

    /// The event as a JSON object (for numbering and sending).
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// The error body of a failed request: `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong (`type`, `code` and `param` null when none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub message: String,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub param: Option<String>,
    #[serde(default)]
    pub code: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trip<T: Serialize + serde::de::DeserializeOwned>(v: Value) -> T {
        let typed: T = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&typed).unwrap(), v);
        typed
    }

    #[test]
    fn a_create_request_round_trips_with_unknown_fields() {
        let body = json!({"model": "gpt-4.1", "instructions": "be brief", "stream": true, "store": false,
            "input": [{"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "what is this?"},
                {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"},
                {"type": "input_file", "file_id": "f1"}]},
              {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{}", "id": "fc_1"},
              {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
              {"type": "item_reference", "id": "msg_9"}],
            "tools": [{"type": "function", "name": "w", "parameters": {"type": "object"}, "strict": true},
              {"type": "mcp", "server_label": "llmrouter", "require_approval": "never"},
              {"type": "web_search_preview"}],
            "tool_choice": {"type": "function", "name": "w"}, "conversation": {"id": "conv_1"},
            "text": {"format": {"type": "json_schema", "name": "s", "schema": {}}, "verbosity": "low"},
            "metadata": {"k": "v"}, "temperature": 0, "top_p": 0.5, "max_output_tokens": 20,
            "parallel_tool_calls": false, "include": ["reasoning.encrypted_content"], "truncation": "auto"});
        let r: CreateRequest = round_trip(body);
        assert_eq!(r.extra["truncation"], "auto");
        assert_eq!(r.conversation.as_ref().map(ConversationRef::id), Some("conv_1"));
        let Some(Input::Items(items)) = &r.input else {
            panic!("items")
        };
        assert!(matches!(items[3], Item::Other(_)));
        assert!(matches!(
            r.tools.as_deref(),
            Some([Tool::Function { .. }, Tool::Mcp { .. }, Tool::Other(_)])
        ));
        assert!(matches!(r.text.and_then(|t| t.format), Some(TextFormat::JsonSchema(_))));
        let r: CreateRequest =
            round_trip(json!({"model": "m", "input": "hi", "conversation": "conv_2", "tool_choice": "auto"}));
        assert_eq!(r.input, Some(Input::Text("hi".into())));
        assert_eq!(r.tool_choice, Some(ToolChoice::Mode("auto".into())));
    }

    #[test]
    fn a_response_object_round_trips() {
        let body = json!({"id": "resp_1", "object": "response", "created_at": 1, "status": "completed",
            "model": "m", "error": null, "incomplete_details": null, "previous_response_id": null,
            "output": [{"id": "msg_1", "type": "message", "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "text": "hi", "annotations": []}]},
              {"id": "rs_1", "type": "reasoning", "summary": []}],
            "usage": {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}});
        let r: Response = round_trip(body);
        assert!(matches!(r.output[1], Item::Other(_)));
        assert!(r.extra["error"].is_null());
    }

    #[test]
    fn stream_events_round_trip() {
        for event in [
            json!({"type": "response.created", "response": {"id": "r", "status": "in_progress"}, "sequence_number": 0}),
            json!({"type": "response.output_item.added", "output_index": 0,
                "item": {"id": "msg_1", "type": "message", "status": "in_progress", "role": "assistant", "content": []}}),
            json!({"type": "response.content_part.added", "item_id": "msg_1", "output_index": 0, "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": []}}),
            json!({"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0, "content_index": 0,
                "delta": "Hi", "logprobs": [], "obfuscation": "xy"}),
            json!({"type": "response.output_text.done", "item_id": "msg_1", "output_index": 0, "content_index": 0,
                "text": "Hi", "logprobs": []}),
            json!({"type": "response.function_call_arguments.delta", "item_id": "fc_1", "output_index": 1, "delta": "{"}),
            json!({"type": "response.function_call_arguments.done", "item_id": "fc_1", "output_index": 1,
                "name": "w", "arguments": "{}"}),
            json!({"type": "error", "code": null, "message": "boom", "param": null}),
            json!({"type": "response.reasoning_summary_text.delta", "item_id": "rs_1", "delta": "…"}),
        ] {
            let typed: StreamEvent = round_trip(event);
            assert_eq!(typed.to_value()["type"], typed.kind());
        }
    }

    #[test]
    fn an_error_body_round_trips() {
        let e: ErrorBody = round_trip(
            json!({"error": {"message": "No such response.", "type": "invalid_request_error",
            "param": null, "code": "not_found", "extra_field": 1}}),
        );
        assert_eq!(e.error.code, Some(json!("not_found")));
    }
}
