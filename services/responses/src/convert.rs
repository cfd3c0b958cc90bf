//! Responses requests as chat completions: parsing and validating a `POST /v1/responses`
//! body, input items → chat messages, output items → the messages a chain continues from,
//! and the request fields carried over (tools, tool_choice, sampling, `text.format`).

use llmr_protocol::ApiError;
use llmr_protocol::responses::{
    ContentPart, ConversationRef, Item, MessageContent, MessageItem, NamedChoice, TextConfig, TextFormat, Tool,
    ToolChoice,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// A validated create request.
#[derive(Debug, Clone)]
pub struct Request {
    pub model: String,
    /// The input as items (a string input becomes one user message), ids assigned.
    pub input: Vec<Value>,
    pub instructions: Option<String>,
    pub previous_response_id: Option<String>,
    /// The conversation whose items come first and which the answer extends.
    pub conversation: Option<String>,
    pub stream: bool,
    pub background: bool,
    pub store: bool,
    /// Fields of the chat request other than model, messages and stream.
    pub chat: Map<String, Value>,
    /// Request fields the response object repeats.
    pub echo: Map<String, Value>,
}

fn invalid(message: impl Into<String>, param: &str) -> ApiError {
    ApiError::invalid(message, Some(param))
}

/// `obj[key]` as a `T`: absent or null is `None`, another shape the 400 `message` (naming `key`).
fn typed<T: DeserializeOwned>(
    obj: &Map<String, Value>,
    key: &str,
    message: impl FnOnce() -> String,
) -> Result<Option<T>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => T::deserialize(v).map(Some).map_err(|_| invalid(message(), key)),
    }
}

/// A wire value as JSON (these types always serialize).
fn to_json(value: &impl Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// The input as items: a string is one user message; each item normalized.
fn input_items(obj: &Map<String, Value>) -> Result<Vec<Value>, ApiError> {
    let input = match obj.get("input") {
        Some(Value::String(s)) => vec![to_json(&Item::Message(MessageItem {
            id: None,
            role: "user".into(),
            content: MessageContent::Text(s.clone()),
            status: None,
            extra: Map::new(),
        }))],
        Some(Value::Array(items)) => items.clone(),
        Some(_) => return Err(invalid("`input` must be a string or an array of items.", "input")),
        None => return Err(invalid("Missing required parameter: 'input'.", "input")),
    };
    input
        .into_iter()
        .enumerate()
        .map(|(i, item)| normalize_item(item, i))
        .collect()
}

/// `conversation`: an id, or an object with an `id`.
fn conversation_of(obj: &Map<String, Value>) -> Result<Option<String>, ApiError> {
    let conversation = typed::<ConversationRef>(obj, "conversation", || {
        "`conversation` must be an id or an object with an `id`.".into()
    })?;
    Ok(conversation.map(|c| c.id().to_owned()))
}

/// What the response object says when the request left an echoed field out (or null).
fn echo_default(key: &str) -> Value {
    match key {
        "tools" => Value::Array(Vec::new()),
        "tool_choice" => Value::from("auto"),
        "parallel_tool_calls" => Value::Bool(true),
        "metadata" => Value::Object(Map::new()),
        "text" => to_json(&TextConfig {
            format: Some(TextFormat::Text(Map::new())),
            extra: Map::new(),
        }),
        _ => Value::Null,
    }
}

/// The request fields the response object repeats, with OpenAI's defaults.
fn echo_fields(
    obj: &Map<String, Value>,
    conversation: Option<&str>,
    store: bool,
    background: bool,
) -> Map<String, Value> {
    let mut echo = Map::new();
    for k in [
        "instructions",
        "max_output_tokens",
        "metadata",
        "parallel_tool_calls",
        "previous_response_id",
        "temperature",
        "text",
        "tool_choice",
        "tools",
        "top_p",
    ] {
        let value = obj.get(k).filter(|v| !v.is_null()).cloned();
        echo.insert(k.into(), value.unwrap_or_else(|| echo_default(k)));
    }
    let conversation = conversation.map(|id| ConversationRef::Object {
        id: id.to_owned(),
        extra: Map::new(),
    });
    echo.insert(
        "conversation".into(),
        conversation.as_ref().map_or(Value::Null, to_json),
    );
    echo.insert("store".into(), Value::Bool(store));
    echo.insert("background".into(), Value::Bool(background));
    echo
}

/// Parses and validates a create body; every problem is a 400 naming the field.
pub fn parse(body: &Value) -> Result<Request, ApiError> {
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::invalid("The body must be a JSON object.", None))?;
    let model = match obj.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(_) => return Err(invalid("`model` must be a non-empty string.", "model")),
        None => return Err(invalid("Missing required parameter: 'model'.", "model")),
    };
    let input = input_items(obj)?;
    let text = |k: &str| typed::<String>(obj, k, || format!("`{k}` must be a string."));
    let flag = |k: &str, default: bool| {
        typed::<bool>(obj, k, || format!("`{k}` must be a boolean.")).map(|b| b.unwrap_or(default))
    };
    let instructions = text("instructions")?;
    let previous_response_id = text("previous_response_id")?;
    let conversation = conversation_of(obj)?;
    if conversation.is_some() && previous_response_id.is_some() {
        return Err(invalid(
            "`conversation` and `previous_response_id` cannot be used together.",
            "conversation",
        ));
    }
    typed::<Vec<String>>(obj, "include", || "`include` must be an array of strings.".into())?;
    let (stream, background, store) = (flag("stream", false)?, flag("background", false)?, flag("store", true)?);
    if background && !store {
        return Err(invalid(
            "Background responses must be stored (`store` cannot be false).",
            "store",
        ));
    }
    let chat = chat_fields(obj)?;
    let echo = echo_fields(obj, conversation.as_deref(), store, background);
    Ok(Request {
        model,
        input,
        instructions,
        previous_response_id,
        conversation,
        stream,
        background,
        store,
        chat,
        echo,
    })
}

/// An input item's required fields, by its kind.
fn check_item(obj: &Map<String, Value>, kind: &str, param: &str) -> Result<(), ApiError> {
    match kind {
        "message" => {
            let role = obj.get("role").and_then(Value::as_str).unwrap_or_default();
            if !matches!(role, "user" | "assistant" | "system" | "developer") {
                return Err(invalid(
                    "A message's `role` must be user, assistant, system or developer.",
                    &format!("{param}.role"),
                ));
            }
            if !matches!(obj.get("content"), Some(Value::String(_) | Value::Array(_))) {
                return Err(invalid(
                    "A message's `content` must be a string or an array of parts.",
                    &format!("{param}.content"),
                ));
            }
        }
        "function_call" => {
            for k in ["call_id", "name", "arguments"] {
                if !obj.get(k).is_some_and(Value::is_string) {
                    return Err(invalid(
                        format!("A function_call needs `{k}`."),
                        &format!("{param}.{k}"),
                    ));
                }
            }
        }
        "function_call_output" => {
            if !obj.get("call_id").is_some_and(Value::is_string) {
                return Err(invalid(
                    "A function_call_output needs `call_id`.",
                    &format!("{param}.call_id"),
                ));
            }
            if !obj.contains_key("output") {
                return Err(invalid(
                    "A function_call_output needs `output`.",
                    &format!("{param}.output"),
                ));
            }
        }
        other => {
            return Err(invalid(
                format!("Input items of type `{other}` are not supported."),
                &format!("{param}.type"),
            ));
        }
    }
    Ok(())
}

/// An input item with its `type` and an `id` (messages get `msg_…` ids when they have none).
pub fn normalize_item(mut item: Value, index: usize) -> Result<Value, ApiError> {
    let param = format!("input[{index}]");
    let obj = item
        .as_object_mut()
        .ok_or_else(|| invalid("Each input item must be an object.", &param))?;
    let kind = match obj.get("type").and_then(Value::as_str) {
        Some(t) => t.to_owned(),
        None if obj.contains_key("role") => "message".to_owned(),
        None => return Err(invalid("An input item needs a `type`.", &param)),
    };
    check_item(obj, &kind, &param)?;
    obj.insert("type".into(), Value::String(kind.clone()));
    if !obj.contains_key("id") {
        let prefix = match kind.as_str() {
            "message" => "msg",
            "function_call" => "fc",
            _ => "fco",
        };
        obj.insert("id".into(), Value::String(new_id(prefix)));
    }
    if kind == "message" {
        // Stored and listed as OpenAI lists them: content as parts.
        if let Some(Value::String(text)) = obj.get("content") {
            let (text, extra) = (text.clone(), Map::new());
            let part = if obj.get("role").and_then(Value::as_str) == Some("assistant") {
                ContentPart::OutputText {
                    text,
                    annotations: None,
                    extra,
                }
            } else {
                ContentPart::InputText { text, extra }
            };
            obj.insert("content".into(), to_json(&[part]));
        }
        if !obj.contains_key("status") {
            obj.insert("status".into(), Value::from("completed"));
        }
    }
    Ok(item)
}

/// A fresh object id: `{prefix}_` and 32 hex digits.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// The chat request fields a Responses request maps to.
fn chat_fields(obj: &Map<String, Value>) -> Result<Map<String, Value>, ApiError> {
    let mut chat = Map::new();
    for k in ["temperature", "top_p", "parallel_tool_calls"] {
        if let Some(v) = obj.get(k).filter(|v| !v.is_null()) {
            chat.insert(k.into(), v.clone());
        }
    }
    let positive = || "`max_output_tokens` must be a positive integer.".to_owned();
    if let Some(n) = typed::<u64>(obj, "max_output_tokens", positive)? {
        if n == 0 {
            return Err(invalid(positive(), "max_output_tokens"));
        }
        chat.insert("max_tokens".into(), Value::from(n));
    }
    if let Some(tools) = typed::<Vec<Tool>>(obj, "tools", || "`tools` must be an array.".into())? {
        let converted = tools
            .iter()
            .enumerate()
            .map(|(i, t)| chat_tool(t, i))
            .collect::<Result<Vec<_>, _>>()?;
        if !converted.is_empty() {
            chat.insert("tools".into(), Value::Array(converted));
        }
    }
    let choice = typed::<ToolChoice>(obj, "tool_choice", String::new)?;
    if let Some(choice) = choice {
        let mapped = match choice {
            ToolChoice::Mode(s) if matches!(s.as_str(), "auto" | "none" | "required") => Value::String(s),
            ToolChoice::Named(NamedChoice::Function { name, .. }) => {
                json!({"type": "function", "function": {"name": name.unwrap_or(Value::Null)}})
            }
            ToolChoice::Mode(_) | ToolChoice::Other(_) => {
                return Err(invalid(
                    "`tool_choice` must be auto, none, required or a function.",
                    "tool_choice",
                ));
            }
        };
        chat.insert("tool_choice".into(), mapped);
    }
    let format = obj.get("text").and_then(|t| t.get("format")).filter(|v| !v.is_null());
    if let Some(format) = format {
        match TextFormat::deserialize(format).unwrap_or(TextFormat::Other(Value::Null)) {
            TextFormat::Text(_) => {}
            TextFormat::JsonObject(_) => {
                chat.insert("response_format".into(), json!({"type": "json_object"}));
            }
            TextFormat::JsonSchema(schema) => {
                chat.insert(
                    "response_format".into(),
                    json!({"type": "json_schema", "json_schema": Value::Object(schema)}),
                );
            }
            TextFormat::Other(_) => {
                return Err(invalid(
                    "`text.format.type` must be text, json_object or json_schema.",
                    "text.format",
                ));
            }
        }
    }
    Ok(chat)
}

/// A Responses function tool as a chat tool; hosted tools are refused.
fn chat_tool(tool: &Tool, index: usize) -> Result<Value, ApiError> {
    let param = format!("tools[{index}]");
    let no_name = || invalid("A function tool needs a `name`.", &format!("{param}.name"));
    let no_label = || invalid("An mcp tool needs a `server_label`.", &format!("{param}.server_label"));
    match tool {
        Tool::Function {
            name,
            description,
            parameters,
            strict,
            ..
        } => {
            let name = name.as_deref().filter(|n| !n.is_empty()).ok_or_else(no_name)?;
            let mut function = Map::new();
            function.insert("name".into(), Value::from(name));
            for (k, v) in [
                ("description", description),
                ("parameters", parameters),
                ("strict", strict),
            ] {
                if let Some(v) = v.as_ref().filter(|v| !v.is_null()) {
                    function.insert(k.into(), v.clone());
                }
            }
            Ok(json!({"type": "function", "function": function}))
        }
        Tool::Mcp {
            server_label,
            require_approval,
            allowed_tools,
            ..
        } => {
            // Run by the router's tool loop: this server's tools (`llmrouter`) or a configured
            // remote server's namespace; results are fed back to the model server-side.
            let label = server_label.as_deref().filter(|l| !l.is_empty()).ok_or_else(no_label)?;
            match require_approval {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) if s == "never" => {}
                Some(_) => {
                    return Err(invalid(
                        "Only `require_approval: \"never\"` is supported: tool calls run server-side.",
                        &format!("{param}.require_approval"),
                    ));
                }
            }
            let mut mcp = json!({"type": "mcp", "server_label": label});
            if let Some(allowed) = allowed_tools.as_ref().filter(|v| !v.is_null()) {
                mcp["allowed_tools"] = allowed.clone();
            }
            Ok(mcp)
        }
        // A function or mcp tool whose name or label is not a string did not parse as one.
        Tool::Other(other) => match other.get("type").and_then(Value::as_str) {
            Some("function") => Err(no_name()),
            Some("mcp") => Err(no_label()),
            Some(other) => Err(invalid(
                format!("Tools of type `{other}` are not supported by this gateway; use function or mcp tools."),
                &format!("{param}.type"),
            )),
            None => Err(invalid("A tool needs a `type`.", &format!("{param}.type"))),
        },
    }
}

/// Chat messages for input items (consecutive function calls become one assistant turn).
pub fn messages(items: &[Value]) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::with_capacity(items.len());
    for item in items {
        match item.get("type").and_then(Value::as_str) {
            Some("function_call") => {
                let call = json!({
                    "id": item["call_id"],
                    "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]},
                });
                let merge = out
                    .last_mut()
                    .filter(|m| m["role"] == "assistant" && m["tool_calls"].is_array() && m["content"].is_null());
                match merge {
                    Some(m) => m["tool_calls"]
                        .as_array_mut()
                        .into_iter()
                        .for_each(|a| a.push(call.clone())),
                    None => out.push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
                }
            }
            Some("function_call_output") => {
                let content = match &item["output"] {
                    Value::String(s) => Value::String(s.clone()),
                    other => Value::String(other.to_string()),
                };
                out.push(json!({"role": "tool", "tool_call_id": item["call_id"], "content": content}));
            }
            _ => out.push(message(item)),
        }
    }
    out
}

/// One message item as a chat message: text parts joined, images as `image_url` parts.
fn message(item: &Value) -> Value {
    let role = match item["role"].as_str().unwrap_or("user") {
        "developer" => "system",
        r => r,
    };
    let content = match &item["content"] {
        Value::Array(parts) => {
            let has_image = parts.iter().any(|p| p["type"] == "input_image");
            if has_image {
                Value::Array(
                    parts
                        .iter()
                        .filter_map(|p| match p["type"].as_str() {
                            Some("input_text" | "output_text" | "text") => Some(json!({"type": "text", "text": p["text"]})),
                            Some("input_image") => {
                                let url = p.get("image_url").cloned().unwrap_or(Value::Null);
                                Some(json!({"type": "image_url", "image_url": {"url": url, "detail": p.get("detail").cloned().unwrap_or(json!("auto"))}}))
                            }
                            _ => None,
                        })
                        .collect(),
                )
            } else {
                Value::String(
                    parts
                        .iter()
                        .filter_map(|p| p["text"].as_str())
                        .collect::<Vec<_>>()
                        .join(""),
                )
            }
        }
        other => other.clone(),
    };
    json!({"role": role, "content": content})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_string_input_is_one_user_message() {
        let r = parse(&json!({"model": "m", "input": "hi", "instructions": "be brief"})).unwrap();
        assert_eq!(r.input.len(), 1);
        assert_eq!(messages(&r.input), vec![json!({"role": "user", "content": "hi"})]);
        assert!(r.store && !r.stream && !r.background);
    }

    #[test]
    fn function_calls_and_outputs_become_a_tool_turn() {
        let items = [
            json!({"role": "user", "content": [{"type": "input_text", "text": "weather?"}]}),
            json!({"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{}"}),
            json!({"type": "function_call", "call_id": "c2", "name": "w", "arguments": "{\"a\":1}"}),
            json!({"type": "function_call_output", "call_id": "c1", "output": "sunny"}),
        ];
        let r = parse(&json!({"model": "m", "input": items})).unwrap();
        let m = messages(&r.input);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0], json!({"role": "user", "content": "weather?"}));
        assert_eq!(m[1]["tool_calls"].as_array().unwrap().len(), 2);
        assert_eq!(m[2], json!({"role": "tool", "tool_call_id": "c1", "content": "sunny"}));
    }

    #[test]
    fn images_become_image_url_parts() {
        let item = json!({"role": "user", "content": [
            {"type": "input_text", "text": "what is this?"},
            {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}]});
        let r = parse(&json!({"model": "m", "input": [item]})).unwrap();
        let m = messages(&r.input);
        assert_eq!(m[0]["content"][1]["image_url"]["url"], "data:image/png;base64,AAAA");
    }

    #[test]
    fn bad_requests_name_their_field() {
        let param = |b: Value| match parse(&b) {
            Err(ApiError::InvalidRequest { param, .. }) => param,
            other => panic!("{other:?}"),
        };
        assert_eq!(param(json!({"input": "x"})).as_deref(), Some("model"));
        assert_eq!(param(json!({"model": "m"})).as_deref(), Some("input"));
        assert_eq!(param(json!({"model": "m", "input": 3})).as_deref(), Some("input"));
        assert_eq!(
            param(json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}]})).as_deref(),
            Some("tools[0].type")
        );
        assert_eq!(
            param(json!({"model": "m", "input": "x", "conversation": "c", "previous_response_id": "r"})).as_deref(),
            Some("conversation")
        );
        assert_eq!(
            param(json!({"model": "m", "input": [{"type": "item_reference", "id": "x"}]})).as_deref(),
            Some("input[0].type")
        );
    }

    #[test]
    fn malformed_tools_choices_and_formats_keep_their_messages() {
        let error = |extra: Value| {
            let mut body = json!({"model": "m", "input": "x"});
            body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            match parse(&body) {
                Err(ApiError::InvalidRequest { message, param, .. }) => (message, param.unwrap_or_default()),
                other => panic!("{other:?}"),
            }
        };
        let cases = [
            (json!({"tools": [3]}), "A tool needs a `type`.", "tools[0].type"),
            (json!({"tools": {}}), "`tools` must be an array.", "tools"),
            (
                json!({"tools": [{"type": "function", "name": 5}]}),
                "A function tool needs a `name`.",
                "tools[0].name",
            ),
            (
                json!({"tools": [{"type": "function", "name": ""}]}),
                "A function tool needs a `name`.",
                "tools[0].name",
            ),
            (
                json!({"tools": [{"type": "mcp", "server_label": 5}]}),
                "An mcp tool needs a `server_label`.",
                "tools[0].server_label",
            ),
            (
                json!({"tools": [{"type": "mcp", "server_label": "s", "require_approval": "always"}]}),
                "Only `require_approval: \"never\"` is supported: tool calls run server-side.",
                "tools[0].require_approval",
            ),
            (
                json!({"tool_choice": "sometimes"}),
                "`tool_choice` must be auto, none, required or a function.",
                "tool_choice",
            ),
            (
                json!({"tool_choice": {"type": "mcp"}}),
                "`tool_choice` must be auto, none, required or a function.",
                "tool_choice",
            ),
            (
                json!({"text": {"format": "x"}}),
                "`text.format.type` must be text, json_object or json_schema.",
                "text.format",
            ),
            (
                json!({"max_output_tokens": 0}),
                "`max_output_tokens` must be a positive integer.",
                "max_output_tokens",
            ),
            (
                json!({"max_output_tokens": 1.5}),
                "`max_output_tokens` must be a positive integer.",
                "max_output_tokens",
            ),
            (
                json!({"include": [1]}),
                "`include` must be an array of strings.",
                "include",
            ),
            (json!({"stream": "yes"}), "`stream` must be a boolean.", "stream"),
            (
                json!({"instructions": 1}),
                "`instructions` must be a string.",
                "instructions",
            ),
            (
                json!({"conversation": {"id": 1}}),
                "`conversation` must be an id or an object with an `id`.",
                "conversation",
            ),
        ];
        for (extra, message, param) in cases {
            assert_eq!(error(extra), (message.to_owned(), param.to_owned()));
        }
    }

    #[test]
    fn echoed_fields_get_openai_defaults_and_items_get_ids_and_parts() {
        let r = parse(&json!({"model": "m", "input": [{"role": "assistant", "content": "hi"}],
            "conversation": {"id": "conv_1"}, "metadata": null, "text": {"format": {"type": "json_object"}}}))
        .unwrap();
        assert_eq!(r.echo["tools"], json!([]));
        assert_eq!(r.echo["tool_choice"], "auto");
        assert_eq!(r.echo["parallel_tool_calls"], true);
        assert_eq!(r.echo["metadata"], json!({}));
        assert_eq!(r.echo["text"], json!({"format": {"type": "json_object"}}));
        assert_eq!(r.echo["conversation"], json!({"id": "conv_1"}));
        assert_eq!(r.echo["instructions"], Value::Null);
        assert_eq!(r.chat["response_format"], json!({"type": "json_object"}));
        assert_eq!(r.input[0]["content"], json!([{"type": "output_text", "text": "hi"}]));
        assert_eq!(r.input[0]["status"], "completed");
        assert!(r.input[0]["id"].as_str().unwrap().starts_with("msg_"));
        let r = parse(&json!({"model": "m", "input": "hi"})).unwrap();
        assert_eq!(r.echo["text"], json!({"format": {"type": "text"}}));
        assert_eq!(r.input[0]["content"], json!([{"type": "input_text", "text": "hi"}]));
    }

    #[test]
    fn tools_and_formats_map_to_chat_fields() {
        let r = parse(
            &json!({"model": "m", "input": "x", "max_output_tokens": 20, "temperature": 0,
            "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "function", "name": "f"},
            "text": {"format": {"type": "json_schema", "name": "s", "schema": {"type": "object"}, "strict": true}}}),
        )
        .unwrap();
        assert_eq!(r.chat["max_tokens"], 20);
        assert_eq!(r.chat["tools"][0]["function"]["name"], "f");
        assert_eq!(r.chat["tool_choice"]["function"]["name"], "f");
        assert_eq!(r.chat["response_format"]["json_schema"]["name"], "s");
    }
}
