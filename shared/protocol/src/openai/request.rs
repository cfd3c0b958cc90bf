//! The OpenAI chat and embeddings requests the front doors write (an Anthropic or Ollama
//! body translated), as serde types: only what a translation sets, nothing else.
//! Numbers the client sent are kept as JSON numbers, so they reach the chat parser as sent.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

use super::ToolCall;

/// A chat completion request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<RequestMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Stop sequences: one or several.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// `tool_choice`: a mode (`auto`, `required`, `none`) or one function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ToolChoice {
    Mode(String),
    Function {
        #[serde(rename = "type")]
        kind: String,
        function: FunctionName,
    },
}

/// A function by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionName {
    pub name: String,
}

impl ToolChoice {
    /// The function `name`.
    pub fn function(name: &str) -> ToolChoice {
        ToolChoice::Function {
            kind: "function".into(),
            function: FunctionName { name: name.to_owned() },
        }
    }
}

/// A function tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionTool {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionDef,
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub parameters: Value,
}

impl FunctionTool {
    /// The function `name` taking arguments of `parameters` (a JSON schema), as JSON.
    pub fn json(name: &str, description: Option<&str>, parameters: Value) -> Value {
        let tool = FunctionTool {
            kind: "function".into(),
            function: FunctionDef {
                name: name.to_owned(),
                description: description.map(str::to_owned),
                parameters,
            },
        };
        serde_json::to_value(tool).unwrap_or_default()
    }
}

/// `response_format`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema { json_schema: JsonSchema },
}

/// A named JSON schema the answer must follow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JsonSchema {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub schema: Value,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `stream_options`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamOptions {
    pub include_usage: bool,
}

/// One message of a request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestMessage {
    pub role: String,
    /// Null only on an assistant turn that only calls tools.
    pub content: Option<RequestContent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

/// A message's content: text, or parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RequestContent {
    Text(String),
    Parts(Vec<Part>),
}

/// A content part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Part {
    Text { text: String },
    ImageUrl { image_url: ImageUrl },
}

/// An image by URL (or data URL).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageUrl {
    pub url: String,
}

impl Part {
    /// An image part for `url`.
    pub fn image(url: String) -> Part {
        Part::ImageUrl {
            image_url: ImageUrl { url },
        }
    }
}

impl RequestMessage {
    /// A message of `role` saying `content`.
    pub fn new(role: &str, content: RequestContent) -> RequestMessage {
        RequestMessage {
            role: role.to_owned(),
            content: Some(content),
            ..RequestMessage::default()
        }
    }

    /// A message of `role` saying `text`.
    pub fn text(role: &str, text: impl Into<String>) -> RequestMessage {
        RequestMessage::new(role, RequestContent::Text(text.into()))
    }

    /// A tool result for the call `id`.
    pub fn tool_result(id: impl Into<String>, text: impl Into<String>) -> RequestMessage {
        RequestMessage {
            tool_call_id: Some(id.into()),
            ..RequestMessage::text("tool", text)
        }
    }
}

impl ChatRequest {
    /// Streaming with usage reported at the end (what the front doors ask for when their
    /// client streams).
    pub fn stream_with_usage(&mut self) {
        self.stream = Some(true);
        self.stream_options = Some(StreamOptions { include_usage: true });
    }

    /// The JSON body.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// An embeddings request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingsRequest {
    pub model: String,
    pub input: Value,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_request_round_trips() {
        let v = json!({"model": "m", "max_tokens": 9, "temperature": 0.5, "stop": ["END"], "user": "u",
            "tool_choice": {"type": "function", "function": {"name": "f"}}, "parallel_tool_calls": false,
            "response_format": {"type": "json_schema", "json_schema": {"name": "format", "schema": {"type": "object"}}},
            "stream": true, "stream_options": {"include_usage": true}, "logit_bias": {},
            "messages": [{"role": "system", "content": "s"},
                {"role": "user", "content": [{"type": "text", "text": "see"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function",
                    "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c", "content": "r"}]});
        let r: ChatRequest = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(r.to_value(), v);
    }
}
