//! Responses requests as chat completions: parsing and validating a `POST /v1/responses`
//! body, input items → chat messages, output items → the messages a chain continues from,
//! and the request fields carried over (tools, tool_choice, sampling, `text.format`).

use llmr_protocol::ApiError;
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

/// The input as items: a string is one user message; each item normalized.
fn input_items(obj: &Map<String, Value>) -> Result<Vec<Value>, ApiError> {
    let input = match obj.get("input") {
        Some(Value::String(s)) => vec![json!({"type": "message", "role": "user", "content": s})],
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
    match obj.get("conversation") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(id)) => Ok(Some(id.clone())),
        Some(Value::Object(c)) if c.get("id").is_some_and(Value::is_string) => Ok(c["id"].as_str().map(str::to_owned)),
        Some(_) => Err(invalid(
            "`conversation` must be an id or an object with an `id`.",
            "conversation",
        )),
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
        echo.insert(k.into(), obj.get(k).cloned().unwrap_or(Value::Null));
    }
    for (k, default) in [
        ("tools", json!([])),
        ("tool_choice", json!("auto")),
        ("parallel_tool_calls", json!(true)),
    ] {
        if echo[k].is_null() {
            echo.insert(k.into(), default);
        }
    }
    if echo["metadata"].is_null() {
        echo.insert("metadata".into(), json!({}));
    }
    if echo["text"].is_null() {
        echo.insert("text".into(), json!({"format": {"type": "text"}}));
    }
    echo.insert(
        "conversation".into(),
        conversation.map_or(Value::Null, |id| json!({"id": id})),
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
    let text = |k: &str| -> Result<Option<String>, ApiError> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(invalid(format!("`{k}` must be a string."), k)),
        }
    };
    let flag = |k: &str, default: bool| -> Result<bool, ApiError> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(invalid(format!("`{k}` must be a boolean."), k)),
        }
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
    if let Some(include) = obj.get("include").filter(|v| !v.is_null())
        && !include.as_array().is_some_and(|a| a.iter().all(Value::is_string))
    {
        return Err(invalid("`include` must be an array of strings.", "include"));
    }
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
            let part = if obj.get("role").and_then(Value::as_str) == Some("assistant") {
                "output_text"
            } else {
                "input_text"
            };
            let parts = json!([{"type": part, "text": text}]);
            obj.insert("content".into(), parts);
        }
        if !obj.contains_key("status") {
            obj.insert("status".into(), json!("completed"));
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
    if let Some(v) = obj.get("max_output_tokens").filter(|v| !v.is_null()) {
        if v.as_u64().is_none_or(|n| n == 0) {
            return Err(invalid(
                "`max_output_tokens` must be a positive integer.",
                "max_output_tokens",
            ));
        }
        chat.insert("max_tokens".into(), v.clone());
    }
    if let Some(tools) = obj.get("tools").filter(|v| !v.is_null()) {
        let tools = tools
            .as_array()
            .ok_or_else(|| invalid("`tools` must be an array.", "tools"))?;
        let converted = tools
            .iter()
            .enumerate()
            .map(|(i, t)| chat_tool(t, i))
            .collect::<Result<Vec<_>, _>>()?;
        if !converted.is_empty() {
            chat.insert("tools".into(), Value::Array(converted));
        }
    }
    if let Some(choice) = obj.get("tool_choice").filter(|v| !v.is_null()) {
        let mapped = match choice {
            Value::String(s) if matches!(s.as_str(), "auto" | "none" | "required") => choice.clone(),
            Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
                json!({"type": "function", "function": {"name": o.get("name").cloned().unwrap_or(Value::Null)}})
            }
            _ => {
                return Err(invalid(
                    "`tool_choice` must be auto, none, required or a function.",
                    "tool_choice",
                ));
            }
        };
        chat.insert("tool_choice".into(), mapped);
    }
    if let Some(format) = obj.get("text").and_then(|t| t.get("format")).filter(|v| !v.is_null()) {
        match format.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some("json_object") => {
                chat.insert("response_format".into(), json!({"type": "json_object"}));
            }
            Some("json_schema") => {
                let mut schema = format.as_object().cloned().unwrap_or_default();
                schema.remove("type");
                chat.insert(
                    "response_format".into(),
                    json!({"type": "json_schema", "json_schema": Value::Object(schema)}),
                );
            }
            _ => {
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
fn chat_tool(tool: &Value, index: usize) -> Result<Value, ApiError> {
    let param = format!("tools[{index}]");
    match tool.get("type").and_then(Value::as_str) {
        Some("function") => {
            let name = tool.get("name").and_then(Value::as_str).filter(|n| !n.is_empty());
            let Some(name) = name else {
                return Err(invalid("A function tool needs a `name`.", &format!("{param}.name")));
            };
            let mut function = json!({"name": name});
            for k in ["description", "parameters", "strict"] {
                if let Some(v) = tool.get(k).filter(|v| !v.is_null()) {
                    function[k] = v.clone();
                }
            }
            Ok(json!({"type": "function", "function": function}))
        }
        Some("mcp") => {
            // Run by the router's tool loop: this server's tools (`llmrouter`) or a configured
            // remote server's namespace; results are fed back to the model server-side.
            let label = tool
                .get("server_label")
                .and_then(Value::as_str)
                .filter(|l| !l.is_empty());
            let Some(label) = label else {
                return Err(invalid(
                    "An mcp tool needs a `server_label`.",
                    &format!("{param}.server_label"),
                ));
            };
            match tool.get("require_approval") {
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
            if let Some(allowed) = tool.get("allowed_tools").filter(|v| !v.is_null()) {
                mcp["allowed_tools"] = allowed.clone();
            }
            Ok(mcp)
        }
        Some(other) => Err(invalid(
            format!("Tools of type `{other}` are not supported by this gateway; use function or mcp tools."),
            &format!("{param}.type"),
        )),
        None => Err(invalid("A tool needs a `type`.", &format!("{param}.type"))),
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
