//! The partial parse and validation of a chat completion request.
//!
//! Only what a decision needs is read: `model`, `stream`, `stream_options.include_usage`,
//! and the shape of `messages`. Every other field passes through untouched in the raw body.
//! Errors name the offending field (`messages[1].role`) in OpenAI's `param`.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::ApiError;

const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool", "function"];

/// What the gateway and router need to know about a chat completion request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatRequest<'a> {
    pub model: Cow<'a, str>,
    pub stream: bool,
    pub include_usage: bool,
    pub message_count: usize,
    /// Tools offered (`tools`), counted for `server.max_tools`.
    pub tool_count: usize,
    /// The output cap asked for (`max_completion_tokens`, else `max_tokens`).
    pub max_tokens: Option<u64>,
}

impl ChatRequest<'_> {
    /// The same facts, owning the model name.
    pub fn into_owned(self) -> ChatRequest<'static> {
        ChatRequest {
            model: Cow::Owned(self.model.into_owned()),
            stream: self.stream,
            include_usage: self.include_usage,
            message_count: self.message_count,
            tool_count: self.tool_count,
            max_tokens: self.max_tokens,
        }
    }
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    messages: Option<Vec<RawMessage<'a>>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(borrow, default)]
    tools: Option<Vec<&'a RawValue>>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct RawMessage<'a> {
    #[serde(borrow, default)]
    role: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// The text of a message's content: the string, or its text parts joined by newlines.
pub fn text_of(content: &serde_json::Value) -> String {
    match content {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// The text of the last user message of a parsed request: string content, or the text parts
/// of an array joined with `sep`; empty when there is none.
pub fn last_user_text(body: &serde_json::Value, sep: &str) -> String {
    let last = body["messages"]
        .as_array()
        .and_then(|ms| ms.iter().rev().find(|m| m["role"] == "user"))
        .map(|m| &m["content"]);
    match last {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(sep),
        _ => String::new(),
    }
}

/// Checks what the partial parse skips: the whole body is UTF-8 and has no lone surrogate
/// escape (`\ud800` without its pair), so no field passed through untouched (tools,
/// response_format…) carries text an upstream would choke on.
pub fn check_text(body: &[u8]) -> Result<(), ApiError> {
    let bad = |what: &str| ApiError::invalid(format!("The request body contains {what}."), None);
    if std::str::from_utf8(body).is_err() {
        return Err(bad("bytes that are not valid UTF-8"));
    }
    let hex = |at: usize| {
        body.get(at..at + 4)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u16::from_str_radix(h, 16).ok())
    };
    let mut from = 0;
    while let Some(p) = memchr::memmem::find(&body[from..], b"\\u") {
        let at = from + p;
        from = at + 2;
        // An escape only when the backslashes before it are an even number (`\\u` is not one).
        let run = body[..at].iter().rev().take_while(|b| **b == b'\\').count();
        if run % 2 == 1 {
            continue;
        }
        match hex(at + 2) {
            Some(0xD800..=0xDBFF) => {
                let pair = body.get(at + 6..at + 8) == Some(b"\\u") && matches!(hex(at + 8), Some(0xDC00..=0xDFFF));
                if !pair {
                    return Err(bad("a lone surrogate escape (an unpaired \\ud800-\\udbff)"));
                }
                from = at + 12;
            }
            Some(0xDC00..=0xDFFF) => return Err(bad("a lone surrogate escape (an unpaired \\udc00-\\udfff)")),
            _ => {}
        }
    }
    Ok(())
}

/// The body as [`Raw`], its text checked first; serde's errors in OpenAI's words.
fn deserialize(body: &[u8]) -> Result<Raw<'_>, ApiError> {
    check_text(body)?;
    const UNPARSABLE: &str = "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly.)";
    let mut de = serde_json::Deserializer::from_slice(body);
    let raw: Raw<'_> = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        match e.inner().classify() {
            serde_json::error::Category::Syntax
            | serde_json::error::Category::Eof
            | serde_json::error::Category::Io => ApiError::invalid(UNPARSABLE, None),
            serde_json::error::Category::Data if path == "." => {
                ApiError::invalid("The request body must be a JSON object.", None)
            }
            serde_json::error::Category::Data => ApiError::invalid(
                format!("Invalid type for '{path}': {}", strip_position(&e.inner().to_string())),
                Some(&path),
            ),
        }
    })?;
    de.end().map_err(|_| ApiError::invalid(UNPARSABLE, None))?;
    Ok(raw)
}

/// One message's role and content type, as OpenAI checks them.
fn check_message(i: usize, m: &RawMessage<'_>) -> Result<(), ApiError> {
    match m.role.as_deref() {
        None => {
            return Err(ApiError::invalid(
                format!("Missing required parameter: 'messages[{i}].role'."),
                Some(&format!("messages[{i}].role")),
            ));
        }
        Some(r) if !ROLES.contains(&r) => {
            return Err(ApiError::invalid(
                format!("Invalid value: '{r}'. Supported values are: {}.", ROLES.join(", ")),
                Some(&format!("messages[{i}].role")),
            ));
        }
        Some(_) => {}
    }
    if let Some(c) = m.content {
        let first = c.get().as_bytes().first().copied().unwrap_or(b'n');
        if !matches!(first, b'"' | b'[' | b'n') {
            return Err(ApiError::invalid(
                format!("Invalid type for 'messages[{i}].content': expected a string or an array of content parts."),
                Some(&format!("messages[{i}].content")),
            ));
        }
    }
    Ok(())
}

/// Parses and validates a chat completion body.
pub fn parse(body: &[u8]) -> Result<ChatRequest<'_>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid(
            "The request body is empty; expected a JSON object.",
            None,
        ));
    }
    let raw = deserialize(body)?;

    let model = match raw.model {
        Some(m) if !m.is_empty() => m,
        _ => {
            return Err(ApiError::invalid("Missing required parameter: 'model'.", Some("model")));
        }
    };
    let Some(messages) = raw.messages else {
        return Err(ApiError::invalid(
            "Missing required parameter: 'messages'.",
            Some("messages"),
        ));
    };
    if messages.is_empty() {
        return Err(ApiError::invalid(
            "Invalid 'messages': empty array. Expected an array with minimum length 1.",
            Some("messages"),
        ));
    }
    for (i, m) in messages.iter().enumerate() {
        check_message(i, m)?;
    }
    let stream = raw.stream.unwrap_or(false);
    if raw.stream_options.is_some() && !stream {
        return Err(ApiError::invalid(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            Some("stream_options"),
        ));
    }
    Ok(ChatRequest {
        model,
        stream,
        include_usage: raw.stream_options.and_then(|o| o.include_usage).unwrap_or(false),
        message_count: messages.len(),
        tool_count: raw.tools.map_or(0, |t| t.len()),
        max_tokens: raw.max_completion_tokens.or(raw.max_tokens),
    })
}

/// serde_json appends " at line L column C"; the field path already says where.
fn strip_position(msg: &str) -> &str {
    msg.find(" at line ").map_or(msg, |i| &msg[..i])
}

/// llmrouter's token estimate for `bytes` of request text: a quarter of the bytes, rounded
/// up (used for routing decisions, `input_tokens` counts and usage the upstream did not report).
pub fn estimate_tokens(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_utf8_and_lone_surrogates_anywhere_are_refused() {
        let ok = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[{"x":"\ud83d\ude00 \\ud800 \u00e9"}]}"#;
        assert!(
            parse(ok).is_ok(),
            "a pair, an escaped backslash and a plain escape are fine"
        );
        for bad in [
            &br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[{"x":"\ud800"}]}"#[..],
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"response_format":{"x":"\udc00"}}"#,
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[{"x":"\ud800\u0041"}]}"#,
            b"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"tools\":[\"\xff\"]}",
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.status(), 400, "{}", String::from_utf8_lossy(bad));
        }
    }

    fn err(body: &str) -> ApiError {
        parse(body.as_bytes()).unwrap_err()
    }

    fn param(e: &ApiError) -> Option<&str> {
        e.param()
    }

    #[test]
    fn accepts_a_minimal_request() {
        let r = parse(br#"{"model":"echo","messages":[{"role":"user","content":"hi"}],"temperature":0.2}"#).unwrap();
        assert_eq!(r.model, "echo");
        assert!(!r.stream);
        assert_eq!(r.message_count, 1);
    }

    #[test]
    fn reads_stream_and_usage_options() {
        let r = parse(br#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"x"}]}],"stream":true,"stream_options":{"include_usage":true}}"#).unwrap();
        assert!(r.stream && r.include_usage);
    }

    #[test]
    fn rejects_malformed_json() {
        assert_eq!(
            err(r#"{"model":"m","messages":[{"role":"user","content":"x"}]} trailing"#).status(),
            400
        );
        let e = err(r#"{"model":"m","#);
        assert_eq!(e.status(), 400);
        assert!(e.to_string().contains("parse the JSON"));
    }

    #[test]
    fn rejects_non_object_bodies() {
        assert_eq!(err("[1,2]").status(), 400);
        assert_eq!(err("   ").status(), 400);
    }

    #[test]
    fn rejects_missing_model_and_messages() {
        assert_eq!(
            param(&err(r#"{"messages":[{"role":"user","content":"x"}]}"#)),
            Some("model")
        );
        assert_eq!(param(&err(r#"{"model":"m"}"#)), Some("messages"));
        assert_eq!(param(&err(r#"{"model":"m","messages":[]}"#)), Some("messages"));
    }

    #[test]
    fn names_the_field_with_a_wrong_type() {
        assert_eq!(param(&err(r#"{"model":5,"messages":[]}"#)), Some("model"));
        assert_eq!(param(&err(r#"{"model":"m","messages":"hi"}"#)), Some("messages"));
        assert_eq!(
            param(&err(
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":"yes"}"#
            )),
            Some("stream")
        );
        let e = err(r#"{"model":"m","messages":[{"role":"user","content":"x"},{"role":7}]}"#);
        assert_eq!(param(&e), Some("messages[1].role"));
        assert!(!e.to_string().contains("line"));
    }

    #[test]
    fn rejects_unknown_roles_and_bad_content() {
        assert_eq!(
            param(&err(r#"{"model":"m","messages":[{"role":"wizard","content":"x"}]}"#)),
            Some("messages[0].role")
        );
        assert_eq!(
            param(&err(r#"{"model":"m","messages":[{"content":"x"}]}"#)),
            Some("messages[0].role")
        );
        assert_eq!(
            param(&err(r#"{"model":"m","messages":[{"role":"user","content":5}]}"#)),
            Some("messages[0].content")
        );
    }

    #[test]
    fn rejects_stream_options_without_stream() {
        let e =
            err(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream_options":{"include_usage":true}}"#);
        assert_eq!(param(&e), Some("stream_options"));
    }
}
