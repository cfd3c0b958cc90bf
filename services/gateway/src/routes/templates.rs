//! Prompt templates (`[templates] path`, `##PLACEHOLDER##`s filled from variables):
//! put first as a system message in a chat request — the model group's `template`, or the
//! one the request names in `template` — with values from the request's `template_vars`
//! (both fields are removed before the request goes on). The text endpoints that fill a
//! template of their own are `routes::text`.

use std::collections::BTreeMap;

use bytes::Bytes;
use llmr_protocol::ApiError;
use serde_json::{Map, Value, json};

use crate::{AppState, HttpError};

pub(crate) fn invalid(message: impl Into<String>, param: &str) -> HttpError {
    HttpError(ApiError::invalid(message, Some(param)))
}

/// Placeholder values from a JSON object (strings as they are, other values as JSON).
pub(crate) fn vars(v: &Value, param: &str) -> Result<BTreeMap<String, String>, HttpError> {
    match v {
        Value::Null => Ok(BTreeMap::new()),
        Value::Object(m) => Ok(m
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
            .collect()),
        _ => Err(invalid(
            format!("`{param}` must be an object of placeholder values."),
            param,
        )),
    }
}

/// The chat body with its template applied, when one applies (else None: send it as is).
pub fn apply(state: &AppState, body: &[u8], model: &str) -> Result<Option<Bytes>, HttpError> {
    let t = &state.settings.templates;
    let group = state
        .settings
        .models
        .iter()
        .find(|g| g.name == model)
        .and_then(|g| g.template.as_deref());
    let named = memchr::memmem::find(body, b"\"template").is_some();
    if group.is_none() && !named {
        return Ok(None);
    }
    let mut req: Map<String, Value> = match serde_json::from_slice(body) {
        Ok(Value::Object(m)) => m,
        _ => return Ok(None),
    };
    let asked = req.remove("template");
    let values = vars(&req.remove("template_vars").unwrap_or_default(), "template_vars")?;
    let name = match &asked {
        Some(Value::String(n)) => n.as_str(),
        Some(Value::Null) | None => match group {
            Some(g) => g,
            None => return Ok(Some(Bytes::from(Value::Object(req).to_string()))),
        },
        Some(_) => return Err(invalid("`template` must be a template's name.", "template")),
    };
    let system = t.fill(name, &values).map_err(|e| invalid(e.to_string(), "template"))?;
    if let Some(Value::Array(messages)) = req.get_mut("messages") {
        messages.insert(0, json!({"role": "system", "content": system}));
    }
    Ok(Some(Bytes::from(Value::Object(req).to_string())))
}
