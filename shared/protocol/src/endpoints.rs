//! Validation of the other routed OpenAI bodies — `POST /v1/embeddings` and the legacy
//! `POST /v1/completions` — to what routing needs (model, stream flags), with a 400 naming the
//! offending field; the body itself travels on untouched.

use std::borrow::Cow;

use serde_json::Value;

use crate::ApiError;
use crate::chat::ChatRequest;

fn invalid(message: &str, param: &str) -> ApiError {
    ApiError::invalid(message, Some(param))
}

fn object(body: &[u8]) -> Result<serde_json::Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::invalid("The body must be a JSON object.", None)),
        Err(e) => Err(ApiError::invalid(
            format!("We could not parse the JSON body of your request: {e}"),
            None,
        )),
    }
}

fn model(m: &serde_json::Map<String, Value>) -> Result<String, ApiError> {
    match m.get("model") {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(_) => Err(invalid("`model` must be a non-empty string.", "model")),
        None => Err(invalid("Missing required parameter: 'model'.", "model")),
    }
}

/// A string, an array of strings, a token array, or an array of token arrays — non-empty.
fn text_or_tokens(v: Option<&Value>, field: &str) -> Result<(), ApiError> {
    let token = |t: &Value| t.as_u64().is_some();
    let ok = match v {
        Some(Value::String(_)) => true,
        Some(Value::Array(items)) if !items.is_empty() => {
            items.iter().all(Value::is_string)
                || items.iter().all(token)
                || items
                    .iter()
                    .all(|i| i.as_array().is_some_and(|a| !a.is_empty() && a.iter().all(token)))
        }
        None => return Err(invalid(&format!("Missing required parameter: '{field}'."), field)),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(invalid(
            &format!(
                "`{field}` must be a string, an array of strings, a token array or an array of token arrays (non-empty)."
            ),
            field,
        ))
    }
}

/// Validates an embeddings body.
pub fn embeddings(body: &[u8]) -> Result<ChatRequest<'static>, ApiError> {
    let m = object(body)?;
    let model = model(&m)?;
    text_or_tokens(m.get("input"), "input")?;
    match m.get("encoding_format") {
        None | Some(Value::Null) => {}
        Some(Value::String(f)) if f == "float" || f == "base64" => {}
        Some(_) => return Err(invalid("`encoding_format` must be float or base64.", "encoding_format")),
    }
    if let Some(d) = m.get("dimensions").filter(|d| !d.is_null())
        && d.as_u64().is_none_or(|d| d == 0)
    {
        return Err(invalid("`dimensions` must be a positive integer.", "dimensions"));
    }
    Ok(ChatRequest {
        model: Cow::Owned(model),
        stream: false,
        include_usage: false,
        message_count: 1,
        tool_count: 0,
        max_tokens: Some(0),
    })
}

/// Validates a legacy completions body.
pub fn completions(body: &[u8]) -> Result<ChatRequest<'static>, ApiError> {
    let m = object(body)?;
    let model = model(&m)?;
    text_or_tokens(m.get("prompt"), "prompt")?;
    let stream = match m.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("`stream` must be a boolean.", "stream")),
    };
    let include_usage = match m.get("stream_options").filter(|o| !o.is_null()) {
        None => false,
        Some(_) if !stream => {
            return Err(invalid(
                "`stream_options` is only allowed when `stream` is true.",
                "stream_options",
            ));
        }
        Some(o) => o.get("include_usage").and_then(Value::as_bool).unwrap_or(false),
    };
    Ok(ChatRequest {
        model: Cow::Owned(model),
        stream,
        include_usage,
        message_count: 1,
        tool_count: 0,
        max_tokens: m.get("max_tokens").and_then(Value::as_u64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(r: Result<ChatRequest<'static>, ApiError>) -> Option<String> {
        match r {
            Err(ApiError::InvalidRequest { param, .. }) => param,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn embeddings_take_text_or_tokens() {
        for input in [r#""hi""#, r#"["a","b"]"#, "[1,2,3]", "[[1,2],[3]]"] {
            let body = format!(r#"{{"model":"e","input":{input}}}"#);
            assert_eq!(embeddings(body.as_bytes()).unwrap().model, "e");
        }
        assert_eq!(param(embeddings(br#"{"model":"e"}"#)).as_deref(), Some("input"));
        assert_eq!(
            param(embeddings(br#"{"model":"e","input":[]}"#)).as_deref(),
            Some("input")
        );
        assert_eq!(
            param(embeddings(br#"{"model":"e","input":[1,"a"]}"#)).as_deref(),
            Some("input")
        );
        assert_eq!(
            param(embeddings(br#"{"model":"e","input":"x","encoding_format":"hex"}"#)).as_deref(),
            Some("encoding_format")
        );
        assert_eq!(
            param(embeddings(br#"{"model":"e","input":"x","dimensions":0}"#)).as_deref(),
            Some("dimensions")
        );
        assert_eq!(param(embeddings(br#"{"input":"x"}"#)).as_deref(), Some("model"));
    }

    #[test]
    fn completions_take_a_prompt_and_stream_flags() {
        let r = completions(br#"{"model":"c","prompt":"hi","stream":true,"stream_options":{"include_usage":true}}"#)
            .unwrap();
        assert!(r.stream && r.include_usage);
        assert_eq!(param(completions(br#"{"model":"c"}"#)).as_deref(), Some("prompt"));
        assert_eq!(
            param(completions(
                br#"{"model":"c","prompt":"x","stream_options":{"include_usage":true}}"#
            ))
            .as_deref(),
            Some("stream_options")
        );
    }
}
